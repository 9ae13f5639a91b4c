"""Token pricing across distributions: levqor-openai's model steps against FakeOpenAI (the
chat completions wire contract, over loopback) in a host billed by levqor-stripe's local mode:
each step costs its catalog price plus its tokens at the connector's documented rates, or at
the operator's LEVQOR_MODEL_RATES; without billing nothing is charged and the tokens still
show per step, per run and per day."""

from __future__ import annotations

import time

import pytest
from e2e_support import LiveServer, make_app
from sqlalchemy import select

pytest.importorskip("levqor_stripe")
pytest.importorskip("levqor_openai")

from levqor_openai.connector import RATES  # noqa: E402
from levqor_openai.fake import FakeOpenAI  # noqa: E402

# scripts/test-backends runs this file again on PostgreSQL, and on Celery: its apps start workers
pytestmark = [pytest.mark.backends, pytest.mark.workers]

KEY = "sk-test-billing-tokens-0123456789"
LOCAL = {"LEVQOR_BILLING": "local", "LEVQOR_PLANS": '{"pro": {"monthly_credits": 0}}'}
DOC = {
    "levqor": 1,
    "trigger": {"type": "manual"},
    "steps": [
        {"id": "draft", "connector": "openai", "action": "chat",
         "payload": {"model": "gpt-4o-mini", "prompt": "Draft a reply to {{ trigger.message }}"}},
        {"id": "polish", "connector": "openai", "action": "chat",
         "payload": {"model": "gpt-4o", "prompt": "Polish: {{ steps.draft.output.text }}"}},
    ],
}  # fmt: skip
#: (input, output) tokens the fake reports for the two steps
DRAFT, POLISH = (20_000, 5_000), (1_000, 400)


