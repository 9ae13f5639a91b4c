"""The Celery executor (``LEVQOR_EXECUTOR=celery``, ``LEVQOR_BROKER_URL=redis://...``).

The database stays the source of truth; the broker only rings the bell.

- Web hosts (``levqor serve``) write the run row, then :class:`CeleryDispatcher` publishes the
  task ``levqor.run`` with the run id. A publish that fails (broker down) is logged and the run
  stays queued: it is not lost, the lease sweep sends it again.
- ``levqor worker --executor celery`` (:func:`run_worker`) starts a Celery worker in-process
  with Levqor's plugins loaded. The task claims its run with the same lease as the embedded
  executor (:meth:`Store.leases.claim`: one conditional UPDATE), so a message delivered twice never
  runs a run twice, then runs it through :meth:`EmbeddedExecutor.execute` (same recorder,
  heartbeat, resume from the first unfinished step, hand-back on shutdown).
- The lease sweep (:class:`LeaseSweeper`, in every worker process, one active at a time behind
  the database lock ``celery-sweep``) re-sends runs whose lease expired (a worker was killed and
  its message is parked in Redis until the visibility timeout) and, when the broker queue is
  empty, runs queued for longer than ``LEVQOR_CELERY_REQUEUE_AFTER`` (their message was lost:
  Redis restarted without persistence, or the publish failed).

Celery settings for at-least-once delivery: ``task_acks_late`` (ack after the run), reject on
worker lost, prefetch multiplier 1 (a worker thread holds one message), a broker visibility
timeout above the longest step timeout, and connection retries forever.
"""

from __future__ import annotations

import logging
import os
import socket
import sys
import threading
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from celery import Celery

    from levqor_host.config import Config
    from levqor_host.runs.service import RunService
    from levqor_host.services import Services

log = logging.getLogger("levqor.celery")

TASK_NAME = "levqor.run"
SWEEP_LOCK = "celery-sweep"
#: a Celery worker that stops on an error after running this long is started again (run_worker)
RESTART_AFTER = 2.0


def _missing() -> RuntimeError:
    return RuntimeError(
        "LEVQOR_EXECUTOR=celery needs Celery: pip install 'levqor[celery]' (celery[redis])"
    )


def make_celery(cfg: Config) -> Celery:
    """The Celery app of a Levqor deployment (no result backend: state is in the database)."""
    try:
        from celery import Celery
    except ImportError as e:  # pragma: no cover - the extra is installed in CI
        raise _missing() from e
    if not cfg.executor.broker_url:
        raise ValueError("LEVQOR_EXECUTOR=celery needs LEVQOR_BROKER_URL (redis://host:6379/0)")
    app = Celery("levqor", broker=cfg.executor.broker_url, set_as_current=False)
    app.conf.update(
        task_default_queue=cfg.executor.celery_queue,
        task_serializer="json",
        accept_content=["json"],
        task_ignore_result=True,
        result_backend=None,
        # at-least-once: ack after the run, requeue when the worker process dies
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        # the run keeps going when the broker connection drops; the database lease guards it
        worker_cancel_long_running_tasks_on_connection_loss=False,
        broker_connection_retry=True,
        broker_connection_retry_on_startup=True,
        broker_connection_max_retries=None,
        broker_connection_timeout=3,
        broker_transport_options={
            # a message not acked within this is delivered again (must exceed a step's timeout)
            "visibility_timeout": cfg.executor.celery_visibility_timeout,
            "socket_connect_timeout": 3,
            "socket_timeout": 30,
            "socket_keepalive": True,
        },
        # a publish from a web request waits at most ~1 s on a dead broker
        task_publish_retry_policy={
            "max_retries": 2,
            "interval_start": 0,
            "interval_step": 0.25,
            "interval_max": 0.5,
        },
        worker_hijack_root_logger=False,
        worker_redirect_stdouts=False,
        worker_send_task_events=False,
        task_send_sent_event=False,
        broker_heartbeat=0,
    )
    return app


class CeleryDispatcher:
    """Publishes run ids to the broker (web hosts, the scheduler, the sweep)."""

    DOWN_FOR = 2.0  # after a failed publish, skip publishing for this long (the sweep catches up)

    def __init__(self, config: Config, celery: Celery | None = None) -> None:
        self.celery = celery or make_celery(config)
        self.queue = config.executor.celery_queue
        self._down_until = 0.0
        self.sent = 0
        self.failed = 0

    def send(self, run_id: str, *, countdown: float | None = None) -> bool:
        """Publish ``levqor.run(run_id)``; False (never an exception) when the broker is away."""
        if time.monotonic() < self._down_until:
            self.failed += 1
            return False
        try:
            self.celery.send_task(
                TASK_NAME, args=[run_id], queue=self.queue, countdown=countdown, retry=True
            )
        except Exception as e:  # noqa: BLE001 - kombu/redis errors vary by transport
            self._down_until = time.monotonic() + self.DOWN_FOR
            self.failed += 1
            log.warning(
                "broker unreachable, run %s stays queued (the lease sweep sends it): %s",
                run_id,
                type(e).__name__,
            )
            return False
        self.sent += 1
        return True

    def queue_length(self) -> int | None:
        """Messages waiting in the broker queue; None when the broker cannot be reached."""
        try:
            with self.celery.connection_for_write() as conn:
                conn.ensure_connection(max_retries=1, timeout=3)
                try:
                    ok = conn.default_channel.queue_declare(queue=self.queue, passive=True)
                except Exception:  # noqa: BLE001 - passive declare of an unknown queue: empty
                    return 0
                return int(ok.message_count)
        except Exception:  # noqa: BLE001
            return None

    def check(self) -> dict[str, Any]:
        """For /health/ready: the broker answers, and how many messages wait."""
        n = self.queue_length()
        if n is None:
            return {
                "ok": False,
                "error": "the broker (LEVQOR_BROKER_URL) is unreachable: runs stay queued in "
                "the database and are sent when it is back",
            }
        return {"ok": True, "queue_length": n}

    def close(self) -> None:
        try:
            self.celery.close()
        except Exception:  # noqa: BLE001
            pass


