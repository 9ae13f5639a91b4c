"""docs/ai-steps.md cannot drift: every example pipeline in it is validated against the installed
catalog and run through a real Levqor host over loopback against the fake OpenAI-compatible
server (levqor_openai.fake), the Slack fake and the Google Sheets fake, and the outcome the page
states for it (in the ``<!-- example: name {...} -->`` comment before its block) is checked.

The comment's JSON says: ``trigger`` (the run's input), ``status``, ``steps`` ({path: status}),
``outputs`` ({path: output}, objects compared by the keys given), ``output`` (the run's),
``wait`` (keys of the run's wait), ``then`` (after approving that wait) and ``bad_input`` (an
input the pipeline's schema refuses). What the model answers in each example is scripted here,
in :data:`SCRIPTS`, as a real model would answer it.
"""

from __future__ import annotations

import copy
import json
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import levqor_openai
import pytest
from e2e_support import ROOT, LiveServer, make_app
from levqor_kernel import ai as kai
from levqor_kernel.pipeline import STEP_TYPES, validate_pipeline, walk_steps
from levqor_openai.fake import FakeOpenAI
from levqor_sheets.fake import FakeGoogleSheets
from levqor_slack.fake import FakeSlack

pytestmark = [pytest.mark.backends, pytest.mark.workers]

PAGE = (ROOT / "docs" / "ai-steps.md").read_text()
MARKED = re.compile(r"<!-- example: (\w+) (\{.*?\}) -->\n```json\n(.*?)^```", re.S | re.M)
EXAMPLES: dict[str, tuple[dict, dict]] = {
    m.group(1): (json.loads(m.group(2)), json.loads(m.group(3))) for m in MARKED.finditer(PAGE)
}


def block(marker: str) -> Any:
    m = re.search(rf"<!-- {marker} -->\n```json\n(.*?)^```", PAGE, re.S | re.M)
    assert m, marker
    return json.loads(m.group(1))


KEY = "sk-test-docs-ai-steps-0123456789"
FINAL = ("succeeded", "failed", "cancelled")
CREDENTIALS = {"team-slack": "slack", "support-sheet": "sheets", "customers-sheet": "sheets"}
GRACE = ["grace@example.com", "Grace Hopper", "Pro"]

#: what the model answers, in order, for each example's run
SCRIPTS: dict[str, Any] = {
    "chat": lambda ai: ai.answer("Hello Ada! Yes, our green tea is certified organic."),
    "extract": lambda ai: ai.answer(
        {"order_id": "A-1042", "problem": "broken lid", "urgent": True}
    ),
    "classify": lambda ai: ai.answer({"label": "refund"}),
    "agent": lambda ai: (
        ai.call_tools([{"name": "sheets_lookup_rows", "arguments": {"value": "grace@example.com"}}]),
        ai.call_tools([{"name": "tell_team", "arguments": {"text": "Grace Hopper (grace@example.com): Pro plan"}}]),  # fmt: skip
        ai.answer("Grace Hopper is on the Pro plan; I told the team."),
    ),
    "mcp_tool": lambda ai: None,
}


def matches(expected: Any, actual: Any) -> bool:
    """``actual`` has what ``expected`` says (objects: the keys given; lists: item by item)."""
    if isinstance(expected, dict):
        return isinstance(actual, dict) and all(
            k in actual and matches(v, actual[k]) for k, v in expected.items()
        )
    if isinstance(expected, list):
        return (
            isinstance(actual, list)
            and len(actual) == len(expected)
            and all(matches(e, a) for e, a in zip(expected, actual, strict=True))
        )
    if isinstance(expected, bool) or isinstance(actual, bool):
        return expected is actual
    return bool(expected == actual)


