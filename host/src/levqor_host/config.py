"""The host's configuration: the one reader of the environment.

:meth:`Config.from_env` reads every variable once, at start, into a frozen :class:`Config` with a
section per concern (``cfg.database``, ``cfg.executor``, ``cfg.web``, ``cfg.security``, ...);
every other module is handed its section. A bad value stops start-up with a message naming the
variable. Plugins read their own variables through :meth:`Config.plugin_settings`. Every
variable, its section, default and meaning: docs/configuration.md (a test holds the two
together). Every default is safe for a laptop.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, fields, is_dataclass, replace
from pathlib import Path
from types import MappingProxyType
from typing import Any

from levqor_host.security.settings import (
    DEFAULT_CSP,
    DEFAULT_PLAN_LIMITS,
    PLAN_PREFIX,
    SecuritySettings,
)

_UNSET: Any = object()


class EnvReader:
    """Typed reads of one environment mapping, each a clear error on a bad value.

    It remembers what it read, by section (``reads``: name -> (section, default)), which is how
    the documentation test knows every variable the host reads.
    """

    def __init__(self, env: Mapping[str, str]) -> None:
        self.env = env
        self.section = ""
        self.reads: dict[str, tuple[str, Any]] = {}

    def raw(self, key: str, default: Any) -> str | None:
        """The value as set (None when unset); ``default`` is what the host uses then."""
        if key not in self.reads or self.reads[key][1] is None:
            self.reads[key] = (self.section, default)
        return self.env.get(key)

    def text(self, key: str, default: str) -> str:
        """The value, or ``default`` when unset or empty."""
        return self.raw(key, default) or default

    def optional(self, key: str) -> str | None:
        """The value, or None when unset or empty."""
        return self.raw(key, None) or None

    def integer(self, key: str, default: int) -> int:
        return self._convert(key, default, int, "an integer")

    def number(self, key: str, default: float) -> float:
        return self._convert(key, default, float, "a number")

    def _convert(self, key: str, default: Any, kind: type, words: str) -> Any:
        raw = self.raw(key, default)
        if raw is None or raw.strip() == "":
            return default
        try:
            return kind(raw)
        except ValueError:
            raise ValueError(f"{key} must be {words}, got {raw!r}") from None

    def flag(self, key: str, default: bool) -> bool:
        raw = self.raw(key, default)
        if raw is None or raw == "":
            return default
        return raw.strip().lower() in ("1", "true", "yes", "on")

    def names(self, key: str) -> tuple[str, ...] | None:
        """A comma separated list; None when unset or blank."""
        raw = self.raw(key, None)
        if raw is None or not raw.strip():
            return None
        return tuple(v.strip() for v in raw.split(",") if v.strip())

    def rate_limit(self, key: str, default: str) -> str:
        from limits import parse_many

        raw = self.text(key, default).strip()
        try:
            parse_many(raw)
        except ValueError:
            raise ValueError(
                f"{key} must be a rate limit such as '100/minute' or '5 per minute', got {raw!r}"
            ) from None
        return raw

    def prefixed(
        self, prefix: str, shown: tuple[str, ...] = ("<NAME>",)
    ) -> Iterator[tuple[str, str]]:
        """Every variable named ``<prefix><something>`` (documented as ``<prefix><shown>``)."""
        for tail in shown:
            self.reads.setdefault(prefix + tail, (self.section, None))
        for key, value in self.env.items():
            if key.startswith(prefix) and len(key) > len(prefix):
                yield key, value


# --------------------------------------------------------------------------- sections
@dataclass(frozen=True)
class DatabaseConfig:
    #: SQLAlchemy URL; empty in the environment: SQLite in the data folder
    url: str = ""
    #: delete finished runs older than this many days (0: keep)
    run_retention_days: int = 0


@dataclass(frozen=True)
class ExecutorConfig:
    kind: str = "embedded"  # embedded | celery | off
    workers: int = 4
    lease_seconds: float = 30.0
    poll_interval: float = 0.5
    max_running_per_user: int = 10
    shutdown_grace: float = 20.0
    #: the byte bound of rendered values and step outputs (poison runs)
    max_value_bytes: int = 1024 * 1024
    #: how many workers a run may lose in a row before it is abandoned
    max_worker_losses: int = 3
    settle_after_seconds: float = 60.0
    settle_sweep_seconds: float = 30.0
    #: how often waiting runs whose timer (or approval timeout) is due are resumed
    wait_sweep_seconds: float = 5.0
    #: the most items a for-each step may iterate over (the runner's cap)
    max_loop_items: int = 10000
    #: how deep sub-pipelines may call one another (a run started by a run ... )
    max_pipeline_depth: int = 5
    scheduler: str = "auto"  # auto: inside serve behind the leader lock; on; off
    broker_url: str | None = None
    celery_queue: str = "levqor"
    celery_visibility_timeout: float = 3600.0
    celery_sweep_interval: float = 5.0
    celery_requeue_after: float = 30.0


@dataclass(frozen=True)
class TriggersConfig:
    """App triggers: how often polling triggers may be polled and how the poller behaves."""

    #: the shortest interval a pipeline may ask for, in seconds
    poll_min_interval: int = 60
    #: a polling trigger's interval when its pipeline names none
    poll_default_interval: int = 300
    #: threads that poll due triggers (in the scheduler leader's process)
    poll_workers: int = 8
    #: consecutive failures after which a trigger shows "failing" and its owner is emailed
    fail_after: int = 5
    #: item ids remembered per trigger (the newest are kept)
    seen_max: int = 5000


@dataclass(frozen=True)
class WebConfig:
    host: str = "127.0.0.1"
    port: int = 8000
    max_body_bytes: int = 1024 * 1024
    webhook_max_bytes: int = 256 * 1024
    max_json_depth: int = 32
    run_wait_max: float = 60.0
    #: how long an Idempotency-Key's first answer is kept
    idempotency_hours: int = 24


@dataclass(frozen=True)
class BillingConfig:
    prices: str = ""  # LEVQOR_PRICES: connector.action=credits,...
    low_credit_threshold: int = 20
    #: LEVQOR_MODEL_RATES: credits per million tokens by model ("*": any other), over the
    #: connectors' own rates
    model_rates: Mapping[str, Mapping[str, float]] = field(default_factory=dict)


def parse_model_rates(raw: str | None) -> dict[str, dict[str, float]]:
    """``LEVQOR_MODEL_RATES``: ``{"gpt-4o-mini": {"input": 15, "output": 60}, "*": {...}}``,
    credits per million input and output tokens by model."""
    if not raw or not raw.strip():
        return {}
    try:
        data = json.loads(raw)
    except ValueError as e:
        raise ValueError(f"LEVQOR_MODEL_RATES must be JSON: {e}") from None
    shape = 'like {"gpt-4o-mini": {"input": 15, "output": 60}, "*": {"input": 100, "output": 400}}'
    if not isinstance(data, dict):
        raise ValueError(f"LEVQOR_MODEL_RATES must be a JSON object {shape}")
    out: dict[str, dict[str, float]] = {}
    for model, rate in data.items():
        if not model or not isinstance(rate, dict) or set(rate) != {"input", "output"}:
            raise ValueError(
                f"LEVQOR_MODEL_RATES: {model!r} must map to input and output credits per million "
                f"tokens, {shape}"
            )
        for key, n in rate.items():
            if isinstance(n, bool) or not isinstance(n, int | float) or not 0 <= n < float("inf"):
                raise ValueError(f"LEVQOR_MODEL_RATES: {model}.{key} must be a number of 0 or more")
        out[model] = {"input": float(rate["input"]), "output": float(rate["output"])}
    return out


@dataclass(frozen=True)
class GrowthConfig:
    referral_bonus: int = 100
    referral_claim_days: int = 7
    analytics_secret: str | None = None


@dataclass(frozen=True)
class PlannerConfig:
    price_credits: int = 1
    rate_per_minute: int = 10
    repair_rounds: int = 2


@dataclass(frozen=True)
class MailConfig:
    resend_api_key: str | None = None
    resend_api_base: str = "https://api.resend.com"
    receiving_email: str | None = None
    mail_from: str = "Levqor <onboarding@resend.dev>"


@dataclass(frozen=True)
class SupportConfig:
    error_max_bytes: int = 32 * 1024
    support_max_bytes: int = 16 * 1024
    inbox_max_bytes: int = 50 * 1024 * 1024
    errors_rate_limit: str = "30/minute"
    support_rate_limit: str = "5/hour"


@dataclass(frozen=True)
class BackupConfig:
    cron: str = "0 0 * * *"
    retention_days: int = 7
    #: where archives go; None: ``<data>/backups`` (``Config.backups_dir``)
    dir: Path | None = None
    max_age_hours: float = 26.0
    include_key: bool = True
    pg_dump: str = "pg_dump"
    pg_restore: str = "pg_restore"
    #: the ``PATH`` the PostgreSQL client tools are looked up on
    path: str | None = None


@dataclass(frozen=True)
class ObservabilityConfig:
    log_level: str = "INFO"
    log_format: str = "json"  # json | text
    metrics_token: str | None = None
    prometheus_multiproc_dir: str | None = None
    sentry_dsn: str | None = None
    sentry_environment: str = "production"
    health_min_free_mb: int = 200
    health_max_queue_age: float = 900.0


@dataclass(frozen=True)
class GunicornConfig:
    """``levqor serve --prod``: gunicorn's settings (None: the ``--host``/``--port`` bind)."""

    bind: str | None = None
    workers: int = 2
    threads: int = 4
    timeout: int = 30
    graceful_timeout: int = 20
    keepalive: int = 5
    #: recycle a worker after this many requests (0: never), with jitter
    max_requests: int = 0
    max_requests_jitter: int = 0
    accesslog: str | None = None
    loglevel: str = "warning"


