"""The OpenAPI 3.1 document of the API (a test checks it against the app's routes)."""

from __future__ import annotations

import copy
from typing import Any

from levqor_kernel.pipeline import PIPELINE_SCHEMA

from levqor_host import __version__
from levqor_host.errors import MAX_VERSION


def _ref(name: str) -> dict:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict, description: str = "OK") -> dict:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


ERR = _json(_ref("Error"), "Error")
STD_ERRORS = {"400": ERR, "401": ERR, "403": ERR, "404": ERR, "413": ERR, "415": ERR, "429": ERR}

TS = {"type": ["string", "null"], "format": "date-time"}

SCHEMAS: dict[str, Any] = {
    "Error": {
        "type": "object",
        "required": ["error"],
        "properties": {
            "error": {
                "type": "object",
                "required": ["code", "message"],
                "properties": {
                    "code": {"type": "string"},
                    "message": {"type": "string"},
                    "details": {"type": "object"},
                },
            }
        },
    },
    "Problem": {
        "type": "object",
        "required": ["pointer", "message"],
        "properties": {
            "pointer": {"type": "string"},
            "message": {"type": "string"},
            "step": {"type": "string"},
        },
    },
    "PipelineSummary": {
        "type": "object",
        "required": ["id", "name", "version", "archived", "webhook_url"],
        "properties": {
            "id": {"type": "string"},
            "name": {"type": "string"},
            "version": {"type": "integer"},
            "archived": {"type": "boolean"},
            "created_at": TS,
            "updated_at": TS,
            "webhook_url": {
                "type": ["string", "null"],
                "description": "POST here to start a run; null unless the trigger is a webhook",
            },
            "has_webhook_secret": {"type": "boolean"},
            "trigger": {"type": "string"},
        },
    },
    "PipelineOut": {
        "allOf": [{"$ref": "#/components/schemas/PipelineSummary"}],
        "properties": {
            "pipeline": {"type": "object"},
            "warnings": {"type": "array", "items": _ref("Problem")},
        },
    },
    "PipelineIn": {
        "type": "object",
        "required": ["pipeline"],
        "additionalProperties": False,
        "properties": {
            "name": {"type": "string", "minLength": 1, "maxLength": 200},
            "pipeline": _ref("PipelineDocument"),
        },
    },
    "Credential": {
        "type": "object",
        "required": ["id", "name", "connector"],
        "properties": {
            "id": {"type": "string"},
            "name": {"type": "string"},
            "connector": {"type": "string"},
            "created_at": TS,
        },
    },
    "CredentialIn": {
        "type": "object",
        "required": ["name", "connector", "values"],
        "additionalProperties": False,
        "properties": {
            "name": {"type": "string", "minLength": 1, "maxLength": 100},
            "connector": {"type": "string"},
            "values": {
                "type": "object",
                "description": "as the connector's credential schema says",
            },
        },
    },
    "RunIn": {
        "type": "object",
        "required": ["pipeline_id"],
        "additionalProperties": False,
        "properties": {
            "pipeline_id": {"type": "string"},
            "input": {"description": "trigger data, available to templates as trigger.*"},
            "idempotency_key": {"type": "string", "minLength": 1, "maxLength": 200},
            "version": {"type": "integer", "minimum": 1, "maximum": MAX_VERSION},
        },
    },
    "RunAccepted": {
        "type": "object",
        "required": ["run_id", "status"],
        "properties": {
            "run_id": {"type": "string"},
            "status": {"type": "string"},
            "created": {"type": "boolean"},
            "output": {},
            "error": {},
        },
    },
    "Step": {
        "type": "object",
        "required": ["id", "status", "attempts"],
        "properties": {
            "id": {"type": "string"},
            "position": {"type": "integer"},
            "connector": {"type": "string"},
            "action": {"type": "string"},
            "status": {"enum": ["running", "succeeded", "failed", "skipped", "cancelled"]},
            "attempts": {"type": "integer"},
            "input": {},
            "output": {},
            "error": {},
            "started_at": TS,
            "finished_at": TS,
        },
    },
    "Run": {
        "type": "object",
        "required": ["id", "pipeline_id", "version", "status"],
        "properties": {
            "id": {"type": "string"},
            "pipeline_id": {"type": "string"},
            "version": {"type": "integer"},
            "status": {"enum": ["queued", "running", "succeeded", "failed", "cancelled"]},
            "trigger": {"type": ["string", "null"]},
            "input": {},
            "error": {},
            "retry_of": {"type": ["string", "null"]},
            "cancel_requested": {"type": "boolean"},
            "created_at": TS,
            "started_at": TS,
            "finished_at": TS,
            "steps": {"type": "array", "items": _ref("Step")},
        },
    },
}


