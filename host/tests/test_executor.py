"""The embedded executor: graceful shutdown, hand-back of unfinished runs, per-user caps."""

from __future__ import annotations

import time

import pytest
from e2e_support import make_app
from levqor_host.workers.embedded import EmbeddedExecutor
from levqor_kernel.runner import RunResult

# scripts/test-backends runs this file again on PostgreSQL
pytestmark = pytest.mark.backends


def delay_doc(seconds: float, steps: int = 1):
    return {"levqor": 1, "trigger": {"type": "manual"}, "steps": [
        {"id": f"d{i}", "connector": "core", "action": "delay", "payload": {"seconds": seconds}} for i in range(steps)]}


def wait_status(store, rid, statuses, timeout=15.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        r = store.runs.get(None, rid)
        if r["status"] in statuses:
            return r
        time.sleep(0.02)
    raise AssertionError(f"run {rid} stayed {r['status']}")


def test_graceful_shutdown_lets_the_step_in_flight_finish(tmp_path):
    app = make_app(tmp_path, start_workers=False)
    st = app.extensions["levqor"]
    user = st.store.users.create("g@example.com")
    p = st.store.pipelines.create(user["id"], "slow", delay_doc(0.8))
    p = st.store.pipelines.get(user["id"], p["id"])
    ex = EmbeddedExecutor(st.runs, threads=1)
    st.executor = ex
    ex.start()
    rid = st.runs.start(user, p, {})[0]["id"]
    wait_status(st.store, rid, ("running",))
    ex.stop(grace=5)
    assert st.store.runs.get(None, rid)["status"] == "succeeded"
    st.store.close()


def test_unfinished_runs_are_handed_back_and_resumed_elsewhere(tmp_path):
    app = make_app(tmp_path, start_workers=False, executor={"shutdown_grace": 0.5})
    st = app.extensions["levqor"]
    user = st.store.users.create("h@example.com")
    p = st.store.pipelines.create(user["id"], "three", delay_doc(0.7, steps=3))
    p = st.store.pipelines.get(user["id"], p["id"])
    first = EmbeddedExecutor(st.runs, threads=1, worker_id="first")
    st.executor = first
    first.start()
    rid = st.runs.start(user, p, {})[0]["id"]
    end = time.monotonic() + 10
    while time.monotonic() < end:  # wait for the first step to finish and the second to start
        steps = st.store.runs.get(None, rid)["steps"]
        if [s["status"] for s in steps[:2]] == ["succeeded", "running"]:
            break
        time.sleep(0.01)
    first.stop(grace=2)  # the grace period ends before the run does: it goes back to the queue
    r = st.store.runs.get(None, rid)
    assert r["status"] == "queued", (r["error"], r["steps"])
    done_before = [s["step_id"] for s in r["steps"] if s["status"] == "succeeded"]
    assert done_before, r["steps"]
    second = EmbeddedExecutor(st.runs, threads=1, worker_id="second")
    st.executor = second
    second.start()
    r = wait_status(st.store, rid, ("succeeded", "failed"))
    second.stop(2)
    assert r["status"] == "succeeded"
    assert [s["status"] for s in r["steps"]] == ["succeeded"] * 3
    # the steps finished before the hand-back kept their single attempt (not sent again)
    assert all(s["attempts"] == 1 for s in r["steps"])
    st.store.close()


def test_per_user_concurrency_cap(tmp_path):
    app = make_app(tmp_path, start_workers=False, executor={"max_running_per_user": 1})
    st = app.extensions["levqor"]
    a = st.store.users.create("a@example.com")
    b = st.store.users.create("b@example.com")
    pa = st.store.pipelines.get(a["id"], st.store.pipelines.create(a["id"], "a", delay_doc(0.4))["id"])
    pb = st.store.pipelines.get(b["id"], st.store.pipelines.create(b["id"], "b", delay_doc(0.4))["id"])
    ex = EmbeddedExecutor(st.runs, threads=3)
    st.executor = ex
    ex.start()
    ids_a = [st.runs.start(a, pa, {})[0]["id"] for _ in range(2)]
    id_b = st.runs.start(b, pb, {})[0]["id"]
    runs_a = [wait_status(st.store, rid, ("succeeded",)) for rid in ids_a]
    run_b = wait_status(st.store, id_b, ("succeeded",))
    ex.stop(2)
    (s1, f1), (s2, f2) = sorted((r["started_at"], r["finished_at"]) for r in runs_a)
    assert s2 >= f1  # user a's runs never overlapped
    assert run_b["started_at"] < f1  # while user b's ran beside them
    st.store.close()


def test_a_settlement_lost_to_a_crash_is_repaired_exactly_once(tmp_path):
    """The worker died after finishing a run and before settling it: the repair sweep settles it
    (usage, jobs.jsonl) once, however many executors sweep."""
    import json

    app = make_app(tmp_path, start_workers=False)
    st = app.extensions["levqor"]
    user = st.store.users.create("r@example.com")
    p = st.store.pipelines.get(user["id"], st.store.pipelines.create(user["id"], "p", delay_doc(0))["id"])
    rid = st.runs.start(user, p, {})[0]["id"]
    [claimed] = st.store.leases.claim_next("dead-worker", lease_seconds=30, limit=1)
    assert claimed["id"] == rid
    assert st.store.runs.finish(rid, "dead-worker", "succeeded")  # ... and the process died here
    assert [r["id"] for r in st.store.runs.unsettled(older_than=0)] == [rid]
    one, two = EmbeddedExecutor(st.runs, threads=0), EmbeddedExecutor(st.runs, threads=0)
    assert one.repair_settlements(older_than=0) == 1
    assert two.repair_settlements(older_than=0) == 0
    assert st.store.runs.unsettled(older_than=0) == []
    lines = [json.loads(x) for x in st.config.jobs_log.read_text().splitlines()]
    assert [x["run_id"] for x in lines] == [rid]
    assert st.runs.settle(claimed, RunResult("succeeded")) == {
        "settled": False}
    st.store.close()
