"""Flow control in the runner: conditions, branches, parallel paths, loops, error paths, waits,
sub-pipelines, stops, resume by path, and the validation of nested documents."""

from __future__ import annotations

import threading

import pytest
from levqor_kernel import hookimpl
from levqor_kernel.errors import PermanentError
from levqor_kernel.pipeline import validate_pipeline
from levqor_kernel.plugins import make_plugin_manager
from levqor_kernel.runner import ListRecorder, Runner, RunRequest


class Echo:
    """A connector that records every call; ``{"fail": true}`` fails permanently."""

    def __init__(self) -> None:
        self.calls: list[dict] = []
        self.lock = threading.Lock()
        #: when set, every call waits there: the calls it lets through ran at the same time
        self.barrier: threading.Barrier | None = None
        self.active = self.peak = 0

    @hookimpl
    def describe_schema(self):
        return [
            {
                "name": "echo",
                "title": "Echo",
                "description": "records calls",
                "credentials": None,
                "actions": {
                    "say": {
                        "title": "Say",
                        "payload": {"type": "object"},
                        "output": {"type": "object"},
                        "example": {"text": "hi"},
                    }
                },
            }
        ]

    @hookimpl
    def run_task(self, connector, action, payload, credentials, context):
        with self.lock:
            self.calls.append({"payload": payload, "key": context.idempotency_key})
            self.active += 1
            self.peak = max(self.peak, self.active)
        try:
            if self.barrier is not None:
                self.barrier.wait(timeout=20)
        finally:
            with self.lock:
                self.active -= 1
        if payload.get("fail"):
            raise PermanentError(f"told to fail: {payload.get('text')}", code="told")
        return {"said": payload.get("text"), "key": context.idempotency_key}


@pytest.fixture
def echo():
    return Echo()


@pytest.fixture
def runner(echo):
    pm = make_plugin_manager(entry_points=False, plugins=[("echo", echo)])
    r = Runner(pm, sleep=lambda s: None, env={})
    yield r
    r.close()


def say(sid, text="hi", **kw):
    return {"id": sid, "connector": "echo", "action": "say", "payload": {"text": text, **kw.pop("payload", {})}, **kw}


def doc(*steps, **top):
    return {"levqor": 1, "trigger": {"type": "manual"}, "steps": list(steps), **top}


def run(runner, d, trigger=None, **kw):
    rec = ListRecorder()
    res = runner.run(RunRequest("run1", d, trigger or {}, **kw), recorder=rec)
    return res, rec


def finished(rec):
    return {e["step"]: e["status"] for k, e in rec.events if k == "step_finished"}


def test_a_false_condition_skips_the_step_and_later_steps_see_it_skipped(runner, echo):
    d = doc(
        say("a", "{{ trigger.n }}", **{"if": "{{ trigger.n > 5 }}"}),
        say("b", "{{ steps.a.status }}"),
    )
    res, rec = run(runner, d, {"n": 3})
    assert res.status == "succeeded"
    assert finished(rec) == {"a": "skipped", "b": "succeeded"}
    skipped = next(e for k, e in rec.events if k == "step_finished" and e["step"] == "a")
    assert skipped["input"] == {"if": False}
    assert [c["payload"]["text"] for c in echo.calls] == ["skipped"]


def test_conditions_objects_all_any_not(runner, echo):
    cond = {"all": [{"left": "{{ trigger.n }}", "op": "gte", "right": 3}, {"not": {"any": [False, "no"]}}]}
    res, _ = run(runner, doc(say("a", **{"if": cond})), {"n": "3"})
    assert res.steps["a"] == "succeeded"
    res, _ = run(runner, doc(say("a", **{"if": cond})), {"n": 2})
    assert res.steps["a"] == "skipped"