class Docs:
    """A real host with the fakes the examples' credentials point at, and one user."""

    def __init__(self, tmp_path: Path) -> None:
        self.ai = FakeOpenAI(api_key=KEY).start()
        self.slack = FakeSlack().start()
        self.google = FakeGoogleSheets().start()
        self.google.add_spreadsheet("1SupportSheet", ["Questions"])
        self.google.add_spreadsheet("1CustomerSheet", ["Customers"])
        self.google.set_rows("1CustomerSheet", "Customers", [["email", "name", "plan"], GRACE])
        env = {
            "OPENAI_API_KEY": KEY,
            "OPENAI_BASE_URL": self.ai.base_url,
            "LEVQOR_SLACK_ALLOWED_HOSTS": "127.0.0.1",
            "LEVQOR_SHEETS_API_BASE": self.google.url,
        }
        self.host = LiveServer(
            make_app(tmp_path, env=env, executor={"workers": 2, "wait_sweep_seconds": 0.3})
        )
        _user, self.key = self.host.user_with_key("docs@example.com")
        self.client = self.host.client(self.key)
        values = {
            "team-slack": {"webhook_url": self.slack.webhook_url},
            "support-sheet": self.google.service_account(),
            "customers-sheet": self.google.service_account(),
        }
        for name, connector in CREDENTIALS.items():
            r = self.client.post(
                "/api/v1/credentials",
                json={"name": name, "connector": connector, "values": values[name]},
            )
            assert r.status_code == 201, r.text

    def close(self) -> None:
        self.host.stop()
        for fake in (self.ai, self.slack, self.google):
            fake.stop()

    def create(self, name: str, doc: dict) -> str:
        r = self.client.post("/api/v1/pipelines", json={"name": name, "pipeline": doc})
        assert r.status_code == 201, r.text
        return r.json()["id"]

    def start(self, pipeline_id: str, data: dict) -> str:
        r = self.client.post("/api/v1/run", json={"pipeline_id": pipeline_id, "input": data})
        assert r.status_code == 202, r.text
        return r.json()["run_id"]

    def until(self, run_id: str, statuses: tuple, timeout: float = 30.0) -> dict:
        end = time.monotonic() + timeout
        while True:
            run = self.client.get(f"/api/v1/runs/{run_id}").json()
            if run["status"] in statuses:
                return run
            assert time.monotonic() < end, f"run {run_id} stayed {run['status']}"
            time.sleep(0.05)

    def rows(self, run_id: str) -> dict[str, dict]:
        return {s["step_id"]: s for s in self.host.state.store.runs.get(None, run_id)["steps"]}

    def check(self, expect: dict, run: dict) -> dict[str, dict]:
        """The run's status, step statuses, outputs and output as the page states them."""
        assert run["status"] == expect["status"], (run["status"], run.get("error"))
        rows = self.rows(run["id"])
        for path, want in expect.get("steps", {}).items():
            assert rows[path]["status"] == want, (path, rows[path]["status"])
        for path, want in expect.get("outputs", {}).items():
            assert matches(want, rows[path]["output"]), (path, rows[path]["output"])
        for key in ("output", "wait"):
            if key in expect:
                assert matches(expect[key], run.get(key)), (key, run.get(key))
        return rows


@pytest.fixture
def docs(tmp_path):
    d = Docs(tmp_path)
    yield d
    d.close()


def run_example(docs: Docs, name: str) -> tuple[dict, dict, dict]:
    expect, doc = EXAMPLES[name]
    SCRIPTS[name](docs.ai)
    rid = docs.start(docs.create(name, doc), expect["trigger"])
    run = docs.until(rid, (*FINAL, "waiting"))
    return expect, run, docs.check(expect, run)


# ---------------------------------------------------------------------------- the page
def test_the_page_has_an_example_per_action_and_the_agent_and_each_validates():
    catalog = levqor_openai_catalog()
    actions = {a for a, act in catalog.connectors["openai"].actions.items() if not act.hidden}
    assert actions == {"chat", "extract", "classify"}
    used, kinds = set(), set()
    for name, (_expect, doc) in EXAMPLES.items():
        assert validate_pipeline(doc, catalog, credentials=CREDENTIALS) == [], name
        for step, _depth in walk_steps(doc["steps"]):
            kinds.add(step.get("type") or "action")
            if step.get("connector") == "openai" and step.get("type") is None:
                used.add(step["action"])
    assert used == actions and {"agent", "branch"} <= kinds <= set(STEP_TYPES)
    assert set(EXAMPLES) == set(SCRIPTS)


