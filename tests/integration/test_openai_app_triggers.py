"""levqor-openai offers the installed connectors' app triggers to the model (levqor-notion's
database triggers here, levqor-slack for the step) and its plans validate against them; against
its fake Chat Completions server over real HTTP."""

from __future__ import annotations

import json

import levqor_notion
import levqor_openai
import levqor_slack
import pytest
from levqor_kernel.plugins import make_plugin_manager
from levqor_openai.fake import FakeOpenAI
from levqor_openai.schema import plan_schema, strictify, strip_plan_nulls, trigger_schemas

KEY = "sk-test-planner-0123456789abcdef"
DB = "d9824bdc84454327be8b5b47500af6ce"
PM = make_plugin_manager(
    entry_points=False, builtins=True, plugins=[levqor_notion, levqor_slack], schema_cache_dir=None
)
CATALOG = PM.catalog.to_json()
CREDS = [
    {"name": "team-notion", "connector": "notion"},
    {"name": "team-slack", "connector": "slack"},
]


def notion_plan(config: dict | None = None, **trigger) -> dict:
    return {
        "explanation": "Posts each new Notion item's title to Slack.",
        "pipeline": {
            "levqor": 1,
            "name": "notion to slack",
            "trigger": {
                "type": "app",
                "connector": "notion",
                "trigger": "new_database_item",
                "credential": "team-notion",
                "config": {"database_id": DB} if config is None else config,
                **trigger,
            },
            "steps": [
                {
                    "id": "post",
                    "connector": "slack",
                    "action": "post_message",
                    "credential": "team-slack",
                    "payload": {"text": "New in Notion: {{ trigger.title }} {{ trigger.url }}"},
                }
            ],
        },
    }


@pytest.fixture
def ai():
    with FakeOpenAI(api_key=KEY) as fake:
        yield fake


def opts(ai: FakeOpenAI) -> dict:
    env = {"OPENAI_API_KEY": KEY, "OPENAI_BASE_URL": ai.base_url, "LEVQOR_PLANNER_MAX_RETRIES": "0"}
    return {"env": env, "repair_rounds": 2}


def test_the_schema_offers_each_installed_app_trigger():
    assert not PM.failures
    branches = trigger_schemas(CATALOG, CREDS)
    kinds = [b["properties"]["type"]["enum"][0] for b in branches]
    assert kinds[:3] == ["manual", "webhook", "schedule"]
    apps = {
        (b["properties"]["connector"]["enum"][0], b["properties"]["trigger"]["enum"][0]): b
        for b in branches
        if b["properties"]["type"]["enum"] == ["app"]
    }
    expected = {(c, t) for c, conn in CATALOG["connectors"].items() for t in conn["triggers"]}
    assert set(apps) == expected
    assert {("notion", "new_database_item"), ("notion", "updated_database_item")} <= expected
    for (c, t), branch in apps.items():  # an interval only where the trigger polls
        polling = CATALOG["connectors"][c]["triggers"][t]["kind"] == "polling"
        assert ("interval" in branch["properties"]) == polling
    new = apps[("notion", "new_database_item")]
    assert new["properties"]["credential"]["enum"] == ["team-notion"]
    assert new["properties"]["config"]["required"] == ["database_id"]
    assert (
        "filter" not in new["properties"]["config"]["properties"]
    )  # free-form: left to the kernel
    assert new["properties"]["interval"]["minimum"] == 60
    assert "Tuscan kale" in new["description"]  # the sample item tells the model trigger.*
    updated = apps[("notion", "updated_database_item")]
    assert updated["properties"]["config"]["properties"]["include_new"]["type"] == "boolean"
    # the trigger part fits OpenAI's strict subset on its own
    strictify({"type": "object", "properties": {"t": {"anyOf": branches}}, "required": ["t"]})
    whole = plan_schema(CATALOG, CREDS)
    assert whole["properties"]["pipeline"]["properties"]["trigger"]["anyOf"] == branches


def test_a_plan_with_an_app_trigger_is_repaired_then_valid(ai):
    seen: list[str] = []

    def check(body):
        system = body["messages"][0]["content"]
        if "new_database_item" not in system or '"sample_item"' not in system:
            return "the prompt does not list the app triggers"
        seen.append(body["response_format"]["type"])
        return None

    ai.check = check
    ai.answer_plan(notion_plan(config={}))  # no database: must be repaired
    ai.answer_plan(notion_plan(interval=600))
    out = levqor_openai.plan(
        "when a row is added to my Notion database, tell Slack", CATALOG, CREDS, opts(ai)
    )
    assert "error" not in out, out
    assert out["planner"]["attempts"] == 2 and seen
    trig = out["pipeline"]["trigger"]
    assert trig == {
        "type": "app",
        "connector": "notion",
        "trigger": "new_database_item",
        "credential": "team-notion",
        "config": {"database_id": DB},
        "interval": 600,
    }
    repair = ai.completions[1]["messages"][-1]["content"]
    assert "/trigger/config" in repair and "database_id" in repair


def test_an_unknown_trigger_is_refused_by_validation(ai):
    bad = notion_plan()
    bad["pipeline"]["trigger"]["trigger"] = "deleted_item"
    for _ in range(3):
        ai.answer_plan(bad)
    out = levqor_openai.plan("x", CATALOG, CREDS, opts(ai))
    assert out["error"]["code"] == "invalid_plan"
    assert any("deleted_item" in p["message"] for p in out["error"]["details"]["problems"])


def test_strict_nulls_are_stripped_from_the_trigger():
    answer = notion_plan(config={"database_id": DB, "filter": None}, interval=None)
    out = strip_plan_nulls(json.loads(json.dumps(answer)), CATALOG)
    assert out["pipeline"]["trigger"] == notion_plan()["pipeline"]["trigger"]
