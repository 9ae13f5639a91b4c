"""The openai connector's model actions against FakeOpenAI over real HTTP on loopback, with the
kernel's contract kit and its real Runner (retries, usage on step records, a branch on a label).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import levqor_openai
import pytest
from levqor_kernel.ai import AGENT_TURN_OUTPUT, usage_of
from levqor_kernel.context import StepContext
from levqor_kernel.errors import (
    BlockedURLError,
    ConnectorError,
    CredentialError,
    PayloadError,
    PermanentError,
    RetryableError,
)
from levqor_kernel.plugins import make_plugin_manager
from levqor_kernel.runner import ListRecorder, Runner, RunRequest
from levqor_kernel.testing import ConnectorContract
from levqor_openai.fake import FakeOpenAI, openai_error

KEY = "sk-test-actions-0123456789abcdef"


class TestContract(ConnectorContract):
    """A user's credential with its own base URL (guarded; the kit allows 127.0.0.1)."""

    plugin = levqor_openai

    def credentials(self, base_url: str) -> dict:
        return {"api_key": KEY, "base_url": base_url}


class TestContractOperatorSettings(ConnectorContract):
    """No credential on the step: the operator's OPENAI_API_KEY / OPENAI_BASE_URL."""

    plugin = levqor_openai

    def credentials(self, base_url: str) -> dict | None:
        return None

    def env(self, base_url: str) -> dict:
        return {"OPENAI_API_KEY": KEY, "OPENAI_BASE_URL": base_url}

    def test_levqor_contract(self) -> None:
        # the kit's "missing credentials fail closed" scenario cannot hold here by design: the
        # operator's key stands in for a missing credential (credentials_required: false)
        from levqor_kernel.testing.contract import check_connector

        result = check_connector(self.plugin, credentials=self.credentials, env=self.env, timeout=1.0)
        assert [p for p in result.problems if "missing credentials" not in p] == []


@pytest.fixture(scope="module")
def _server() -> Iterator[FakeOpenAI]:
    with FakeOpenAI(api_key=KEY) as fake:
        yield fake


@pytest.fixture
def ai(_server: FakeOpenAI) -> Iterator[FakeOpenAI]:
    _server.reset()
    yield _server
    _server.reset()


def ctx(ai: FakeOpenAI | None, timeout: float = 5.0, **env: str) -> StepContext:
    base = {"OPENAI_API_KEY": KEY, "OPENAI_BASE_URL": ai.base_url} if ai else {}
    return StepContext(
        run_id="run1", step_id="s", deadline=time.monotonic() + timeout, env={**base, **env}
    )


def run(ai: FakeOpenAI | None, action: str, payload: dict, credentials=None, **kw) -> dict:
    return levqor_openai.run_task("openai", action, payload, credentials, ctx(ai, **kw))


def assert_no_key(err: ConnectorError) -> None:
    assert KEY not in str(err) and KEY not in json.dumps(err.to_dict())


# ---------------------------------------------------------------- chat
def test_chat_sends_system_and_user_and_answers_text_with_usage(ai):
    ai.answer("Hello Ada!", usage=(21, 4))
    out = run(
        ai,
        "chat",
        {"model": "gpt-4o-mini", "system": "Be brief.", "prompt": "Greet Ada", "temperature": 0.2,
         "max_tokens": 50},
    )
    assert out == {
        "text": "Hello Ada!",
        "finish_reason": "stop",
        "model": "gpt-4o-mini",
        "usage": {"model": "gpt-4o-mini", "input_tokens": 21, "output_tokens": 4, "total_tokens": 25},
    }
    sent = ai.completions[0]
    assert sent["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Greet Ada"},
    ]
    # a compatible server gets max_tokens; OpenAI's own API max_completion_tokens (below)
    assert sent["temperature"] == 0.2 and sent["max_tokens"] == 50
    assert "response_format" not in sent and "tools" not in sent
    assert ai.requests[-1].header("Authorization") == f"Bearer {KEY}"
    assert usage_of(out) == out["usage"]


def test_chat_without_system_and_a_cut_answer(ai):
    ai.answer("Once upon a", finish_reason="length", usage=(5, 3))
    out = run(ai, "chat", {"model": "m", "prompt": "Tell a story"})
    assert out["finish_reason"] == "length" and out["text"] == "Once upon a"
    assert ai.completions[0]["messages"] == [{"role": "user", "content": "Tell a story"}]


