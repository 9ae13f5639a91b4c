"""The error and support inboxes: ``logs/errors.jsonl`` and ``logs/support.jsonl``.

* ``POST /api/v1/errors``: frontend error reports (message, stack, url, user_agent, release).
  Public (the dashboard's anonymous visitors report errors too), rate limited per client address
  (``LEVQOR_ERRORS_RATE_LIMIT``), body at most ``LEVQOR_ERROR_MAX_BYTES``. Every field is
  scrubbed (secrets, tokens, e-mail addresses, card-like numbers; URL query values dropped)
  before it is written. Server-side exceptions land in the same file (``source: server``).
  With ``SENTRY_DSN`` the report also goes to Sentry.
* ``POST /api/v1/support``: email, subject, message. Public with a per-address rate limit
  (``LEVQOR_SUPPORT_RATE_LIMIT``), body at most ``LEVQOR_SUPPORT_MAX_BYTES``. The message is
  written first, then forwarded to ``RECEIVING_EMAIL`` through Resend when ``RESEND_API_KEY`` is
  set; the outcome of each forward goes to ``logs/support-forward.jsonl`` and a failure turns
  ``/api/v1/support/health`` to 503 until a later forward succeeds.
* ``GET /api/v1/errors/health`` and ``GET /api/v1/support/health``: inbox writable, delegation
  configured; 503 naming the failing part.

Files are appended with one ``write`` per line (O_APPEND), safe across gunicorn workers; a file
larger than ``LEVQOR_INBOX_MAX_BYTES`` is rotated to ``<name>.1``.
"""

from __future__ import annotations

import json
import logging
import os
import re
import threading
import traceback
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

from flask import Blueprint, current_app, jsonify, request

from levqor_host.errors import ApiError, check_fields
from levqor_host.observability import (
    current_request_id,
    scrub,
    sentry_capture_exception,
    sentry_capture_report,
)
from levqor_host.security.auth import public
from levqor_host.web.api.openapi import _json, _op
from levqor_host.web.errors import json_body

if TYPE_CHECKING:
    from levqor_host.services import Services

log = logging.getLogger("levqor.inbox")

bp = Blueprint("inbox", __name__, url_prefix="/api/v1")

