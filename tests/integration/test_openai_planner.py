"""levqor-openai planning with the catalog of real connectors (levqor-slack, levqor-sheets and
the kernel's core) against its fake Chat Completions server over real HTTP (the official client).

The planner's own checks that need no other connector are in plugins/levqor-openai/tests."""

from __future__ import annotations

import json
import logging

import levqor_openai
import levqor_sheets
import levqor_slack
import pytest
from levqor_kernel.pipeline import validate_pipeline
from levqor_kernel.plugins import make_plugin_manager
from levqor_openai.fake import FakeOpenAI
from levqor_openai.schema import NotStrictable, plan_schema, strict_problems, strictify, strip_nulls

KEY = "sk-test-planner-0123456789abcdef"


def catalog(*plugins, core: bool = False) -> dict:
    pm = make_plugin_manager(
        entry_points=False, builtins=core, plugins=list(plugins), schema_cache_dir=None
    )
    assert not pm.failures
    return pm.catalog.to_json()


SLACK_SHEETS = catalog(levqor_slack, levqor_sheets)
WITH_CORE = catalog(levqor_slack, levqor_sheets, core=True)


def good_plan(**extra_payload) -> dict:
    return {
        "explanation": "Posts the name to Slack and appends it to a sheet.",
        "pipeline": {
            "levqor": 1,
            "name": "webhook to slack and sheets",
            "trigger": {"type": "webhook", "wait": True},
            "steps": [
                {
                    "id": "post",
                    "connector": "slack",
                    "action": "post_message",
                    "credential": "slack",
                    "payload": {"text": "New: {{ trigger.name }}", **extra_payload},
                },
                {
                    "id": "row",
                    "connector": "sheets",
                    "action": "append_rows",
                    "credential": "sheets",
                    "payload": {
                        "spreadsheet_id": "YOUR_SPREADSHEET_ID",
                        "range": "Sheet1!A1",
                        "values": [["{{ trigger.name }}"]],
                    },
                },
            ],
        },
    }


def strict_answer(plan: dict, cat: dict) -> dict:
    """What a strict-mode model must send: every optional field present, as null (the
    pipeline's on_failure, each step's name, if and on_error, and payload fields)."""
    out = json.loads(json.dumps(plan))
    for k in ("on_failure", "description", "input"):
        out["pipeline"].setdefault(k, None)
    for step in out["pipeline"]["steps"]:
        for k in ("name", "if", "on_error"):
            step.setdefault(k, None)
        schema = cat["connectors"][step["connector"]]["actions"][step["action"]]["payload"]
        for k in schema.get("properties", {}):
            step["payload"].setdefault(k, None)
    return out


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


# ---------------------------------------------------------------------------- schema
def test_plan_schema_enumerates_installed_actions_only():
    s = plan_schema(SLACK_SHEETS, [{"name": "team", "connector": "slack"}])
    assert s["properties"]["pipeline"]["properties"]["steps"] == {"$ref": "#/$defs/steps"}
    every = s["$defs"]["step"]["anyOf"]
    branches = [b for b in every if "action" in b["properties"]]
    pairs = {
        (b["properties"]["connector"]["enum"][0], b["properties"]["action"]["enum"][0])
        for b in branches
    }
    installed = {
        (c, a) for c, info in SLACK_SHEETS["connectors"].items() for a in info["actions"]
    }
    assert pairs == installed and ("slack", "post_message") in pairs
    assert ("sheets", "update_row") in pairs and not any(c == "core" for c, _a in pairs)
    # and the kernel's constructs, whose steps nest
    kinds = [b["properties"]["type"]["enum"][0] for b in every if "type" in b["properties"]]
    assert kinds == ["branch", "parallel", "for_each", "wait", "pipeline", "stop"]
    loop = next(b for b in every if b["properties"].get("type", {}).get("enum") == ["for_each"])
    assert loop["properties"]["steps"] == {"$ref": "#/$defs/steps"}
    assert {"id", "type", "items", "steps"} <= set(loop["required"])
    slack = next(b for b in branches if b["properties"]["connector"]["enum"] == ["slack"])
    # the payload is the plugin's own schema, the credential an enum of the user's names
    assert (
        slack["properties"]["payload"]
        == SLACK_SHEETS["connectors"]["slack"]["actions"]["post_message"]["payload"]
    )
    assert slack["properties"]["credential"]["enum"] == ["team"]
    sheets = next(b for b in branches if b["properties"]["connector"]["enum"] == ["sheets"])
    assert "enum" not in sheets["properties"]["credential"]  # none yet: a name to add


