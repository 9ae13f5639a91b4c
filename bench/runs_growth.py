"""List-runs and get-run latency as runs pile up, on SQLite and PostgreSQL, and what retention
pruning (LEVQOR_RUN_RETENTION_DAYS) costs and gives back.

    python bench/runs_growth.py [--sizes 10000 100000] [--backends sqlite postgresql] [--requests 200]

For each backend and size: a fresh database; runs of one user (the worst case for the per-user
index) are bulk-inserted with one step row each (1 % failed, spread over 60 days); then, over
real HTTP against an in-process server (werkzeug, threaded), p50/p95 of:
  GET /api/v1/runs?limit=50                   (first page)
  GET /api/v1/runs?limit=50&cursor=...        (page 20, keyset cursor)
  GET /api/v1/runs?limit=50&status=failed     (a rare status: the index walk is longest)
  GET /api/v1/runs/<id>                        (a random run with its steps)
Finally Store.runs.prune(30 days): time taken, runs left, and the first-page latency after.
PostgreSQL: BENCH_PG_URL (default postgresql+psycopg://postgres@127.0.0.1:5432/test).
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import secrets
import statistics
import sys
import tempfile
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import requests

PG = os.environ.get("BENCH_PG_URL") or "postgresql+psycopg://postgres@127.0.0.1:5432/test"


def serve(app):
    from werkzeug.serving import make_server

    srv = make_server("127.0.0.1", 0, app, threaded=True)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv, f"http://127.0.0.1:{srv.server_port}"


def fill(store, user_id: str, pipeline_id: str, n: int) -> list[str]:
    from levqor_host.store.tables import run_steps, runs

    now = datetime.now(UTC)
    ids: list[str] = []
    batch = 5000
    for start in range(0, n, batch):
        rows, steps = [], []
        for i in range(start, min(n, start + batch)):
            created = now - timedelta(seconds=60 * 86400 * (n - i) / n)
            rid = f"run_{uuid.uuid4().hex}"
            status = "failed" if i % 100 == 0 else "succeeded"
            rows.append(
                {
                    "id": rid,
                    "user_id": user_id,
                    "pipeline_id": pipeline_id,
                    "version": 1,
                    "status": status,
                    "trigger": "webhook",
                    "input": {"id": f"A-{i}", "amount": i},
                    "idempotency_key": None,
                    "retry_of": None,
                    "error": {"type": "HTTPError", "message": "refused"}
                    if status == "failed"
                    else None,
                    "lease_owner": None,
                    "lease_expires_at": None,
                    "claims": 1,
                    "cancel_requested": False,
                    "created_at": created,
                    "started_at": created,
                    "finished_at": created + timedelta(seconds=0.05),
                }
            )
            steps.append(
                {
                    "run_id": rid,
                    "step_id": "shape",
                    "position": 0,
                    "connector": "core",
                    "action": "transform",
                    "status": "succeeded",
                    "attempts": 1,
                    "input": {"value": {"order": f"A-{i}"}},
                    "output": {"value": {"order": f"A-{i}"}},
                    "error": None,
                    "started_at": created,
                    "finished_at": created,
                }
            )
            ids.append(rid)
        with store.write() as conn:
            conn.execute(runs.insert(), rows)
            conn.execute(run_steps.insert(), steps)
    if store.dialect == "postgresql":
        with store.engine.connect() as conn:
            conn.exec_driver_sql("ANALYZE runs")
            conn.exec_driver_sql("ANALYZE run_steps")
            conn.commit()
    return ids


def timed(session, url: str, n: int) -> tuple[float, float]:
    out = []
    for _ in range(n):
        t = time.perf_counter()
        r = session.get(url, timeout=60)
        out.append((time.perf_counter() - t) * 1000)
        assert r.status_code == 200, r.text
    out.sort()
    return statistics.median(out), out[int(len(out) * 0.95) - 1]


def one(backend: str, size: int, n_requests: int) -> None:
    from levqor_host.app import create_app
    from levqor_host.config import Config
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    tmp = Path(tempfile.mkdtemp(prefix="levqor-growth-"))
    env = {
        k: v for k, v in os.environ.items() if not k.startswith("LEVQOR_") and k != "DATABASE_URL"
    }
    env.update(
        {
            "LEVQOR_DATA_DIR": str(tmp),
            "LEVQOR_RATE_LIMITS": "off",
            "LEVQOR_LOG_LEVEL": "WARNING",
            "LEVQOR_EXECUTOR": "off",
            "LEVQOR_SCHEDULER": "off",
            "LEVQOR_CACHE_DIR": "",
        }
    )
    admin = name = None
    if backend == "postgresql":
        admin = create_engine(PG, isolation_level="AUTOCOMMIT")
        name = f"levqor_growth_{secrets.token_hex(4)}"
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        env["DATABASE_URL"] = make_url(PG).set(database=name).render_as_string(hide_password=False)
    try:
        app = create_app(Config.from_env(env), start_workers=False, start_scheduler=False)
        st = app.extensions["levqor"]
        user = st.store.users.create("growth@example.com")
        key, _ = st.store.api_keys.create(user["id"], name="b", scopes=["pipelines:read"])
        doc = {
            "levqor": 1,
            "trigger": {"type": "webhook"},
            "steps": [
                {
                    "id": "shape",
                    "connector": "core",
                    "action": "transform",
                    "payload": {"value": {"order": "x"}},
                }
            ],
        }
        p = st.store.pipelines.create(user["id"], "growth", doc)
        t = time.perf_counter()
        ids = fill(st.store, user["id"], p["id"], size)
        fill_s = time.perf_counter() - t
        srv, base = serve(app)
        s = requests.Session()
        s.headers["Authorization"] = f"Bearer {key}"
        s.get(base + "/api/v1/runs?limit=50")  # warm up
        cursor = None
        for _ in range(19):
            cursor = s.get(base + "/api/v1/runs", params={"limit": 50, "cursor": cursor}).json()[
                "next_cursor"
            ]
        first = timed(s, base + "/api/v1/runs?limit=50", n_requests)
        deep = timed(s, base + f"/api/v1/runs?limit=50&cursor={cursor}", n_requests)
        failed = timed(s, base + "/api/v1/runs?limit=50&status=failed", n_requests)
        rng = random.Random(1)
        get_times = []
        for _ in range(n_requests):
            rid = rng.choice(ids)
            t0 = time.perf_counter()
            assert s.get(base + f"/api/v1/runs/{rid}").status_code == 200
            get_times.append((time.perf_counter() - t0) * 1000)
        get_times.sort()
        get = (statistics.median(get_times), get_times[int(len(get_times) * 0.95) - 1])
        t = time.perf_counter()
        pruned = st.store.runs.prune(datetime.now(UTC) - timedelta(days=30), batch=5000)
        prune_s = time.perf_counter() - t
        left = len(ids) - pruned
        after = timed(s, base + "/api/v1/runs?limit=50", n_requests)
        print(
            f"{backend:<10} {size:>8} runs (filled in {fill_s:5.1f} s) | list p50/p95 {first[0]:6.1f}/{first[1]:6.1f} ms"
            f" | page 20 {deep[0]:6.1f}/{deep[1]:6.1f} | status=failed {failed[0]:6.1f}/{failed[1]:6.1f}"
            f" | get {get[0]:6.1f}/{get[1]:6.1f} | prune 30 d: {pruned} runs in {prune_s:5.1f} s,"
            f" {left} left, list after {after[0]:5.1f}/{after[1]:5.1f} ms",
            flush=True,
        )
        srv.shutdown()
        st.store.close()
    finally:
        if admin is not None:
            with admin.connect() as conn:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            admin.dispose()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    ap.add_argument("--backends", nargs="+", default=["sqlite", "postgresql"])
    ap.add_argument("--requests", type=int, default=200)
    args = ap.parse_args()
    print(
        f"machine: {platform.platform()}, {os.cpu_count()} CPUs, Python {platform.python_version()}; "
        f"{args.requests} requests per figure, latencies p50/p95 in ms over loopback HTTP"
    )
    for backend in args.backends:
        for size in args.sizes:
            one(backend, size, args.requests)


if __name__ == "__main__":
    sys.exit(main())
