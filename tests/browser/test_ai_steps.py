"""AI steps in Chromium against the fake OpenAI server: a chat step whose model is chosen from
the server's /models (and a free text field when the list cannot be loaded), an agent step with
two tools built by clicking and saved valid, an agent run's trace on the run page with the
approval of a write tool decided there, and tokens on the run page and the usage page.

Waits are on states (an element's attribute, a run's status), never on the clock."""

from __future__ import annotations

import re

import pytest
from browser_support import OPENAI_KEY, api_session, shot, sign_in
from trigger_support import wait_for

try:
    from playwright.sync_api import expect
except ImportError:  # the chromium fixture skips (or fails in CI) and says why
    expect = None

pytestmark = [pytest.mark.services, pytest.mark.timeout(240)]


def choose(page, *, kind: str | None = None, connector: str = "", action: str = "") -> None:
    dialog = page.locator("dialog.chooser")
    expect(dialog).to_be_visible()
    if kind:
        dialog.locator(f'button[data-kind="{kind}"]').click()
    else:
        dialog.get_by_label("Search actions").fill(action)
        dialog.locator(f'button[data-connector="{connector}"][data-action="{action}"]').click()
    expect(dialog).to_have_count(0)


def add_at_end(page, list_pointer: str, **what) -> None:
    page.locator(f'[data-list="{list_pointer}"] > .flow-end button').click()
    choose(page, **what)


def field(card, pointer: str):
    return card.locator(f'.field[data-pointer="{pointer}"]')


def saved_steps(dash, page) -> list[dict]:
    expect(page.locator("#save-status")).to_have_text(re.compile(r"saved as version \d+"))
    page.wait_for_url(re.compile(r"/pipelines/pl_"))
    s, _ = api_session(dash)
    pid = page.url.rsplit("/", 1)[-1]
    return s.get(f"{dash.url}/api/v1/pipelines/{pid}").json()["pipeline"]["steps"]


def test_a_chat_step_takes_its_model_from_the_servers_list(page, dash):
    s, headers = api_session(dash)
    r = s.post(dash.url + "/api/v1/credentials", headers=headers, json={
        "name": "stale-ai", "connector": "openai",
        "values": {"api_key": "sk-revoked-000000000000", "base_url": dash.ai.base_url}})  # fmt: skip
    assert r.status_code == 201, r.text
    sign_in(page, dash, "/pipelines/new")
    page.get_by_label("Name", exact=True).fill("answer with a model")
    # the agent's turn action is hidden: the chooser offers the three model actions only
    page.locator('[data-list="/steps"] > .flow-end button').click()
    dialog = page.locator("dialog.chooser")
    dialog.get_by_label("Search actions").fill("openai")
    offered = dialog.locator('button.chooser-action[data-connector="openai"]')
    expect(offered).to_have_count(3)
    assert sorted(offered.evaluate_all("els => els.map((e) => e.dataset.action)")) == ["chat", "classify", "extract"]
    dialog.locator('button[data-connector="openai"][data-action="chat"]').click()

    card = page.locator('.step-card[data-step-id="chat"]')
    model = field(card, "/steps/0/payload/model")
    # no credential: the operator's key; the list is the fake server's /models
    expect(model).to_have_attribute("data-options", "ready")
    select = model.locator("select")
    labels = select.locator("option").evaluate_all("els => els.map((e) => e.textContent)")
    assert labels[1:-1] == sorted(dash.ai.models)
    select.select_option(label="gpt-4o-mini")
    expect(model.locator("input[type=text], textarea")).to_be_hidden()
    field(card, "/steps/0/payload/prompt").locator("textarea").fill("Greet {{ trigger.name }} in one line.")

    # a credential whose key the server refuses: the text field stays, and says why
    card.get_by_label("Credential").select_option("stale-ai")
    model = field(page.locator('.step-card[data-step-id="chat"]'), "/steps/0/payload/model")
    expect(model).to_have_attribute("data-options", "failed")
    expect(model.locator(".options-note")).to_contain_text("Could not load")
    expect(model.locator(".options-note")).to_contain_text("Incorrect API key")
    expect(model.locator("input[type=text], textarea")).to_have_value("gpt-4o-mini")
    assert "sk-revoked-000000000000" not in page.content()
    # back to no credential: the list again, the chosen model selected
    page.locator('.step-card[data-step-id="chat"]').get_by_label("Credential").select_option("")
    model = field(page.locator('.step-card[data-step-id="chat"]'), "/steps/0/payload/model")
    expect(model).to_have_attribute("data-options", "ready")
    expect(model.locator("select option:checked")).to_have_text("gpt-4o-mini")
    shot(page, "60-ai-chat-model-list")

    # classify's labels are rows: a label alone is a string, with a description an object
    add_at_end(page, "/steps", connector="openai", action="classify")
    sort = page.locator('.step-card[data-step-id="classify"]')
    expect(field(sort, "/steps/1/payload/model")).to_have_attribute("data-options", "ready")
    field(sort, "/steps/1/payload/model").locator("select").select_option(label="gpt-4o")
    field(sort, "/steps/1/payload/text").locator("textarea").fill("{{ steps.chat.output.text }}")
    labels = field(sort, "/steps/1/payload/labels")
    labels.get_by_label("Labels 1 label").fill("friendly")
    labels.get_by_role("button", name="Add a row").click()
    labels.get_by_label("Labels 2 label").fill("rude")
    labels.get_by_label("Labels 2 description").fill("anything impolite")

    page.get_by_role("button", name="Save").click()
    steps = saved_steps(dash, page)
    assert steps == [
        {"id": "chat", "connector": "openai", "action": "chat",
         "payload": {"model": "gpt-4o-mini", "prompt": "Greet {{ trigger.name }} in one line."}},
        {"id": "classify", "connector": "openai", "action": "classify",
         "payload": {"model": "gpt-4o", "text": "{{ steps.chat.output.text }}",
                     "labels": ["friendly", {"label": "rude", "description": "anything impolite"}]}},
    ]  # fmt: skip
    assert any(r.path == "/v1/models" and r.header("Authorization") == f"Bearer {OPENAI_KEY}" for r in dash.ai.requests)