def test_openai_itself_gets_max_completion_tokens():
    from levqor_openai.actions import _options
    from levqor_openai.client import DEFAULT_BASE_URL, Endpoint

    assert _options({"max_tokens": 9}, Endpoint(DEFAULT_BASE_URL, "k")) == {"max_completion_tokens": 9}
    assert _options({"max_tokens": 9}, Endpoint("http://vllm:8000/v1")) == {"max_tokens": 9}


def test_the_credential_wins_over_the_operator_and_its_organization_is_sent(ai):
    ai.answer("ok")
    creds = {"api_key": KEY, "base_url": ai.base_url, "organization": "org-123"}
    out = run(None, "chat", {"model": "m", "prompt": "hi"}, creds, LEVQOR_SSRF_ALLOW="127.0.0.1")
    assert out["text"] == "ok"
    assert ai.requests[-1].header("OpenAI-Organization") == "org-123"


def test_a_credential_base_url_passes_the_ssrf_guard(ai):
    creds = {"api_key": KEY, "base_url": ai.base_url}
    with pytest.raises(BlockedURLError) as e:
        run(None, "chat", {"model": "m", "prompt": "hi"}, creds)
    assert "LEVQOR_SSRF_ALLOW" in str(e.value)
    assert ai.requests == []


def test_a_local_server_without_a_key():
    with FakeOpenAI(api_key="") as local:
        local.answer("local answer")
        out = run(None, "chat", {"model": "llama3", "prompt": "hi"}, {"base_url": local.base_url},
                  LEVQOR_SSRF_ALLOW="127.0.0.1")
        assert out["text"] == "local answer"
        assert local.requests[-1].header("Authorization") is None


def test_not_configured_says_what_to_set():
    for creds in (None, {}, {"api_key": "  "}):
        with pytest.raises(CredentialError) as e:
            run(None, "chat", {"model": "m", "prompt": "hi"}, creds)
        assert e.value.code == "not_configured"
        assert "OPENAI_API_KEY" in str(e.value) and "credential" in str(e.value)
        assert not e.value.retryable


def test_blank_prompt_is_a_payload_error(ai):
    with pytest.raises(PayloadError):
        run(ai, "chat", {"model": "m", "prompt": "   "})
    assert ai.requests == []


# ---------------------------------------------------------------- agent turn
TOOLS = [
    {
        "name": "sheets_read_rows",
        "description": "Read rows",
        "parameters": {"type": "object", "properties": {"range": {"type": "string"}}},
    },
    {
        "name": "slack_send_message",
        "description": "Send to Slack",
        "parameters": {"type": "object", "required": ["text"], "properties": {"text": {"type": "string"}}},
    },
]


def test_agent_turn_offers_tools_and_answers_parsed_tool_calls(ai):
    ids = ai.call_tools(
        [
            {"name": "sheets_read_rows", "arguments": {"range": "A1:B9"}},
            {"name": "slack_send_message", "arguments": {"text": "hi"}},
        ],
        usage=(300, 40),
    )
    out = run(
        ai,
        "agent_turn",
        {"model": "gpt-4o", "messages": [{"role": "system", "content": "You help."},
                                         {"role": "user", "content": "Report"}], "tools": TOOLS},
    )
    from jsonschema import Draft202012Validator

    assert list(Draft202012Validator(AGENT_TURN_OUTPUT).iter_errors(out)) == []
    assert out["content"] is None and out["finish_reason"] == "tool_calls"
    assert out["tool_calls"] == [
        {"id": ids[0], "name": "sheets_read_rows", "arguments": {"range": "A1:B9"}},
        {"id": ids[1], "name": "slack_send_message", "arguments": {"text": "hi"}},
    ]
    assert out["usage"] == {"model": "gpt-4o", "input_tokens": 300, "output_tokens": 40, "total_tokens": 340}
    sent = ai.completions[0]
    assert sent["tool_choice"] == "auto"
    assert sent["tools"][1] == {"type": "function", "function": TOOLS[1]}