@dataclass(frozen=True)
class PluginsConfig:
    #: the allow-list of installed plugins (None: all)
    allow: tuple[str, ...] | None = None
    block: tuple[str, ...] = ()
    #: the kernel's schema-check cache folder: None, the kernel's default; "": memory only
    schema_cache_dir: str | None = None

    def manager_options(self) -> dict[str, Any]:
        """The keyword arguments of ``make_plugin_manager`` these settings give."""
        out: dict[str, Any] = {"allow": self.allow, "block": self.block}
        if self.schema_cache_dir is not None:
            out["schema_cache_dir"] = self.schema_cache_dir or None
        return out


@dataclass(frozen=True)
class OAuthClientConfig:
    """The operator's OAuth2 client for one connector (``LEVQOR_OAUTH_<CONNECTOR>_*``)."""

    client_id: str | None = None
    client_secret: str | None = field(default=None, repr=False)
    #: overrides of the connector's own endpoints (another region, a fake in tests)
    authorization_url: str | None = None
    token_url: str | None = None


#: the settings of one OAuth2 client, by the suffix of their variable
_OAUTH_FIELDS = {
    "_CLIENT_ID": "client_id",
    "_CLIENT_SECRET": "client_secret",
    "_AUTHORIZATION_URL": "authorization_url",
    "_TOKEN_URL": "token_url",
}


