"""The run service (``state.runs``): everything that happens to a run, in one place.

A run is a row first (``queued``, committed together with its billing reservation), then an
executor claims it with a lease (``running``), the kernel's runner executes it and reports to a
:class:`~levqor_host.runs.recording.StoreRecorder`, and the executor completes it: the last step
rows, the final status and the settlement in one transaction. Settlement claims the run's
``settled_at``, so it happens exactly once (a repair sweep settles a run whose settlement was
lost). Web routes, executors, the scheduler and the CLI call this service; it holds no Flask.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from levqor_kernel.pipeline import validate_input, validate_pipeline
from levqor_kernel.recording import CredentialResolver
from levqor_kernel.runner import RunResult

from levqor_host.errors import ApiError
from levqor_host.runs.flow import Flow
from levqor_host.runs.recording import StoreRecorder

if TYPE_CHECKING:
    from levqor_kernel.plugins import LevqorPluginManager
    from levqor_kernel.runner import Runner

    from levqor_host.billing.ledger import Ledger
    from levqor_host.config import Config
    from levqor_host.metrics import Metrics
    from levqor_host.store import Store

log = logging.getLogger("levqor")

FINAL = ("succeeded", "failed", "cancelled")
#: runs whose input is not checked against the pipeline's ``input`` schema: an app trigger's
#: item (its shape is the trigger's output schema), a retry (the input of a run that started)
#: and an error pipeline's (what the platform says of the failed run)
UNCHECKED_INPUT_TRIGGERS = frozenset({"app", "retry", "error"})
#: what a settlement answers when the run was settled before (by another worker or sweep)
_NOT_SETTLED = {"settled": False}


def job_line(run: dict[str, Any], status: str, error: dict | None, steps: int) -> str:
    """One jobs.jsonl line: ids, status and timings only (no payloads, no personal data)."""
    started = run.get("started_at")
    line = {
        "ts": datetime.now(UTC).isoformat(),
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


def check_input(doc: dict, data: Any) -> None:
    """Raise ApiError 422 ``invalid_input`` (the problems point under ``/input``) when
    ``data`` does not fit the document's declared ``input`` schema."""
    problems = validate_input(doc, data)
    if problems:
        raise ApiError(
            422,
            "invalid_input",
            "the input does not fit the pipeline's input schema",
            {"problems": [p.to_dict() for p in problems]},
        )