def test_strictify_makes_optional_fields_nullable_and_strips_them_back():
    payload = SLACK_SHEETS["connectors"]["slack"]["actions"]["post_message"]["payload"]
    strict = strictify(payload)
    assert strict_problems(strict) == []
    assert set(strict["required"]) == set(payload["properties"])
    assert "null" in strict["properties"]["thread_ts"]["type"]
    assert strip_nulls({"text": "hi", "thread_ts": None, "blocks": None}, payload) == {"text": "hi"}
    # the whole plan schema of Slack + Sheets fits the strict subset
    assert strict_problems(strictify(plan_schema(SLACK_SHEETS))) == []
    # core.transform's free-form value cannot be expressed strictly
    with pytest.raises(NotStrictable):
        strictify(plan_schema(WITH_CORE))


# ---------------------------------------------------------------------------- planning
def test_strict_structured_outputs_with_the_catalog_schema(ai, caplog):
    expected = strictify(plan_schema(SLACK_SHEETS, []))

    def check(body):
        rf = body["response_format"]
        if rf["type"] != "json_schema" or rf["json_schema"]["strict"] is not True:
            return "expected strict json_schema"
        if rf["json_schema"]["schema"] != expected:
            return "the schema is not the one built from the catalog"
        if body["model"] != "gpt-4o-mini":
            return "wrong model"
        return None

    ai.check = check
    ai.answer_plan(strict_answer(good_plan(), SLACK_SHEETS))
    caplog.set_level(logging.INFO, logger="levqor.planner")
    prompt = "when a webhook arrives tell ada.lovelace@example.com on Slack and add a row"
    out = levqor_openai.plan(prompt, SLACK_SHEETS, [], opts(ai))
    assert "error" not in out, out
    assert out["planner"]["mode"] == "strict" and out["planner"]["attempts"] == 1
    # the nulls strict mode forced in are gone again
    assert out["pipeline"]["steps"][0]["payload"] == {"text": "New: {{ trigger.name }}"}
    assert out["pipeline"]["steps"][1]["payload"]["values"] == [["{{ trigger.name }}"]]
    assert "value_input_option" not in out["pipeline"]["steps"][1]["payload"]
    assert out["explanation"].startswith("Posts")
    # the request carried the key as a bearer token and the prompt as the user message
    assert ai.requests[0].header("Authorization") == f"Bearer {KEY}"
    assert ai.completions[0]["messages"][-1] == {"role": "user", "content": prompt}
    # no personal data and no key in the logs
    logs = caplog.text
    assert "plan request" in logs and "slack.post_message,sheets.append_rows" in logs
    assert "ada.lovelace" not in logs and "example.com" not in logs and KEY not in logs


def test_json_mode_fallback_and_a_repaired_plan(ai):
    expected_schema = json.dumps(plan_schema(WITH_CORE, []), separators=(",", ":"))

    def check(body):
        if body["response_format"] != {"type": "json_object"}:
            return "expected JSON mode"
        if expected_schema not in body["messages"][0]["content"]:
            return "the system message lacks the catalog schema"
        return None

    ai.check = check
    broken = good_plan()
    # refers to a later step and to an unknown connector: two kinds of problems
    broken["pipeline"]["steps"][0]["payload"]["text"] = "{{ steps.row.output.updated_range }}"
    broken["pipeline"]["steps"].append(
        {"id": "mail", "connector": "gmail", "action": "send", "payload": {}}
    )
    ai.answer_plan(broken)
    ai.answer_plan(good_plan())
    out = levqor_openai.plan("a webhook to slack and sheets", WITH_CORE, [], opts(ai))
    assert "error" not in out, out
    assert out["planner"] == {**out["planner"], "mode": "json", "attempts": 2}
    second = ai.completions[1]["messages"]
    assert [m["role"] for m in second] == ["system", "user", "assistant", "user"]
    assert json.loads(second[2]["content"]) == broken
    assert "not an earlier step" in second[3]["content"]
    assert "unknown connector 'gmail'" in second[3]["content"]