@dataclass(frozen=True)
class OAuthConfig:
    """OAuth2 clients ("Connect") by connector key: the connector's name upper-cased, ``-`` as
    ``_`` (``LEVQOR_OAUTH_SLACK_CLIENT_ID`` is ``clients["SLACK"].client_id``)."""

    clients: Mapping[str, OAuthClientConfig] = field(default_factory=dict)

    @staticmethod
    def key(connector: str) -> str:
        return connector.upper().replace("-", "_")

    def client(self, connector: str) -> OAuthClientConfig:
        """The client of ``connector`` (empty when the operator configured none)."""
        return self.clients.get(self.key(connector)) or OAuthClientConfig()

    @classmethod
    def variables(cls, connector: str) -> tuple[str, str]:
        """The two variables that configure ``connector``'s client."""
        k = cls.key(connector)
        return (f"LEVQOR_OAUTH_{k}_CLIENT_ID", f"LEVQOR_OAUTH_{k}_CLIENT_SECRET")


@dataclass(frozen=True)
class CliConfig:
    admin_email: str = "admin@localhost"
    write_first_key: bool = False
    #: the author ``levqor connector new`` writes into a scaffold
    author: str = "Your Name"


# --------------------------------------------------------------------------- the whole
@dataclass(frozen=True)
class Config:
    """Everything the host reads from the environment, by section."""

    data_dir: Path = Path("levqor-data")
    base_url: str = "http://127.0.0.1:8000"
    #: whether ``LEVQOR_BASE_URL`` was set (``levqor serve`` otherwise links to where it listens)
    base_url_given: bool = False
    dev: bool = False
    database: DatabaseConfig = field(default_factory=DatabaseConfig)
    executor: ExecutorConfig = field(default_factory=ExecutorConfig)
    triggers: TriggersConfig = field(default_factory=TriggersConfig)
    web: WebConfig = field(default_factory=WebConfig)
    security: SecuritySettings = field(default_factory=SecuritySettings)
    billing: BillingConfig = field(default_factory=BillingConfig)
    growth: GrowthConfig = field(default_factory=GrowthConfig)
    planner: PlannerConfig = field(default_factory=PlannerConfig)
    mail: MailConfig = field(default_factory=MailConfig)
    support: SupportConfig = field(default_factory=SupportConfig)
    backup: BackupConfig = field(default_factory=BackupConfig)
    observability: ObservabilityConfig = field(default_factory=ObservabilityConfig)
    gunicorn: GunicornConfig = field(default_factory=GunicornConfig)
    plugins: PluginsConfig = field(default_factory=PluginsConfig)
    cli: CliConfig = field(default_factory=CliConfig)
    oauth: OAuthConfig = field(default_factory=OAuthConfig)
    #: the environment it was read from, for :meth:`plugin_settings` only
    _env: Mapping[str, str] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: Any) -> Config:
        """Read ``env`` (default: this process's environment) and apply ``overrides``.

        An override names a top-level field (``data_dir=``, ``base_url=``, ``dev=``) or a
        section with a mapping of its fields (``executor={"workers": 2}``). A bad value raises
        ValueError naming the variable; an unknown override raises TypeError.
        """
        cfg = read(EnvReader(dict(os.environ if env is None else env)))
        cfg = _override(cfg, overrides)
        if not cfg.database.url:
            url = f"sqlite:///{(cfg.data_dir / 'levqor.db').resolve()}"
            cfg = replace(cfg, database=replace(cfg.database, url=url))
        _validate(cfg)
        return cfg

    def plugin_settings(self, *prefixes: str) -> Mapping[str, str]:
        """The variables a plugin reads (read-only): those whose names start with one of
        ``prefixes`` (``"STRIPE_"``, ``"LEVQOR_STRIPE_"``, an exact name), or all of them when
        none is given (what a step's ``context.env`` holds)."""
        if not prefixes:
            return MappingProxyType(dict(self._env))
        return MappingProxyType({k: v for k, v in self._env.items() if k.startswith(prefixes)})

    @property
    def pipelines_dir(self) -> Path:
        return self.data_dir / "data" / "pipelines"

    @property
    def jobs_log(self) -> Path:
        return self.data_dir / "data" / "jobs.jsonl"

    @property
    def logs_dir(self) -> Path:
        return self.data_dir / "logs"

    @property
    def backups_dir(self) -> Path:
        return self.backup.dir if self.backup.dir is not None else self.data_dir / "backups"