def test_an_agent_step_with_two_tools_is_built_by_clicking_and_saved_valid(page, dash):
    s, headers = api_session(dash)
    r = s.post(dash.url + "/api/v1/credentials", headers=headers, json={
        "name": "agent-slack", "connector": "slack", "values": {"webhook_url": dash.slack.webhook_url}})  # fmt: skip
    assert r.status_code == 201, r.text
    sign_in(page, dash, "/pipelines/new")
    page.get_by_label("Name", exact=True).fill("an agent")
    add_at_end(page, "/steps", kind="agent")
    card = page.locator('.step-card[data-step-id="agent"]')
    expect(card.locator("h3 .kind")).to_have_text("Agent")
    model = field(card, "/steps/0/model")
    expect(model).to_have_attribute("data-options", "ready")
    model.locator("select").select_option(label="gpt-4o")
    field(card, "/steps/0/goal").locator("textarea").fill("Shape {{ trigger.topic }} and tell the team.")
    field(card, "/steps/0/max_iterations").locator("input").fill("5")

    # tool 1: core.transform, the model sets its value
    card.get_by_role("button", name="Add a tool to agent").click()
    card = page.locator('.step-card[data-step-id="agent"]')
    tool = card.locator('.agent-tool[data-pointer="/steps/0/tools/0"]')
    tool.get_by_label("Connector of tool 1").select_option(label="Core")
    tool = card.locator('.agent-tool[data-pointer="/steps/0/tools/0"]')
    tool.get_by_label("Action of tool 1").select_option("transform")
    tool = card.locator('.agent-tool[data-pointer="/steps/0/tools/0"]')
    tool.get_by_text("Name and description for the model (optional)").click()
    tool.get_by_label("Tool name").fill("shape_topic")
    # tool 2: Slack's post_message with its credential, never asking for approval
    card.get_by_role("button", name="Add a tool to agent").click()
    tool2 = page.locator('.agent-tool[data-pointer="/steps/0/tools/1"]')
    tool2.get_by_label("Connector of tool 2").select_option("slack")
    tool2 = page.locator('.agent-tool[data-pointer="/steps/0/tools/1"]')
    tool2.get_by_label("Action of tool 2").select_option("post_message")
    tool2 = page.locator('.agent-tool[data-pointer="/steps/0/tools/1"]')
    expect(tool2).to_contain_text("(writes upstream)")
    tool2.get_by_label("Credential").select_option("agent-slack")
    tool2.get_by_label("Approval before a call").select_option("never")
    # a third tool added and removed again
    page.get_by_role("button", name="Add a tool to agent").click()
    expect(page.locator(".agent-tool")).to_have_count(3)
    page.get_by_role("button", name="Remove tool 3 of agent").click()
    expect(page.locator(".agent-tool")).to_have_count(2)
    shot(page, "61-ai-agent-form")

    page.get_by_role("button", name="Save").click()
    steps = saved_steps(dash, page)
    assert steps == [{
        "id": "agent", "type": "agent", "connector": "openai", "model": "gpt-4o",
        "goal": "Shape {{ trigger.topic }} and tell the team.", "max_iterations": 5,
        "tools": [{"connector": "core", "action": "transform", "name": "shape_topic"},
                  {"connector": "slack", "action": "post_message", "credential": "agent-slack", "approval": False}],
    }]  # fmt: skip

    # a problem the API finds lands on the agent's field
    card = page.locator('.step-card[data-step-id="agent"]')
    field(card, "/steps/0/goal").locator("textarea").fill("")
    page.get_by_role("button", name="Save").click()
    expect(field(card, "/steps/0/goal").locator(".field-error")).to_be_visible()


