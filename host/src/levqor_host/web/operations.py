"""One declaration per route: what it takes, what it answers and how it is described.

Every host route carries an :func:`operation` under its access declaration::

    @bp.post("/pipelines")
    @require("pipelines:write")
    @operation(
        "Create a pipeline (version 1)",
        "Validates the document; a credential not added yet is a warning, not a refusal.",
        tag="pipelines",
        body=PipelineIn,
        responses={201: answer(PipelineOut), 409: ERROR, 422: ERROR},
        params=[IDEMPOTENCY_KEY],
    )
    def create_pipeline(body: PipelineIn): ...

The declaration validates the input before the view runs: the JSON body goes through the one
parser of every route (:func:`levqor_host.web.errors.json_body`: size limit, malformed JSON, NaN,
unpaired surrogates, nesting) and then through the pydantic model ``body``, in strict mode and
with unknown fields refused; the view receives the model as ``body``. A refusal is our usual
400 ``invalid_request`` naming the field. Query parameters declared with :func:`query` (and a
``parse``) are checked the same way and passed to the view by name.

:mod:`levqor_host.web.openapi` generates the OpenAPI document from these declarations; the
``operationId`` of an operation is its Flask endpoint (``api.create_pipeline``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from functools import wraps
from typing import Any, Literal

from flask import current_app, request
from pydantic import BaseModel, ConfigDict, ValidationError

from levqor_host.errors import MAX_INT, ApiError
from levqor_host.web.errors import json_body

#: the attribute holding the declaration on a view function
ATTRIBUTE = "levqor_operation"


class Body(BaseModel):
    """Base of request bodies: strict JSON types (no coercion, a bool is no integer), unknown
    fields refused, ``null`` only where a field says so."""

    model_config = ConfigDict(strict=True, extra="forbid")


@dataclass(frozen=True)
class Param:
    """A parameter outside the body: in the ``query``, a ``header`` or the ``path``.

    A query parameter with a ``parse`` (``str -> value``, raising :class:`ValueError` with the
    message to answer) is read and checked before the view runs and passed to it by name
    (``default`` when absent); without one it is only described."""

    name: str
    where: Literal["query", "header", "path"]
    schema: Mapping[str, Any]
    description: str = ""
    parse: Callable[[str], Any] | None = None
    default: Any = None

    def to_openapi(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "name": self.name,
            "in": self.where,
            "required": self.where == "path",
            "schema": dict(self.schema),
        }
        if self.description:
            out["description"] = self.description
        return out


def query(
    name: str,
    schema: Mapping[str, Any],
    description: str = "",
    *,
    parse: Callable[[str], Any] | None = None,
    default: Any = None,
) -> Param:
    """A query parameter (see :class:`Param`)."""
    return Param(name, "query", schema, description, parse, default)


def header(name: str, schema: Mapping[str, Any], description: str = "") -> Param:
    """A request header the operation reads."""
    return Param(name, "header", schema, description)


def path(name: str, schema: Mapping[str, Any]) -> Param:
    """The schema of a path segment (the default comes from the route's converter)."""
    return Param(name, "path", schema)


def bounded_int(name: str, low: int, high: int, message: str | None = None) -> Callable[[str], int]:
    """A parser of a whole number between ``low`` and ``high``, refusing with a message that
    names ``name``."""

    def parse(raw: str) -> int:
        try:
            value = int(raw)
        except ValueError:
            raise ValueError(message or f"{name} must be a whole number") from None
        if not low <= value <= high:
            raise ValueError(f"{name} must be between {low} and {high}")
        return value

    return parse


def one_of(name: str, values: Iterable[str]) -> Callable[[str], str]:
    """A parser of one of ``values``."""
    allowed = tuple(values)

    def parse(raw: str) -> str:
        if raw not in allowed:
            raise ValueError(f"{name} must be one of {', '.join(allowed)}")
        return raw

    return parse


#: on every creating POST (see :mod:`levqor_host.web.api.idempotency`)
IDEMPOTENCY_KEY = header(
    "Idempotency-Key",
    {"type": "string", "minLength": 1, "maxLength": 200},
    "retries with the same key and request get the first success again "
    "(Idempotent-Replayed: true) and create nothing; 422 idempotency_key_reused with another "
    "request, 409 idempotency_key_in_use while the first is running",
)


class ErrorDetail(BaseModel):
    code: str
    message: str
    details: dict[str, Any] = {}


class Error(BaseModel):
    """Every error answer: ``{"error": {"code", "message", "details"?}}``."""

    error: ErrorDetail


@dataclass(frozen=True)
class Answer:
    """One documented answer: a description and the schema of its body (a pydantic model, a
    JSON Schema, or none) in ``media`` (``None``: a body whose schema is not described)."""

    description: str = "OK"
    schema: type[BaseModel] | Mapping[str, Any] | None = None
    media: Mapping[str, Mapping[str, Any]] | None = None


def answer(
    schema: type[BaseModel] | Mapping[str, Any] | None = None, description: str = "OK"
) -> Answer:
    """A JSON answer with ``schema``."""
    return Answer(description, schema)


def content(description: str, *media_types: str) -> Answer:
    """An answer in other media types than JSON (HTML, text, files), its body undescribed."""
    return Answer(description, None, {m: {} for m in media_types})


ERROR = answer(Error, "Error")
#: what any route may answer: bad input, no or wrong credentials, nothing there, too large,
#: not JSON, rate limited
STANDARD_ERRORS = (400, 401, 403, 404, 413, 415, 429)


@dataclass(frozen=True)
class Operation:
    """A route's declaration (see the module's docstring)."""

    summary: str
    description: str
    tag: str
    responses: Mapping[int, Answer]
    body: type[Body] | None = None
    params: tuple[Param, ...] = ()
    #: the request body's OpenAPI description when it is not a JSON ``body`` (webhooks)
    request_body: Mapping[str, Any] | None = None
    #: the body limit of this route from the config, when smaller than the app's
    max_bytes: Callable[[Any], int] | None = None
    standard_errors: bool = True


def declare(
    summary: str,
    description: str,
    *,
    tag: str,
    responses: Mapping[int, Answer],
    body: type[Body] | None = None,
    params: Iterable[Param] = (),
    request_body: Mapping[str, Any] | None = None,
    max_bytes: Callable[[Any], int] | None = None,
    standard_errors: bool = True,
) -> Operation:
    """An :class:`Operation` (:func:`operation` puts one on a view)."""
    return Operation(
        summary,
        description,
        tag,
        dict(responses),
        body,
        tuple(params),
        request_body,
        max_bytes,
        standard_errors,
    )


def operation(
    summary: str, description: str, **kw: Any
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Declare a route's operation (the arguments of :func:`declare`) and check its input
    before it runs. Put it under the access declaration (and under ``@idempotent``, which
    answers a replay before the input is read)."""
    op = declare(summary, description, **kw)
    parsed = [p for p in op.params if p.parse is not None]

    def deco(fn: Callable[..., Any]) -> Callable[..., Any]:
        if op.body is None and not parsed:
            view = fn
        else:

            @wraps(fn)
            def view(*args: Any, **kwargs: Any) -> Any:
                for p in parsed:
                    kwargs[p.name] = read_query(p)
                if op.body is not None:
                    kwargs["body"] = read_body(op.body, op.max_bytes)
                return fn(*args, **kwargs)

        setattr(view, ATTRIBUTE, op)
        return view

    return deco


def document_static_files(bp: Any, op: Operation) -> None:
    """Declare the operation of a blueprint's static folder (a route Flask adds itself)."""
    setattr(bp, ATTRIBUTE, op)


def operation_of(view: Any) -> Operation | None:
    """The declaration ``view`` (or a blueprint, for its static folder) carries, or None."""
    found = getattr(view, ATTRIBUTE, None)
    return found if isinstance(found, Operation) else None


def read_query(param: Param) -> Any:
    """The checked value of a declared query parameter (400 ``invalid_request`` naming it)."""
    raw = request.args.get(param.name)
    if raw is None or param.parse is None:
        return param.default if raw is None else raw
    try:
        return param.parse(raw)
    except ValueError as e:
        raise ApiError(400, "invalid_request", str(e)) from None


def read_body(model: type[Body], max_bytes: Callable[[Any], int] | None = None) -> Any:
    """The request's JSON body checked against ``model`` (400 naming the first problem)."""
    cfg = current_app.extensions["levqor"].config
    data = json_body(cfg.web.max_json_depth, max_bytes=max_bytes(cfg) if max_bytes else None)
    if not isinstance(data, dict):
        raise ApiError(400, "invalid_request", "the body must be a JSON object")
    try:
        checked = model.model_validate(data)
    except ValidationError as e:
        raise refusal(model, e) from None
    for name, value in data.items():  # what both databases can hold, in any field
        if isinstance(value, int) and not -MAX_INT - 1 <= value <= MAX_INT:
            raise ApiError(400, "invalid_request", f"field {name} is out of range")
    return checked


_LIMITS = {
    "string_too_short",
    "string_too_long",
    "string_pattern_mismatch",
    "greater_than_equal",
    "less_than_equal",
    "greater_than",
    "less_than",
}


def refusal(model: type[BaseModel], e: ValidationError) -> ApiError:
    """The 400 answer of a body ``model`` refused: unknown fields first, then a missing one,
    then the first value of a wrong type or out of its bounds."""
    errors = e.errors()
    unknown = sorted(str(x["loc"][0]) for x in errors if x["type"] == "extra_forbidden")
    if unknown:
        return ApiError(400, "invalid_request", f"unknown field(s): {', '.join(unknown)}")
    for x in errors:
        if x["type"] == "missing":
            return ApiError(400, "invalid_request", f"missing field: {x['loc'][0]}")
    first = errors[0]
    name = str(first["loc"][0]) if first["loc"] else "body"
    if first["type"] in _LIMITS and name in model.model_fields:
        return ApiError(400, "invalid_request", _bounds_message(model, name))
    if first["type"] == "value_error" and len(first["loc"]) == 1:
        return ApiError(400, "invalid_request", f"field {name}: {first['ctx']['error']}")
    return ApiError(400, "invalid_request", f"field {name} has the wrong type")


def _bounds_message(model: type[BaseModel], name: str) -> str:
    limits: dict[str, Any] = {}
    for m in model.model_fields[name].metadata:
        for attr in ("min_length", "max_length", "ge", "le"):
            if getattr(m, attr, None) is not None:
                limits[attr] = getattr(m, attr)
    lo, hi = limits.get("min_length"), limits.get("max_length")
    if lo is not None and hi is not None:
        return f"{name} must be {lo}-{hi} characters"
    if hi is not None:
        return f"field {name} is longer than {hi} characters"
    if lo is not None:
        return f"field {name} is empty"
    return f"{name} must be between {limits.get('ge')} and {limits.get('le')}"
