"""The choices of an action's field over real HTTP (``POST /api/v1/connectors/<c>/actions/<a>/
options/<field>``): a plugin's ``load_options`` asks its upstream (a fake on loopback) with the
caller's own credential; unknown names 404, a field without a list 404 no_options, a foreign or
wrong credential 404/422, an upstream that refuses 502 with its reason redacted, a broken plugin
502 (never a 500), bad bodies 400."""

from __future__ import annotations

import pytest
from e2e_support import LiveServer, make_app
from levqor_kernel import hookimpl
from levqor_kernel.errors import ConnectorError
from levqor_kernel.testing import FakeServer, Reply

pytestmark = [pytest.mark.backends]

TOKEN = "lab-secret-token-123"
TOOL_SCHEMA = {"type": "object", "properties": {"q": {"type": "string"}}, "required": ["q"]}


class Lab:
    """A model server connector: ``ask`` lists the server's models (GET /models with the
    credential's token) and, once a server is named in the payload, its tools."""

    def __init__(self) -> None:
        self.asked: list[dict] = []

    @hookimpl
    def describe_schema(self):
        return [{
            "name": "lab", "title": "Lab", "description": "a model server",
            "credentials": {"type": "object", "required": ["base_url", "token"], "properties": {
                "base_url": {"type": "string"}, "token": {"type": "string", "writeOnly": True}}},
            "credentials_required": False,
            "actions": {
                "ask": {
                    "title": "Ask", "writes": False, "options": ["model", "tool", "broken"],
                    "payload": {"type": "object", "properties": {
                        "model": {"type": "string"}, "tool": {"type": "string"},
                        "broken": {"type": "string"}, "server": {"type": "string"},
                        "prompt": {"type": "string"}}},
                    "output": {"type": "object"}, "example": {"model": "m"}},
                "other": {"title": "Other", "payload": {"type": "object"},
                          "output": {"type": "object"}, "example": {}},
            },
        }, {
            "name": "shelf", "title": "Shelf", "description": "another connector",
            "credentials": {"type": "object", "properties": {"key": {"type": "string"}}},
            "actions": {"list": {"title": "List", "payload": {"type": "object"},
                                 "output": {"type": "object"}, "example": {}}},
        }]  # fmt: skip

    @hookimpl
    def run_task(self, connector, action, payload, credentials, context):
        return {}

    @hookimpl
    def load_options(self, connector, action, field, payload, credentials, context):
        self.asked.append({"field": field, "payload": payload, "credentials": credentials})
        if field == "broken":
            if payload.get("prompt") == "garbage":
                return [{"label": "no value"}]
            raise KeyError("a bug in the plugin")
        if field == "tool":
            if not payload.get("server"):
                return None
            return [{"value": "search", "label": "Search", "description": "find things",
                     "schema": TOOL_SCHEMA}, {"value": "fetch"}]  # fmt: skip
        if credentials is None:
            raise ConnectorError("no server configured: add a credential", code="not_configured")
        resp = context.http.request(
            "GET", credentials["base_url"] + "/models", guard=True, service="lab",
            headers={"Authorization": f"Bearer {credentials['token']}"},
            detail=lambda r: r.json().get("error"),
        )  # fmt: skip
        models = sorted(m["id"] for m in resp.json()["data"])
        return [{"value": m, "label": m} for m in models]


@pytest.fixture
def lab():
    return Lab()


@pytest.fixture
def upstream():
    with FakeServer() as fake:
        fake.route("GET", "/v1/models", lambda req: (
            {"object": "list", "data": [{"id": "mini", "object": "model"}, {"id": "big", "object": "model"}]}
            if req.header("Authorization") == f"Bearer {TOKEN}"
            else Reply(401, {"error": f"bad key {req.header('Authorization')}"})
        ))  # fmt: skip
        yield fake


@pytest.fixture
def srv(tmp_path, lab):
    s = LiveServer(make_app(tmp_path, plugins=[("lab", lab)]))
    yield s
    s.stop()


def _cred(c, name, connector, values):
    r = c.post("/api/v1/credentials", json={"name": name, "connector": connector, "values": values})
    assert r.status_code == 201, r.text