def test_agent_turn_sends_the_conversation_back_in_the_wire_form(ai):
    ids = ai.call_tools([{"name": "slack_send_message", "arguments": {"text": "hi"}}])
    first = run(ai, "agent_turn", {"model": "m", "messages": [{"role": "user", "content": "go"}], "tools": TOOLS})
    ai.answer("Sent.", usage=(80, 2))
    messages = [
        {"role": "user", "content": "go"},
        {"role": "assistant", "content": None, "tool_calls": first["tool_calls"]},
        {"role": "tool", "tool_call_id": ids[0], "name": "slack_send_message", "content": '{"ok": true}'},
    ]
    out = run(ai, "agent_turn", {"model": "m", "messages": messages, "tools": TOOLS})
    assert out["content"] == "Sent." and out["tool_calls"] == [] and out["finish_reason"] == "stop"
    wire = ai.completions[1]["messages"]
    assert wire[1] == {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {"id": ids[0], "type": "function",
             "function": {"name": "slack_send_message", "arguments": '{"text": "hi"}'}}
        ],
    }
    assert wire[2] == {"role": "tool", "tool_call_id": ids[0], "content": '{"ok": true}'}


def test_agent_turn_without_tools_sends_no_tool_choice(ai):
    ai.answer("Hi")
    out = run(ai, "agent_turn", {"model": "m", "messages": [{"role": "user", "content": "hi"}]})
    assert out["content"] == "Hi"
    assert "tools" not in ai.completions[0] and "tool_choice" not in ai.completions[0]


def test_agent_turn_unparseable_arguments_come_back_empty_with_the_reason(ai):
    ai.call_tools([{"name": "slack_send_message", "arguments": '{"text": "hi"'},
                   {"name": "sheets_read_rows", "arguments": "[1, 2]"}])
    out = run(ai, "agent_turn", {"model": "m", "messages": [{"role": "user", "content": "go"}], "tools": TOOLS})
    a, b = out["tool_calls"]
    assert a["arguments"] == {} and "not valid JSON" in a["arguments_error"]
    assert b["arguments"] == {} and "JSON object" in b["arguments_error"]


def test_the_fake_refuses_a_tool_message_that_answers_no_call(ai):
    bad = [
        {"role": "user", "content": "go"},
        {"role": "tool", "tool_call_id": "call_999", "content": "{}"},
    ]
    with pytest.raises(PermanentError) as e:
        run(ai, "agent_turn", {"model": "m", "messages": bad, "tools": TOOLS})
    assert e.value.status == 400 and "must be a response to a preceeding message" in str(e.value)
    # an id the fake never issued, even after a matching assistant message
    forged = [
        {"role": "user", "content": "go"},
        {"role": "assistant", "content": None,
         "tool_calls": [{"id": "call_x", "name": "slack_send_message", "arguments": {}}]},
        {"role": "tool", "tool_call_id": "call_x", "content": "{}"},
    ]
    with pytest.raises(PermanentError) as e:
        run(ai, "agent_turn", {"model": "m", "messages": forged, "tools": TOOLS})
    assert "no tool call with id 'call_x'" in str(e.value)
    # and a call left unanswered
    ai.call_tools([{"name": "slack_send_message", "arguments": {"text": "a"}}])
    turn = run(ai, "agent_turn", {"model": "m", "messages": [{"role": "user", "content": "go"}], "tools": TOOLS})
    unanswered = [
        {"role": "user", "content": "go"},
        {"role": "assistant", "content": None, "tool_calls": turn["tool_calls"]},
        {"role": "user", "content": "and?"},
    ]
    with pytest.raises(PermanentError) as e:
        run(ai, "agent_turn", {"model": "m", "messages": unanswered, "tools": TOOLS})
    assert "did not have response messages" in str(e.value)


# ---------------------------------------------------------------- extract
ORDER = {
    "type": "object",
    "required": ["order_id", "items"],
    "properties": {
        "order_id": {"type": "string", "pattern": "^[0-9]+$"},
        "items": {"type": "array", "items": {"type": "string"}},
        "urgent": {"type": "boolean"},
    },
}


def test_extract_strict_mode_strips_the_nulls_it_forced_in(ai):
    ai.answer({"order_id": "1042", "items": ["tea"], "urgent": None}, usage=(60, 9))
    out = run(ai, "extract", {"model": "gpt-4o-mini", "text": "Order 1042: tea", "schema": ORDER})
    assert out == {
        "data": {"order_id": "1042", "items": ["tea"]},
        "mode": "strict",
        "attempts": 1,
        "usage": {"model": "gpt-4o-mini", "input_tokens": 60, "output_tokens": 9, "total_tokens": 69},
    }
    rf = ai.completions[0]["response_format"]
    assert rf["type"] == "json_schema" and rf["json_schema"]["strict"] is True
    assert rf["json_schema"]["schema"]["additionalProperties"] is False


