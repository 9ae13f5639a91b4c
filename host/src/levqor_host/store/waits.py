"""Waiting runs: suspended at a wait, approval or sub-pipeline step, resumed exactly once.

A run that suspends is written ``waiting`` by the worker that holds its lease, in the same
transaction as its step rows, and the lease goes with it: a waiting run holds no worker and is
never claimed. Its ``wait`` is the step's descriptor with a random ``nonce``; ``resume_at``
is when a timer (or an approval's timeout, or a sub-pipeline's check) is due. :meth:`decide`
ends the wait with one conditional UPDATE (``status = 'waiting'`` and the nonce), so of two
decisions, from one host or two, exactly one wins; the run is ``queued`` again and the next
claim resumes it with the decided step.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, and_, bindparam, func, literal, select, update

from levqor_host.store.db import Database, retry_on_disconnect, utcnow
from levqor_host.store.rows import RunRow
from levqor_host.store.runs import OWNED_RUNNING, run_row
from levqor_host.store.tables import UTCDateTime, run_steps, runs

__all__ = ["SUSPENDED_STEPS", "Waits"]

_B = bindparam
#: the steps that suspend a run (connector, action): their decided outcome resumes it
SUSPENDED_STEPS = frozenset({("flow", "wait"), ("flow", "pipeline"), ("core", "delay")})
_WAITING_NONCE = (
    runs.c.id == _B("run_id"),
    runs.c.status == "waiting",
    runs.c.wait["nonce"].as_string() == _B("nonce"),
)
_SQL_SUSPEND = (
    update(runs)
    .where(runs.c.id == _B("run_id"), *OWNED_RUNNING)
    .values(
        status="waiting",
        wait=_B("new_wait", type_=runs.c.wait.type),
        resume_at=_B("new_resume_at", type_=UTCDateTime),
        lease_owner=None,
        lease_expires_at=None,
        # a run that reached a wait made progress: its claims start counting afresh
        claims_since_progress=0,
    )
)
_SQL_RESUME = (
    update(runs)
    .where(*_WAITING_NONCE)
    .values(status="queued", wait=None, resume_at=None, lease_owner=None, lease_expires_at=None)
)
_SQL_REWAIT = (
    update(runs)
    .where(*_WAITING_NONCE)
    .values(wait=_B("new_wait", type_=runs.c.wait.type), resume_at=_B("new_resume_at", type_=UTCDateTime))
)
_SQL_DECIDE_STEP = (
    update(run_steps)
    .where(
        run_steps.c.run_id == _B("b_run_id"),
        run_steps.c.step_id == _B("b_step_id"),
        run_steps.c.status == "waiting",
    )
    .values(
        status=_B("b_status"),
        output=_B("b_output", type_=run_steps.c.output.type),
        error=_B("b_error", type_=run_steps.c.error.type),
        finished_at=_B("now", type_=UTCDateTime),
    )
)
_SQL_RESUME_STATE = select(
    run_steps.c.step_id,
    run_steps.c.connector,
    run_steps.c.action,
    run_steps.c.status,
    run_steps.c.output,
    run_steps.c.error,
).where(run_steps.c.run_id == _B("run_id"), run_steps.c.status.in_(("succeeded", "failed")))


class Waits:
    """Suspending runs, deciding their waits, and what a resumed run is handed."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def suspend_in(
        self,
        conn: Connection,
        run_id: str,
        worker_id: str,
        wait: dict[str, Any],
        resume_at: datetime | None,
    ) -> bool:
        """Move a run ``worker_id`` holds to ``waiting`` with ``wait`` (which carries its
        ``nonce``) and ``resume_at``, and give its lease up (inside the caller's transaction,
        with the step rows). False when the worker no longer holds the lease."""
        params = {
            "run_id": run_id, "worker_id": worker_id, "new_wait": wait, "new_resume_at": resume_at
        }
        return conn.execute(_SQL_SUSPEND, params).rowcount == 1

    @retry_on_disconnect
    def decide(
        self,
        run_id: str,
        nonce: str,
        step_id: str,
        *,
        status: str,
        output: Any = None,
        error: Any = None,
    ) -> bool:
        """End the wait ``nonce`` of a waiting run: its step ``step_id`` becomes ``status``
        (succeeded or failed, with ``output`` or ``error``) and the run ``queued``, in one
        transaction. False (nothing written) when the run is not waiting on that nonce any
        more: decided already, cancelled, or never waiting."""
        if status not in ("succeeded", "failed"):
            raise ValueError(f"a wait is decided succeeded or failed, not {status!r}")
        with self.db.write() as conn:
            if conn.execute(_SQL_RESUME, {"run_id": run_id, "nonce": nonce}).rowcount != 1:
                return False
            conn.execute(
                _SQL_DECIDE_STEP,
                {
                    "b_run_id": run_id,
                    "b_step_id": step_id,
                    "b_status": status,
                    "b_output": output,
                    "b_error": error,
                    "now": utcnow(),
                },
            )
            return True

    @retry_on_disconnect
    def rewait(
        self, run_id: str, nonce: str, wait: dict[str, Any], resume_at: datetime | None
    ) -> bool:
        """Replace a waiting run's descriptor and ``resume_at`` (same nonce: a sub-pipeline's
        child run noted, its next check put off); False when it is not waiting on ``nonce``."""
        params = {"run_id": run_id, "nonce": nonce, "new_wait": wait, "new_resume_at": resume_at}
        with self.db.write() as conn:
            return conn.execute(_SQL_REWAIT, params).rowcount == 1

    @retry_on_disconnect
    def due(self, *, limit: int = 100) -> list[RunRow]:
        """Waiting runs whose ``resume_at`` has come, oldest first."""
        q = (
            select(runs)
            .where(runs.c.status == "waiting", runs.c.resume_at <= utcnow())
            .order_by(runs.c.resume_at)
            .limit(limit)
        )
        with self.db.read() as conn:
            return run_row.all(conn.execute(q).all())

    @retry_on_disconnect
    def children(self, run_id: str) -> list[str]:
        """The ids of the runs ``run_id`` started as sub-pipelines, oldest first."""
        q = (
            select(runs.c.id)
            .where(runs.c.parent_run_id == run_id)
            .order_by(runs.c.created_at, runs.c.id)
        )
        with self.db.read() as conn:
            return list(conn.execute(q).scalars())

    @retry_on_disconnect
    def depth(self, run_id: str, *, most: int) -> int:
        """How many sub-pipeline levels are above ``run_id`` (0: a run nobody started), counted
        up to ``most + 1`` at most."""
        n, current = 0, run_id
        with self.db.read() as conn:
            while n <= most:
                parent = conn.execute(
                    select(runs.c.parent_run_id).where(runs.c.id == current)
                ).scalar_one_or_none()
                if parent is None:
                    return n
                n, current = n + 1, parent
        return n

    @retry_on_disconnect
    def resume_state(self, run_id: str) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
        """What a resumed run is handed: ``completed`` ({path: output} of its succeeded steps)
        and ``decided`` ({path: {"status", "output", "error"}} of its failed steps, whose
        error path let the run go on, and of its decided waits)."""
        with self.db.read() as conn:
            rows = conn.execute(_SQL_RESUME_STATE, {"run_id": run_id}).all()
        completed = {r.step_id: r.output for r in rows if r.status == "succeeded"}
        decided = {
            r.step_id: {"status": r.status, "output": r.output, "error": r.error}
            for r in rows
            if r.status == "failed" or (r.connector, r.action) in SUSPENDED_STEPS
        }
        return completed, decided

    @retry_on_disconnect
    def failed_without_error_run(
        self, *, older_than: float, within: float, limit: int = 200
    ) -> list[RunRow]:
        """Failed runs (not started as error pipelines themselves) that finished between
        ``within`` and ``older_than`` seconds ago and have no run keyed ``<run>:error`` (their
        error pipeline, if their document names one, was never started), oldest first."""
        now = utcnow()
        handler = runs.alias("handler")
        q = (
            select(runs)
            .outerjoin(
                handler,
                and_(
                    handler.c.user_id == runs.c.user_id,
                    handler.c.idempotency_key == runs.c.id + literal(":error"),
                ),
            )
            .where(
                runs.c.status == "failed",
                runs.c.trigger != "error",
                runs.c.finished_at < now - timedelta(seconds=older_than),
                runs.c.finished_at >= now - timedelta(seconds=within),
                handler.c.id.is_(None),
            )
            .order_by(runs.c.finished_at)
            .limit(limit)
        )
        with self.db.read() as conn:
            return run_row.all(conn.execute(q).all())

    @retry_on_disconnect
    def count(self) -> int:
        """How many runs wait now."""
        with self.db.read() as conn:
            return conn.execute(
                select(func.count()).select_from(runs).where(runs.c.status == "waiting")
            ).scalar_one()
