"""A pipeline's declared input schema over real HTTP: a manual run, a webhook delivery and a
sub-pipeline whose input does not fit it are refused (422 ``invalid_input`` with pointers
under /input), nothing queued and nothing charged; fitting input runs; a schema that is no
JSON Schema, or a schedule whose input does not fit, is refused when the pipeline is saved."""

from __future__ import annotations

import time

import pytest
from e2e_support import LiveServer, make_app
from levqor_kernel import hookimpl

# scripts/test-backends runs this file on PostgreSQL, and on Celery: its apps start workers
pytestmark = [pytest.mark.backends, pytest.mark.workers]

pytest.importorskip("levqor_stripe")

SCHEMA = {
    "type": "object",
    "required": ["email", "count"],
    "properties": {
        "email": {"type": "string", "format": "email"},
        "count": {"type": "integer", "minimum": 1},
    },
}


class Work:
    """A priced test connector (2 credits a call)."""

    @hookimpl
    def describe_schema(self):
        return [{
            "name": "work", "title": "Work", "description": "test connector",
            "credentials_required": False,
            "actions": {"do": {"title": "Do", "price": 2, "payload": {"type": "object"},
                               "output": {"type": "object"}, "example": {}}},
        }]  # fmt: skip

    @hookimpl
    def run_task(self, connector, action, payload, credentials, context):
        return {"done": payload}


def doc(trigger=None, schema=SCHEMA):
    d = {
        "levqor": 1,
        "trigger": trigger or {"type": "manual"},
        "steps": [{"id": "s", "connector": "work", "action": "do",
                   "payload": {"who": "{{ trigger.email }}"}}],
    }  # fmt: skip
    if schema is not None:
        d["input"] = schema
    return d


@pytest.fixture
def srv(tmp_path):
    s = LiveServer(make_app(
        tmp_path, env={"LEVQOR_BILLING": "local", "LEVQOR_PLANS": '{"pro": {"monthly_credits": 0}}'},
        plugins=[("work", Work())],
    ))  # fmt: skip
    yield s
    s.stop()


@pytest.fixture
def pro(srv):
    user, key = srv.user_with_key("pro@example.com", plan="pro")
    srv.state.ledger.grant(user["id"], 50)
    return user, srv.client(key)


def save(c, d, name="p"):
    return c.post("/api/v1/pipelines", json={"name": name, "pipeline": d})


def test_a_manual_run_with_input_that_does_not_fit_is_refused_and_nothing_queued_or_charged(srv, pro):
    user, c = pro
    r = save(c, doc())
    assert r.status_code == 201, r.text
    pid = r.json()["id"]
    bad = c.post("/api/v1/run", json={"pipeline_id": pid, "input": {"email": "not mail", "count": 0}})
    assert bad.status_code == 422, bad.text
    err = bad.json()["error"]
    assert err["code"] == "invalid_input"
    problems = {p["pointer"]: p["message"] for p in err["details"]["problems"]}
    assert set(problems) == {"/input/email", "/input/count"}
    assert "email" in problems["/input/email"] and "minimum" in problems["/input/count"]
    missing = c.post("/api/v1/run", json={"pipeline_id": pid, "input": {}}).json()["error"]
    assert [p["pointer"] for p in missing["details"]["problems"]] == ["/input", "/input"]
    assert c.get("/api/v1/runs").json()["items"] == []
    assert srv.state.ledger.balance(user["id"]) == 50
    assert [x["reason"] for x in srv.state.ledger.lines(user["id"])] == ["grant"]

    ok = c.post("/api/v1/run?wait=10", json={"pipeline_id": pid, "input": {"email": "a@example.com", "count": 2}})
    assert ok.status_code == 200 and ok.json()["status"] == "succeeded", ok.text
    assert ok.json()["steps"][0]["output"] == {"done": {"who": "a@example.com"}}
    assert srv.state.ledger.balance(user["id"]) == 48


def test_a_pipeline_without_a_schema_takes_any_input(pro):
    _user, c = pro
    pid = save(c, doc(schema=None)).json()["id"]
    r = c.post("/api/v1/run?wait=10", json={"pipeline_id": pid, "input": {"email": 7, "x": [1]}})
    assert r.status_code == 200 and r.json()["status"] == "succeeded", r.text


def test_a_webhook_body_that_does_not_fit_is_answered_422(srv, pro):
    user, c = pro
    p = save(c, doc({"type": "webhook"})).json()
    token = p["webhook_url"].split("/hooks/")[1]
    hook = srv.client()
    bad = hook.post(f"/hooks/{token}", json={"email": "a@example.com", "count": "three"})
    assert bad.status_code == 422, bad.text
    err = bad.json()["error"]
    assert err["code"] == "invalid_input"
    assert [p["pointer"] for p in err["details"]["problems"]] == ["/input/count"]
    assert c.get("/api/v1/runs").json()["items"] == []
    assert srv.state.ledger.balance(user["id"]) == 50
    good = hook.post(f"/hooks/{token}", json={"email": "a@example.com", "count": 3})
    assert good.status_code == 202, good.text
    assert srv.state.runs.wait(None, good.json()["run_id"], 10)["status"] == "succeeded"


def test_a_sub_pipeline_started_with_input_that_does_not_fit_fails_its_step(pro):
    _user, c = pro
    child = save(c, doc(), name="child").json()["id"]
    parent = {
        "levqor": 1, "trigger": {"type": "manual"},
        "steps": [{"id": "call", "type": "pipeline", "pipeline": child, "input": {"email": "x"}}],
    }  # fmt: skip
    pid = save(c, parent, name="parent").json()["id"]
    r = c.post("/api/v1/run?wait=10", json={"pipeline_id": pid}).json()
    deadline = time.monotonic() + 10  # the run may answer while it waits to start its child
    while r["status"] == "waiting" and time.monotonic() < deadline:
        time.sleep(0.05)
        r = c.get(f"/api/v1/runs/{r['id']}").json()
    assert r["status"] == "failed", r
    assert r["error"]["code"] == "invalid_input"
    assert "input schema" in r["error"]["message"]


def test_an_input_schema_that_is_no_json_schema_is_refused_at_save(pro):
    _user, c = pro
    r = save(c, doc(schema={"type": "no-such-type"}))
    assert r.status_code == 422, r.text
    problems = r.json()["error"]["details"]["problems"]
    assert [p["pointer"] for p in problems] == ["/input"]
    assert "not a valid JSON Schema" in problems[0]["message"]


def test_a_schedule_whose_input_does_not_fit_is_refused_at_save(pro):
    _user, c = pro
    trig = {"type": "schedule", "cron": "0 9 * * *", "input": {"email": "a@example.com"}}
    r = save(c, doc(trig))
    assert r.status_code == 422, r.text
    problems = r.json()["error"]["details"]["problems"]
    assert [p["pointer"] for p in problems] == ["/trigger/input"]
    assert "count" in problems[0]["message"]
    trig["input"]["count"] = 1
    assert save(c, doc(trig)).status_code == 201
    closed = {**SCHEMA, "additionalProperties": False}
    r = save(c, doc(trig, closed))  # a scheduled run's input also has scheduled_at
    assert r.status_code == 422 and "scheduled_at" in r.text, r.text