def test_a_plan_that_never_becomes_valid_is_an_error_with_the_problems(ai):
    bad = good_plan()
    bad["pipeline"]["steps"][1]["payload"].pop("range")  # required by sheets.append_rows
    for _ in range(3):
        ai.answer_plan(bad)
    out = levqor_openai.plan("x", WITH_CORE, [], opts(ai))
    assert out["error"]["status"] == 422 and out["error"]["code"] == "invalid_plan"
    problems = out["error"]["details"]["problems"]
    assert any(p["step"] == "row" and "range" in p["message"] for p in problems)
    assert out["error"]["details"]["attempts"] == 3
    assert len(ai.completions) == 3 and ai.pending == 0


def test_non_json_answer_is_repaired(ai):
    ai.answer_plan("Sure! Here is your pipeline: ...")
    ai.answer_plan(good_plan())
    out = levqor_openai.plan("x", WITH_CORE, [], opts(ai))
    assert out["planner"]["attempts"] == 2
    assert "not valid JSON" in ai.completions[1]["messages"][-1]["content"]


def test_existing_credentials_are_offered_by_name_only(ai):
    creds = [{"name": "team slack", "connector": "slack", "values": {"webhook_url": "SECRET"}}]
    plan = good_plan()
    plan["pipeline"]["steps"][0]["credential"] = "team slack"
    ai.answer_plan(strict_answer(plan, SLACK_SHEETS))
    out = levqor_openai.plan("x", SLACK_SHEETS, creds, opts(ai))
    assert "error" not in out, out
    sent = json.dumps(ai.completions[0])
    assert "team slack" in sent and "SECRET" not in sent


# ---------------------------------------------------------------------------- errors
def test_429_is_retried_by_the_client_then_succeeds(ai):
    ai.fail_next(429, headers={"retry-after-ms": "20"}, code="rate_limit_exceeded")
    ai.answer_plan(good_plan())
    out = levqor_openai.plan("x", WITH_CORE, [], opts(ai))
    assert "error" not in out, out
    assert len(ai.requests) == 2


def test_strictify_leaves_a_free_form_map_out_of_a_choice_with_other_forms():
    payload = SLACK_SHEETS["connectors"]["sheets"]["actions"]["update_row"]["payload"]
    kinds = [b.get("type") for b in payload["properties"]["values"]["anyOf"]]
    assert "object" in kinds  # values by header: a map that takes any keys
    strict = strictify(payload)
    assert strict_problems(strict) == []
    left = strict["properties"]["values"]["anyOf"]
    assert left and all(b.get("type") != "object" for b in left)
    # a free-form value with no other form still cannot be expressed
    with pytest.raises(NotStrictable):
        strictify({"type": "object", "properties": {"m": {"anyOf": [{"type": "object"}]}}})


# ---------------------------------------------------------------------------- AI steps
AI = catalog(levqor_openai, levqor_slack, levqor_sheets)
AI_CORE = catalog(levqor_openai, levqor_slack, levqor_sheets, core=True)
SUPPORT_PROMPT = (
    "when a support email arrives on the webhook, pull out the customer's order number and "
    "whether it is urgent, decide if it is a refund request or a question, post refunds to "
    "Slack and log questions in our sheet"
)


def step_kinds(schema: dict) -> list[dict]:
    return schema["$defs"]["step"]["anyOf"]


def agent_branch(schema: dict) -> dict:
    (agent,) = [b for b in step_kinds(schema) if b["properties"].get("type", {}).get("enum") == ["agent"]]
    return agent


