"""levqor-openai against its fake Chat Completions server over real HTTP (the official client),
with the kernel only: the strict-schema checker, the errors, the entry point. Planning with the
catalog of other connectors is in tests/integration/test_openai_planner.py."""

from __future__ import annotations

import json

import levqor_openai
import pytest
from levqor_kernel.plugins import make_plugin_manager
from levqor_openai.fake import FakeOpenAI
from levqor_openai.schema import strict_problems

KEY = "sk-test-planner-0123456789abcdef"

# the catalog of the kernel's own connector (core): the plan the model is asked for
CORE = make_plugin_manager(
    entry_points=False, builtins=True, plugins=[], schema_cache_dir=None
).catalog.to_json()


def core_plan() -> dict:
    """A valid answer for the CORE catalog."""
    return {
        "explanation": "Greets the caller by name.",
        "pipeline": {
            "levqor": 1,
            "name": "greet",
            "trigger": {"type": "webhook", "wait": True},
            "steps": [
                {
                    "id": "greet",
                    "connector": "core",
                    "action": "transform",
                    "payload": {"value": {"greeting": "Hello {{ trigger.name }}"}},
                }
            ],
        },
    }


@pytest.fixture
def ai():
    with FakeOpenAI(api_key=KEY) as fake:
        yield fake


def opts(ai: FakeOpenAI, **env) -> dict:
    base = {
        "OPENAI_API_KEY": KEY,
        "OPENAI_BASE_URL": ai.base_url,
        "LEVQOR_PLANNER_MAX_RETRIES": "1",
        **env,
    }
    return {"env": base, "repair_rounds": 2}


def test_strict_subset_checker():
    ok = {
        "type": "object",
        "additionalProperties": False,
        "required": ["a", "b"],
        "properties": {
            "a": {"type": "string", "pattern": "^x"},
            "b": {"anyOf": [{"type": "integer", "minimum": 0}, {"type": "null"}]},
        },
    }
    assert strict_problems(ok) == []
    open_obj = {**ok, "additionalProperties": True}
    assert any("additionalProperties" in p for p in strict_problems(open_obj))
    optional = {**ok, "required": ["a"]}
    assert any("required" in p for p in strict_problems(optional))
    bad_kw = {**ok, "properties": {**ok["properties"], "a": {"type": "string", "maxLength": 3}}}
    assert any("maxLength" in p for p in strict_problems(bad_kw))
    assert any("root" in p for p in strict_problems({"anyOf": [ok]}))
    assert any("allOf" in p for p in strict_problems({**ok, "allOf": [ok]}))


def test_missing_key_is_not_configured_and_sends_nothing(ai):
    out = levqor_openai.plan("x", CORE, [], {"env": {"OPENAI_BASE_URL": ai.base_url}})
    assert out["error"]["status"] == 503 and out["error"]["code"] == "not_configured"
    assert "OPENAI_API_KEY" in out["error"]["message"]
    assert ai.requests == []


def test_wrong_key_is_a_clear_502(ai):
    o = opts(ai)
    o["env"]["OPENAI_API_KEY"] = "sk-wrong-key-abcdef0123456789"
    out = levqor_openai.plan("x", CORE, [], o)
    assert out["error"]["status"] == 502 and out["error"]["code"] == "planner_unauthorized"
    assert out["error"]["details"]["upstream_status"] == 401
    assert "sk-wrong-key" not in json.dumps(out)
    assert len(ai.requests) == 1  # 401 is not retried


def test_429_that_persists_is_503_with_retry_after(ai):
    for _ in range(2):
        ai.fail_next(429, headers={"retry-after": "0.01"}, code="rate_limit_exceeded")
    out = levqor_openai.plan("x", CORE, [], opts(ai))
    assert out["error"]["status"] == 503 and out["error"]["code"] == "planner_rate_limited"
    assert out["error"]["details"]["retry_after"] == 0.01
    ai.fail_next(429, code="insufficient_quota", headers={"x-should-retry": "false"})
    out = levqor_openai.plan("x", CORE, [], opts(ai))
    assert out["error"]["code"] == "planner_quota_exceeded"


def test_server_errors_after_retries_are_502(ai):
    for _ in range(2):
        ai.fail_next(500, headers={"retry-after-ms": "10"})
    out = levqor_openai.plan("x", CORE, [], opts(ai))
    assert out["error"]["status"] == 502 and out["error"]["code"] == "planner_upstream_error"
    assert len(ai.requests) == 2


def test_timeout_is_504(ai):
    ai.delay_next(1.5)
    ai.answer_plan(core_plan())
    out = levqor_openai.plan(
        "x", CORE, [], opts(ai, LEVQOR_PLANNER_TIMEOUT="0.3", LEVQOR_PLANNER_MAX_RETRIES="0")
    )
    assert out["error"]["status"] == 504 and out["error"]["code"] == "planner_timeout"


def test_refusal_is_422(ai):
    ai.refuse_next("I can't help with that request.")
    out = levqor_openai.plan("x", CORE, [], opts(ai))
    assert out["error"]["status"] == 422 and out["error"]["code"] == "planner_refused"
    assert "can't help" in out["error"]["message"]


