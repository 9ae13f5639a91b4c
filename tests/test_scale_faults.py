"""Faults the Celery/PostgreSQL/Redis deployment must survive (issue 10).

* SIGKILL of Celery worker processes in the middle of runs, several times: every run finishes
  exactly once, and no step that had succeeded (in the database at the moment of the kill) is
  sent again; only steps in flight at a kill are re-sent, with the same idempotency key.
* Redis shut down (``nosave``: every queued message is lost) and started again during a load:
  no accepted run is lost, runs resume when it is back, the API answers 202 or 503, never 500.
* PostgreSQL connections killed with ``pg_terminate_backend`` during a load: the pools recover,
  nothing is lost, no run is created twice (clients retry 503s with their idempotency key).

The full-size SIGKILL version (20 kills across 1,000 runs) is bench/celery_faults.py.
"""

from __future__ import annotations

import collections
import json
import os
import random
import signal
import threading
import time

import pytest
import requests
from e2e_support import LiveServer, make_app
from levqor_kernel.testing import FakeServer, Reply
from scale_support import (  # noqa: F401
    celery_env,
    pg_url,
    queue,
    redis_shutdown,
    redis_start,
    redis_up,
    redis_url,
    start_celery_worker,
    stop,
    wait_final,
)
from sqlalchemy import create_engine, text

# serial: a test here restarts the machine's Redis, which every other Redis user would feel
pytestmark = [pytest.mark.services, pytest.mark.slow, pytest.mark.serial]

RUNS = int(os.environ.get("LEVQOR_TEST_KILL_RUNS", "300"))
KILLS = int(os.environ.get("LEVQOR_TEST_KILLS", "6"))


class Counting:
    """The step target: counts deliveries per idempotency key (thread-safe)."""

    def __init__(self, delay: float = 0.02) -> None:
        self.delay = delay
        self.lock = threading.Lock()
        self.deliveries: collections.Counter[str] = collections.Counter()

    def __call__(self, req):
        with self.lock:
            self.deliveries[req.header("Idempotency-Key")] += 1
        return Reply(200, {"ok": True}, delay=self.delay)

    def snapshot(self) -> dict[str, int]:
        with self.lock:
            return dict(self.deliveries)

    def total(self) -> int:
        with self.lock:
            return sum(self.deliveries.values())


def pipeline_doc(url: str, steps=("s1", "s2", "s3")) -> dict:
    return {
        "levqor": 1,
        "trigger": {"type": "manual"},
        "steps": [
            {
                "id": sid,
                "connector": "http",
                "action": "request",
                "payload": {
                    "method": "POST",
                    "url": f"{url}/deliver",
                    "headers": {"Idempotency-Key": "{{ run.id }}:" + sid},
                    "json": {"step": sid},
                },
            }
            for sid in steps
        ],
    }


def app_env(env: dict) -> dict:
    return {k: v for k, v in env.items() if k.startswith("LEVQOR_") or k == "DATABASE_URL"}


def succeeded_keys(engine) -> set[str]:
    with engine.connect() as conn:
        rows = conn.execute(
            text("SELECT run_id, step_id FROM run_steps WHERE status = 'succeeded'")
        ).all()
    return {f"{r.run_id}:{r.step_id}" for r in rows}


def jobs_lines(data_dir) -> collections.Counter:
    path = data_dir / "data" / "jobs.jsonl"
    return collections.Counter(json.loads(x)["run_id"] for x in path.read_text().splitlines())


