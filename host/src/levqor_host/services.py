"""The service object: what one Levqor app is made of (configuration, plugins, store, vault,
runner, ledger, the run service, executors), typed and free of Flask.

``create_app`` and the CLI assemble it; everything below them is handed it (or the parts of it
that it needs). It is also the host's face for plugins (``levqor_kernel.host.Host``): the two
request-bound methods plugins call from their routes, ``authenticate`` and ``json_body``, are
handed in by the web layer when the app is built (:class:`RequestFace`).
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from levqor_kernel.plugins import LevqorPluginManager
from levqor_kernel.runner import Runner

from levqor_host.config import Config
from levqor_host.metrics import Metrics
from levqor_host.security.vault import Vault
from levqor_host.store import Store

if TYPE_CHECKING:
    from levqor_host.billing.ledger import Ledger
    from levqor_host.credentials import OAuthService
    from levqor_host.runs.calls import PipelineCalls
    from levqor_host.runs.service import RunService
    from levqor_host.runs.triggers import TriggerService
    from levqor_host.support.inbox import Inboxes
    from levqor_host.support.mail import Mailer
    from levqor_host.workers.celery import CeleryDispatcher
    from levqor_host.workers.embedded import EmbeddedExecutor
    from levqor_host.workers.scheduler import SchedulerService

log = logging.getLogger("levqor")


class RequestFace(Protocol):
    """What the web layer hands the service object for plugins' routes (request-bound)."""

    def authenticate(self, scope: str | None = None) -> dict: ...

    def json_body(self, *, required: bool = False, max_bytes: int | None = None) -> Any: ...

    def note_rate_limited(self) -> None: ...


@dataclass
class Services:
    """The services of one app, kept in ``app.extensions["levqor"]``."""

    config: Config
    pm: LevqorPluginManager
    store: Store
    vault: Vault
    runner: Runner
    metrics: Metrics
    ledger: Ledger
    runs: RunService  # validate, price, start, claim, complete, settle, wait, cancel, retry
    triggers: TriggerService  # app triggers: saved with pipelines, polled, delivered, tested
    executor: EmbeddedExecutor | None = None
    scheduler: SchedulerService | None = None  # cron triggers and backups, when started
    inboxes: Inboxes | None = None  # logs/errors.jsonl, logs/support.jsonl
    mailer: Mailer | None = None  # transactional email through Resend
    dispatcher: CeleryDispatcher | None = None  # when LEVQOR_EXECUTOR=celery
    oauth: OAuthService | None = None  # "Connect", OAuth2 refresh, the runs' credential resolver
    web: RequestFace | None = None  # set by create_app: the request-bound face for plugins
    pipeline_calls: PipelineCalls | None = None  # pipelines started and waited for (MCP tools)
    started_at: float = field(default_factory=time.time)

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

    # ----------------------------------------------------------------- pipelines
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