def tokens_price(model: str, used: tuple[int, int], rates: dict) -> int:
    """Credits for ``used`` tokens at ``rates`` (per million, rounded up), worked out here."""
    rate = rates.get(model) or rates["*"]
    millionths = used[0] * rate["input"] + used[1] * rate["output"]
    return -(-int(millionths) // 1_000_000)


def run_once(tmp_path, ai, **env):
    s = LiveServer(make_app(tmp_path, env={"OPENAI_API_KEY": KEY, "OPENAI_BASE_URL": ai.base_url, **env}))
    user, key = s.user_with_key("pro@example.com", plan="pro")
    c = s.client(key)
    s.state.ledger.grant(user["id"], 1000)
    ai.answer("Thanks, we are on it.", usage=DRAFT)
    ai.answer("Thank you: we are on it.", usage=POLISH)
    pid = c.post("/api/v1/pipelines", json={"name": "reply", "pipeline": DOC}).json()["id"]
    r = c.post("/api/v1/run?wait=30", json={"pipeline_id": pid, "input": {"message": "late parcel"}})
    assert r.status_code == 200 and r.json()["status"] == "succeeded", r.text
    wait_settled(s, r.json()["id"])
    return s, user, c, r.json()


def wait_settled(s, run_id: str, timeout: float = 10) -> None:
    from levqor_host.store.tables import runs

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with s.state.store.read() as conn:
            if conn.execute(select(runs.c.settled_at).where(runs.c.id == run_id)).scalar():
                return
        time.sleep(0.05)
    raise AssertionError("run not settled in time")


def test_model_steps_cost_their_price_plus_their_tokens_at_the_connectors_rates(tmp_path):
    with FakeOpenAI(api_key=KEY) as ai:
        s, user, c, run = run_once(tmp_path, ai, **LOCAL)
        try:
            price = s.state.ledger.step_price({"connector": "openai", "action": "chat"})
            want = 2 * price + tokens_price("gpt-4o-mini", DRAFT, RATES) + tokens_price("gpt-4o", POLISH, RATES)
            assert 1000 - s.state.ledger.balance(user["id"]) == want
            got = c.get(f"/api/v1/runs/{run['id']}").json()
            assert [st["usage"] for st in got["steps"]] == [
                {"model": "gpt-4o-mini", "input_tokens": 20_000, "output_tokens": 5_000, "total_tokens": 25_000},
                {"model": "gpt-4o", "input_tokens": 1_000, "output_tokens": 400, "total_tokens": 1_400},
            ]
            assert got["usage"]["total_tokens"] == 26_400
            assert set(got["usage"]["by_model"]) == {"gpt-4o-mini", "gpt-4o"}
            today = c.get("/api/v1/analytics/dashboard?days=1").json()["usage"]["series"][-1]
            assert (today["tokens"], today["credits"]) == (26_400, want)
        finally:
            s.stop()


def test_the_operators_rates_price_the_tokens_instead(tmp_path):
    rates = {"gpt-4o-mini": {"input": 1000, "output": 0}, "*": {"input": 0, "output": 5000}}
    import json

    with FakeOpenAI(api_key=KEY) as ai:
        s, user, _c, _run = run_once(tmp_path, ai, LEVQOR_MODEL_RATES=json.dumps(rates), **LOCAL)
        try:
            price = s.state.ledger.step_price({"connector": "openai", "action": "chat"})
            # gpt-4o-mini at the operator's 1000 (20 credits); gpt-4o is in the connector's own
            # rates, which "*" does not override (2500 / 10000: 7 credits)
            merged = {**RATES, **rates}
            want = 2 * price + tokens_price("gpt-4o-mini", DRAFT, merged) + tokens_price("gpt-4o", POLISH, merged)
            assert (tokens_price("gpt-4o-mini", DRAFT, merged), tokens_price("gpt-4o", POLISH, merged)) == (20, 7)
            assert 1000 - s.state.ledger.balance(user["id"]) == want
        finally:
            s.stop()


def test_without_billing_nothing_is_charged_and_the_tokens_are_charted(tmp_path):
    with FakeOpenAI(api_key=KEY) as ai:
        s, user, c, run = run_once(tmp_path, ai)  # LEVQOR_BILLING unset: unlimited
        try:
            assert s.state.ledger.balance(user["id"]) == 1000
            assert [x["reason"] for x in s.state.ledger.lines(user["id"])] == ["grant"]
            assert c.get("/api/v1/runs").json()["items"][0]["usage"]["total_tokens"] == 26_400
            usage = c.get("/api/v1/analytics/dashboard?days=7").json()["usage"]
            assert usage["totals"]["input_tokens"] == 21_000 and usage["totals"]["output_tokens"] == 5_400
            assert usage["series"][-1]["tokens"] == 26_400 and usage["series"][-1]["credits"] == 0
        finally:
            s.stop()


def test_an_extract_that_fails_closed_is_charged_the_tokens_its_rounds_used(tmp_path):
    schema = {"type": "object", "properties": {"order_id": {"type": "string"}}, "required": ["order_id"]}
    doc = {"levqor": 1, "trigger": {"type": "manual"}, "steps": [
        {"id": "read", "connector": "openai", "action": "extract",
         "payload": {"model": "gpt-4o-mini", "text": "{{ trigger.message }}", "schema": schema, "mode": "json"}}]}  # fmt: skip
    with FakeOpenAI(api_key=KEY) as ai:
        s = LiveServer(make_app(tmp_path, env={"OPENAI_API_KEY": KEY, "OPENAI_BASE_URL": ai.base_url, **LOCAL}))
        try:
            user, key = s.user_with_key("pro@example.com", plan="pro")
            c = s.client(key)
            s.state.ledger.grant(user["id"], 1000)
            ai.answer("no JSON here", usage=DRAFT)
            ai.answer({"order": 7}, usage=POLISH)  # still no order_id: the step fails closed
            pid = c.post("/api/v1/pipelines", json={"name": "read", "pipeline": doc}).json()["id"]
            r = c.post("/api/v1/run?wait=30", json={"pipeline_id": pid, "input": {"message": "order 7"}})
            assert r.status_code == 200 and r.json()["status"] == "failed", r.text
            wait_settled(s, r.json()["id"])
            got = c.get(f"/api/v1/runs/{r.json()['id']}").json()
            assert got["steps"][0]["error"]["code"] == "invalid_answer"
            used = (DRAFT[0] + POLISH[0], DRAFT[1] + POLISH[1])
            assert got["steps"][0]["usage"] == {"model": "gpt-4o-mini", "input_tokens": used[0],
                                                "output_tokens": used[1], "total_tokens": sum(used)}  # fmt: skip
            price = s.state.ledger.step_price({"connector": "openai", "action": "extract"})
            assert 1000 - s.state.ledger.balance(user["id"]) == price + tokens_price("gpt-4o-mini", used, RATES)
        finally:
            s.stop()