def child_process_env(*, pythonpath_first: str | None = None, **extra: str) -> dict[str, str]:
    """The environment a child process (``pg_dump``, a scaffold's tests) starts with: this
    process's, plus ``extra``, with ``pythonpath_first`` put in front of ``PYTHONPATH``."""
    env = {**os.environ, **extra}
    if pythonpath_first is not None:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [pythonpath_first, env.get("PYTHONPATH")]))
    return env


def _override(cfg: Config, overrides: Mapping[str, Any]) -> Config:
    known = {f.name: f for f in fields(Config) if not f.name.startswith("_")}
    bad = sorted(set(overrides) - set(known))
    if bad:
        raise TypeError(f"unknown config keys: {', '.join(bad)}")
    changes: dict[str, Any] = {}
    for name, value in overrides.items():
        current = getattr(cfg, name)
        if is_dataclass(current) and isinstance(value, Mapping):
            value = replace(current, **value)
        changes[name] = value
    cfg = replace(cfg, **changes)
    return replace(cfg, data_dir=Path(cfg.data_dir))


# --------------------------------------------------------------------------- reading
def read(r: EnvReader) -> Config:
    """The configuration of one environment, section by section (not yet validated)."""
    r.section = "general"
    data_dir = Path(r.text("LEVQOR_DATA_DIR", "levqor-data")).expanduser()
    base_url = r.text("LEVQOR_BASE_URL", "http://127.0.0.1:8000").rstrip("/")
    given = bool(r.env.get("LEVQOR_BASE_URL"))
    dev = r.flag("LEVQOR_DEV", False)
    sections: dict[str, Any] = {}
    for name, reader in _SECTIONS.items():
        r.section = name
        sections[name] = reader(r)
    return Config(
        data_dir=data_dir, base_url=base_url, base_url_given=given, dev=dev, _env=r.env, **sections
    )


def _database(r: EnvReader) -> DatabaseConfig:
    return DatabaseConfig(
        url=r.text("DATABASE_URL", ""),
        run_retention_days=r.integer("LEVQOR_RUN_RETENTION_DAYS", 0),
    )