def test_extract_json_mode_with_a_repair_round_sums_the_tokens(ai):
    ai.answer({"order_id": "A-1", "items": ["tea"]}, usage=(50, 10))  # breaks the pattern
    ai.answer({"order_id": "1", "items": ["tea"]}, usage=(70, 8))
    out = run(ai, "extract", {"model": "m", "text": "Order 1: tea", "schema": ORDER, "mode": "json"})
    assert out["data"] == {"order_id": "1", "items": ["tea"]} and out["mode"] == "json"
    assert out["attempts"] == 2
    assert out["usage"] == {"model": "m", "input_tokens": 120, "output_tokens": 18, "total_tokens": 138}
    first, second = ai.completions
    assert first["response_format"] == {"type": "json_object"}
    assert '"pattern":"^[0-9]+$"' in first["messages"][0]["content"]
    assert second["messages"][-2] == {"role": "assistant", "content": '{"order_id": "A-1", "items": ["tea"]}'}
    assert "/order_id" in second["messages"][-1]["content"]


def test_a_server_without_json_schema_is_asked_again_in_json_mode(ai):
    def no_structured_outputs(body):
        if (body.get("response_format") or {}).get("type") == "json_schema":
            return "Invalid parameter: 'response_format' of type 'json_schema' is not supported with this model."
        return None

    ai.check = no_structured_outputs
    ai.answer({"order_id": "7", "items": []}, usage=(30, 5))
    out = run(ai, "extract", {"model": "m", "text": "Order 7", "schema": ORDER})
    assert out["mode"] == "json" and out["attempts"] == 1 and out["data"] == {"order_id": "7", "items": []}
    assert out["usage"]["input_tokens"] == 30  # the refused request used no tokens
    assert [r["response_format"]["type"] for r in ai.completions] == ["json_object"]
    ai.answer({"label": "question"})
    assert run(ai, "classify", {"model": "m", "text": "x", "labels": LABELS})["mode"] == "json"
    # other 400s are not retried in JSON mode
    ai.check = None
    ai.fail_next(400, code="context_length_exceeded", message="too long for response_format")
    with pytest.raises(PermanentError) as e:
        run(ai, "extract", {"model": "m", "text": "x", "schema": ORDER})
    assert e.value.code == "context_length_exceeded"


def test_a_schema_strict_mode_cannot_express_falls_back_to_json_mode(ai):
    free = {"type": "object", "properties": {"meta": {"type": "object"}}}  # a free-form map
    ai.answer({"meta": {"any": 1}})
    out = run(ai, "extract", {"model": "m", "text": "x", "schema": free})
    assert out["mode"] == "json" and out["data"] == {"meta": {"any": 1}}


def test_a_non_object_schema_is_wrapped_and_unwrapped(ai):
    ai.answer({"value": ["a", "b"]})
    out = run(ai, "extract", {"model": "m", "text": "a and b",
                              "schema": {"type": "array", "items": {"type": "string"}}})
    assert out["data"] == ["a", "b"] and out["mode"] == "strict"


def test_extract_fails_closed_after_the_repair_rounds(ai):
    for _ in range(3):
        ai.answer("not json at all")
    with pytest.raises(PermanentError) as e:
        run(ai, "extract", {"model": "m", "text": "x", "schema": ORDER, "mode": "json", "repair_rounds": 2})
    assert e.value.code == "invalid_answer" and not e.value.retryable
    assert "not valid JSON" in str(e.value)
    assert len(ai.completions) == 3
    with pytest.raises(PermanentError) as e:  # no repair at all
        ai.answer({"items": []})
        run(ai, "extract", {"model": "m", "text": "x", "schema": ORDER, "mode": "json", "repair_rounds": 0})
    assert e.value.code == "invalid_answer" and "order_id" in str(e.value)


def test_a_refusal_is_permanent_with_the_models_words(ai):
    ai.refuse_next("I can't help with that request.")
    with pytest.raises(PermanentError) as e:
        run(ai, "extract", {"model": "m", "text": "x", "schema": ORDER})
    assert e.value.code == "refused" and "I can't help with that request." in str(e.value)


