"""The OpenAPI 3.1 document of an app, generated from what it serves.

Each route of the host declares its operation (:mod:`levqor_host.web.operations`); the
document walks the app's URL map, so it lists exactly the routes served: the path and its
parameters from the rule, security from the access declaration (``public`` routes need no
credentials, ``requires(scope)`` ones carry ``x-levqor-scope``), the request body and answers
from the declaration and its pydantic models (under ``components/schemas``). A plugin's
blueprint documents its routes with an ``openapi_paths`` attribute (plugins do not import the
host); those operations get their endpoint as ``operationId`` too.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Iterator, Mapping
from typing import Any

from flask import Flask
from levqor_kernel.access import access_of
from levqor_kernel.pipeline import PIPELINE_SCHEMA
from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from levqor_host import __version__
from levqor_host.web.operations import (
    ERROR,
    STANDARD_ERRORS,
    Answer,
    Error,
    Operation,
    operation_of,
)

REF = "#/components/schemas/{model}"
_ARG = re.compile(r"<(?:(\w+)(?:\([^)]*\))?:)?(\w+)>")
_EXTENSION = "levqor_openapi"


def openapi_document(app: Flask) -> dict[str, Any]:
    """The document of ``app`` (built once per app: its routes are fixed once it serves)."""
    doc = app.extensions.get(_EXTENSION)
    if doc is None:
        doc = app.extensions[_EXTENSION] = _build(app)
    return doc


def _build(app: Flask) -> dict[str, Any]:
    declared: list[tuple[str, str, str, Operation, Any]] = []
    paths: dict[str, dict[str, Any]] = {}
    for path, method, endpoint, view in _served(app):
        op = _operation(app, endpoint, view)
        if op is not None:
            declared.append((path, method, endpoint, op, view))
            continue
        documented = _plugin_documented(app, endpoint, path, method)
        if documented is not None:
            paths.setdefault(path, {})[method] = {"operationId": endpoint, **documented}
    schemas = _schemas([op for *_, op, _view in declared])
    for path, method, endpoint, op, view in declared:
        paths.setdefault(path, {})[method] = _describe(op, endpoint, view, path, schemas)
    cfg = app.extensions["levqor"].config
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Levqor API",
            "version": __version__,
            "description": "Pipelines, credentials, runs and triggers. Authenticate with "
            "'Authorization: Bearer lvq_...'.",
        },
        "servers": [{"url": cfg.base_url}],
        "security": [{"bearer": []}],
        "components": {
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer", "description": "a Levqor API key"}
            },
            "schemas": schemas.components,
        },
        "paths": dict(sorted(paths.items())),
    }


def _served(app: Flask) -> Iterator[tuple[str, str, str, Any]]:
    """(OpenAPI path, method, endpoint, view) of every route but Flask's own static folder."""
    for rule in app.url_map.iter_rules():
        if rule.endpoint == "static":
            continue
        path = _ARG.sub(lambda m: "{" + m.group(2) + "}", rule.rule)
        for method in sorted((rule.methods or set()) - {"HEAD", "OPTIONS"}):
            yield path, method.lower(), rule.endpoint, app.view_functions.get(rule.endpoint)


def _blueprint(app: Flask, endpoint: str) -> Any:
    return app.blueprints.get(endpoint.rpartition(".")[0]) if "." in endpoint else None


def _operation(app: Flask, endpoint: str, view: Any) -> Operation | None:
    if endpoint.endswith(".static"):  # a blueprint's static folder: declared on the blueprint
        return operation_of(_blueprint(app, endpoint))
    return operation_of(view)


def _plugin_documented(app: Flask, endpoint: str, path: str, method: str) -> dict | None:
    bp = _blueprint(app, endpoint)
    ops = (getattr(bp, "openapi_paths", None) or {}).get(path) or {}
    found = ops.get(method)
    return copy.deepcopy(found) if isinstance(found, dict) else None


class _Schemas:
    """The components of the document and the reference of each model in it."""

    def __init__(self, components: dict[str, Any], refs: dict[type[BaseModel], dict]) -> None:
        self.components = components
        self.refs = refs

    def of(self, schema: type[BaseModel] | Mapping[str, Any]) -> dict[str, Any]:
        if isinstance(schema, type):
            return dict(self.refs[schema])
        return copy.deepcopy(dict(schema))


def _models(ops: list[Operation]) -> list[type[BaseModel]]:
    found: dict[type[BaseModel], None] = {Error: None}
    for op in ops:
        if op.body is not None:
            found[op.body] = None
        for a in op.responses.values():
            if isinstance(a.schema, type):
                found[a.schema] = None
    return list(found)


def _schemas(ops: list[Operation]) -> _Schemas:
    models = _models(ops)
    refs, defs = models_json_schema([(m, "validation") for m in models], ref_template=REF)
    pipeline = copy.deepcopy(PIPELINE_SCHEMA)
    pipeline.pop("$schema", None)
    pipeline.pop("$id", None)
    # the document's own definitions (step, steps, condition) become components of their own
    inner = {f"Pipeline{k.title()}": v for k, v in pipeline.pop("$defs", {}).items()}
    components = {
        **defs.get("$defs", {}),
        **_rebase_refs(inner),
        "PipelineDocument": _rebase_refs(pipeline),
    }
    return _Schemas(components, {m: refs[(m, "validation")] for m in models})


def _rebase_refs(value: Any) -> Any:
    """``value`` with the pipeline schema's ``#/$defs/<name>`` refs pointing at components."""
    if isinstance(value, dict):
        out = {k: _rebase_refs(v) for k, v in value.items()}
        ref = out.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/$defs/"):
            out["$ref"] = f"#/components/schemas/Pipeline{ref.removeprefix('#/$defs/').title()}"
        return out
    if isinstance(value, list):
        return [_rebase_refs(v) for v in value]
    return value


def _answer(a: Answer, schemas: _Schemas) -> dict[str, Any]:
    if a.media is not None:
        return {"description": a.description, "content": {k: dict(v) for k, v in a.media.items()}}
    if a.schema is None:
        return {"description": a.description}
    return {
        "description": a.description,
        "content": {"application/json": {"schema": schemas.of(a.schema)}},
    }


def _parameters(op: Operation, path: str) -> list[dict[str, Any]]:
    declared = {p.name: p for p in op.params if p.where == "path"}
    out = []
    for name in re.findall(r"{(\w+)}", path):
        schema = dict(declared[name].schema) if name in declared else {"type": "string"}
        out.append({"name": name, "in": "path", "required": True, "schema": schema})
    out.extend(p.to_openapi() for p in op.params if p.where != "path")
    return out


def _describe(
    op: Operation, endpoint: str, view: Any, path: str, schemas: _Schemas
) -> dict[str, Any]:
    responses = {str(code): _answer(a, schemas) for code, a in op.responses.items()}
    if op.standard_errors:
        for code in STANDARD_ERRORS:
            responses.setdefault(str(code), _answer(ERROR, schemas))
    out: dict[str, Any] = {
        "operationId": endpoint,
        "summary": op.summary,
        "description": op.description,
        "tags": [op.tag],
        "responses": responses,
    }
    params = _parameters(op, path)
    if params:
        out["parameters"] = params
    if op.body is not None:
        out["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": schemas.of(op.body)}},
        }
    elif op.request_body is not None:
        out["requestBody"] = copy.deepcopy(dict(op.request_body))
    access = access_of(view)
    if access is None and endpoint.endswith(".static") or (access and access.kind == "public"):
        out["security"] = []
    elif access is not None and access.kind == "scope":
        out["x-levqor-scope"] = access.scope
    return out
