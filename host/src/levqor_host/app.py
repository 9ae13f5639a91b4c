"""The application factory: everything is built per app, nothing at import time.

The wiring: :func:`build_services` assembles the service object (configuration, plugins,
store, vault, runner, ledger, the run service, inboxes, mail), :func:`create_app` puts the web
layer around it and :func:`start_background` starts the workers and the scheduler, each handed
the services it uses. Nothing below this module imports it.
"""

from __future__ import annotations

import atexit
import logging
from pathlib import Path

from flask import Flask
from levqor_kernel.plugins import make_plugin_manager
from levqor_kernel.runner import Runner

from levqor_host import __version__
from levqor_host.config import Config
from levqor_host.metrics import Metrics
from levqor_host.security.signing import LinkSigner
from levqor_host.security.vault import Vault
from levqor_host.services import Services
from levqor_host.store import Store
from levqor_host.web.errors import BoundedIntConverter, register_error_handlers
from levqor_host.web.plugin_face import FlaskRequestFace
from levqor_host.workers.embedded import EmbeddedExecutor

log = logging.getLogger("levqor")


def _setup_logging(level: str, fmt: str = "json") -> None:
    from levqor_host.observability import setup_logging

    setup_logging(level, fmt)


def create_app(
    config: Config | dict | None = None,
    *,
    start_workers: bool | None = None,
    start_scheduler: bool | None = None,
    plugins: list | None = None,
) -> Flask:
    """Build a Levqor app. ``config`` is a Config, or a dict of overrides on the environment's.

    ``plugins`` adds plugin objects beside the installed ones (tests use it for test-only
    connectors). Workers start unless ``start_workers`` is False or the executor is off.
    """
    cfg = config if isinstance(config, Config) else Config.from_env(**(config or {}))
    _setup_logging(cfg.observability.log_level, cfg.observability.log_format)
    cfg.data_dir.mkdir(parents=True, exist_ok=True)
    state = build_services(cfg, plugins)
    state.web = FlaskRequestFace(cfg.web.max_json_depth)

    app = Flask("levqor_host")
    app.config["MAX_CONTENT_LENGTH"] = max(cfg.web.max_body_bytes, cfg.web.webhook_max_bytes)
    app.config["JSON_SORT_KEYS"] = False
    app.json.sort_keys = False
    app.extensions["levqor"] = state
    register_error_handlers(app)
    app.url_map.converters["int"] = BoundedIntConverter  # before any route is added
    _install_web(app, state)

    if cfg.executor.kind == "celery":
        from levqor_host.workers.celery import CeleryDispatcher

        state.dispatcher = CeleryDispatcher(cfg)
        state.runs.add_dispatcher(state.dispatcher.send)
    if start_workers is None:
        start_workers = cfg.executor.kind == "embedded"
    if start_scheduler is None:
        start_scheduler = cfg.executor.scheduler == "on"
    start_background(app, workers=start_workers, scheduler=start_scheduler)

    def start_workers_here() -> bool:  # a command that serves calls (levqor mcp serve)
        start_background(app, workers=True, scheduler=False)
        return state.executor is not None or state.dispatcher is not None

    state.pipeline_calls.start_workers_fn = start_workers_here
    app.logger.debug("levqor %s ready with %d connectors", __version__, len(state.pm.catalog))
    return app