def support_plan() -> dict:
    """A webhook pipeline: extract the order, classify the request, branch on the label."""
    return {
        "explanation": "Reads each support email, classifies it and routes it.",
        "pipeline": {
            "levqor": 1,
            "name": "support triage",
            "description": "Route a support email: refunds to Slack, questions to the sheet.",
            "trigger": {"type": "webhook", "wait": True},
            "input": {"fields": [
                {"name": "from", "type": "string", "description": "sender", "required": True},
                {"name": "body", "type": "string", "description": "the email", "required": True},
            ]},  # fmt: skip
            "steps": [
                {
                    "id": "order",
                    "connector": "openai",
                    "action": "extract",
                    "payload": {
                        "model": "gpt-4o-mini",
                        "text": "{{ trigger.body }}",
                        "schema": {
                            "type": "object",
                            "required": ["order_id", "urgent"],
                            "properties": {
                                "order_id": {"type": "string", "description": "the order number"},
                                "urgent": {"type": "boolean"},
                            },
                        },
                    },
                },
                {
                    "id": "kind",
                    "connector": "openai",
                    "action": "classify",
                    "payload": {
                        "model": "gpt-4o-mini",
                        "text": "{{ trigger.body }}",
                        "labels": [
                            {"label": "refund", "description": "wants their money back"},
                            {"label": "question", "description": "anything else"},
                        ],
                    },
                },
                {
                    "id": "route",
                    "type": "branch",
                    "paths": [
                        {
                            "if": {"left": "{{ steps.kind.output.label }}", "op": "eq", "right": "refund"},
                            "steps": [
                                {
                                    "id": "tell",
                                    "connector": "slack",
                                    "action": "post_message",
                                    "credential": "slack",
                                    "payload": {"text": "Refund for {{ steps.order.output.data.order_id }}"},
                                }
                            ],
                        }
                    ],
                    "default": [
                        {
                            "id": "log",
                            "connector": "sheets",
                            "action": "append_rows",
                            "credential": "sheets",
                            "payload": {
                                "spreadsheet_id": "YOUR_SPREADSHEET_ID",
                                "range": "Questions!A1",
                                "values": [["{{ trigger.from }}", "{{ steps.order.output.data.order_id }}"]],
                            },
                        }
                    ],
                },
            ],
        },
    }  # fmt: skip


def agent_plan(**tool_over) -> dict:
    """A manual pipeline whose agent looks a customer up in the sheet and tells Slack."""
    lookup = {
        "connector": "sheets",
        "action": "lookup_rows",
        "credential": "sheets",
        "payload": {"spreadsheet_id": "sheet123", "sheet": "Customers", "column": "email"},
        **tool_over,
    }
    return {
        "explanation": "An agent finds the customer and posts a summary to Slack.",
        "pipeline": {
            "levqor": 1,
            "name": "customer lookup agent",
            "trigger": {"type": "manual"},
            "input": {"fields": [
                {"name": "email", "type": "string", "description": "the customer", "required": True},
            ]},  # fmt: skip
            "steps": [
                {
                    "id": "helper",
                    "type": "agent",
                    "connector": "openai",
                    "model": "gpt-4o-mini",
                    "goal": "Find the customer {{ trigger.email }} in the sheet and post a "
                    "one-line summary of their plan to Slack.",
                    "tools": [
                        lookup,
                        {"connector": "slack", "action": "post_message", "credential": "slack"},
                    ],
                }
            ],
        },
    }


def test_the_agent_construct_offers_the_installed_actions_as_tools():
    s = plan_schema(AI, [{"name": "team", "connector": "slack"}])
    steps = step_kinds(s)
    pairs = {
        (b["properties"]["connector"]["enum"][0], b["properties"]["action"]["enum"][0])
        for b in steps
        if "action" in b["properties"]
    }
    agent = agent_branch(s)
    tools = agent["properties"]["tools"]["items"]["anyOf"]
    tool_pairs = {
        (t["properties"]["connector"]["enum"][0], t["properties"]["action"]["enum"][0]) for t in tools
    }
    offered = {
        (c, a)
        for c, info in AI["connectors"].items()
        for a, act in info["actions"].items()
        if not act.get("hidden")
    }
    # every installed action a user can pick, as a step and as a tool; the agent's turn never
    assert ("openai", "agent_turn") not in offered and AI["connectors"]["openai"]["agent"]
    assert pairs == offered == tool_pairs
    assert {("openai", "chat"), ("openai", "extract"), ("openai", "classify")} <= pairs
    # the model connector: its credential is optional (the operator's key serves)
    assert agent["properties"]["connector"]["enum"] == ["openai"]
    assert "credential" in agent["properties"] and "credential" not in agent["required"]
    assert {"goal", "model", "tools"} <= set(agent["required"])
    assert agent["properties"]["approval"]["enum"] == ["writes", "all", "none"]
    chat = next(b for b in steps if b["properties"].get("action", {}).get("enum") == ["chat"])
    assert "credential" not in chat["required"]
    # a tool binds its connector's credential; its fixed fields are all optional
    slack = next(t for t in tools if t["properties"]["connector"]["enum"] == ["slack"])
    assert slack["properties"]["credential"]["enum"] == ["team"] and "credential" in slack["required"]
    fixed = slack["properties"]["payload"]
    assert "required" not in fixed and "text" in fixed["properties"]
    assert "writes upstream" in slack["description"]
    lookup = next(t for t in tools if t["properties"]["action"]["enum"] == ["lookup_rows"])
    assert "reads only" in lookup["description"]
    # without a connector that drives agents there is no agent construct
    assert not [b for b in step_kinds(plan_schema(SLACK_SHEETS)) if "agent" in json.dumps(b["properties"].get("type"))]
    # the agent, chat and classify fit strict mode; extract's free-form answer schema does not
    no_extract = json.loads(json.dumps(AI))
    del no_extract["connectors"]["openai"]["actions"]["extract"]
    assert strict_problems(strictify(plan_schema(no_extract))) == []
    with pytest.raises(NotStrictable, match="schema"):
        strictify(plan_schema(AI))


