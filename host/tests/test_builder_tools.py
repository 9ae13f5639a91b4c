"""The builder's tools over real HTTP: the field picker, pinned data; and their pieces (the
document walker, flattening, samples from output schemas)."""

from __future__ import annotations

import pytest
from e2e_support import LiveServer, make_app
from levqor_host.builder.document import find_step, walk_steps
from levqor_host.builder.fields import flatten, schema_sample
from levqor_kernel import hookimpl

NESTED = {
    "levqor": 1,
    "trigger": {"type": "webhook"},
    "steps": [
        {"id": "first", "connector": "core", "action": "transform", "payload": {"value": 1}},
        {
            "id": "each", "type": "for_each", "items": "{{ trigger.orders }}",
            "steps": [
                {
                    "id": "route", "type": "branch",
                    "paths": [{"name": "big", "if": "{{ item.total > 100 }}", "steps": [
                        {"id": "post", "connector": "core", "action": "transform",
                         "payload": {"value": "{{ item }}"},
                         "on_error": [{"id": "alert", "connector": "core", "action": "transform",
                                       "payload": {"value": 0}}]},
                    ]}],
                    "default": [{"id": "keep", "connector": "core", "action": "transform",
                                 "payload": {"value": 2}}],
                },
            ],
        },
    ],
    "on_failure": [{"id": "oops", "connector": "core", "action": "transform",
                    "payload": {"value": 0}}],
}  # fmt: skip


def test_the_walker_lists_every_step_in_document_order_with_its_path():
    got = [(p.id, p.path, p.pointer, p.loops) for p in walk_steps(NESTED)]
    assert got == [
        ("first", "first", "/steps/0", ()),
        ("each", "each", "/steps/1", ()),
        ("route", "each[*].route", "/steps/1/steps/0", ("each",)),
        ("post", "each[*].route.paths[0].post", "/steps/1/steps/0/paths/0/steps/0", ("each",)),
        ("alert", "each[*].route.paths[0].post.on_error.alert",
         "/steps/1/steps/0/paths/0/steps/0/on_error/0", ("each",)),
        ("keep", "each[*].route.default.keep", "/steps/1/steps/0/default/0", ("each",)),
        ("oops", "on_failure.oops", "/on_failure/0", ()),
    ]  # fmt: skip
    assert find_step(NESTED, "keep").pointer == "/steps/1/steps/0/default/0"
    assert find_step(NESTED, "nope") is None
    assert walk_steps({"steps": [1, {"no": "id"}, {"id": "ok"}]})[0].id == "ok"
    assert walk_steps("not a document") == []


def test_flatten_writes_references_jinja_reads_back():
    out = flatten("steps.s.output", "S", {"a": {"b": 1}, "first name": "Ann", "items": [{"x": 2}]})
    assert [(f["ref"], f["label"], f["sample"]) for f in out] == [
        ("{{ steps.s.output }}", "S", {"a": {"b": 1}, "first name": "Ann", "items": [{"x": 2}]}),
        ("{{ steps.s.output.a }}", "S › a", {"b": 1}),
        ("{{ steps.s.output.a.b }}", "S › a › b", 1),
        ('{{ steps.s.output["first name"] }}', "S › first name", "Ann"),
        ('{{ steps.s.output["items"] }}', "S › items", [{"x": 2}]),  # not dict.items
        ('{{ steps.s.output["items"][0] }}', "S › items › first", {"x": 2}),
        ('{{ steps.s.output["items"][0].x }}', "S › items › first › x", 2),
    ]
    long = flatten("trigger", "T", {"t": "x" * 500, "big": list(range(500))})
    assert long[1]["sample"].endswith("…") and len(long[1]["sample"]) == 201
    assert long[2]["sample"] is None  # too large to show
    assert len(flatten("trigger", "T", {str(i): i for i in range(1000)})) == 200


def test_schema_samples():
    schema = {
        "type": "object",
        "properties": {
            "ok": {"type": "boolean"}, "ts": {"type": "string", "format": "date-time"},
            "ch": {"type": "string", "examples": ["C1"]}, "n": {"type": ["integer", "null"]},
            "rows": {"type": "array", "items": {"type": "string"}}, "kind": {"enum": ["a", "b"]},
        },
    }  # fmt: skip
    assert schema_sample(schema) == {
        "ok": False, "ts": "2026-01-01T00:00:00Z", "ch": "C1", "n": 0, "rows": ["text"], "kind": "a"
    }  # fmt: skip
    assert schema_sample({}) is None and schema_sample("nope") is None


