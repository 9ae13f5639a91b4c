"""API errors: one JSON shape, the right status, never a stack trace."""

from __future__ import annotations

import json
import logging
from typing import Any

from flask import Flask, jsonify, request
from werkzeug.exceptions import HTTPException

log = logging.getLogger("levqor.api")


class ApiError(Exception):
    """``{"error": {"code", "message", "details"}}`` with ``status``."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        details: dict | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.details = details
        self.headers = headers or {}

    def response(self):
        body: dict[str, Any] = {"error": {"code": self.code, "message": self.message}}
        if self.details:
            body["error"]["details"] = self.details
        resp = jsonify(body)
        resp.status_code = self.status
        for k, v in self.headers.items():
            resp.headers[k] = v
        return resp


def _depth(value: Any, limit: int) -> bool:
    """True when ``value`` nests deeper than ``limit`` (iterative, no recursion)."""
    stack = [(value, 1)]
    while stack:
        v, d = stack.pop()
        if d > limit:
            return True
        if isinstance(v, dict):
            stack.extend((x, d + 1) for x in v.values())
        elif isinstance(v, list):
            stack.extend((x, d + 1) for x in v)
    return False


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
    try:
        value = json.loads(
            raw.decode("utf-8"), parse_constant=lambda c: (_ for _ in ()).throw(ValueError(c))
        )
    except UnicodeDecodeError:
        raise ApiError(400, "invalid_json", "body is not UTF-8") from None
    except RecursionError:
        raise ApiError(400, "invalid_json", f"JSON nested deeper than {max_depth} levels") from None
    except ValueError as e:
        raise ApiError(400, "invalid_json", f"malformed JSON: {e}") from None
    if _depth(value, max_depth):
        raise ApiError(400, "invalid_json", f"JSON nested deeper than {max_depth} levels")
    return value


def check_fields(
    body: Any, allowed: dict[str, type | tuple], required: tuple[str, ...] = ()
) -> dict:
    """A JSON object with only ``allowed`` fields of the right types (400 otherwise)."""
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
    return body


def register_error_handlers(app: Flask) -> None:
    @app.errorhandler(ApiError)
    def _api_error(e: ApiError):
        return e.response()

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
