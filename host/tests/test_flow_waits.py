"""Runs that wait and runs that start runs, end to end over real HTTP with real workers:
timed waits resumed by the sweep, approvals, waiting runs holding no worker, a restart while a
run waits, sub-pipelines (success, failure, depth, another owner's pipeline) and error
pipelines."""

from __future__ import annotations

import time

import pytest
from e2e_support import LiveServer, make_app

pytestmark = [pytest.mark.backends, pytest.mark.workers]

FAST_SWEEP = {"wait_sweep_seconds": 0.3}


def doc(*steps: dict, **extra) -> dict:
    return {"levqor": 1, "trigger": {"type": "manual"}, "steps": list(steps), **extra}


def transform(step_id: str, value) -> dict:
    return {"id": step_id, "connector": "core", "action": "transform", "payload": {"value": value}}


def approval(step_id: str = "ok", **more) -> dict:
    return {"id": step_id, "type": "wait", "approval": {"message": "Ship it?", **more}}


def fail(step_id: str = "boom") -> dict:
    return {"id": step_id, "type": "stop", "status": "failed", "message": "it went wrong"}


def until_status(client, rid: str, statuses, timeout: float = 30.0) -> dict:
    end = time.monotonic() + timeout
    while True:
        run = client.get(f"/api/v1/runs/{rid}").json()
        if run["status"] in statuses:
            return run
        if time.monotonic() > end:
            raise AssertionError(f"run {rid} stayed {run['status']}: {run}")
        time.sleep(0.05)


@pytest.fixture
def server(tmp_path):
    srv = LiveServer(make_app(tmp_path, executor={**FAST_SWEEP, "workers": 2}))
    yield srv
    srv.stop()


def create(client, name: str, document: dict) -> str:
    r = client.post("/api/v1/pipelines", json={"name": name, "pipeline": document})
    assert r.status_code == 201, r.text
    return r.json()["id"]


def start(client, pipeline_id: str, data: dict | None = None) -> str:
    r = client.post("/api/v1/run", json={"pipeline_id": pipeline_id, "input": data or {}})
    assert r.status_code == 202, r.text
    return r.json()["run_id"]


def test_a_timed_wait_suspends_and_the_sweep_resumes_it(server):
    _, key = server.user_with_key("t@example.com")
    c = server.client(key)
    pid = create(c, "pause", doc(
        {"id": "pause", "type": "wait", "seconds": 6},
        {"id": "nap", "connector": "core", "action": "delay", "payload": {"seconds": 6}},
        transform("after", "{{ steps.pause.output.waited }}"),
    ))
    rid = start(c, pid)
    run = until_status(c, rid, ("waiting",))
    assert run["wait"]["kind"] == "time" and run["wait"]["step"] == "pause"
    assert run["wait"]["until"] and run.get("approve_url") is None
    assert server.state.store.runs.get(None, rid)["lease_owner"] is None  # no worker holds it
    run = until_status(c, rid, ("waiting",))
    run = until_status(c, rid, ("succeeded", "failed"), timeout=40)
    assert run["status"] == "succeeded", run
    steps = {s["id"]: s for s in run["steps"]}
    assert steps["pause"]["status"] == "succeeded" and steps["pause"]["output"]["waited"] >= 5.5
    assert steps["nap"]["status"] == "succeeded" and steps["nap"]["output"]["waited"] >= 5.5
    assert float(steps["after"]["output"]["value"]) >= 5.5
    assert run["output"] == steps["after"]["output"]


def test_approve_and_reject_run_the_rest(server):
    _, key = server.user_with_key("a@example.com")
    c = server.client(key)
    pid = create(c, "gate", doc(approval(), transform("after", "{{ steps.ok.output.approved }}")))
    yes, no = start(c, pid), start(c, pid)
    until_status(c, yes, ("waiting",))
    until_status(c, no, ("waiting",))
    assert c.post(f"/api/v1/runs/{yes}/approve", json={"comment": "go"}).status_code == 200
    assert c.post(f"/api/v1/runs/{no}/reject").status_code == 200
    done = until_status(c, yes, ("succeeded", "failed"))
    assert done["status"] == "succeeded"
    assert done["output"] == {"value": True}
    failed = until_status(c, no, ("succeeded", "failed"))
    assert failed["status"] == "failed"
    assert {s["id"]: s["status"] for s in failed["steps"]}["ok"] == "failed"
    assert {s["id"]: s["status"] for s in failed["steps"]} == {"ok": "failed", "after": "skipped"}, failed


