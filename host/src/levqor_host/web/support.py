"""The inbox routes: ``POST /api/v1/errors``, ``POST /api/v1/support`` and their health checks
(``GET /api/v1/errors/health``, ``GET /api/v1/support/health``). The inboxes themselves are
:mod:`levqor_host.support.inbox`."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from flask import Blueprint, current_app, jsonify, request

from levqor_host.errors import ApiError, check_fields
from levqor_host.security.auth import public
from levqor_host.support.inbox import EMAIL_RE, ERROR_FIELDS, SUPPORT_FIELDS
from levqor_host.web.api.openapi import _json, _op
from levqor_host.web.errors import json_body

if TYPE_CHECKING:
    from levqor_host.services import Services

bp = Blueprint("inbox", __name__, url_prefix="/api/v1")


def _state() -> Services:
    return current_app.extensions["levqor"]


def _client() -> str:
    return request.remote_addr or "unknown"


def _limited_fields(body: dict, limits: dict[str, int]) -> None:
    for name, max_len in limits.items():
        v = body.get(name)
        if isinstance(v, str) and len(v) > max_len:
            raise ApiError(
                400, "invalid_request", f"field {name} is longer than {max_len} characters"
            )


@bp.post("/errors")
@public("the browser reports errors before sign-in too; rate limited, scrubbed")
def report_error():
    st = _state()
    st.inboxes.check_rate("errors", st.config.errors_rate_limit, _client())
    body = json_body(st.config.max_json_depth, max_bytes=st.config.error_max_bytes)
    check_fields(body, {k: str for k in ERROR_FIELDS}, required=("message",))
    if not body["message"].strip():
        raise ApiError(400, "invalid_request", "field message is empty")
    _limited_fields(body, ERROR_FIELDS)
    try:
        entry = st.inboxes.frontend_error(body)
    except OSError as e:
        raise ApiError(
            503, "inbox_unavailable", f"the error inbox cannot be written: {e.strerror or e}"
        ) from None
    return jsonify({"id": entry["id"], "stored": True}), 201


@bp.post("/support")
@public("anyone may write to support; rate limited")
def support():
    st = _state()
    st.inboxes.check_rate("support", st.config.support_rate_limit, _client())
    body = json_body(st.config.max_json_depth, max_bytes=st.config.support_max_bytes)
    check_fields(body, {k: str for k in SUPPORT_FIELDS}, required=tuple(SUPPORT_FIELDS))
    _limited_fields(body, SUPPORT_FIELDS)
    email = body["email"].strip()
    if not EMAIL_RE.match(email):
        raise ApiError(400, "invalid_request", "field email is not an e-mail address")
    subject, message = body["subject"].strip(), body["message"].strip()
    if not subject or not message:
        raise ApiError(400, "invalid_request", "subject and message must not be empty")
    from levqor_host.security.auth import peek_identity

    ident = peek_identity()
    try:
        entry = st.inboxes.support_message(
            email, subject, message, ident.user["id"] if ident is not None else None
        )
    except OSError as e:
        raise ApiError(
            503, "inbox_unavailable", f"the support inbox cannot be written: {e.strerror or e}"
        ) from None
    return jsonify({"id": entry["id"], "stored": True, "forward": entry["forward"]}), 202


def _answer(checks: dict[str, dict]):
    failing = [name for name, c in checks.items() if not c.get("ok")]
    body = {
        "status": "failing" if failing else "ok",
        "failing": failing,
        "checks": checks,
    }
    if failing:
        body["message"] = "; ".join(f"{n}: {checks[n].get('error', 'failing')}" for n in failing)
    return jsonify(body), (503 if failing else 200)


@bp.get("/errors/health")
@public("inbox health for monitoring; no messages")
def errors_health():
    st = _state()
    problem = st.inboxes.errors.writable()
    checks = {
        "inbox": {"ok": problem is None, "path": "logs/errors.jsonl"},
        "sentry": {
            "ok": True,
            "configured": bool(st.config.sentry_dsn),
            **({} if st.config.sentry_dsn else {"note": "set SENTRY_DSN to also send to Sentry"}),
        },
    }
    if problem:
        checks["inbox"]["error"] = problem
    return _answer(checks)


@bp.get("/support/health")
@public("inbox health for monitoring; no messages")
def support_health():
    st = _state()
    cfg = st.config
    problem = st.inboxes.support.writable()
    checks: dict[str, dict] = {"inbox": {"ok": problem is None, "path": "logs/support.jsonl"}}
    if problem:
        checks["inbox"]["error"] = problem
    configured = bool(cfg.receiving_email and cfg.resend_api_key)
    fwd: dict[str, Any] = {"ok": True, "configured": configured}
    if not configured:
        fwd["note"] = (
            "messages stay in the inbox: set RECEIVING_EMAIL and RESEND_API_KEY to forward"
        )
    else:
        status = st.inboxes.forward_status()
        fwd["unforwarded"] = len(status["unforwarded"])
        last = status["last"]
        if last is not None:
            fwd["last_attempt"] = {k: last.get(k) for k in ("id", "ts", "status", "error")}
        if last is not None and last.get("status") == "failed":
            fwd["ok"] = False
            fwd["error"] = (
                f"the last forward failed ({last.get('error')}); {len(status['unforwarded'])} message(s) only in the inbox"
            )
    checks["forwarding"] = fwd
    return _answer(checks)


_HEALTH = {
    "type": "object",
    "required": ["status", "failing", "checks"],
    "properties": {
        "status": {"enum": ["ok", "failing"]},
        "failing": {"type": "array", "items": {"type": "string"}},
        "checks": {"type": "object"},
        "message": {"type": "string"},
    },
}

bp.openapi_paths = {  # type: ignore[attr-defined]
    "/api/v1/errors": {
        "post": _op(
            "Report a frontend error (public, rate limited; scrubbed, then kept in logs/errors.jsonl)",
            {"201": _json({"type": "object", "properties": {"id": {"type": "string"}}})},
            body={
                "type": "object",
                "required": ["message"],
                "additionalProperties": False,
                "properties": {
                    k: {"type": "string", "maxLength": v} for k, v in ERROR_FIELDS.items()
                },
            },
            public=True,
            tag="ops",
        )
    },
    "/api/v1/support": {
        "post": _op(
            "Send a message to support (public, rate limited; kept in logs/support.jsonl and "
            "forwarded by email when configured)",
            {
                "202": _json(
                    {
                        "type": "object",
                        "properties": {
                            "id": {"type": "string"},
                            "forward": {"enum": ["sent", "failed", "not_configured"]},
                        },
                    }
                )
            },
            body={
                "type": "object",
                "required": list(SUPPORT_FIELDS),
                "additionalProperties": False,
                "properties": {
                    k: {"type": "string", "minLength": 1, "maxLength": v}
                    for k, v in SUPPORT_FIELDS.items()
                },
            },
            public=True,
            tag="ops",
        )
    },
    "/api/v1/errors/health": {
        "get": _op(
            "Error inbox health (503 names the failing part)",
            {"200": _json(_HEALTH), "503": _json(_HEALTH, "A part is failing")},
            public=True,
            tag="ops",
        )
    },
    "/api/v1/support/health": {
        "get": _op(
            "Support inbox health (503 names the failing part)",
            {"200": _json(_HEALTH), "503": _json(_HEALTH, "A part is failing")},
            public=True,
            tag="ops",
        )
    },
}