def _op(
    summary: str,
    responses: dict,
    *,
    body: dict | None = None,
    scope: str | None = None,
    params: list | None = None,
    public: bool = False,
    tag: str = "",
) -> dict:
    op: dict[str, Any] = {"summary": summary, "responses": {**responses, **STD_ERRORS}}
    if tag:
        op["tags"] = [tag]
    if body is not None:
        op["requestBody"] = {"required": True, "content": {"application/json": {"schema": body}}}
    if params:
        op["parameters"] = params
    if public:
        op["security"] = []
    elif scope:
        op["x-levqor-scope"] = scope
    return op


def _path_param(name: str, schema: dict | None = None) -> dict:
    return {"name": name, "in": "path", "required": True, "schema": schema or {"type": "string"}}


def _q(name: str, schema: dict, desc: str = "") -> dict:
    return {"name": name, "in": "query", "required": False, "schema": schema, "description": desc}


#: on every creating POST (see levqor_host.web.api.idempotency)
IDEMPOTENCY_KEY = {
    "name": "Idempotency-Key",
    "in": "header",
    "required": False,
    "schema": {"type": "string", "minLength": 1, "maxLength": 200},
    "description": "retries with the same key and request get the first success again "
    "(Idempotent-Replayed: true) and create nothing; 422 idempotency_key_reused with another "
    "request, 409 idempotency_key_in_use while the first is running",
}

WAIT = _q(
    "wait", {"type": "number", "minimum": 0, "maximum": 60}, "seconds to wait for the run to finish"
)