def test_waiting_runs_hold_no_worker_thread(server):
    """Two worker threads, six runs waiting at once, and a plain run still goes through."""
    _, key = server.user_with_key("n@example.com")
    c = server.client(key)
    pid = create(c, "gate", doc(approval(), transform("after", 1)))
    plain = create(c, "plain", doc(transform("only", 2)))
    rids = [start(c, pid) for _ in range(6)]
    for rid in rids:
        until_status(c, rid, ("waiting",))
    assert until_status(c, start(c, plain), ("succeeded",))["output"] == {"value": 2}
    listed = c.get("/api/v1/runs", params={"status": "waiting"}).json()["items"]
    assert {r["id"] for r in listed} == set(rids)
    for rid in rids:
        assert c.post(f"/api/v1/runs/{rid}/approve").status_code == 200
    for rid in rids:
        assert until_status(c, rid, ("succeeded", "failed"))["status"] == "succeeded"


def test_cancel_a_waiting_run(server):
    _, key = server.user_with_key("c@example.com")
    c = server.client(key)
    rid = start(c, create(c, "gate", doc(approval(), transform("after", 1))))
    until_status(c, rid, ("waiting",))
    r = c.post(f"/api/v1/runs/{rid}/cancel")
    assert r.status_code == 200 and r.json()["status"] == "cancelled"
    assert c.post(f"/api/v1/runs/{rid}/approve").status_code == 409
    time.sleep(0.5)
    assert c.get(f"/api/v1/runs/{rid}").json()["status"] == "cancelled"


def test_a_waiting_run_survives_a_restart(tmp_path):
    first = LiveServer(make_app(tmp_path, executor=FAST_SWEEP))
    try:
        _, key = first.user_with_key("r@example.com")
        c = first.client(key)
        rid = start(c, create(c, "gate", doc(approval(), transform("after", 3))))
        until_status(c, rid, ("waiting",))
    finally:
        first.stop()
    second = LiveServer(make_app(tmp_path, executor=FAST_SWEEP))
    try:
        c = second.client(key)
        assert c.get(f"/api/v1/runs/{rid}").json()["status"] == "waiting"
        assert c.post(f"/api/v1/runs/{rid}/approve").status_code == 200
        run = until_status(c, rid, ("succeeded", "failed"))
        assert run["status"] == "succeeded" and run["output"] == {"value": 3}
    finally:
        second.stop()


def test_sub_pipeline_returns_its_output_to_the_parent(server):
    _, key = server.user_with_key("s@example.com")
    c = server.client(key)
    child = create(c, "double", doc(transform("twice", "{{ trigger.n * 2 }}")))
    parent = create(c, "caller", doc(
        {"id": "call", "type": "pipeline", "pipeline": child, "input": {"n": "{{ trigger.n }}"}},
        transform("after", "{{ steps.call.output.output.value }}"),
    ))
    rid = start(c, parent, {"n": 21})
    run = until_status(c, rid, ("succeeded", "failed"))
    assert run["status"] == "succeeded", run
    call = {s["id"]: s for s in run["steps"]}["call"]
    child_id = call["output"]["run_id"]
    assert call["output"]["status"] == "succeeded"
    assert run["children"] == [child_id]
    kid = c.get(f"/api/v1/runs/{child_id}").json()
    assert kid["trigger"] == "pipeline" and kid["parent_run_id"] == rid
    assert kid["parent_step"] == "call" and kid["input"] == {"n": 21}
    assert str(run["output"]["value"]) == "42"


def test_sub_pipeline_failure_fails_the_step(server):
    _, key = server.user_with_key("f@example.com")
    c = server.client(key)
    child = create(c, "fails", doc(fail()))
    parent = create(c, "caller", doc(
        {"id": "call", "type": "pipeline", "pipeline": child, "input": {}, "on_error": "continue"},
        transform("after", "went on"),
    ))
    run = until_status(c, start(c, parent), ("succeeded", "failed"))
    call = {s["id"]: s for s in run["steps"]}["call"]
    assert call["status"] == "failed" and call["error"]["type"] == "ChildRunFailed"
    assert call["error"]["code"] == "child_failed" and call["error"]["run_id"] in run["children"]
    assert run["status"] == "succeeded" and run["output"] == {"value": "went on"}


def test_another_owners_or_an_unknown_pipeline_fails_the_step(server):
    _, key = server.user_with_key("o@example.com")
    _, bob_key = server.user_with_key("bob@example.com")
    c = server.client(key)
    bobs = create(server.client(bob_key), "bob's", doc(transform("x", 1)))
    for target in (bobs, "pl_unknown"):
        pid = create(c, "caller", doc({"id": "call", "type": "pipeline", "pipeline": target}))
        run = until_status(c, start(c, pid), ("succeeded", "failed"))
        assert run["status"] == "failed"
        call = {s["id"]: s for s in run["steps"]}["call"]
        assert call["error"]["code"] == "pipeline_not_found" and target in call["error"]["message"]
        assert run["children"] == []
    assert server.state.store.runs.list(
        server.state.store.users.get_by_email("bob@example.com")["id"]
    )[0] == []


