"""Poison runs: a template that would take the worker's memory fails with a clear error while
the server keeps answering, and a run whose worker keeps dying is abandoned, not retried
forever. Real server and real `levqor worker` processes over loopback."""

from __future__ import annotations

import signal
import threading
import time
from pathlib import Path

import pytest
from e2e_support import LiveServer, make_app
from levqor_kernel.testing import FakeServer, Reply
from scale_support import celery_env, pg_url, queue, redis_url, start_celery_worker, stop  # noqa: F401
from test_worker_crash import start_worker

LIMIT = 1024 * 1024

# each builds gigabytes when serialized, from operands that are each within the limit
POISONS = [
    "{{ ['a'*999999]*1000 }}",
    "{{ 1000 * ['a'*999999] }}",
    "{{ range(1000)|join('x' * 10000) }}",
    "{% set a = ['x' * 600000] %}{% set b = a + a %}{{ b + b }}",
    "{{ [[['a' * 100000] * 10] * 10] * 10 }}",
]


def poison_doc(template: str) -> dict:
    return {
        "levqor": 1,
        "trigger": {"type": "manual"},
        "steps": [
            {
                "id": "poison",
                "connector": "core",
                "action": "transform",
                "payload": {"value": template},
            },
            {"id": "after", "connector": "core", "action": "transform", "payload": {"value": 1}},
        ],
    }


def test_a_poison_template_fails_with_a_clear_error_while_health_keeps_answering(tmp_path):
    srv = LiveServer(make_app(tmp_path))
    try:
        _, key = srv.user_with_key("poison@example.com")
        api = srv.client(key)
        health = srv.client()
        pids = []
        for i, template in enumerate(POISONS):
            r = api.post("/api/v1/pipelines", json={"name": f"p{i}", "pipeline": poison_doc(template)})
            assert r.status_code == 201, r.text
            pids.append(r.json()["id"])

        run_ids = []
        for _ in range(4):
            for pid in pids:
                r = api.post("/api/v1/run", json={"pipeline_id": pid})
                assert r.status_code in (200, 201, 202), r.text
                run_ids.append(r.json()["run_id"])

        # /health every 100 ms, on its own connection, while the runs execute and fail
        latencies: list[float] = []
        statuses: list[int] = []
        stop = threading.Event()

        def poll_health() -> None:
            while not stop.is_set():
                t0 = time.monotonic()
                h = health.get("/health", timeout=10)
                latencies.append(time.monotonic() - t0)
                statuses.append(h.status_code)
                stop.wait(max(0.0, 0.1 - (time.monotonic() - t0)))

        poller = threading.Thread(target=poll_health, daemon=True)
        started = time.monotonic()
        poller.start()
        try:
            while True:
                runs = [api.get(f"/api/v1/runs/{rid}").json() for rid in run_ids]
                done = all(r["status"] in ("succeeded", "failed", "cancelled") for r in runs)
                if done and time.monotonic() - started > 2:
                    break
                assert time.monotonic() - started < 120, [r["status"] for r in runs]
                time.sleep(0.1)
        finally:
            stop.set()
            poller.join(15)
        assert len(latencies) >= 15, latencies
        assert max(latencies) < 1.0, latencies
        assert set(statuses) <= {200, 503}, statuses

        for run in runs:
            err = run["error"]
            assert run["status"] == "failed", run
            assert err["step"] == "poison" and err["code"] == "too_large", err
            assert err["type"] == "TooLargeError" and err["retryable"] is False
            assert err["message"].startswith("step 'poison': template result too large")
            assert f"limit of {LIMIT} bytes" in err["message"], err
            assert [s["status"] for s in run["steps"]] == ["failed", "skipped"]
            assert run["steps"][0]["output"] is None
    finally:
        srv.stop()


