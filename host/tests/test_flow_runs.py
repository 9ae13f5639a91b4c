"""Flow control through the API: a loop with a branch and an error path runs on the embedded
executor, its step rows are named by path, a retry re-runs the failed items only, and billing
counts the steps that ran."""

from __future__ import annotations

import time

import pytest
from e2e_support import LiveServer, make_app

# scripts/test-backends runs this file again on PostgreSQL, embedded and with Celery
pytestmark = [pytest.mark.backends, pytest.mark.workers]


@pytest.fixture
def srv(tmp_path):
    s = LiveServer(make_app(tmp_path, executor={"workers": 2}))
    yield s
    s.stop()


@pytest.fixture
def alice(srv):
    _user, key = srv.user_with_key("alice@example.com")
    return srv.client(key)


def transform(sid, value, **kw):
    return {"id": sid, "connector": "core", "action": "transform", "payload": {"value": value}, **kw}


ORDERS_DOC = {
    "levqor": 1,
    "trigger": {"type": "manual"},
    "steps": [
        {
            "id": "each",
            "type": "for_each",
            "items": "{{ trigger.orders }}",
            "on_item_error": "collect",
            "steps": [
                {
                    "id": "route",
                    "type": "branch",
                    "paths": [
                        {
                            "name": "big",
                            "if": {"left": "{{ item.total }}", "op": "gt", "right": 100},
                            "steps": [transform("big", "big {{ item.id }}")],
                        }
                    ],
                    "default": [transform("small", "{{ item.total // item.zero }}", on_error="continue"),
                                transform("after_small", "small {{ item.id }}")],
                },
            ],
        },
        transform("count", "{{ steps.each.output | length }}"),
    ],
}


def run(client, pid, input):
    r = client.post("/api/v1/run?wait=20", json={"pipeline_id": pid, "input": input})
    assert r.status_code == 200, r.text
    return r.json()


def test_a_loop_with_a_branch_and_an_error_path_runs_through_the_api(srv, alice):
    r = alice.post("/api/v1/pipelines", json={"name": "orders", "pipeline": ORDERS_DOC})
    assert r.status_code == 201, r.text
    pid = r.json()["id"]
    orders = [{"id": 1, "total": 150, "zero": 1}, {"id": 2, "total": 20, "zero": 0}, {"id": 3, "total": 5, "zero": 1}]
    run_ = run(alice, pid, {"orders": orders})
    assert run_["status"] == "succeeded", run_
    full = srv.state.store.runs.get(None, run_["run_id"] if "run_id" in run_ else run_["id"])
    by_id = {s["step_id"]: s for s in full["steps"]}
    assert by_id["each[0].route.paths[0].big"]["output"] == {"value": "big 1"}
    assert by_id["each[1].route.default.small"]["status"] == "failed"
    assert by_id["each[1].route.default.after_small"]["output"] == {"value": "small 2"}
    assert by_id["each[2].route.default.small"]["output"] == {"value": 5}
    assert by_id["each"]["connector"] == "flow" and by_id["each"]["status"] == "succeeded"
    assert by_id["count"]["output"] == {"value": 3}


def test_an_invalid_nested_document_is_refused_with_its_pointer(alice):
    bad = {**ORDERS_DOC, "steps": [{"id": "each", "type": "for_each", "items": "{{ trigger.o }}",
                                    "steps": [transform("x", "{{ steps.nope }}")]}]}
    r = alice.post("/api/v1/pipelines", json={"name": "bad", "pipeline": bad})
    assert r.status_code == 422, r.text
    [p] = r.json()["error"]["details"]["problems"]
    assert p["pointer"] == "/steps/0/steps/0/payload/value" and p["step"] == "x"


def http_item(url, sid="send"):
    return {
        "id": sid,
        "connector": "http",
        "action": "request",
        "retry": {"max_attempts": 1},
        "payload": {"method": "POST", "url": url, "json": {"n": "{{ item }}"}},
    }


def loop_doc(url, **loop):
    return {
        "levqor": 1,
        "trigger": {"type": "manual"},
        "steps": [{"id": "each", "type": "for_each", "items": "{{ trigger.numbers }}",
                   "steps": [http_item(url)], **loop}],
    }


