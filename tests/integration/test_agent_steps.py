"""The agent step end to end: a real host over loopback, levqor-openai's turn action against
FakeOpenAI scripting tool calls, and two real connectors against their fakes (levqor-sheets
reads, levqor-slack writes): both tools used, an approval before the write through the host's
approval API, a declined write the model is told about, token usage recorded and billed, and a run whose
worker is killed mid-agent resuming without repeating a tool call."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import pytest
from e2e_support import LiveServer, make_app
from levqor_openai.fake import FakeOpenAI
from levqor_sheets.fake import FakeGoogleSheets
from levqor_slack.fake import FakeSlack
from test_worker_crash import worker_env

# scripts/test-backends runs this file again on PostgreSQL
pytestmark = [pytest.mark.backends, pytest.mark.workers]

KEY = "sk-test-agent-0123456789abcdef"
SHEET = "1OwnersSheet0123456789"


@pytest.fixture
def fakes():
    with FakeOpenAI(api_key=KEY) as ai, FakeSlack() as slack, FakeGoogleSheets() as google:
        google.add_spreadsheet(SHEET, ["Owners"])
        google.set_rows(SHEET, "Owners", [
            ["Topic", "Owner", "Email"],
            ["billing", "Ada", "ada@example.com"],
            ["search", "Lin", "lin@example.com"],
        ])  # fmt: skip
        yield ai, slack, google


def env_for(google: FakeGoogleSheets) -> dict[str, str]:
    return {"LEVQOR_SLACK_ALLOWED_HOSTS": "127.0.0.1", "LEVQOR_SHEETS_API_BASE": google.url}


def agent_doc(**over) -> dict:
    step = {
        "id": "helper",
        "type": "agent",
        "connector": "openai",
        "credential": "oa",
        "model": "gpt-4o-mini",
        "system": "You route questions to the owner of their topic.",
        "goal": "Find who owns {{ trigger.topic }} and tell the team channel.",
        "tools": [
            {"connector": "sheets", "action": "lookup_rows", "credential": "g",
             "payload": {"spreadsheet_id": SHEET, "sheet": "Owners", "column": "Topic"}},
            {"connector": "slack", "action": "post_message", "credential": "s"},
        ],
        **over,
    }  # fmt: skip
    return {"levqor": 1, "name": "route", "trigger": {"type": "manual"}, "steps": [step]}


def add_credentials(c, ai: FakeOpenAI, slack: FakeSlack, google: FakeGoogleSheets) -> None:
    for name, connector, values in (
        ("oa", "openai", {"api_key": KEY, "base_url": ai.base_url}),
        ("g", "sheets", google.service_account()),
        ("s", "slack", {"webhook_url": slack.webhook_url}),
    ):
        r = c.post("/api/v1/credentials", json={"name": name, "connector": connector, "values": values})
        assert r.status_code == 201, r.text


def sheet_reads(google: FakeGoogleSheets) -> int:
    """The requests the Sheets API received (a lookup reads the header, then the rows)."""
    return sum(1 for r in google.requests if r.path.startswith("/v4/spreadsheets/"))


def by_path(steps: list[dict]) -> dict[str, dict]:
    out: dict[str, dict] = {}
    for s in steps:
        out[s["id"]] = s
        out.update(by_path(s.get("children") or []))
    return out


def wait_status(c, run_id: str, want: tuple[str, ...], timeout: float = 60.0) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        run = c.get(f"/api/v1/runs/{run_id}").json()
        if run["status"] in want or time.monotonic() > deadline:
            return run
        time.sleep(0.1)


@pytest.fixture
def server(tmp_path, fakes):
    _ai, _slack, google = fakes
    srv = LiveServer(make_app(tmp_path, env=env_for(google)))
    yield srv
    srv.stop()


def test_the_agent_reads_a_sheet_and_posts_to_slack_once_approved(server, fakes):
    ai, slack, google = fakes
    _, key = server.user_with_key("ops@example.com")
    c = server.client(key)
    add_credentials(c, ai, slack, google)
    r = c.post("/api/v1/pipelines", json={"pipeline": agent_doc(approval_timeout=3600)})
    assert r.status_code == 201, r.text
    pid = r.json()["id"]

    ai.call_tools([{"name": "sheets_lookup_rows", "arguments": {"value": "billing"}}], usage=(210, 18))
    ai.call_tools([{"name": "slack_post_message", "arguments": {"text": "Billing questions go to Ada"}}],
                  usage=(320, 22))
    ai.answer("Ada owns billing; I told the channel.", usage=(400, 12))
    r = c.post("/api/v1/run?wait=30", json={"pipeline_id": pid, "input": {"topic": "billing"}})
    assert r.status_code == 202, r.text
    run = wait_status(c, r.json()["id"], ("waiting", "failed", "succeeded"))
    assert run["status"] == "waiting", run
    rid = run["id"]
    apath = "helper.turns[1].calls[0].approval"
    assert run["wait"]["kind"] == "approval" and run["wait"]["step"] == apath
    assert "slack_post_message" in run["wait"]["message"] and "Billing questions go to Ada" in run["wait"]["message"]
    # the read ran at once; the write waits, and Slack has heard nothing
    reads = sheet_reads(google)
    assert reads > 0 and slack.messages == []
    steps = by_path(run["steps"])
    helper = steps["helper"]
    assert (helper["connector"], helper["action"], helper["status"]) == ("flow", "agent", "running")
    assert [t["id"] for t in helper["children"]] == ["helper.turns[0]", "helper.turns[1]"]
    first = steps["helper.turns[0].calls[0]"]
    assert (first["connector"], first["action"], first["status"], first["scope"]) == (
        "sheets", "lookup_rows", "succeeded", "calls")
    assert first["input"] == {"value": "billing", "spreadsheet_id": SHEET, "sheet": "Owners", "column": "Topic"}
    assert first["output"]["first"]["Owner"] == "Ada"
    waiting = steps["helper.turns[1].calls[0]"]
    assert (waiting["status"], waiting["input"]) == ("waiting", {"text": "Billing questions go to Ada"})
    assert steps[apath]["status"] == "waiting" and steps[apath]["scope"] == "approval"
    # what the model saw: the tools' schemas without the fixed fields, no credential anywhere
    offered = {t["function"]["name"]: t["function"] for t in ai.completions[0]["tools"]}
    assert set(offered) == {"sheets_lookup_rows", "slack_post_message"}
    params = offered["sheets_lookup_rows"]["parameters"]
    assert "value" in params["properties"] and "spreadsheet_id" not in params["properties"]
    assert set(params["required"]) == {"value"}
    tool_msg = ai.completions[1]["messages"][-1]
    assert tool_msg["role"] == "tool" and "ada@example.com" in tool_msg["content"]
    seen = repr(ai.completions) + c.get(f"/api/v1/runs/{rid}").text
    for secret in (KEY, slack.webhook_url, google.service_account()["private_key"].splitlines()[1]):
        assert secret not in seen

    r = c.post(f"/api/v1/runs/{rid}/approve", json={"comment": "go"})
    assert r.status_code == 200, r.text
    run = wait_status(c, rid, ("succeeded", "failed"))
    assert run["status"] == "succeeded", run
    assert slack.messages == [{"text": "Billing questions go to Ada"}]
    assert sheet_reads(google) == reads  # the read before the approval was not made again
    assert len(ai.completions) == 3  # nor a model turn
    out = run["output"]
    assert out["answer"] == "Ada owns billing; I told the channel."
    assert (out["turns"], out["tool_calls"]) == (3, 2)
    assert [(t["tool"], t["status"]) for t in out["trace"]] == [
        ("sheets_lookup_rows", "succeeded"), ("slack_post_message", "succeeded")]
    assert out["usage"]["input_tokens"] == 930 and out["usage"]["output_tokens"] == 52
    steps = by_path(run["steps"])
    assert steps["helper"]["status"] == "succeeded"
    assert steps[apath]["status"] == "succeeded" and steps[apath]["output"]["by"] == "ops@example.com"
    assert steps["helper.turns[1].calls[0]"]["status"] == "succeeded"
    turn = steps["helper.turns[2]"]
    assert (turn["connector"], turn["action"]) == ("openai", "agent_turn")
    assert turn["output"]["usage"] == {"model": "gpt-4o-mini", "input_tokens": 400, "output_tokens": 12,
                                       "total_tokens": 412}
    # token usage: on each turn's step and the run's total (the agent's own record has none)
    assert steps["helper.turns[0]"]["usage"] == {"model": "gpt-4o-mini", "input_tokens": 210,
                                                 "output_tokens": 18, "total_tokens": 228}
    assert steps["helper"]["usage"] is None and steps["helper.turns[0].calls[0]"]["usage"] is None
    assert run["usage"]["input_tokens"] == 930 and run["usage"]["output_tokens"] == 52
    assert run["usage"]["by_model"]["gpt-4o-mini"]["input_tokens"] == 930
    assert c.post(f"/api/v1/runs/{rid}/approve", json={}).status_code == 409  # decided once


def test_a_declined_write_is_not_sent_and_the_model_is_told(server, fakes):
    ai, slack, google = fakes
    _, key = server.user_with_key("ops@example.com")
    c = server.client(key)
    add_credentials(c, ai, slack, google)
    pid = c.post("/api/v1/pipelines", json={"pipeline": agent_doc()}).json()["id"]
    ai.call_tools([{"name": "slack_post_message", "arguments": {"text": "@channel everyone to billing"}}])
    ai.answer("I did not post: the reviewer declined.")
    rid = c.post("/api/v1/run", json={"pipeline_id": pid, "input": {"topic": "billing"}}).json()["run_id"]
    run = wait_status(c, rid, ("waiting", "failed", "succeeded"))
    assert run["status"] == "waiting" and run["wait"]["step"] == "helper.turns[0].calls[0].approval"
    r = c.post(f"/api/v1/runs/{rid}/reject", json={"comment": "too loud"})
    assert r.status_code == 200, r.text
    run = wait_status(c, rid, ("succeeded", "failed"))
    assert run["status"] == "succeeded", run
    assert slack.messages == []
    call = by_path(run["steps"])["helper.turns[0].calls[0]"]
    assert (call["status"], call["attempts"], call["error"]["code"]) == ("failed", 0, "rejected")
    told = ai.completions[-1]["messages"][-1]
    assert told["role"] == "tool" and "not approved" in told["content"]
    assert "rejected by ops@example.com" in told["content"] and "too loud" in told["content"]
    assert run["output"]["trace"][0]["status"] == "failed"


# ---------------------------------------------------------------- a worker killed mid-agent


def start_worker(data_dir, log, extra: dict) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "levqor_host.cli", "worker", "--threads", "2"],
        env={**worker_env(data_dir), **extra},
        stdout=log.open("ab"),
        stderr=subprocess.STDOUT,
    )


def wait_for(get, ok, timeout=60.0):
    deadline = time.monotonic() + timeout
    value = get()
    while not ok(value) and time.monotonic() < deadline:
        time.sleep(0.1)
        value = get()
    return value


@pytest.mark.slow
def test_a_killed_worker_resumes_the_agent_without_repeating_a_tool_call(tmp_path, fakes):
    ai, slack, google = fakes
    app = make_app(tmp_path, start_workers=False, env=env_for(google))
    st = app.extensions["levqor"]
    data_dir = st.config.data_dir
    user = st.store.users.create("ops@example.com")
    for name, connector, values in (
        ("oa", "openai", {"api_key": KEY, "base_url": ai.base_url}),
        ("g", "sheets", google.service_account()),
        ("s", "slack", {"webhook_url": slack.webhook_url}),
    ):
        st.store.credentials.create(user["id"], name, connector, values)
    doc = agent_doc(approval="none")
    p = st.store.pipelines.get(user["id"], st.store.pipelines.create(user["id"], "route", doc)["id"])
    # turn 0 reads the sheet; turn 1 hangs at the model until the worker is killed, and is
    # asked again after the resume; turn 2 answers
    ai.call_tools([{"name": "sheets_lookup_rows", "arguments": {"value": "search"}}])
    ai.delay_next(60)
    ai.call_tools([{"name": "slack_post_message", "arguments": {"text": "never sent"}}])
    ai.call_tools([{"name": "slack_post_message", "arguments": {"text": "Search goes to Lin"}}])
    ai.answer("Lin owns search; I told the channel.")
    run_id = st.runs.start(user, p, {"topic": "search"})[0]["id"]
    st.store.close()
    stop = {"LEVQOR_SLACK_ALLOWED_HOSTS": "127.0.0.1", "LEVQOR_SHEETS_API_BASE": google.url}
    log = tmp_path / "workers.log"
    a = start_worker(data_dir, log, stop)
    app2 = make_app(tmp_path, start_workers=False, env=env_for(google))
    st2 = app2.extensions["levqor"]
    try:
        # the worker is inside turn 1 (the model's answer is delayed): kill it there
        n = wait_for(lambda: len(ai.requests), lambda k: k >= 2)
        assert n >= 2, log.read_text()[-3000:]
        reads = sheet_reads(google)
        assert reads > 0
        a.send_signal(signal.SIGKILL)
        a.wait(10)
        b = start_worker(data_dir, log, stop)
        try:
            final = wait_for(lambda: st2.store.runs.get(None, run_id)["status"],
                             lambda s: s in ("succeeded", "failed", "cancelled"), timeout=90)
        finally:
            b.send_signal(signal.SIGTERM)
            b.wait(30)
    finally:
        if a.poll() is None:
            a.kill()
    assert final == "succeeded", log.read_text()[-3000:]
    run = st2.store.runs.get(None, run_id)
    assert run["output"]["answer"] == "Lin owns search; I told the channel."
    # the sheet was read once, Slack got one message, the model was asked turn 1 again only
    assert sheet_reads(google) == reads
    assert slack.messages == [{"text": "Search goes to Lin"}]
    turns = [len(body["messages"]) for body in ai.completions]
    assert turns == [2, 4, 4, 6]  # turn 0, turn 1 (killed), turn 1 again, turn 2
    assert ai.completions[1]["messages"] == ai.completions[2]["messages"]
    st2.store.close()


# ---------------------------------------------------------------- billing


def settled(srv: LiveServer, run_id: str, timeout: float = 10.0) -> None:
    """Wait until the run's settlement is written (its settled_at)."""
    from levqor_host.store.tables import runs
    from sqlalchemy import select

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with srv.state.store.read() as conn:
            if conn.execute(select(runs.c.settled_at).where(runs.c.id == run_id)).scalar():
                return
        time.sleep(0.05)
    raise AssertionError("the run was not settled in time")