class LeaseSweeper:
    """Re-sends runs whose message was lost (see the module docstring)."""

    def __init__(self, runs: RunService, dispatcher: CeleryDispatcher) -> None:
        self.config = runs.config
        self.store = runs.store
        self.flow = runs.flow
        self.dispatcher = dispatcher
        self.owner = f"sweep:{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._recent: dict[str, float] = {}
        self.resent = 0

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="levqor-sweep", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
        try:
            self.store.locks.release(SWEEP_LOCK, self.owner)
        except Exception:  # noqa: BLE001
            pass

    def _loop(self) -> None:
        interval = self.config.executor.celery_sweep_interval
        while not self._stop.wait(interval):
            try:
                self.sweep()
            except Exception:  # noqa: BLE001 - the database or broker may be briefly away
                log.warning("lease sweep failed", exc_info=True)

    def sweep(self) -> int:
        """One pass (when this process holds the sweep lock); returns how many runs were sent.
        Waiting runs whose timer or approval timeout came are resumed too (queued and sent)."""
        cfg, store = self.config, self.store
        if not store.locks.acquire(SWEEP_LOCK, self.owner, max(3.0, cfg.executor.celery_sweep_interval * 3)):
            return 0
        try:
            self.flow.resume_due()
        except Exception:  # noqa: BLE001 - the next pass retries
            log.warning("resuming waiting runs failed", exc_info=True)
        now_m = time.monotonic()
        self._recent = {
            k: t for k, t in self._recent.items() if now_m - t < cfg.executor.celery_requeue_after
        }
        waiting = self.dispatcher.queue_length()
        if waiting is None:
            return 0  # the broker is away: nothing can be sent now
        cutoff = datetime.now(UTC) - timedelta(seconds=cfg.executor.celery_requeue_after)
        found = store.leases.stranded(queued_before=cutoff if waiting == 0 else None)
        sent = 0
        for rid in [*found["expired"], *found["queued"]]:
            if rid in self._recent:
                continue
            if not self.dispatcher.send(rid):
                break
            self._recent[rid] = now_m
            sent += 1
        if sent:
            log.info("lease sweep re-sent %d runs", sent)
        self.resent += sent
        return sent


class CeleryWorker:
    """What a worker process needs: the run service, a lease heartbeat, the task body."""

    def __init__(self, runs: RunService, dispatcher: CeleryDispatcher) -> None:
        from levqor_host.workers.embedded import EmbeddedExecutor, worker_identity

        self.runs = runs
        self.dispatcher = dispatcher
        # no claiming threads: Celery's pool calls execute(); the heartbeat thread renews leases
        self.executor = EmbeddedExecutor(runs, threads=0, worker_id="celery:" + worker_identity())
        self.executor.start()

    def handle(self, run_id: str) -> str:
        store, cfg = self.runs.store, self.runs.config
        run = self.runs.claim_one(self.executor.worker_id, run_id)
        if run is None:
            current = store.runs.get(None, run_id)
            if current is not None and current["status"] == "queued":
                # the user is at LEVQOR_MAX_RUNNING_PER_USER: try again shortly
                self.dispatcher.send(run_id, countdown=max(0.5, cfg.executor.poll_interval * 2))
                return "deferred"
            return "skipped"  # finished, cancelled, or leased by a live worker: a duplicate
        status = self.executor.execute(run)
        if status is None:
            current = store.runs.get(None, run_id)
            if current is not None and current["status"] == "queued":
                self.dispatcher.send(run_id)  # handed back on shutdown: resume elsewhere
            return "handed back"
        return status

    def stop(self, grace: float | None = None) -> None:
        self.executor.stop(grace)


def register_task(celery: Celery, get_worker: Any) -> Any:
    # shared=False: Celery's default registers a task on every Celery app of the process,
    # created later too; another app's task would then run its runs with this app's worker
    @celery.task(
        name=TASK_NAME,
        shared=False,
        bind=True,
        acks_late=True,
        reject_on_worker_lost=True,
        ignore_result=True,
    )
    def run_task(self: Any, run_id: str) -> str:
        return get_worker().handle(run_id)

    return run_task


