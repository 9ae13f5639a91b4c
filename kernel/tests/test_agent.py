"""The agent step: model turns and tool calls as child steps, the tools the model sees,
mistakes and failures fed back, approvals, resume without repeating a call, and the limits."""

from __future__ import annotations

import copy
import threading
import time

import pytest
from levqor_kernel import ai, hookimpl
from levqor_kernel.errors import PermanentError, RetryableError
from levqor_kernel.pipeline import validate_pipeline
from levqor_kernel.plugins import make_plugin_manager
from levqor_kernel.runner import ListRecorder, Runner, RunRequest

MODEL_KEY = "sk-model-secret-123"
SHEET_TOKEN = "sheet-token-secret-456"
CHAT_TOKEN = "chat-token-secret-789"


def _secret_creds() -> dict:
    return {
        "type": "object",
        "required": ["token"],
        "properties": {"token": {"type": "string", "writeOnly": True}},
    }


class Model:
    """A model connector whose turn action answers from a script: each item is a turn's
    answer (``tools(...)``, ``say(...)``), an exception to raise, or a callable of the payload."""

    def __init__(self) -> None:
        self.script: list = []
        self.seen: list[dict] = []
        self.keys: list[str] = []

    @hookimpl
    def describe_schema(self):
        return [{
            "name": "model",
            "title": "Model",
            "description": "a scripted model",
            "credentials": {
                "type": "object",
                "properties": {"api_key": {"type": "string", "writeOnly": True}},
            },
            "credentials_required": False,
            "agent": {"action": "turn"},
            "rates": {"*": {"input": 1, "output": 2}},
            "actions": {
                "turn": {
                    "title": "Agent turn",
                    "payload": ai.AGENT_TURN_PAYLOAD,
                    "output": ai.AGENT_TURN_OUTPUT,
                    "usage": "tokens",
                    "hidden": True,
                    "writes": False,
                    "example": {"model": "m", "messages": [{"role": "user", "content": "hi"}]},
                }
            },
        }]

    @hookimpl
    def run_task(self, connector, action, payload, credentials, context):
        self.seen.append(copy.deepcopy(payload))
        self.keys.append(context.idempotency_key)
        step = self.script.pop(0)
        if isinstance(step, BaseException):
            raise step
        if callable(step):
            step = step(payload)
        return step


def tools(*calls, content=None, tokens=(100, 20)):
    return {
        "content": content,
        "tool_calls": [
            {"id": f"call_{n}", "name": name, "arguments": args} for n, (name, args) in enumerate(calls)
        ],
        "usage": {"model": "m1", "input_tokens": tokens[0], "output_tokens": tokens[1]},
    }


def say(text, tokens=(100, 20)):
    return {"content": text, "tool_calls": [],
            "usage": {"model": "m1", "input_tokens": tokens[0], "output_tokens": tokens[1]}}