def test_sigkill_of_celery_workers_mid_run(tmp_path, pg_url, redis_url, queue):  # noqa: F811
    target = Counting()
    env = celery_env(tmp_path / "data", pg_url, queue)
    with FakeServer() as fake:
        fake.route("POST", "/deliver", target)
        app = make_app(tmp_path, env=app_env(env), start_workers=False)
        st = app.extensions["levqor"]
        user = st.store.users.create("ops@example.com")
        p = st.store.pipelines.create(user["id"], "crash", pipeline_doc(fake.url))
        p = st.store.pipelines.get(user["id"], p["id"])
        run_ids = [st.runs.start(user, p, {"i": i})[0]["id"] for i in range(RUNS)]
        engine = create_engine(pg_url)
        log = tmp_path / "workers.log"
        workers = [start_celery_worker(env, log, threads=4) for _ in range(2)]
        checks: list[tuple[set[str], dict[str, int]]] = []
        try:
            rng = random.Random(10)
            steps_total = RUNS * 3
            for k in range(KILLS):
                threshold = steps_total * (k + 1) // (KILLS + 2)
                deadline = time.monotonic() + 60
                while target.total() < threshold and time.monotonic() < deadline:
                    time.sleep(0.01)
                assert target.total() >= threshold, log.read_text()[-3000:]
                i = rng.randrange(len(workers))
                workers[i].send_signal(signal.SIGKILL)
                workers[i].wait(10)
                # what had succeeded when the worker died must never be sent again
                checks.append((succeeded_keys(engine), target.snapshot()))
                workers[i] = start_celery_worker(env, log, threads=4)
            runs = wait_final(st.store, run_ids, 120)
        finally:
            for w in workers:
                stop(w)
            engine.dispose()

        assert all(r["status"] == "succeeded" for r in runs), [
            (r["id"], r["status"], r["error"]) for r in runs if r["status"] != "succeeded"
        ][:5]
        for r in runs:
            assert [s["status"] for s in r["steps"]] == ["succeeded"] * 3
        final = target.snapshot()
        assert set(final) == {f"{rid}:{s}" for rid in run_ids for s in ("s1", "s2", "s3")}
        for done, at_kill in checks:
            resent = {key: (at_kill[key], final[key]) for key in done if final[key] != at_kill[key]}
            assert not resent, f"succeeded steps sent again: {list(resent.items())[:5]}"
        dupes = {key: n for key, n in final.items() if n > 1}
        print(f"{RUNS} runs, {KILLS} kills: {len(dupes)} steps in flight at a kill were sent again")
        # at most one step in flight per worker thread of a killed worker
        assert len(dupes) <= KILLS * 4, dupes
        # one jobs.jsonl line per run: finished exactly once
        lines = jobs_lines(st.config.data_dir)
        twice = {rid: n for rid, n in lines.items() if n > 1}
        missing = set(run_ids) - set(lines)
        assert not twice, f"runs finished twice: {twice}"
        # Known gap: the final status and the settlement commit together (a lost settlement is
        # redone by the executor's repair sweep), but the jobs.jsonl line is written after that
        # commit, so a SIGKILL in between leaves a finished run without its line. Rare (a few
        # ms per run): counted and bounded here.
        print(f"finished runs whose worker died before settling them: {len(missing)}")
        assert len(missing) <= KILLS * 4, missing
        st.runner.close()
        st.store.close()


def test_redis_restarted_during_a_load(tmp_path, pg_url, redis_url, queue):  # noqa: F811
    target = Counting(delay=0.01)
    env = celery_env(tmp_path / "data", pg_url, queue)
    statuses: collections.Counter[int] = collections.Counter()
    accepted: list[str] = []
    with FakeServer() as fake:
        fake.route("POST", "/deliver", target)
        srv = LiveServer(make_app(tmp_path, env=app_env(env), start_workers=False))
        _, key = srv.user_with_key("load@example.com")
        client = srv.client(key)
        p = client.post(
            "/api/v1/pipelines",
            json={"name": "load", "pipeline": pipeline_doc(fake.url, ("a", "b"))},
        ).json()
        worker = start_celery_worker(env, tmp_path / "worker.log", threads=4)
        health_down: list[int] = []
        try:

            def post(i: int) -> None:
                r = client.post(
                    "/api/v1/run",
                    json={
                        "pipeline_id": p["id"],
                        "input": {"i": i},
                        "idempotency_key": f"load-{i}",
                    },
                )
                statuses[r.status_code] += 1
                if r.status_code == 202:
                    accepted.append(r.json()["run_id"])

            for i in range(40):
                post(i)
                time.sleep(0.02)
            # the load is being worked on (the worker is up and consuming) before Redis goes away;
            # a worker still starting when the broker vanishes would test its start-up instead
            deadline = time.monotonic() + 60
            while not any(
                srv.state.store.runs.get(None, rid)["status"] == "succeeded" for rid in accepted
            ):
                assert time.monotonic() < deadline, (tmp_path / "worker.log").read_text()[-3000:]
                time.sleep(0.1)
            redis_shutdown()
            assert not redis_up()
            for i in range(40, 80):  # Redis is down: every run is still accepted into the database
                post(i)
            h = client.get("/api/v1/ops/health")
            health_down.append(h.status_code)
            assert h.status_code == 503, h.text
            assert "broker" in h.json()["checks"]["executor"]["error"]
            time.sleep(2)
        finally:
            redis_start()
        try:
            assert redis_up()
            for i in range(80, 120):
                post(i)
                time.sleep(0.01)
            runs = wait_final(srv.state.store, accepted, 90)
        finally:
            stop(worker)
            srv.stop()

    print(f"Redis down and back: API answers {dict(statuses)}")
    assert 500 not in statuses and set(statuses) <= {202, 503}, statuses
    assert len(accepted) == statuses[202] and len(accepted) >= 100, statuses
    lost = [(r["id"], r["status"]) for r in runs if r["status"] != "succeeded"]
    assert not lost, lost[:5]
    final = target.snapshot()
    assert all(final.get(f"{rid}:{s}", 0) >= 1 for rid in accepted for s in ("a", "b"))


