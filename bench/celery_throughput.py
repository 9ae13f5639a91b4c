"""Completed runs per second on Celery + Redis + PostgreSQL, next to a bare Celery no-op task.

    python bench/celery_throughput.py [--runs 1000] [--noop 3000] [--procs 1 2 4] [--threads 4]

Needs PostgreSQL (BENCH_PG_URL, default postgresql+psycopg://postgres@127.0.0.1:5432/test; a
fresh database is created and dropped) and Redis (BENCH_BROKER_URL, default
redis://127.0.0.1:6379/0). For each count of worker processes (`levqor worker --executor celery
--threads T`, one process each) it measures, in the same run and on the same broker:

  1. the bare engine: N `celery worker --pool threads --concurrency T` processes draining
     --noop pre-published no-op tasks (bench/celery_noop.py): tasks / (last done - first done);
  2. Levqor: --runs runs of the two-step pipeline (webhook -> core.transform -> http POST to a
     local fake) queued and published with the workers stopped, then N Levqor workers started:
     completed runs / (last finished_at - first started_at), from the runs table.

Worker start-up is outside both windows. Prints one line per N and the ratio Levqor / bare.
"""

from __future__ import annotations

import argparse
import os
import platform
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path

from run_cost import pipeline  # bench/ is on sys.path when this script runs

ROOT = Path(__file__).resolve().parents[1]
BENCH = Path(__file__).resolve().parent
PG = os.environ.get("BENCH_PG_URL") or "postgresql+psycopg://postgres@127.0.0.1:5432/test"
BROKER = os.environ.get("BENCH_BROKER_URL") or "redis://127.0.0.1:6379/0"


def clean_env(**extra: str) -> dict[str, str]:
    env = {
        k: v for k, v in os.environ.items() if not k.startswith("LEVQOR_") and k != "DATABASE_URL"
    }
    env.update({"PYTHONUNBUFFERED": "1", **extra})
    return env


def stop_all(procs: list[subprocess.Popen]) -> None:
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    for p in procs:
        try:
            p.wait(30)
        except subprocess.TimeoutExpired:
            p.kill()


def bare(n_procs: int, threads: int, tasks: int, log: Path) -> float:
    import redis

    queue = f"bench-noop-{secrets.token_hex(3)}"
    r = redis.Redis.from_url(BROKER)
    env = clean_env(BENCH_BROKER_URL=BROKER, BENCH_QUEUE=queue, PYTHONPATH=str(BENCH))
    sys.path.insert(0, str(BENCH))
    os.environ["BENCH_QUEUE"] = queue
    import importlib

    import celery_noop

    importlib.reload(celery_noop)
    for i in range(tasks):
        celery_noop.noop.apply_async(args=[i], queue=queue)
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "celery_noop",
                "worker",
                "--pool",
                "threads",
                "--concurrency",
                str(threads),
                "-Q",
                queue,
                "--without-gossip",
                "--without-mingle",
                "--without-heartbeat",
                "-n",
                f"noop{i}-{queue}@%h",
                "--loglevel",
                "WARNING",
            ],
            cwd=BENCH,
            env=env,
            stdout=log.open("ab"),
            stderr=subprocess.STDOUT,
        )
        for i in range(n_procs)
    ]
    try:
        deadline = time.monotonic() + 600
        while int(r.get(f"{queue}:done") or 0) < tasks and time.monotonic() < deadline:
            time.sleep(0.1)
        done = int(r.get(f"{queue}:done") or 0)
        first, last = float(r.get(f"{queue}:first")), float(r.get(f"{queue}:last"))
    finally:
        stop_all(procs)
        r.delete(queue, f"{queue}:first", f"{queue}:last", f"{queue}:done")
    return done / max(1e-9, last - first)