def _executor(r: EnvReader) -> ExecutorConfig:
    return ExecutorConfig(
        kind=r.text("LEVQOR_EXECUTOR", "embedded").lower(),
        workers=r.integer("LEVQOR_WORKERS", 4),
        lease_seconds=r.number("LEVQOR_LEASE_SECONDS", 30.0),
        poll_interval=r.number("LEVQOR_POLL_INTERVAL", 0.5),
        max_running_per_user=r.integer("LEVQOR_MAX_RUNNING_PER_USER", 10),
        shutdown_grace=r.number("LEVQOR_SHUTDOWN_GRACE", 20.0),
        max_value_bytes=r.integer("LEVQOR_MAX_VALUE_BYTES", 1024 * 1024),
        max_worker_losses=r.integer("LEVQOR_MAX_WORKER_LOSSES", 3),
        settle_after_seconds=r.number("LEVQOR_SETTLE_AFTER_SECONDS", 60.0),
        settle_sweep_seconds=r.number("LEVQOR_SETTLE_SWEEP_SECONDS", 30.0),
        wait_sweep_seconds=r.number("LEVQOR_WAIT_SWEEP_SECONDS", 5.0),
        max_loop_items=r.integer("LEVQOR_MAX_LOOP_ITEMS", 10000),
        max_pipeline_depth=r.integer("LEVQOR_MAX_PIPELINE_DEPTH", 5),
        scheduler=r.text("LEVQOR_SCHEDULER", "auto").lower(),
        broker_url=r.optional("LEVQOR_BROKER_URL"),
        celery_queue=r.text("LEVQOR_CELERY_QUEUE", "levqor"),
        celery_visibility_timeout=r.number("LEVQOR_CELERY_VISIBILITY_TIMEOUT", 3600.0),
        celery_sweep_interval=r.number("LEVQOR_CELERY_SWEEP_INTERVAL", 5.0),
        celery_requeue_after=r.number("LEVQOR_CELERY_REQUEUE_AFTER", 30.0),
    )


def _triggers(r: EnvReader) -> TriggersConfig:
    return TriggersConfig(
        poll_min_interval=r.integer("LEVQOR_POLL_MIN_INTERVAL", 60),
        poll_default_interval=r.integer("LEVQOR_POLL_DEFAULT_INTERVAL", 300),
        poll_workers=r.integer("LEVQOR_POLL_WORKERS", 8),
        fail_after=r.integer("LEVQOR_TRIGGER_FAIL_AFTER", 5),
        seen_max=r.integer("LEVQOR_TRIGGER_SEEN_MAX", 5000),
    )


def _web(r: EnvReader) -> WebConfig:
    return WebConfig(
        host=r.text("LEVQOR_HOST", "127.0.0.1"),
        port=r.integer("LEVQOR_PORT", 8000),
        max_body_bytes=r.integer("LEVQOR_MAX_BODY_BYTES", 1024 * 1024),
        webhook_max_bytes=r.integer("LEVQOR_WEBHOOK_MAX_BYTES", 256 * 1024),
        max_json_depth=r.integer("LEVQOR_MAX_JSON_DEPTH", 32),
        run_wait_max=r.number("LEVQOR_RUN_WAIT_MAX", 60.0),
        idempotency_hours=r.integer("LEVQOR_IDEMPOTENCY_HOURS", 24),
    )


def _billing(r: EnvReader) -> BillingConfig:
    return BillingConfig(
        prices=r.text("LEVQOR_PRICES", ""),
        low_credit_threshold=r.integer("LEVQOR_LOW_CREDIT_THRESHOLD", 20),
        model_rates=parse_model_rates(r.text("LEVQOR_MODEL_RATES", "")),
    )


def _growth(r: EnvReader) -> GrowthConfig:
    return GrowthConfig(
        referral_bonus=r.integer("LEVQOR_REFERRAL_BONUS", 100),
        referral_claim_days=r.integer("LEVQOR_REFERRAL_CLAIM_DAYS", 7),
        analytics_secret=r.optional("LEVQOR_ANALYTICS_SECRET"),
    )


def _planner(r: EnvReader) -> PlannerConfig:
    return PlannerConfig(
        price_credits=r.integer("LEVQOR_PLAN_PRICE_CREDITS", 1),
        rate_per_minute=r.integer("LEVQOR_PLAN_RATE_PER_MINUTE", 10),
        repair_rounds=r.integer("LEVQOR_PLANNER_REPAIR_ROUNDS", 2),
    )


def _mail(r: EnvReader) -> MailConfig:
    return MailConfig(
        resend_api_key=r.optional("RESEND_API_KEY"),
        resend_api_base=r.text("LEVQOR_RESEND_API_BASE", "https://api.resend.com").rstrip("/"),
        receiving_email=r.optional("RECEIVING_EMAIL"),
        mail_from=r.text("LEVQOR_MAIL_FROM", "Levqor <onboarding@resend.dev>"),
    )


def _support(r: EnvReader) -> SupportConfig:
    return SupportConfig(
        error_max_bytes=r.integer("LEVQOR_ERROR_MAX_BYTES", 32 * 1024),
        support_max_bytes=r.integer("LEVQOR_SUPPORT_MAX_BYTES", 16 * 1024),
        inbox_max_bytes=r.integer("LEVQOR_INBOX_MAX_BYTES", 50 * 1024 * 1024),
        errors_rate_limit=r.rate_limit("LEVQOR_ERRORS_RATE_LIMIT", "30/minute"),
        support_rate_limit=r.rate_limit("LEVQOR_SUPPORT_RATE_LIMIT", "5/hour"),
    )


