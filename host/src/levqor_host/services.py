"""The service object: what one Levqor app is made of (configuration, plugins, store, vault,
runner, ledger, executors), typed and free of Flask.

``create_app`` and the CLI assemble it; everything below them is handed it (or the parts of it
that it needs). It is also the host's face for plugins (``levqor_kernel.host.Host``): the two
request-bound methods plugins call from their routes, ``authenticate`` and ``json_body``, are
handed in by the web layer when the app is built (:class:`RequestFace`).
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from levqor_kernel.pipeline import validate_pipeline
from levqor_kernel.plugins import LevqorPluginManager
from levqor_kernel.runner import Runner
from prometheus_client import CollectorRegistry, Counter, Histogram

from levqor_host.config import Config
from levqor_host.errors import ApiError
from levqor_host.security.vault import Vault
from levqor_host.store import Store
from levqor_host.workers.embedded import FINAL, job_line

if TYPE_CHECKING:
    from levqor_host.workers.embedded import EmbeddedExecutor

log = logging.getLogger("levqor")


class RequestFace(Protocol):
    """What the web layer hands the service object for plugins' routes (request-bound)."""

    def authenticate(self, scope: str | None = None) -> dict: ...

    def json_body(self, *, required: bool = False, max_bytes: int | None = None) -> Any: ...

    def note_rate_limited(self) -> None: ...


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
        # operations (issue 5): HTTP, rate limits, inboxes, email, backups
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


