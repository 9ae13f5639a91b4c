"""A real `levqor worker` process is SIGKILLed in the middle of a loop whose body branches: the
run resumes at the unfinished items, inside the path each item took, and no item that had been
delivered is sent again (only the one in flight at the kill may be, with the same key)."""

from __future__ import annotations

import collections
import signal
import time

import pytest
from e2e_support import make_app
from levqor_kernel.testing import FakeServer, Reply
from test_worker_crash import start_worker

# scripts/test-backends runs this file again on PostgreSQL
pytestmark = pytest.mark.backends

ITEMS = 80


def deliver(fake_url: str, sid: str, path: str) -> dict:
    return {
        "id": sid,
        "connector": "http",
        "action": "request",
        "payload": {
            "method": "POST",
            "url": f"{fake_url}/{path}",
            "headers": {"Idempotency-Key": "{{ run.id }}:{{ index }}:" + sid},
            "json": {"n": "{{ item }}"},
        },
    }


@pytest.mark.slow
def test_sigkill_in_the_middle_of_a_loop_with_a_branch(tmp_path):
    deliveries: collections.Counter[str] = collections.Counter()
    paths: dict[str, str] = {}

    def handler(name):
        def h(req):
            key = req.header("Idempotency-Key")
            deliveries[key] += 1
            paths[key] = name
            return Reply(200, {"ok": True}, delay=0.05)

        return h

    with FakeServer() as fake:
        fake.route("POST", "/even", handler("even"))
        fake.route("POST", "/odd", handler("odd"))
        app = make_app(tmp_path, start_workers=False)
        st = app.extensions["levqor"]
        data_dir = st.config.data_dir
        user = st.store.users.create("ops@example.com")
        doc = {
            "levqor": 1,
            "trigger": {"type": "manual"},
            "steps": [
                {
                    "id": "each",
                    "type": "for_each",
                    "items": "{{ trigger.numbers }}",
                    "steps": [
                        {
                            "id": "route",
                            "type": "branch",
                            "paths": [
                                {
                                    "if": "{{ item % 2 == 0 }}",
                                    "steps": [deliver(fake.url, "even", "even")],
                                }
                            ],
                            "default": [deliver(fake.url, "odd", "odd")],
                        }
                    ],
                }
            ],
        }
        p = st.store.pipelines.create(user["id"], "loop", doc)
        p = st.store.pipelines.get(user["id"], p["id"])
        run, _ = st.runs.start(user, p, {"numbers": list(range(ITEMS))})
        st.store.close()

        log = tmp_path / "workers.log"
        a = start_worker(data_dir, log)
        try:
            deadline = time.monotonic() + 60
            while sum(deliveries.values()) < ITEMS // 3 and time.monotonic() < deadline:
                time.sleep(0.01)
            assert sum(deliveries.values()) >= ITEMS // 3, log.read_text()[-3000:]
            a.send_signal(signal.SIGKILL)
            a.wait(10)
            before_kill = dict(deliveries)
            assert len(before_kill) < ITEMS  # killed in the middle of the loop
            b = start_worker(data_dir, log)
            try:
                app2 = make_app(tmp_path, start_workers=False)
                st2 = app2.extensions["levqor"]
                deadline = time.monotonic() + 120
                while time.monotonic() < deadline:
                    r = st2.store.runs.get(None, run["id"])
                    if r["status"] in ("succeeded", "failed", "cancelled"):
                        break
                    time.sleep(0.2)
            finally:
                b.send_signal(signal.SIGTERM)
                b.wait(30)
        finally:
            if a.poll() is None:
                a.kill()

    assert r["status"] == "succeeded", (r["status"], r["error"], log.read_text()[-3000:])
    rid = run["id"]
    expected = {f"{rid}:{i}:{'even' if i % 2 == 0 else 'odd'}" for i in range(ITEMS)}
    assert set(deliveries) == expected
    # each item went down its own path, also after the resume
    assert all(paths[k] == k.rsplit(":", 1)[1] for k in deliveries)
    dupes = {k: n for k, n in deliveries.items() if n > 1}
    assert len(dupes) <= 1 and all(n == 2 and k in before_kill for k, n in dupes.items()), dupes
    by_path = {s["step_id"]: s for s in r["steps"]}
    assert by_path["each"]["status"] == "succeeded" and len(by_path["each"]["output"]) == ITEMS
    assert by_path["each[1].route.default.odd"]["status"] == "succeeded"
    st2.store.close()