def test_branch_runs_the_first_matching_path_else_default(runner, echo):
    route = {
        "id": "route",
        "type": "branch",
        "paths": [
            {"name": "big", "if": "{{ trigger.total > 100 }}", "steps": [say("big", "big")]},
            {"name": "mid", "if": "{{ trigger.total > 10 }}", "steps": [say("mid", "mid")]},
        ],
        "default": [say("small", "small")],
    }
    d = doc(route, say("after", "{{ steps.route.output.name }} {{ steps.big.status }}"))
    res, rec = run(runner, d, {"total": 50})
    assert res.status == "succeeded"
    assert finished(rec) == {"route.paths[1].mid": "succeeded", "route": "succeeded", "after": "succeeded"}
    assert res.outputs["route"]["path"] == 1
    assert echo.calls[-1]["payload"]["text"] == "mid skipped"
    res, rec = run(runner, d, {"total": 1})
    assert "route.default.small" in finished(rec)
    assert res.outputs["route"]["path"] == "default"


def test_parallel_runs_every_path_and_an_optional_path_may_fail(runner, echo):
    echo.barrier = threading.Barrier(3)  # all three paths must be in flight at once
    fan = {
        "id": "fan",
        "type": "parallel",
        "paths": [
            {"steps": [say("a", "a")]},
            {"steps": [say("b", "b")]},
            {"steps": [say("c", "c", payload={"fail": True})], "required": False},
        ],
    }
    res, rec = run(runner, doc(fan))
    assert echo.peak == 3  # the paths ran at once
    echo.barrier = None
    fan["paths"][2]["steps"].append(say("c2"))
    after = say("after", "{{ steps.a.output.said }}{{ steps.b.output.said }} {{ steps.c.status }} {{ steps.c2.status }}")
    res, rec = run(runner, doc(fan, after))
    assert res.status == "succeeded"
    assert res.outputs["fan"][0]["said"] == "a" and res.outputs["fan"][2] is None
    assert finished(rec)["fan.paths[2].c"] == "failed"
    assert echo.calls[-1]["payload"]["text"] == "ab failed skipped"


def test_a_required_parallel_path_that_fails_fails_the_run(runner, echo):
    fan = {"id": "fan", "type": "parallel", "paths": [{"steps": [say("a")]}, {"steps": [say("b", payload={"fail": True})]}]}
    res, rec = run(runner, doc(fan, say("after")))
    assert res.status == "failed" and res.error["step"] == "fan.paths[1].b"
    assert finished(rec)["fan"] == "failed" and finished(rec)["after"] == "skipped"


def loop(body, items="{{ trigger.rows }}", **kw):
    return {"id": "each", "type": "for_each", "items": items, "steps": body, **kw}


def test_for_each_runs_the_body_per_item_with_item_and_index(runner, echo):
    d = doc(loop([say("send", "{{ index }}:{{ item.name }}")]), say("after", "{{ steps.each.output | length }}"))
    res, rec = run(runner, d, {"rows": [{"name": "a"}, {"name": "b"}, {"name": "c"}]})
    assert res.status == "succeeded"
    assert [c["payload"]["text"] for c in echo.calls] == ["0:a", "1:b", "2:c", 3]
    assert [o["said"] for o in res.outputs["each"]] == ["0:a", "1:b", "2:c"]
    assert {"each[0].send", "each[2].send"} <= set(finished(rec))
    # the idempotency key is unique per item
    assert echo.calls[1]["key"] == "run1:each[1].send"


def test_for_each_concurrency_and_collected_failures(runner, echo):
    echo.barrier = threading.Barrier(3)  # three items at a time, never more
    items = [{"fail": i % 3 == 0, "n": i} for i in range(9)]
    d = doc(loop([say("send", "{{ item.n }}", payload={"fail": "{{ item.fail }}"})], concurrency=3, on_item_error="collect"))
    res, rec = run(runner, d, {"rows": items})
    assert echo.peak == 3
    assert res.status == "succeeded"
    out = res.outputs["each"]
    assert [o is None for o in out] == [i % 3 == 0 for i in range(9)]
    loop_rec = next(e for k, e in rec.events if k == "step_finished" and e["step"] == "each")
    assert loop_rec["input"] == {"items": 9, "failed": 3}