# ------------------------------------------------------------------------------ over HTTP
class Shop:
    """A connector whose output schema names its fields (no run needed to pick them)."""

    @hookimpl
    def describe_schema(self):
        return [{
            "name": "shop", "title": "Shop", "description": "test connector",
            "actions": {"order": {
                "title": "Order", "payload": {"type": "object"}, "writes": True,
                "output": {"type": "object", "properties": {
                    "order_id": {"type": "string", "examples": ["o-1"]},
                    "total": {"type": "number"}}},
                "example": {}}},
        }]  # fmt: skip

    @hookimpl
    def run_task(self, connector, action, payload, credentials, context):
        return {"order_id": "o-42", "total": 12.5}


@pytest.fixture
def srv(tmp_path):
    s = LiveServer(make_app(tmp_path, plugins=[("shop", Shop())]))
    yield s
    s.stop()


FLAT = {
    "levqor": 1,
    "trigger": {"type": "manual"},
    "steps": [
        {"id": "buy", "name": "Buy", "connector": "shop", "action": "order", "payload": {}},
        {"id": "note", "connector": "core", "action": "transform",
         "payload": {"value": {"id": "{{ steps.buy.output.order_id }}"}}},
    ],
}  # fmt: skip


def _fields(c, pid, **params) -> dict:
    r = c.get(f"/api/v1/pipelines/{pid}/fields", params=params)
    assert r.status_code == 200, r.text
    return {s["id"]: s for s in r.json()["sources"]}


def test_fields_come_from_the_schema_then_from_the_last_run(srv):
    _, key = srv.user_with_key("fay@example.com")
    c = srv.client(key)
    pid = c.post("/api/v1/pipelines", json={"pipeline": FLAT}).json()["id"]

    before = _fields(c, pid)
    assert list(before) == ["trigger", "buy", "note"]
    assert before["trigger"]["source"] == "none" and before["trigger"]["fields"][0]["ref"] == (
        "{{ trigger }}"
    )
    buy = before["buy"]
    assert (buy["source"], buy["path"], buy["pointer"]) == ("schema", "buy", "/steps/0")
    assert buy["writes"] is True and before["note"]["writes"] is False
    assert [(f["ref"], f["label"], f["sample"]) for f in buy["fields"][1:]] == [
        ("{{ steps.buy.output.order_id }}", "Buy › order_id", "o-1"),
        ("{{ steps.buy.output.total }}", "Buy › total", 0),
    ]
    assert before["note"]["fields"][1]["ref"] == "{{ steps.note.output.value }}"

    run = c.post("/api/v1/run?wait=10", json={"pipeline_id": pid, "input": {"who": {"n": "Ann"}}})
    assert run.json()["status"] == "succeeded", run.text
    after = _fields(c, pid)
    assert after["trigger"]["source"] == "run" and after["trigger"]["run_id"] == run.json()["id"]
    assert ("{{ trigger.who.n }}", "Ann") in [
        (f["ref"], f["sample"]) for f in after["trigger"]["fields"]
    ]
    assert after["buy"]["source"] == "run"
    assert [f["sample"] for f in after["buy"]["fields"][1:]] == ["o-42", 12.5]
    assert after["note"]["fields"][2] == {
        "ref": "{{ steps.note.output.value.id }}", "label": "note › value › id", "sample": "o-42"
    }  # fmt: skip
    assert _fields(c, pid, version=1)["buy"]["source"] == "run"


def test_fields_of_unknown_or_foreign_pipelines_are_404_and_bad_versions_400(srv):
    _, key = srv.user_with_key("gus@example.com")
    c = srv.client(key)
    pid = c.post("/api/v1/pipelines", json={"pipeline": FLAT}).json()["id"]
    _, other = srv.user_with_key("hal@example.com")
    assert srv.client(other).get(f"/api/v1/pipelines/{pid}/fields").status_code == 404
    assert c.get("/api/v1/pipelines/pl_nope/fields").status_code == 404
    assert c.get(f"/api/v1/pipelines/{pid}/fields?version=2").status_code == 404
    for bad in ("0", "x", "1.5"):
        r = c.get(f"/api/v1/pipelines/{pid}/fields?version={bad}")
        assert r.status_code == 400, r.text


def test_pinning_unknown_steps_pipelines_and_bad_bodies(srv):
    _, key = srv.user_with_key("ida@example.com")
    c = srv.client(key)
    pid = c.post("/api/v1/pipelines", json={"pipeline": FLAT}).json()["id"]
    url = f"/api/v1/pipelines/{pid}/pinned"
    assert c.put(f"{url}/nope", json={"output": {}}).status_code == 404
    assert c.put("/api/v1/pipelines/pl_nope/pinned/buy", json={"output": {}}).status_code == 404
    for body in ({}, {"output": [1]}, {"output": "x"}, {"output": {}, "extra": 1}, [1]):
        r = c.put(f"{url}/buy", json=body)
        assert r.status_code == 400, (body, r.text)
    assert c.delete(f"{url}/buy").status_code == 404  # nothing pinned
    _, other = srv.user_with_key("jo@example.com")
    assert srv.client(other).put(f"{url}/buy", json={"output": {}}).status_code == 404


