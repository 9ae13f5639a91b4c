"""The openai connector's model steps in a real host against FakeOpenAI over loopback: a pipeline
chat -> classify -> branch on the label, run through the API with the operator's OPENAI_API_KEY
and OPENAI_BASE_URL (no credential on the steps), then with a user's credential whose base URL
passes the SSRF guard; token usage on every step and the run, the key nowhere in the run's
answer; with billing on, each step costs its price plus its tokens at the connector's rates."""

from __future__ import annotations

import json
import math

import pytest
from e2e_support import LiveServer, make_app
from levqor_openai.connector import RATES
from levqor_openai.fake import FakeOpenAI
from trigger_support import wait_for

# scripts/test-backends runs this file again on PostgreSQL
pytestmark = [pytest.mark.backends]

KEY = "sk-test-integration-0123456789abcdef"
USER_KEY = "sk-test-user-credential-987654321"


def support_pipeline(credential: str | None = None) -> dict:
    cred = {"credential": credential} if credential else {}

    def chat(sid: str, prompt: str) -> dict:
        return {"id": sid, "connector": "openai", "action": "chat", **cred,
                "payload": {"model": "gpt-4o-mini", "prompt": prompt}}

    return {
        "levqor": 1,
        "trigger": {"type": "manual"},
        "steps": [
            chat("summary", "Summarise in one line: {{ trigger.message }}"),
            {"id": "kind", "connector": "openai", "action": "classify", **cred,
             "payload": {"model": "gpt-4o-mini", "text": "{{ steps.summary.output.text }}",
                         "labels": [{"label": "refund", "description": "wants money back"},
                                    {"label": "question", "description": "anything else"}]}},
            {"id": "route", "type": "branch",
             "paths": [{"if": {"left": "{{ steps.kind.output.label }}", "op": "eq", "right": "refund"},
                        "steps": [chat("refund_reply", "Apologise and promise a refund")]}],
             "default": [chat("answer", "Answer the question")]},
        ],
    }


def run_pipeline(c, doc: dict, message: str) -> dict:
    p = c.post("/api/v1/pipelines", json={"name": "support", "pipeline": doc})
    assert p.status_code == 201, p.text
    r = c.post("/api/v1/run?wait=30", json={"pipeline_id": p.json()["id"], "input": {"message": message}})
    assert r.status_code in (200, 201), r.text
    assert r.json()["status"] in ("succeeded", "failed"), r.text
    got = c.get(f"/api/v1/runs/{r.json()['id']}")
    assert got.status_code == 200
    return got.json()


def flat(steps: list[dict]) -> dict[str, dict]:
    out: dict[str, dict] = {}
    for s in steps:
        out[s["id"]] = s
        out.update(flat(s.get("children") or []))
    return out


def test_chat_classify_and_a_branch_on_the_label_with_the_operators_key(tmp_path):
    with FakeOpenAI(api_key=KEY) as ai:
        env = {"OPENAI_API_KEY": KEY, "OPENAI_BASE_URL": ai.base_url}
        s = LiveServer(make_app(tmp_path, env=env))
        try:
            _, key = s.user_with_key("ada@example.com")
            c = s.client(key)
            ai.answer("Customer wants their money back for order 1042.", usage=(40, 12))
            ai.answer({"label": "refund"}, usage=(90, 4))
            ai.answer("We are sorry; your refund is on its way.", usage=(20, 11))
            run = run_pipeline(c, support_pipeline(), "Order 1042 arrived broken, refund me")
            assert run["status"] == "succeeded", run["error"]
            steps = flat(run["steps"])
            assert steps["summary"]["output"]["text"].startswith("Customer wants")
            assert steps["kind"]["output"]["label"] == "refund"
            reply = next(v for k, v in steps.items() if k.endswith("refund_reply"))
            assert reply["output"]["text"] == "We are sorry; your refund is on its way."
            assert not any(k.endswith("answer") and v["status"] == "succeeded" for k, v in steps.items())
            assert steps["kind"]["output"]["usage"] == {
                "model": "gpt-4o-mini", "input_tokens": 90, "output_tokens": 4, "total_tokens": 94,
            }
            used = [v["output"]["usage"]["total_tokens"] for v in steps.values()
                    if isinstance(v.get("output"), dict) and "usage" in v["output"]]
            assert sorted(used) == [31, 52, 94]
            # the step rows and the run carry the tokens (the run page and the usage charts)
            assert steps["kind"]["usage"] == steps["kind"]["output"]["usage"]
            assert run["usage"]["total_tokens"] == 177
            assert run["usage"]["by_model"] == {"gpt-4o-mini": {"input_tokens": 150, "output_tokens": 27}}
            # what reached the model: the rendered templates, the summary fed to classify
            sent = ai.completions
            assert sent[0]["messages"][-1]["content"].endswith("Order 1042 arrived broken, refund me")
            assert sent[1]["messages"][-1]["content"] == "Customer wants their money back for order 1042."
            assert sent[1]["response_format"]["type"] == "json_schema"
            assert all(r.header("Authorization") == f"Bearer {KEY}" for r in ai.requests)
            assert KEY not in json.dumps(run)
        finally:
            s.stop()


