"""What one run of the throughput pipeline costs a worker, part by part (issue 10).

    python bench/run_cost.py [--runs 300]

The two-step pipeline of bench/celery_throughput.py (webhook -> core.transform -> http POST
to a local fake), measured sequentially on one thread so that the figures are per run:

  1. the floor: the kernel's runner alone (templating, payload and output validation, the HTTP
     POST), no database, no broker;
  2. a Celery worker's task body, ``CeleryWorker.handle(run_id)``, on PostgreSQL (BENCH_PG_URL,
     default postgresql+psycopg://postgres@127.0.0.1:5432/test; a fresh database is created and
     dropped): claim, run, step rows, finish and settlement. The runs are queued first; the
     broker is not involved (the bare Celery task of bench/celery_noop.py is the engine's part).

Prints wall and CPU time per run (CPU of the worker thread: the fake server runs on other
threads of this process) and the SQL statements and commits per run.
"""

from __future__ import annotations

import argparse
import os
import platform
import secrets
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

PG = os.environ.get("BENCH_PG_URL") or "postgresql+psycopg://postgres@127.0.0.1:5432/test"


def pipeline(fake_url: str) -> dict:
    return {
        "levqor": 1,
        "trigger": {"type": "webhook"},
        "steps": [
            {
                "id": "shape",
                "connector": "core",
                "action": "transform",
                "payload": {
                    "value": {"order": "{{ trigger.id }}", "total": "{{ trigger.amount * 1.2 }}"}
                },
            },
            {
                "id": "send",
                "connector": "http",
                "action": "request",
                "payload": {
                    "method": "POST",
                    "url": f"{fake_url}/orders",
                    "json": {
                        "order": "{{ steps.shape.output.value.order }}",
                        "total": "{{ steps.shape.output.value.total }}",
                    },
                },
            },
        ],
    }


def measure(fn, n: int) -> tuple[float, float]:
    t, c = time.perf_counter(), time.thread_time()
    for i in range(n):
        fn(i)
    return (time.perf_counter() - t) / n * 1000, (time.thread_time() - c) / n * 1000


def floor(doc: dict, n: int) -> tuple[float, float]:
    from levqor_kernel.plugins import make_plugin_manager
    from levqor_kernel.runner import Runner, RunRequest

    runner = Runner(make_plugin_manager(), env={"LEVQOR_SSRF_ALLOW": "127.0.0.1"})

    def one(i: int) -> None:
        r = runner.run(RunRequest(f"r{i}", doc, {"id": i, "amount": i}, {}, "u", "p"))
        assert r.status == "succeeded", r.error

    measure(one, 30)  # warm: plugin import, template compilation, keep-alive connection
    out = measure(one, n)
    runner.close()
    return out


def worker(doc: dict, n: int, db_url: str) -> tuple[float, float, Counter]:
    from levqor_host.app import create_app
    from levqor_host.config import Config
    from levqor_host.workers.celery import CeleryWorker
    from sqlalchemy import event

    env = {k: v for k, v in os.environ.items() if not k.startswith("LEVQOR_")}
    env.update(
        DATABASE_URL=db_url,
        LEVQOR_EXECUTOR="embedded",  # no broker: the task body is called directly
        LEVQOR_SSRF_ALLOW="127.0.0.1",
        LEVQOR_SCHEDULER="off",
        LEVQOR_LOG_LEVEL="WARNING",
        LEVQOR_RATE_LIMITS="off",
        LEVQOR_MAX_RUNNING_PER_USER="100000",
        LEVQOR_CACHE_DIR="",
    )
    cfg = Config.from_env(env, data_dir=Path(tempfile.mkdtemp(prefix="levqor-run-cost-")))
    app = create_app(cfg, start_workers=False, start_scheduler=False)
    st = app.extensions["levqor"]
    user = st.store.users.create("bench@example.com", plan="business")
    p = st.store.pipelines.create(user["id"], "bench", doc)
    p = st.store.pipelines.get(user["id"], p["id"])
    ids = [
        st.runs.start(user, p, {"id": f"A-{i}", "amount": i}, trigger="webhook")[0]["id"]
        for i in range(n + 30)
    ]
    w = CeleryWorker(st.runs, None)
    counts: Counter = Counter()

    def one(i: int) -> None:
        assert w.handle(ids[i]) == "succeeded"

    measure(one, 30)
    rest = ids[30:]

    @event.listens_for(st.store.engine, "before_cursor_execute")
    def _count(conn, cursor, statement, params, context, executemany):  # noqa: ANN001
        counts["statements"] += 1

    @event.listens_for(st.store.engine, "commit")
    def _commit(conn):  # noqa: ANN001
        counts["commits"] += 1

    wall, cpu = measure(lambda i: one(30 + i), len(rest))
    w.stop(1)
    st.runner.close()
    st.store.close()
    return wall, cpu, counts


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=300)
    args = ap.parse_args()
    from levqor_kernel.testing import FakeServer, Reply
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    print(
        f"machine: {platform.platform()}, {os.cpu_count()} CPUs, Python {platform.python_version()}"
    )
    admin = create_engine(PG, isolation_level="AUTOCOMMIT")
    name = f"levqor_bench_{secrets.token_hex(4)}"
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    db_url = make_url(PG).set(database=name).render_as_string(hide_password=False)
    try:
        with FakeServer() as fake:
            fake.route("POST", "/orders", lambda req: Reply(201, {"received": True}))
            doc = pipeline(fake.url)
            wall, cpu = floor(doc, args.runs)
            print(f"runner alone, no database:     wall {wall:6.2f} ms/run, CPU {cpu:6.2f} ms/run")
            wall, cpu, counts = worker(doc, args.runs, db_url)
            print(
                f"CeleryWorker.handle on PostgreSQL: wall {wall:6.2f} ms/run, CPU {cpu:6.2f} ms/run, "
                f"{counts['statements'] / args.runs:.1f} statements and "
                f"{counts['commits'] / args.runs:.1f} commits per run"
            )
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


if __name__ == "__main__":
    sys.exit(main())
