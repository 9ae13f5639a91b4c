"""How errors are answered over HTTP: one JSON shape, the right status, never a stack trace;
the request's JSON body through the host's one parser; bounded integers in URLs."""

from __future__ import annotations

import logging
from typing import Any

from flask import Flask, Response, jsonify, request
from levqor_kernel.host import HttpError, InsufficientCredits
from werkzeug.exceptions import HTTPException
from werkzeug.routing import IntegerConverter, Map

from levqor_host.errors import MAX_INT, ApiError, parse_json

log = logging.getLogger("levqor.api")


def render_http_error(e: HttpError) -> Response:
    """The answer of an :class:`HttpError` (the host's or a plugin's): its status, its JSON
    body and its headers."""
    resp = jsonify(e.to_dict())
    resp.status_code = e.status
    for k, v in e.headers.items():
        resp.headers[k] = v
    return resp


class BoundedIntConverter(IntegerConverter):
    """``<int:...>`` in routes, bounded to :data:`MAX_INT` unless the route says ``max=``: a
    larger number matches no row, so it is a 404 instead of an overflow in the database."""

    def __init__(self, map: Map, *args: Any, max: int | None = None, **kwargs: Any) -> None:  # noqa: A002
        super().__init__(map, *args, max=MAX_INT if max is None else min(max, MAX_INT), **kwargs)


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


def register_error_handlers(app: Flask) -> None:
    @app.errorhandler(HttpError)
    def _api_error(e: HttpError):
        if not e.user_fault:
            log.warning(
                "%s %s answered %s %s: %s",
                request.method,
                request.path,
                e.status,
                e.code,
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
        return render_http_error(ApiError(e.code or 500, code, msg))

    from sqlalchemy.exc import DataError, DBAPIError, OperationalError

    @app.errorhandler(DBAPIError)
    def _database_error(e: DBAPIError):
        if isinstance(e, DataError):
            # PostgreSQL refused a value SQLite takes (an integer beyond 32/64 bits, a NUL
            # character in text): the request's fault, never a 500
            return render_http_error(
                ApiError(
                    400, "invalid_value", "a value in the request is out of range or not storable"
                )
            )
        # the database is away (restart, fail-over, killed connection): 503, the client retries
        if isinstance(e, OperationalError) or e.connection_invalidated:
            log.warning(
                "database unavailable on %s %s: %s",
                request.method,
                request.path,
                type(e.orig).__name__ if e.orig is not None else type(e).__name__,
            )
            return render_http_error(
                ApiError(
                    503,
                    "database_unavailable",
                    "the database cannot be reached right now; retry",
                    headers={"Retry-After": "1"},
                )
            )
        return _unexpected(e)

    @app.errorhandler(Exception)
    def _unexpected(e: Exception):
        log.exception("unhandled error on %s %s", request.method, request.path)
        st = app.extensions.get("levqor")
        if st is not None and hasattr(st, "report_exception"):  # logs/errors.jsonl, Sentry
            route = request.url_rule.rule if request.url_rule is not None else "<unmatched>"
            st.report_exception(e, where="request", route=f"{request.method} {route}")
        return render_http_error(ApiError(500, "internal_error", "internal error"))
