"""The credit ledger's SQL (``store.ledger``): ledger lines, billing accounts, processed
external events, daily usage and the low-credit marks.

Every method runs on the connection of a transaction the caller holds (the billing rules in
``levqor_host.billing`` open it with ``store.write()`` and decide what to write); nothing here
commits, and nothing here knows a billing rule. A balance is the sum of a user's lines, never
a stored number.
"""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime
from typing import Any

from sqlalchemy import Connection, and_, bindparam, case, delete, exists, func, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from levqor_host.store.tables import (
    billing_accounts,
    credit_ledger,
    meta,
    processed_events,
    runs,
    usage_daily,
    users,
)

#: the fields of a billing account a caller may set
ACCOUNT_FIELDS = frozenset(
    {"customer_id", "subscription_id", "status", "plan_event_at", "plan_event_rank"}
)


def _now() -> datetime:
    return datetime.now(UTC)


def _usage_upsert(insert_fn: Any) -> Any:
    ins = insert_fn(usage_daily)
    ex = ins.excluded
    return ins.on_conflict_do_update(
        index_elements=[usage_daily.c.user_id, usage_daily.c.day],
        set_={
            "jobs": usage_daily.c.jobs + ex.jobs,
            "steps": usage_daily.c.steps + ex.steps,
            "credits": usage_daily.c.credits + ex.credits,
            "cost_saving_minutes": usage_daily.c.cost_saving_minutes + ex.cost_saving_minutes,
            "input_tokens": usage_daily.c.input_tokens + ex.input_tokens,
            "output_tokens": usage_daily.c.output_tokens + ex.output_tokens,
        },
    )


def _event_claim(insert_fn: Any) -> Any:
    ins = insert_fn(processed_events).values(
        key=bindparam("key"), type=bindparam("type"), created_at=bindparam("created_at")
    )
    return ins.on_conflict_do_nothing(index_elements=[processed_events.c.key]).returning(
        processed_events.c.key
    )


# Statements of the settlement, built once (building one per call costs more CPU than running it)
_USAGE_UPSERT = {"postgresql": _usage_upsert(pg_insert), "sqlite": _usage_upsert(sqlite_insert)}
_EVENT_CLAIM = {"postgresql": _event_claim(pg_insert), "sqlite": _event_claim(sqlite_insert)}
_USER = select(users).where(users.c.id == bindparam("user_id"))
_USER_FOR_UPDATE = _USER.with_for_update()
_RUN_SUMS = select(
    func.coalesce(func.sum(case((credit_ledger.c.reason == "run", credit_ledger.c.delta))), 0),
    func.coalesce(
        func.sum(case((credit_ledger.c.reason.in_(("refund", "unused")), credit_ledger.c.delta))),
        0,
    ),
).where(credit_ledger.c.run_id == bindparam("run_id"))