def levqor_openai_catalog():
    from levqor_kernel.plugins import make_plugin_manager

    return make_plugin_manager(schema_cache_dir=None).catalog


def test_the_credential_example_is_accepted_and_its_key_never_shown(docs):
    body = block("credential example")
    r = docs.client.post("/api/v1/credentials", json=body)
    assert r.status_code == 201, r.text
    listed = docs.client.get("/api/v1/credentials").text
    assert body["values"]["api_key"] not in listed and body["values"]["api_key"] not in r.text


def test_the_rates_example_prices_as_the_page_says(tmp_path):
    rates = block("rates example")
    step = {"model": "gpt-4o-mini", "input_tokens": 1000, "output_tokens": 500}
    assert kai.price_tokens(step, rates) == 1
    assert "= 0.45, rounded up to 1 credit" in PAGE
    assert kai.price_tokens({**step, "model": "llama3.1:8b"}, rates) == 0
    # the operator's setting, as the page writes it, in a host with billing on: the chat
    # step costs its price (1) plus 1 credit of tokens, on llama3.1:8b its price alone
    with FakeOpenAI(api_key=KEY) as fake:
        env = {
            "OPENAI_API_KEY": KEY,
            "OPENAI_BASE_URL": fake.base_url,
            "LEVQOR_MODEL_RATES": json.dumps(rates),
            "LEVQOR_BILLING": "local",
            "LEVQOR_PLANS": '{"pro": {"monthly_credits": 0}}',
        }
        srv = LiveServer(make_app(tmp_path, env=env, executor={"workers": 1}))
        try:
            user, key = srv.user_with_key("payer@example.com", plan="pro")
            c = srv.client(key)
            srv.state.ledger.grant(user["id"], 10)
            doc = copy.deepcopy(EXAMPLES["chat"][1])  # the page's example stays as written
            pid = c.post("/api/v1/pipelines", json={"name": "priced", "pipeline": doc}).json()["id"]
            for model, balance in (("gpt-4o-mini", 8), ("llama3.1:8b", 7)):
                fake.answer("Hello!", usage=(1000, 500))
                doc["steps"][0]["payload"]["model"] = model
                assert c.put(f"/api/v1/pipelines/{pid}", json={"pipeline": doc}).status_code == 200
                r = c.post("/api/v1/run?wait=30", json={"pipeline_id": pid, "input": {"name": "Ada", "message": "hi"}})  # fmt: skip
                assert r.status_code == 200 and r.json()["status"] == "succeeded", r.text
                assert srv.state.ledger.balance(user["id"]) == balance, model
        finally:
            srv.stop()


def test_every_error_code_the_page_lists_is_one_levqor_raises():
    table = PAGE.split("## Errors\n", 1)[1]
    codes = {c for row in table.splitlines() if row.startswith("| `") for c in re.findall(r"`(\w+)`", row.split("|")[1])}
    assert {"not_configured", "rate_limited", "context_length_exceeded", "content_policy",
            "invalid_answer", "max_iterations", "invalid_tool_call", "rejected"} <= codes  # fmt: skip
    import levqor_kernel

    sources = "".join(
        p.read_text()
        for pkg in (levqor_openai, levqor_kernel)
        for p in Path(pkg.__file__).parent.glob("*.py")
    )
    for code in codes:
        assert f'"{code}"' in sources, code


# ---------------------------------------------------------------------------- model actions
def test_the_model_list_comes_from_the_servers_models(docs):
    docs.ai.models = ["gpt-4o-mini", "gpt-4o"]
    r = docs.client.post("/api/v1/connectors/openai/actions/chat/options/model", json={})
    assert r.status_code == 200, r.text
    assert [o["value"] for o in r.json()["options"]] == ["gpt-4o", "gpt-4o-mini"]