def test_a_users_credential_and_the_not_configured_error(tmp_path):
    with FakeOpenAI(api_key=USER_KEY) as ai:
        s = LiveServer(make_app(tmp_path))  # no OPENAI_* for the host
        try:
            _, key = s.user_with_key("bo@example.com")
            c = s.client(key)
            # without a credential and without the operator's key: a clear, permanent failure
            run = run_pipeline(c, support_pipeline(), "hello")
            assert run["status"] == "failed"
            err = flat(run["steps"])["summary"]["error"]
            assert err["code"] == "not_configured" and "OPENAI_API_KEY" in err["message"]
            assert flat(run["steps"])["summary"]["attempts"] == 1
            assert ai.requests == []
            # the user's own credential, pointing at their server (allowed by LEVQOR_SSRF_ALLOW)
            r = c.post("/api/v1/credentials", json={
                "name": "my-ai", "connector": "openai",
                "values": {"api_key": USER_KEY, "base_url": ai.base_url},
            })
            assert r.status_code == 201, r.text
            assert USER_KEY not in r.text
            ai.answer("A question about delivery times.")
            ai.answer({"label": "question"})
            ai.answer("Deliveries take two days.")
            run = run_pipeline(c, support_pipeline("my-ai"), "How long does delivery take?")
            assert run["status"] == "succeeded", run["error"]
            steps = flat(run["steps"])
            answer = next(v for k, v in steps.items() if k.endswith("answer"))
            assert answer["output"]["text"] == "Deliveries take two days."
            assert not any(k.endswith("refund_reply") and v["status"] == "succeeded" for k, v in steps.items())
            assert len(ai.completions) == 3
            assert USER_KEY not in json.dumps(run)
        finally:
            s.stop()


def test_with_billing_a_model_step_costs_its_price_plus_its_tokens_at_the_rates(tmp_path):
    pytest.importorskip("levqor_stripe")  # the billing plugin
    with FakeOpenAI(api_key=KEY) as ai:
        env = {
            "OPENAI_API_KEY": KEY,
            "OPENAI_BASE_URL": ai.base_url,
            "LEVQOR_BILLING": "local",
            "LEVQOR_PLANS": '{"pro": {"monthly_credits": 0}}',
        }
        s = LiveServer(make_app(tmp_path, env=env))
        try:
            user, key = s.user_with_key("cy@example.com", plan="pro")
            c = s.client(key)
            s.state.ledger.grant(user["id"], 500)
            ai.answer("A refund request.", usage=(200_000, 10_000))  # gpt-4o-mini
            ai.answer({"label": "refund"}, usage=(30_000, 1_000))
            ai.answer("Sorry, refunded.", usage=(1_000, 1_000))
            run = run_pipeline(c, support_pipeline(), "refund please")
            assert run["status"] == "succeeded", run["error"]

            def credits(i: int, o: int) -> int:
                rate = RATES["gpt-4o-mini"]
                return 1 + math.ceil((i * rate["input"] + o * rate["output"]) / 1_000_000)

            # 1 credit per step and, at 150 / 600 credits per million tokens: 36, 6 and 1
            expected = credits(200_000, 10_000) + credits(30_000, 1_000) + credits(1_000, 1_000)
            assert expected == 37 + 7 + 2
            wait_for(lambda: 500 - s.state.ledger.balance(user["id"]) == expected, what="settlement")
        finally:
            s.stop()


def test_the_builders_model_list_and_the_credential_test_ask_the_servers_models(tmp_path):
    with FakeOpenAI(api_key=KEY, models=["gpt-4o-mini", "gpt-4o", "llama3"]) as ai:
        s = LiveServer(make_app(tmp_path, env={"OPENAI_API_KEY": KEY, "OPENAI_BASE_URL": ai.base_url}))
        try:
            _, key = s.user_with_key("di@example.com")
            c = s.client(key)
            url = "/api/v1/connectors/openai/actions/chat/options/model"
            r = c.post(url, json={"payload": {"prompt": "{{ trigger.q }}"}})  # the operator's server
            assert r.status_code == 200, r.text
            assert [o["value"] for o in r.json()["options"]] == ["gpt-4o", "gpt-4o-mini", "llama3"]
            # a user's credential: its own server and key
            r = c.post("/api/v1/credentials", json={
                "name": "mine", "connector": "openai",
                "values": {"api_key": USER_KEY, "base_url": ai.base_url},
            })
            assert r.status_code == 201, r.text
            cred_id = r.json()["id"]
            r = c.post(url, json={"credential": "mine"})  # the fake wants the operator's key
            assert r.status_code == 502, r.text
            assert "Incorrect API key" in r.text and USER_KEY not in r.text
            tested = c.post(f"/api/v1/credentials/{cred_id}/test")
            assert tested.status_code == 200 and tested.json()["ok"] is not True, tested.text
            assert USER_KEY not in tested.text
            ai.api_key = USER_KEY
            tested = c.post(f"/api/v1/credentials/{cred_id}/test")
            assert tested.status_code == 200 and tested.json()["ok"] is True, tested.text
            r = c.post(url, json={"credential": "mine"})
            assert r.status_code == 200 and len(r.json()["options"]) == 3, r.text
            assert [q.path for q in ai.requests] == ["/v1/models"] * len(ai.requests)
            assert ai.completions == []
        finally:
            s.stop()