def test_a_failed_item_stops_the_loop_by_default(runner, echo):
    items = [{"fail": False}, {"fail": True}, {"fail": False}]
    res, rec = run(runner, doc(loop([say("send", payload={"fail": "{{ item.fail }}"})])), {"rows": items})
    assert res.status == "failed" and res.error["step"] == "each[1].send"
    assert len(echo.calls) == 2


def test_the_item_cap_fails_the_loop(echo):
    pm = make_plugin_manager(entry_points=False, plugins=[("echo", echo)])
    r = Runner(pm, env={}, max_items=5)
    res, _ = run(r, doc(loop([say("send")])), {"rows": list(range(6))})
    assert res.status == "failed" and res.error["code"] == "too_many_items"
    res, _ = run(r, doc(loop([say("send")], max_items=2)), {"rows": list(range(3))})
    assert res.error["code"] == "too_many_items"
    res, _ = run(r, doc(loop([say("send")])), {"rows": "nope"})
    assert res.error["code"] == "not_a_list"
    assert echo.calls == []


def test_a_resumed_loop_runs_only_the_unfinished_items(runner, echo):
    d = doc(loop([say("send", "{{ item }}")]))
    completed = {f"each[{i}].send": {"said": str(i)} for i in range(0, 1000) if i != 17}
    res, _ = run(runner, d, {"rows": list(range(1000))}, completed=completed)
    assert res.status == "succeeded"
    assert [c["payload"]["text"] for c in echo.calls] == [17]
    assert echo.calls[0]["key"] == "run1:each[17].send"
    assert len(res.outputs["each"]) == 1000


def test_on_error_continue_and_fallback_steps(runner, echo):
    d = doc(
        say("a", "x", payload={"fail": True}, on_error="continue"),
        say("b", "y", payload={"fail": True}, on_error=[say("alert", "{{ error.message }}")]),
        say("c", "{{ steps.a.status }} {{ steps.b.output.said }}"),
    )
    res, rec = run(runner, d)
    assert res.status == "succeeded"
    assert finished(rec)["b.on_error.alert"] == "succeeded"
    assert echo.calls[2]["payload"]["text"] == "told to fail: y"
    assert echo.calls[3]["payload"]["text"] == "failed told to fail: y"


def test_on_failure_steps_run_when_the_run_fails(runner, echo):
    d = doc(say("a", payload={"fail": True}), on_failure=[say("tell", "{{ error.step }}")])
    res, rec = run(runner, d)
    assert res.status == "failed"
    assert finished(rec)["on_failure.tell"] == "succeeded"
    assert echo.calls[-1]["payload"]["text"] == "a"


def test_stop_ends_the_run_with_its_status_and_output(runner, echo):
    d = doc(say("a"), {"id": "done", "type": "stop", "output": {"v": "{{ steps.a.output.said }}"}}, say("never"))
    res, rec = run(runner, d)
    assert res.status == "succeeded" and res.output == {"v": "hi"}
    assert finished(rec)["never"] == "skipped"
    d = doc({"id": "done", "type": "stop", "status": "failed", "message": "no"}, on_failure=[say("tell", "{{ error.code }}")])
    res, _ = run(runner, d)
    assert res.status == "failed" and res.error["code"] == "stopped" and res.error["message"] == "no"
    assert res.outputs["on_failure.tell"]["said"] == "stopped"
    # resumed after the stop was recorded: still stopped
    res, _ = run(runner, doc(say("a"), {"id": "done", "type": "stop", "output": 1}, say("never")),
                 completed={"a": {}, "done": {"status": "succeeded", "output": 1, "message": ""}})
    assert res.status == "succeeded" and res.output == 1 and "never" not in res.outputs


