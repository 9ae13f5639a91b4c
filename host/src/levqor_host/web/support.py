"""The inbox routes: ``POST /api/v1/errors``, ``POST /api/v1/support`` and their health checks
(``GET /api/v1/errors/health``, ``GET /api/v1/support/health``). The inboxes themselves are
:mod:`levqor_host.support.inbox`."""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import TYPE_CHECKING, Any, Literal

from flask import Blueprint, Response, current_app, jsonify, request
from pydantic import BaseModel, Field, create_model

from levqor_host.errors import ApiError
from levqor_host.support.inbox import EMAIL_RE, ERROR_FIELDS, SUPPORT_FIELDS
from levqor_host.web.access import public
from levqor_host.web.operations import Body, answer, operation

if TYPE_CHECKING:
    from levqor_host.services import Services

bp = Blueprint("inbox", __name__, url_prefix="/api/v1")


def _state() -> Services:
    return current_app.extensions["levqor"]


def _client() -> str:
    return request.remote_addr or "unknown"


def _rate_limited(inbox: str, limit: Callable[[Any], str]) -> Callable:
    """Count the caller against the inbox's rate limit before anything else is read."""

    def deco(fn: Callable) -> Callable:
        @wraps(fn)
        def view(*args: Any, **kwargs: Any) -> Any:
            st = _state()
            st.inboxes.check_rate(inbox, limit(st.config), _client())
            return fn(*args, **kwargs)

        return view

    return deco


#: a frontend error report: ``message`` and what the browser knows, each field bounded
ErrorReport = create_model(
    "ErrorReport",
    __base__=Body,
    message=(str, Field(max_length=ERROR_FIELDS["message"])),
    **{
        k: (str | None, Field(None, max_length=n))
        for k, n in ERROR_FIELDS.items()
        if k != "message"
    },
)
#: a message to support: every field required and bounded
SupportMessage = create_model(
    "SupportMessage",
    __base__=Body,
    **{k: (str, Field(min_length=1, max_length=n)) for k, n in SUPPORT_FIELDS.items()},
)


class Stored(BaseModel):
    id: str
    stored: bool = True


class Forwarded(Stored):
    forward: Literal["sent", "failed", "not_configured"]


@bp.post("/errors")
@public("the browser reports errors before sign-in too; rate limited, scrubbed")
@_rate_limited("errors", lambda cfg: cfg.support.errors_rate_limit)
@operation(
    "Report a frontend error (public, rate limited; scrubbed, then kept in logs/errors.jsonl)",
    "The dashboard's error reporter: secrets and query strings are scrubbed before the "
    "report is kept (and sent to Sentry when SENTRY_DSN is set).",
    tag="ops",
    body=ErrorReport,
    max_bytes=lambda cfg: cfg.support.error_max_bytes,
    responses={201: answer(Stored)},
)
def report_error(body: Any) -> tuple[Response, int]:
    st = _state()
    if not body.message.strip():
        raise ApiError(400, "invalid_request", "field message is empty")
    try:
        entry = st.inboxes.frontend_error(body.model_dump(exclude_unset=True))
    except OSError as e:
        raise ApiError(
            503, "inbox_unavailable", f"the error inbox cannot be written: {e.strerror or e}"
        ) from None
    return jsonify({"id": entry["id"], "stored": True}), 201


@bp.post("/support")
@public("anyone may write to support; rate limited")
@_rate_limited("support", lambda cfg: cfg.support.support_rate_limit)
@operation(
    "Send a message to support (public, rate limited; kept in logs/support.jsonl and "
    "forwarded by email when configured)",
    "Kept in the support inbox first, then forwarded to RECEIVING_EMAIL through Resend when "
    "both are set; forward says what happened.",
    tag="ops",
    body=SupportMessage,
    max_bytes=lambda cfg: cfg.support.support_max_bytes,
    responses={202: answer(Forwarded)},
)
def support(body: Any) -> tuple[Response, int]:
    st = _state()
    email = body.email.strip()
    if not EMAIL_RE.match(email):
        raise ApiError(400, "invalid_request", "field email is not an e-mail address")
    subject, message = body.subject.strip(), body.message.strip()
    if not subject or not message:
        raise ApiError(400, "invalid_request", "subject and message must not be empty")
    from levqor_host.web.access import peek_identity

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


def _answer(checks: dict[str, dict]) -> tuple[Response, int]:
    failing = [name for name, c in checks.items() if not c.get("ok")]
    body = {
        "status": "failing" if failing else "ok",
        "failing": failing,
        "checks": checks,
    }
    if failing:
        body["message"] = "; ".join(f"{n}: {checks[n].get('error', 'failing')}" for n in failing)
    return jsonify(body), (503 if failing else 200)


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
_HEALTH_ANSWERS = {200: answer(_HEALTH), 503: answer(_HEALTH, "A part is failing")}


@bp.get("/errors/health")
@public("inbox health for monitoring; no messages")
@operation(
    "Error inbox health (503 names the failing part)",
    "Whether the error inbox can be written, and whether Sentry is configured.",
    tag="ops",
    responses=_HEALTH_ANSWERS,
)
def errors_health() -> tuple[Response, int]:
    st = _state()
    problem = st.inboxes.errors.writable()
    checks = {
        "inbox": {"ok": problem is None, "path": "logs/errors.jsonl"},
        "sentry": {
            "ok": True,
            "configured": bool(st.config.observability.sentry_dsn),
            **({} if st.config.observability.sentry_dsn else {"note": "set SENTRY_DSN to also send to Sentry"}),
        },
    }
    if problem:
        checks["inbox"]["error"] = problem
    return _answer(checks)


@bp.get("/support/health")
@public("inbox health for monitoring; no messages")
@operation(
    "Support inbox health (503 names the failing part)",
    "Whether the support inbox can be written and, when forwarding is configured, whether "
    "the last forward worked and how many messages are only in the inbox.",
    tag="ops",
    responses=_HEALTH_ANSWERS,
)
def support_health() -> tuple[Response, int]:
    st = _state()
    cfg = st.config
    problem = st.inboxes.support.writable()
    checks: dict[str, dict] = {"inbox": {"ok": problem is None, "path": "logs/support.jsonl"}}
    if problem:
        checks["inbox"]["error"] = problem
    configured = bool(cfg.mail.receiving_email and cfg.mail.resend_api_key)
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