def build_services(cfg: Config, plugins: list | None = None) -> Services:
    """The service object of one app, every part handed what it uses."""
    from levqor_host import hookspecs as host_hookspecs
    from levqor_host.billing.ledger import Ledger, LowCredit
    from levqor_host.growth.analytics import EmailHasher, reward_referral
    from levqor_host.runs.calls import PipelineCalls
    from levqor_host.runs.service import RunService
    from levqor_host.runs.triggers import TriggerService
    from levqor_host.support.inbox import Inboxes
    from levqor_host.support.mail import Mailer

    pm = make_plugin_manager(
        plugins=plugins or (), extra_hookspecs=[host_hookspecs], **cfg.plugins.manager_options()
    )
    for f in pm.failures:
        log.warning("plugin %s (%s) skipped: %s", f.name, f.dist or "?", f.error)
    vault = Vault.from_config(cfg.data_dir, cfg.security.secret_key)
    store = Store(cfg.database.url, vault)
    store.upgrade()
    store.vault_keys.check()
    runner = Runner(
        pm,
        env=cfg.plugin_settings(),
        max_value_bytes=cfg.executor.max_value_bytes,
        max_items=cfg.executor.max_loop_items,
    )
    if cfg.observability.prometheus_multiproc_dir:  # prometheus-client multiprocess mode writes there
        Path(cfg.observability.prometheus_multiproc_dir).mkdir(parents=True, exist_ok=True)
    metrics = Metrics()
    ledger = Ledger(
        store,
        cfg,
        pm,
        EmailHasher.from_config(cfg, vault),
        reward_referral=lambda tx, user_id: reward_referral(tx, user_id, cfg.growth.referral_bonus),
    )
    runs = RunService(cfg, store, pm, runner, ledger, metrics)
    runs.flow.signer = LinkSigner(vault.keys)  # approvals' signed one-time links
    store.triggers.seen_max = cfg.triggers.seen_max
    state = Services(
        config=cfg, pm=pm, store=store, vault=vault, runner=runner, metrics=metrics,
        ledger=ledger, runs=runs, triggers=TriggerService(cfg, store, pm, runs),
    )
    state.pipeline_calls = PipelineCalls(store, runs)
    state.mailer = Mailer(cfg, metrics, store)
    state.inboxes = Inboxes.from_config(cfg, metrics, state.mailer, state.count_rate_limited)
    store.users.add_listener("user_created", state.mailer.welcome)
    runs.mailer = state.mailer
    state.triggers.mailer = state.mailer  # failing triggers' owners are emailed
    runs.on_exception = state.report_exception
    _wire_oauth(state)
    if state.mailer.configured and cfg.billing.low_credit_threshold > 0:
        ledger.low_credit = LowCredit(cfg.billing.low_credit_threshold, state.mailer.low_credit_warning)
    return state


def _wire_oauth(state: Services) -> None:
    """Connect and refresh: runs, step tests and trigger polls get OAuth2 credentials through
    it; a credential whose refresh token is refused pauses its triggers and emails its owner,
    and connecting it again resumes them."""
    from levqor_host.credentials import OAuthService

    store = state.store
    oauth = state.oauth = OAuthService(state.config, store, state.pm, state.vault, state.runs.flow.signer)
    state.runs.credentials_for = oauth.resolver
    state.triggers.resolve_credentials = lambda uid, name, connector: oauth.resolver(uid)(name, connector)
    state.triggers.call_with_credentials = oauth.call_with_refresh
    oauth.on_broken.append(store.triggers.pause_for_credential)
    oauth.on_broken.append(state.mailer.credential_broken)
    oauth.on_connected.append(lambda uid, name, _why: state.triggers.credential_changed(uid, name))


def _install_web(app: Flask, state: Services) -> None:
    """Observability, security, the host's blueprints, the plugins' and the dashboard."""
    from levqor_host.web import register_blueprints
    from levqor_host.web.observability import install_observability
    from levqor_host.web.protection import install_security, report_undeclared_routes

    install_observability(app, state)  # request ids, JSON access lines, HTTP metrics, Sentry
    install_security(app, state)  # sign-in, rate limits, security headers, trusted proxies
    register_blueprints(app, state)  # the host's, the plugins', the dashboard
    report_undeclared_routes(app)


def start_background(app: Flask, *, workers: bool, scheduler: bool) -> None:
    """Start the app's embedded workers (when the executor is ``embedded``) and its scheduler
    (unless ``LEVQOR_SCHEDULER=off``); what is already running is left alone. ``create_app``
    calls it; ``levqor serve`` builds the app without them and calls it once its port is
    bound, so a server that cannot listen never claims a run or fires a trigger."""
    state: Services = app.extensions["levqor"]
    cfg = state.config
    if workers and cfg.executor.kind == "embedded" and state.executor is None:
        state.executor = EmbeddedExecutor(state.runs)  # woken by the runs it queues
        state.executor.start()
        atexit.register(state.executor.stop, 1.0)
    if scheduler and cfg.executor.scheduler != "off" and state.scheduler is None:
        from levqor_host.backup.create import scheduled_backup
        from levqor_host.workers.scheduler import SchedulerService

        def backup() -> dict | None:
            return scheduled_backup(state.store, cfg, state.metrics)

        from levqor_host.workers.poller import Poller

        def leading() -> bool:
            return state.scheduler is not None and state.scheduler.is_leader

        poller = Poller(state.triggers, leading, workers=cfg.triggers.poll_workers)
        state.scheduler = SchedulerService(state.runs, backup=backup, poller=poller)
        state.scheduler.start()
        atexit.register(state.scheduler.stop)


def get_state(app: Flask) -> Services:
    return app.extensions["levqor"]