def test_a_bad_schema_is_refused_before_any_request(ai):
    with pytest.raises(PayloadError) as e:
        run(ai, "extract", {"model": "m", "text": "x", "schema": {"type": "nope"}})
    assert "not a valid JSON Schema" in str(e.value)
    assert levqor_openai.validate_payload("openai", "extract", {"schema": {"type": 3}})
    assert levqor_openai.validate_payload("openai", "extract", {"schema": ORDER}) == []
    assert ai.requests == []


# ---------------------------------------------------------------- classify
LABELS = [
    {"label": "refund", "description": "wants money back"},
    {"label": "question", "description": "anything else"},
]


def test_classify_strict_enum(ai):
    ai.answer({"label": "refund"}, usage=(40, 3))
    out = run(ai, "classify", {"model": "m", "text": "I want my money back", "labels": LABELS})
    assert out["label"] == "refund" and out["mode"] == "strict"
    sent = ai.completions[0]
    enum = sent["response_format"]["json_schema"]["schema"]["properties"]["label"]["enum"]
    assert enum == ["refund", "question"]
    assert "- refund: wants money back" in sent["messages"][0]["content"]


def test_classify_json_mode_folds_case_and_repairs_an_unknown_label(ai):
    ai.answer({"label": "complaint"})
    ai.answer({"label": "REFUND"})
    out = run(ai, "classify", {"model": "m", "text": "money back", "labels": ["refund", "question"], "mode": "json"})
    assert out["label"] == "refund" and out["attempts"] == 2
    assert "'complaint' is not one of the labels" in ai.completions[1]["messages"][-1]["content"]


def test_classify_fails_closed_on_a_label_outside_the_list(ai):
    ai.answer({"label": "complaint"})
    with pytest.raises(PermanentError) as e:
        run(ai, "classify", {"model": "m", "text": "x", "labels": ["a", "b"], "mode": "json", "repair_rounds": 0})
    assert e.value.code == "invalid_answer" and "complaint" in str(e.value)


def test_classify_labels_are_checked(ai):
    assert levqor_openai.validate_payload("openai", "classify", {"labels": ["a", "A"]}) == [
        "labels[1]: 'A' is listed twice"
    ]
    with pytest.raises(PayloadError):
        run(ai, "classify", {"model": "m", "text": "x", "labels": ["only"]})


# ---------------------------------------------------------------- errors
def test_context_length_is_permanent_with_the_providers_message(ai):
    msg = ("This model's maximum context length is 8192 tokens. However, your messages resulted "
           "in 8227 tokens. Please reduce the length of the messages.")
    ai.fail_next(400, openai_error(400, msg, "context_length_exceeded", "messages"))
    with pytest.raises(PermanentError) as e:
        run(ai, "chat", {"model": "m", "prompt": "long"})
    assert e.value.code == "context_length_exceeded" and msg in str(e.value)
    assert not e.value.retryable and e.value.status == 400


@pytest.mark.parametrize("code", ["content_policy_violation", "content_filter"])
def test_a_content_policy_refusal_is_permanent(ai, code):
    ai.fail_next(400, code=code, message="Your request was rejected by our safety system.")
    with pytest.raises(PermanentError) as e:
        run(ai, "chat", {"model": "m", "prompt": "x"})
    assert e.value.code == "content_policy" and "safety system" in str(e.value)


def test_a_content_filter_stop_is_permanent(ai):
    ai.answer("", finish_reason="content_filter")
    with pytest.raises(PermanentError) as e:
        run(ai, "chat", {"model": "m", "prompt": "x"})
    assert e.value.code == "content_policy" and "content filter" in str(e.value)


def test_429_is_retryable_with_the_servers_delay_but_not_out_of_quota(ai):
    ai.fail_next(429, headers={"Retry-After": "7"})
    with pytest.raises(RetryableError) as e:
        run(ai, "chat", {"model": "m", "prompt": "x"})
    assert e.value.retry_after == 7 and e.value.code == "rate_limited"
    ai.fail_next(429, headers={"retry-after-ms": "250", "Retry-After": "1"})
    with pytest.raises(RetryableError) as e:
        run(ai, "chat", {"model": "m", "prompt": "x"})
    assert e.value.retry_after == 0.25
    ai.fail_next(429, code="insufficient_quota", message="You exceeded your current quota.")
    with pytest.raises(PermanentError) as e:
        run(ai, "chat", {"model": "m", "prompt": "x"})
    assert e.value.code == "insufficient_quota" and not e.value.retryable