def test_retry_of_a_failed_loop_sends_only_the_items_that_did_not_succeed(srv, alice):
    from levqor_kernel.testing import FakeServer, Reply

    seen: list[int] = []
    broken = {3}

    def handler(req):
        n = req.json()["n"]
        seen.append(n)
        return Reply(500, {"error": "down"}) if n in broken else Reply(200, {"ok": n})

    with FakeServer() as fake:
        fake.route("POST", "/items", handler)
        r = alice.post("/api/v1/pipelines", json={"name": "l", "pipeline": loop_doc(f"{fake.url}/items")})
        pid = r.json()["id"]
        first = run(alice, pid, {"numbers": list(range(6))})
        assert first["status"] == "failed" and first["error"]["step"] == "each[3].send"
        assert seen == [0, 1, 2, 3]
        broken.clear()
        r = alice.post(f"/api/v1/runs/{first['id']}/retry?wait=20")
        assert r.status_code in (200, 201), r.text
        again = r.json()
        assert again["status"] == "succeeded", again
        assert seen == [0, 1, 2, 3, 3, 4, 5]
    full = srv.state.store.runs.get(None, again["id"])
    out = {s["step_id"]: s for s in full["steps"]}["each"]["output"]
    assert [o["status"] for o in out] == [200] * 6


def test_cancel_reaches_a_running_loop(srv, alice):
    from levqor_kernel.testing import FakeServer, Reply

    seen: list[int] = []

    def handler(req):
        seen.append(req.json()["n"])
        return Reply(200, {"ok": True}, delay=0.05)

    with FakeServer() as fake:
        fake.route("POST", "/items", handler)
        doc = loop_doc(f"{fake.url}/items", concurrency=2)
        pid = alice.post("/api/v1/pipelines", json={"name": "l", "pipeline": doc}).json()["id"]
        r = alice.post("/api/v1/run", json={"pipeline_id": pid, "input": {"numbers": list(range(400))}})
        rid = r.json()["run_id"]
        deadline = time.monotonic() + 10
        while len(seen) < 10 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert alice.post(f"/api/v1/runs/{rid}/cancel").status_code in (200, 202)
        final = srv.state.runs.wait(None, rid, 10)
        assert final["status"] == "cancelled"
        sent = len(seen)
        time.sleep(0.3)
        assert len(seen) == sent < 400  # nothing is sent after the cancel took effect


def test_parallel_stop_condition_and_failure_steps_through_the_api(srv, alice):
    doc = {
        "levqor": 1,
        "trigger": {"type": "manual"},
        "steps": [
            {"id": "fan", "type": "parallel", "paths": [
                {"steps": [transform("a", "{{ trigger.x }}a")]},
                {"steps": [transform("b", "{{ 1 // 0 }}")], "required": False},
            ]},
            transform("maybe", "no", **{"if": {"left": "{{ trigger.x }}", "op": "eq", "right": "skip"}}),
            {"id": "done", "type": "stop", "status": "failed",
             "message": "stopped at {{ steps.a.output.value }}",
             **{"if": "{{ trigger.stop }}"}},
            transform("last", "{{ steps.maybe.status }}"),
        ],
        "on_failure": [transform("tell", "{{ error.message }}")],
    }
    pid = alice.post("/api/v1/pipelines", json={"name": "p", "pipeline": doc}).json()["id"]
    ok = run(alice, pid, {"x": "go", "stop": False})
    assert ok["status"] == "succeeded"
    rows = {s["step_id"]: s for s in srv.state.store.runs.get(None, ok["id"])["steps"]}
    assert rows["fan.paths[0].a"]["output"] == {"value": "goa"} and rows["fan.paths[1].b"]["status"] == "failed"
    assert rows["maybe"]["status"] == "skipped" and rows["done"]["status"] == "skipped"
    assert rows["last"]["output"] == {"value": "skipped"}
    stopped = run(alice, pid, {"x": "go", "stop": True})
    assert stopped["status"] == "failed" and stopped["error"]["code"] == "stopped"
    rows = {s["step_id"]: s for s in srv.state.store.runs.get(None, stopped["id"])["steps"]}
    assert rows["last"]["status"] == "skipped"
    assert rows["on_failure.tell"]["output"] == {"value": "stopped at goa"}
