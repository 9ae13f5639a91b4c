"""Leases of runs: workers claim runs, keep them with heartbeats and hand them back.

A run is claimed with a lease (``lease_owner``, ``lease_expires_at``); its worker extends the
lease while it works. A run whose lease expired belongs to a lost worker: the next claim takes
it over. On PostgreSQL, claiming uses ``SELECT ... FOR UPDATE SKIP LOCKED`` so concurrent
workers never take the same run.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, and_, bindparam, case, func, or_, select, update

from levqor_host.store.db import Database, retry_on_disconnect, utcnow
from levqor_host.store.rows import RunRow
from levqor_host.store.runs import OWNED_RUNNING, run_row
from levqor_host.store.steps import FINAL_STEP_STATUSES
from levqor_host.store.tables import UTCDateTime, run_steps, runs

__all__ = ["Leases"]

# pg_advisory_xact_lock key of claims that count per user (stable across processes).
_PG_LOCK_CLAIM = zlib.crc32(b"levqor:claim")
_SQL_CLAIM_LOCK = select(func.pg_advisory_xact_lock(_PG_LOCK_CLAIM))
_B = bindparam
_NOW = _B("now", type_=UTCDateTime)

_SQL_RELEASE = (
    update(runs)
    .where(runs.c.id == _B("run_id"), *OWNED_RUNNING)
    .values(
        status="queued",
        lease_owner=None,
        lease_expires_at=None,
        # a claim handed back on shutdown is not a lost worker
        claims_since_progress=case(
            (runs.c.claims_since_progress > 0, runs.c.claims_since_progress - 1), else_=0
        ),
    )
)
_SQL_HEARTBEAT = (
    update(runs)
    .where(runs.c.id.in_(_B("run_ids", expanding=True)), *OWNED_RUNNING)
    .values(lease_expires_at=_B("lease_until", type_=UTCDateTime))
    .returning(runs.c.id)
)
# progress since the last claim: more of the run's steps are final than that claim found
_STEPS_DONE = (
    select(func.count())
    .select_from(run_steps)
    .where(run_steps.c.run_id == runs.c.id, run_steps.c.status.in_(FINAL_STEP_STATUSES))
    .scalar_subquery()
)
_CLAIMED = {
    "status": "running",
    "lease_owner": _B("worker_id"),
    "lease_expires_at": _B("lease_until", type_=UTCDateTime),
    "claims": runs.c.claims + 1,
    "claims_since_progress": case(
        (_STEPS_DONE > runs.c.finished_steps, 1), else_=runs.c.claims_since_progress + 1
    ),
    "finished_steps": _STEPS_DONE,
    "started_at": func.coalesce(runs.c.started_at, _NOW),
}
_SQL_CLAIM_ONE = (
    update(runs)
    .where(
        runs.c.id == _B("run_id"),
        or_(
            and_(runs.c.status == "queued", runs.c.lease_expires_at.is_(None)),
            and_(runs.c.status == "running", runs.c.lease_expires_at < _NOW),
        ),
    )
    .values(**_CLAIMED)
    .returning(*runs.c)
)
_OTHERS = runs.alias("others")
_OTHERS_LEASED = (
    _OTHERS.c.status == "running",
    _OTHERS.c.lease_expires_at >= _NOW,
)
# the claim of one run, only while its user has fewer than :cap other runs holding a lease
_SQL_CLAIM_ONE_CAPPED = _SQL_CLAIM_ONE.where(
    select(func.count())
    .select_from(_OTHERS)
    .where(_OTHERS.c.user_id == runs.c.user_id, *_OTHERS_LEASED, _OTHERS.c.id != runs.c.id)
    .scalar_subquery()
    < _B("cap")
)
# the runs holding a lease of the user of run :run_id, other than that run
_SQL_RUNNING_OF_RUNS_USER = (
    select(func.count())
    .select_from(_OTHERS)
    .where(
        _OTHERS.c.user_id
        == select(runs.c.user_id).where(runs.c.id == _B("run_id")).scalar_subquery(),
        *_OTHERS_LEASED,
        _OTHERS.c.id != _B("run_id"),
    )
)
_CLAIM_COLS = (runs.c.id, runs.c.user_id, runs.c.created_at)
_SQL_CLAIM_QUEUED = (
    select(*_CLAIM_COLS)
    .where(runs.c.status == "queued", runs.c.lease_expires_at.is_(None))
    .order_by(runs.c.created_at)
    .limit(_B("fetch"))
)
_SQL_CLAIM_EXPIRED = (
    select(*_CLAIM_COLS)
    .where(runs.c.status == "running", runs.c.lease_expires_at < _NOW)
    .order_by(runs.c.created_at)
    .limit(_B("fetch"))
)
_SQL_CLAIM_CANDIDATES = {
    False: (_SQL_CLAIM_QUEUED, _SQL_CLAIM_EXPIRED),
    True: (
        _SQL_CLAIM_QUEUED.with_for_update(skip_locked=True),
        _SQL_CLAIM_EXPIRED.with_for_update(skip_locked=True),
    ),
}
_SQL_CLAIM = (
    update(runs)
    .where(runs.c.id.in_(_B("run_ids", expanding=True)))
    .values(**_CLAIMED)
    .returning(*runs.c)
)


def _lease(now: datetime, lease_seconds: float, **params: Any) -> dict[str, Any]:
    return {**params, "now": now, "lease_until": now + timedelta(seconds=lease_seconds)}


def _within_cap(conn: Connection, candidates: list, now: datetime, limit: int, cap: int) -> list:
    """The ids of ``candidates`` to claim so that no user holds more than ``cap`` leases."""
    running = dict(
        conn.execute(
            select(runs.c.user_id, func.count())
            .where(
                runs.c.status == "running",
                runs.c.lease_expires_at >= now,
                runs.c.user_id.in_({r.user_id for r in candidates}),
            )
            .group_by(runs.c.user_id)
        ).all()
    )
    chosen = []
    for r in candidates:
        if running.get(r.user_id, 0) < cap:
            running[r.user_id] = running.get(r.user_id, 0) + 1
            chosen.append(r.id)
            if len(chosen) == limit:
                break
    return chosen


class Leases:
    """Claims, heartbeats and hand-backs of runs by workers."""

    def __init__(self, db: Database) -> None:
        self.db = db

    @retry_on_disconnect
    def claim_next(
        self,
        worker_id: str,
        *,
        lease_seconds: float,
        limit: int,
        max_running_per_user: int | None = None,
    ) -> list[RunRow]:
        """Atomically take up to ``limit`` runs, oldest first: queued ones and running ones whose
        lease expired. Each becomes ``running`` with ``lease_owner=worker_id``, a lease of
        ``lease_seconds``, ``claims + 1``, ``claims_since_progress`` counted as below and
        ``started_at`` (kept if set). With ``max_running_per_user``, a user never has more running
        (leased) runs than that. Returns the claimed runs (no ``steps``), oldest first.

        Progress: a claim made progress when, by the next claim, more of the run's step rows
        have a final status (succeeded, failed, skipped, cancelled) than it found itself
        (``finished_steps``, counted by each claim). A claim after progress sets
        ``claims_since_progress`` to 1; a claim without adds one; a worker handing the run back
        on shutdown (:meth:`release`) takes its claim back. So when a claim returns a run
        with ``claims_since_progress = n + 1``, the run's last ``n`` claims ended without a step
        finishing and without being handed back: their workers were lost (killed, or hung until
        their lease expired) ``n`` times in a row. Counting at the claim keeps the cost off the
        writes of each step.
        """
        if limit <= 0:
            return []
        cap = max_running_per_user
        fetch = limit if cap is None else limit * 4 + 16
        with self.db.write() as conn:
            # the time is read once the write lock is held: a run finished while this claim
            # waited for the lock never ends after the next one starts
            now = utcnow()
            if self.db.postgres and cap is not None:
                conn.execute(_SQL_CLAIM_LOCK)  # per-user counting needs the claimers to take turns
            params = {"now": now, "fetch": fetch}
            candidates = [
                row
                for stmt in _SQL_CLAIM_CANDIDATES[self.db.postgres]
                for row in conn.execute(stmt, params).all()
            ]
            candidates.sort(key=lambda r: (r.created_at, r.id))
            if cap is not None and candidates:
                chosen = _within_cap(conn, candidates, now, limit, cap)
            else:
                chosen = [r.id for r in candidates[:limit]]
            if not chosen:
                return []
            if cap is not None:
                # PostgreSQL: a run whose finish committed after ``now`` was read may have freed
                # its user's slot above; the claimed runs start after that finish, not before
                now = utcnow()
            params = _lease(now, lease_seconds, run_ids=chosen, worker_id=worker_id)
            rows = conn.execute(_SQL_CLAIM, params).all()
        rows.sort(key=lambda r: (r.created_at, r.id))
        return run_row.all(rows)

    @retry_on_disconnect
    def claim(
        self,
        worker_id: str,
        run_id: str,
        *,
        lease_seconds: float,
        max_running_per_user: int | None = None,
    ) -> RunRow | None:
        """Take the run ``run_id`` with a lease, as :meth:`claim_next` would: when it is queued,
        or running with an expired lease (its worker died). None when it is final, cancelled,
        unknown, leased by a live worker, or when its user already has ``max_running_per_user``
        running runs. One conditional UPDATE, so two deliveries of one message never both win.
        """
        with self.db.write() as conn:
            # the time is read once the write lock is held (see claim_next)
            params = _lease(utcnow(), lease_seconds, run_id=run_id, worker_id=worker_id)
            if max_running_per_user is None:
                row = conn.execute(_SQL_CLAIM_ONE, params).first()
            elif self.db.postgres:
                # per-user counting needs the claimers to take turns; finishes are not among
                # them, so the count is one statement and the claim, timed after it, another:
                # a run whose finish the count saw never ends after this one starts (a finish
                # committed later only frees a slot, which the next claim will see)
                conn.execute(_SQL_CLAIM_LOCK)
                running = conn.execute(
                    _SQL_RUNNING_OF_RUNS_USER, {"run_id": run_id, "now": params["now"]}
                ).scalar_one()
                if running >= max_running_per_user:
                    return None
                params = _lease(utcnow(), lease_seconds, run_id=run_id, worker_id=worker_id)
                row = conn.execute(_SQL_CLAIM_ONE, params).first()
            else:  # SQLite: the write lock also holds finishes back, so one statement will do
                params["cap"] = max_running_per_user
                row = conn.execute(_SQL_CLAIM_ONE_CAPPED, params).first()
        return run_row(row) if row is not None else None

    @retry_on_disconnect
    def heartbeat(
        self, worker_id: str, run_ids: Iterable[str], *, lease_seconds: float
    ) -> set[str]:
        """Extend the leases of the worker's runs; returns the ids it still owns."""
        ids = list(run_ids)
        if not ids:
            return set()
        params = {
            "run_ids": ids,
            "worker_id": worker_id,
            "lease_until": utcnow() + timedelta(seconds=lease_seconds),
        }
        with self.db.write() as conn:
            return set(conn.execute(_SQL_HEARTBEAT, params).scalars())

    @retry_on_disconnect
    def release(self, worker_id: str, run_id: str) -> bool:
        """Put a run the worker owns back in the queue (graceful shutdown); False if not owned."""
        with self.db.write() as conn:
            res = conn.execute(_SQL_RELEASE, {"run_id": run_id, "worker_id": worker_id})
        return res.rowcount == 1

    @retry_on_disconnect
    def stranded(self, *, queued_before: datetime | None, limit: int = 500) -> dict[str, list[str]]:
        """Ids of runs a lost message may have stranded: ``expired`` (running, lease expired:
        the worker died) and, when ``queued_before`` is given, ``queued`` (queued since before
        it), oldest first, at most ``limit`` of each."""
        now = utcnow()
        with self.db.read() as conn:
            expired = (
                conn.execute(
                    select(runs.c.id)
                    .where(runs.c.status == "running", runs.c.lease_expires_at < now)
                    .order_by(runs.c.created_at)
                    .limit(limit)
                )
                .scalars()
                .all()
            )
            queued: list[str] = []
            if queued_before is not None:
                queued = (
                    conn.execute(
                        select(runs.c.id)
                        .where(
                            runs.c.status == "queued",
                            runs.c.lease_expires_at.is_(None),
                            runs.c.created_at < queued_before,
                        )
                        .order_by(runs.c.created_at)
                        .limit(limit)
                    )
                    .scalars()
                    .all()
                )
        return {"expired": list(expired), "queued": list(queued)}