def test_5xx_is_retryable_and_401_a_credential_error_without_the_key(ai):
    ai.fail_next(503, message="The server is overloaded.")
    with pytest.raises(RetryableError):
        run(ai, "chat", {"model": "m", "prompt": "x"})
    with pytest.raises(CredentialError) as e:
        run(ai, "chat", {"model": "m", "prompt": "x"}, OPENAI_API_KEY="sk-wrong-key-0000000000")
    assert e.value.status == 401 and "Incorrect API key" in str(e.value)
    assert "sk-wrong-key-0000000000" not in str(e.value)
    ai.fail_next(400, openai_error(400, f"bad key {KEY} echoed"))  # a server echoing the key
    with pytest.raises(PermanentError) as e:
        run(ai, "chat", {"model": "m", "prompt": "x"})
    assert_no_key(e.value)


def test_a_slow_server_is_bounded_by_the_step_deadline(ai):
    ai.delay_next(3.0)
    ai.answer("late")
    with pytest.raises(RetryableError) as e:
        run(ai, "chat", {"model": "m", "prompt": "x"}, timeout=0.5)
    assert e.value.code == "timeout"


def test_a_malformed_answer_fails_closed(ai):
    ai.fail_next(200, {"object": "chat.completion", "choices": []})
    with pytest.raises(PermanentError) as e:
        run(ai, "chat", {"model": "m", "prompt": "x"})
    assert e.value.code == "malformed_response"


# ---------------------------------------------------------------- models and credentials
def test_load_options_lists_the_servers_models_sorted():
    with FakeOpenAI(api_key=KEY, models=["zeta", "alpha", "mid"]) as fake:
        opts = levqor_openai.load_options(
            connector="openai", action="chat", field="model", payload={}, credentials=None,
            context=ctx(fake),
        )
        assert opts == [{"value": m, "label": m} for m in ("alpha", "mid", "zeta")]
        assert levqor_openai.load_options(
            connector="openai", action="chat", field="prompt", payload={}, credentials=None,
            context=ctx(fake),
        ) is None
        with pytest.raises(CredentialError):
            levqor_openai.load_options(
                connector="openai", action="chat", field="model", payload={},
                credentials={"api_key": "sk-nope-000000000", "base_url": fake.base_url},
                context=ctx(fake, LEVQOR_SSRF_ALLOW="127.0.0.1"),
            )


def test_check_credentials_lists_models_without_side_effects(ai):
    out = levqor_openai.check_credentials(
        connector="openai", credentials={"api_key": KEY, "base_url": ai.base_url},
        context=ctx(None, LEVQOR_SSRF_ALLOW="127.0.0.1"),
    )
    assert out["ok"] is True and out["models"] == len(ai.models)
    assert [r.path for r in ai.requests] == ["/v1/models"] and ai.completions == []


# ---------------------------------------------------------------- the real runner
def pipeline(*steps: dict) -> dict:
    return {"levqor": 1, "trigger": {"type": "manual"}, "steps": list(steps)}


@pytest.fixture
def runner(ai):
    pm = make_plugin_manager(entry_points=False, plugins=[("openai", levqor_openai)])
    delays: list[float] = []
    r = Runner(pm, env={"OPENAI_API_KEY": KEY, "OPENAI_BASE_URL": ai.base_url}, sleep=delays.append)
    r.delays = delays  # type: ignore[attr-defined]
    yield r
    r.close()


def test_the_runner_retries_a_429_after_its_delay_and_records_usage(ai, runner):
    ai.fail_next(429, headers={"Retry-After": "3"})
    ai.answer("Hi!", usage=(11, 2))
    doc = pipeline({"id": "hello", "connector": "openai", "action": "chat",
                    "payload": {"model": "gpt-4o-mini", "prompt": "Say hi to {{ trigger.name }}"}})
    res = runner.run(RunRequest("run-429", doc, {"name": "Ada"}), recorder=ListRecorder())
    assert res.status == "succeeded", res.error
    assert runner.delays == [3.0]
    assert ai.completions[0]["messages"][-1]["content"] == "Say hi to Ada"
    rec = next(r for r in res.records if r.step_id == "hello")
    assert rec.attempts == 2
    assert dict(rec.usage) == {"model": "gpt-4o-mini", "input_tokens": 11, "output_tokens": 2, "total_tokens": 13}