def day_tokens(s, dash) -> int:
    r = s.get(dash.url + "/api/v1/analytics/dashboard?days=30")
    assert r.status_code == 200, r.text
    return r.json()["usage"]["totals"]["tokens"]


AGENT_DOC = [
    {
        "id": "helper", "type": "agent", "connector": "openai", "model": "gpt-4o-mini",
        "goal": "Tell the team about {{ trigger.topic }}.",
        "tools": [
            {"connector": "core", "action": "transform"},
            {"connector": "slack", "action": "post_message", "credential": "trace-slack"},
        ],
    }
]  # fmt: skip


def test_an_agent_runs_trace_shows_each_turn_and_call_and_its_approval_is_decided_there(page, dash):
    s, headers = api_session(dash)
    r = s.post(dash.url + "/api/v1/credentials", headers=headers, json={
        "name": "trace-slack", "connector": "slack", "values": {"webhook_url": dash.slack.webhook_url}})  # fmt: skip
    assert r.status_code == 201, r.text
    doc = {"levqor": 1, "trigger": {"type": "manual"}, "steps": AGENT_DOC}
    r = s.post(dash.url + "/api/v1/pipelines", headers=headers, json={"name": "agent trace", "pipeline": doc})
    assert r.status_code == 201, r.text
    pid = r.json()["id"]
    dash.ai.reset()
    dash.ai.call_tools([{"name": "core_transform", "arguments": {"value": {"topic": "billing"}}}], usage=(120, 30))
    dash.ai.call_tools([{"name": "slack_post_message", "arguments": {"text": "Billing moved to Fridays"}}], usage=(200, 40))
    dash.ai.answer("Told the team.", usage=(260, 10))
    tokens_before = day_tokens(s, dash)
    posts = lambda: [r for r in dash.slack.requests if r.method == "POST" and r.path == dash.slack.hook_path]  # noqa: E731
    sent_before = len(posts())
    r = s.post(dash.url + "/api/v1/run", headers=headers, json={"pipeline_id": pid, "input": {"topic": "billing"}})
    assert r.status_code in (200, 201, 202), r.text
    run_id = r.json().get("run_id") or r.json()["id"]

    sign_in(page, dash, f"/runs/{run_id}")
    expect(page.locator("#run-status")).to_have_attribute("data-run-status", "waiting")
    trace = page.locator('.agent-trace[data-trace="helper"]')
    expect(trace.locator(".agent-turn")).to_have_count(2)
    turn0 = trace.locator('[data-step="helper.turns[0]"]')
    expect(turn0).to_have_attribute("data-status", "succeeded")
    expect(turn0.locator(":scope > dl .usage-tokens")).to_have_text("120 in + 30 out = 150 tokens")
    call0 = turn0.locator('[data-step="helper.turns[0].calls[0]"]')
    expect(call0).to_have_attribute("data-status", "succeeded")
    expect(call0).to_contain_text("tool call: core.transform")
    expect(call0).to_contain_text("billing")
    # the write tool waits for approval: its buttons sit in the trace
    approval = trace.locator('[data-step="helper.turns[1].calls[0].approval"]')
    expect(approval).to_have_attribute("data-status", "waiting")
    assert len(posts()) == sent_before  # nothing sent before the approval
    shot(page, "62-ai-agent-trace-waiting")
    approval.get_by_role("button", name="Approve the call of slack_post_message").click()

    expect(page.locator("#run-status")).to_have_attribute("data-run-status", "succeeded")
    call1 = trace.locator('[data-step="helper.turns[1].calls[0]"]')
    expect(call1).to_have_attribute("data-status", "succeeded")
    expect(trace.locator(".agent-turn")).to_have_count(3)
    expect(page.locator('[data-step="helper"] .agent-answer')).to_have_text("Told the team.")
    expect(page.locator("#run-tokens")).to_have_text("580 in + 80 out = 660 tokens")
    assert len(posts()) == sent_before + 1
    shot(page, "63-ai-agent-trace-done")
    # every turn counts in the day's tokens, those after the approval too
    wait_for(lambda: day_tokens(s, dash) == tokens_before + 660, what="the agent run's 660 tokens in the usage totals")

    # another run: the call is rejected from the trace, so it is never made and the model is told
    dash.ai.reset()
    dash.ai.call_tools([{"name": "slack_post_message", "arguments": {"text": "Billing is free now"}}], usage=(90, 20))
    dash.ai.answer("The team was not told.", usage=(130, 8))
    r = s.post(dash.url + "/api/v1/run", headers=headers, json={"pipeline_id": pid, "input": {"topic": "prices"}})
    assert r.status_code in (200, 201, 202), r.text
    run_id = r.json().get("run_id") or r.json()["id"]
    page.goto(f"/runs/{run_id}")
    trace = page.locator('.agent-trace[data-trace="helper"]')
    approval = trace.locator('[data-step="helper.turns[0].calls[0].approval"]')
    expect(approval).to_have_attribute("data-status", "waiting")
    approval.get_by_role("button", name="Reject the call of slack_post_message").click()
    expect(page.locator("#run-status")).to_have_attribute("data-run-status", "succeeded")
    call = trace.locator('[data-step="helper.turns[0].calls[0]"]')
    expect(call).to_have_attribute("data-status", "failed")
    expect(call.locator(":scope > .step-error")).to_contain_text("not approved")
    expect(page.locator('[data-step="helper"] .agent-answer')).to_have_text("The team was not told.")
    assert len(posts()) == sent_before + 1  # nothing more was sent
    tool_results = [m for m in dash.ai.completions[-1]["messages"] if m["role"] == "tool"]
    assert "reject" in tool_results[-1]["content"].lower() or "declin" in tool_results[-1]["content"].lower()




