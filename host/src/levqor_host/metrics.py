"""The Prometheus metrics of one app: its own registry, counters and histograms.

At the bottom of the host, beside the configuration: the run service, the workers, inboxes,
mail and backups count into it, and /metrics (web/ops.py) serves it.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram


class Metrics:
    """Prometheus metrics of one app (its own registry, so tests never share counters)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.runs_started = Counter("levqor_runs_started", "Runs started", registry=self.registry)
        self.runs_finished = Counter(
            "levqor_runs_finished", "Runs finished by status", ["status"], registry=self.registry
        )
        self.retries = Counter(
            "levqor_step_retries",
            "Step retries by connector",
            ["connector"],
            registry=self.registry,
        )
        self.step_seconds = Histogram(
            "levqor_step_duration_seconds",
            "Step duration by connector",
            ["connector"],
            registry=self.registry,
            buckets=(0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
        )
        # operations: HTTP, rate limits, inboxes, email, backups
        self.http_requests = Counter(
            "levqor_http_requests",
            "HTTP requests by method, route template and status",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.http_seconds = Histogram(
            "levqor_http_request_duration_seconds",
            "HTTP request duration by route template",
            ["route"],
            registry=self.registry,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
        )
        self.rate_limited = Counter(
            "levqor_rate_limited",
            "Requests refused by a rate limit, by limit scope",
            ["scope"],
            registry=self.registry,
        )
        self.error_reports = Counter(
            "levqor_error_reports",
            "Error reports written to logs/errors.jsonl by source",
            ["source"],
            registry=self.registry,
        )
        self.support_messages = Counter(
            "levqor_support_messages", "Support messages received", registry=self.registry
        )
        self.emails = Counter(
            "levqor_emails",
            "Emails through Resend by kind and outcome",
            ["kind", "outcome"],
            registry=self.registry,
        )
        self.backups = Counter(
            "levqor_backups", "Backups by outcome", ["outcome"], registry=self.registry
        )

    def observe_request(self, method: str, route: str, status: int, seconds: float) -> None:
        self.http_requests.labels(method, route, str(status)).inc()
        self.http_seconds.labels(route).observe(seconds)
