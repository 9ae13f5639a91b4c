"""Waiting runs across SIGKILLed `levqor worker` processes: a run waiting for an approval or a
timer holds no worker, survives its worker being killed, and resumes exactly once (an approval
given twice, or by two hosts, resumes it once); the step before the wait is never sent again."""

from __future__ import annotations

import collections
import signal
import subprocess
import sys
import time

import pytest
from e2e_support import make_app
from levqor_kernel.testing import FakeServer, Reply
from test_worker_crash import worker_env

# scripts/test-backends runs this file again on PostgreSQL
pytestmark = pytest.mark.backends


def deliver(url: str, sid: str) -> dict:
    return {
        "id": sid,
        "connector": "http",
        "action": "request",
        "payload": {"method": "POST", "url": f"{url}/deliver",
                    "headers": {"Idempotency-Key": "{{ run.id }}:" + sid}, "json": {}},
    }


def start_worker(data_dir, log) -> subprocess.Popen:
    """A `levqor worker` with 2 threads whose sweep resumes due waits every half second."""
    return subprocess.Popen(
        [sys.executable, "-m", "levqor_host.cli", "worker", "--threads", "2"],
        env={**worker_env(data_dir), "LEVQOR_WAIT_SWEEP_SECONDS": "0.5"},
        stdout=log.open("ab"),
        stderr=subprocess.STDOUT,
    )


def wait_for(get, ok, timeout=60.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = get()
        if ok(value):
            return value
        time.sleep(0.1)
    return value


@pytest.mark.slow
def test_waiting_runs_survive_a_killed_worker_and_resume_once(tmp_path):
    deliveries: collections.Counter[str] = collections.Counter()

    def handler(req):
        deliveries[req.header("Idempotency-Key")] += 1
        return Reply(200, {"ok": True})

    with FakeServer() as fake:
        fake.route("POST", "/deliver", handler)
        app = make_app(tmp_path, start_workers=False)
        st = app.extensions["levqor"]
        data_dir = st.config.data_dir
        user = st.store.users.create("ops@example.com")
        approval = {"levqor": 1, "trigger": {"type": "manual"}, "steps": [
            deliver(fake.url, "before"),
            {"id": "ok", "type": "wait", "approval": {"message": "go?"}},
            deliver(fake.url, "after"),
        ]}
        timer = {"levqor": 1, "trigger": {"type": "manual"}, "steps": [
            deliver(fake.url, "before"),
            {"id": "pause", "type": "wait", "seconds": 6},
            deliver(fake.url, "after"),
        ]}
        pa = st.store.pipelines.get(user["id"], st.store.pipelines.create(user["id"], "a", approval)["id"])
        pt = st.store.pipelines.get(user["id"], st.store.pipelines.create(user["id"], "t", timer)["id"])
        runs_a = [st.runs.start(user, pa, {})[0]["id"] for _ in range(6)]
        run_t = st.runs.start(user, pt, {})[0]["id"]
        st.store.close()

        log = tmp_path / "workers.log"
        # fewer worker threads (2) than waiting runs (7): a waiting run holds no thread
        a = start_worker(data_dir, log)
        app2 = make_app(tmp_path, start_workers=False)
        st2 = app2.extensions["levqor"]
        try:
            ids = [*runs_a, run_t]
            statuses = wait_for(lambda: [st2.store.runs.get(None, r)["status"] for r in ids],
                                lambda s: all(x == "waiting" for x in s))
            assert all(x == "waiting" for x in statuses), (statuses, log.read_text()[-3000:])
            a.send_signal(signal.SIGKILL)
            a.wait(10)
            b = start_worker(data_dir, log)
            try:
                # two hosts approve each run at once: one wins, the other hears 409
                app3 = make_app(tmp_path, start_workers=False)
                st3 = app3.extensions["levqor"]
                wins = 0
                for rid in runs_a:
                    for s in (st2, st3):
                        try:
                            s.runs.flow.approve(None, rid, True, by="ops")
                            wins += 1
                        except Exception as e:  # noqa: BLE001 - the loser's ApiError
                            assert getattr(e, "status", None) == 409, e
                assert wins == len(runs_a)
                finals = wait_for(
                    lambda: [st2.store.runs.get(None, r)["status"] for r in ids],
                    lambda s: all(x in ("succeeded", "failed", "cancelled") for x in s),
                )
                st3.store.close()
            finally:
                b.send_signal(signal.SIGTERM)
                b.wait(30)
        finally:
            if a.poll() is None:
                a.kill()
        assert finals == ["succeeded"] * len(ids), log.read_text()[-3000:]
        expected = {f"{r}:{s}" for r in ids for s in ("before", "after")}
        assert set(deliveries) == expected
        assert max(deliveries.values()) == 1  # nothing was sent twice
        st2.store.close()
