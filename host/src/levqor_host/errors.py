"""API errors: one JSON shape, the right status, never a stack trace."""

from __future__ import annotations

import json
import logging
import math
import re
from typing import Any

from flask import Flask, jsonify, request
from levqor_kernel.host import HttpError, InsufficientCredits
from werkzeug.exceptions import HTTPException
from werkzeug.routing import IntegerConverter, Map

log = logging.getLogger("levqor.api")


class ApiError(HttpError):
    """``{"error": {"code", "message", "details"}}`` with ``status``: the kernel's
    :class:`~levqor_kernel.host.HttpError` (which plugins raise), rendered the same way."""

    def response(self):
        return render_http_error(self)


def render_http_error(e: HttpError):
    """The answer of an :class:`HttpError` (the host's or a plugin's): its status, its JSON
    body and its headers."""
    resp = jsonify(e.to_dict())
    resp.status_code = e.status
    for k, v in e.headers.items():
        resp.headers[k] = v
    return resp


#: The largest integer a URL segment or an integer body field may carry: what both databases
#: store (SQLite's INTEGER and PostgreSQL's BIGINT are signed 64-bit). Beyond it: 404 / 400.
MAX_INT = 2**63 - 1
#: The largest pipeline version: its columns are INTEGER, 32-bit on PostgreSQL.
MAX_VERSION = 2**31 - 1

_SURROGATE = re.compile("[\ud800-\udfff]")


class BoundedIntConverter(IntegerConverter):
    """``<int:...>`` in routes, bounded to :data:`MAX_INT` unless the route says ``max=``: a
    larger number matches no row, so it is a 404 instead of an overflow in the database."""

    def __init__(self, map: Map, *args: Any, max: int | None = None, **kwargs: Any) -> None:  # noqa: A002
        super().__init__(map, *args, max=MAX_INT if max is None else min(max, MAX_INT), **kwargs)


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"number {text[:40]} is too large")
    return value


def _problem(value: Any, limit: int) -> str | None:
    """What makes a decoded document unacceptable, or None: nesting deeper than ``limit``, or
    an unpaired surrogate in a key or a string (iterative, no recursion)."""
    stack = [(value, 1)]
    while stack:
        v, d = stack.pop()
        if isinstance(v, str):
            if not v.isascii() and _SURROGATE.search(v):
                return "a string holds an unpaired UTF-16 surrogate"
        elif isinstance(v, (dict, list)):
            if d > limit:
                return f"JSON nested deeper than {limit} levels"
            if isinstance(v, dict):
                stack.extend((k, d) for k in v)
                stack.extend((x, d + 1) for x in v.values())
            else:
                stack.extend((x, d + 1) for x in v)
    return None


def parse_json(raw: bytes, max_depth: int) -> Any:
    """Decode a request body as I-JSON (RFC 7493), the one parser every route uses.

    Refused with a 400 ``invalid_json`` ApiError naming the problem: text that is not UTF-8 or
    not JSON, ``NaN``/``Infinity``/``-Infinity`` and numbers too large for a float, an unpaired
    surrogate escape (``"\\udcff"``) in a key or a string, nesting deeper than ``max_depth``
    arrays/objects (``LEVQOR_MAX_JSON_DEPTH``)."""
    try:
        value = json.loads(
            raw.decode("utf-8"), parse_constant=_refuse_constant, parse_float=_finite_float
        )
    except UnicodeDecodeError:
        raise ApiError(400, "invalid_json", "body is not UTF-8") from None
    except RecursionError:
        raise ApiError(400, "invalid_json", f"JSON nested deeper than {max_depth} levels") from None
    except ValueError as e:
        raise ApiError(400, "invalid_json", f"malformed JSON: {e}") from None
    problem = _problem(value, max_depth)
    if problem:
        raise ApiError(400, "invalid_json", problem)
    return value