class Tools:
    """Two tool connectors: ``sheet.read_rows`` (reads) and ``chat.send`` (writes)."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, dict, str, str]] = []
        self.lock = threading.Lock()
        self.rows: list = [{"name": "Ada", "team": "core"}, {"name": "Lin", "team": "web"}]
        self.fail_send: BaseException | None = None
        self.slow = False

    @hookimpl
    def describe_schema(self):
        return [
            {
                "name": "sheet",
                "title": "Sheet",
                "description": "rows of a spreadsheet",
                "credentials": _secret_creds(),
                "actions": {
                    "read_rows": {
                        "title": "Read rows",
                        "description": "Read the rows that match a query.",
                        "payload": {
                            "type": "object",
                            "required": ["spreadsheet_id", "query"],
                            "additionalProperties": False,
                            "properties": {
                                "spreadsheet_id": {"type": "string"},
                                "query": {"type": "string", "minLength": 1},
                            },
                        },
                        "output": {"type": "object"},
                        "example": {"spreadsheet_id": "S", "query": "x"},
                        "writes": False,
                        "price": 1,
                    }
                },
            },
            {
                "name": "chat",
                "title": "Chat",
                "description": "messages",
                "credentials": _secret_creds(),
                "actions": {
                    "send": {
                        "title": "Send a message",
                        "description": "Post a message to a channel.",
                        "payload": {
                            "type": "object",
                            "required": ["channel", "text"],
                            "additionalProperties": False,
                            "properties": {"channel": {"type": "string"}, "text": {"type": "string"}},
                        },
                        "output": {"type": "object"},
                        "example": {"channel": "c", "text": "t"},
                        "writes": True,
                        "price": 3,
                    }
                },
            },
        ]

    @hookimpl
    def run_task(self, connector, action, payload, credentials, context):
        with self.lock:
            self.calls.append((f"{connector}.{action}", copy.deepcopy(payload), context.idempotency_key,
                               credentials["token"]))
        if self.slow:
            time.sleep((context.remaining() or 0) + 0.2)
        if action == "read_rows":
            if payload["query"] == "boom":
                raise PermanentError(f"the sheet refused token {credentials['token']}", code="refused")
            return {"rows": self.rows, "token_echo": credentials["token"]}
        if self.fail_send is not None:
            raise self.fail_send
        return {"ok": True, "ts": "1.0"}


@pytest.fixture
def model():
    return Model()


@pytest.fixture
def kit():
    return Tools()


@pytest.fixture
def runner(model, kit):
    pm = make_plugin_manager(entry_points=False, plugins=[("model", model), ("tools", kit)])
    r = Runner(pm, sleep=lambda s: None, env={})
    yield r
    r.close()


CREDS = {"oa": {"api_key": MODEL_KEY}, "g": {"token": SHEET_TOKEN}, "s": {"token": CHAT_TOKEN}}


def resolve(name, connector):
    return CREDS.get(name)


def agent(**kw):
    step = {
        "id": "helper",
        "type": "agent",
        "connector": "model",
        "credential": "oa",
        "model": "m1",
        "system": "You help {{ trigger.team }}.",
        "goal": "Find who is in {{ trigger.team }} and tell #general.",
        "tools": [
            {"connector": "sheet", "action": "read_rows", "credential": "g", "payload": {"spreadsheet_id": "S-{{ trigger.team }}"}},
            {"connector": "chat", "action": "send", "credential": "s", "payload": {"channel": "general"}},
        ],
        "approval": "none",
    }
    step.update(kw)
    return step


def doc(*steps):
    return {"levqor": 1, "trigger": {"type": "manual"}, "steps": list(steps)}


def run(runner, d, trigger=None, **kw):
    rec = ListRecorder()
    res = runner.run(RunRequest("run1", d, trigger if trigger is not None else {"team": "core"}, **kw),
                     credentials=resolve, recorder=rec)
    return res, rec


def finished(rec):
    return {e["step"]: e for k, e in rec.events if k == "step_finished"}


def test_the_agent_document_validates(runner):
    assert validate_pipeline(doc(agent()), runner.pm.catalog, credentials={"oa": "model", "g": "sheet", "s": "chat"}) == []


def test_two_tools_each_call_a_child_step_and_the_model_sees_schemas_not_credentials(runner, model, kit):
    model.script = [
        tools(("sheet_read_rows", {"query": "team = core"})),
        tools(("chat_send", {"text": "Ada is in core"})),
        say("Told #general that Ada is in core."),
    ]
    res, rec = run(runner, doc(agent()))
    assert res.status == "succeeded", res.error
    out = res.outputs["helper"]
    assert out["answer"] == "Told #general that Ada is in core."
    assert (out["turns"], out["tool_calls"]) == (3, 2)
    assert out["usage"]["total_tokens"] == 360 and out["usage"]["by_model"] == {"m1": {"input_tokens": 300, "output_tokens": 60}}
    assert [(t["tool"], t["path"], t["status"]) for t in out["trace"]] == [
        ("sheet_read_rows", "helper.turns[0].calls[0]", "succeeded"),
        ("chat_send", "helper.turns[1].calls[0]", "succeeded"),
    ]
    # the tools ran with the author's fixed fields (rendered) and the model's arguments
    assert kit.calls == [
        ("sheet.read_rows", {"query": "team = core", "spreadsheet_id": "S-core"}, "run1:helper.turns[0].calls[0]", SHEET_TOKEN),
        ("chat.send", {"text": "Ada is in core", "channel": "general"}, "run1:helper.turns[1].calls[0]", CHAT_TOKEN),
    ]
    # what the model saw: the rendered system and goal, tools without the fixed fields
    first = model.seen[0]
    assert first["messages"] == [
        {"role": "system", "content": "You help core."},
        {"role": "user", "content": "Find who is in core and tell #general."},
    ]
    offered = {t["name"]: t for t in first["tools"]}
    assert set(offered) == {"sheet_read_rows", "chat_send"}
    assert offered["sheet_read_rows"]["parameters"]["properties"] == {"query": {"type": "string", "minLength": 1}}
    assert offered["sheet_read_rows"]["parameters"]["required"] == ["query"]
    assert offered["chat_send"]["parameters"]["required"] == ["text"]
    assert offered["sheet_read_rows"]["description"] == "Read rows. Read the rows that match a query."
    # the second turn carries the tool's result; the tool's credential (echoed) is redacted
    tool_msg = model.seen[1]["messages"][-1]
    assert tool_msg["role"] == "tool" and tool_msg["tool_call_id"] == "call_0" and "Ada" in tool_msg["content"]
    everything = repr(model.seen) + repr(rec.events) + repr(res.outputs)
    for secret in (MODEL_KEY, SHEET_TOKEN, CHAT_TOKEN):
        assert secret not in everything
    assert model.keys == ["run1:helper.turns[0]", "run1:helper.turns[1]", "run1:helper.turns[2]"]
    # records: every child by path, the turns with their usage, the agent's own record
    recs = {r.step_id: r for r in res.records}
    assert [p for p in recs] == [
        "helper.turns[0]", "helper.turns[0].calls[0]", "helper.turns[1]", "helper.turns[1].calls[0]",
        "helper.turns[2]", "helper",
    ]
    assert (recs["helper.turns[0]"].connector, recs["helper.turns[0]"].action) == ("model", "turn")
    assert recs["helper.turns[0]"].usage == {"model": "m1", "input_tokens": 100, "output_tokens": 20, "total_tokens": 120}
    assert (recs["helper.turns[1].calls[0]"].connector, recs["helper.turns[1].calls[0]"].action) == ("chat", "send")
    assert recs["helper.turns[1].calls[0]"].usage is None and recs["helper"].usage is None
    assert (recs["helper"].connector, recs["helper"].action) == ("flow", "agent")
    ev = finished(rec)
    assert ev["helper"]["input"] == {
        "goal": "Find who is in core and tell #general.", "tools": ["sheet_read_rows", "chat_send"], "model": "m1",
    }
    # a turn records only the messages new since the previous one
    assert [m["role"] for m in ev["helper.turns[0]"]["input"]["messages"]] == ["system", "user"]
    assert [m["role"] for m in ev["helper.turns[1]"]["input"]["messages"]] == ["tool"]
    assert ev["helper.turns[1].calls[0]"]["input"] == {"text": "Ada is in core", "channel": "general"}


def test_a_later_step_reads_the_answer(runner, model, kit):
    model.script = [say("all done")]
    after = {"id": "post", "connector": "chat", "action": "send", "credential": "s",
             "payload": {"channel": "x", "text": "{{ steps.helper.output.answer }}"}}
    res, _ = run(runner, doc(agent(), after))
    assert res.status == "succeeded"
    assert kit.calls[-1][1] == {"channel": "x", "text": "all done"}


def test_an_unknown_tool_and_invalid_arguments_are_not_run_and_go_back_to_the_model(runner, model, kit):
    model.script = [
        tools(("sheet_delete_everything", {}), ("sheet_read_rows", {"query": 7})),
        tools(("sheet_read_rows", {"query": "team = core", "spreadsheet_id": "OTHER"})),
        say("done"),
    ]
    res, rec = run(runner, doc(agent()))
    assert res.status == "succeeded"
    ev = finished(rec)
    unknown, invalid = ev["helper.turns[0].calls[0]"], ev["helper.turns[0].calls[1]"]
    assert (unknown["status"], unknown["attempts"], unknown["error"]["code"]) == ("failed", 0, "invalid_tool_call")
    assert (invalid["status"], invalid["attempts"], invalid["error"]["code"]) == ("failed", 0, "invalid_tool_call")
    results = [m["content"] for m in model.seen[1]["messages"] if m["role"] == "tool"]
    assert "no tool named 'sheet_delete_everything'" in results[0] and "sheet_read_rows" in results[0]
    assert "invalid arguments" in results[1] and "/query" in results[1]
    # the author's fixed field wins over the model's
    assert kit.calls == [("sheet.read_rows", {"query": "team = core", "spreadsheet_id": "S-core"},
                          "run1:helper.turns[1].calls[0]", SHEET_TOKEN)]
    assert [t["status"] for t in res.outputs["helper"]["trace"]] == ["failed", "failed", "succeeded"]


def test_arguments_the_model_connector_could_not_read_go_back_to_the_model(runner, model, kit):
    broken = tools(("sheet_read_rows", {}))
    broken["tool_calls"][0]["arguments_error"] = "the arguments are not valid JSON (Expecting value at 0)"
    model.script = [broken, say("sorry")]
    res, rec = run(runner, doc(agent()))
    assert res.status == "succeeded" and kit.calls == []
    call = finished(rec)["helper.turns[0].calls[0]"]
    assert (call["status"], call["attempts"], call["error"]["code"]) == ("failed", 0, "invalid_tool_call")
    assert "not valid JSON" in model.seen[1]["messages"][-1]["content"]


def test_calls_beyond_the_per_turn_cap_are_not_run_and_the_model_is_told(runner, model, kit):
    from levqor_kernel.agent import MAX_CALLS_PER_TURN

    many = [("sheet_read_rows", {"query": f"q{n}"}) for n in range(MAX_CALLS_PER_TURN + 2)]
    model.script = [tools(*many), say("done")]
    res, rec = run(runner, doc(agent()))
    assert res.status == "succeeded", res.error
    assert len(kit.calls) == MAX_CALLS_PER_TURN
    rows = finished(rec)
    over = rows[f"helper.turns[0].calls[{MAX_CALLS_PER_TURN}]"]
    assert over["status"] == "failed" and over["attempts"] == 0
    assert over["error"]["code"] == "invalid_tool_call"
    answered = [m for m in model.seen[1]["messages"] if m["role"] == "tool"]
    assert len(answered) == MAX_CALLS_PER_TURN + 2  # every call is answered, run or not
    assert "per turn" in answered[-1]["content"]


def test_a_tool_that_fails_after_its_retries_is_fed_back_redacted(runner, model, kit):
    kit.fail_send = RetryableError("chat is down", status=503)
    model.script = [
        tools(("sheet_read_rows", {"query": "boom"}), ("chat_send", {"text": "hi"})),
        say("the sheet refused and chat is down"),
    ]
    step = agent()
    step["tools"][1]["retry"] = {"max_attempts": 2, "initial_delay": 0}
    res, rec = run(runner, doc(step))
    assert res.status == "succeeded"
    ev = finished(rec)
    assert ev["helper.turns[0].calls[0]"]["error"]["code"] == "refused"
    assert ev["helper.turns[0].calls[1]"]["attempts"] == 2
    results = [m["content"] for m in model.seen[1]["messages"] if m["role"] == "tool"]
    assert results[0].startswith('{"error":') and "refused" in results[0]
    assert SHEET_TOKEN not in repr(model.seen) + repr(rec.events) + repr(res.outputs)
    assert "chat is down" in results[1]
    assert len([c for c in kit.calls if c[0] == "chat.send"]) == 2


def test_template_text_in_a_tool_output_reaches_the_model_verbatim(runner, model, kit):
    kit.rows = [{"name": "{{ 7*7 }}", "team": "{{ trigger.team }}"}]
    model.script = [tools(("sheet_read_rows", {"query": "{{ 6*6 }}"})), say("{{ 8*8 }}")]
    res, _ = run(runner, doc(agent()))
    assert res.status == "succeeded"
    assert kit.calls[0][1]["query"] == "{{ 6*6 }}"
    tool_msg = model.seen[1]["messages"][-1]["content"]
    assert "{{ 7*7 }}" in tool_msg and "{{ trigger.team }}" in tool_msg and "49" not in tool_msg
    assert res.outputs["helper"]["answer"] == "{{ 8*8 }}"


def _done_children(rec, upto):
    """What a host hands a resumed run: the children that succeeded up to ``upto`` events."""
    completed, decided = {}, {}
    for k, e in rec.events[:upto]:
        if k != "step_finished":
            continue
        if e["status"] == "succeeded":
            completed[e["step"]] = e["output"]
        elif e["status"] == "failed":
            decided[e["step"]] = {"status": "failed", "output": None, "error": e["error"]}
    return completed, decided


def test_a_resumed_agent_replays_its_children_and_repeats_no_call(runner, model, kit):
    script = [
        tools(("sheet_read_rows", {"query": "team = core"}), ("sheet_read_rows", {"query": "boom"})),
        tools(("chat_send", {"text": "Ada"})),
        say("done"),
    ]
    model.script = copy.deepcopy(script)
    full, rec = run(runner, doc(agent()))
    assert full.status == "succeeded"
    # the worker died just after the second turn's call was sent: its record never written
    cut = next(i for i, (k, e) in enumerate(rec.events) if k == "step_finished" and e["step"] == "helper.turns[1]") + 1
    completed, decided = _done_children(rec, cut)
    assert set(completed) == {"helper.turns[0]", "helper.turns[0].calls[0]", "helper.turns[1]"}
    assert set(decided) == {"helper.turns[0].calls[1]"}
    model.seen.clear()
    kit.calls.clear()
    model.script = [say("done again")]
    res, rec2 = run(runner, doc(agent()), completed=completed, decided=decided)
    assert res.status == "succeeded", res.error
    # only the unfinished call runs again (same idempotency key); no turn before it is repeated
    assert [(c[0], c[2]) for c in kit.calls] == [("chat.send", "run1:helper.turns[1].calls[0]")]
    assert len(model.seen) == 1
    # the conversation was rebuilt exactly: the last turn sees what the first run's did
    assert model.seen[0]["messages"] == full_messages_before_last_turn(script, rec)
    out = res.outputs["helper"]
    assert out["answer"] == "done again" and out["turns"] == 3 and out["tool_calls"] == 3
    assert [t["status"] for t in out["trace"]] == ["succeeded", "failed", "succeeded"]
    assert out["usage"]["total_tokens"] == 360  # replayed turns count
    assert [r.step_id for r in res.records] == ["helper.turns[1].calls[0]", "helper.turns[2]", "helper"]


def full_messages_before_last_turn(script, rec):
    turn2 = next(e for k, e in rec.events if k == "step_finished" and e["step"] == "helper.turns[2]")
    turn1 = next(e for k, e in rec.events if k == "step_finished" and e["step"] == "helper.turns[1]")
    turn0 = next(e for k, e in rec.events if k == "step_finished" and e["step"] == "helper.turns[0]")
    msgs = list(turn0["input"]["messages"])
    msgs.append({"role": "assistant", "content": None, "tool_calls": script[0]["tool_calls"]})
    msgs += turn1["input"]["messages"]
    msgs.append({"role": "assistant", "content": None, "tool_calls": script[1]["tool_calls"]})
    msgs += turn2["input"]["messages"]
    return msgs


def test_a_write_waits_for_approval_then_runs_once_approved(runner, model, kit):
    model.script = [
        tools(("sheet_read_rows", {"query": "team = core"})),
        tools(("chat_send", {"text": "Ada is in core"})),
    ]
    step = agent(approval="writes", approval_timeout=3600)
    res, rec = run(runner, doc(step))
    assert res.status == "waiting"
    apath = "helper.turns[1].calls[0].approval"
    assert res.wait["step"] == apath and res.wait["kind"] == "approval"
    approval = res.wait["approval"]
    assert approval["tool"] == "chat_send" and approval["arguments"] == {"text": "Ada is in core"}
    assert (approval["connector"], approval["action"], approval["timeout"], approval["on_timeout"]) == (
        "chat", "send", 3600, "reject")
    assert "chat_send" in approval["message"] and "Ada is in core" in approval["message"]
    ev = finished(rec)
    assert ev[apath]["status"] == "waiting"
    # the call waits too, showing what it would run with
    call = ev["helper.turns[1].calls[0]"]
    assert call["status"] == "waiting" and call["input"] == {"text": "Ada is in core", "channel": "general"}
    assert [c[0] for c in kit.calls] == ["sheet.read_rows"]  # the read ran without approval
    # the host decides the wait and resumes the run with what is done
    completed, decided = _done_children(rec, len(rec.events))
    decided[apath] = {"status": "succeeded", "output": {"approved": True, "by": "ann"}, "error": None}
    completed[apath] = {"approved": True, "by": "ann"}
    model.script = [say("Told them.")]
    res2, _ = run(runner, doc(step), completed=completed, decided=decided)
    assert res2.status == "succeeded", res2.error
    assert [c[0] for c in kit.calls] == ["sheet.read_rows", "chat.send"]
    assert res2.outputs["helper"]["answer"] == "Told them."


def test_a_rejected_call_is_not_run_and_the_model_is_told(runner, model, kit):
    model.script = [tools(("chat_send", {"text": "spam"}))]
    step = agent(approval="all")
    res, rec = run(runner, doc(step))
    apath = "helper.turns[0].calls[0].approval"
    assert res.status == "waiting" and res.wait["step"] == apath
    completed, decided = _done_children(rec, len(rec.events))
    decided[apath] = {"status": "failed", "output": None, "error": {
        "type": "Rejected", "code": "rejected", "message": "rejected by ann", "comment": "not today"}}
    model.script = [say("I did not send it.")]
    res2, rec2 = run(runner, doc(step), completed=completed, decided=decided)
    assert res2.status == "succeeded"
    assert kit.calls == []
    call = finished(rec2)["helper.turns[0].calls[0]"]
    assert (call["status"], call["attempts"], call["error"]["code"]) == ("failed", 0, "rejected")
    told = model.seen[-1]["messages"][-1]["content"]
    assert "not approved" in told and "rejected by ann" in told and "not today" in told


def test_an_approval_that_timed_out_tells_the_model_so(runner, model, kit):
    model.script = [tools(("chat_send", {"text": "late"}))]
    res, rec = run(runner, doc(agent(approval="writes", approval_timeout=60)))
    assert res.wait["approval"]["timeout"] == 60
    completed, decided = _done_children(rec, len(rec.events))
    decided[res.wait["step"]] = {"status": "failed", "output": {"approved": False, "by": "timeout"}, "error": {
        "type": "Rejected", "code": "rejected", "message": "the approval timed out"}}
    model.script = [say("It timed out.")]
    res2, _ = run(runner, doc(agent(approval="writes", approval_timeout=60)), completed=completed, decided=decided)
    assert res2.status == "succeeded" and kit.calls == []
    assert "the approval timed out" in model.seen[-1]["messages"][-1]["content"]


def test_a_cancelled_run_stops_the_agent_between_calls(model, kit):
    pm = make_plugin_manager(entry_points=False, plugins=[("model", model), ("tools", kit)])
    r = Runner(pm, sleep=lambda s: None, env={})
    try:
        model.script = [tools(("sheet_read_rows", {"query": "a"}), ("sheet_read_rows", {"query": "b"})), say("x")]
        rec = ListRecorder()
        res = r.run(RunRequest("run1", doc(agent()), {"team": "core"}), credentials=resolve, recorder=rec,
                    cancelled=lambda: len(kit.calls) >= 1)
        assert res.status == "cancelled"
        assert len(kit.calls) == 1 and len(model.seen) == 1
    finally:
        r.close()


def test_a_tool_may_ask_for_approval_itself_and_reads_need_none_by_default(runner, model, kit):
    step = agent(approval="writes")
    step["tools"][1]["approval"] = False
    step["tools"][0]["approval"] = True
    model.script = [tools(("chat_send", {"text": "hi"})), tools(("sheet_read_rows", {"query": "q"}))]
    res, _ = run(runner, doc(step))
    assert res.status == "waiting" and res.wait["step"] == "helper.turns[1].calls[0].approval"
    assert [c[0] for c in kit.calls] == ["chat.send"]


def test_max_iterations_fails_the_step_when_the_model_keeps_calling_tools(runner, model, kit):
    model.script = [tools(("sheet_read_rows", {"query": "q"}))] * 3
    res, rec = run(runner, doc(agent(max_iterations=2)))
    assert res.status == "failed"
    assert res.error["code"] == "max_iterations" and res.error["step"] == "helper"
    assert len(kit.calls) == 1  # the last turn's calls are not run
    assert finished(rec)["helper"]["status"] == "failed"


def test_max_tokens_fails_the_step_and_on_error_continue_goes_on(runner, model, kit):
    model.script = [tools(("sheet_read_rows", {"query": "q"}), tokens=(400, 100)), say("x", tokens=(400, 200))]
    after = {"id": "post", "connector": "chat", "action": "send", "credential": "s",
             "payload": {"channel": "x", "text": "{{ steps.helper.status }}"}}
    res, _ = run(runner, doc(agent(max_tokens=1000, on_error="continue"), after))
    assert res.status == "succeeded"
    assert res.steps["helper"] == "failed"
    assert kit.calls[-1][1]["text"] == "failed"
    model.script = [tools(("sheet_read_rows", {"query": "q"}), tokens=(400, 100)), say("x", tokens=(400, 200))]
    res, _ = run(runner, doc(agent(max_tokens=1000)))
    assert res.status == "failed" and res.error["code"] == "max_tokens"


def test_the_timeout_bounds_the_agent(runner, model, kit):
    kit.slow = True
    model.script = [tools(("sheet_read_rows", {"query": "q"})), say("never")]
    res, _ = run(runner, doc(agent(timeout=0.3)))
    assert res.status == "failed"
    assert res.error["code"] == "timeout"
    assert len(model.seen) == 1


def test_a_model_turn_that_fails_fails_the_agent_with_the_providers_message(runner, model, kit):
    model.script = [PermanentError("This model's maximum context length is 8192 tokens", code="context_length_exceeded")]
    res, _ = run(runner, doc(agent()))
    assert res.status == "failed"
    assert res.error["step"] == "helper.turns[0]" and res.error["code"] == "context_length_exceeded"
    assert "maximum context length" in res.error["message"]


def test_a_rate_limited_turn_is_retried(runner, model, kit):
    model.script = [RetryableError("slow down", status=429, retry_after=2), say("ok")]
    res, rec = run(runner, doc(agent()))
    assert res.status == "succeeded"
    retry = next(e for k, e in rec.events if k == "step_retrying")
    assert retry["step"] == "helper.turns[0]" and retry["delay"] == 2
    assert model.keys == ["run1:helper.turns[0]", "run1:helper.turns[0]"]
