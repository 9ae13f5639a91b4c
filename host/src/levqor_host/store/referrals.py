"""The referrals repository: who referred whom (``referrals``), and the one-time reward mark.

Referrals are added and rewarded inside the caller's billing transaction (the referred user is
locked, the reward's ledger lines commit with the mark); the status a user reads runs in a read
transaction of its own.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, bindparam, func, select, update

from levqor_host.store.events import Transactions
from levqor_host.store.tables import referrals, users


@dataclass(frozen=True)
class Referral:
    """One row of ``referrals``."""

    id: str
    referrer_id: str
    referred_user_id: str
    code: str
    rewarded_at: datetime | None
    created_at: datetime


@dataclass(frozen=True)
class ReferralStats:
    """A user's side of referrals: how many they referred (and of those, rewarded), and the code
    that referred them, if any."""

    referred_users: int
    rewarded: int
    referred_by_code: str | None


_PENDING = select(referrals).where(
    referrals.c.referred_user_id == bindparam("user_id"), referrals.c.rewarded_at.is_(None)
)


def _referral(row: Any) -> Referral:
    return Referral(**{k: row._mapping[k] for k in Referral.__dataclass_fields__})


class ReferralsRepository:
    """The ``referrals`` table."""

    def __init__(self, db: Transactions) -> None:
        self.db = db

    @staticmethod
    def user_with_code(conn: Connection, code: str) -> str | None:
        """The id of the user whose referral code is ``code``."""
        return conn.execute(
            select(users.c.id).where(users.c.referral_code == code)
        ).scalar_one_or_none()

    @staticmethod
    def is_referred(conn: Connection, user_id: str) -> bool:
        """Whether ``user_id`` already has a referral (there is at most one per user)."""
        seen = conn.execute(
            select(referrals.c.id).where(referrals.c.referred_user_id == user_id)
        ).first()
        return seen is not None

    @staticmethod
    def add(conn: Connection, referrer_id: str, referred_user_id: str, code: str) -> Referral:
        """Insert a referral in the caller's transaction."""
        ref = Referral(
            id=f"ref_{uuid.uuid4().hex}",
            referrer_id=referrer_id,
            referred_user_id=referred_user_id,
            code=code,
            rewarded_at=None,
            created_at=datetime.now(UTC),
        )
        conn.execute(referrals.insert().values(**ref.__dict__))
        return ref

    @staticmethod
    def pending(conn: Connection, user_id: str) -> Referral | None:
        """The referral of ``user_id`` that has not been rewarded yet."""
        row = conn.execute(_PENDING, {"user_id": user_id}).first()
        return _referral(row) if row is not None else None

    @staticmethod
    def mark_rewarded(conn: Connection, referral_id: str) -> bool:
        """Mark a referral rewarded; False when another transaction marked it first."""
        res = conn.execute(
            update(referrals)
            .where(referrals.c.id == referral_id, referrals.c.rewarded_at.is_(None))
            .values(rewarded_at=datetime.now(UTC))
        )
        return res.rowcount == 1

    def stats(self, user_id: str) -> ReferralStats:
        """The referrals ``user_id`` made, and the code that referred them."""
        with self.db.read() as conn:
            made = conn.execute(
                select(func.count(), func.count(referrals.c.rewarded_at)).where(
                    referrals.c.referrer_id == user_id
                )
            ).one()
            mine = conn.execute(
                select(referrals.c.code).where(referrals.c.referred_user_id == user_id)
            ).first()
        return ReferralStats(made[0], made[1], mine.code if mine else None)