@pytest.fixture
def owner(srv, upstream):
    _, key = srv.user_with_key("ola@example.com")
    c = srv.client(key)
    _cred(c, "lab-key", "lab", {"base_url": upstream.url + "/v1", "token": TOKEN})
    _cred(c, "wrong-key", "lab", {"base_url": upstream.url + "/v1", "token": "not-the-token-456"})
    _cred(c, "shelf-key", "shelf", {"key": "k"})
    return c


URL = "/api/v1/connectors/lab/actions/ask/options/"


def test_the_models_come_from_the_upstream_with_the_callers_credential(owner, lab, upstream):
    r = owner.post(URL + "model", json={"credential": "lab-key", "payload": {"prompt": "{{ trigger.x }}"}})
    assert r.status_code == 200, r.text
    assert r.json() == {"options": [{"value": "big", "label": "big"}, {"value": "mini", "label": "mini"}]}
    assert upstream.requests_to("/v1/models")[-1].header("Authorization") == f"Bearer {TOKEN}"
    assert lab.asked[-1]["payload"] == {"prompt": "{{ trigger.x }}"}  # unrendered, as the form holds it
    assert TOKEN not in r.text


def test_choices_carry_their_schema_and_need_no_credential(owner, lab):
    r = owner.post(URL + "tool", json={"payload": {"server": "s1"}})
    assert r.status_code == 200, r.text
    assert r.json()["options"] == [
        {"value": "search", "label": "Search", "description": "find things", "schema": TOOL_SCHEMA},
        {"value": "fetch", "label": "fetch"},
    ]
    assert lab.asked[-1]["credentials"] is None
    none = owner.post(URL + "tool", json={})  # the plugin has no list without a server
    assert none.status_code == 404 and none.json()["error"]["code"] == "no_options"


def test_unknown_names_and_fields_without_a_list_are_404(owner, lab):
    cases = {
        "/api/v1/connectors/nope/actions/ask/options/model": "not_found",
        "/api/v1/connectors/lab/actions/nope/options/model": "not_found",
        "/api/v1/connectors/lab/actions/ask/options/prompt": "no_options",  # not in options
        "/api/v1/connectors/lab/actions/other/options/model": "no_options",
        "/api/v1/connectors/shelf/actions/list/options/x": "no_options",
    }
    for url, code in cases.items():
        r = owner.post(url, json={})
        assert r.status_code == 404 and r.json()["error"]["code"] == code, (url, r.text)
    assert lab.asked == []


def test_only_the_callers_own_credential_of_that_connector(srv, owner, lab, upstream):
    _, other_key = srv.user_with_key("bo@example.com")
    other = srv.client(other_key)
    r = other.post(URL + "model", json={"credential": "lab-key"})  # ola's, not bo's
    assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"
    r = owner.post(URL + "model", json={"credential": "shelf-key"})
    assert r.status_code == 422 and r.json()["error"]["code"] == "wrong_connector"
    assert lab.asked == [] and upstream.requests_to("/v1/models") == []


def test_an_upstream_that_refuses_is_502_with_its_reason_redacted(owner, upstream):
    r = owner.post(URL + "model", json={"credential": "wrong-key"})
    assert r.status_code == 502, r.text
    err = r.json()["error"]
    assert err["code"] == "options_failed" and "bad key" in err["message"]
    assert "not-the-token-456" not in r.text
    r = owner.post(URL + "model", json={})  # the plugin says what is missing
    assert r.status_code == 502 and "add a credential" in r.json()["error"]["message"]


def test_a_broken_plugin_is_502_never_500(owner):
    r = owner.post(URL + "broken", json={})
    assert r.status_code == 502 and r.json()["error"]["code"] == "options_failed", r.text
    assert "a bug" not in r.text
    r = owner.post(URL + "broken", json={"payload": {"prompt": "garbage"}})
    assert r.status_code == 502 and r.json()["error"]["code"] == "options_failed", r.text


def test_bad_bodies_are_400_and_the_route_needs_a_user(srv, owner, lab):
    for body in ({"credential": 7}, {"payload": []}, {"credential": ""}, {"extra": 1}):
        r = owner.post(URL + "model", json=body)
        assert r.status_code == 400, (body, r.text)
    r = owner.post(URL + "model", data="not json", headers={"Content-Type": "application/json"})
    assert r.status_code == 400
    anonymous = srv.client()
    assert anonymous.post(URL + "model", json={}).status_code == 401
    assert lab.asked == []
