"""Configuration from environment variables. Every default is safe for a laptop."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from levqor_host.security.settings import SecuritySettings


def _int(env: Mapping[str, str], key: str, default: int) -> int:
    raw = env.get(key)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise ValueError(f"{key} must be an integer, got {raw!r}") from None


def _float(env: Mapping[str, str], key: str, default: float) -> float:
    raw = env.get(key)
    if raw is None or raw == "":
        return default
    try:
        return float(raw)
    except ValueError:
        raise ValueError(f"{key} must be a number, got {raw!r}") from None


def _bool(env: Mapping[str, str], key: str, default: bool) -> bool:
    raw = env.get(key)
    if raw is None or raw == "":
        return default
    return raw.strip().lower() in ("1", "true", "yes", "on")


@dataclass
class Config:
    """Everything the host reads from the environment (names in docs/operations.md)."""

    data_dir: Path = Path("levqor-data")
    database_url: str = ""
    secret_key: str | None = None
    base_url: str = "http://127.0.0.1:8000"
    executor: str = "embedded"  # embedded | celery | off
    workers: int = 4
    lease_seconds: float = 30.0
    poll_interval: float = 0.5
    max_running_per_user: int = 10
    shutdown_grace: float = 20.0
    scheduler: str = "auto"  # auto: inside serve behind the leader lock; on; off
    max_body_bytes: int = 1024 * 1024
    webhook_max_bytes: int = 256 * 1024
    max_json_depth: int = 32
    run_wait_max: float = 60.0
    idempotency_hours: int = 24  # how long an Idempotency-Key's first answer is kept
    # poison runs (docs/operations.md): the byte bound of rendered values and step outputs, and
    # how many workers a run may lose in a row before it is abandoned
    max_value_bytes: int = 1024 * 1024
    max_worker_losses: int = 3
    log_level: str = "INFO"
    dev: bool = False
    # billing, referrals, analytics (docs/billing.md)
    prices: str = ""  # LEVQOR_PRICES: connector.action=credits,...
    referral_bonus: int = 100
    referral_claim_days: int = 7
    analytics_secret: str | None = None
    plan_price_credits: int = 1
    plan_rate_per_minute: int = 10
    planner_repair_rounds: int = 2
    # operations: logs, metrics, error and support inboxes, email, backups (docs/operations.md)
    log_format: str = "json"  # json | text
    metrics_token: str | None = None
    prometheus_multiproc_dir: str | None = None
    sentry_dsn: str | None = None
    sentry_environment: str = "production"
    resend_api_key: str | None = None
    resend_api_base: str = "https://api.resend.com"
    receiving_email: str | None = None
    mail_from: str = "Levqor <onboarding@resend.dev>"
    error_max_bytes: int = 32 * 1024
    support_max_bytes: int = 16 * 1024
    inbox_max_bytes: int = 50 * 1024 * 1024
    errors_rate_limit: str = "30/minute"
    support_rate_limit: str = "5/hour"
    low_credit_threshold: int = 20
    backup_cron: str = "0 0 * * *"
    backup_retention_days: int = 7
    backup_dir: Path | None = None
    backup_max_age_hours: float = 26.0
    backup_include_key: bool = True
    pg_dump: str = "pg_dump"
    pg_restore: str = "pg_restore"
    health_min_free_mb: int = 200
    health_max_queue_age: float = 900.0
    # scale-out (docs/scaling.md): Celery on Redis, retention
    broker_url: str | None = None
    celery_queue: str = "levqor"
    celery_visibility_timeout: float = 3600.0
    celery_sweep_interval: float = 5.0
    celery_requeue_after: float = 30.0
    run_retention_days: int = 0
    security: SecuritySettings = field(default_factory=SecuritySettings)
    env: Mapping[str, str] = field(default_factory=lambda: dict(os.environ), repr=False)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: Any) -> Config:
        env = dict(os.environ if env is None else env)
        data_dir = Path(env.get("LEVQOR_DATA_DIR") or "levqor-data").expanduser()
        cfg = cls(
            data_dir=data_dir,
            database_url=env.get("DATABASE_URL") or "",
            secret_key=env.get("LEVQOR_SECRET_KEY") or None,
            base_url=(env.get("LEVQOR_BASE_URL") or "http://127.0.0.1:8000").rstrip("/"),
            executor=(env.get("LEVQOR_EXECUTOR") or "embedded").lower(),
            workers=_int(env, "LEVQOR_WORKERS", 4),
            lease_seconds=_float(env, "LEVQOR_LEASE_SECONDS", 30.0),
            poll_interval=_float(env, "LEVQOR_POLL_INTERVAL", 0.5),
            max_running_per_user=_int(env, "LEVQOR_MAX_RUNNING_PER_USER", 10),
            shutdown_grace=_float(env, "LEVQOR_SHUTDOWN_GRACE", 20.0),
            scheduler=(env.get("LEVQOR_SCHEDULER") or "auto").lower(),
            max_body_bytes=_int(env, "LEVQOR_MAX_BODY_BYTES", 1024 * 1024),
            webhook_max_bytes=_int(env, "LEVQOR_WEBHOOK_MAX_BYTES", 256 * 1024),
            max_json_depth=_int(env, "LEVQOR_MAX_JSON_DEPTH", 32),
            run_wait_max=_float(env, "LEVQOR_RUN_WAIT_MAX", 60.0),
            idempotency_hours=_int(env, "LEVQOR_IDEMPOTENCY_HOURS", 24),
            max_value_bytes=_int(env, "LEVQOR_MAX_VALUE_BYTES", 1024 * 1024),
            max_worker_losses=_int(env, "LEVQOR_MAX_WORKER_LOSSES", 3),
            log_level=(env.get("LEVQOR_LOG_LEVEL") or "INFO").upper(),
            dev=_bool(env, "LEVQOR_DEV", False),
            prices=env.get("LEVQOR_PRICES") or "",
            referral_bonus=_int(env, "LEVQOR_REFERRAL_BONUS", 100),
            referral_claim_days=_int(env, "LEVQOR_REFERRAL_CLAIM_DAYS", 7),
            analytics_secret=env.get("LEVQOR_ANALYTICS_SECRET") or None,
            plan_price_credits=_int(env, "LEVQOR_PLAN_PRICE_CREDITS", 1),
            plan_rate_per_minute=_int(env, "LEVQOR_PLAN_RATE_PER_MINUTE", 10),
            planner_repair_rounds=_int(env, "LEVQOR_PLANNER_REPAIR_ROUNDS", 2),
            log_format=(env.get("LEVQOR_LOG_FORMAT") or "json").lower(),
            metrics_token=env.get("LEVQOR_METRICS_TOKEN") or None,
            prometheus_multiproc_dir=env.get("PROMETHEUS_MULTIPROC_DIR") or None,
            sentry_dsn=env.get("SENTRY_DSN") or None,
            sentry_environment=env.get("LEVQOR_SENTRY_ENVIRONMENT") or "production",
            resend_api_key=env.get("RESEND_API_KEY") or None,
            resend_api_base=(env.get("LEVQOR_RESEND_API_BASE") or "https://api.resend.com").rstrip(
                "/"
            ),
            receiving_email=env.get("RECEIVING_EMAIL") or None,
            mail_from=env.get("LEVQOR_MAIL_FROM") or "Levqor <onboarding@resend.dev>",
            error_max_bytes=_int(env, "LEVQOR_ERROR_MAX_BYTES", 32 * 1024),
            support_max_bytes=_int(env, "LEVQOR_SUPPORT_MAX_BYTES", 16 * 1024),
            inbox_max_bytes=_int(env, "LEVQOR_INBOX_MAX_BYTES", 50 * 1024 * 1024),
            errors_rate_limit=(env.get("LEVQOR_ERRORS_RATE_LIMIT") or "30/minute").strip(),
            support_rate_limit=(env.get("LEVQOR_SUPPORT_RATE_LIMIT") or "5/hour").strip(),
            low_credit_threshold=_int(env, "LEVQOR_LOW_CREDIT_THRESHOLD", 20),
            backup_cron=(env.get("LEVQOR_BACKUP_CRON") or "0 0 * * *").strip(),
            backup_retention_days=_int(env, "LEVQOR_BACKUP_RETENTION_DAYS", 7),
            backup_dir=Path(env["LEVQOR_BACKUP_DIR"]).expanduser()
            if env.get("LEVQOR_BACKUP_DIR")
            else None,
            backup_max_age_hours=_float(env, "LEVQOR_BACKUP_MAX_AGE_HOURS", 26.0),
            backup_include_key=_bool(env, "LEVQOR_BACKUP_INCLUDE_KEY", True),
            pg_dump=env.get("LEVQOR_PG_DUMP") or "pg_dump",
            pg_restore=env.get("LEVQOR_PG_RESTORE") or "pg_restore",
            health_min_free_mb=_int(env, "LEVQOR_HEALTH_MIN_FREE_MB", 200),
            health_max_queue_age=_float(env, "LEVQOR_HEALTH_MAX_QUEUE_AGE", 900.0),
            broker_url=env.get("LEVQOR_BROKER_URL") or None,
            celery_queue=env.get("LEVQOR_CELERY_QUEUE") or "levqor",
            celery_visibility_timeout=_float(env, "LEVQOR_CELERY_VISIBILITY_TIMEOUT", 3600.0),
            celery_sweep_interval=_float(env, "LEVQOR_CELERY_SWEEP_INTERVAL", 5.0),
            celery_requeue_after=_float(env, "LEVQOR_CELERY_REQUEUE_AFTER", 30.0),
            run_retention_days=_int(env, "LEVQOR_RUN_RETENTION_DAYS", 0),
            security=SecuritySettings.from_env(env),
            env=env,
        )
        known = {f.name for f in fields(cls)}
        bad = set(overrides) - known
        if bad:
            raise TypeError(f"unknown config keys: {', '.join(sorted(bad))}")
        cfg = replace(cfg, **overrides)
        cfg.data_dir = Path(cfg.data_dir)
        if not cfg.database_url:
            cfg.database_url = f"sqlite:///{(cfg.data_dir / 'levqor.db').resolve()}"
        if cfg.executor not in ("embedded", "celery", "off"):
            raise ValueError("LEVQOR_EXECUTOR must be embedded, celery or off")
        if cfg.executor == "celery" and not cfg.broker_url:
            raise ValueError("LEVQOR_EXECUTOR=celery needs LEVQOR_BROKER_URL (redis://host:6379/0)")
        if cfg.celery_visibility_timeout <= 900:
            raise ValueError(
                "LEVQOR_CELERY_VISIBILITY_TIMEOUT must be above 900 (the longest step timeout)"
            )
        if cfg.idempotency_hours < 1:
            raise ValueError("LEVQOR_IDEMPOTENCY_HOURS must be 1 or more")
        if cfg.run_retention_days < 0:
            raise ValueError("LEVQOR_RUN_RETENTION_DAYS must be 0 (keep forever) or more")
        if cfg.max_value_bytes < 1024:
            raise ValueError("LEVQOR_MAX_VALUE_BYTES must be 1024 or more")
        if cfg.max_worker_losses < 1:
            raise ValueError("LEVQOR_MAX_WORKER_LOSSES must be 1 or more")
        if cfg.scheduler not in ("auto", "on", "off"):
            raise ValueError("LEVQOR_SCHEDULER must be auto, on or off")
        if cfg.log_format not in ("json", "text"):
            raise ValueError("LEVQOR_LOG_FORMAT must be json or text")
        if cfg.backup_retention_days < 1:
            raise ValueError("LEVQOR_BACKUP_RETENTION_DAYS must be 1 or more")
        if cfg.backup_cron.lower() != "off":
            from levqor_kernel.cron import CronError, parse_cron

            try:
                parse_cron(cfg.backup_cron)
            except CronError as e:
                raise ValueError(f"LEVQOR_BACKUP_CRON must be standard cron or off: {e}") from None
        from limits import parse_many

        for key, value in (
            ("LEVQOR_ERRORS_RATE_LIMIT", cfg.errors_rate_limit),
            ("LEVQOR_SUPPORT_RATE_LIMIT", cfg.support_rate_limit),
        ):
            try:
                parse_many(value)
            except ValueError:
                raise ValueError(f"{key} must be a rate limit such as '5/hour'") from None
        return cfg

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
        return self.backup_dir if self.backup_dir is not None else self.data_dir / "backups"