class RunService:
    """The runs of one app. Handed its configuration, store, plugin manager, runner, ledger
    and metrics; ``mailer`` (failure notices, approval requests), ``on_exception`` (the error inbox) and the
    dispatchers (:meth:`add_dispatcher`: who hears of a queued run) are set by the wiring."""

    def __init__(
        self,
        config: Config,
        store: Store,
        pm: LevqorPluginManager,
        runner: Runner,
        ledger: Ledger,
        metrics: Metrics,
    ) -> None:
        self.config = config
        self.store = store
        self.pm = pm
        self.runner = runner
        self.ledger = ledger
        self.metrics = metrics
        self.mailer: Any = None  # support.mail.Mailer: run_failed, approval_requested
        self.on_exception: Callable[..., None] | None = None
        #: one user's credential resolver for a run (the OAuth service's, which refreshes);
        #: None: the vault's values as stored
        self.credentials_for: Callable[[str], CredentialResolver] | None = None
        self._dispatchers: list[Callable[[str], Any]] = []
        self._waiters: dict[str, threading.Event] = {}
        self._validation_cache: dict[str, list] = {}
        self._lock = threading.Lock()
        self._jobs_lock = threading.Lock()
        #: waits (timers, approvals, sub-pipelines) and error pipelines
        self.flow = Flow(self)

    # ----------------------------------------------------------------- validate and price
    def credential_map(self, user_id: str) -> dict[str, str]:
        return {c["name"]: c["connector"] for c in self.store.credentials.list(user_id)}

    def validate(
        self, user_id: str, doc: Any, credentials: dict[str, str] | None = None
    ) -> list[dict]:
        """Whole-pipeline validation against the catalog and the user's credentials
        (``credentials``, name -> connector, when the caller has just read them).

        Results are memoised by the document's content and the credential names (a run of an
        unchanged pipeline is not validated from scratch on every webhook)."""
        creds = self.credential_map(user_id) if credentials is None else credentials
        try:
            key = json.dumps([doc, sorted(creds.items())], sort_keys=True, separators=(",", ":"))
        except (TypeError, ValueError):
            key = None
        if key is not None:
            hit = self._validation_cache.get(key)
            if hit is not None:
                return [dict(p) for p in hit]
        problems = [p.to_dict() for p in validate_pipeline(doc, self.pm.catalog, credentials=creds)]
        if key is not None:
            with self._lock:
                if len(self._validation_cache) > 2048:
                    self._validation_cache.clear()
                self._validation_cache[key] = problems
        return [dict(p) for p in problems]

    def price(self, doc: dict) -> int:
        """A run's price: catalog prices, ``LEVQOR_PRICES`` overrides, the price_task hook."""
        return self.ledger.price(doc)

    # ----------------------------------------------------------------- start
    def start(
        self,
        user: dict,
        pipeline: dict,
        input: Any,
        *,
        trigger: str = "manual",
        idempotency_key: str | None = None,
        retry_of: str | None = None,
        copy_steps_from: str | None = None,
        version: int | None = None,
        credentials: dict[str, str] | None = None,
        parent_run_id: str | None = None,
        parent_step: str | None = None,
    ) -> tuple[dict, bool]:
        """Validate, gate and queue a run: (the run, whether this call created it). Raises
        ApiError (404 unknown version, 422 invalid pipeline, 422 ``invalid_input`` when
        ``input`` does not fit the document's ``input`` schema, 402 refused): nothing is
        queued or charged then. ``credentials``: the user's credential names (name ->
        connector) when the caller has just read them (a webhook delivery), so validation does
        not read them again."""
        if idempotency_key:
            existing = self.store.runs.find_by_idempotency_key(user["id"], idempotency_key)
            if existing is not None:
                return existing, False
        doc = pipeline["doc"]
        if version is not None and version != pipeline["version"]:
            v = self.store.pipelines.get_version(user["id"], pipeline["id"], version)
            if v is None:
                raise ApiError(404, "not_found", "pipeline version not found")
            doc = v["doc"]
        else:
            version = pipeline["version"]
        problems = self.validate(user["id"], doc, credentials)
        if problems:
            raise ApiError(
                422, "invalid_pipeline", "the pipeline cannot run as it is", {"problems": problems}
            )
        if trigger not in UNCHECKED_INPUT_TRIGGERS:
            check_input(doc, input)
        run, created = self._queue(
            user,
            pipeline,
            version,
            input,
            price=self.price(doc),
            trigger=trigger,
            idempotency_key=idempotency_key,
            retry_of=retry_of,
            copy_steps_from=copy_steps_from,
            parent_run_id=parent_run_id,
            parent_step=parent_step,
        )
        if created:
            self.dispatch(run)
        return run, created

    def _queue(
        self,
        user: dict,
        pipeline: dict,
        version: int,
        input: Any,
        *,
        price: int,
        idempotency_key: str | None,
        **row: Any,
    ) -> tuple[dict, bool]:
        """The billing gate, its credit reservation and the run row: one transaction."""
        uid = user["id"]
        with self.ledger.transaction() as tx:
            if idempotency_key is not None and (
                tx.repo.run_id_for_key(tx.conn, uid, idempotency_key) is not None
            ):
                return self.store.runs.create_in(
                    tx.conn, uid, pipeline["id"], version, input, idempotency_key=idempotency_key
                )
            run_id = f"run_{uuid.uuid4().hex}"
            self.ledger.gate(tx, user, pipeline, run_id, price)
            return self.store.runs.create_in(
                tx.conn,
                uid,
                pipeline["id"],
                version,
                input,
                run_id=run_id,
                idempotency_key=idempotency_key,
                **row,
            )

    def add_dispatcher(self, fn: Callable[[str], Any]) -> None:
        """``fn(run_id)`` hears of every run this process queues (after its row committed)."""
        with self._lock:
            self._dispatchers.append(fn)

    def remove_dispatcher(self, fn: Callable[[str], Any]) -> None:
        """Stop telling ``fn`` of queued runs (an executor that stops)."""
        with self._lock:
            if fn in self._dispatchers:
                self._dispatchers.remove(fn)

    def dispatch(self, run: dict) -> None:
        """Hand a just-queued run to the executors: wake an embedded worker, or send the run
        id to Celery (a dispatcher never raises: a run the broker did not take stays queued and
        the lease sweep sends it again)."""
        for fn in list(self._dispatchers):
            fn(run["id"])

    def retry(self, user: dict, run_id: str) -> tuple[dict, bool]:
        """A new run of a failed or cancelled run's version that reuses the outputs of the
        steps that succeeded. Raises ApiError (404 unknown run or pipeline, 409 not final)."""
        r = self.store.runs.get(user["id"], run_id)
        if r is None:
            raise ApiError(404, "not_found", "run not found")
        if r["status"] not in ("failed", "cancelled"):
            raise ApiError(
                409,
                "conflict",
                f"only failed or cancelled runs can be retried (this one is {r['status']})",
            )
        p = self.store.pipelines.get(user["id"], r["pipeline_id"])
        if p is None:
            raise ApiError(404, "not_found", "pipeline not found")
        return self.start(
            user,
            p,
            r.get("input") or {},
            trigger="retry",
            retry_of=r["id"],
            copy_steps_from=r["id"],
            version=r["version"],
        )

    def cancel(self, user_id: str, run_id: str) -> dict | None:
        """Ask for a run to be cancelled (a queued run ends at once, a running one at its
        next check, a waiting one at once and settled, with the child run it waits for);
        the run as it is now, or None when the user has no such run."""
        before = self.store.runs.get(user_id, run_id)
        run = self.store.runs.request_cancel(user_id, run_id)
        if before is not None and run is not None and before["status"] == "waiting":
            if run["status"] == "cancelled":
                err = {"type": "Cancelled", "message": "run cancelled", "retryable": False}
                self.finished(run, RunResult("cancelled", run.get("error") or err))
                self.flow.cancel_child(before)
        return run

    # ----------------------------------------------------------------- executors
    def claim(self, worker_id: str, limit: int = 1) -> list[dict]:
        """Queued runs (or runs whose lease expired), leased to ``worker_id``."""
        cfg = self.config
        return self.store.leases.claim_next(
            worker_id,
            lease_seconds=cfg.executor.lease_seconds,
            limit=limit,
            max_running_per_user=cfg.executor.max_running_per_user,
        )

    def claim_one(self, worker_id: str, run_id: str) -> dict | None:
        """This run, leased to ``worker_id``; None when it is not claimable now."""
        cfg = self.config
        return self.store.leases.claim(
            worker_id,
            run_id,
            lease_seconds=cfg.executor.lease_seconds,
            max_running_per_user=cfg.executor.max_running_per_user,
        )

    def heartbeat(self, worker_id: str, run_ids: list[str]) -> set[str] | Any:
        """Renew the leases; returns the run ids ``worker_id`` still holds."""
        return self.store.leases.heartbeat(worker_id, run_ids, lease_seconds=self.config.executor.lease_seconds)

    def recorder(self, run: dict) -> StoreRecorder:
        """The recorder of one execution of ``run``."""
        return StoreRecorder(self.store, self.metrics, run, self.pm.catalog)

    def report_exception(self, exc: BaseException, *, where: str, **context: Any) -> None:
        """A server-side exception: to the error inbox when one is wired."""
        if self.on_exception is not None:
            self.on_exception(exc, where=where, **context)

    # ----------------------------------------------------------------- complete and settle
    def complete(
        self,
        run: dict,
        result: RunResult,
        worker_id: str,
        steps: list[dict],
        *,
        doc: dict | None = None,
    ) -> bool:
        """The executor's end of a run it owns: the step rows it has not written yet, the
        final status and the settlement in one transaction, then :meth:`finished`. False when
        the worker no longer holds the lease (another worker resumes the run). ``doc``: the
        pipeline document when ``result.records`` cover every step of the run (it was not
        resumed), which spares the settlement reading the run back."""
        try:
            settled = self._finish_and_settle(run, result, worker_id, steps, doc)
        except Exception:  # noqa: BLE001 - billing must not keep a run from finishing
            log.exception("finishing and settling run %s in one go failed", run["id"])
            self.store.steps.record_many(steps)
            if not self.store.runs.finish(run["id"], worker_id, result.status, result.error):
                return False
            self.finished(run, result)  # settles on its own (or the repair sweep does)
            return True
        if settled is None:
            return False
        self.finished(run, result, settled=settled)
        return True

    def _finish_and_settle(
        self, run: dict, result: RunResult, worker_id: str, steps: list[dict], doc: dict | None
    ) -> dict | None:
        """Step rows, final status (only while ``worker_id`` holds the lease) and settlement
        in one write transaction. None when the lease was lost (the step rows are written all
        the same; the settlement is not)."""
        cost = self.ledger.cost(run, result, doc, pending=steps)
        with self.ledger.transaction() as tx:
            self.store.steps.record_many_in(tx.conn, steps)
            if not self.store.runs.finish_in(
                tx.conn, run["id"], worker_id, result.status, result.error, settled=True,
                output=result.output,
            ):
                return None
            return self.ledger.settle(tx, run, result, cost)

    def end(
        self,
        run: dict,
        worker_id: str,
        status: str,
        error: dict | None,
        *,
        end_running_steps: bool = False,
    ) -> bool:
        """End a run ``worker_id`` holds without (or after failing to) run it, and settle it
        (a platform failure refunds its credits). False when the lease was lost."""
        if not self.store.runs.finish(
            run["id"], worker_id, status, error, end_running_steps=end_running_steps
        ):
            return False
        self.finished(run, RunResult(status, error))
        return True

    def settle(self, run: dict, result: RunResult) -> dict:
        """Settle a final run in its own transaction, which first claims the run's
        ``settled_at`` (so a run is settled once). Returns what was recorded (``settled``
        False: it was settled already)."""
        cost = self.ledger.cost(run, result)
        with self.ledger.transaction() as tx:
            if not tx.repo.claim_settlement(tx.conn, run["id"]):
                return dict(_NOT_SETTLED)  # a repair sweep raced a worker
            return self.ledger.settle(tx, run, result, cost)

    def finished(self, run: dict, result: RunResult, *, settled: dict | None = None) -> None:
        """Called when a run is final and, unless ``settled`` is given (what :meth:`complete`
        settled with the final status), settles it: also by the repair sweep for a final run
        whose settlement was lost. The settlement (credits, usage, events) claims the run's
        ``settled_at``, so it happens exactly once; the jobs.jsonl line, the failure notice and
        the waiters follow it."""
        if settled is None:
            try:  # record_run_cost hook (refunds), usage_daily, events, referral reward
                settled = self.settle(run, result)
            except Exception:  # noqa: BLE001 - billing must not break run completion
                log.exception("settling run %s failed", run["id"])
                settled = {"settled": True}
        if not settled.get("settled", True):
            return
        self.metrics.runs_finished.labels(result.status).inc()
        self._write_job_line(run, result)
        if result.status == "failed" and self.mailer is not None:
            self.mailer.run_failed(run, result)  # opt-in per pipeline: "notify_on_failure"
        with self._lock:
            ev = self._waiters.pop(run["id"], None)
        if ev is not None:
            ev.set()
        self._after_final(run, result)

    def _after_final(self, run: dict, result: RunResult) -> None:
        """What a final run starts: its parent's step decided (a sub-pipeline's run), its
        error pipeline (a failed run). Never raises: the run is final whatever happens here
        (the sweep catches a parent up)."""
        try:
            if run.get("parent_run_id"):
                self.flow.child_finished(run)
            self.flow.error_pipeline(run, result)
        except Exception:  # noqa: BLE001
            log.exception("what follows run %s (parent, error pipeline) failed", run["id"])

    def _write_job_line(self, run: dict, result: RunResult) -> None:
        line = job_line(run, result.status, result.error, len(result.steps))
        path: Path = self.config.jobs_log
        try:  # the run and its settlement are committed: the audit line must not undo that
            with self._jobs_lock:
                path.parent.mkdir(parents=True, exist_ok=True)
                fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
                try:
                    os.write(fd, (line + "\n").encode())
                finally:
                    os.close(fd)
        except OSError as e:
            log.warning(
                "run %s finished, but %s could not be written: %s", run["id"], path, e.strerror or e
            )

    def repair_settlements(self, older_than: float | None = None) -> int:
        """Settle final runs whose settlement was lost (a worker died between finishing a run
        and settling it, or the run was cancelled while queued). Exactly once: the settlement
        claims the run's ``settled_at``. Also starts the error pipelines a lost process did
        not start (:meth:`Flow.catch_up_error_pipelines`). Returns how many this call settled."""
        if older_than is None:
            older_than = self.config.executor.settle_after_seconds
        n = 0
        for run in self.store.runs.unsettled(older_than=older_than, limit=50):
            self.finished(run, RunResult(run["status"], run.get("error")))
            n += 1
        try:  # what a lost process did not start after a failure
            self.flow.catch_up_error_pipelines(older_than=older_than)
        except Exception:  # noqa: BLE001 - the next sweep tries again
            log.exception("starting lost error pipelines failed")
        return n

    # ----------------------------------------------------------------- wait
    def wait(self, user_id: str | None, run_id: str, timeout: float) -> dict | None:
        """The run once it is final or waiting (a timer, an approval, a child run: it may wait
        for days), or as it is when ``timeout`` passes."""
        with self._lock:
            ev = self._waiters.setdefault(run_id, threading.Event())
        deadline = time.monotonic() + timeout
        while True:
            run = self.store.runs.get(user_id, run_id)
            if run is None or run["status"] in FINAL or run["status"] == "waiting":
                return run
            left = deadline - time.monotonic()
            if left <= 0:
                return run
            ev.wait(min(left, 0.1))
