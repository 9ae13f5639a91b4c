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

The files are kept by :mod:`levqor_host.store.inbox`: one ``write`` per line (O_APPEND), safe
across gunicorn workers; a file larger than ``LEVQOR_INBOX_MAX_BYTES`` is rotated to
``<name>.1``.
"""

from __future__ import annotations

import logging
import re
import threading
import traceback
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

from levqor_host.errors import ApiError
from levqor_host.observability import (
    current_request_id,
    scrub,
    sentry_capture_exception,
    sentry_capture_report,
)
from levqor_host.store.inbox import InboxFiles

if TYPE_CHECKING:
    from levqor_host.config import Config
    from levqor_host.metrics import Metrics
    from levqor_host.security.settings import SecuritySettings
    from levqor_host.support.mail import Mailer

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


class Inboxes:
    """The error and support inboxes of one app, handed their files (``store.inbox``), the
    metrics they count, the mailer that forwards support messages (None: kept only), the
    address it forwards to, the rate-limit settings and what to call when a limit refuses."""

    def __init__(
        self,
        files: InboxFiles,
        *,
        metrics: Metrics,
        mailer: Mailer | None,
        receiving_email: str | None,
        security: SecuritySettings,
        on_rate_limited: Callable[[str], None],
    ) -> None:
        self.errors = files.errors
        self.support = files.support
        self.forwards = files.forwards
        self.metrics = metrics
        self.mailer = mailer
        self.receiving_email = receiving_email
        self.security = security
        self.on_rate_limited = on_rate_limited
        self._limiter: Any = None
        self._limiter_lock = threading.Lock()

    @classmethod
    def from_config(
        cls,
        config: Config,
        metrics: Metrics,
        mailer: Mailer | None,
        on_rate_limited: Callable[[str], None],
    ) -> Inboxes:
        """The inboxes in ``config.logs_dir``, with the configuration's limits and address."""
        return cls(
            InboxFiles(config.logs_dir, config.support.inbox_max_bytes),
            metrics=metrics,
            mailer=mailer,
            receiving_email=config.mail.receiving_email,
            security=config.security,
            on_rate_limited=on_rate_limited,
        )

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
        self.metrics.error_reports.labels("frontend").inc()
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
            self.metrics.error_reports.labels("server").inc()
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
        self.metrics.support_messages.inc()
        entry["forward"] = self._forward(entry)
        return entry

    def _forward(self, entry: dict) -> str:
        mailer = self.mailer
        if not (self.receiving_email and mailer is not None and mailer.configured):
            return "not_configured"
        from levqor_host.support.mail import MailError

        record: dict[str, Any] = {"id": entry["id"], "ts": _now()}
        try:
            record["resend_id"] = mailer.send(
                to=self.receiving_email,
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
        settings = self.security
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
            self.on_rate_limited(scope)
            raise ApiError(
                429,
                "rate_limited",
                f"too many {scope} requests from this address: at most {limit}",
                headers={"Retry-After": str(retry)},
            )
