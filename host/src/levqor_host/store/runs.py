"""Runs: one row per run of a pipeline, queued first (durable), then leased, then final.

Claiming, heartbeats and hand-backs are in ``leases.py``; step rows in ``steps.py``.
"""

from __future__ import annotations

import base64
import json
from datetime import datetime, timedelta
from typing import Any, get_args

from sqlalchemy import Connection, and_, bindparam, delete, func, literal, or_, select, update
from sqlalchemy.exc import IntegrityError

from levqor_host.store.db import Database, NotFound, new_id, retry_on_disconnect, utcnow
from levqor_host.store.pipelines import SQL_CURRENT_VERSION_OF_USER, SQL_VERSION_OF_USER
from levqor_host.store.rows import RowMapper, RunRow, RunStatus, RunWithSteps
from levqor_host.store.steps import SQL_STEPS, step_row
from levqor_host.store.steps import end_running_steps as end_steps
from levqor_host.store.tables import UTCDateTime, run_steps, runs

__all__ = ["FINAL_RUN_STATUSES", "RUN_STATUSES", "RUN_TRIGGERS", "Runs", "run_row"]

RUN_STATUSES: tuple[str, ...] = get_args(RunStatus)
FINAL_RUN_STATUSES = frozenset({"succeeded", "failed", "cancelled"})
#: ``pipeline``: a sub-pipeline's run (started by its parent's step); ``error``: an error
#: pipeline's run (started by a failed run); ``mcp``: a tool call of an MCP client
RUN_TRIGGERS = frozenset(
    {"manual", "webhook", "schedule", "app", "retry", "pipeline", "error", "mcp"}
)

run_row = RowMapper(RunRow)

_B = bindparam
_SQL_RUN_BY_IDEMPOTENCY_KEY = select(runs).where(
    runs.c.user_id == _B("user_id"), runs.c.idempotency_key == _B("key")
)
_SQL_INSERT_RUN = runs.insert()
_SQL_RUN = select(runs).where(runs.c.id == _B("run_id"))
_SQL_RUN_OF_USER = _SQL_RUN.where(runs.c.user_id == _B("user_id"))
_SQL_CANCEL_STATE = select(runs.c.cancel_requested, runs.c.status).where(runs.c.id == _B("run_id"))
#: the conditions of a run that worker ``worker_id`` holds the lease of
OWNED_RUNNING = (runs.c.lease_owner == _B("worker_id"), runs.c.status == "running")
_SQL_FINISH = (
    update(runs)
    .where(runs.c.id == _B("run_id"), *OWNED_RUNNING)
    .values(
        status=_B("new_status"),
        error=_B("new_error", type_=runs.c.error.type),
        output=_B("new_output", type_=runs.c.output.type),
        finished_at=_B("now", type_=UTCDateTime),
        lease_expires_at=None,
    )
)
_SQL_FINISH_SETTLED = _SQL_FINISH.values(settled_at=_B("now", type_=UTCDateTime))
_CANCELLED_ERROR = {"type": "Cancelled", "message": "run cancelled", "retryable": False}


