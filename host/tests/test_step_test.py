"""Testing one step alone over real HTTP: with a past run's data, with pinned outputs, with the
owner's credentials; nothing recorded; writing actions say so; foreign ids 404, bad bodies 400."""

from __future__ import annotations

import pytest
from e2e_support import LiveServer, make_app
from levqor_kernel import hookimpl
from levqor_kernel.errors import PermanentError


class Shop:
    """A writing connector with an optional credential; it keeps what it was asked."""

    def __init__(self) -> None:
        self.calls: list[dict] = []

    @hookimpl
    def describe_schema(self):
        return [{
            "name": "shop", "title": "Shop", "description": "test connector",
            "credentials": {"type": "object", "properties": {
                "token": {"type": "string", "writeOnly": True}}},
            "credentials_required": False,
            "actions": {"order": {
                "title": "Order", "writes": True,
                "payload": {"type": "object", "properties": {"sku": {"type": "string"}}},
                "output": {"type": "object"}, "example": {"sku": "A"}}},
        }]  # fmt: skip

    @hookimpl
    def run_task(self, connector, action, payload, credentials, context):
        self.calls.append(payload)
        if payload.get("sku") == "broken":
            raise PermanentError("no such sku")
        return {"order_id": f"o-{payload.get('sku')}", "authorized": credentials.get("token") == "tok-1"}


@pytest.fixture
def shop():
    return Shop()


@pytest.fixture
def srv(tmp_path, shop):
    s = LiveServer(make_app(tmp_path, plugins=[("shop", shop)]))
    yield s
    s.stop()


DOC = {
    "levqor": 1,
    "trigger": {"type": "manual"},
    "steps": [
        {"id": "buy", "connector": "shop", "action": "order", "credential": "shop-key",
         "payload": {"sku": "{{ trigger.sku }}"}},
        {"id": "note", "connector": "core", "action": "transform",
         "payload": {"value": "{{ steps.buy.output.order_id }}/{{ trigger.sku }}"}},
        {"id": "each", "type": "for_each", "items": "{{ trigger.lines }}", "steps": [
            {"id": "line", "connector": "core", "action": "transform",
             "payload": {"value": "{{ index }}:{{ item.n }}:{{ steps.note.output.value }}"}}]},
        {"id": "hold", "type": "wait", "seconds": 3600, "if": "{{ trigger.hold }}"},
    ],
}  # fmt: skip


@pytest.fixture
def owner(srv):
    _, key = srv.user_with_key("ola@example.com")
    c = srv.client(key)
    r = c.post("/api/v1/credentials", json={"name": "shop-key", "connector": "shop",
                                            "values": {"token": "tok-1"}})  # fmt: skip
    assert r.status_code == 201, r.text
    r = c.post("/api/v1/pipelines", json={"pipeline": DOC})
    assert r.status_code == 201, r.text
    return c, r.json()["id"]


def _test(c, pid, step, **body):
    return c.post(f"/api/v1/pipelines/{pid}/steps/{step}/test", json=body)


def test_a_step_with_a_past_runs_data_records_nothing(srv, shop, owner):
    c, pid = owner
    run = c.post("/api/v1/run?wait=10", json={"pipeline_id": pid,
                                              "input": {"sku": "A", "lines": [{"n": 7}], "hold": False}})  # fmt: skip
    assert run.json()["status"] == "succeeded", run.text
    rid = run.json()["id"]
    before = c.get(f"/api/v1/runs/{rid}").json()["steps"]
    calls = len(shop.calls)

    r = _test(c, pid, "note", run_id=rid)
    assert r.status_code == 200, r.text
    assert r.json() == {
        "status": "succeeded", "input": {"value": "o-A/A"}, "output": {"value": "o-A/A"},
        "error": None, "writes": False,
    }  # fmt: skip
    line = _test(c, pid, "line", run_id=rid).json()  # inside the loop: its first item
    assert line["status"] == "succeeded" and line["output"] == {"value": "0:7:o-A/A"}
    each = _test(c, pid, "each", run_id=rid, trigger={"sku": "A", "lines": [{"n": 1}, {"n": 2}]})
    assert each.json()["output"] == [{"value": "0:1:o-A/A"}, {"value": "1:2:o-A/A"}]
    hold = _test(c, pid, "hold", trigger={"hold": True}).json()
    assert hold["status"] == "waiting" and hold["wait"]["kind"] == "time"

    assert len(shop.calls) == calls  # nothing upstream for those
    assert c.get(f"/api/v1/runs/{rid}").json()["steps"] == before
    assert len(c.get(f"/api/v1/runs?pipeline_id={pid}").json()["items"]) == 1


def test_a_writing_step_says_so_and_uses_the_owners_credentials(shop, owner):
    c, pid = owner
    r = _test(c, pid, "buy", trigger={"sku": "B"})
    out = r.json()
    assert r.status_code == 200 and out["status"] == "succeeded", r.text
    assert out["input"] == {"sku": "B"} and out["output"] == {"order_id": "o-B", "authorized": True}
    assert out["writes"] is True and "shop.order" in out["warning"]
    assert shop.calls[-1] == {"sku": "B"}
    failed = _test(c, pid, "buy", trigger={"sku": "broken"}).json()
    assert failed["status"] == "failed" and failed["output"] is None
    assert "no such sku" in failed["error"]["message"] and failed["writes"] is True
    each = _test(c, pid, "each", trigger={"lines": []}).json()  # a construct of core steps
    assert each["status"] == "succeeded" and each["writes"] is False and "warning" not in each


def test_a_step_with_pinned_outputs(owner):
    c, pid = owner
    assert c.put(f"/api/v1/pipelines/{pid}/pinned/buy",
                 json={"output": {"order_id": "P-1"}}).status_code == 200  # fmt: skip
    r = _test(c, pid, "note", use_pinned=True, trigger={"sku": "Z"})
    assert r.json()["output"] == {"value": "P-1/Z"}, r.text
    unpinned = _test(c, pid, "note", trigger={"sku": "Z"}).json()  # no output of buy at all
    assert unpinned["status"] == "failed", unpinned
    old = _test(c, pid, "note", use_pinned=True, version=1, trigger={"sku": "Z"}).json()
    assert old["status"] == "failed"  # version 1 had nothing pinned


def test_foreign_or_unknown_ids_are_404(srv, owner):
    c, pid = owner
    simple = [{"id": "note", "connector": "core", "action": "transform", "payload": {"value": 1}}]
    other_pid = c.post("/api/v1/pipelines", json={"pipeline": {**DOC, "steps": simple}})
    other_run = c.post("/api/v1/run?wait=10", json={"pipeline_id": other_pid.json()["id"]}).json()
    assert _test(c, pid, "note", run_id=other_run["id"]).status_code == 404  # another pipeline's
    assert _test(c, pid, "note", run_id="run_nope").status_code == 404
    assert _test(c, pid, "nope").status_code == 404
    assert _test(c, "pl_nope", "note").status_code == 404
    assert _test(c, pid, "note", version=9).status_code == 404
    _, key = srv.user_with_key("pat@example.com")
    assert _test(srv.client(key), pid, "note").status_code == 404


@pytest.mark.parametrize(
    "body",
    [{"use_pinned": "yes"}, {"version": 0}, {"trigger": [1]}, {"run_id": 5}, {"extra": 1},
     {"run_id": ""}],
)  # fmt: skip
def test_bad_bodies_are_400(owner, body):
    c, pid = owner
    r = _test(c, pid, "note", **body)
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_request", r.text
