"""Webhook triggers over real HTTP: tokens, HMAC signatures, replays, bodies, waiting."""

from __future__ import annotations

import hashlib
import hmac
import json
import time

import pytest
from e2e_support import LiveServer, make_app

# scripts/test-backends runs this file on PostgreSQL, and on Celery: its apps start workers
pytestmark = [pytest.mark.backends, pytest.mark.workers]


@pytest.fixture
def srv(tmp_path):
    s = LiveServer(make_app(tmp_path, executor={"workers": 2}))
    yield s
    s.stop()


@pytest.fixture
def alice(srv):
    _, key = srv.user_with_key("alice@example.com")
    return srv.client(key)


def hook_doc(**trigger):
    return {"levqor": 1, "trigger": {"type": "webhook", **trigger}, "steps": [
        {"id": "shape", "connector": "core", "action": "transform",
         "payload": {"value": {"who": "{{ trigger.name }}", "raw": "{{ trigger.note }}"}}}]}


def make_hook(alice, **trigger):
    r = alice.post("/api/v1/pipelines", json={"name": "hook", "pipeline": hook_doc(**trigger)})
    assert r.status_code == 201, r.text
    p = r.json()
    return p, p["webhook_url"].split("/hooks/")[1]


def signed(secret: str, body: bytes, ts: int | None = None) -> dict:
    ts = int(time.time()) if ts is None else ts
    sig = hmac.new(secret.encode(), f"{ts}.".encode() + body, hashlib.sha256).hexdigest()
    return {"X-Levqor-Timestamp": str(ts), "X-Levqor-Signature": f"sha256={sig}", "Content-Type": "application/json"}


def test_webhook_starts_a_run_with_the_body_as_trigger_data(srv, alice):
    p, token = make_hook(alice)
    r = srv.client().post(f"/hooks/{token}", json={"name": "Ann", "note": "{{ 7*7 }}"})
    assert r.status_code == 202
    run = srv.state.runs.wait(None, r.json()["run_id"], 10)
    assert run["status"] == "succeeded"
    # trigger data is data: the template-looking note is not evaluated
    assert run["steps"][0]["output"] == {"value": {"who": "Ann", "raw": "{{ 7*7 }}"}}


def test_form_bodies_are_accepted(srv, alice):
    p, token = make_hook(alice, wait=True)
    r = srv.client().post(f"/hooks/{token}", data={"name": "Form", "note": "n"})
    assert r.status_code == 200 and r.json()["output"] == {"value": {"who": "Form", "raw": "n"}}


def test_wait_mode_answers_with_the_output(srv, alice):
    p, token = make_hook(alice, wait=True, wait_seconds=10)
    r = srv.client().post(f"/hooks/{token}", json={"name": "W", "note": "x"})
    assert r.status_code == 200
    assert r.json()["status"] == "succeeded" and r.json()["output"]["value"]["who"] == "W"


@pytest.mark.parametrize("token", ["nope", "x" * 300])
def test_unknown_token_is_404(srv, token):
    assert srv.client().post(f"/hooks/{token}", json={}).status_code == 404


def test_manual_pipeline_tokens_do_not_trigger(srv, alice):
    p, token = make_hook(alice)
    doc = hook_doc()
    doc["trigger"] = {"type": "manual"}
    r = alice.put(f"/api/v1/pipelines/{p['id']}", json={"pipeline": doc})
    assert r.status_code == 200 and r.json()["webhook_url"] is None
    assert srv.client().post(f"/hooks/{token}", json={}).status_code == 404


SCHEDULE = {"type": "schedule", "cron": "0 9 * * 1-5", "timezone": "UTC"}