def paths() -> dict:
    pid = _path_param("pipeline_id")
    rid = _path_param("run_id")
    return {
        "/health": {
            "get": _op("Liveness", {"200": _json({"type": "object"})}, public=True, tag="ops")
        },
        "/api/v1/openapi.json": {
            "get": _op("This document", {"200": _json({"type": "object"})}, public=True, tag="meta")
        },
        "/api/v1/connectors": {
            "get": _op(
                "The installed connector catalog",
                {"200": _json({"type": "object"})},
                scope="pipelines:read",
                tag="catalog",
            )
        },
        "/api/v1/me": {
            "get": _op("The signed-in user", {"200": _json({"type": "object"})}, tag="users")
        },
        "/api/v1/pipelines": {
            "get": _op(
                "List pipelines",
                {
                    "200": _json(
                        {
                            "type": "object",
                            "properties": {
                                "items": {"type": "array", "items": _ref("PipelineSummary")}
                            },
                        }
                    )
                },
                scope="pipelines:read",
                params=[_q("archived", {"type": "boolean"})],
                tag="pipelines",
            ),
            "post": _op(
                "Create a pipeline (version 1)",
                {"201": _json(_ref("PipelineOut")), "409": ERR, "422": ERR},
                body=_ref("PipelineIn"),
                scope="pipelines:write",
                params=[IDEMPOTENCY_KEY],
                tag="pipelines",
            ),
        },
        "/api/v1/pipelines/{pipeline_id}": {
            "get": _op(
                "Get a pipeline",
                {"200": _json(_ref("PipelineOut"))},
                scope="pipelines:read",
                params=[pid],
                tag="pipelines",
            ),
            "put": _op(
                "Update a pipeline (a new version)",
                {"200": _json(_ref("PipelineOut")), "422": ERR},
                body=_ref("PipelineIn"),
                scope="pipelines:write",
                params=[pid],
                tag="pipelines",
            ),
            "delete": _op(
                "Archive a pipeline",
                {"200": _json({"type": "object"})},
                scope="pipelines:write",
                params=[pid],
                tag="pipelines",
            ),
        },
        "/api/v1/pipelines/{pipeline_id}/versions": {
            "get": _op(
                "List versions",
                {"200": _json({"type": "object"})},
                scope="pipelines:read",
                params=[pid],
                tag="pipelines",
            ),
        },
        "/api/v1/pipelines/{pipeline_id}/versions/{version}": {
            "get": _op(
                "Get one version",
                {"200": _json({"type": "object"})},
                scope="pipelines:read",
                params=[
                    pid,
                    _path_param("version", {"type": "integer", "minimum": 1, "maximum": MAX_VERSION}),
                ],
                tag="pipelines",
            ),
        },
        "/api/v1/pipelines/{pipeline_id}/webhook-secret": {
            "post": _op(
                "Create or replace the webhook HMAC secret (shown once)",
                {"200": _json({"type": "object"})},
                scope="pipelines:write",
                params=[pid],
                tag="pipelines",
            ),
            "delete": _op(
                "Remove the webhook secret",
                {"200": _json({"type": "object"})},
                scope="pipelines:write",
                params=[pid],
                tag="pipelines",
            ),
        },
        "/api/v1/credentials": {
            "get": _op(
                "List credentials (names and connectors only)",
                {
                    "200": _json(
                        {
                            "type": "object",
                            "properties": {"items": {"type": "array", "items": _ref("Credential")}},
                        }
                    )
                },
                scope="pipelines:read",
                tag="credentials",
            ),
            "post": _op(
                "Add a credential (stored encrypted, never returned)",
                {"201": _json(_ref("Credential")), "409": ERR, "422": ERR},
                body=_ref("CredentialIn"),
                scope="credentials:write",
                params=[IDEMPOTENCY_KEY],
                tag="credentials",
            ),
        },
        "/api/v1/credentials/{cred_id}": {
            "delete": _op(
                "Delete a credential",
                {"200": _json({"type": "object"})},
                scope="credentials:write",
                params=[_path_param("cred_id")],
                tag="credentials",
            ),
        },
        "/api/v1/credentials/{cred_id}/test": {
            "post": _op(
                "Test a credential against its service",
                {"200": _json({"type": "object"})},
                scope="credentials:write",
                params=[_path_param("cred_id")],
                tag="credentials",
            ),
        },
        "/api/v1/run": {
            "post": _op(
                "Start a run",
                {
                    "202": _json(_ref("RunAccepted")),
                    "200": _json(_ref("Run")),
                    "402": ERR,
                    "409": ERR,
                    "422": ERR,
                },
                body=_ref("RunIn"),
                scope="runs:execute",
                params=[WAIT, IDEMPOTENCY_KEY],
                tag="runs",
            ),
        },
        "/api/v1/runs": {
            "get": _op(
                "List runs (newest first, cursor pagination)",
                {
                    "200": _json(
                        {
                            "type": "object",
                            "properties": {
                                "items": {"type": "array", "items": _ref("Run")},
                                "next_cursor": {"type": ["string", "null"]},
                            },
                        }
                    )
                },
                scope="pipelines:read",
                params=[
                    _q("pipeline_id", {"type": "string"}),
                    _q(
                        "status",
                        {"enum": ["queued", "running", "succeeded", "failed", "cancelled"]},
                    ),
                    _q("limit", {"type": "integer", "minimum": 1, "maximum": 200}),
                    _q("cursor", {"type": "string"}),
                ],
                tag="runs",
            ),
        },
        "/api/v1/runs/{run_id}": {
            "get": _op(
                "Get a run with its steps",
                {"200": _json(_ref("Run"))},
                scope="pipelines:read",
                params=[rid],
                tag="runs",
            ),
        },
        "/api/v1/runs/{run_id}/cancel": {
            "post": _op(
                "Cancel a run",
                {"200": _json(_ref("Run"))},
                scope="runs:execute",
                params=[rid],
                tag="runs",
            ),
        },
        "/api/v1/runs/{run_id}/retry": {
            "post": _op(
                "Retry a failed run from its failed step",
                {
                    "202": _json(_ref("RunAccepted")),
                    "200": _json(_ref("Run")),
                    "409": ERR,
                    "422": ERR,
                },
                scope="runs:execute",
                params=[rid, WAIT, IDEMPOTENCY_KEY],
                tag="runs",
            ),
        },
        "/hooks/{token}": {
            "post": {
                **_op(
                    "Webhook trigger",
                    {"202": _json(_ref("RunAccepted")), "200": _json(_ref("RunAccepted"))},
                    public=True,
                    params=[
                        _path_param("token"),
                        {
                            "name": "X-Levqor-Delivery",
                            "in": "header",
                            "required": False,
                            "schema": {"type": "string"},
                        },
                    ],
                    tag="triggers",
                ),
                "requestBody": {
                    "required": False,
                    "content": {
                        "application/json": {"schema": {}},
                        "application/x-www-form-urlencoded": {"schema": {"type": "object"}},
                    },
                },
            }
        },
    }


def openapi_document(state: Any = None) -> dict:
    doc_schema = copy.deepcopy(PIPELINE_SCHEMA)
    doc_schema.pop("$schema", None)
    doc_schema.pop("$id", None)
    schemas = {**SCHEMAS, "PipelineDocument": doc_schema}
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Levqor API",
            "version": __version__,
            "description": "Pipelines, credentials, runs and triggers. Authenticate with "
            "'Authorization: Bearer lvq_...'.",
        },
        "servers": [{"url": state.config.base_url if state is not None else "/"}],
        "security": [{"bearer": []}],
        "components": {
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer", "description": "a Levqor API key"}
            },
            "schemas": schemas,
        },
        "paths": {**paths(), **_blueprint_paths()},
    }


def _blueprint_paths() -> dict:
    """Paths documented by other blueprints: each may carry an ``openapi_paths`` dict (a plugin's
    blueprint too), merged here so the document always matches what is served."""
    from flask import current_app, has_app_context

    if not has_app_context():
        return {}
    out: dict = {}
    for bp in current_app.blueprints.values():
        for path, ops in (getattr(bp, "openapi_paths", None) or {}).items():
            out.setdefault(path, {}).update(ops)
    return out