def test_the_byte_limit_is_the_operators_setting(tmp_path):
    srv = LiveServer(make_app(tmp_path, env={"LEVQOR_MAX_VALUE_BYTES": "4096"}))
    try:
        _, key = srv.user_with_key("limit@example.com")
        api = srv.client(key)
        doc = poison_doc("{{ 'a' * 5000 }}")
        pid = api.post("/api/v1/pipelines", json={"name": "p", "pipeline": doc}).json()["id"]
        run = api.post("/api/v1/run?wait=20", json={"pipeline_id": pid}).json()
        assert run["status"] == "failed"
        assert "limit of 4096 bytes" in run["error"]["message"], run["error"]
        doc = poison_doc("{{ 'a' * 3000 }}")
        pid = api.post("/api/v1/pipelines", json={"name": "q", "pipeline": doc}).json()["id"]
        run = api.post("/api/v1/run?wait=20", json={"pipeline_id": pid}).json()
        assert run["status"] == "succeeded", run
    finally:
        srv.stop()


# ------------------------------------------------------------------ workers lost for real


def hanging_doc(url: str) -> dict:
    """Step one is sent to a fake that holds the request: the worker is mid-step when killed."""
    return {
        "levqor": 1,
        "trigger": {"type": "manual"},
        "steps": [
            {
                "id": "hang",
                "connector": "http",
                "action": "request",
                "payload": {"method": "POST", "url": f"{url}/hang", "json": {"run": "{{ run.id }}"}},
                "timeout": 300,
            },
            {"id": "after", "connector": "core", "action": "transform", "payload": {"value": 1}},
        ],
    }


class Hanger:
    """A fake endpoint that never answers until the test ends; counts what each run sent."""

    def __init__(self, fake: FakeServer) -> None:
        self.url = fake.url
        self.release = threading.Event()
        self.lock = threading.Lock()
        self.calls: list[str] = []
        fake.route("POST", "/hang", self.handle)

    def handle(self, req):
        with self.lock:
            self.calls.append(req.json()["run"])
        self.release.wait(120)
        return Reply(200, {"ok": True})

    def count(self, rid: str) -> int:
        with self.lock:
            return self.calls.count(rid)


def wait_for(predicate, timeout: float, what: str, log: Path) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"{what}\n{log.read_text()[-3000:]}"
        time.sleep(0.05)


def kill(proc) -> None:
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)


def expired(st, rid: str) -> bool:
    run = st.store.runs.get(None, rid)
    from datetime import UTC, datetime

    lease = run["lease_expires_at"]
    if run["status"] != "running" or lease is None:
        return False
    when = lease if isinstance(lease, datetime) else datetime.fromisoformat(lease)
    return when < datetime.now(UTC)


def abandon_scenario(st, hanger: Hanger, start, log: Path) -> None:
    """Three workers SIGKILLed mid-step, one after the other: the fourth claim abandons the run
    without sending anything, and that worker goes on to run a healthy run."""
    user = st.store.users.create("ops@example.com")
    fake_url = hanger.url
    p = st.store.pipelines.create(user["id"], "hangs", hanging_doc(fake_url))
    p = st.store.pipelines.get(user["id"], p["id"])
    rid = st.runs.start(user, p, {})[0]["id"]
    procs = []
    try:
        for n in (1, 2, 3):
            w = start()
            procs.append(w)
            wait_for(lambda n=n: hanger.count(rid) == n, 90, f"claim {n} never sent", log)
            kill(w)
        # a fourth worker claims the run once the lease expired: it is not run again
        procs.append(start())
        wait_for(
            lambda: st.store.runs.get(None, rid)["status"] not in ("queued", "running"),
            90,
            "the run was never abandoned",
            log,
        )
        run = st.store.runs.get(None, rid)
        assert run["status"] == "failed", run
        assert run["error"]["message"] == "abandoned: worker lost 3 times", run["error"]
        assert run["error"]["retryable"] is False
        assert hanger.count(rid) == 3  # the fourth claim sent nothing
        assert run["claims"] == 4
        assert [s["status"] for s in run["steps"]] == ["failed"]
        assert run["steps"][0]["error"]["message"] == "abandoned: worker lost 3 times"
        # the worker that abandoned it goes on working: a healthy run succeeds
        ok_doc = {
            "levqor": 1,
            "trigger": {"type": "manual"},
            "steps": [{"id": "t", "connector": "core", "action": "transform", "payload": {"value": 2}}],
        }
        ok = st.store.pipelines.get(user["id"], st.store.pipelines.create(user["id"], "ok", ok_doc)["id"])
        good = st.runs.start(user, ok, {})[0]["id"]
        wait_for(
            lambda: st.store.runs.get(None, good)["status"] == "succeeded",
            60,
            "a healthy run did not succeed after the abandonment",
            log,
        )
    finally:
        hanger.release.set()
        for proc in procs:
            stop(proc)