def _backup(r: EnvReader) -> BackupConfig:
    backup_dir = r.optional("LEVQOR_BACKUP_DIR")
    return BackupConfig(
        cron=r.text("LEVQOR_BACKUP_CRON", "0 0 * * *").strip(),
        retention_days=r.integer("LEVQOR_BACKUP_RETENTION_DAYS", 7),
        dir=Path(backup_dir).expanduser() if backup_dir else None,
        max_age_hours=r.number("LEVQOR_BACKUP_MAX_AGE_HOURS", 26.0),
        include_key=r.flag("LEVQOR_BACKUP_INCLUDE_KEY", True),
        pg_dump=r.text("LEVQOR_PG_DUMP", "pg_dump"),
        pg_restore=r.text("LEVQOR_PG_RESTORE", "pg_restore"),
        path=r.optional("PATH"),
    )


def _observability(r: EnvReader) -> ObservabilityConfig:
    return ObservabilityConfig(
        log_level=r.text("LEVQOR_LOG_LEVEL", "INFO").upper(),
        log_format=r.text("LEVQOR_LOG_FORMAT", "json").lower(),
        metrics_token=r.optional("LEVQOR_METRICS_TOKEN"),
        prometheus_multiproc_dir=r.optional("PROMETHEUS_MULTIPROC_DIR"),
        sentry_dsn=r.optional("SENTRY_DSN"),
        sentry_environment=r.text("LEVQOR_SENTRY_ENVIRONMENT", "production"),
        health_min_free_mb=r.integer("LEVQOR_HEALTH_MIN_FREE_MB", 200),
        health_max_queue_age=r.number("LEVQOR_HEALTH_MAX_QUEUE_AGE", 900.0),
    )


def _gunicorn(r: EnvReader) -> GunicornConfig:
    return GunicornConfig(
        bind=r.optional("GUNICORN_BIND"),
        workers=r.integer("GUNICORN_WORKERS", 2),
        threads=r.integer("GUNICORN_THREADS", 4),
        timeout=r.integer("GUNICORN_TIMEOUT", 30),
        graceful_timeout=r.integer("GUNICORN_GRACEFUL_TIMEOUT", 20),
        keepalive=r.integer("GUNICORN_KEEPALIVE", 5),
        max_requests=r.integer("GUNICORN_MAX_REQUESTS", 0),
        max_requests_jitter=r.integer("GUNICORN_MAX_REQUESTS_JITTER", 0),
        accesslog=r.optional("GUNICORN_ACCESSLOG"),
        loglevel=r.text("GUNICORN_LOGLEVEL", "warning"),
    )


def _plugins(r: EnvReader) -> PluginsConfig:
    return PluginsConfig(
        allow=r.names("LEVQOR_PLUGINS"),
        block=r.names("LEVQOR_DISABLE_PLUGINS") or (),
        schema_cache_dir=r.raw("LEVQOR_CACHE_DIR", "~/.cache/levqor"),
    )


def _cli(r: EnvReader) -> CliConfig:
    return CliConfig(
        admin_email=r.text("LEVQOR_ADMIN_EMAIL", "admin@localhost"),
        write_first_key=r.text("LEVQOR_WRITE_FIRST_KEY", "") == "1",
        author=r.text("LEVQOR_AUTHOR", "Your Name"),
    )


def _oauth(r: EnvReader) -> OAuthConfig:
    prefix = "LEVQOR_OAUTH_"
    found: dict[str, dict[str, str]] = {}
    shown = tuple(f"<CONNECTOR>{suffix}" for suffix in _OAUTH_FIELDS)
    for key, value in r.prefixed(prefix, shown):
        for suffix, name in _OAUTH_FIELDS.items():
            connector = key[len(prefix) : -len(suffix)]
            if key.endswith(suffix) and connector and value.strip():
                found.setdefault(connector, {})[name] = value.strip()
                break
    for connector, values in found.items():
        for name in ("authorization_url", "token_url"):
            url = values.get(name, "")
            if url and not url.startswith(("http://", "https://")):
                var = f"{prefix}{connector}_{name.upper()}"
                raise ValueError(f"{var} must be an http(s) URL")
    return OAuthConfig({k: OAuthClientConfig(**v) for k, v in sorted(found.items())})


