"""The OpenAPI document is generated from the routes' declarations: every operation is described
and served, and the declarations check the input they describe (400 with our error body)."""

from __future__ import annotations

import re

import pytest
from e2e_support import LiveServer, make_app
from jsonschema import Draft202012Validator
from levqor_host.web.openapi import openapi_document
from levqor_host.web.operations import operation_of

DOC = {
    "levqor": 1,
    "trigger": {"type": "manual"},
    "steps": [{"id": "a", "connector": "core", "action": "transform", "payload": {"value": 1}}],
}


@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    s = LiveServer(make_app(tmp_path_factory.mktemp("openapi"), start_workers=False))
    yield s
    s.stop()


@pytest.fixture(scope="module")
def client(srv):
    return srv.client(srv.user_with_key("openapi@example.com")[1])


@pytest.fixture(scope="module")
def doc(srv):
    return srv.client().get("/api/v1/openapi.json").json()


def _operations(doc):
    for path, ops in doc["paths"].items():
        for method, op in ops.items():
            yield path, method, op


def test_every_operation_has_an_operation_id_summary_and_description(srv, doc):
    ids = []
    for path, method, op in _operations(doc):
        ids.append(op.get("operationId"))
        assert op.get("operationId"), (method, path)
        assert op.get("summary", "").strip(), (method, path)
        view = srv.app.view_functions[op["operationId"]]
        if operation_of(view) is not None or op["operationId"].startswith("dashboard."):
            # the host's own operations: a description beyond the summary, and a tag
            assert len(op.get("description", "").strip()) > 20, (method, path)
            assert op.get("tags"), (method, path)
    assert len(ids) == len(set(ids)), "operationIds are unique"


def test_every_host_route_declares_its_operation(srv):
    undeclared = []
    for rule in srv.app.url_map.iter_rules():
        view = srv.app.view_functions[rule.endpoint]
        if rule.endpoint == "static" or not view.__module__.startswith("levqor_host"):
            continue
        if rule.endpoint.endswith(".static"):
            bp = srv.app.blueprints[rule.endpoint.rpartition(".")[0]]
            if operation_of(bp) is None:
                undeclared.append(rule.rule)
        elif operation_of(view) is None:
            undeclared.append(rule.rule)
    assert undeclared == []


def test_every_documented_operation_is_served_by_its_operation_id(srv, doc):
    adapter = srv.app.url_map.bind("localhost")
    for path, method, op in _operations(doc):
        concrete = re.sub(
            r"{(\w+)}", lambda m: "1" if m.group(1) == "version" else f"x-{m.group(1)}", path
        )
        endpoint, _args = adapter.match(concrete, method=method.upper())
        assert endpoint == op["operationId"], (method, path)


def test_the_document_is_the_same_object_the_server_answers(srv, doc):
    assert openapi_document(srv.app) == doc
    assert doc["openapi"] == "3.1.0"
    for schema in doc["components"]["schemas"].values():
        Draft202012Validator.check_schema(schema)


def test_security_follows_the_access_declarations(doc):
    create = doc["paths"]["/api/v1/pipelines"]["post"]
    assert create["x-levqor-scope"] == "pipelines:write" and "security" not in create
    assert doc["paths"]["/health"]["get"]["security"] == []
    me = doc["paths"]["/api/v1/me"]["get"]
    assert "security" not in me and "x-levqor-scope" not in me
    params = {p["name"]: p for p in create["parameters"]}
    assert params["Idempotency-Key"]["in"] == "header"
    version = doc["paths"]["/api/v1/pipelines/{pipeline_id}/versions/{version}"]["get"]
    schema = {p["name"]: p["schema"] for p in version["parameters"]}
    assert schema["version"]["type"] == "integer" and schema["pipeline_id"] == {"type": "string"}


def test_request_bodies_are_the_models_that_check_them(doc):
    body = doc["paths"]["/api/v1/pipelines"]["post"]["requestBody"]["content"]
    ref = body["application/json"]["schema"]["$ref"]
    pipeline_in = doc["components"]["schemas"][ref.rsplit("/", 1)[1]]
    assert pipeline_in["additionalProperties"] is False
    assert pipeline_in["required"] == ["pipeline"]
    run_in = doc["components"]["schemas"]["RunIn"]
    assert run_in["properties"]["version"]["anyOf"][0]["maximum"] == 2**31 - 1


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"pipeline": DOC, "colour": "red"}, "unknown field(s): colour"),
        ({"name": "x"}, "missing field: pipeline"),
        ({"pipeline": "not an object"}, "field pipeline has the wrong type"),
        ({"pipeline": DOC, "name": 7}, "field name has the wrong type"),
        ({"pipeline": DOC, "name": "x" * 201}, "name must be 1-200 characters"),
        ([DOC], "the body must be a JSON object"),
    ],
)
def test_a_body_off_its_declaration_is_a_400_with_our_error(client, body, message):
    r = client.post("/api/v1/pipelines", json=body)
    assert r.status_code == 400, r.text
    assert r.json() == {"error": {"code": "invalid_request", "message": message}}


def test_integers_are_strict_and_bounded(client):
    c = client
    pid = c.post("/api/v1/pipelines", json={"pipeline": DOC}).json()["id"]
    for version, message in (
        (True, "field version has the wrong type"),
        (1.0, "field version has the wrong type"),
        (0, "version must be between 1 and 2147483647"),
    ):
        r = c.post("/api/v1/run", json={"pipeline_id": pid, "version": version})
        assert r.status_code == 400 and r.json()["error"]["message"] == message, r.text
    r = c.post("/api/v1/run", json={"pipeline_id": pid, "input": 2**64})
    assert r.status_code == 400 and r.json()["error"]["message"] == "field input is out of range"


def test_query_parameters_are_checked_by_their_declaration(client):
    c = client
    for query, message in (
        ("limit=0", "limit must be between 1 and 200"),
        ("limit=x", "limit must be an integer"),
        ("status=done", "status must be one of queued, running, waiting, succeeded, failed, cancelled"),
    ):
        r = c.get(f"/api/v1/runs?{query}")
        assert r.status_code == 400, r.text
        assert r.json()["error"] == {"code": "invalid_request", "message": message}
    assert c.get("/api/v1/runs?limit=1").json()["items"] == []


def test_the_body_limits_and_the_json_parser_come_first(client):
    c = client
    headers = {"Content-Type": "application/json"}
    r = c.post("/api/v1/pipelines", data=b'{"pipeline": {"x": "\\udcff"}}', headers=headers)
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_json"
    r = c.post("/api/v1/pipelines", data=b"{}", headers={"Content-Type": "text/plain"})
    assert r.status_code == 415
    r = c.post("/api/v1/errors", data=b'{"message": "' + b"x" * 70_000 + b'"}', headers=headers)
    assert r.status_code == 413 and r.json()["error"]["code"] == "body_too_large"