@pytest.mark.slow
def test_a_run_whose_worker_dies_again_and_again_is_abandoned(tmp_path):
    with FakeServer() as fake:
        hanger = Hanger(fake)
        app = make_app(tmp_path, start_workers=False)
        st = app.extensions["levqor"]
        log = tmp_path / "workers.log"
        try:
            abandon_scenario(st, hanger, lambda: start_worker(st.config.data_dir, log), log)
        finally:
            st.store.close()


@pytest.mark.services
@pytest.mark.slow
def test_a_run_whose_celery_worker_dies_again_and_again_is_abandoned(
    tmp_path, pg_url, redis_url, queue  # noqa: F811
):
    env = celery_env(tmp_path / "data", pg_url, queue)
    with FakeServer() as fake:
        hanger = Hanger(fake)
        app_env = {k: v for k, v in env.items() if k.startswith("LEVQOR_") or k == "DATABASE_URL"}
        app = make_app(tmp_path, env=app_env, start_workers=False)
        st = app.extensions["levqor"]
        log = tmp_path / "workers.log"
        try:
            abandon_scenario(st, hanger, lambda: start_celery_worker(env, log, threads=2), log)
        finally:
            st.store.close()


@pytest.mark.slow
def test_a_run_whose_worker_died_is_cancelled_at_once(tmp_path):
    with FakeServer() as fake:
        hanger = Hanger(fake)
        srv = LiveServer(make_app(tmp_path, start_workers=False))
        st = srv.state
        data_dir = st.config.data_dir
        user, key = srv.user_with_key("cancel@example.com")
        api = srv.client(key)
        pid = api.post("/api/v1/pipelines", json={"name": "h", "pipeline": hanging_doc(fake.url)})
        pid = pid.json()["id"]
        early = api.post("/api/v1/run", json={"pipeline_id": pid}).json()["run_id"]
        late = api.post("/api/v1/run", json={"pipeline_id": pid}).json()["run_id"]
        log = tmp_path / "workers.log"
        procs = []
        try:
            w = start_worker(data_dir, log)
            procs.append(w)
            wait_for(
                lambda: hanger.count(early) == 1 and hanger.count(late) == 1,
                60,
                "the runs never reached their step",
                log,
            )
            kill(w)
            # cancelled while the dead worker's lease still runs: recorded, and ended by the
            # next claim without sending anything again
            c = api.post(f"/api/v1/runs/{early}/cancel").json()
            assert c["cancel_requested"] is True
            # cancelled once the lease expired: ended at once, nobody to wait for
            wait_for(lambda: expired(st, late), 30, "the lease never expired", log)
            t0 = time.monotonic()
            c = api.post(f"/api/v1/runs/{late}/cancel").json()
            assert time.monotonic() - t0 < 1.0
            assert c["status"] == "cancelled", c
            assert [s["status"] for s in c["steps"]] == ["cancelled"]
            w = start_worker(data_dir, log)
            procs.append(w)
            wait_for(
                lambda: st.store.runs.get(None, early)["status"] == "cancelled",
                60,
                "the cancelled run was not ended by the next claim",
                log,
            )
            time.sleep(1.0)  # the new worker had time to send anything it would send
            assert hanger.count(early) == 1 and hanger.count(late) == 1
            run = api.get(f"/api/v1/runs/{early}").json()
            assert run["error"]["message"] == "run cancelled"
            assert [s["status"] for s in run["steps"]] == ["cancelled"]
            assert api.get(f"/api/v1/runs/{late}").json()["status"] == "cancelled"
        finally:
            hanger.release.set()
            for proc in procs:
                stop(proc)
            srv.stop()