ERROR_FIELDS = {"message": 2000, "stack": 16000, "url": 2000, "user_agent": 512, "release": 100}
SUPPORT_FIELDS = {"email": 254, "subject": 200, "message": 10000}
EMAIL_RE = re.compile(r"^[^@\s<>\"',;]{1,64}@[A-Za-z0-9.-]{1,190}\.[A-Za-z]{2,}$")


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def _scrub_url(url: str) -> str:
    """Path kept, query values and fragment dropped, then scrubbed."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return scrub(url)
    query = "&".join(f"{kv.split('=', 1)[0]}=***" for kv in parts.query.split("&") if kv)
    return scrub(urlunsplit((parts.scheme, parts.netloc.rsplit("@", 1)[-1], parts.path, query, "")))


class JsonlFile:
    """Append-only JSON lines with size rotation."""

    def __init__(self, path: Path, max_bytes: int) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self._lock = threading.Lock()

    def append(self, obj: dict) -> None:
        line = (json.dumps(obj, ensure_ascii=False, default=str) + "\n").encode()
        with self._lock:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            try:
                if self.path.stat().st_size + len(line) > self.max_bytes:
                    os.replace(self.path, self.path.with_name(self.path.name + ".1"))
            except FileNotFoundError:
                pass
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            try:
                os.write(fd, line)
            finally:
                os.close(fd)

    def writable(self) -> str | None:
        """None when a line could be appended now, else why not."""
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            os.close(fd)
        except OSError as e:
            return f"{self.path} is not writable: {e.strerror or type(e).__name__}"
        return None

    def tail(self, n: int = 200) -> list[dict]:
        try:
            with open(self.path, "rb") as f:
                f.seek(0, os.SEEK_END)
                size = f.tell()
                f.seek(max(0, size - 256 * 1024))
                lines = f.read().splitlines()[-n:]
        except OSError:
            return []
        out = []
        for raw in lines:
            try:
                out.append(json.loads(raw))
            except ValueError:
                continue
        return out


class Inboxes:
    def __init__(self, state: Services) -> None:
        self.state = state
        cfg = state.config
        self.errors = JsonlFile(cfg.logs_dir / "errors.jsonl", cfg.inbox_max_bytes)
        self.support = JsonlFile(cfg.logs_dir / "support.jsonl", cfg.inbox_max_bytes)
        self.forwards = JsonlFile(cfg.logs_dir / "support-forward.jsonl", cfg.inbox_max_bytes)
        self._limiter: Any = None
        self._limiter_lock = threading.Lock()

    # ------------------------------------------------------------------ errors
    def frontend_error(self, report: dict) -> dict:
        entry = {
            "id": f"err_{uuid.uuid4().hex[:16]}",
            "ts": _now(),
            "source": "frontend",
            "request_id": current_request_id(),
            "message": scrub(report.get("message")),
            "stack": scrub(report.get("stack")) or None,
            "url": _scrub_url(report["url"]) if report.get("url") else None,
            "user_agent": scrub(report.get("user_agent")) or None,
            "release": scrub(report.get("release")) or None,
        }
        self.errors.append(entry)
        self.state.metrics.error_reports.labels("frontend").inc()
        sentry_capture_report(entry)
        return entry

    def server_exception(self, exc: BaseException, *, where: str, **context: Any) -> None:
        try:
            tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
            entry = {
                "id": f"err_{uuid.uuid4().hex[:16]}",
                "ts": _now(),
                "source": "server",
                "where": where,
                "request_id": current_request_id(),
                "type": type(exc).__name__,
                "message": scrub(str(exc))[:2000],
                "stack": scrub(tb)[-16000:],
                **{k: scrub(v) for k, v in context.items()},
            }
            self.errors.append(entry)
            self.state.metrics.error_reports.labels("server").inc()
        except Exception:  # noqa: BLE001 - reporting must never raise
            log.exception("could not write the server error to errors.jsonl")
        sentry_capture_exception(exc)

    # ------------------------------------------------------------------ support
    def support_message(self, email: str, subject: str, message: str, user_id: str | None) -> dict:
        entry = {
            "id": f"sup_{uuid.uuid4().hex[:16]}",
            "ts": _now(),
            "request_id": current_request_id(),
            "user_id": user_id,
            "email": email,
            "subject": subject,
            "message": message,
        }
        self.support.append(entry)  # kept first: a forwarding failure loses nothing
        self.state.metrics.support_messages.inc()
        entry["forward"] = self._forward(entry)
        return entry

    def _forward(self, entry: dict) -> str:
        cfg = self.state.config
        mailer = self.state.mailer
        if not (cfg.receiving_email and mailer is not None and mailer.configured):
            return "not_configured"
        from levqor_host.support.mail import MailError

        record: dict[str, Any] = {"id": entry["id"], "ts": _now()}
        try:
            record["resend_id"] = mailer.send(
                to=cfg.receiving_email,
                reply_to=entry["email"],
                subject=f"[Levqor support] {entry['subject']}",
                text=(
                    f"{entry['message']}\n\n-- \nSupport message {entry['id']} from "
                    f"{entry['email']}"
                    + (f" (user {entry['user_id']})" if entry["user_id"] else "")
                ),
                kind="support",
                idempotency_key=f"support:{entry['id']}",
            )
            record["status"] = "sent"
        except MailError as e:
            record["status"] = "failed"
            record["error"] = str(e)
            log.warning("support message %s kept, forwarding failed: %s", entry["id"], e)
        self.forwards.append(record)
        return record["status"]

    def forward_status(self) -> dict:
        lines = self.forwards.tail(500)
        failed: set[str] = set()
        last = None
        for rec in lines:
            if rec.get("status") == "failed":
                failed.add(rec.get("id"))
            elif rec.get("status") == "sent":
                failed.discard(rec.get("id"))
            last = rec
        return {"last": last, "unforwarded": sorted(x for x in failed if x)}

    # ------------------------------------------------------------------ limits
    def check_rate(self, scope: str, limit: str) -> None:
        settings = self.state.config.security
        if not settings.rate_limits:
            return
        from limits import parse
        from limits.storage import storage_from_string
        from limits.strategies import FixedWindowRateLimiter

        with self._limiter_lock:
            if self._limiter is None:
                self._limiter = FixedWindowRateLimiter(
                    storage_from_string(settings.rate_limit_storage)
                )
        item = parse(limit)
        who = request.remote_addr or "unknown"
        if not self._limiter.hit(item, settings.rate_limit_prefix, scope, who):
            stats = self._limiter.get_window_stats(item, settings.rate_limit_prefix, scope, who)
            import time

            retry = max(1, int(stats.reset_time - time.time()))
            self.state.count_rate_limited(scope)
            raise ApiError(
                429,
                "rate_limited",
                f"too many {scope} requests from this address: at most {limit}",
                headers={"Retry-After": str(retry)},
            )


# ---------------------------------------------------------------------------------- routes
def _state() -> Services:
    return current_app.extensions["levqor"]


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
    st.inboxes.check_rate("errors", st.config.errors_rate_limit)
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
    st.inboxes.check_rate("support", st.config.support_rate_limit)
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
