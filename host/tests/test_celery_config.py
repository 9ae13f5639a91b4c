"""LEVQOR_EXECUTOR=celery configuration: at-least-once Celery settings and clear errors."""

from __future__ import annotations

import subprocess
import sys

import pytest
from e2e_support import clean_env
from levqor_host.config import Config
from levqor_host.workers.celery import make_celery


def test_celery_needs_a_broker_url():
    with pytest.raises(ValueError, match="LEVQOR_BROKER_URL"):
        Config.from_env({"LEVQOR_EXECUTOR": "celery"})


def test_visibility_timeout_must_exceed_the_longest_step_timeout():
    env = {
        "LEVQOR_EXECUTOR": "celery",
        "LEVQOR_BROKER_URL": "redis://127.0.0.1:6379/0",
        "LEVQOR_CELERY_VISIBILITY_TIMEOUT": "600",
    }
    with pytest.raises(ValueError, match="above 900"):
        Config.from_env(env)


def test_retention_must_not_be_negative():
    with pytest.raises(ValueError, match="LEVQOR_RUN_RETENTION_DAYS"):
        Config.from_env({"LEVQOR_RUN_RETENTION_DAYS": "-1"})


def test_at_least_once_settings():
    cfg = Config.from_env(
        {
            "LEVQOR_EXECUTOR": "celery",
            "LEVQOR_BROKER_URL": "redis://127.0.0.1:6379/3",
            "LEVQOR_CELERY_QUEUE": "runs-eu",
        }
    )
    conf = make_celery(cfg).conf
    assert conf.task_acks_late is True
    assert conf.task_reject_on_worker_lost is True
    assert conf.worker_prefetch_multiplier == 1
    assert conf.broker_transport_options["visibility_timeout"] == 3600.0
    assert conf.task_default_queue == "runs-eu"
    assert conf.broker_connection_max_retries is None
    assert conf.broker_url == "redis://127.0.0.1:6379/3"


def test_worker_without_a_broker_says_what_to_set(tmp_path):
    env = clean_env()
    env["LEVQOR_DATA_DIR"] = str(tmp_path)
    r = subprocess.run(
        [sys.executable, "-m", "levqor_host.cli", "worker", "--executor", "celery"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode != 0 and "LEVQOR_BROKER_URL" in r.stderr
