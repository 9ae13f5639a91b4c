"""A real `levqor worker` process is SIGKILLed in the middle of runs: every run still finishes
exactly once, and no step that had succeeded is sent again."""

from __future__ import annotations

import collections
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from e2e_support import backend_env, clean_env, make_app
from levqor_kernel.testing import FakeServer, Reply

# scripts/test-backends runs this file again on PostgreSQL
pytestmark = pytest.mark.backends

RUNS = 40


def worker_env(data_dir: Path) -> dict:
    env = clean_env()
    env.update(
        {
            "LEVQOR_DATA_DIR": str(data_dir),
            "LEVQOR_LEASE_SECONDS": "2",
            "LEVQOR_POLL_INTERVAL": "0.1",
            "LEVQOR_SSRF_ALLOW": "127.0.0.1",
            "LEVQOR_SCHEDULER": "off",
            "PYTHONUNBUFFERED": "1",
        }
    )
    # the database of make_app(data_dir.parent); `levqor worker` stays on the embedded executor
    # in every mode of the suite (tests/test_scale_faults.py kills Celery worker processes)
    env.update(backend_env(data_dir.parent))
    return env


def start_worker(data_dir: Path, log: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "levqor_host.cli", "worker", "--threads", "4"],
        env=worker_env(data_dir),
        stdout=log.open("ab"),
        stderr=subprocess.STDOUT,
    )


@pytest.mark.slow
def test_sigkill_of_a_worker_mid_run(tmp_path):
    deliveries: collections.Counter[str] = collections.Counter()

    def deliver(req):
        deliveries[req.header("Idempotency-Key")] += 1
        return Reply(200, {"ok": True}, delay=0.15)

    with FakeServer() as fake:
        fake.route("POST", "/deliver", deliver)
        app = make_app(tmp_path, start_workers=False)
        st = app.extensions["levqor"]
        data_dir = st.config.data_dir
        user = st.store.users.create("ops@example.com")

        def step(sid):
            return {
                "id": sid,
                "connector": "http",
                "action": "request",
                "payload": {
                    "method": "POST",
                    "url": f"{fake.url}/deliver",
                    "headers": {"Idempotency-Key": "{{ run.id }}:" + sid},
                    "json": {"step": sid},
                },
            }

        doc = {
            "levqor": 1,
            "trigger": {"type": "manual"},
            "steps": [step("s1"), step("s2"), step("s3")],
        }
        p = st.store.pipelines.create(user["id"], "crash", doc)
        p = st.store.pipelines.get(user["id"], p["id"])
        run_ids = [st.runs.start(user, p, {"i": i})[0]["id"] for i in range(RUNS)]
        st.store.close()

        log = tmp_path / "workers.log"
        a = start_worker(data_dir, log)
        try:
            # wait until the first worker is in the middle of things
            deadline = time.monotonic() + 60
            while sum(deliveries.values()) < 25 and time.monotonic() < deadline:
                time.sleep(0.02)
            assert sum(deliveries.values()) >= 25, log.read_text()[-3000:]
            a.send_signal(signal.SIGKILL)
            a.wait(10)
            before_kill = dict(deliveries)
            b = start_worker(data_dir, log)
            try:
                app2 = make_app(tmp_path, start_workers=False)
                st2 = app2.extensions["levqor"]
                deadline = time.monotonic() + 120
                while time.monotonic() < deadline:
                    runs = [st2.store.runs.get(None, rid) for rid in run_ids]
                    if all(r["status"] in ("succeeded", "failed", "cancelled") for r in runs):
                        break
                    time.sleep(0.2)
            finally:
                b.send_signal(signal.SIGTERM)
                b.wait(30)
        finally:
            if a.poll() is None:
                a.kill()

        assert all(r["status"] == "succeeded" for r in runs), [
            (r["id"], r["status"], r["error"]) for r in runs
        ]
        for r in runs:
            assert [s["status"] for s in r["steps"]] == ["succeeded"] * 3
        # every step of every run was delivered; only steps in flight at the kill were sent twice
        expected = {f"{rid}:{s}" for rid in run_ids for s in ("s1", "s2", "s3")}
        assert set(deliveries) == expected
        dupes = {k: n for k, n in deliveries.items() if n > 1}
        assert all(n == 2 for n in dupes.values())
        assert len(dupes) <= 4, dupes  # at most one step in flight per killed worker thread
        for key in dupes:
            assert (
                key in before_kill
            )  # the duplicate is the step that was in flight when the worker died
        # one jobs.jsonl line per finished run, never two
        lines = [json.loads(x) for x in (data_dir / "data" / "jobs.jsonl").read_text().splitlines()]
        per_run = collections.Counter(x["run_id"] for x in lines)
        assert max(per_run.values()) == 1
        st2.store.close()