def test_plain_words_planned_into_extract_classify_and_a_branch_on_the_label(ai):
    ai.answer_plan(support_plan())
    out = levqor_openai.plan(SUPPORT_PROMPT, AI_CORE, [], opts(ai, LEVQOR_PLANNER_MODEL="gpt-4.1-mini"))
    assert "error" not in out, out
    assert out["planner"]["mode"] == "json" and out["planner"]["attempts"] == 1
    doc = out["pipeline"]
    # valid for the installed catalog, as the host checks it again
    pm = make_plugin_manager(
        entry_points=False, builtins=True, plugins=[levqor_openai, levqor_slack, levqor_sheets],
        schema_cache_dir=None,
    )  # fmt: skip
    assert validate_pipeline(doc, pm.catalog) == []
    # the declared fields became the pipeline's input schema
    assert doc["input"] == {
        "type": "object",
        "properties": {
            "from": {"type": "string", "description": "sender"},
            "body": {"type": "string", "description": "the email"},
        },
        "required": ["from", "body"],
    }
    assert doc["description"].startswith("Route a support email")
    assert [s.get("action") or s["type"] for s in doc["steps"]] == ["extract", "classify", "branch"]
    # the model was told how model steps, the branch on a label, agents and input work
    system = ai.completions[0]["messages"][0]["content"]
    for hint in ("output.label", '"op": "eq"', "output.data", '"agent"', '"input"', "MCP"):
        assert hint in system, hint
    assert 'else "gpt-4.1-mini"' in system  # the planner's own model is the default model
    assert "agent_turn" not in system  # hidden actions are never offered


def test_an_agent_with_two_tools_is_planned(ai):
    creds = [{"name": "slack", "connector": "slack"}, {"name": "sheets", "connector": "sheets"}]
    ai.answer_plan(agent_plan())
    out = levqor_openai.plan("look the customer up and tell the team", AI_CORE, creds, opts(ai))
    assert "error" not in out, out
    (agent,) = out["pipeline"]["steps"]
    assert agent["type"] == "agent" and "approval" not in agent  # writes wait for approval
    assert [(t["connector"], t["action"]) for t in agent["tools"]] == [
        ("sheets", "lookup_rows"),
        ("slack", "post_message"),
    ]
    pm = make_plugin_manager(
        entry_points=False, builtins=True, plugins=[levqor_openai, levqor_slack, levqor_sheets],
        schema_cache_dir=None,
    )  # fmt: skip
    assert validate_pipeline(out["pipeline"], pm.catalog, credentials={"slack": "slack", "sheets": "sheets"}) == []
    assert out["pipeline"]["input"]["required"] == ["email"]