def test_the_usage_page_counts_the_tokens_of_the_day(page, dash):
    s, headers = api_session(dash)
    doc = {"levqor": 1, "trigger": {"type": "manual"}, "steps": [
        {"id": "ask", "connector": "openai", "action": "chat",
         "payload": {"model": "gpt-4o-mini", "prompt": "Say hi to {{ trigger.name }}."}}]}  # fmt: skip
    r = s.post(dash.url + "/api/v1/pipelines", headers=headers, json={"name": "say hi", "pipeline": doc})
    assert r.status_code == 201, r.text
    before = day_tokens(s, dash)
    dash.ai.reset()
    dash.ai.answer("Hi Ada!", usage=(41, 7))
    r = s.post(dash.url + "/api/v1/run?wait=30", headers=headers, json={"pipeline_id": r.json()["id"], "input": {"name": "Ada"}})
    assert r.status_code in (200, 201), r.text
    assert r.json()["status"] == "succeeded", r.text
    wait_for(lambda: day_tokens(s, dash) == before + 48, what="the run's tokens in the usage totals")
    sign_in(page, dash, "/usage")
    expect(page.locator("body")).to_have_attribute("data-usage", "ready")
    expect(page.locator("#stat-tokens")).to_have_attribute("data-tokens", str(before + 48))
    expect(page.locator("#chart-tokens")).to_have_attribute("data-total", str(before + 48))
    expect(page.locator("#chart-tokens")).to_have_attribute("height", re.compile(r"^\d+$"))  # Chart.js drew it
    shot(page, "64-ai-usage-tokens")

    run = s.get(f"{dash.url}/api/v1/runs/{r.json()['id']}").json()
    page.goto("/runs")
    expect(page.locator(f'#runs-table tr[data-run="{run["id"]}"] td[data-label="Tokens"]')).to_have_text("48")
    page.goto(f"/runs/{run['id']}")
    expect(page.locator("#run-tokens")).to_have_text("41 in + 7 out = 48 tokens")
    expect(page.locator('[data-step="ask"] .usage-tokens')).to_have_text("41 in + 7 out = 48 tokens")