def levqor(
    n_procs: int, threads: int, runs: int, db_url: str, data: Path, fake_url: str, log: Path
) -> tuple[float, int]:
    from levqor_host.app import create_app
    from levqor_host.config import Config
    from sqlalchemy import create_engine, text

    queue = f"bench-levqor-{secrets.token_hex(3)}"
    env = clean_env(
        LEVQOR_DATA_DIR=str(data),
        DATABASE_URL=db_url,
        LEVQOR_EXECUTOR="celery",
        LEVQOR_BROKER_URL=BROKER,
        LEVQOR_CELERY_QUEUE=queue,
        LEVQOR_SSRF_ALLOW="127.0.0.1",
        LEVQOR_SCHEDULER="off",
        LEVQOR_LOG_LEVEL="WARNING",
        LEVQOR_RATE_LIMITS="off",
        LEVQOR_MAX_RUNNING_PER_USER="100000",
        LEVQOR_CACHE_DIR="",
    )
    cfg = Config.from_env(env)
    app = create_app(cfg, start_workers=False, start_scheduler=False)
    st = app.extensions["levqor"]
    user = st.store.users.get_by_email("bench@example.com") or st.store.users.create(
        "bench@example.com", plan="business"
    )
    doc = pipeline(fake_url)  # the same two-step pipeline as bench/run_cost.py
    p = st.store.pipelines.create(user["id"], f"bench-{queue}", doc)
    p = st.store.pipelines.get(user["id"], p["id"])
    for i in range(runs):  # rows written and messages published; no worker is up yet
        st.runs.start(user, p, {"id": f"A-{i}", "amount": i}, trigger="webhook")
    st.store.close()
    procs = [
        subprocess.Popen(
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
        for _ in range(n_procs)
    ]
    engine = create_engine(db_url)
    q = text(
        "SELECT count(*) FILTER (WHERE status IN ('succeeded','failed')), count(*) FILTER (WHERE status = 'succeeded'),"
        " min(started_at), max(finished_at) FROM runs WHERE pipeline_id = :p"
    )
    try:
        deadline = time.monotonic() + 900
        while time.monotonic() < deadline:
            with engine.connect() as conn:
                done, ok, first, last = conn.execute(q, {"p": p["id"]}).one()
            if done >= runs:
                break
            time.sleep(0.2)
    finally:
        stop_all(procs)
        engine.dispose()
    return done / max(1e-9, (last - first).total_seconds()), ok


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=1000)
    ap.add_argument("--noop", type=int, default=3000)
    ap.add_argument("--procs", type=int, nargs="+", default=[1, 2, 4])
    ap.add_argument("--threads", type=int, default=4)
    args = ap.parse_args()
    sys.path.insert(0, str(ROOT / "tests"))
    from levqor_kernel.testing import FakeServer, Reply
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    admin = create_engine(PG, isolation_level="AUTOCOMMIT")
    name = f"levqor_bench_{secrets.token_hex(4)}"
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    db_url = make_url(PG).set(database=name).render_as_string(hide_password=False)
    import tempfile

    tmp = Path(tempfile.mkdtemp(prefix="levqor-celery-bench-"))
    log = tmp / "workers.log"
    print(
        f"machine: {platform.platform()}, {os.cpu_count()} CPUs, Python {platform.python_version()}"
    )
    print(
        f"runs {args.runs}, no-op tasks {args.noop}, threads per worker process {args.threads}; logs in {log}"
    )
    try:
        with FakeServer() as fake:
            fake.route("POST", "/orders", lambda req: Reply(201, {"received": True}))
            for n in args.procs:
                b = bare(n, args.threads, args.noop, log)
                rate, ok = levqor(n, args.threads, args.runs, db_url, tmp / "data", fake.url, log)
                print(
                    f"{n} worker process(es): bare no-op {b:8.1f} tasks/s | levqor {rate:7.1f} runs/s "
                    f"({ok}/{args.runs} succeeded) | {100 * rate / b:5.1f} % of bare",
                    flush=True,
                )
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


if __name__ == "__main__":
    main()