def _security(r: EnvReader) -> SecuritySettings:
    secret = r.optional("SUPABASE_JWT_SECRET")
    url = r.text("SUPABASE_URL", "").strip().rstrip("/") or None
    algs = _jwt_algorithms(r, secret, url)
    mode = r.text("LEVQOR_RATE_LIMITS", "on").strip().lower()
    if mode not in ("on", "off", "1", "0", "true", "false"):
        raise ValueError("LEVQOR_RATE_LIMITS must be on or off")
    plans = dict(DEFAULT_PLAN_LIMITS)
    for key, _ in r.prefixed(PLAN_PREFIX):
        plans[key[len(PLAN_PREFIX) :].lower()] = r.rate_limit(key, "")
    return SecuritySettings(
        secret_key=r.optional("LEVQOR_SECRET_KEY"),
        supabase_jwt_secret=secret,
        supabase_url=url,
        jwt_algorithms=algs,
        jwt_audience=r.text("LEVQOR_JWT_AUDIENCE", "authenticated").strip(),
        jwt_issuer=r.text("LEVQOR_JWT_ISSUER", "").strip() or (f"{url}/auth/v1" if url else None),
        jwt_leeway=r.integer("LEVQOR_JWT_LEEWAY", 30),
        jwks_cache_seconds=r.integer("LEVQOR_JWKS_CACHE_SECONDS", 600),
        jwks_refetch_seconds=r.integer("LEVQOR_JWKS_REFETCH_SECONDS", 300),
        session_ttl=r.integer("LEVQOR_SESSION_TTL", 14 * 24 * 3600),
        login_link_ttl=r.integer("LEVQOR_LOGIN_LINK_TTL", 15 * 60),
        rate_limits=mode in ("on", "1", "true"),
        rate_limit_storage=r.text("LEVQOR_RATE_LIMIT_STORAGE", "memory://").strip(),
        rate_limit_strategy=r.text("LEVQOR_RATE_LIMIT_STRATEGY", "fixed-window").strip(),
        rate_limit_prefix=r.text("LEVQOR_RATE_LIMIT_PREFIX", "levqor").strip(),
        rate_limit_user_default=_user_default_limit(r),
        rate_limit_ip=r.rate_limit("LEVQOR_RATE_LIMIT_IP", "20/minute"),
        rate_limit_signin=r.rate_limit("LEVQOR_RATE_LIMIT_SIGNIN", "5/minute"),
        rate_limit_billing=r.rate_limit("LEVQOR_RATE_LIMIT_BILLING", "10/minute"),
        rate_limit_webhook=r.rate_limit("LEVQOR_RATE_LIMIT_WEBHOOK", "60/minute"),
        plan_limits=plans,
        trusted_proxies=r.integer("LEVQOR_TRUSTED_PROXIES", 0),
        hsts_max_age=r.integer("LEVQOR_HSTS_MAX_AGE", 31536000),
        csp=r.text("LEVQOR_CSP", DEFAULT_CSP).strip(),
    )


def _jwt_algorithms(r: EnvReader, secret: str | None, url: str | None) -> tuple[str, ...]:
    listed = r.names("LEVQOR_JWT_ALGORITHMS")
    if listed:
        algs = tuple(a.upper() for a in listed)
    else:
        algs = (("HS256",) if secret else ()) + (("ES256", "RS256") if url else ())
    bad = [a for a in algs if a not in ("HS256", "ES256", "RS256")]
    if bad:
        raise ValueError(f"LEVQOR_JWT_ALGORITHMS accepts HS256, ES256 and RS256, got {', '.join(bad)}")
    if "HS256" in algs and not secret:
        raise ValueError("LEVQOR_JWT_ALGORITHMS lists HS256: set SUPABASE_JWT_SECRET")
    if any(a != "HS256" for a in algs) and not url:
        raise ValueError("LEVQOR_JWT_ALGORITHMS lists ES256/RS256: set SUPABASE_URL")
    return algs


def _user_default_limit(r: EnvReader) -> str:
    """The per-user limit for a plan without a ``LEVQOR_RATE_LIMITS_<PLAN>`` tier.

    ``LEVQOR_RATE_LIMIT_GLOBAL``, its old name, is still read when the new one is unset: it
    never was a global limit (each signed-in user has their own counter).
    """
    new = r.optional("LEVQOR_RATE_LIMIT_USER_DEFAULT")
    old = r.optional("LEVQOR_RATE_LIMIT_GLOBAL")
    if new or not old:
        return r.rate_limit("LEVQOR_RATE_LIMIT_USER_DEFAULT", "100/minute")
    import logging

    logging.getLogger("levqor.config").warning(
        "LEVQOR_RATE_LIMIT_GLOBAL is deprecated: it is the per-user limit for plans without "
        "their own tier; set LEVQOR_RATE_LIMIT_USER_DEFAULT instead"
    )
    return r.rate_limit("LEVQOR_RATE_LIMIT_GLOBAL", "100/minute")