def json_body(max_depth: int, *, required: bool = True, max_bytes: int | None = None) -> Any:
    """The request's JSON body, or an ApiError naming the problem (400/413/415)."""
    raw = request.get_data(cache=True)
    if max_bytes is not None and len(raw) > max_bytes:
        raise ApiError(413, "body_too_large", f"request body larger than {max_bytes} bytes")
    if not raw:
        if required:
            raise ApiError(400, "invalid_json", "a JSON body is required")
        return {}
    ctype = (request.mimetype or "").lower()
    if ctype != "application/json" and not ctype.endswith("+json"):
        raise ApiError(415, "unsupported_media_type", "send the body as application/json")
    return parse_json(raw, max_depth)


def check_fields(
    body: Any, allowed: dict[str, type | tuple], required: tuple[str, ...] = ()
) -> dict:
    """A JSON object with only ``allowed`` fields of the right types, integers within
    :data:`MAX_INT` (400 otherwise)."""
    if not isinstance(body, dict):
        raise ApiError(400, "invalid_request", "the body must be a JSON object")
    unknown = sorted(set(body) - set(allowed))
    if unknown:
        raise ApiError(400, "invalid_request", f"unknown field(s): {', '.join(unknown)}")
    for name in required:
        if name not in body:
            raise ApiError(400, "invalid_request", f"missing field: {name}")
    for name, value in body.items():
        types = allowed[name]
        if value is None and name not in required:
            continue
        if isinstance(value, bool) and bool not in (
            types if isinstance(types, tuple) else (types,)
        ):
            raise ApiError(400, "invalid_request", f"field {name} has the wrong type")
        if not isinstance(value, types):
            raise ApiError(400, "invalid_request", f"field {name} has the wrong type")
        if isinstance(value, int) and not -MAX_INT - 1 <= value <= MAX_INT:
            raise ApiError(400, "invalid_request", f"field {name} is out of range")
    return body


def register_error_handlers(app: Flask) -> None:
    @app.errorhandler(HttpError)
    def _api_error(e: HttpError):
        if not e.user_fault:
            log.warning(
                "%s %s answered %s %s: %s", request.method, request.path, e.status, e.code,
                e.message,
            )
        return render_http_error(e)

    @app.errorhandler(InsufficientCredits)
    def _insufficient_credits(e: InsufficientCredits):
        # a debit a route did not expect to fail: the user's balance, never a 500
        return render_http_error(
            HttpError(
                402,
                "insufficient_credits",
                f"this needs {e.needed} credits and the balance is {e.balance}",
                {"needed": e.needed, "balance": e.balance},
            )
        )

    @app.errorhandler(HTTPException)
    def _http_error(e: HTTPException):
        code = {
            404: "not_found",
            405: "method_not_allowed",
            413: "body_too_large",
            400: "bad_request",
            415: "unsupported_media_type",
            429: "rate_limited",
        }.get(e.code or 500, "http_error")
        msg = {404: "not found", 413: "request body too large"}.get(
            e.code or 500, e.description or e.name
        )
        return ApiError(e.code or 500, code, msg).response()

    from sqlalchemy.exc import DataError, DBAPIError, OperationalError

    @app.errorhandler(DBAPIError)
    def _database_error(e: DBAPIError):
        if isinstance(e, DataError):
            # PostgreSQL refused a value SQLite takes (an integer beyond 32/64 bits, a NUL
            # character in text): the request's fault, never a 500
            return ApiError(
                400, "invalid_value", "a value in the request is out of range or not storable"
            ).response()
        # the database is away (restart, fail-over, killed connection): 503, the client retries
        if isinstance(e, OperationalError) or e.connection_invalidated:
            log.warning("database unavailable on %s %s: %s", request.method, request.path,
                        type(e.orig).__name__ if e.orig is not None else type(e).__name__)
            return ApiError(
                503, "database_unavailable", "the database cannot be reached right now; retry",
                headers={"Retry-After": "1"},
            ).response()
        return _unexpected(e)

    @app.errorhandler(Exception)
    def _unexpected(e: Exception):
        log.exception("unhandled error on %s %s", request.method, request.path)
        st = app.extensions.get("levqor")
        if st is not None and hasattr(st, "report_exception"):  # logs/errors.jsonl, Sentry
            route = request.url_rule.rule if request.url_rule is not None else "<unmatched>"
            st.report_exception(e, where="request", route=f"{request.method} {route}")
        return ApiError(500, "internal_error", "internal error").response()
