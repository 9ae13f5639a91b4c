"""The engine's own ceiling for bench/celery_throughput.py: a bare Celery no-op task on the same
broker, with the same at-least-once settings Levqor uses (acks_late, reject on worker lost,
prefetch 1, thread pool). The task only counts itself in Redis (first/last timestamps, count).

    BENCH_BROKER_URL=redis://127.0.0.1:6379/0 BENCH_QUEUE=q celery -A celery_noop worker --pool threads
"""

from __future__ import annotations

import os
import time

import redis
from celery import Celery

BROKER = os.environ.get("BENCH_BROKER_URL", "redis://127.0.0.1:6379/0")
QUEUE = os.environ.get("BENCH_QUEUE", "bench-noop")

app = Celery("bench_noop", broker=BROKER)
app.conf.update(
    task_default_queue=QUEUE,
    task_serializer="json",
    accept_content=["json"],
    task_ignore_result=True,
    task_acks_late=True,
    task_reject_on_worker_lost=True,
    worker_prefetch_multiplier=1,
    broker_connection_retry_on_startup=True,
    worker_hijack_root_logger=False,
    worker_send_task_events=False,
)
_r = redis.Redis.from_url(BROKER)


@app.task(name="bench.noop")
def noop(i: int) -> None:
    now = time.time()
    p = _r.pipeline()
    p.setnx(f"{QUEUE}:first", now)
    p.set(f"{QUEUE}:last", now)
    p.incr(f"{QUEUE}:done")
    p.execute()