def test_postgres_connections_killed_during_a_load(tmp_path, pg_url, redis_url, queue):  # noqa: F811
    target = Counting(delay=0.01)
    env = celery_env(tmp_path / "data", pg_url, queue)
    statuses: collections.Counter[int] = collections.Counter()
    accepted: dict[str, str] = {}
    killed = 0
    with FakeServer() as fake:
        fake.route("POST", "/deliver", target)
        srv = LiveServer(make_app(tmp_path, env=app_env(env), start_workers=False))
        _, key = srv.user_with_key("pg@example.com")
        client = srv.client(key)
        p = client.post(
            "/api/v1/pipelines", json={"name": "pg", "pipeline": pipeline_doc(fake.url, ("a", "b"))}
        ).json()
        workers = [start_celery_worker(env, tmp_path / "worker.log", threads=4) for _ in range(2)]
        db = pg_url.rsplit("/", 1)[1]
        admin = create_engine(pg_url.rsplit("/", 1)[0] + "/test", isolation_level="AUTOCOMMIT")
        stop_killing = threading.Event()

        def killer() -> None:
            nonlocal killed
            while not stop_killing.wait(0.4):
                with admin.connect() as conn:
                    killed += len(
                        conn.execute(
                            text(
                                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                                "WHERE datname = :db AND pid <> pg_backend_pid()"
                            ),
                            {"db": db},
                        ).all()
                    )

        def post(i: int) -> None:
            body = {"pipeline_id": p["id"], "input": {"i": i}, "idempotency_key": f"pg-{i}"}
            for _ in range(20):  # a client retries 503s with the same idempotency key
                try:
                    r = client.post("/api/v1/run", json=body)
                except requests.ConnectionError:
                    statuses[-1] += 1
                    continue
                statuses[r.status_code] += 1
                if r.status_code == 202:
                    accepted[f"pg-{i}"] = r.json()["run_id"]
                    return
                time.sleep(0.1)

        t = threading.Thread(target=killer, daemon=True)
        try:
            t.start()
            for i in range(150):
                post(i)
                time.sleep(0.01)
            time.sleep(1.0)
            stop_killing.set()
            t.join(5)
            runs = wait_final(srv.state.store, list(accepted.values()), 90)
            with admin.connect() as conn:
                conn.execute(text("SELECT 1"))
            count = srv.state.store.runs.list(
                srv.state.store.users.get_by_email("pg@example.com")["id"], limit=1000
            )[0]
        finally:
            stop_killing.set()
            for w in workers:
                stop(w)
            srv.stop()
            admin.dispose()

    print(f"{killed} connections killed; API answers {dict(statuses)}")
    assert killed >= 5, killed
    assert 500 not in statuses and set(statuses) <= {202, 503}, statuses
    assert len(accepted) == 150  # every request was eventually accepted
    assert len(count) == 150  # ... once: no run created twice
    lost = [(r["id"], r["status"], r["error"]) for r in runs if r["status"] != "succeeded"]
    assert not lost, lost[:5]
    final = target.snapshot()
    assert all(final.get(f"{rid}:{s}", 0) >= 1 for rid in accepted.values() for s in ("a", "b"))
