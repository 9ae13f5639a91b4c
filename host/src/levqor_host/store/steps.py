"""The step rows of runs: one per step of a run, written as the runner reports transitions."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Connection, bindparam, func, select, update

from levqor_host.store.db import Database, retry_on_disconnect, utcnow
from levqor_host.store.rows import RowMapper, StepRow
from levqor_host.store.tables import run_steps

__all__ = ["FINAL_STEP_STATUSES", "STEP_STATUSES", "Steps", "end_running_steps", "step_row"]

STEP_STATUSES = frozenset({"running", "succeeded", "failed", "skipped", "cancelled"})
FINAL_STEP_STATUSES = ("succeeded", "failed", "skipped", "cancelled")

step_row = RowMapper(StepRow)

#: the steps of run ``run_id``, by position
SQL_STEPS = (
    select(run_steps)
    .where(run_steps.c.run_id == bindparam("run_id"))
    .order_by(run_steps.c.position, run_steps.c.step_id)
)
_SQL_SUCCEEDED_OUTPUTS = select(run_steps.c.step_id, run_steps.c.output).where(
    run_steps.c.run_id == bindparam("run_id"), run_steps.c.status == "succeeded"
)


def _upsert(db: Database) -> Any:
    stmt = db.insert(run_steps)
    ex = stmt.excluded
    return stmt.on_conflict_do_update(
        index_elements=[run_steps.c.run_id, run_steps.c.step_id],
        set_={
            "position": ex.position,
            "connector": ex.connector,
            "action": ex.action,
            "status": ex.status,
            "attempts": ex.attempts,
            "input": func.coalesce(ex.input, run_steps.c.input),
            "output": ex.output,
            "error": ex.error,
            "started_at": func.coalesce(ex.started_at, run_steps.c.started_at),
            "finished_at": ex.finished_at,
        },
    )


def end_running_steps(conn: Connection, run_id: str, status: str, error: Any) -> None:
    """Steps of ``run_id`` left ``running`` end with the run: ``cancelled`` when it was
    cancelled, ``failed`` otherwise, with ``error`` (inside the caller's transaction)."""
    conn.execute(
        update(run_steps)
        .where(run_steps.c.run_id == run_id, run_steps.c.status == "running")
        .values(
            status="cancelled" if status == "cancelled" else "failed",
            error=error,
            finished_at=utcnow(),
        )
    )


class Steps:
    """Step rows, inserted or updated by ``(run_id, step_id)``."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self._upsert = _upsert(db)

    def record(self, run_id: str, step_id: str, **fields: Any) -> None:
        """Insert or update a step row (``fields``: the keyword arguments of :meth:`row`).
        ``input`` and ``started_at`` given as None keep the stored values (so the final update
        need not repeat them); the rest is overwritten."""
        self.record_many([self.row(run_id, step_id, **fields)])

    @retry_on_disconnect
    def record_many(self, rows: list[dict[str, Any]]) -> None:
        """Insert or update several step rows in one write transaction (same columns and rules
        as :meth:`record`; see :meth:`row`)."""
        if rows:
            with self.db.write() as conn:
                self.record_many_in(conn, rows)

    def record_many_in(self, conn: Connection, rows: list[dict[str, Any]]) -> None:
        """:meth:`record_many` inside the caller's transaction."""
        for r in rows:
            if r["status"] not in STEP_STATUSES:
                raise ValueError(f"unknown step status {r['status']!r}")
        if rows:
            conn.execute(self._upsert, rows)

    @staticmethod
    def row(
        run_id: str,
        step_id: str,
        *,
        position: int,
        connector: str,
        action: str,
        status: str,
        attempts: int,
        input: Any = None,
        output: Any = None,
        error: Any = None,
        started_at: datetime | None = None,
        finished_at: datetime | None = None,
    ) -> dict[str, Any]:
        """The parameters of one step row for :meth:`record_many`."""
        return {
            "run_id": run_id,
            "step_id": step_id,
            "position": position,
            "connector": connector,
            "action": action,
            "status": status,
            "attempts": attempts,
            "input": input,
            "output": output,
            "error": error,
            "started_at": started_at,
            "finished_at": finished_at,
        }

    @retry_on_disconnect
    def succeeded_outputs(self, run_id: str) -> dict[str, dict]:
        """``{step_id: output}`` of the run's succeeded steps."""
        with self.db.read() as conn:
            rows = conn.execute(_SQL_SUCCEEDED_OUTPUTS, {"run_id": run_id}).all()
        return {r.step_id: r.output for r in rows}