def test_a_filter_in_a_loop_ends_only_that_item(runner, echo):
    flt = {"id": "only_big", "connector": "core", "action": "filter",
           "payload": {"conditions": [{"left": "{{ item }}", "op": "gt", "right": 1}]}}
    pm = make_plugin_manager(plugins=[("echo", echo)], entry_points=False)
    r = Runner(pm, env={})
    res, rec = run(r, doc(loop([flt, say("send", "{{ item }}")]), say("after")), {"rows": [1, 2, 3]})
    assert res.status == "succeeded"
    assert [c["payload"]["text"] for c in echo.calls] == [2, 3, "hi"]
    assert finished(rec)["each[0].send"] == "skipped"


def test_a_long_wait_suspends_and_resumes_when_decided(runner, echo):
    d = doc(say("a"), {"id": "pause", "type": "wait", "seconds": 3600}, say("b"))
    res, rec = run(runner, d)
    assert res.status == "waiting" and res.wait["kind"] == "time" and res.wait["step"] == "pause"
    assert res.wait["seconds"] == 3600 and "until" in res.wait
    assert finished(rec) == {"a": "succeeded", "pause": "waiting"}
    res, rec = run(runner, d, completed={"a": {"said": "hi"}, "pause": {"waited": 3600}})
    assert res.status == "succeeded" and finished(rec) == {"b": "succeeded"}
    assert len(echo.calls) == 2


def test_a_short_wait_sleeps_in_place(runner, echo):
    res, _ = run(runner, doc({"id": "pause", "type": "wait", "seconds": "{{ trigger.s }}"}, say("b")), {"s": 2})
    assert res.status == "succeeded" and res.outputs["pause"] == {"waited": 2.0}


def test_core_delay_over_a_few_seconds_suspends(runner):
    res, _ = run(runner, doc({"id": "d", "connector": "core", "action": "delay", "payload": {"seconds": 60}}))
    assert res.status == "waiting" and res.wait == {**res.wait, "kind": "time", "seconds": 60.0, "step": "d"}


def test_an_approval_rejected_fails_the_step_and_its_error_path_runs(runner, echo):
    ok = {"id": "ok", "type": "wait", "approval": {"message": "Send {{ trigger.n }}?"},
          "on_error": [say("told", "{{ error.code }}")]}
    d = doc(ok, say("b"))
    res, _ = run(runner, d, {"n": 5})
    assert res.status == "waiting" and res.wait["approval"] == {"message": "Send 5?"}
    res, rec = run(runner, d, {"n": 5}, decided={"ok": {"status": "failed", "error": {"type": "Rejected", "code": "rejected", "message": "rejected"}}})
    assert res.status == "succeeded"
    assert [c["payload"]["text"] for c in echo.calls] == ["rejected", "hi"]


def test_a_sub_pipeline_call_suspends_with_its_rendered_input(runner):
    d = doc({"id": "child", "type": "pipeline", "pipeline": "pl_x", "input": {"n": "{{ trigger.n }}"}}, say("b", "{{ steps.child.output.output.v }}"))
    res, _ = run(runner, d, {"n": 4})
    assert res.wait == {"step": "child", "kind": "pipeline", "pipeline": "pl_x", "input": {"n": 4}}
    res, _ = run(runner, d, {"n": 4}, completed={"child": {"run_id": "r2", "status": "succeeded", "output": {"v": 9}}})
    assert res.status == "succeeded" and res.outputs["b"]["said"] == 9


def test_a_wait_inside_a_loop_resumes_at_that_item(runner, echo):
    body = [{"id": "ok", "type": "wait", "approval": {}}, say("send", "{{ item }}")]
    d = doc(loop(body))
    res, _ = run(runner, d, {"rows": [1, 2]})
    assert res.wait["step"] == "each[0].ok" and echo.calls == []
    res, _ = run(runner, d, {"rows": [1, 2]}, completed={"each[0].ok": {"approved": True}})
    assert res.wait["step"] == "each[1].ok" and len(echo.calls) == 1


