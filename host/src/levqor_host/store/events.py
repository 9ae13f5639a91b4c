"""The analytics events repository: product events (``events``), the daily usage a user sees
(``usage_daily``, written by the ledger's settlement) and the admin overview's counts.

Events are written inside a caller's transaction (a sign-up, a run's settlement, a billing
webhook commit with their event); the reads run in a read transaction of their own. An email
reaches this table only as the keyed hash the caller computed (``growth.analytics.EmailHasher``).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any, Protocol

from sqlalchemy import Connection, distinct, func, select

from levqor_host.store.tables import credit_ledger, events, pipelines, runs, usage_daily, users


class Transactions(Protocol):
    """What a repository needs of the store: its read and write transactions."""

    def read(self) -> AbstractContextManager[Connection]: ...

    def write(self) -> AbstractContextManager[Connection]: ...


@dataclass(frozen=True)
class Event:
    """One row of ``events``."""

    id: str
    user_id: str | None
    type: str
    email_hash: str | None
    props: dict[str, Any] | None
    created_at: datetime


@dataclass(frozen=True)
class UsageDay:
    """One row of ``usage_daily``: what a user's runs did on one UTC day."""

    day: date
    jobs: int
    steps: int
    credits: int
    cost_saving_minutes: int
    input_tokens: int = 0
    output_tokens: int = 0


@dataclass(frozen=True)
class OverviewCounts:
    """The raw numbers of the admin overview for the users who signed up since ``since``."""

    signed_up: int
    created_pipeline: int
    ran_pipeline: int
    paid: int
    active_users: dict[str, int]
    revenue_events: list[Event]
    event_counts: dict[str, int]
    credits_sold: int


_INSERT = events.insert()  # built once: statements built per call cost more than the I/O
_ACTIVE_WINDOWS = {"day": 1, "week": 7, "month": 30}
_SOLD_REASONS = ("purchase", "subscription")


def _event(row: Any) -> Event:
    return Event(**{k: row._mapping[k] for k in Event.__dataclass_fields__})


class EventsRepository:
    """The ``events`` table and the usage/overview reads of the analytics dashboard."""

    def __init__(self, db: Transactions) -> None:
        self.db = db

    def add(
        self,
        conn: Connection,
        type: str,
        user_id: str | None,
        *,
        email_hash: str | None = None,
        props: dict[str, Any] | None = None,
    ) -> str:
        """Insert one event in the caller's transaction ``conn``; returns its id."""
        event_id = f"evt_{uuid.uuid4().hex}"
        conn.execute(
            _INSERT,
            {
                "id": event_id,
                "user_id": user_id,
                "type": type,
                "email_hash": email_hash,
                "props": props or None,
                "created_at": datetime.now(UTC),
            },
        )
        return event_id

    def usage_days(self, user_id: str, since: date) -> list[UsageDay]:
        """The user's ``usage_daily`` rows from ``since`` on (days without runs have none)."""
        with self.db.read() as conn:
            rows = conn.execute(
                select(usage_daily).where(
                    usage_daily.c.user_id == user_id, usage_daily.c.day >= since
                )
            ).all()
        return [
            UsageDay(
                r.day, r.jobs, r.steps, r.credits, r.cost_saving_minutes,
                int(r.input_tokens or 0), int(r.output_tokens or 0),
            )
            for r in rows
        ]

    def overview(self, since: datetime, today: date, paid_types: Sequence[str]) -> OverviewCounts:
        """The admin overview's counts in one read transaction (one consistent snapshot)."""
        with self.db.read() as conn:
            cohort = select(users.c.id).where(users.c.created_at >= since).subquery()
            members = select(cohort.c.id)
            signed_up = conn.execute(select(func.count()).select_from(cohort)).scalar_one()

            def reached(col: Any) -> int:
                return conn.execute(
                    select(func.count(distinct(col))).where(col.in_(members))
                ).scalar_one()

            paid = conn.execute(
                select(func.count(distinct(events.c.user_id))).where(
                    events.c.type.in_(paid_types), events.c.user_id.in_(members)
                )
            ).scalar_one()
            return OverviewCounts(
                signed_up=signed_up,
                created_pipeline=reached(pipelines.c.user_id),
                ran_pipeline=reached(runs.c.user_id),
                paid=paid,
                active_users={k: _active(conn, today, n) for k, n in _ACTIVE_WINDOWS.items()},
                revenue_events=list(_revenue(conn, since, paid_types)),
                event_counts=_counts_by_type(conn, since),
                credits_sold=_credits_sold(conn, since),
            )


def _active(conn: Connection, today: date, days: int) -> int:
    """Users with at least one run in the last ``days`` days (today included)."""
    return conn.execute(
        select(func.count(distinct(usage_daily.c.user_id))).where(
            usage_daily.c.day > today - timedelta(days=days), usage_daily.c.jobs > 0
        )
    ).scalar_one()


def _revenue(conn: Connection, since: datetime, paid_types: Sequence[str]) -> Iterator[Event]:
    rows = conn.execute(
        select(events)
        .where(events.c.type.in_(paid_types), events.c.created_at >= since)
        .order_by(events.c.created_at.desc())
    )
    return (_event(r) for r in rows)


def _counts_by_type(conn: Connection, since: datetime) -> dict[str, int]:
    rows = conn.execute(
        select(events.c.type, func.count())
        .where(events.c.created_at >= since)
        .group_by(events.c.type)
    ).all()
    return {t: n for t, n in rows}


def _credits_sold(conn: Connection, since: datetime) -> int:
    total = conn.execute(
        select(func.coalesce(func.sum(credit_ledger.c.delta), 0)).where(
            credit_ledger.c.reason.in_(_SOLD_REASONS), credit_ledger.c.created_at >= since
        )
    ).scalar_one()
    return int(total)