def test_chat(docs):
    expect, run, _rows = run_example(docs, "chat")
    # the tokens are charted per day, billing off as here
    usage = docs.client.get("/api/v1/analytics/dashboard?days=1").json()["usage"]
    assert usage["totals"]["input_tokens"] == 100 and usage["totals"]["output_tokens"] == 50
    assert usage["totals"]["tokens"] == 150 and usage["series"][-1]["tokens"] == 150
    (body,) = docs.ai.completions
    _expect, doc = EXAMPLES["chat"]
    payload = doc["steps"][0]["payload"]
    assert body["messages"] == [
        {"role": "system", "content": payload["system"]},
        {"role": "user", "content": "Reply to Ada, who asks: Is the green tea organic?"},
    ]
    assert body["model"] == "gpt-4o-mini" and body["temperature"] == 0.3
    assert 200 in (body.get("max_tokens"), body.get("max_completion_tokens"))


def test_extract(docs):
    run_example(docs, "extract")
    (body,) = docs.ai.completions
    rf = body["response_format"]
    assert rf["type"] == "json_schema" and rf["json_schema"]["strict"] is True
    assert "broken lid" in json.dumps(body["messages"])
    assert docs.slack.messages == [{"text": "Urgent: order A-1042 (broken lid)"}]


def test_classify_and_the_branch_on_its_label(docs):
    run_example(docs, "classify")
    assert docs.slack.messages == [{"text": "Refund asked by ada@example.com"}]
    # a question takes the other path
    expect, doc = EXAMPLES["classify"]
    docs.ai.answer({"label": "question"})
    rid = docs.start(docs.create("classify again", doc), {**expect["trigger"], "body": "Is it in stock?"})
    run = docs.until(rid, FINAL)
    assert run["status"] == "succeeded", run
    rows = docs.rows(rid)
    assert rows["route"]["output"]["name"] == "questions"
    assert rows["route.paths[1].log"]["status"] == "succeeded"
    assert docs.google.rows("1SupportSheet", "Questions") == [["ada@example.com", "Is it in stock?"]]
    assert len(docs.slack.messages) == 1


# ---------------------------------------------------------------------------- the agent
def test_the_agent_reads_at_once_waits_for_approval_to_write_and_resumes_without_repeating(docs):
    expect, run, _rows = run_example(docs, "agent")
    reads = len([r for r in docs.google.requests if r.method == "GET" and "/values/" in r.path])
    assert reads and docs.slack.messages == []
    assert "tell_team" in run["wait"]["message"]
    # what the model was offered: the tools without the fixed fields, no credential
    first = docs.ai.completions[0]
    tools = {t["function"]["name"]: t["function"] for t in first["tools"]}
    assert set(tools) == {"sheets_lookup_rows", "tell_team"}
    assert tools["tell_team"]["description"] == "Post a message to the support channel"
    offered = tools["sheets_lookup_rows"]["parameters"]["properties"]
    assert "value" in offered and not {"spreadsheet_id", "sheet", "column"} & set(offered)
    seen = json.dumps(docs.ai.completions)
    assert docs.slack.webhook_url not in seen and "PRIVATE KEY" not in seen

    r = docs.client.post(f"/api/v1/runs/{run['id']}/approve", json={"comment": "go"})
    assert r.status_code == 200, r.text
    run = docs.until(run["id"], FINAL)
    then = expect["then"]
    assert run["status"] == then["status"], run
    rows = docs.rows(run["id"])
    assert matches(then["output"], rows["helper"]["output"])
    assert docs.slack.messages == [{"text": "Grace Hopper (grace@example.com): Pro plan"}]
    # the lookup was not made again on resume
    assert len([r for r in docs.google.requests if r.method == "GET" and "/values/" in r.path]) == reads
    assert len(docs.ai.completions) == 3  # nor were the turns already answered
    # the trace and the paths the page names
    for path in ("helper.turns[0]", "helper.turns[0].calls[0]", "helper.turns[1].calls[0]",
                 "helper.turns[1].calls[0].approval", "helper.turns[2]"):  # fmt: skip
        assert rows[path]["status"] == "succeeded", path
    out = rows["helper"]["output"]
    assert [(t["tool"], t["path"], t["status"]) for t in out["trace"]] == [
        ("sheets_lookup_rows", "helper.turns[0].calls[0]", "succeeded"),
        ("tell_team", "helper.turns[1].calls[0]", "succeeded"),
    ]
    assert out["usage"]["total_tokens"] == 450 and out["usage"]["by_model"]["gpt-4o-mini"]
    # the run's tokens: its three turns
    assert run["usage"]["total_tokens"] == 450 and set(run["usage"]["by_model"]) == {"gpt-4o-mini"}
    assert rows["helper.turns[0]"]["usage"]["input_tokens"] == 100
    assert out["trace"][0]["output"]["count"] == 1