def test_sub_pipelines_nest_only_so_deep(tmp_path):
    srv = LiveServer(make_app(tmp_path, executor={**FAST_SWEEP, "max_pipeline_depth": 2}))
    try:
        _, key = srv.user_with_key("d@example.com")
        c = srv.client(key)
        pid = create(c, "recurse", doc(transform("x", 1)))
        recursive = doc(
            {"id": "deeper", "type": "pipeline", "pipeline": pid,
             "if": "{{ trigger.n > 0 }}", "input": {"n": "{{ trigger.n - 1 }}"}},
            transform("done", "{{ trigger.n }}"),
        )
        r = c.put(f"/api/v1/pipelines/{pid}", json={"pipeline": recursive})
        assert r.status_code in (200, 201), r.text
        ok = until_status(c, start(c, pid, {"n": 2}), ("succeeded", "failed"))
        assert ok["status"] == "succeeded", ok
        deep = until_status(c, start(c, pid, {"n": 3}), ("succeeded", "failed"))
        assert deep["status"] == "failed"
        # the innermost run allowed (depth 2) fails its step; each parent fails in turn
        kid = c.get(f"/api/v1/runs/{deep['children'][0]}").json()
        grandkid = c.get(f"/api/v1/runs/{kid['children'][0]}").json()
        step = {s["id"]: s for s in grandkid["steps"]}["deeper"]
        assert step["error"]["code"] == "pipeline_depth" and grandkid["children"] == []
    finally:
        srv.stop()


def test_error_pipeline_starts_once_and_never_cascades(server):
    user, key = server.user_with_key("e@example.com")
    c = server.client(key)
    handler = create(c, "on error", doc(fail("handler_fails")))
    r = c.put(f"/api/v1/pipelines/{handler}",
              json={"pipeline": doc(fail("handler_fails"), error_pipeline=handler)})
    assert r.status_code in (200, 201), r.text
    pid = create(c, "fragile", doc(transform("a", 1), fail(), error_pipeline=handler))
    rid = start(c, pid)
    assert until_status(c, rid, ("succeeded", "failed"))["status"] == "failed"
    end = time.monotonic() + 20
    while True:
        runs = c.get("/api/v1/runs", params={"pipeline_id": handler}).json()["items"]
        if runs and runs[0]["status"] in ("succeeded", "failed"):
            break
        assert time.monotonic() < end, runs
        time.sleep(0.05)
    time.sleep(1.0)  # a cascade would have started by now
    runs = c.get("/api/v1/runs", params={"pipeline_id": handler}).json()["items"]
    assert len(runs) == 1
    assert runs[0]["trigger"] == "error" and runs[0]["status"] == "failed"
    assert runs[0]["input"]["run_id"] == rid and runs[0]["input"]["pipeline_id"] == pid
    assert runs[0]["input"]["error"]["type"]
    assert server.state.store.runs.find_by_idempotency_key(user["id"], f"{rid}:error")


def test_waiting_answers_at_once_and_cancel_reaches_the_child(server):
    _, key = server.user_with_key("k@example.com")
    c = server.client(key)
    child = create(c, "gated child", doc(approval(), transform("after", 1)))
    parent = create(c, "caller", doc({"id": "call", "type": "pipeline", "pipeline": child}))
    began = time.monotonic()
    r = c.post("/api/v1/run", params={"wait": 20}, json={"pipeline_id": parent, "input": {}})
    assert r.status_code == 202 and time.monotonic() - began < 15
    rid = r.json()["id"]
    run = until_status(c, rid, ("waiting",))
    assert run["wait"]["kind"] == "pipeline" and run["wait"]["pipeline"] == child
    end = time.monotonic() + 20
    while not c.get(f"/api/v1/runs/{rid}").json()["children"]:
        assert time.monotonic() < end
        time.sleep(0.05)
    [kid] = c.get(f"/api/v1/runs/{rid}").json()["children"]
    until_status(c, kid, ("waiting",))
    assert c.get(f"/api/v1/runs/{rid}").json()["wait"]["child_run_id"] == kid
    assert c.post(f"/api/v1/runs/{rid}/cancel").json()["status"] == "cancelled"
    assert until_status(c, kid, ("cancelled",))["status"] == "cancelled"
    time.sleep(0.5)
    assert c.get(f"/api/v1/runs/{rid}").json()["status"] == "cancelled"