@dataclass
class Services:
    """The services of one app, kept in ``app.extensions["levqor"]``."""

    config: Config
    pm: LevqorPluginManager
    store: Store
    vault: Vault
    runner: Runner
    metrics: Metrics
    executor: EmbeddedExecutor | None = None
    scheduler: Any = None
    ledger: Any = None  # ledger.Ledger: credits, the run gate, usage (issue 7)
    inboxes: Any = None  # inbox.Inboxes: logs/errors.jsonl, logs/support.jsonl (issue 5)
    mailer: Any = None  # mail.Mailer: transactional email through Resend (issue 5)
    dispatcher: Any = None  # celery_executor.CeleryDispatcher when LEVQOR_EXECUTOR=celery
    web: RequestFace | None = None  # set by create_app: the request-bound face for plugins
    started_at: float = field(default_factory=time.time)
    _waiters: dict[str, threading.Event] = field(default_factory=dict)
    _validation_cache: dict[str, list] = field(default_factory=dict)
    _waiters_lock: threading.Lock = field(default_factory=threading.Lock)
    _jobs_lock: threading.Lock = field(default_factory=threading.Lock)

    # ----------------------------------------------------------------- plugins' auth
    def authenticate(self, scope: str | None = None) -> dict:
        """The signed-in user of the current request, for plugins' routes (which cannot import
        the host): the same check as the host's ``@require(scope)``: an API key, a Supabase
        JWT or the dashboard's session cookie (with its X-CSRF-Token on mutations), and the
        scope when given. Raises the host's ``ApiError`` (401/403/503), which the app renders
        as ``{"error": {...}}``; let it propagate."""
        return self._web().authenticate(scope)

    def json_body(self, *, required: bool = False, max_bytes: int | None = None) -> Any:
        """The current request's JSON body through the host's one parser, for plugins' routes:
        UTF-8 I-JSON only (no NaN/Infinity, no unpaired surrogate), nested at most
        ``LEVQOR_MAX_JSON_DEPTH`` deep, sent as ``application/json``; an empty body is ``{}``
        unless ``required``. Raises the host's ``ApiError`` (400/413/415); let it propagate."""
        return self._web().json_body(required=required, max_bytes=max_bytes)

    def _web(self) -> RequestFace:
        if self.web is None:
            raise RuntimeError("this service object is not part of a web app (no request face)")
        return self.web

    # ----------------------------------------------------------------- metrics
    def metrics_inc(self, name: str, **labels: str) -> None:
        if name == "runs_started":
            self.metrics.runs_started.inc()
        elif name == "retries":
            self.metrics.retries.labels(labels.get("connector", "")).inc()

    def count_rate_limited(self, scope: str) -> None:
        """Count one request refused by a rate limit (``levqor_rate_limited_total{scope}``).

        Call it where a limit refuses a request; a 429 answered without this call is counted
        with scope ``app`` by the request hook, so nothing is counted twice."""
        self.metrics.rate_limited.labels(scope).inc()
        if self.web is not None:
            self.web.note_rate_limited()

    def report_exception(self, exc: BaseException, *, where: str, **context: Any) -> None:
        """A server-side exception: one line in logs/errors.jsonl, and Sentry when configured."""
        if self.inboxes is not None:
            self.inboxes.server_exception(exc, where=where, **context)

    def metrics_observe(self, name: str, value: float, **labels: str) -> None:
        if name == "step_seconds":
            self.metrics.step_seconds.labels(labels.get("connector", "")).observe(value)

    # ----------------------------------------------------------------- pipelines
    def credential_map(self, user_id: str) -> dict[str, str]:
        return {c["name"]: c["connector"] for c in self.store.list_credentials(user_id)}

    def validate(
        self, user_id: str, doc: Any, credentials: dict[str, str] | None = None
    ) -> list[dict]:
        """Whole-pipeline validation against the catalog and the user's credentials
        (``credentials``, name -> connector, when the caller has just read them).

        Results are memoised by the document's content and the credential names (a run of an
        unchanged pipeline is not validated from scratch on every webhook)."""
        creds = self.credential_map(user_id) if credentials is None else credentials
        try:
            key = json.dumps([doc, sorted(creds.items())], sort_keys=True, separators=(",", ":"))
        except (TypeError, ValueError):
            key = None
        if key is not None:
            hit = self._validation_cache.get(key)
            if hit is not None:
                return [dict(p) for p in hit]
        problems = [p.to_dict() for p in validate_pipeline(doc, self.pm.catalog, credentials=creds)]
        if key is not None:
            with self._waiters_lock:
                if len(self._validation_cache) > 2048:
                    self._validation_cache.clear()
                self._validation_cache[key] = problems
        return [dict(p) for p in problems]

    def export_pipeline(self, pipeline: dict) -> bool:
        """``data/pipelines/<id>.json``: a copy of a pipeline's current version, written after
        the save committed. The database holds the pipeline: a folder that cannot be written
        (read-only, full) costs only the copy, logged as a warning, never the answer. False
        then."""
        d = self.config.pipelines_dir
        tmp = d / f".{pipeline['id']}.json.tmp"
        out = {k: pipeline[k] for k in ("id", "name", "version", "doc") if k in pipeline}
        try:
            d.mkdir(parents=True, exist_ok=True)
            tmp.write_text(json.dumps(out, indent=2, default=str))
            os.replace(tmp, d / f"{pipeline['id']}.json")
        except OSError as e:
            log.warning(
                "pipeline %s is saved, but its copy in %s could not be written: %s",
                pipeline["id"],
                d,
                e.strerror or e,
            )
            return False
        return True

    # ----------------------------------------------------------------- runs
    def price(self, doc: dict) -> int:
        if self.ledger is not None:  # catalog price, LEVQOR_PRICES overrides, price_task hook
            return self.ledger.price(self.pm, doc)
        total = 0
        for step in doc.get("steps", []):
            a = self.pm.catalog.action(step.get("connector"), step.get("action"))
            base = a.price if a else 0
            p = self.pm.hook.price_task(
                connector=step.get("connector"),
                action=step.get("action"),
                payload=step.get("payload", {}),
                price=base,
            )
            total += base if p is None else int(p)
        return total

    def start_run(
        self,
        user: dict,
        pipeline: dict,
        input: Any,
        *,
        trigger: str = "manual",
        idempotency_key: str | None = None,
        retry_of: str | None = None,
        copy_steps_from: str | None = None,
        version: int | None = None,
        credentials: dict[str, str] | None = None,
    ) -> tuple[dict, bool]:
        """Validate, gate and queue a run. Raises ApiError (422 invalid, 402 refused).
        ``credentials``: the user's credential names (name -> connector) when the caller has
        just read them (a webhook delivery), so validation does not read them again."""
        if idempotency_key:
            existing = self.store.find_run_by_idempotency_key(user["id"], idempotency_key)
            if existing is not None:
                return existing, False
        doc = pipeline["doc"]
        if version is not None and version != pipeline["version"]:
            v = self.store.get_version(user["id"], pipeline["id"], version)
            if v is None:
                raise ApiError(404, "not_found", "pipeline version not found")
            doc = v["doc"]
        else:
            version = pipeline["version"]
        problems = self.validate(user["id"], doc, credentials)
        if problems:
            raise ApiError(
                422, "invalid_pipeline", "the pipeline cannot run as it is", {"problems": problems}
            )
        # the gate (gate_run hook), its credit reservation and the run row: one transaction
        run, created = self.ledger.start_run(
            self,
            user,
            pipeline,
            version,
            input,
            price=self.price(doc),
            trigger=trigger,
            idempotency_key=idempotency_key,
            retry_of=retry_of,
            copy_steps_from=copy_steps_from,
        )
        if created:
            self.dispatch(run)
        return run, created

    def dispatch(self, run: dict) -> None:
        """Hand a just-queued run (its row is committed) to the executor: wake an embedded
        worker, or send the run id to Celery (never raises: a run the broker did not take
        stays queued and the lease sweep sends it again)."""
        if self.executor is not None:
            self.executor.notify()
        if self.dispatcher is not None:
            self.dispatcher.send(run["id"])

    def complete_run(self, run: dict, result: Any, worker_id: str, steps: list[dict]) -> bool:
        """The executor's end of a run it owns: the step rows it has not written yet, the
        final status and the settlement in one transaction, then :meth:`run_finished`. False
        when the worker no longer holds the lease (another worker resumes the run)."""
        try:
            settled = self.ledger.finish_and_settle(self, run, result, worker_id, steps)
        except Exception:  # noqa: BLE001 - billing must not keep a run from finishing
            log.exception("finishing and settling run %s in one go failed", run["id"])
            self.store.record_steps(steps)
            if not self.store.finish_run(run["id"], worker_id, result.status, result.error):
                return False
            self.run_finished(run, result)  # settles on its own (or the repair sweep does)
            return True
        if settled is None:
            return False
        self.run_finished(run, result, settled=settled)
        return True

    def run_finished(self, run: dict, result: Any, *, settled: dict | None = None) -> None:
        """Called when a run is final and, unless ``settled`` is given (what
        :meth:`complete_run` settled with the final status), settles it: also by the repair
        sweep for a final run whose settlement was lost. The settlement (credits, usage,
        events) claims the run's ``settled_at``, so it happens exactly once; the jobs.jsonl line
        and the notification follow it."""
        if settled is None:
            try:  # record_run_cost hook (refunds), usage_daily, events, referral reward
                settled = self.ledger.settle_run(self, run, result)
            except Exception:  # noqa: BLE001 - billing must not break run completion
                log.exception("settling run %s failed", run["id"])
                settled = {"settled": True}
        if not settled.get("settled", True):
            return
        self.metrics.runs_finished.labels(result.status).inc()
        line = job_line(run, result.status, result.error, len(result.steps))
        path: Path = self.config.jobs_log
        try:  # the run and its settlement are committed: the audit line must not undo that
            with self._jobs_lock:
                path.parent.mkdir(parents=True, exist_ok=True)
                fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
                try:
                    os.write(fd, (line + "\n").encode())
                finally:
                    os.close(fd)
        except OSError as e:
            log.warning(
                "run %s finished, but %s could not be written: %s", run["id"], path, e.strerror or e
            )
        if result.status == "failed" and self.mailer is not None:
            self.mailer.run_failed(run, result)  # opt-in per pipeline: "notify_on_failure"
        with self._waiters_lock:
            ev = self._waiters.pop(run["id"], None)
        if ev is not None:
            ev.set()

    def wait_for_run(self, user_id: str, run_id: str, timeout: float) -> dict | None:
        """The run once it is final, or as it is when ``timeout`` passes."""
        with self._waiters_lock:
            ev = self._waiters.setdefault(run_id, threading.Event())
        deadline = time.monotonic() + timeout
        while True:
            run = self.store.get_run(user_id, run_id)
            if run is None or run["status"] in FINAL:
                return run
            left = deadline - time.monotonic()
            if left <= 0:
                return run
            ev.wait(min(left, 0.1))
