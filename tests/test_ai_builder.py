"""The AI builder end to end: POST /api/v1/plan and `levqor plan` against a fake OpenAI-compatible
server, then the stored pipeline runs through its webhook against the Slack and Sheets fakes."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from e2e_support import LiveServer, make_app
from levqor_kernel import hookimpl
from levqor_openai.fake import FakeOpenAI
from levqor_openai.schema import plan_schema
from levqor_sheets.fake import FakeGoogleSheets
from levqor_slack.fake import FakeSlack

KEY = "sk-test-e2e-planner-0123456789"
SHEET = "sheet123"
PROMPT = "when a webhook arrives, post its name to Slack and add a row to a Google Sheet"


def plan_answer(**over) -> dict:
    doc = {
        "levqor": 1,
        "name": "webhook to Slack and Sheets",
        "trigger": {"type": "webhook", "wait": True},
        "steps": [
            {
                "id": "notify",
                "connector": "slack",
                "action": "post_message",
                "credential": over.get("slack_cred", "team-slack"),
                "payload": {"text": "New arrival: {{ trigger.name }}"},
            },
            {
                "id": "log_row",
                "connector": "sheets",
                "action": "append_rows",
                "credential": over.get("sheets_cred", "bot-sheets"),
                "payload": {
                    "spreadsheet_id": SHEET,
                    "range": "Sheet1!A1",
                    "values": [["{{ trigger.name }}"]],
                    "value_input_option": "RAW",
                },
            },
        ],
    }
    return {
        "explanation": "Posts each arrival's name to Slack and appends it to the sheet.",
        "pipeline": doc,
    }


@pytest.fixture
def fakes():
    with FakeOpenAI(api_key=KEY) as ai, FakeSlack() as slack, FakeGoogleSheets() as google:
        google.add_spreadsheet(SHEET, ["Sheet1"])
        yield ai, slack, google


def env_for(ai: FakeOpenAI, google: FakeGoogleSheets, **extra) -> dict:
    return {
        "OPENAI_API_KEY": KEY,
        "OPENAI_BASE_URL": ai.base_url,
        "LEVQOR_PLANNER_MAX_RETRIES": "0",
        "LEVQOR_SLACK_ALLOWED_HOSTS": "127.0.0.1",
        "LEVQOR_SHEETS_API_BASE": google.url,
        **extra,
    }


@pytest.fixture
def server(tmp_path, fakes):
    ai, slack, google = fakes
    srv = LiveServer(make_app(tmp_path, env=env_for(ai, google)))
    yield srv
    srv.stop()


def test_plan_then_run_through_the_webhook(server, fakes):
    ai, slack, google = fakes
    _, key = server.user_with_key("ada@example.com")
    c = server.client(key)
    assert (
        c.post(
            "/api/v1/credentials",
            json={
                "name": "team-slack",
                "connector": "slack",
                "values": {"webhook_url": slack.webhook_url},
            },
        ).status_code
        == 201
    )
    assert (
        c.post(
            "/api/v1/credentials",
            json={"name": "bot-sheets", "connector": "sheets", "values": google.service_account()},
        ).status_code
        == 201
    )

    creds = [
        {"name": "bot-sheets", "connector": "sheets"},
        {"name": "team-slack", "connector": "slack"},
    ]
    catalog = server.state.pm.catalog.to_json()
    expected = json.dumps(plan_schema(catalog, creds), separators=(",", ":"))
    seen: list[str] = []

    def check(body):
        # the schema built from this installation's catalog and the user's credential names
        rf = body["response_format"]
        if rf["type"] == "json_schema":
            schema = json.dumps(rf["json_schema"]["schema"])
        else:
            schema = body["messages"][0]["content"]
            if expected not in schema:
                return "the system message lacks the schema built from the catalog"
        for name in ("slack", "sheets", "post_message", "append_rows", "team-slack", "bot-sheets"):
            if f'"{name}"' not in schema:
                return f"{name} missing from the schema"
        seen.append(rf["type"])
        return None

    ai.check = check
    broken = plan_answer()
    del broken["pipeline"]["steps"][1]["payload"]["range"]
    ai.answer_plan(broken)  # invalid first: must be repaired
    ai.answer_plan(plan_answer())

    r = c.post("/api/v1/plan", json={"prompt": PROMPT})
    assert r.status_code == 201, r.text
    out = r.json()
    assert out["id"].startswith("pl_") and out["version"] == 1
    assert out["explanation"].startswith("Posts each arrival")
    assert out["warnings"] == []
    assert out["planner"]["attempts"] == 2 and out["price"] == 1
    assert r.headers["Location"] == f"/api/v1/pipelines/{out['id']}"
    assert seen and "range" in ai.completions[1]["messages"][-1]["content"]
    stored = c.get(f"/api/v1/pipelines/{out['id']}").json()
    assert [s["connector"] for s in stored["pipeline"]["steps"]] == ["slack", "sheets"]

    hook_path = "/hooks/" + out["webhook_url"].rsplit("/hooks/", 1)[1]
    run = c.post(hook_path, json={"name": "Grace Hopper"})
    assert run.status_code == 200, run.text
    assert run.json()["status"] == "succeeded", run.json()
    assert slack.messages == [{"text": "New arrival: Grace Hopper"}]
    assert google.rows(SHEET, "Sheet1") == [["Grace Hopper"]]


def test_dry_run_and_missing_credentials_are_warnings(server, fakes):
    ai, _, _ = fakes
    _, key = server.user_with_key("bob@example.com")
    c = server.client(key)
    ai.answer_plan(plan_answer(slack_cred="slack", sheets_cred="sheets"))
    r = c.post("/api/v1/plan", json={"prompt": PROMPT, "dry_run": True, "name": "trial"})
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["dry_run"] is True and out["name"] == "trial" and "id" not in out
    assert out["pipeline"]["steps"][0]["connector"] == "slack"
    assert {(w["connector"], w["credential"]) for w in out["warnings"]} == {
        ("slack", "slack"),
        ("sheets", "sheets"),
    }
    assert all("add a" in w["message"] for w in out["warnings"])
    assert c.get("/api/v1/pipelines").json()["items"] == []


def test_never_valid_is_422_and_nothing_is_stored(server, fakes):
    ai, _, _ = fakes
    _, key = server.user_with_key("carol@example.com")
    c = server.client(key)
    bad = plan_answer()
    bad["pipeline"]["steps"][0]["payload"]["text"] = "{{ steps.log_row.output.updated_range }}"
    for _ in range(3):
        ai.answer_plan(bad)
    r = c.post("/api/v1/plan", json={"prompt": PROMPT})
    assert r.status_code == 422, r.text
    err = r.json()["error"]
    assert err["code"] == "invalid_plan"
    assert any("not an earlier step" in p["message"] for p in err["details"]["problems"])
    assert len(ai.completions) == 3
    assert c.get("/api/v1/pipelines").json()["items"] == []


def test_bad_input_and_upstream_errors(server, fakes):
    ai, _, _ = fakes
    _, key = server.user_with_key("dan@example.com")
    c = server.client(key)
    assert c.post("/api/v1/plan", json={}).status_code == 400
    assert c.post("/api/v1/plan", json={"prompt": "  "}).status_code == 400
    assert c.post("/api/v1/plan", json={"prompt": "x", "extra": 1}).status_code == 400
    assert c.post("/api/v1/plan", json={"prompt": "x" * 4001}).status_code == 400
    assert server.client().post("/api/v1/plan", json={"prompt": "x"}).status_code == 401
    ai.fail_next(429, headers={"retry-after": "7"}, code="rate_limit_exceeded")
    r = c.post("/api/v1/plan", json={"prompt": PROMPT})
    assert r.status_code == 503 and r.json()["error"]["code"] == "planner_rate_limited"
    assert r.headers["Retry-After"] == "7"
    ai.fail_next(503)
    r = c.post("/api/v1/plan", json={"prompt": PROMPT})
    assert r.status_code == 502 and r.json()["error"]["code"] == "planner_upstream_error"
    ai.refuse_next()
    r = c.post("/api/v1/plan", json={"prompt": PROMPT})
    assert r.status_code == 422 and r.json()["error"]["code"] == "planner_refused"


def test_missing_key_is_503_naming_the_variable(tmp_path, fakes):
    ai, _, google = fakes
    env = env_for(ai, google)
    env.pop("OPENAI_API_KEY")
    srv = LiveServer(make_app(tmp_path, env=env, start_workers=False))
    try:
        _, key = srv.user_with_key("eve@example.com")
        r = srv.client(key).post("/api/v1/plan", json={"prompt": PROMPT})
        assert r.status_code == 503
        assert r.json()["error"]["code"] == "not_configured"
        assert "OPENAI_API_KEY" in r.json()["error"]["message"]
        assert ai.requests == []
    finally:
        srv.stop()


def test_no_planner_installed_is_503(tmp_path):
    srv = LiveServer(
        make_app(tmp_path, env={"LEVQOR_DISABLE_PLUGINS": "openai"}, start_workers=False)
    )
    try:
        _, key = srv.user_with_key("fay@example.com")
        r = srv.client(key).post("/api/v1/plan", json={"prompt": PROMPT})
        assert r.status_code == 503
        assert "levqor-openai" in r.json()["error"]["message"]
    finally:
        srv.stop()


class Billing:
    """A test billing plugin: prices the planner and refuses when told to."""

    def __init__(self) -> None:
        self.priced: list[tuple] = []
        self.gated: list[tuple] = []
        self.refuse = False

    @hookimpl
    def price_task(self, connector, action, payload, price):
        self.priced.append((connector, action, price))
        return 3 if connector == "planner" else None

    @hookimpl
    def gate_run(self, user, pipeline, price, ledger):
        self.gated.append((pipeline["doc"]["steps"][0]["connector"], price))
        if self.refuse:
            return {"allow": False, "status": 402, "reason": "out of credits", "retry_at": None}
        return None


def test_billing_gate_and_rate_limit(tmp_path, fakes):
    ai, _, google = fakes
    billing = Billing()
    app = make_app(
        tmp_path,
        env=env_for(
            ai,
            google,
            LEVQOR_PLAN_PRICE_CREDITS="2",
            LEVQOR_PLAN_RATE_PER_MINUTE="2",
            LEVQOR_RATE_LIMITS="on",
        ),
        plugins=[("billing", billing)],
        start_workers=False,
    )
    srv = LiveServer(app)
    try:
        _, key = srv.user_with_key("gus@example.com")
        c = srv.client(key)
        ai.answer_plan(plan_answer())
        r = c.post("/api/v1/plan", json={"prompt": PROMPT, "dry_run": True})
        assert r.status_code == 200 and r.json()["price"] == 3
        assert billing.priced == [("planner", "plan", 2)] and billing.gated == [("planner", 3)]
        billing.refuse = True
        r = c.post("/api/v1/plan", json={"prompt": PROMPT})
        assert r.status_code == 402 and r.json()["error"]["message"] == "out of credits"
        assert len(ai.completions) == 1  # refused before the model was asked
        r = c.post("/api/v1/plan", json={"prompt": PROMPT})
        assert r.status_code == 429 and int(r.headers["Retry-After"]) >= 1
        assert "LEVQOR_PLAN_RATE_PER_MINUTE" in r.json()["error"]["message"]
        # another user has their own window
        _, key2 = srv.user_with_key("hal@example.com")
        billing.refuse = False
        ai.answer_plan(plan_answer())
        assert srv.client(key2).post("/api/v1/plan", json={"prompt": PROMPT}).status_code == 201
    finally:
        srv.stop()


def test_cli_plan(tmp_path, fakes):
    ai, _, google = fakes
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("LEVQOR_", "OPENAI_")) and k != "DATABASE_URL"
    }
    env.update(
        env_for(ai, google),
        LEVQOR_DATA_DIR=str(tmp_path / "data"),
        LEVQOR_CACHE_DIR="",
        LEVQOR_EXECUTOR="off",
        LEVQOR_SCHEDULER="off",
    )
    cli = [sys.executable, "-m", "levqor_host.cli"]

    def levqor(*args):
        return subprocess.run([*cli, *args], env=env, capture_output=True, text=True, timeout=120)

    assert levqor("users", "create", "ops@example.com", "--admin").returncode == 0
    ai.answer_plan(plan_answer())
    p = levqor("plan", PROMPT, "--name", "from the cli", "--user", "ops@example.com")
    assert p.returncode == 0, p.stderr
    assert "pipeline pl_" in p.stdout and "from the cli" in p.stdout
    assert "explanation: Posts each arrival" in p.stdout
    assert "warning: add a slack credential named 'team-slack'" in p.stdout
    assert "/hooks/" in p.stdout
    listed = levqor("pipelines", "list", "--user", "ops@example.com")
    assert "from the cli" in listed.stdout

    ai.answer_plan(plan_answer())
    d = levqor("plan", PROMPT, "--dry-run")
    assert d.returncode == 0, d.stderr
    assert "dry run (not stored)" in d.stdout
    assert levqor("pipelines", "list").stdout.count("pl_") == 1

    for _ in range(3):
        ai.answer_plan({"explanation": "", "pipeline": {"levqor": 1}})
    bad = levqor("plan", PROMPT)
    assert bad.returncode != 0
    assert "could not produce a valid pipeline" in bad.stderr and "422" in bad.stderr


def test_planning_costs_credits_and_a_failed_plan_is_refunded(tmp_path, fakes):
    ai, _, google = fakes
    env = env_for(
        ai,
        google,
        LEVQOR_BILLING="local",
        LEVQOR_PLAN_PRICE_CREDITS="2",
        # no monthly plan credits: the balance is what the test grants
        LEVQOR_PLANS='{"pro": {"monthly_credits": 0}}',
    )
    app = make_app(tmp_path, env=env, start_workers=False)
    srv = LiveServer(app)
    try:
        user, key = srv.user_with_key("ivy@example.com", plan="pro")
        c = srv.client(key)
        ledger = srv.state.ledger
        ledger.grant(user["id"], 5)
        ai.answer_plan(plan_answer())
        assert c.post("/api/v1/plan", json={"prompt": PROMPT}).status_code == 201
        assert ledger.balance(user["id"]) == 3
        # a plan that never becomes valid costs nothing: charge and refund are both in the ledger
        bad = plan_answer()
        bad["pipeline"]["steps"][0]["connector"] = "nope"
        for _ in range(3):
            ai.answer_plan(bad)
        r = c.post("/api/v1/plan", json={"prompt": PROMPT})
        assert r.status_code == 422
        assert ledger.balance(user["id"]) == 3
        reasons = [line["reason"] for line in ledger.lines(user["id"])]
        assert reasons.count("plan") == 2 and reasons.count("plan_refund") == 1
        ledger.grant(user["id"], -2)
        r = c.post("/api/v1/plan", json={"prompt": PROMPT})
        assert r.status_code == 402 and "balance is 1" in r.json()["error"]["message"]
    finally:
        srv.stop()


LOOP_PROMPT = (
    "for each row of the webhook's orders, if total > 100 post to Slack, else append to Sheets"
)


def loop_plan() -> dict:
    """What the model plans for LOOP_PROMPT: a for_each over the orders with a branch."""
    notify = {
        "id": "notify", "connector": "slack", "action": "post_message", "credential": "team-slack",
        "payload": {"text": "Big order {{ item.id }}: {{ item.total }}"},
    }  # fmt: skip
    log_row = {
        "id": "log_row", "connector": "sheets", "action": "append_rows",
        "credential": "bot-sheets",
        "payload": {"spreadsheet_id": SHEET, "range": "Sheet1!A1",
                    "values": [["{{ item.id }}", "{{ item.total }}"]], "value_input_option": "RAW"},
    }  # fmt: skip
    route = {
        "id": "route", "type": "branch",
        "paths": [{"name": "big", "if": "{{ item.total > 100 }}", "steps": [notify]}],
        "default": [log_row],
    }  # fmt: skip
    return {
        "explanation": "For each order, posts big ones (over 100) to Slack and appends the "
        "others to the sheet.",
        "pipeline": {
            "levqor": 1,
            "name": "orders by size",
            "trigger": {"type": "webhook", "wait": True},
            "steps": [
                {"id": "each_order", "type": "for_each", "items": "{{ trigger.orders }}",
                 "steps": [route]},
            ],
        },
    }  # fmt: skip


def test_plan_a_loop_with_a_branch_then_run_it(server, fakes):
    ai, slack, google = fakes
    _, key = server.user_with_key("gil@example.com")
    c = server.client(key)
    for name, connector, values in (
        ("team-slack", "slack", {"webhook_url": slack.webhook_url}),
        ("bot-sheets", "sheets", google.service_account()),
    ):
        r = c.post("/api/v1/credentials", json={"name": name, "connector": connector, "values": values})
        assert r.status_code == 201, r.text

    def check(body):
        # the model is told about the constructs, with the kernel's shapes
        rf = body["response_format"]
        schema = (
            json.dumps(rf["json_schema"]["schema"])
            if rf["type"] == "json_schema"
            else body["messages"][0]["content"]
        )
        for word in ('"for_each"', '"branch"', '"paths"', '"items"', '"default"', "item.total"):
            if word not in schema and word not in body["messages"][0]["content"]:
                return f"{word} missing from what the model is sent"
        return None

    ai.check = check
    ai.answer_plan(loop_plan())
    r = c.post("/api/v1/plan", json={"prompt": LOOP_PROMPT})
    assert r.status_code == 201, r.text
    out = r.json()
    assert out["warnings"] == [] and out["planner"]["attempts"] == 1
    stored = c.get(f"/api/v1/pipelines/{out['id']}").json()["pipeline"]
    assert stored["steps"][0]["type"] == "for_each"
    assert stored["steps"][0]["steps"][0]["type"] == "branch"

    orders = [{"id": "A-1", "total": 250}, {"id": "A-2", "total": 40}, {"id": "A-3", "total": 101},
              {"id": "A-4", "total": 100}]  # fmt: skip
    hook_path = "/hooks/" + out["webhook_url"].rsplit("/hooks/", 1)[1]
    run = c.post(hook_path, json={"orders": orders})
    assert run.status_code == 200 and run.json()["status"] == "succeeded", run.text
    assert slack.messages == [{"text": "Big order A-1: 250"}, {"text": "Big order A-3: 101"}]
    assert google.rows(SHEET, "Sheet1") == [["A-2", 40], ["A-4", 100]]

    got = c.get(f"/api/v1/runs/{run.json()['run_id']}").json()
    (each,) = got["steps"]
    assert each["items"]["total"] == 4 and each["items"]["by_status"] == {"succeeded": 4}
    taken = [item["steps"][0]["children"][0]["id"] for item in each["items"]["page"]]
    assert taken == [
        "each_order[0].route.paths[0].notify",
        "each_order[1].route.default.log_row",
        "each_order[2].route.paths[0].notify",
        "each_order[3].route.default.log_row",
    ]


TRIAGE_PROMPT = (
    "when a support email arrives on the webhook, get the order number, decide whether it is a "
    "refund or a question, tell Slack about refunds and log questions in the sheet"
)


def triage_plan() -> dict:
    """What the model plans for TRIAGE_PROMPT: extract, classify, branch on the label."""
    tell = {
        "id": "tell", "connector": "slack", "action": "post_message", "credential": "team-slack",
        "payload": {"text": "Refund asked for order {{ steps.order.output.data.order_id }}"},
    }  # fmt: skip
    log_row = {
        "id": "log_row", "connector": "sheets", "action": "append_rows", "credential": "bot-sheets",
        "payload": {"spreadsheet_id": SHEET, "range": "Sheet1!A1", "value_input_option": "RAW",
                    "values": [["{{ trigger.from }}", "{{ steps.order.output.data.order_id }}"]]},
    }  # fmt: skip
    return {
        "explanation": "Reads the order number, classifies the email and routes it.",
        "pipeline": {
            "levqor": 1,
            "name": "support triage",
            "description": "Route a support email: refunds to Slack, questions to the sheet.",
            "trigger": {"type": "webhook", "wait": True},
            "input": {"fields": [
                {"name": "from", "type": "string", "description": "sender", "required": True},
                {"name": "body", "type": "string", "description": "the email", "required": True},
            ]},
            "steps": [
                {"id": "order", "connector": "openai", "action": "extract",
                 "payload": {"model": "gpt-4o-mini", "text": "{{ trigger.body }}",
                             "schema": {"type": "object", "required": ["order_id"],
                                        "properties": {"order_id": {"type": "string"}}}}},
                {"id": "kind", "connector": "openai", "action": "classify",
                 "payload": {"model": "gpt-4o-mini", "text": "{{ trigger.body }}",
                             "labels": ["refund", "question"]}},
                {"id": "route", "type": "branch",
                 "paths": [{"if": {"left": "{{ steps.kind.output.label }}", "op": "eq",
                                   "right": "refund"}, "steps": [tell]}],
                 "default": [log_row]},
            ],
        },
    }  # fmt: skip


def test_plan_model_steps_with_a_branch_on_the_label_then_run_them(server, fakes):
    ai, slack, google = fakes
    _, key = server.user_with_key("hana@example.com")
    c = server.client(key)
    for name, connector, values in (
        ("team-slack", "slack", {"webhook_url": slack.webhook_url}),
        ("bot-sheets", "sheets", google.service_account()),
    ):
        r = c.post("/api/v1/credentials", json={"name": name, "connector": connector, "values": values})
        assert r.status_code == 201, r.text
    ai.answer_plan(triage_plan())
    r = c.post("/api/v1/plan", json={"prompt": TRIAGE_PROMPT})
    assert r.status_code == 201, r.text
    out = r.json()
    # the openai steps name no credential: the operator's OPENAI_API_KEY serves, no warning
    assert out["warnings"] == [] and out["planner"]["attempts"] == 1
    stored = c.get(f"/api/v1/pipelines/{out['id']}").json()["pipeline"]
    assert [s.get("action") or s["type"] for s in stored["steps"]] == ["extract", "classify", "branch"]
    assert stored["input"]["required"] == ["from", "body"]

    hook_path = "/hooks/" + out["webhook_url"].rsplit("/hooks/", 1)[1]
    runs = {}
    for label, order, body in (
        ("refund", "A-17", "Order A-17 arrived broken, I want my money back."),
        ("question", "B-2", "Does order B-2 ship to Norway?"),
    ):
        ai.answer({"order_id": order})  # extract's answer
        ai.answer({"label": label})  # classify's
        run = c.post(hook_path, json={"from": "ada@example.com", "body": body})
        assert run.status_code == 200 and run.json()["status"] == "succeeded", run.text
        runs[label] = run.json()["run_id"]
    assert slack.messages == [{"text": "Refund asked for order A-17"}]
    assert google.rows(SHEET, "Sheet1") == [["ada@example.com", "B-2"]]
    # the model steps were asked what the plan says, and their tokens are on the run
    asked = [m["content"] for body in ai.completions[1:] for m in body["messages"] if m["role"] == "user"]
    assert any("arrived broken" in a for a in asked)
    got = c.get(f"/api/v1/runs/{runs['refund']}").json()
    kind = next(s for s in got["steps"] if s["id"] == "kind")
    assert kind["output"]["label"] == "refund" and kind["output"]["usage"]["model"] == "gpt-4o-mini"


def test_a_planned_agent_warns_about_a_tool_credential_not_added_yet(server, fakes):
    ai, slack, _ = fakes
    _, key = server.user_with_key("ike@example.com")
    c = server.client(key)
    r = c.post("/api/v1/credentials",
               json={"name": "team-slack", "connector": "slack", "values": {"webhook_url": slack.webhook_url}})  # fmt: skip
    assert r.status_code == 201, r.text
    agent = {
        "id": "helper", "type": "agent", "connector": "openai", "model": "gpt-4o-mini",
        "goal": "Look {{ trigger.email }} up in the customer sheet and tell the team on Slack.",
        "tools": [
            {"connector": "sheets", "action": "lookup_rows", "credential": "customers",
             "payload": {"spreadsheet_id": SHEET, "sheet": "Sheet1", "column": "email"}},
            {"connector": "slack", "action": "post_message", "credential": "team-slack"},
        ],
    }  # fmt: skip
    ai.answer_plan({
        "explanation": "An agent looks the customer up and tells the team.",
        "pipeline": {"levqor": 1, "name": "lookup agent", "trigger": {"type": "manual"},
                     "steps": [agent]},
    })  # fmt: skip
    r = c.post("/api/v1/plan", json={"prompt": "look the customer up and tell the team", "dry_run": True})
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["pipeline"]["steps"] == [agent]
    # the warning names the tool's connector and credential, not the agent's
    assert [(w["connector"], w["credential"]) for w in out["warnings"]] == [("sheets", "customers")]
    assert out["warnings"][0]["pointer"] == "/steps/0/tools/0/credential"