def test_cancel_reaches_loop_items(runner, echo):
    n = []
    res = runner.run(RunRequest("r", doc(loop([say("send")], concurrency=2)), {"rows": list(range(50))}),
                     cancelled=lambda: len(echo.calls) >= 4 or bool(n))
    assert res.status == "cancelled" and len(echo.calls) < 10


def test_records_have_paths_and_positions_in_document_order(runner):
    d = doc(say("a"), loop([say("send")]), say("z"))
    res, _ = run(runner, d, {"rows": [1, 2]})
    assert [(r.step_id, r.position, r.connector) for r in res.records] == [
        ("a", 0, "echo"), ("each[0].send", 2, "echo"), ("each[1].send", 2, "echo"), ("each", 1, "flow"), ("z", 3, "echo"),
    ]


def test_test_step_runs_one_step_alone(runner, echo):
    d = doc(say("a"), say("b", "{{ steps.a.output.said }}!"))
    out = runner.test_step(d, "b", outputs={"a": {"said": "pinned"}})
    assert out["status"] == "succeeded" and out["input"] == {"text": "pinned!"} and out["output"]["said"] == "pinned!"
    assert len(echo.calls) == 1
    out = runner.test_step(doc({"id": "w", "type": "wait", "approval": {}}), "w")
    assert out["status"] == "waiting"
    with pytest.raises(KeyError):
        runner.test_step(d, "nope")


# ---------------------------------------------------------------- validation


def problems(runner, d):
    return [(p.pointer, p.message, p.step) for p in validate_pipeline(d, runner.pm.catalog)]


def test_nested_documents_validate_with_pointers_and_step_ids(runner):
    d = doc(loop([say("send", "{{ item.x }} {{ steps.after.output }}")]), say("after", "{{ item }}"))
    got = problems(runner, d)
    assert ("/steps/0/steps/0/payload/text", "refers to step 'after', which is not an earlier step", "send") in got
    assert any(p[0] == "/steps/1/payload/text" and "unknown name(s) item" in p[1] for p in got)
    d = doc(say("a"), {"id": "route", "type": "branch", "paths": [{"if": True, "steps": [say("a")]}]})
    assert ("/steps/1/paths/0/steps/0/id", "duplicate step id 'a'", "a") in problems(runner, d)
    d = doc({"id": "w", "type": "wait", "seconds": 1, "approval": {}})
    assert problems(runner, d)[0][1].startswith("a wait step needs exactly one")
    d = doc(say("a"), {"id": "b", "type": "branch", "paths": [{"if": {"left": 1, "op": "gt"}, "steps": [say("c", "{{ steps.a }}")]}]})
    assert problems(runner, d) == [("/steps/1/paths/0/if", "operator 'gt' needs a right-hand value", "b")]
    d = doc({"id": "x", "type": "for_each", "items": "{{ trigger.a }}", "steps": [{"id": "y", "type": "bogus"}]})
    assert problems(runner, d)[0][2] == "y"


def test_steps_in_paths_are_visible_after_the_construct_but_loop_bodies_are_not(runner):
    d = doc(
        {"id": "route", "type": "branch", "paths": [{"if": True, "steps": [say("a")]}]},
        loop([say("inner")]),
        say("z", "{{ steps.a.output }} {{ steps.each.output }}"),
        on_failure=[say("f", "{{ error.message }} {{ steps.z }}")],
    )
    assert problems(runner, d) == []
    d["steps"][2]["payload"]["text"] = "{{ steps.inner }}"
    assert problems(runner, d)[0][1] == "refers to step 'inner', which is not an earlier step"