def test_the_repair_round_fixes_an_agent_with_an_unknown_tool(ai):
    broken = agent_plan(action="find_rows")  # not an action of sheets
    broken["pipeline"]["steps"][0]["tools"].append(
        {"connector": "openai", "action": "agent_turn"}  # hidden: never a tool
    )
    ai.answer_plan(broken)
    ai.answer_plan(agent_plan())
    out = levqor_openai.plan("look the customer up and tell the team", AI_CORE, [], opts(ai))
    assert "error" not in out, out
    assert out["planner"]["attempts"] == 2
    repair = ai.completions[1]["messages"][-1]["content"]
    assert "/steps/0/tools/0/action (step helper): connector 'sheets' has no action 'find_rows'" in repair
    assert "/steps/0/tools/2/action (step helper): connector 'openai' has no action 'agent_turn'" in repair
    assert [t["action"] for t in out["pipeline"]["steps"][0]["tools"]] == ["lookup_rows", "post_message"]


def test_bad_input_fields_are_repaired(ai):
    bad = agent_plan()
    bad["pipeline"]["input"]["fields"][0]["type"] = "email"
    ai.answer_plan(bad)
    ai.answer_plan(agent_plan())
    out = levqor_openai.plan("x", AI_CORE, [], opts(ai))
    assert out["planner"]["attempts"] == 2
    assert "/input/fields/0/type" in ai.completions[1]["messages"][-1]["content"]
    assert out["pipeline"]["input"]["properties"]["email"]["type"] == "string"


def test_a_strict_answer_with_an_agent_is_stripped_back(ai):
    cat = json.loads(json.dumps(AI))
    del cat["connectors"]["openai"]["actions"]["extract"]
    plan = agent_plan()
    strict = json.loads(json.dumps(plan))
    p = strict["pipeline"]
    p.update(on_failure=None, description=None)
    p["input"]["fields"][0]["enum"] = None
    helper = p["steps"][0]
    for k in ("name", "if", "on_error", "credential", "system", "approval",
              "max_iterations", "max_tokens", "timeout"):  # fmt: skip
        helper[k] = None
    offered = agent_branch(strictify(plan_schema(cat)))["properties"]["tools"]["items"]["anyOf"]
    for tool in helper["tools"]:
        (branch,) = [t for t in offered if t["properties"]["action"]["enum"] == [tool["action"]]]
        fields = branch["properties"]["payload"]["properties"]  # the object, or null
        tool["approval"] = None
        tool["payload"] = {k: tool.get("payload", {}).get(k) for k in fields}
    ai.check = lambda body: None if body["response_format"]["type"] == "json_schema" else "expected strict"
    ai.answer_plan(strict)
    out = levqor_openai.plan("x", cat, [], opts(ai))
    assert "error" not in out, out
    assert out["planner"]["mode"] == "strict"
    (agent,) = out["pipeline"]["steps"]
    assert agent == {**plan["pipeline"]["steps"][0]}  # every null gone, the empty payload too
    assert "description" not in out["pipeline"] and "on_failure" not in out["pipeline"]
    assert out["pipeline"]["input"]["properties"] == {"email": {"type": "string", "description": "the customer"}}


def test_the_model_actions_own_rules_are_checked_and_repaired(ai):
    broken = support_plan()
    steps = broken["pipeline"]["steps"]
    steps[0]["payload"]["schema"] = {"type": "objekt"}  # not a JSON Schema
    steps[1]["payload"]["labels"] = ["refund", "Refund"]  # the same label twice
    ai.answer_plan(broken)
    ai.answer_plan(support_plan())
    out = levqor_openai.plan(SUPPORT_PROMPT, AI_CORE, [], opts(ai))
    assert "error" not in out, out
    assert out["planner"]["attempts"] == 2
    repair = ai.completions[1]["messages"][-1]["content"]
    assert "/steps/0/payload/schema (step order)" in repair
    assert "/steps/1/payload/labels (step kind)" in repair and "twice" in repair
    # a schema or labels that are still templates are left to the run
    templated = support_plan()
    templated["pipeline"]["steps"][1]["payload"]["labels"] = "{{ trigger.labels }}"
    assert levqor_openai.own_rule_problems(templated["pipeline"]) == []
    # nested steps are checked too
    nested = support_plan()
    bad = nested["pipeline"]["steps"][0]
    bad["payload"]["schema"] = {"type": 7}
    nested["pipeline"]["steps"][2]["default"].append({**bad, "id": "again"})
    pointers = [p["pointer"] for p in levqor_openai.own_rule_problems(nested["pipeline"])]
    assert pointers == ["/steps/0/payload/schema", "/steps/2/default/1/payload/schema"]