#: the readers of the sections, in the order of docs/configuration.md
_SECTIONS = {
    "database": _database,
    "executor": _executor,
    "triggers": _triggers,
    "web": _web,
    "security": _security,
    "billing": _billing,
    "growth": _growth,
    "planner": _planner,
    "mail": _mail,
    "support": _support,
    "backup": _backup,
    "observability": _observability,
    "gunicorn": _gunicorn,
    "plugins": _plugins,
    "cli": _cli,
    "oauth": _oauth,
}


# --------------------------------------------------------------------------- validation
def _validate(cfg: Config) -> None:
    """Refuse a configuration the host cannot run with, naming the variable."""
    ex = cfg.executor
    if ex.kind not in ("embedded", "celery", "off"):
        raise ValueError("LEVQOR_EXECUTOR must be embedded, celery or off")
    if ex.kind == "celery" and not ex.broker_url:
        raise ValueError("LEVQOR_EXECUTOR=celery needs LEVQOR_BROKER_URL (redis://host:6379/0)")
    if ex.celery_visibility_timeout <= 900:
        raise ValueError(
            "LEVQOR_CELERY_VISIBILITY_TIMEOUT must be above 900 (the longest step timeout)"
        )
    at_least = (
        ("LEVQOR_IDEMPOTENCY_HOURS", cfg.web.idempotency_hours, 1, "1 or more"),
        ("LEVQOR_RUN_RETENTION_DAYS", cfg.database.run_retention_days, 0, "0 (keep forever) or more"),
        ("LEVQOR_MAX_VALUE_BYTES", ex.max_value_bytes, 1024, "1024 or more"),
        ("LEVQOR_MAX_WORKER_LOSSES", ex.max_worker_losses, 1, "1 or more"),
        ("LEVQOR_MAX_LOOP_ITEMS", ex.max_loop_items, 1, "1 or more"),
        ("LEVQOR_MAX_PIPELINE_DEPTH", ex.max_pipeline_depth, 0, "0 (no sub-pipelines) or more"),
        ("LEVQOR_BACKUP_RETENTION_DAYS", cfg.backup.retention_days, 1, "1 or more"),
        ("LEVQOR_JWKS_REFETCH_SECONDS", cfg.security.jwks_refetch_seconds, 0, "0 or more"),
        ("LEVQOR_TRUSTED_PROXIES", cfg.security.trusted_proxies, 0, "0 or more"),
        ("LEVQOR_POLL_MIN_INTERVAL", cfg.triggers.poll_min_interval, 1, "1 or more"),
        ("LEVQOR_POLL_WORKERS", cfg.triggers.poll_workers, 1, "1 or more"),
        ("LEVQOR_TRIGGER_FAIL_AFTER", cfg.triggers.fail_after, 1, "1 or more"),
        ("LEVQOR_TRIGGER_SEEN_MAX", cfg.triggers.seen_max, 100, "100 or more"),
    )
    for key, value, low, words in at_least:
        if value < low:
            raise ValueError(f"{key} must be {words}")
    if cfg.triggers.poll_default_interval < cfg.triggers.poll_min_interval:
        raise ValueError("LEVQOR_POLL_DEFAULT_INTERVAL must be at least LEVQOR_POLL_MIN_INTERVAL")
    choices = (
        ("LEVQOR_SCHEDULER", ex.scheduler, ("auto", "on", "off"), "auto, on or off"),
        ("LEVQOR_LOG_FORMAT", cfg.observability.log_format, ("json", "text"), "json or text"),
        (
            "LEVQOR_RATE_LIMIT_STRATEGY",
            cfg.security.rate_limit_strategy,
            ("fixed-window", "moving-window", "sliding-window-counter"),
            "fixed-window, moving-window or sliding-window-counter",
        ),
    )
    for key, value, allowed, words in choices:
        if value not in allowed:
            raise ValueError(f"{key} must be {words}")
    if not cfg.security.rate_limit_storage.startswith(
        ("memory://", "redis://", "rediss://", "redis+unix://")
    ):
        raise ValueError("LEVQOR_RATE_LIMIT_STORAGE must be memory:// or a redis:// URL")
    if cfg.backup.cron.lower() != "off":
        from levqor_kernel.cron import CronError, parse_cron

        try:
            parse_cron(cfg.backup.cron)
        except CronError as e:
            raise ValueError(f"LEVQOR_BACKUP_CRON must be standard cron or off: {e}") from None
