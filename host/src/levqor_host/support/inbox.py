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

from levqor_host.errors import ApiError
from levqor_host.observability import (
    current_request_id,
    scrub,
    sentry_capture_exception,
    sentry_capture_report,
)

if TYPE_CHECKING:
    from levqor_host.services import Services

log = logging.getLogger("levqor.inbox")

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
    def check_rate(self, scope: str, limit: str, who: str) -> None:
        """429 when the client address ``who`` has used up ``limit`` for ``scope``."""
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