@pytest.mark.parametrize("trigger", [{"type": "manual"}, SCHEDULE], ids=["manual", "schedule"])
def test_only_webhook_pipelines_report_a_webhook_url(srv, alice, trigger):
    """Every answer that carries webhook_url says null for a pipeline no webhook starts."""
    doc = hook_doc()
    doc["trigger"] = trigger
    r = alice.post("/api/v1/pipelines", json={"name": "quiet", "pipeline": doc})
    assert r.status_code == 201, r.text
    p = r.json()
    assert "webhook_url" in p and p["webhook_url"] is None
    assert alice.get(f"/api/v1/pipelines/{p['id']}").json()["webhook_url"] is None
    listed = {i["id"]: i for i in alice.get("/api/v1/pipelines").json()["items"]}
    assert listed[p["id"]]["webhook_url"] is None
    # switched to a webhook trigger: now it has a URL, and that URL starts a run
    r = alice.put(f"/api/v1/pipelines/{p['id']}", json={"pipeline": hook_doc()})
    assert r.status_code == 200, r.text
    url = r.json()["webhook_url"]
    assert url.startswith(srv.state.config.base_url + "/hooks/")
    listed = {i["id"]: i for i in alice.get("/api/v1/pipelines").json()["items"]}
    assert listed[p["id"]]["webhook_url"] == url
    hit = srv.client().post(url.replace(srv.state.config.base_url, ""), json={"name": "x"})
    assert hit.status_code == 202, hit.text
    # and back: the URL is gone from every answer again (and answers 404)
    r = alice.put(f"/api/v1/pipelines/{p['id']}", json={"pipeline": doc})
    assert r.status_code == 200 and r.json()["webhook_url"] is None
    assert alice.get(f"/api/v1/pipelines/{p['id']}").json()["webhook_url"] is None
    assert srv.client().post(url.replace(srv.state.config.base_url, ""), json={}).status_code == 404


def test_repeated_delivery_id_does_not_start_a_second_run(srv, alice):
    p, token = make_hook(alice)
    c = srv.client()
    a = c.post(f"/hooks/{token}", json={"name": "a", "note": ""}, headers={"X-Levqor-Delivery": "d-1"}).json()
    b = c.post(f"/hooks/{token}", json={"name": "a", "note": ""}, headers={"X-Levqor-Delivery": "d-1"}).json()
    assert a["run_id"] == b["run_id"] and b["created"] is False
    c.post(f"/hooks/{token}", json={"name": "a", "note": ""}, headers={"X-Levqor-Delivery": "d-2"})
    assert len(alice.get(f"/api/v1/runs?pipeline_id={p['id']}").json()["items"]) == 2


def test_hmac_signature_is_checked_when_a_secret_is_set(srv, alice):
    p, token = make_hook(alice)
    secret = alice.post(f"/api/v1/pipelines/{p['id']}/webhook-secret").json()["secret"]
    assert alice.get(f"/api/v1/pipelines/{p['id']}").json()["has_webhook_secret"] is True
    assert secret not in alice.get(f"/api/v1/pipelines/{p['id']}").text
    c = srv.client()
    body = json.dumps({"name": "S", "note": ""}).encode()
    ok = c.post(f"/hooks/{token}", data=body, headers=signed(secret, body))
    assert ok.status_code == 202
    cases = {
        "missing": {"Content-Type": "application/json"},
        "wrong secret": signed("whsec_wrong", body),
        "stale": signed(secret, body, int(time.time()) - 3600),
        "future": signed(secret, body, int(time.time()) + 3600),
        "garbage": {**signed(secret, body), "X-Levqor-Signature": "md5=abc"},
        "bad ts": {**signed(secret, body), "X-Levqor-Timestamp": "yesterday"},
    }
    for name, headers in cases.items():
        r = c.post(f"/hooks/{token}", data=body, headers=headers)
        assert r.status_code == 401, name
    # a body changed after signing fails
    tampered = json.dumps({"name": "Evil", "note": ""}).encode()
    assert c.post(f"/hooks/{token}", data=tampered, headers=signed(secret, body)).status_code == 401
    assert len(alice.get(f"/api/v1/runs?pipeline_id={p['id']}").json()["items"]) == 1
    # removing the secret turns the check off again
    alice.delete(f"/api/v1/pipelines/{p['id']}/webhook-secret")
    assert c.post(f"/hooks/{token}", json={"name": "x", "note": ""}).status_code == 202


def test_require_signature_without_a_secret_refuses(srv, alice):
    p, token = make_hook(alice, require_signature=True)
    assert srv.client().post(f"/hooks/{token}", json={}).status_code == 401


def test_wrong_content_type_oversized_and_malformed_bodies(srv, alice):
    p, token = make_hook(alice)
    c = srv.client()
    assert c.post(f"/hooks/{token}", data="<xml/>", headers={"Content-Type": "application/xml"}).status_code == 415
    assert c.post(f"/hooks/{token}", data="name=x", headers={"Content-Type": "text/plain"}).status_code == 415
    assert c.post(f"/hooks/{token}", data="{bad", headers={"Content-Type": "application/json"}).status_code == 400
    big = json.dumps({"name": "x" * (300 * 1024)})
    assert c.post(f"/hooks/{token}", data=big, headers={"Content-Type": "application/json"}).status_code == 413
    assert alice.get(f"/api/v1/runs?pipeline_id={p['id']}").json()["items"] == []