def test_an_extract_that_fails_closed_records_the_tokens_its_rounds_used(ai, runner):
    ai.answer("not json at all", usage=(40, 6))
    ai.answer({"items": []}, usage=(55, 4))  # still no order_id
    doc = pipeline({"id": "x", "connector": "openai", "action": "extract",
                    "payload": {"model": "gpt-4o-mini", "text": "t", "schema": ORDER, "mode": "json"}})
    res = runner.run(RunRequest("run-bad-answer", doc, {}), recorder=ListRecorder())
    assert res.status == "failed" and res.error["code"] == "invalid_answer"
    rec = next(r for r in res.records if r.step_id == "x")
    assert rec.status == "failed"
    assert dict(rec.usage) == {"model": "gpt-4o-mini", "input_tokens": 95, "output_tokens": 10, "total_tokens": 105}


def test_a_model_answer_that_fails_the_step_still_records_its_tokens(ai, runner):
    # a content filter stop, a refusal and an answer the connector cannot read were all paid for
    ai.answer("withheld", usage=(30, 7), finish_reason="content_filter")
    doc = pipeline({"id": "c", "connector": "openai", "action": "chat", "payload": {"model": "gpt-4o-mini", "prompt": "x"}})
    res = runner.run(RunRequest("run-filtered", doc, {}), recorder=ListRecorder())
    assert res.status == "failed" and res.error["code"] == "content_policy"
    rec = next(r for r in res.records if r.step_id == "c")
    assert dict(rec.usage) == {"model": "gpt-4o-mini", "input_tokens": 30, "output_tokens": 7, "total_tokens": 37}
    # in a structured step, the rounds before the one that failed count too
    ai.answer("not json", usage=(40, 6))
    ai.answer("withheld", usage=(20, 3), finish_reason="content_filter")
    doc = pipeline({"id": "x", "connector": "openai", "action": "extract",
                    "payload": {"model": "gpt-4o-mini", "text": "t", "schema": ORDER, "mode": "json"}})
    res = runner.run(RunRequest("run-filtered-2", doc, {}), recorder=ListRecorder())
    assert res.status == "failed" and res.error["code"] == "content_policy"
    rec = next(r for r in res.records if r.step_id == "x")
    assert dict(rec.usage) == {"model": "gpt-4o-mini", "input_tokens": 60, "output_tokens": 9, "total_tokens": 69}


def test_the_runner_does_not_retry_a_context_length_refusal(ai, runner):
    ai.fail_next(400, code="context_length_exceeded", message="This model's maximum context length is 10 tokens.")
    doc = pipeline({"id": "c", "connector": "openai", "action": "chat", "payload": {"model": "m", "prompt": "x"}})
    res = runner.run(RunRequest("run-ctx", doc, {}), recorder=ListRecorder())
    assert res.status == "failed" and runner.delays == []
    assert res.error["code"] == "context_length_exceeded"
    assert "maximum context length is 10 tokens" in res.error["message"]


def test_a_branch_on_the_classified_label(ai, runner):
    ai.answer({"label": "refund"})
    ai.answer("We will refund you.")
    doc = pipeline(
        {"id": "kind", "connector": "openai", "action": "classify",
         "payload": {"model": "m", "text": "{{ trigger.message }}", "labels": LABELS}},
        {"id": "route", "type": "branch", "paths": [
            {"if": {"left": "{{ steps.kind.output.label }}", "op": "eq", "right": "refund"},
             "steps": [{"id": "reply", "connector": "openai", "action": "chat",
                        "payload": {"model": "m", "prompt": "Apologise: {{ trigger.message }}"}}]}],
         "default": [{"id": "other", "connector": "openai", "action": "chat",
                      "payload": {"model": "m", "prompt": "Answer"}}]},
    )
    res = runner.run(RunRequest("run-branch", doc, {"message": "money back please"}), recorder=ListRecorder())
    assert res.status == "succeeded", res.error
    assert res.outputs["route"]["path"] == 0
    assert res.outputs["route.paths[0].reply"]["text"] == "We will refund you."
    assert "route.default.other" not in res.outputs
    usages = [r.usage for r in res.records if r.usage]
    assert len(usages) == 2
