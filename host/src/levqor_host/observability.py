"""Structured logs, request ids, HTTP metrics, the Prometheus endpoint and Sentry.

* Logs: one JSON object per line on stderr (``LEVQOR_LOG_FORMAT=text`` for humans), each with
  the request id of the request it belongs to (``X-Request-ID`` in, echoed out, generated when
  missing or malformed). Messages pass through :func:`scrub` (secrets, e-mail addresses, tokens)
  and the access line names the route template, never the path (webhook tokens are secrets).
* ``/metrics``: Prometheus text format from the app's registry, plus queue depth read from the
  database at scrape time. Under gunicorn with ``PROMETHEUS_MULTIPROC_DIR`` set, the counters of
  every worker process are merged (prometheus-client multiprocess mode). ``LEVQOR_METRICS_TOKEN``
  makes the endpoint require ``Authorization: Bearer <token>``.
* Sentry: when ``SENTRY_DSN`` is set, sentry-sdk with its Flask integration,
  ``send_default_pii=False`` and a ``before_send`` that scrubs messages.

Free of Flask: the request hooks, the ``/metrics`` answer and Sentry's Flask integration are
installed by :mod:`levqor_host.web.observability`.
"""

from __future__ import annotations

import contextvars
import json
import logging
import re
import sys
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from levqor_kernel.http import redact
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily

if TYPE_CHECKING:
    from levqor_host.store import Store

request_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "levqor_request_id", default=None
)

# personal data and secrets that redact() does not know by shape
_SCRUB_PATTERNS = [
    (re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}"), "[email]"),
    (re.compile(r"\beyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]*"), "[jwt]"),
    (
        re.compile(
            r"(?i)\b(password|passwd|secret|token|api[_-]?key|authorization|cookie)"
            r"(\"?\s*[:=]\s*\"?)[^\s\"',;&]+"
        ),
        r"\1\2***",
    ),
    (re.compile(r"\b(?:\d[ -]?){13,19}\b"), "[number]"),
    (re.compile(r"\b[A-Za-z0-9_-]{40,}\b"), "[token]"),
]


def scrub(text: Any) -> str:
    """``text`` without secrets, tokens, e-mail addresses or card-like numbers."""
    if text is None:
        return ""
    out = redact(str(text))
    for pattern, repl in _SCRUB_PATTERNS:
        out = pattern.sub(repl, out)
    return out


def current_request_id() -> str | None:
    return request_id_var.get()


