"""Several hosts sharing PostgreSQL and Redis (issue 10).

* Two `levqor scheduler` processes on one PostgreSQL database: one holds the leader lock, a
  "* * * * *" schedule fires exactly once at the minute boundary, and when the leader stops the
  other takes the lock over.
* Two `levqor serve --prod` hosts (gunicorn, 2 workers each, so four scheduler candidates) on two
  ports, with one Celery worker: the same webhook token works on both hosts, a run started on one
  is visible on the other, the rate limit (counted in Redis) is shared, and the schedule fires
  once.

Each test crosses one minute boundary (up to ~70 s): both are marked slow.
"""

from __future__ import annotations

import secrets
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta

import pytest
import requests
from e2e_support import free_port, make_app
from levqor_host.security.vault import Vault
from levqor_kernel.testing import FakeServer, Reply
from scale_support import base_env, celery_env, pg_url, queue, redis_url, start_celery_worker, stop  # noqa: F401
from sqlalchemy import create_engine, text

pytestmark = [pytest.mark.services, pytest.mark.slow]


def scheduled_doc(url: str | None = None) -> dict:
    steps = [
        {
            "id": "tick",
            "connector": "core",
            "action": "transform",
            "payload": {"value": {"at": "{{ trigger.scheduled_at }}"}},
        }
    ]
    return {"levqor": 1, "trigger": {"type": "schedule", "cron": "* * * * *"}, "steps": steps}


def lock_holder(engine) -> str | None:
    with engine.connect() as conn:
        row = conn.execute(
            text("SELECT owner FROM locks WHERE name = 'scheduler' AND expires_at > now()")
        ).first()
    return row.owner if row else None


def schedule_runs(engine, pipeline_id: str) -> list[str]:
    with engine.connect() as conn:
        rows = conn.execute(
            text(
                "SELECT idempotency_key FROM runs WHERE pipeline_id = :p AND trigger = 'schedule' "
                "ORDER BY created_at"
            ),
            {"p": pipeline_id},
        ).all()
    return [r.idempotency_key for r in rows]


def wait_for(pred, timeout: float, step: float = 0.2):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(step)
    return pred()


def next_boundary_after(t: datetime) -> datetime:
    return (t + timedelta(minutes=1)).replace(second=0, microsecond=0)


def test_two_scheduler_processes_fire_once(tmp_path, pg_url):  # noqa: F811
    secret = Vault.generate_key()
    env = {"DATABASE_URL": pg_url, "LEVQOR_SECRET_KEY": secret, "LEVQOR_EXECUTOR": "off"}
    app = make_app(tmp_path, env=env, start_workers=False)
    st = app.extensions["levqor"]
    user = st.store.users.create("cron@example.com")
    p = st.store.pipelines.create(user["id"], "every minute", scheduled_doc())
    st.store.close()
    engine = create_engine(pg_url)
    procs = []
    try:
        for i in range(2):
            penv = base_env(
                tmp_path / f"sched{i}",
                DATABASE_URL=pg_url,
                LEVQOR_SECRET_KEY=secret,
                LEVQOR_EXECUTOR="off",
                LEVQOR_SCHEDULER="on",
            )
            procs.append(
                subprocess.Popen(
                    [sys.executable, "-m", "levqor_host.cli", "scheduler"],
                    env=penv,
                    stdout=(tmp_path / f"sched{i}.log").open("wb"),
                    stderr=subprocess.STDOUT,
                )
            )
        holder = wait_for(lambda: lock_holder(engine), 30)
        assert holder, (tmp_path / "sched0.log").read_text()
        pids = {str(pr.pid): pr for pr in procs}
        leader_pid = holder.split(":")[1]
        assert leader_pid in pids
        # the leader synced its jobs on taking the lock; the next boundary at least 2 s away fires
        boundary = next_boundary_after(datetime.now(UTC) + timedelta(seconds=2))
        key = f"sched:{p['id']}:{boundary.isoformat()}"
        wait_for(
            lambda: key in schedule_runs(engine, p["id"]),
            (boundary - datetime.now(UTC)).total_seconds() + 15,
        )
        time.sleep(3)  # a second fire, if any, would have landed by now
        fired = schedule_runs(engine, p["id"])
        assert fired.count(key) == 1, fired
        assert all(k.startswith(f"sched:{p['id']}:") for k in fired)
        assert len(fired) == len(set(fired))
        assert lock_holder(engine) == holder  # one leader all along
        # the leader stops: the other process takes the lock over
        pids[leader_pid].send_signal(signal.SIGTERM)
        pids[leader_pid].wait(20)
        new = wait_for(lambda: (h := lock_holder(engine)) and h != holder and h, 20)
        assert new and new.split(":")[1] in pids and new.split(":")[1] != leader_pid
    finally:
        for pr in procs:
            stop(pr)
        engine.dispose()


def start_host(tmp_path, name: str, env: dict, port: int) -> subprocess.Popen:
    henv = {
        **env,
        "LEVQOR_DATA_DIR": str(tmp_path / name),
        "GUNICORN_WORKERS": "2",
        "LEVQOR_SCHEDULER": "auto",
    }
    return subprocess.Popen(
        [sys.executable, "-m", "levqor_host.cli", "serve", "--prod", "--port", str(port)],
        env=henv,
        stdout=(tmp_path / f"{name}.log").open("wb"),
        stderr=subprocess.STDOUT,
    )