def _encode_cursor(created_at: datetime, run_id: str) -> str:
    raw = json.dumps([created_at.isoformat(), run_id], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")


def _decode_cursor(cursor: str) -> tuple[datetime, str]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        iso, run_id = json.loads(raw)
        created_at = datetime.fromisoformat(iso)
        if not isinstance(run_id, str) or created_at.tzinfo is None:
            raise ValueError
        run_id.encode("utf-8")  # an unpaired surrogate: UnicodeEncodeError, not storable text
    except (ValueError, TypeError, RecursionError) as exc:
        raise ValueError("invalid cursor") from exc
    return created_at, run_id


def _new_run(
    run_id: str | None, user_id: str, pipeline_id: str, version: int, **given: Any
) -> dict:
    return {
        "id": run_id or new_id("run"),
        "user_id": user_id,
        "pipeline_id": pipeline_id,
        "version": version,
        "status": "queued",
        "error": None,
        "lease_owner": None,
        "lease_expires_at": None,
        "claims": 0,
        "claims_since_progress": 0,
        "finished_steps": 0,
        "cancel_requested": False,
        "created_at": utcnow(),
        "started_at": None,
        "finished_at": None,
        "output": None,
        "parent_run_id": None,
        "parent_step": None,
        "wait": None,
        "resume_at": None,
        **given,
    }


def _copy_succeeded_steps(conn: Connection, user_id: str, source: str, run_id: str) -> None:
    cols = [c.name for c in run_steps.c]
    src = (
        select(
            *[literal(run_id).label("run_id") if c == "run_id" else run_steps.c[c] for c in cols]
        )
        .select_from(run_steps.join(runs, runs.c.id == run_steps.c.run_id))
        .where(
            run_steps.c.run_id == source,
            runs.c.user_id == user_id,
            run_steps.c.status == "succeeded",
        )
    )
    conn.execute(run_steps.insert().from_select(cols, src))


class Runs:
    """Runs, their cancellation, their end and their settlement."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def create(
        self,
        user_id: str,
        pipeline_id: str,
        version: int | None,
        input: Any,
        *,
        trigger: str = "manual",
        idempotency_key: str | None = None,
        retry_of: str | None = None,
        copy_steps_from: str | None = None,
        parent_run_id: str | None = None,
        parent_step: str | None = None,
    ) -> tuple[RunRow, bool]:
        """Queue a run; ``(run, created)``.

        An idempotency key the user used before returns that run and False. ``version`` None
        means the pipeline's current version. ``copy_steps_from`` (one of the user's runs) copies
        its succeeded step rows, so a retry resumes after them. Raises :class:`NotFound` when the
        pipeline/version is not the user's. The returned dict has no ``steps``.
        """
        if trigger not in RUN_TRIGGERS:
            raise ValueError(f"unknown trigger {trigger!r}")
        try:
            with self.db.write() as conn:
                return self.create_in(
                    conn,
                    user_id,
                    pipeline_id,
                    version,
                    input,
                    trigger=trigger,
                    idempotency_key=idempotency_key,
                    retry_of=retry_of,
                    copy_steps_from=copy_steps_from,
                    parent_run_id=parent_run_id,
                    parent_step=parent_step,
                )
        except IntegrityError:
            if idempotency_key is None:
                raise
            # A concurrent request with the same key won the race (PostgreSQL): return its run.
            existing = self.find_by_idempotency_key(user_id, idempotency_key)
            if existing is None:
                raise
            return existing, False

    def create_in(
        self,
        conn: Connection,
        user_id: str,
        pipeline_id: str,
        version: int | None,
        input: Any,
        *,
        run_id: str | None = None,
        trigger: str = "manual",
        idempotency_key: str | None = None,
        retry_of: str | None = None,
        copy_steps_from: str | None = None,
        parent_run_id: str | None = None,
        parent_step: str | None = None,
    ) -> tuple[RunRow, bool]:
        """:meth:`create` inside a write transaction the caller holds (``conn`` from
        ``store.write()``), so that a billing gate, its credit reservation and the run row commit
        or roll back together. ``run_id`` lets the caller name the run before it exists (ledger
        lines refer to it). Same answers and errors as :meth:`create`."""
        if trigger not in RUN_TRIGGERS:
            raise ValueError(f"unknown trigger {trigger!r}")
        if idempotency_key is not None:
            row = conn.execute(
                _SQL_RUN_BY_IDEMPOTENCY_KEY, {"user_id": user_id, "key": idempotency_key}
            ).first()
            if row is not None:
                return run_row(row), False
        owner = {"pipeline_id": pipeline_id, "user_id": user_id}
        if version is None:
            version = conn.execute(SQL_CURRENT_VERSION_OF_USER, owner).scalar_one_or_none()
            found = version is not None
        else:
            found = (
                conn.execute(SQL_VERSION_OF_USER, {**owner, "version": version}).first() is not None
            )
        if not found:
            raise NotFound(f"no pipeline {pipeline_id!r} version {version!r} for this user")
        values = _new_run(
            run_id,
            user_id,
            pipeline_id,
            version,
            trigger=trigger,
            input=input,
            idempotency_key=idempotency_key,
            retry_of=retry_of,
            parent_run_id=parent_run_id,
            parent_step=parent_step,
        )
        conn.execute(_SQL_INSERT_RUN, values)
        if copy_steps_from is not None:
            _copy_succeeded_steps(conn, user_id, copy_steps_from, values["id"])
        return run_row(values), True

    def find_by_idempotency_key(self, user_id: str, idempotency_key: str) -> RunRow | None:
        """The user's run created with ``idempotency_key`` (no ``steps``), None if there is none."""
        with self.db.read() as conn:
            row = conn.execute(
                _SQL_RUN_BY_IDEMPOTENCY_KEY, {"user_id": user_id, "key": idempotency_key}
            ).first()
        return run_row(row) if row else None

    @staticmethod
    def _get(
        conn: Connection, user_id: str | None, run_id: str, with_steps: bool = True
    ) -> RunWithSteps | None:
        if user_id is None:
            row = conn.execute(_SQL_RUN, {"run_id": run_id}).first()
        else:
            row = conn.execute(_SQL_RUN_OF_USER, {"run_id": run_id, "user_id": user_id}).first()
        if row is None:
            return None
        out: Any = run_row(row)
        if with_steps:
            out["steps"] = step_row.all(conn.execute(SQL_STEPS, {"run_id": run_id}).all())
        return out

    @retry_on_disconnect
    def get(
        self, user_id: str | None, run_id: str, *, with_steps: bool = True
    ) -> RunWithSteps | None:
        """The run with its ``steps`` (every record, by position; none without
        ``with_steps``: the API reads them as a tree, ``store.steps.tree``); ``user_id`` None =
        any user (workers)."""
        with self.db.read() as conn:
            return self._get(conn, user_id, run_id, with_steps)

    def list(
        self,
        user_id: str,
        *,
        pipeline_id: str | None = None,
        status: str | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> tuple[list[RunRow], str | None]:
        """A page of the user's runs, newest first (no ``steps``), and the cursor of the next page
        (None on the last). Raises ValueError for a malformed cursor."""
        limit = max(1, int(limit))
        q = select(runs).where(runs.c.user_id == user_id)
        if pipeline_id is not None:
            q = q.where(runs.c.pipeline_id == pipeline_id)
        if status is not None:
            q = q.where(runs.c.status == status)
        if cursor:
            c_at, c_id = _decode_cursor(cursor)
            q = q.where(
                or_(
                    runs.c.created_at < c_at,
                    and_(runs.c.created_at == c_at, runs.c.id < c_id),
                )
            )
        q = q.order_by(runs.c.created_at.desc(), runs.c.id.desc()).limit(limit + 1)
        with self.db.read() as conn:
            rows = conn.execute(q).all()
        nxt = None
        if len(rows) > limit:
            rows = rows[:limit]
            nxt = _encode_cursor(rows[-1].created_at, rows[-1].id)
        return run_row.all(rows), nxt

    def request_cancel(self, user_id: str, run_id: str) -> RunWithSteps | None:
        """Cancel the user's run: a queued or waiting run, and a running one whose lease
        expired (its worker was lost), are cancelled at once (a waiting step ends cancelled); a running one whose worker holds its lease gets
        ``cancel_requested`` (its worker stops before the next step, and a worker that claims it
        after a lost one ends it cancelled without running anything); a finished one is left as
        it is. Returns the run (with steps), None if not the user's."""
        now = utcnow()
        mine = (runs.c.id == run_id, runs.c.user_id == user_id)
        with self.db.write() as conn:
            res = conn.execute(
                update(runs)
                .where(
                    *mine,
                    or_(
                        runs.c.status.in_(("queued", "waiting")),
                        and_(runs.c.status == "running", runs.c.lease_expires_at < now),
                    ),
                )
                .values(
                    status="cancelled",
                    cancel_requested=True,
                    finished_at=now,
                    lease_owner=None,
                    lease_expires_at=None,
                    wait=None,
                    resume_at=None,
                )
            )
            if res.rowcount == 1:  # the step a lost worker was running (or waiting) ends too
                end_steps(conn, run_id, "cancelled", _CANCELLED_ERROR)
            else:
                conn.execute(
                    update(runs)
                    .where(*mine, runs.c.status == "running")
                    .values(cancel_requested=True)
                )
            return self._get(conn, user_id, run_id)

    @retry_on_disconnect
    def is_cancel_requested(self, run_id: str) -> bool:
        with self.db.read() as conn:
            row = conn.execute(_SQL_CANCEL_STATE, {"run_id": run_id}).first()
        return bool(row and (row.cancel_requested or row.status == "cancelled"))

    @retry_on_disconnect
    def finish(
        self,
        run_id: str,
        worker_id: str,
        status: str,
        error: Any = None,
        *,
        end_running_steps: bool = False,
    ) -> bool:
        """Move a running run the worker still owns to a final status; False otherwise. With
        ``end_running_steps``, step rows left ``running`` by a lost worker take the same status
        (``cancelled`` stays, anything else is ``failed``) and ``error``."""
        if status not in FINAL_RUN_STATUSES:
            raise ValueError(f"not a final run status: {status!r}")
        with self.db.write() as conn:
            done = self.finish_in(conn, run_id, worker_id, status, error)
            if done and end_running_steps:
                end_steps(conn, run_id, status, error)
            return done

    def finish_in(
        self,
        conn: Connection,
        run_id: str,
        worker_id: str,
        status: str,
        error: Any = None,
        *,
        settled: bool = False,
        output: Any = None,
    ) -> bool:
        """:meth:`finish` inside the caller's transaction; ``settled`` also claims the run's
        settlement (``settled_at``) in the same statement; ``output``: what the run answered."""
        if status not in FINAL_RUN_STATUSES:
            raise ValueError(f"not a final run status: {status!r}")
        params = {
            "run_id": run_id,
            "worker_id": worker_id,
            "new_status": status,
            "new_error": error,
            "new_output": output,
            "now": utcnow(),
        }
        return conn.execute(_SQL_FINISH_SETTLED if settled else _SQL_FINISH, params).rowcount == 1

    @retry_on_disconnect
    def unsettled(self, *, older_than: float, limit: int = 50) -> list[RunRow]:
        """Final runs whose settlement (credits, usage, events) never happened: the worker died
        between finishing the run and settling it, or the run was cancelled while queued."""
        cutoff = utcnow() - timedelta(seconds=older_than)
        q = (
            select(runs)
            .where(
                runs.c.settled_at.is_(None),
                runs.c.finished_at.is_not(None),
                runs.c.finished_at < cutoff,
                runs.c.status.in_(tuple(FINAL_RUN_STATUSES)),
            )
            .order_by(runs.c.finished_at)
            .limit(limit)
        )
        with self.db.read() as conn:
            return run_row.all(conn.execute(q).all())

    def prune(self, older_than: datetime, *, batch: int = 2000) -> int:
        """Delete finished runs (succeeded, failed, cancelled) created and finished before
        ``older_than``, with their steps, in batches of ``batch`` (short transactions). Ledger
        lines stay (money is never deleted). Returns how many runs were deleted."""
        total = 0
        while True:
            with self.db.write() as conn:
                ids = (
                    conn.execute(
                        select(runs.c.id)
                        .where(
                            runs.c.status.in_(sorted(FINAL_RUN_STATUSES)),
                            runs.c.created_at < older_than,
                            runs.c.finished_at < older_than,
                        )
                        .limit(batch)
                    )
                    .scalars()
                    .all()
                )
                if not ids:
                    return total
                conn.execute(delete(run_steps).where(run_steps.c.run_id.in_(ids)))
                conn.execute(delete(runs).where(runs.c.id.in_(ids)))
            total += len(ids)

    def queue_stats(self) -> dict[str, Any]:
        """``{"queued": n, "running": n, "oldest_queued_age_seconds": float | None,
        "waiting": n, "overdue_waits": n}``: ``overdue_waits`` are waiting runs whose timer
        came over a minute ago (the wait sweep is not running)."""
        now = utcnow()
        with self.db.read() as conn:
            queued, oldest = conn.execute(
                select(func.count(), func.min(runs.c.created_at)).where(runs.c.status == "queued")
            ).one()
            running = conn.execute(
                select(func.count()).select_from(runs).where(runs.c.status == "running")
            ).scalar_one()
            waiting, overdue = conn.execute(
                select(
                    func.count(),
                    func.count(runs.c.resume_at).filter(
                        runs.c.resume_at < now - timedelta(seconds=60)
                    ),
                ).where(runs.c.status == "waiting")
            ).one()
        age = max(0.0, (now - oldest).total_seconds()) if oldest is not None else None
        return {
            "queued": queued,
            "running": running,
            "oldest_queued_age_seconds": age,
            "waiting": waiting,
            "overdue_waits": overdue,
        }
