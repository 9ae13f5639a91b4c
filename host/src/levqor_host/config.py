"""Configuration from environment variables. Every default is safe for a laptop."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any


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
    log_level: str = "INFO"
    dev: bool = False
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
            log_level=(env.get("LEVQOR_LOG_LEVEL") or "INFO").upper(),
            dev=_bool(env, "LEVQOR_DEV", False),
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
        if cfg.scheduler not in ("auto", "on", "off"):
            raise ValueError("LEVQOR_SCHEDULER must be auto, on or off")
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
