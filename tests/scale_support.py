"""Helpers of the scale-out tests (issue 10): a fresh PostgreSQL database, Redis, Celery worker
processes (`levqor worker --executor celery`), and Redis restarts.

Tests using them are marked ``services``; they skip with a message saying what to start, or
fail when ``LEVQOR_REQUIRE_SERVICES=1``.
"""

from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from e2e_support import clean_env, require_services

PG_SERVER = (
    os.environ.get("LEVQOR_TEST_PG_URL") or "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
REDIS_HOST, REDIS_PORT = "127.0.0.1", 6379
REDIS_URL = os.environ.get("LEVQOR_TEST_REDIS_URL") or f"redis://{REDIS_HOST}:{REDIS_PORT}/0"
PG_DOWN = "PostgreSQL not reachable on 127.0.0.1:5432: start it (service postgresql start) or set LEVQOR_TEST_PG_URL"
REDIS_DOWN = "Redis not reachable on 127.0.0.1:6379: start it (redis-server --daemonize yes)"
FINAL = ("succeeded", "failed", "cancelled")


def unavailable(message: str) -> None:
    if require_services():
        pytest.fail(message)
    pytest.skip(message)


def redis_up(timeout: float = 1.0) -> bool:
    try:
        with socket.create_connection((REDIS_HOST, REDIS_PORT), timeout=timeout) as s:
            s.sendall(b"PING\r\n")
            return s.recv(16).startswith(b"+PONG")
    except OSError:
        return False


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A fresh, empty PostgreSQL database (dropped afterwards)."""
    from levqor_host.store import normalize_url
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import OperationalError

    server = normalize_url(PG_SERVER)
    admin = create_engine(server, isolation_level="AUTOCOMMIT", connect_args={"connect_timeout": 3})
    name = f"levqor_scale_{secrets.token_hex(5)}"
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    except OperationalError:
        admin.dispose()
        unavailable(PG_DOWN)
    try:
        yield make_url(server).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture
def redis_url() -> str:
    if not redis_up():
        unavailable(REDIS_DOWN)
    return REDIS_URL


@pytest.fixture
def queue() -> Iterator[str]:
    """A Celery queue of this test's own (so tests and benchmarks never share messages)."""
    name = f"levqor-test-{secrets.token_hex(4)}"
    yield name
    if redis_up():
        import redis

        r = redis.Redis.from_url(REDIS_URL)
        try:
            r.delete(name)
        finally:
            r.close()


def base_env(data_dir: Path, **extra: str) -> dict[str, str]:
    """The environment of a Levqor subprocess: this interpreter's, minus LEVQOR_*/DATABASE_URL."""
    env = clean_env()
    env.update(
        {
            "LEVQOR_DATA_DIR": str(data_dir),
            "LEVQOR_SSRF_ALLOW": "127.0.0.1",
            "LEVQOR_SCHEDULER": "off",
            "LEVQOR_RATE_LIMITS": "off",
            "LEVQOR_LOG_LEVEL": "WARNING",
            "PYTHONUNBUFFERED": "1",
            "LEVQOR_CACHE_DIR": "",
        }
    )
    env.update(extra)
    return env


def celery_env(data_dir: Path, db_url: str, queue: str, **extra: str) -> dict[str, str]:
    return base_env(
        data_dir,
        DATABASE_URL=db_url,
        LEVQOR_EXECUTOR="celery",
        LEVQOR_BROKER_URL=REDIS_URL,
        LEVQOR_CELERY_QUEUE=queue,
        LEVQOR_LEASE_SECONDS="2",
        LEVQOR_POLL_INTERVAL="0.1",
        LEVQOR_CELERY_SWEEP_INTERVAL="0.5",
        LEVQOR_CELERY_REQUEUE_AFTER="2",
        LEVQOR_MAX_RUNNING_PER_USER="1000",
        LEVQOR_SHUTDOWN_GRACE="5",
        **extra,
    )


def start_celery_worker(env: dict[str, str], log: Path, threads: int = 4) -> subprocess.Popen:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "levqor_host.cli",
            "worker",
            "--executor",
            "celery",
            "--threads",
            str(threads),
        ],
        env=env,
        stdout=log.open("ab"),
        stderr=subprocess.STDOUT,
    )


def stop(proc: subprocess.Popen, timeout: float = 30) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def wait_final(store, run_ids: list[str], timeout: float) -> list[dict]:
    deadline = time.monotonic() + timeout
    while True:
        runs = [store.runs.get(None, rid) for rid in run_ids]
        if all(r["status"] in FINAL for r in runs) or time.monotonic() > deadline:
            return runs
        time.sleep(0.2)


def redis_shutdown() -> None:
    subprocess.run(
        ["redis-cli", "-h", REDIS_HOST, "-p", str(REDIS_PORT), "shutdown", "nosave"],
        capture_output=True,
        timeout=10,
    )
    deadline = time.monotonic() + 10
    while redis_up(0.2) and time.monotonic() < deadline:
        time.sleep(0.1)


def redis_start() -> None:
    if redis_up():
        return
    subprocess.run(
        [
            "redis-server",
            "--daemonize",
            "yes",
            "--bind",
            REDIS_HOST,
            "--port",
            str(REDIS_PORT),
            "--save",
            "",
        ],
        capture_output=True,
        timeout=10,
    )
    deadline = time.monotonic() + 10
    while not redis_up(0.2) and time.monotonic() < deadline:
        time.sleep(0.1)