class WorkerRuntime:
    """The Levqor side of a Celery worker, bound to one app's services: the ``levqor.run`` task
    (:func:`register_task`), the :class:`CeleryWorker` that runs it (built once per process: a
    prefork child builds its own services through ``rebuild``) and the :class:`LeaseSweeper`.

    :func:`run_worker` (``levqor worker --executor celery``) wraps it around
    ``celery.worker_main``; the test suite (tests/e2e_support.py, ``LEVQOR_TEST_EXECUTOR=celery``)
    around an in-process Celery worker thread, so that connectors registered in the test's own
    process are reachable."""

    def __init__(
        self, state: Services, *, rebuild: Callable[[], Services] | None = None
    ) -> None:
        self.state = state
        self.dispatcher: CeleryDispatcher = state.dispatcher or CeleryDispatcher(state.config)
        self.celery = self.dispatcher.celery
        self._rebuild = rebuild  # () -> Services, for a prefork child
        self._pid = os.getpid()
        self._worker: CeleryWorker | None = None
        self._lock = threading.Lock()
        self.task = register_task(self.celery, self.get_worker)
        self.sweeper = LeaseSweeper(state.runs, self.dispatcher)

    def get_worker(self) -> CeleryWorker:
        with self._lock:
            if self._worker is None or self._pid != os.getpid():
                st = self.state
                if self._pid != os.getpid():  # a prefork child: its own engine and threads
                    if self._rebuild is None:
                        raise RuntimeError("a forked Celery pool needs WorkerRuntime(rebuild=...)")
                    st = self._rebuild()
                    self._pid = os.getpid()
                self._worker = CeleryWorker(st.runs, st.dispatcher or self.dispatcher)
            return self._worker

    def start(self, *, eager: bool = True) -> None:
        """Start the lease sweep; with ``eager`` (any pool but prefork) build the worker now, so
        that its lease heartbeat runs before the first message."""
        if eager:
            self.get_worker()
        self.sweeper.start()

    def begin_shutdown(self) -> None:
        """The Celery worker is shutting down: stop taking runs at once; runs in flight are
        handed back after the grace (in a thread: this is called from a signal handler)."""
        w = self._worker
        if w is not None:
            threading.Thread(target=w.stop, daemon=True).start()

    def stop(self, grace: float | None = 1.0) -> None:
        """After the Celery worker stopped: the sweep (its lock released) and the worker."""
        self.sweeper.stop()
        w = self._worker
        if w is not None:
            w.stop(grace)


def run_worker(
    cfg: Config,
    build: Callable[[], Services],
    *,
    concurrency: int | None = None,
    pool: str = "threads",
    loglevel: str | None = None,
    restart: bool = False,
) -> None:
    """``levqor worker --executor celery``: a Celery worker in this process (blocks).

    ``build()`` assembles the services of ``cfg`` without workers or scheduler (the CLI passes
    one that builds the app); a prefork child calls it again for services of its own.

    With ``restart`` (the CLI's): when the Celery worker stops on an error of its own after
    running for ``RESTART_AFTER`` seconds, and not because it was told to stop (a signal), the
    process starts again in place (same pid, ``os.execv``). Celery's Redis transport can stop
    the worker with an "Unrecoverable error" when the broker goes away while a message is being
    acknowledged; nothing is lost then (runs are rows, the sweep re-sends them), but the worker
    must come back without waiting for a supervisor.
    """
    from celery import signals

    concurrency = concurrency or cfg.executor.workers
    state = build()
    runtime = WorkerRuntime(state, rebuild=build)

    @signals.worker_process_init.connect(weak=False)
    def _child_init(**_kw: Any) -> None:
        state.store.engine.dispose(close=False)  # never use the parent's connections

    told_to_stop = threading.Event()

    @signals.worker_shutting_down.connect(weak=False)
    def _shutting_down(**_kw: Any) -> None:
        told_to_stop.set()
        runtime.begin_shutdown()

    runtime.start(eager=pool != "prefork")
    argv = [
        "worker",
        f"--pool={pool}",
        f"--concurrency={concurrency}",
        f"--loglevel={loglevel or cfg.observability.log_level}",
        f"--queues={cfg.executor.celery_queue}",
        f"--hostname=levqor-{os.getpid()}@{socket.gethostname()}",
        "--without-gossip",
        "--without-mingle",
        "--without-heartbeat",
    ]
    log.info("levqor celery worker: pool %s, concurrency %d", pool, concurrency)
    started = time.monotonic()
    try:
        code = runtime.celery.start(argv=argv)  # worker_main() would drop the exit code
    finally:
        runtime.stop(1.0)
    ran = time.monotonic() - started
    if restart and code not in (0, None) and not told_to_stop.is_set() and ran >= RESTART_AFTER:
        log.error(
            "the Celery worker stopped on an error after %.0f s (exit %s): starting it again", ran, code
        )
        time.sleep(1.0)
        os.execv(sys.executable, [sys.executable, *sys.orig_argv[1:]])
    if code not in (0, None):
        raise SystemExit(code)