def test_an_agent_run_is_charged_per_turn_by_tokens_and_per_tool_call(tmp_path, fakes):
    pytest.importorskip("levqor_stripe")
    ai, slack, google = fakes
    env = {
        **env_for(google),
        "LEVQOR_BILLING": "local",
        "LEVQOR_PLANS": '{"pro": {"monthly_credits": 0}}',
        # credits per million tokens: 3,000 in + 1,000 out -> 3 + 2 = 5 credits a turn
        "LEVQOR_MODEL_RATES": '{"gpt-4o-mini": {"input": 1000, "output": 2000}}',
    }
    srv = LiveServer(make_app(tmp_path, env=env))
    try:
        user, key = srv.user_with_key("pro@example.com", plan="pro")
        c = srv.client(key)
        add_credentials(c, ai, slack, google)
        pid = c.post("/api/v1/pipelines", json={"pipeline": agent_doc(approval="none")}).json()["id"]
        srv.state.ledger.grant(user["id"], 100)
        ai.call_tools([{"name": "sheets_lookup_rows", "arguments": {"value": "search"}}], usage=(3000, 1000))
        ai.call_tools([{"name": "sheets_drop_everything", "arguments": {}},
                       {"name": "slack_post_message", "arguments": {"text": "Search goes to Lin"}}],
                      usage=(3000, 1000))  # fmt: skip
        ai.answer("Lin owns search.", usage=(3000, 1000))
        r = c.post("/api/v1/run?wait=30", json={"pipeline_id": pid, "input": {"topic": "search"}})
        assert r.status_code == 200 and r.json()["status"] == "succeeded", r.text
        run = r.json()
        settled(srv, run["id"])
        catalog = srv.state.pm.catalog
        turn = catalog.action("openai", "agent_turn").price
        lookup = catalog.action("sheets", "lookup_rows").price
        post = catalog.action("slack", "post_message").price
        spent = 100 - srv.state.ledger.balance(user["id"])
        # three turns at their price and 5 credits of tokens each, the two tool calls that ran
        # at their actions' prices; the call of a tool that does not exist costs nothing
        assert spent == 3 * (turn + 5) + lookup + post
        assert slack.messages == [{"text": "Search goes to Lin"}]
        assert run["usage"]["total_tokens"] == 12000
    finally:
        srv.stop()
