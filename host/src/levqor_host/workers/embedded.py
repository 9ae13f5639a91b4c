"""The embedded executor: worker threads that claim queued runs with a lease and a heartbeat.

A run is always a database row first. Workers (threads inside ``levqor serve``, or a separate
``levqor worker`` process) claim runs, run them with the kernel's runner, and record every
step. A run whose worker died is claimed again when its lease expires and resumes from its
first unfinished step; succeeded steps are never sent again, and the step in flight is
re-sent with the same idempotency key.

A run that keeps taking its worker down is not claimed forever: when a claim finds that the
run's last ``LEVQOR_MAX_WORKER_LOSSES`` (3) claims all ended with their worker lost and no step
finished (``claims_since_progress``, defined in :meth:`Store.leases.claim_next`), the run ends
``failed`` with the error ``abandoned: worker lost N times`` instead of running again. A claim
of a run whose cancel was requested under a lost worker ends it ``cancelled`` at once.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from levqor_kernel.runner import RunRequest

from levqor_host.store.write_gate import background as background_writes

if TYPE_CHECKING:
    from levqor_host.runs.recording import StoreRecorder
    from levqor_host.runs.service import RunService

log = logging.getLogger("levqor.executor")

#: seconds between two reads of a running run's cancel request
CANCEL_CHECK_INTERVAL = 0.2


def worker_identity() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


class EmbeddedExecutor:
    """Worker threads claiming runs through the run service."""

    def __init__(
        self, runs: RunService, *, threads: int | None = None, worker_id: str | None = None
    ) -> None:
        self.runs = runs
        self.config = runs.config
        self.threads = threads if threads is not None else self.config.executor.workers
        self.worker_id = worker_id or worker_identity()
        self._wake = threading.Condition()
        self._pending_wakes = 0
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []
        self._active: dict[str, float] = {}
        self._lost: set[str] = set()
        self._lock = threading.Lock()
        self._heartbeat: threading.Thread | None = None
        self.started_at: float | None = None
        self.last_loop: float | None = None

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> None:
        if self._threads:
            return
        self.started_at = time.time()
        for i in range(self.threads):
            t = threading.Thread(target=self._loop, name=f"levqor-worker-{i}", daemon=True)
            t.start()
            self._threads.append(t)
        self._heartbeat = threading.Thread(target=self._beat, name="levqor-heartbeat", daemon=True)
        self._heartbeat.start()
        if self.threads:
            self.runs.add_dispatcher(self._queued)

    def _queued(self, run_id: str) -> None:
        self.notify()

    def stop(self, grace: float | None = None) -> None:
        """Stop claiming; let in-flight steps finish within ``grace`` seconds; runs that are not
        finished by then are released back to the queue and resume elsewhere."""
        grace = self.config.executor.shutdown_grace if grace is None else grace
        self.runs.remove_dispatcher(self._queued)
        self._stopping.set()
        self.notify(all_=True)
        deadline = time.monotonic() + grace
        for t in self._threads:
            t.join(max(0.0, deadline - time.monotonic()))
        self._threads = [t for t in self._threads if t.is_alive()]

    def alive(self) -> bool:
        return (
            bool(self._threads)
            and all(t.is_alive() for t in self._threads)
            and not self._stopping.is_set()
        )

    def notify(self, all_: bool = False) -> None:
        """Wake an idle worker (a run was just queued in this process)."""
        with self._wake:
            if all_:
                self._wake.notify_all()
            else:
                self._pending_wakes += 1
                self._wake.notify()

    @property
    def active_runs(self) -> list[str]:
        with self._lock:
            return list(self._active)

    # ------------------------------------------------------------------ loops
    def _loop(self) -> None:
        background_writes()  # at SQLite's write gate, this process's requests go first
        cfg = self.config
        while not self._stopping.is_set():
            self.last_loop = time.time()
            try:
                runs = self.runs.claim(self.worker_id, limit=1)
            except Exception:  # noqa: BLE001 - the database may be briefly away; keep the worker alive
                log.exception("claiming runs failed")
                self._stopping.wait(min(2.0, cfg.executor.poll_interval * 4))
                continue
            if not runs:
                with self._wake:
                    if self._pending_wakes == 0:
                        self._wake.wait(cfg.executor.poll_interval)
                    self._pending_wakes = max(0, self._pending_wakes - 1)
                continue
            for run in runs:
                self.execute(run)

    def repair_settlements(self, older_than: float | None = None) -> int:
        """Settle final runs whose settlement was lost (:meth:`RunService.repair_settlements`)."""
        return self.runs.repair_settlements(older_than)

    def resume_due(self) -> int:
        """Resume the waiting runs whose timer or approval timeout came, look at
        sub-pipelines' children (:meth:`Flow.resume_due`); never raises."""
        try:
            return self.runs.flow.resume_due()
        except Exception:  # noqa: BLE001 - the sweep retries on its next round
            log.exception("resuming waiting runs failed")
            return 0

    def _beat(self) -> None:
        interval = max(0.2, self.config.executor.lease_seconds / 3)
        sweep_every = max(
            interval, self.config.executor.settle_sweep_seconds
        )
        next_sweep = time.monotonic() + sweep_every
        wait_every = max(0.2, self.config.executor.wait_sweep_seconds)
        next_wait_sweep = time.monotonic() + min(wait_every, interval)
        while not (self._stopping.is_set() and not self.active_runs):
            time.sleep(min(interval, wait_every))
            if not self._stopping.is_set() and time.monotonic() >= next_sweep:
                next_sweep = time.monotonic() + sweep_every
                try:
                    self.repair_settlements()
                except Exception:  # noqa: BLE001 - the sweep retries on its next round
                    log.exception("repairing settlements failed")
            if not self._stopping.is_set() and time.monotonic() >= next_wait_sweep:
                next_wait_sweep = time.monotonic() + wait_every
                self.resume_due()
            ids = self.active_runs
            if not ids:
                if self._stopping.is_set():
                    return
                continue
            try:
                owned = self.runs.heartbeat(self.worker_id, ids)
            except Exception:  # noqa: BLE001
                log.exception("heartbeat failed")
                continue
            with self._lock:
                for rid in ids:
                    if rid not in owned and rid in self._active:
                        self._lost.add(rid)

    # ------------------------------------------------------------------ one run
    def execute(self, run: dict[str, Any]) -> str | None:
        with self.runs.store.pinned():  # one connection for the whole run
            return self._execute(run)

    def _execute(self, run: dict[str, Any]) -> str | None:
        rid = run["id"]
        with self._lock:
            self._active[rid] = time.time()
        recorder: list[StoreRecorder] = []  # set once the run starts running
        try:
            ended = self._end_without_running(run)
            if ended is not None:
                return ended
            return self._run(run, recorder)
        except Exception as exc:  # noqa: BLE001 - a broken run must not kill the worker
            self._crashed(run, exc, recorder[0] if recorder else None)
            return "failed"
        finally:
            with self._lock:
                self._active.pop(rid, None)
                self._lost.discard(rid)

    def _run(self, run: dict[str, Any], started: list[StoreRecorder]) -> str | None:
        """Run a claimed run with the kernel's runner and complete it; None when it is not
        this worker's to finish (lease lost, handed back on shutdown)."""
        runs, store = self.runs, self.runs.store
        rid, uid = run["id"], run["user_id"]
        version = store.pipelines.get_version(uid, run["pipeline_id"], run["version"])
        if version is None:
            store.runs.finish(
                rid,
                self.worker_id,
                "failed",
                {"type": "NotFound", "message": "pipeline version is gone"},
            )
            return "failed"
        # a run claimed for the first time that is not a retry has no step rows yet; a run
        # resumed after a wait is handed its decided waits too
        fresh = run.get("claims") == 1 and not run.get("retry_of")
        completed, decided = ({}, {}) if fresh else store.waits.resume_state(rid)
        recorder = runs.recorder(run)
        started.append(recorder)
        runs.metrics.runs_started.inc()
        result = runs.runner.run(
            RunRequest(
                rid,
                version["doc"],
                run.get("input") or {},
                completed,
                uid,
                run["pipeline_id"],
                decided=decided,
                approval_links=runs.flow.approval_links(rid),
            ),
            credentials=self._credentials(uid),
            recorder=recorder,
            cancelled=self._cancel_check(rid, recorder),
        )
        if rid in self._lost:
            recorder.flush()
            log.warning("lost the lease on run %s; another worker resumes it", rid)
            return None
        if result.status == "cancelled" and not store.runs.is_cancel_requested(rid):
            # shutting down: hand the run back; it resumes from its first unfinished step
            recorder.flush()
            store.leases.release(self.worker_id, rid)
            return None
        if result.status == "waiting":
            # suspended: its steps, its wait and the lease given up; no thread holds it now
            done = runs.flow.suspend(run, result, self.worker_id, recorder.pending)
            recorder.pending = []
            return "waiting" if done else None
        # every step of a run claimed for the first time is in result.records: the settlement
        # needs no read of the run (a resumed one may have run priced steps before a wait)
        doc = version["doc"] if fresh else None
        done = runs.complete(run, result, self.worker_id, recorder.pending, doc=doc)
        recorder.pending = []  # written (kept above if complete raised: see _crashed)
        return result.status if done else None

    def _credentials(self, user_id: str) -> Callable[[str | None, str], dict | None]:
        """The runner's credential resolver for one user's run (values from the vault; an
        OAuth2 credential refreshed before it expires and after a 401)."""
        if self.runs.credentials_for is not None:
            return self.runs.credentials_for(user_id)
        store = self.runs.store

        def credentials(name: str | None, connector: str) -> dict | None:
            if not name:
                return None
            found = store.credentials.values(user_id, name)
            if found is None or found[0] != connector:
                return None
            return found[1]

        return credentials

    def _cancel_check(self, run_id: str, recorder: StoreRecorder) -> Callable[[], bool]:
        """The runner's ``cancelled()``: a lost lease, the end of the shutdown grace, or a
        cancel request, read from the database at every step boundary (once a step has
        finished) and, within a step, at most every CANCEL_CHECK_INTERVAL (the claim itself
        saw none)."""
        store = self.runs.store
        checked = [time.monotonic()]

        def cancelled() -> bool:
            if run_id in self._lost:
                return True
            if self._stopping.is_set() and time.monotonic() > self._stop_deadline():
                return True
            t = time.monotonic()
            if t - checked[0] < CANCEL_CHECK_INTERVAL and checked[0] > recorder.last_finish:
                return False
            checked[0] = t
            return store.runs.is_cancel_requested(run_id)

        return cancelled

    def _crashed(
        self, run: dict[str, Any], exc: BaseException, recorder: StoreRecorder | None
    ) -> None:
        """A run crashed the executor: keep what succeeded, fail the run as the platform's
        fault (its settlement refunds the credits)."""
        rid = run["id"]
        log.exception("run %s crashed the executor", rid, exc_info=exc)
        self.runs.report_exception(exc, where="executor", run_id=rid)
        try:
            if recorder is not None and recorder.pending:
                recorder.flush()  # what succeeded before the crash is never sent again
        except Exception:  # noqa: BLE001
            log.exception("could not record the steps of run %s", rid)
        try:
            err = {"type": "InternalError", "message": "internal error", "platform": True}
            self.runs.end(run, self.worker_id, "failed", err)
        except Exception:  # noqa: BLE001
            log.exception("could not mark run %s failed", rid)

    def _end_without_running(self, run: dict[str, Any]) -> str | None:
        """End a just-claimed run that must not run again: cancelled under a lost worker, or
        abandoned after losing ``max_worker_losses`` workers in a row. None: run it."""
        lost = int(run.get("claims_since_progress") or 1) - 1
        if run.get("cancel_requested"):
            status, err = "cancelled", {
                "type": "Cancelled", "message": "run cancelled", "retryable": False
            }
        elif lost >= self.config.executor.max_worker_losses:
            status, err = "failed", {
                "type": "Abandoned",
                "message": f"abandoned: worker lost {lost} times",
                "code": "abandoned",
                "retryable": False,
            }
            log.warning("run %s abandoned: its worker was lost %d times", run["id"], lost)
        else:
            return None
        self.runs.end(run, self.worker_id, status, err, end_running_steps=True)
        return status

    def _stop_deadline(self) -> float:
        if not hasattr(self, "_stop_at"):
            self._stop_at = time.monotonic() + self.config.executor.shutdown_grace * 0.8
        return self._stop_at