def test_limits_on_nesting_and_pinned_ids(runner):
    step = say("leaf")
    for i in range(9):
        step = {"id": f"l{i}", "type": "for_each", "items": [1], "steps": [step]}
    assert "nest at most" in problems(runner, doc(step))[0][1]
    assert problems(runner, doc(say("a"), pinned={"a": {"said": 1}})) == []
    assert "not in the pipeline" in problems(runner, doc(say("a"), pinned={"b": {}}))[0][1]
    deep: dict = {"x": 1}
    for _ in range(5000):
        deep = {"x": deep}
    assert problems(runner, doc(say("a", payload={"d": deep})))[0][1] == "pipeline nests too deeply"


def test_an_approval_posts_its_signed_links_before_it_waits(runner, echo):
    ok = {"id": "ok", "type": "wait", "approval": {"message": "Ship {{ trigger.n }}?"},
          "notify": [say("post", "{{ approval.message }} {{ approval.approve_url }}")]}
    d = doc(ok, say("after"))
    links = {"approve_url": "https://levqor.example/resume/r/approve?sig=x", "reject_url": "https://levqor.example/resume/r/reject?sig=y"}
    res, rec = run(runner, d, {"n": 3}, approval_links=lambda path: links if path == "ok" else {})
    assert res.status == "waiting" and res.wait["step"] == "ok"
    assert finished(rec) == {"ok.notify.post": "succeeded", "ok": "waiting"}
    assert echo.calls[0]["payload"]["text"] == "Ship 3? https://levqor.example/resume/r/approve?sig=x"
    # approved: the notify step is not sent again
    res, _ = run(runner, d, {"n": 3}, completed={"ok.notify.post": {}, "ok": {"approved": True}})
    assert res.status == "succeeded" and len(echo.calls) == 2
    # notify steps belong to an approval, and only they see it
    bad = doc({"id": "w", "type": "wait", "seconds": 9, "notify": [say("p")]}, say("z", "{{ approval }}"))
    got = problems(runner, bad)
    assert ("/steps/0/notify", "notify steps belong to an approval", "w") in got
    assert any(p[0] == "/steps/1/payload/text" and "unknown name(s) approval" in p[1] for p in got)


def test_a_secret_a_connector_echoes_is_redacted_from_constructs_and_the_run(echo):
    secret = "sk-flow-SECRET-1234567"

    class Leaky(Echo):
        @hookimpl
        def describe_schema(self):
            [d] = super().describe_schema()
            return [{**d, "name": "leaky", "credentials": {"type": "object", "properties": {"token": {"type": "string"}}}}]

        @hookimpl
        def run_task(self, connector, action, payload, credentials, context):
            return {"said": f"token is {credentials['token']}"}

    pm = make_plugin_manager(entry_points=False, plugins=[("leaky", Leaky())])
    r = Runner(pm, env={})
    step = {"id": "send", "connector": "leaky", "action": "say", "credential": "k", "payload": {}}
    d = doc(loop([step], items=[1, 2]), {"id": "w", "type": "wait", "approval": {"message": "{{ steps.each.output[0].said }}"}})
    rec = ListRecorder()
    res = r.run(RunRequest("r", d, {}), credentials=lambda name, c: {"token": secret}, recorder=rec)
    assert res.status == "waiting"
    assert secret not in repr(res.wait) and secret not in repr(res.outputs) and secret not in repr(rec.events)
    d = doc(loop([step], items=[1]))
    res = r.run(RunRequest("r", d, {}), credentials=lambda name, c: {"token": secret})
    assert res.status == "succeeded" and secret not in repr(res.output)


@pytest.mark.parametrize("seconds", ["nan", "inf", "-1", 1e20, "soon"])
def test_a_wait_whose_seconds_are_not_a_sane_number_fails_the_step(runner, seconds):
    res, _ = run(runner, doc({"id": "w", "type": "wait", "seconds": "{{ trigger.s }}"}), {"s": seconds})
    assert res.status == "failed" and res.error["code"] == "invalid_seconds" and res.error["step"] == "w"
    res, _ = run(runner, doc({"id": "w", "type": "wait", "until": "9999-12-31T00:00:00Z"}))
    assert res.status == "failed" and res.error["code"] == "invalid_seconds"