def test_unreachable_server_is_502():
    with FakeOpenAI() as gone:
        url = gone.base_url
    out = levqor_openai.plan(
        "x",
        CORE,
        [],
        {"env": {"OPENAI_API_KEY": KEY, "OPENAI_BASE_URL": url, "LEVQOR_PLANNER_MAX_RETRIES": "0"}},
    )
    assert out["error"]["status"] == 502 and out["error"]["code"] == "planner_unreachable"
    assert url in out["error"]["message"]


def test_the_hook_is_found_through_the_entry_point():
    pm = make_plugin_manager(allow=["openai"], schema_cache_dir=None)
    assert pm.get_plugin("openai") is levqor_openai
    out = pm.hook.plan_pipeline(
        prompt="x", catalog={"connectors": {}}, credentials=[], options={"env": {}}
    )
    assert out["error"]["code"] == "not_configured"


def test_a_plan_for_the_core_catalog_in_json_mode(ai):
    ai.answer_plan(core_plan())
    out = levqor_openai.plan("greet whoever calls", CORE, [], opts(ai))
    assert "error" not in out, out
    # core.transform's free-form value cannot be strict: JSON mode, valid at the first answer
    assert out["planner"]["mode"] == "json" and out["planner"]["attempts"] == 1
    assert out["pipeline"]["steps"][0]["payload"] == {
        "value": {"greeting": "Hello {{ trigger.name }}"}
    }


def test_strict_nulls_are_stripped_from_nested_steps():
    from levqor_openai.schema import strip_plan_nulls

    catalog = {"connectors": {"core": {"actions": {"transform": {"payload": {
        "type": "object", "properties": {"value": {}}}}}}}}  # fmt: skip
    act = {"id": "t", "connector": "core", "action": "transform", "payload": {"value": 1},
           "name": None, "if": None, "on_error": None}  # fmt: skip
    answer = {"pipeline": {"on_failure": None, "steps": [{
        "id": "each", "type": "for_each", "items": "{{ trigger.rows }}", "concurrency": None,
        "name": None, "if": None, "on_error": None, "max_items": None, "on_item_error": None,
        "steps": [{"id": "route", "type": "branch", "default": None, "name": None, "if": None,
                   "on_error": None, "paths": [{"name": None, "if": "{{ item.x }}",
                                                "steps": [dict(act)]}]}],
    }]}}  # fmt: skip
    out = strip_plan_nulls(answer, catalog)["pipeline"]
    assert "on_failure" not in out
    (each,) = out["steps"]
    assert each == {
        "id": "each", "type": "for_each", "items": "{{ trigger.rows }}",
        "steps": [{"id": "route", "type": "branch", "paths": [{"if": "{{ item.x }}", "steps": [
            {"id": "t", "connector": "core", "action": "transform", "payload": {"value": 1}}]}]}],
    }  # fmt: skip


def test_the_plan_schema_offers_the_kernels_constructs_and_stays_strict():
    from levqor_openai.schema import plan_schema, strict_problems, strictify

    s = plan_schema({"connectors": {}})
    kinds = {b["properties"]["type"]["enum"][0] for b in s["$defs"]["step"]["anyOf"]}
    assert kinds == {"branch", "parallel", "for_each", "wait", "pipeline", "stop"}
    assert strict_problems(strictify(s)) == []


def test_planned_input_fields_become_the_documents_input_schema():
    from levqor_openai.schema import expand_input

    answer = {"pipeline": {"input": {"fields": [
        {"name": "email", "type": "string", "description": "who asks", "required": True},
        {"name": "tier", "type": "string", "description": "", "required": False,
         "enum": ["free", "pro", "free"]},
        {"name": "count", "type": "integer", "description": "how many", "required": False},
    ]}}}  # fmt: skip
    assert expand_input(answer) == []
    assert answer["pipeline"]["input"] == {
        "type": "object",
        "properties": {
            "email": {"type": "string", "description": "who asks"},
            "tier": {"type": "string", "enum": ["free", "pro"]},
            "count": {"type": "integer", "description": "how many"},
        },
        "required": ["email"],
    }
    # a JSON Schema written as it is (JSON mode) stays; a null input is dropped
    schema = {"type": "object", "properties": {"q": {"type": "string"}}}
    kept = {"pipeline": {"input": dict(schema)}}
    assert expand_input(kept) == [] and kept["pipeline"]["input"] == schema
    gone = {"pipeline": {"input": None}}
    assert expand_input(gone) == [] and "input" not in gone["pipeline"]
    # fields that do not fit are problems for the repair round, pointers under /input
    bad = {"pipeline": {"input": {"fields": [{"name": "1st", "type": "date"}]}}}
    problems = expand_input(bad)
    assert problems and all(p["pointer"].startswith("/input/fields") for p in problems)
    twice = {"pipeline": {"input": {"fields": [
        {"name": "a", "type": "string", "description": "", "required": True}] * 2}}}  # fmt: skip
    assert expand_input(twice)[0]["message"] == "fields named twice: a"