def test_an_mcp_step_lists_the_servers_tools_and_asks_for_the_chosen_tools_arguments(page, dash):
    from levqor_mcp.client_fake import DEFAULT_TOKEN, WeatherServer

    with WeatherServer() as weather:
        s, headers = api_session(dash)
        r = s.post(dash.url + "/api/v1/credentials", headers=headers, json={
            "name": "weather", "connector": "mcp", "values": {"url": weather.url, "token": DEFAULT_TOKEN}})  # fmt: skip
        assert r.status_code == 201, r.text
        sign_in(page, dash, "/pipelines/new")
        page.get_by_label("Name", exact=True).fill("ask the weather server")
        add_at_end(page, "/steps", connector="mcp", action="call_tool")
        card = page.locator('.step-card[data-step-id="call_tool"]')
        card.get_by_label("Credential").select_option("weather")
        card = page.locator('.step-card[data-step-id="call_tool"]')
        tool = field(card, "/steps/0/payload/tool")
        expect(tool).to_have_attribute("data-options", "ready")
        tool.locator("select").select_option(label="Weather forecast (get_forecast)")
        # the arguments are a form made from the tool's input schema, not a JSON box
        args = card.locator('fieldset.choice-schema[data-pointer="/steps/0/payload/arguments"]')
        expect(args).to_be_visible()
        expect(card.locator('.field[data-pointer="/steps/0/payload/arguments"]')).to_be_hidden()
        args.locator('.field[data-pointer="/steps/0/payload/arguments/city"] :is(input, textarea)').fill("Oslo")
        args.locator('.field[data-pointer="/steps/0/payload/arguments/days"] input').fill("3")
        shot(page, "65-ai-mcp-tool-form")
        page.get_by_role("button", name="Save").click()
        steps = saved_steps(dash, page)
        assert steps == [{"id": "call_tool", "connector": "mcp", "action": "call_tool", "credential": "weather",
                          "payload": {"tool": "get_forecast", "arguments": {"city": "Oslo", "days": 3}}}]  # fmt: skip
        assert DEFAULT_TOKEN not in page.content()

        # reopened, the chosen tool's form shows what was saved
        page.reload()
        card = page.locator('.step-card[data-step-id="call_tool"]')
        expect(field(card, "/steps/0/payload/tool")).to_have_attribute("data-options", "ready")
        city = card.locator('fieldset.choice-schema .field[data-pointer="/steps/0/payload/arguments/city"] :is(input, textarea)')
        expect(city).to_have_value("Oslo")
        page.get_by_role("button", name="Run now").click()
        page.wait_for_url(re.compile(r"/runs/run_"))
        expect(page.locator("#run-status")).to_have_attribute("data-run-status", "succeeded")
        assert ("get_forecast", {"city": "Oslo", "days": 3}) in weather.calls