# ---------------------------------------------------------------------------------- logging
class JsonFormatter(logging.Formatter):
    """One JSON object per record: ts, level, logger, msg, request_id, and known extras."""

    EXTRAS = ("event", "method", "route", "status", "duration_ms", "run_id", "pipeline_id")

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": scrub(record.getMessage()),
            "request_id": request_id_var.get(),
        }
        for k in self.EXTRAS:
            v = getattr(record, k, None)
            if v is not None:
                out[k] = v
        if record.exc_info:
            out["exc_type"] = record.exc_info[0].__name__ if record.exc_info[0] else None
            out["exc"] = scrub(self.formatException(record.exc_info))
        return json.dumps(out, default=str, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        record.request_id = request_id_var.get() or "-"
        text = super().format(record)
        return scrub(text)


class _LevqorHandler(logging.StreamHandler):
    """The handler create_app installs (replaced, never duplicated). Writes to the current
    ``sys.stderr`` (which a test runner or a daemonizing server may have swapped)."""

    def emit(self, record: logging.LogRecord) -> None:
        self.stream = sys.stderr
        super().emit(record)


def setup_logging(level: str, fmt: str = "json") -> None:
    """Log records of ``levqor.*`` (and werkzeug's warnings) as JSON lines on stderr."""
    formatter: logging.Formatter = JsonFormatter() if fmt == "json" else TextFormatter()
    root = logging.getLogger("levqor")
    handler = next((h for h in root.handlers if isinstance(h, _LevqorHandler)), None)
    if handler is None and not root.handlers:
        handler = _LevqorHandler()
        root.addHandler(handler)
    if handler is not None:
        handler.setFormatter(formatter)
        # module loggers of the host and kernel (levqor_host.*, levqor_kernel.*) and werkzeug's
        # (its access lines carry client addresses: ours replace them, warnings stay)
        for name in ("levqor_host", "levqor_kernel", "werkzeug"):
            other = logging.getLogger(name)
            if not any(isinstance(h, _LevqorHandler) for h in other.handlers):
                other.addHandler(handler)
            if name == "werkzeug":
                other.propagate = False
                other.setLevel(logging.WARNING)
            else:
                other.setLevel(level)
    root.setLevel(level)


# ---------------------------------------------------------------------------------- metrics
class QueueCollector:
    """Queue depth and oldest queued age, read from the database when scraped."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def collect(self) -> Iterator[GaugeMetricFamily]:
        try:
            qs = self.store.runs.queue_stats()
        except Exception:  # noqa: BLE001 - the database is away: health says so, metrics omit it
            up = GaugeMetricFamily("levqor_database_up", "1 when the database answered")
            up.add_metric([], 0)
            yield up
            return
        up = GaugeMetricFamily("levqor_database_up", "1 when the database answered")
        up.add_metric([], 1)
        yield up
        depth = GaugeMetricFamily("levqor_queue_depth", "Runs by queue state", labels=["state"])
        depth.add_metric(["queued"], qs["queued"])
        depth.add_metric(["running"], qs["running"])
        depth.add_metric(["waiting"], qs["waiting"])
        yield depth
        overdue = GaugeMetricFamily(
            "levqor_overdue_waits",
            "Waiting runs whose timer came over a minute ago (the wait sweep is not running)",
        )
        overdue.add_metric([], qs["overdue_waits"])
        yield overdue
        age = GaugeMetricFamily(
            "levqor_queue_oldest_age_seconds", "Age of the oldest queued run (0 when none)"
        )
        age.add_metric([], qs["oldest_queued_age_seconds"] or 0.0)
        yield age


def metrics_text(registry: CollectorRegistry, store: Store, mp_dir: str | None = None) -> bytes:
    """The exposition text: the app's counters (``registry``; in multiprocess mode, those of
    every process, merged from ``mp_dir``) and the database-derived gauges of ``store``."""
    if mp_dir:
        from prometheus_client import multiprocess

        merged = CollectorRegistry()
        multiprocess.MultiProcessCollector(merged, path=mp_dir)
        counters = generate_latest(merged)
    else:
        counters = generate_latest(registry)
    dyn = CollectorRegistry()
    dyn.register(QueueCollector(store))
    return counters + generate_latest(dyn)


# ---------------------------------------------------------------------------------- sentry
_sentry_dsn: str | None = None


def _before_send(event: dict, hint: dict) -> dict:
    for exc in (event.get("exception") or {}).get("values") or []:
        if exc.get("value"):
            exc["value"] = scrub(exc["value"])
        for frame in (exc.get("stacktrace") or {}).get("frames") or []:
            frame.pop("vars", None)
            if frame.get("context_line"):
                frame["context_line"] = scrub(frame["context_line"])
            for k in ("pre_context", "post_context"):
                if frame.get(k):
                    frame[k] = [scrub(x) for x in frame[k]]
    msg = event.get("logentry") or event.get("message")
    if isinstance(msg, dict):
        for k in ("message", "formatted"):
            if msg.get(k):
                msg[k] = scrub(msg[k])
        msg.pop("params", None)
    elif isinstance(msg, str):
        event["message"] = scrub(msg)
    event.pop("user", None)
    req = event.get("request")
    if isinstance(req, dict):
        req.pop("cookies", None)
        req.pop("data", None)
        if req.get("query_string"):
            req["query_string"] = scrub(req["query_string"])
    for crumb in (event.get("breadcrumbs") or {}).get("values") or []:
        if crumb.get("message"):
            crumb["message"] = scrub(crumb["message"])
    return event


def init_sentry(dsn: str | None, environment: str, integrations: Sequence[Any] = ()) -> bool:
    """Start sentry-sdk (process-wide: the SDK keeps one client per process) when ``dsn``
    (SENTRY_DSN) is set, with the web framework's ``integrations``. Returns whether Sentry is
    on."""
    global _sentry_dsn
    if not dsn:
        return False
    if _sentry_dsn == dsn:
        return True
    import sentry_sdk

    from levqor_host import __version__

    sentry_sdk.init(
        dsn=dsn,
        integrations=list(integrations),
        # send_default_pii stays at its default (off; passing it is deprecated in sentry-sdk
        # 2.x): no client addresses, cookies or user data in events
        release=f"levqor@{__version__}",
        environment=environment,
        before_send=_before_send,
        max_request_body_size="never",
        include_local_variables=False,
    )
    _sentry_dsn = dsn
    return True


def sentry_capture_exception(exc: BaseException) -> None:
    if _sentry_dsn is None:
        return
    import sentry_sdk

    sentry_sdk.capture_exception(exc)


def sentry_capture_report(report: dict) -> None:
    """A frontend error report as a Sentry event (already scrubbed)."""
    if _sentry_dsn is None:
        return
    import sentry_sdk

    event = {
        "level": "error",
        "logger": "levqor.frontend",
        "message": report.get("message") or "frontend error",
        "tags": {"source": "frontend"},
        "extra": {k: report.get(k) for k in ("stack", "url", "user_agent", "release")},
    }
    sentry_sdk.capture_event(event)


def sentry_flush(timeout: float = 2.0) -> None:
    if _sentry_dsn is None:
        return
    import sentry_sdk

    sentry_sdk.flush(timeout)