# ---------------------------------------------------------------------------- MCP
def over_mcp(docs: Docs, fn) -> Any:
    """``fn(session)`` in a session of the MCP SDK's own client with /mcp of the docs' host."""
    import anyio
    import httpx2
    from mcp import ClientSession
    from mcp.client.streamable_http import streamable_http_client

    async def go() -> Any:
        headers = {"Authorization": f"Bearer {docs.key}"}
        async with httpx2.AsyncClient(headers=headers, timeout=60) as http:
            async with streamable_http_client(f"{docs.host.url}/mcp", http_client=http) as (r, w):
                async with ClientSession(r, w) as session:
                    await session.initialize()
                    return await fn(session)

    return anyio.run(go)


def test_the_mcp_tool_example_is_a_tool_an_ai_client_lists_and_calls(docs):
    expect, doc = EXAMPLES["mcp_tool"]
    pid = docs.create(doc["name"], doc)
    run = docs.until(docs.start(pid, expect["trigger"]), FINAL)
    docs.check(expect, run)
    assert docs.rows(run["id"])["find"]["output"]["rows"][0]["name"] == "Grace Hopper"
    async def call(session):
        listed = await session.list_tools()
        (tool,) = [t for t in listed.tools if t.title == doc["name"]]
        good = await session.call_tool(tool.name, expect["trigger"])
        bad = await session.call_tool(tool.name, expect["bad_input"])
        return tool, good, bad

    tool, good, bad = over_mcp(docs, call)
    assert tool.name.startswith("find_a_customer_") and tool.description == doc["description"]
    assert tool.input_schema == doc["input"]
    assert good.is_error is False
    mcp_run = docs.client.get(f"/api/v1/runs/{good.structured_content['run_id']}").json()
    assert mcp_run["trigger"] == "mcp" and mcp_run["status"] == "succeeded"
    assert good.structured_content["output"]["rows"][0]["name"] == "Grace Hopper"
    assert bad.is_error is True and bad.structured_content["code"] == "invalid_input"
    # nor through the API
    r = docs.client.post("/api/v1/run", json={"pipeline_id": pid, "input": expect["bad_input"]})
    assert r.status_code == 422 and r.json()["error"]["code"] == "invalid_input", r.text


def test_the_claude_desktop_configuration_starts_levqor_mcp_serve():
    m = re.search(r"```json\n(\{\"mcpServers\".*?)^```", PAGE, re.S | re.M)
    assert m
    server = json.loads(m.group(1))["mcpServers"]["levqor"]
    assert server["command"] == "levqor" and set(server["env"]) == {"LEVQOR_API_KEY"}
    cli = subprocess.run(
        [sys.executable, "-m", "levqor_host.cli", *server["args"], "--help"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert cli.returncode == 0, cli.stderr
    assert "LEVQOR_API_KEY" in cli.stdout