class LedgerRepository:
    """The ledger tables of one database (``dialect``: ``sqlite`` or ``postgresql``)."""

    def __init__(self, dialect: str) -> None:
        self.dialect = dialect

    # users
    def user(self, conn: Connection, user_id: str, *, lock: bool = False) -> dict | None:
        """The user row; with ``lock`` (PostgreSQL) locked until the transaction ends."""
        stmt = _USER_FOR_UPDATE if lock and self.dialect == "postgresql" else _USER
        row = conn.execute(stmt, {"user_id": user_id}).first()
        if row is None:
            return None
        return {
            "id": row.id,
            "email": row.email,
            "name": row.name,
            "plan": row.plan,
            "is_admin": bool(row.is_admin),
            "referral_code": row.referral_code,
            "created_at": row.created_at.isoformat(),
        }

    def set_plan(self, conn: Connection, user_id: str, plan: str) -> bool:
        res = conn.execute(update(users).where(users.c.id == user_id).values(plan=plan))
        return res.rowcount == 1

    # ledger lines
    def balance(self, conn: Connection, user_id: str) -> int:
        return int(
            conn.execute(
                select(func.coalesce(func.sum(credit_ledger.c.delta), 0)).where(
                    credit_ledger.c.user_id == user_id
                )
            ).scalar_one()
        )

    def has_external_id(self, conn: Connection, external_id: str) -> bool:
        found = conn.execute(
            select(credit_ledger.c.id).where(credit_ledger.c.external_id == external_id)
        ).first()
        return found is not None

    def add_line(
        self,
        conn: Connection,
        user_id: str,
        delta: int,
        reason: str,
        *,
        run_id: str | None = None,
        external_id: str | None = None,
    ) -> None:
        conn.execute(
            credit_ledger.insert().values(
                id=f"led_{uuid.uuid4().hex}",
                user_id=user_id,
                delta=delta,
                reason=reason,
                run_id=run_id,
                external_id=external_id,
                created_at=_now(),
            )
        )

    def lines(self, conn: Connection, user_id: str, limit: int = 100) -> list[dict]:
        """The user's newest ledger lines first."""
        rows = conn.execute(
            select(credit_ledger)
            .where(credit_ledger.c.user_id == user_id)
            .order_by(credit_ledger.c.created_at.desc(), credit_ledger.c.id)
            .limit(limit)
        ).all()
        return [
            {
                "id": r.id,
                "delta": r.delta,
                "reason": r.reason,
                "run_id": r.run_id,
                "external_id": r.external_id,
                "created_at": r.created_at.isoformat(),
            }
            for r in rows
        ]

    def run_sums(self, conn: Connection, run_id: str) -> tuple[int, int]:
        """(charged, refunded) of a run, both positive."""
        charged, refunded = conn.execute(_RUN_SUMS, {"run_id": run_id}).one()
        return -int(charged), int(refunded)

    # external events and billing accounts
    def claim_event(self, conn: Connection, key: str, type: str) -> bool:
        """Store an external event id; False when it was stored before."""
        params = {"key": key, "type": type, "created_at": _now()}
        return conn.execute(_EVENT_CLAIM[self.dialect], params).first() is not None

    def account(self, conn: Connection, user_id: str) -> dict | None:
        row = conn.execute(
            select(billing_accounts).where(billing_accounts.c.user_id == user_id)
        ).first()
        return dict(row._mapping) if row else None

    def user_id_for_customer(self, conn: Connection, customer_id: str) -> str | None:
        return conn.execute(
            select(billing_accounts.c.user_id).where(billing_accounts.c.customer_id == customer_id)
        ).scalar_one_or_none()

    def save_account(self, conn: Connection, user_id: str, provider: str, **values: Any) -> None:
        """Insert or update the user's billing account (:data:`ACCOUNT_FIELDS`; None values
        are left as they are)."""
        bad = set(values) - ACCOUNT_FIELDS
        if bad:
            raise TypeError(f"unknown billing account fields: {sorted(bad)}")
        values = {k: v for k, v in values.items() if v is not None}
        if self.account(conn, user_id) is None:
            conn.execute(
                billing_accounts.insert().values(
                    user_id=user_id,
                    provider=provider,
                    plan_event_at=values.pop("plan_event_at", 0),
                    plan_event_rank=values.pop("plan_event_rank", 0),
                    updated_at=_now(),
                    **values,
                )
            )
        else:
            conn.execute(
                update(billing_accounts)
                .where(billing_accounts.c.user_id == user_id)
                .values(provider=provider, updated_at=_now(), **values)
            )

    # runs, as billing sees them
    def runs_since(self, conn: Connection, user_id: str, since: datetime) -> int:
        """The user's runs created since ``since``, except refunded ones."""
        refunded = exists().where(
            and_(credit_ledger.c.run_id == runs.c.id, credit_ledger.c.reason == "refund")
        )
        return int(
            conn.execute(
                select(func.count())
                .select_from(runs)
                .where(runs.c.user_id == user_id, runs.c.created_at >= since, ~refunded)
            ).scalar_one()
        )

    def run_id_for_key(self, conn: Connection, user_id: str, idempotency_key: str) -> str | None:
        """The user's run created with this idempotency key, if any."""
        return conn.execute(
            select(runs.c.id).where(
                runs.c.user_id == user_id, runs.c.idempotency_key == idempotency_key
            )
        ).scalar_one_or_none()

    def claim_settlement(self, conn: Connection, run_id: str) -> bool:
        """Set the run's ``settled_at``; False when it was set before (settled already)."""
        claimed = conn.execute(
            update(runs)
            .where(runs.c.id == run_id, runs.c.settled_at.is_(None))
            .values(settled_at=_now())
        )
        return claimed.rowcount == 1

    def has_other_finished_run(self, conn: Connection, user_id: str, run_id: str) -> bool:
        """Whether the user has a succeeded or failed run other than ``run_id``."""
        found = conn.execute(
            select(runs.c.id)
            .where(
                runs.c.user_id == user_id,
                runs.c.id != run_id,
                runs.c.status.in_(("succeeded", "failed")),
                runs.c.finished_at.is_not(None),
            )
            .limit(1)
        ).first()
        return found is not None

    def add_usage(
        self,
        conn: Connection,
        user_id: str,
        day: date,
        *,
        jobs: int,
        steps: int,
        credits: int,
        minutes: float,
        input_tokens: int = 0,
        output_tokens: int = 0,
    ) -> None:
        """Add to the user's ``usage_daily`` row of ``day``."""
        conn.execute(
            _USAGE_UPSERT[self.dialect],
            {
                "user_id": user_id,
                "day": day,
                "jobs": jobs,
                "steps": steps,
                "credits": credits,
                "cost_saving_minutes": int(round(minutes)),
                "input_tokens": int(input_tokens),
                "output_tokens": int(output_tokens),
            },
        )

    # marks (the low-credit warning's armed state)
    def mark(self, conn: Connection, key: str) -> str | None:
        """The value of the ``meta`` row ``key`` (``""`` when it has none), or None when there
        is no such row."""
        row = conn.execute(select(meta.c.value).where(meta.c.key == key)).first()
        return None if row is None else (row.value or "")

    def set_mark(self, conn: Connection, key: str, value: str) -> None:
        conn.execute(meta.insert().values(key=key, value=value, updated_at=_now()))

    def clear_mark(self, conn: Connection, key: str) -> None:
        conn.execute(delete(meta).where(meta.c.key == key))