def test_pinned_outputs_are_versions_feed_the_picker_and_never_real_runs(srv):
    _, key = srv.user_with_key("kim@example.com")
    c = srv.client(key)
    pid = c.post("/api/v1/pipelines", json={"pipeline": FLAT}).json()["id"]
    pinned = {"order_id": "pinned-1", "total": 999, "lines": [{"sku": "A"}]}
    r = c.put(f"/api/v1/pipelines/{pid}/pinned/buy", json={"output": pinned})
    assert r.status_code == 200, r.text
    assert r.json()["version"] == 2 and r.json()["pipeline"]["pinned"] == {"buy": pinned}
    assert c.get(f"/api/v1/pipelines/{pid}/versions/1").json()["pipeline"].get("pinned") is None

    buy = _fields(c, pid)["buy"]
    assert buy["source"] == "pinned"
    assert ("{{ steps.buy.output.lines[0].sku }}", "A") in [
        (f["ref"], f["sample"]) for f in buy["fields"]
    ]

    run = c.post("/api/v1/run?wait=10", json={"pipeline_id": pid}).json()
    assert run["status"] == "succeeded" and run["version"] == 2
    assert run["steps"][0]["output"] == {"order_id": "o-42", "total": 12.5}  # the real one
    assert run["steps"][1]["output"] == {"value": {"id": "o-42"}}
    assert _fields(c, pid)["buy"]["source"] == "pinned"  # pinned wins over the last run

    r = c.delete(f"/api/v1/pipelines/{pid}/pinned/buy")
    assert r.status_code == 200 and r.json()["version"] == 3
    assert "pinned" not in r.json()["pipeline"]
    assert _fields(c, pid)["buy"]["source"] == "run"
    assert c.delete(f"/api/v1/pipelines/{pid}/pinned/buy").status_code == 404


def test_pinned_output_over_the_value_limit_is_422(tmp_path):
    s = LiveServer(make_app(tmp_path, plugins=[("shop", Shop())],
                            env={"LEVQOR_MAX_VALUE_BYTES": "2048"}))  # fmt: skip
    try:
        _, key = s.user_with_key("lee@example.com")
        c = s.client(key)
        pid = c.post("/api/v1/pipelines", json={"pipeline": FLAT}).json()["id"]
        r = c.put(f"/api/v1/pipelines/{pid}/pinned/buy", json={"output": {"x": "y" * 3000}})
        assert r.status_code == 422 and r.json()["error"]["code"] == "too_large", r.text
    finally:
        s.stop()


def test_fields_of_a_flow_list_loop_items_and_nested_steps(srv):
    _, key = srv.user_with_key("max@example.com")
    c = srv.client(key)
    r = c.post("/api/v1/pipelines", json={"pipeline": NESTED})
    assert r.status_code == 201, r.text
    pid = r.json()["id"]
    orders = {"orders": [{"id": 1, "total": 250}, {"id": 2, "total": 5}]}
    assert c.post("/api/v1/run?wait=10", json={"pipeline_id": pid, "input": orders}).json()[
        "status"
    ] in ("succeeded", "failed")
    got = c.get(f"/api/v1/pipelines/{pid}/fields").json()["sources"]
    assert [(s["id"], s["kind"], s["path"]) for s in got] == [
        ("trigger", "trigger", None),
        ("first", "step", "first"),
        ("each", "step", "each"),
        ("each.item", "item", "each[*]"),
        ("route", "step", "each[*].route"),
        ("post", "step", "each[*].route.paths[0].post"),
        ("alert", "step", "each[*].route.paths[0].post.on_error.alert"),
        ("keep", "step", "each[*].route.default.keep"),
        ("oops", "step", "on_failure.oops"),
    ]
    by_id = {s["id"]: s for s in got}
    assert ("{{ item.total }}", 250) in [(f["ref"], f["sample"]) for f in by_id["each.item"]["fields"]]
    assert by_id["each.item"]["fields"][-1]["ref"] == "{{ index }}"
    post = by_id["post"]
    assert post["loops"] == ["each"] and post["source"] == "run"  # item 0 took the big path
    assert post["fields"][0]["sample"] == {"value": {"id": 1, "total": 250}}
    assert by_id["keep"]["source"] == "schema"  # item 0 did not take the default path
    assert by_id["each"]["source"] == "run" and by_id["route"]["connector"] == "flow"
    assert not any(s.get("writes") for s in got)  # core steps only