def test_two_prod_hosts_share_postgres_and_redis(tmp_path, pg_url, redis_url, queue):  # noqa: F811
    secret = Vault.generate_key()
    env = celery_env(tmp_path / "worker", pg_url, queue, LEVQOR_SECRET_KEY=secret)
    # rate limits on, counted in Redis: a "metered" plan allows 6 API requests a minute
    env.update(
        {
            "LEVQOR_RATE_LIMITS": "on",
            "LEVQOR_RATE_LIMIT_STORAGE": redis_url,
            "LEVQOR_RATE_LIMIT_PREFIX": f"levqor-test-{secrets.token_hex(4)}",
            "LEVQOR_RATE_LIMITS_METERED": "6/minute",
            "LEVQOR_RATE_LIMIT_IP": "1000/minute",
            "LEVQOR_RATE_LIMIT_USER_DEFAULT": "1000/minute",
        }
    )
    app = make_app(
        tmp_path,
        env={k: v for k, v in env.items() if k.startswith("LEVQOR_") or k == "DATABASE_URL"},
        start_workers=False,
    )
    st = app.extensions["levqor"]
    user = st.store.users.create("hosts@example.com")
    key, _ = st.store.api_keys.create(
        user["id"], name="t", scopes=["pipelines:read", "pipelines:write", "runs:execute"]
    )
    cron = st.store.pipelines.create(user["id"], "every minute", scheduled_doc())
    metered = st.store.users.create("metered@example.com", plan="metered")
    metered_key, _ = st.store.api_keys.create(metered["id"], name="t", scopes=["pipelines:read"])
    st.store.close()
    engine = create_engine(pg_url)
    ports = [free_port(), free_port()]
    hosts = [start_host(tmp_path, f"host{i}", env, ports[i]) for i in range(2)]
    worker = start_celery_worker(env, tmp_path / "worker.log", threads=4)
    bases = [f"http://127.0.0.1:{p}" for p in ports]
    auth = {"Authorization": f"Bearer {key}"}
    try:
        for i, base in enumerate(bases):

            def up(base=base):
                try:
                    return requests.get(base + "/health", timeout=5).status_code == 200
                except (requests.ConnectionError, requests.Timeout):  # not up yet, or a busy machine
                    return False

            assert wait_for(up, 60), (tmp_path / f"host{i}.log").read_text()[-3000:]
        started = datetime.now(UTC)
        # the rate limit is shared: 6 requests a minute in all, whichever host answers
        codes = [
            requests.get(
                bases[i % 2] + "/api/v1/pipelines",
                headers={"Authorization": f"Bearer {metered_key}"},
                timeout=10,
            ).status_code
            for i in range(9)
        ]
        assert codes == [200] * 6 + [429] * 3, codes
        with FakeServer() as fake:
            fake.route("POST", "/orders", lambda req: Reply(201, {"received": req.json()}))
            doc = {
                "levqor": 1,
                "trigger": {"type": "webhook", "wait": True, "wait_seconds": 20},
                "steps": [
                    {
                        "id": "shape",
                        "connector": "core",
                        "action": "transform",
                        "payload": {"value": {"order": "{{ trigger.id }}"}},
                    },
                    {
                        "id": "send",
                        "connector": "http",
                        "action": "request",
                        "payload": {
                            "method": "POST",
                            "url": f"{fake.url}/orders",
                            "json": {"order": "{{ steps.shape.output.value.order }}"},
                        },
                    },
                ],
            }
            r = requests.post(
                bases[0] + "/api/v1/pipelines",
                headers=auth,
                json={"name": "orders", "pipeline": doc},
                timeout=10,
            )
            assert r.status_code == 201, r.text
            token = r.json()["webhook_url"].split("/hooks/")[1]
            # the same token works on both hosts, each run executed by the shared Celery worker
            outs = [
                requests.post(f"{base}/hooks/{token}", json={"id": f"A-{i}"}, timeout=30)
                for i, base in enumerate(bases)
            ]
            for i, out in enumerate(outs):
                assert out.status_code == 200, out.text
                assert out.json()["status"] == "succeeded"
                assert out.json()["output"]["body"]["received"] == {"order": f"A-{i}"}
            # a run started on one host is visible on the other
            rid = outs[0].json()["run_id"]
            assert (
                requests.get(f"{bases[1]}/api/v1/runs/{rid}", headers=auth, timeout=10).json()[
                    "status"
                ]
                == "succeeded"
            )
        # four scheduler candidates (2 hosts x 2 gunicorn workers): the minute fires once
        boundary = next_boundary_after(started + timedelta(seconds=12))
        ikey = f"sched:{cron['id']}:{boundary.isoformat()}"
        wait_for(
            lambda: ikey in schedule_runs(engine, cron["id"]),
            (boundary - datetime.now(UTC)).total_seconds() + 15,
        )
        time.sleep(2)
        fired = schedule_runs(engine, cron["id"])
        assert fired.count(ikey) == 1, fired
        assert len(fired) == len(set(fired))

        def status() -> str:
            with engine.connect() as conn:
                return conn.execute(
                    text("SELECT status FROM runs WHERE idempotency_key = :k"), {"k": ikey}
                ).scalar_one()

        assert wait_for(lambda: status() == "succeeded", 20), status()  # run by the Celery worker
    finally:
        stop(worker)
        for h in hosts:
            stop(h, 40)
        engine.dispose()
