"""The embedded executor: worker threads that claim queued runs with a lease and a heartbeat.

A run is always a database row first. Workers (threads inside ``levqor serve``, or a separate
``levqor worker`` process) claim runs, run them with the kernel's runner, and record every
step. A run whose worker died is claimed again when its lease expires and resumes from its
first unfinished step; succeeded steps are never sent again, and the step in flight is
re-sent with the same idempotency key.

A run that keeps taking its worker down is not claimed forever: when a claim finds that the
run's last ``LEVQOR_MAX_WORKER_LOSSES`` (3) claims all ended with their worker lost and no step
finished (``claims_since_progress``, defined in :meth:`Store.claim_runs`), the run ends
``failed`` with the error ``abandoned: worker lost N times`` instead of running again. A claim
of a run whose cancel was requested under a lost worker ends it ``cancelled`` at once.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
import uuid
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from levqor_kernel.runner import RunRequest, RunResult

from levqor_host.store.write_gate import background as background_writes

if TYPE_CHECKING:
    from levqor_host.services import Services

log = logging.getLogger("levqor.executor")

FINAL = ("succeeded", "failed", "cancelled")
#: seconds between two reads of a running run's cancel request
CANCEL_CHECK_INTERVAL = 0.2


def now() -> datetime:
    return datetime.now(UTC)


def worker_identity() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


class StoreRecorder:
    """Persists every runner transition through the Store, in as few write transactions as
    the guarantees allow: a finished step's row is held back until the next step starts (then
    it is written together with that step's "running" row, before the next connector is
    called, so a succeeded step is never sent again) or until the run ends (then it is written
    in the transaction that finishes and settles the run, see :meth:`Services.complete_run`).
    """

    def __init__(self, state: Services, run: dict[str, Any]) -> None:
        self.state = state
        self.store = state.store
        self.run = run
        self._started: dict[str, datetime] = {}
        #: finished step rows not written yet
        self.pending: list[dict[str, Any]] = []
        #: the final rows this recorder wrote (the billing settlement reads them instead of the DB)
        self.rows: list[dict[str, Any]] = []
        #: time.monotonic() when the last step finished
        self.last_finish = 0.0

    def _row(self, run_id: str, step: dict, position: int, **values: Any) -> dict[str, Any]:
        return self.store.step_row(
            run_id,
            step["id"],
            position=position,
            connector=step["connector"],
            action=step["action"],
            **values,
        )

    def flush(self, *also: dict[str, Any]) -> None:
        """Write the held-back rows (and ``also``) now, in one transaction."""
        rows = [*self.pending, *also]
        if rows:
            self.store.record_steps(rows)
        self.pending = []

    def step_started(self, run_id: str, step: dict, position: int, attempt: int) -> None:
        started = self._started.setdefault(step["id"], now())
        self.flush(
            self._row(
                run_id, step, position, status="running", attempts=attempt, started_at=started
            )
        )

    def step_retrying(
        self, run_id: str, step: dict, position: int, attempt: int, error: dict, delay: float
    ) -> None:
        self.flush(
            self._row(
                run_id,
                step,
                position,
                status="running",
                attempts=attempt,
                error={**error, "retry_in": round(delay, 3)},
                started_at=self._started.get(step["id"]),
            )
        )
        self.state.metrics_inc("retries", connector=step["connector"])

    def step_finished(
        self,
        run_id: str,
        step: dict,
        position: int,
        *,
        status: str,
        attempts: int,
        input: Any,
        output: Any,
        error: dict | None,
        duration: float,
    ) -> None:
        ran = status != "skipped"
        self.last_finish = time.monotonic()
        self.pending.append(
            self._row(
                run_id,
                step,
                position,
                status=status,
                attempts=attempts,
                input=input,
                output=output,
                error=error,
                started_at=self._started.get(step["id"]) if ran else None,
                finished_at=now() if ran else None,
            )
        )
        self.rows.append(
            {
                "step_id": step["id"],
                "position": position,
                "connector": step["connector"],
                "action": step["action"],
                "status": status,
                "attempts": attempts,
                "started_at": self._started.get(step["id"]) if ran else None,
            }
        )
        if ran:
            self.state.metrics_observe("step_seconds", duration, connector=step["connector"])

    def run_finished(self, run_id: str, status: str, error: dict | None) -> None:
        # the executor finishes the run row itself (it knows whether it still owns the lease)
        pass


class EmbeddedExecutor:
    """Worker threads claiming runs from the store."""

    def __init__(
        self, state: Services, *, threads: int | None = None, worker_id: str | None = None
    ) -> None:
        self.state = state
        self.threads = threads if threads is not None else state.config.workers
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

    def stop(self, grace: float | None = None) -> None:
        """Stop claiming; let in-flight steps finish within ``grace`` seconds; runs that are not
        finished by then are released back to the queue and resume elsewhere."""
        grace = self.state.config.shutdown_grace if grace is None else grace
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
        cfg = self.state.config
        while not self._stopping.is_set():
            self.last_loop = time.time()
            try:
                runs = self.state.store.claim_runs(
                    self.worker_id,
                    lease_seconds=cfg.lease_seconds,
                    limit=1,
                    max_running_per_user=cfg.max_running_per_user,
                )
            except Exception:  # noqa: BLE001 - the database may be briefly away; keep the worker alive
                log.exception("claiming runs failed")
                self._stopping.wait(min(2.0, cfg.poll_interval * 4))
                continue
            if not runs:
                with self._wake:
                    if self._pending_wakes == 0:
                        self._wake.wait(cfg.poll_interval)
                    self._pending_wakes = max(0, self._pending_wakes - 1)
                continue
            for run in runs:
                self.execute(run)

    def repair_settlements(self, older_than: float | None = None) -> int:
        """Settle final runs whose settlement was lost (a worker died between finishing a run
        and settling it, or the run was cancelled while queued). Exactly once: the settlement
        claims the run's ``settled_at``. Returns how many this call settled."""
        st = self.state
        if older_than is None:
            older_than = float(st.config.env.get("LEVQOR_SETTLE_AFTER_SECONDS", "60"))
        n = 0
        for run in st.store.unsettled_runs(older_than=older_than, limit=50):
            st.run_finished(run, RunResult(run["status"], run.get("error")))
            n += 1
        return n

    def _beat(self) -> None:
        interval = max(0.2, self.state.config.lease_seconds / 3)
        sweep_every = max(
            interval, float(self.state.config.env.get("LEVQOR_SETTLE_SWEEP_SECONDS", "30"))
        )
        next_sweep = time.monotonic() + sweep_every
        while not (self._stopping.is_set() and not self.active_runs):
            time.sleep(interval)
            if not self._stopping.is_set() and time.monotonic() >= next_sweep:
                next_sweep = time.monotonic() + sweep_every
                try:
                    self.repair_settlements()
                except Exception:  # noqa: BLE001 - the sweep retries on its next round
                    log.exception("repairing settlements failed")
            ids = self.active_runs
            if not ids:
                if self._stopping.is_set():
                    return
                continue
            try:
                owned = self.state.store.heartbeat(
                    self.worker_id, ids, lease_seconds=self.state.config.lease_seconds
                )
            except Exception:  # noqa: BLE001
                log.exception("heartbeat failed")
                continue
            with self._lock:
                for rid in ids:
                    if rid not in owned and rid in self._active:
                        self._lost.add(rid)

    # ------------------------------------------------------------------ one run
    def execute(self, run: dict[str, Any]) -> str | None:
        with self.state.store.pinned():  # one connection for the whole run
            return self._execute(run)

    def _execute(self, run: dict[str, Any]) -> str | None:
        state, store = self.state, self.state.store
        rid, uid = run["id"], run["user_id"]
        with self._lock:
            self._active[rid] = time.time()
        recorder: StoreRecorder | None = None
        try:
            ended = self._end_without_running(run)
            if ended is not None:
                return ended
            version = store.get_version(uid, run["pipeline_id"], run["version"])
            if version is None:
                store.finish_run(
                    rid,
                    self.worker_id,
                    "failed",
                    {"type": "NotFound", "message": "pipeline version is gone"},
                )
                return "failed"
            # a run claimed for the first time that is not a retry has no step rows yet
            fresh = run.get("claims") == 1 and not run.get("retry_of")
            completed = {} if fresh else store.succeeded_outputs(rid)
            recorder = StoreRecorder(state, run)
            # A cancel request is read from the database at every step boundary (once a step
            # has finished) and, within a step, at most every CANCEL_CHECK_INTERVAL; the claim
            # itself saw none.
            checked = [time.monotonic()]

            def cancelled() -> bool:
                if rid in self._lost:
                    return True
                if self._stopping.is_set() and time.monotonic() > self._stop_deadline():
                    return True
                t = time.monotonic()
                if t - checked[0] < CANCEL_CHECK_INTERVAL and checked[0] > recorder.last_finish:
                    return False
                checked[0] = t
                return store.is_cancel_requested(rid)

            def credentials(name: str | None, connector: str) -> dict | None:
                if not name:
                    return None
                found = store.get_credential_values(uid, name)
                if found is None or found[0] != connector:
                    return None
                return found[1]

            state.metrics_inc("runs_started")
            result = state.runner.run(
                RunRequest(
                    rid, version["doc"], run.get("input") or {}, completed, uid, run["pipeline_id"]
                ),
                credentials=credentials,
                recorder=recorder,
                cancelled=cancelled,
            )
            if not completed:  # every step row is known here: spare the settlement two reads
                result.levqor_rows = recorder.rows
                result.levqor_doc = version["doc"]
            if rid in self._lost:
                recorder.flush()
                log.warning("lost the lease on run %s; another worker resumes it", rid)
                return None
            if result.status == "cancelled" and not store.is_cancel_requested(rid):
                # shutting down: hand the run back; it resumes from its first unfinished step
                recorder.flush()
                store.release_run(self.worker_id, rid)
                return None
            done = state.complete_run(run, result, self.worker_id, recorder.pending)
            recorder.pending = []  # written (kept above if complete_run raised: see below)
            if not done:
                return None
            return result.status
        except Exception as exc:  # noqa: BLE001 - a broken run must not kill the worker
            log.exception("run %s crashed the executor", rid)
            state.report_exception(exc, where="executor", run_id=rid)
            try:
                if recorder is not None and recorder.pending:
                    recorder.flush()  # what succeeded before the crash is never sent again
            except Exception:  # noqa: BLE001
                log.exception("could not record the steps of run %s", rid)
            try:
                err = {"type": "InternalError", "message": "internal error", "platform": True}
                if store.finish_run(rid, self.worker_id, "failed", err):
                    # settles the run: a platform failure refunds its credits
                    state.run_finished(run, RunResult("failed", err))
            except Exception:  # noqa: BLE001
                log.exception("could not mark run %s failed", rid)
            return "failed"
        finally:
            with self._lock:
                self._active.pop(rid, None)
                self._lost.discard(rid)

    def _end_without_running(self, run: dict[str, Any]) -> str | None:
        """End a just-claimed run that must not run again: cancelled under a lost worker, or
        abandoned after losing ``max_worker_losses`` workers in a row. None: run it."""
        lost = int(run.get("claims_since_progress") or 1) - 1
        if run.get("cancel_requested"):
            status, err = "cancelled", {
                "type": "Cancelled", "message": "run cancelled", "retryable": False
            }
        elif lost >= self.state.config.max_worker_losses:
            status, err = "failed", {
                "type": "Abandoned",
                "message": f"abandoned: worker lost {lost} times",
                "code": "abandoned",
                "retryable": False,
            }
            log.warning("run %s abandoned: its worker was lost %d times", run["id"], lost)
        else:
            return None
        if self.state.store.finish_run(
            run["id"], self.worker_id, status, err, end_running_steps=True
        ):
            self.state.run_finished(run, RunResult(status, err))
        return status

    def _stop_deadline(self) -> float:
        if not hasattr(self, "_stop_at"):
            self._stop_at = time.monotonic() + self.state.config.shutdown_grace * 0.8
        return self._stop_at


def job_line(run: dict[str, Any], status: str, error: dict | None, steps: int) -> str:
    """One jobs.jsonl line: ids, status and timings only (no payloads, no personal data)."""
    started = run.get("started_at")
    line = {
        "ts": now().isoformat(),
        "run_id": run["id"],
        "pipeline_id": run["pipeline_id"],
        "version": run["version"],
        "trigger": run.get("trigger"),
        "status": status,
        "steps": steps,
        "error_type": (error or {}).get("type"),
        "error_step": (error or {}).get("step"),
        "started_at": started.isoformat() if isinstance(started, datetime) else started,
    }
    return json.dumps(line, separators=(",", ":"))
