"""Product analytics and referrals: events with keyed email hashes, sign-ups, referral claims
and rewards, and the usage / conversion dashboard (``GET /api/v1/analytics/dashboard``).

Emails never reach the ``events`` table in clear: only ``HMAC-SHA256(secret, email)``, with
the secret from ``LEVQOR_ANALYTICS_SECRET`` or, when unset, derived from the vault key (a plain
SHA-256 would be reversed by hashing a list of known addresses).
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import uuid
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, and_, bindparam, distinct, func, select, update

from levqor_host.store.tables import (
    credit_ledger,
    events,
    pipelines,
    referrals,
    runs,
    usage_daily,
    users,
)

if TYPE_CHECKING:
    from levqor_host.billing.ledger import BillingTx
    from levqor_host.services import Services

log = logging.getLogger("levqor.analytics")

UTM_FIELDS = ("utm_source", "utm_medium", "utm_campaign")
PAID_EVENTS = ("checkout_completed", "invoice_paid")


class ReferralError(Exception):
    """A referral that cannot be recorded; ``status`` and ``code`` for the API answer."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


class EmailHasher:
    """``HMAC-SHA256(secret, lower-cased email)`` as hex."""

    def __init__(self, secret: bytes) -> None:
        if not secret:
            raise ValueError("the analytics secret must not be empty")
        self._secret = secret

    @classmethod
    def from_config(cls, config: Any, vault: Any) -> EmailHasher:
        explicit = getattr(config, "analytics_secret", None)
        if explicit:
            return cls(explicit.encode("utf-8"))
        # derived, never the vault key itself: HMAC(vault key, label)
        key = vault.keys[0].encode("utf-8")
        return cls(hmac.new(key, b"levqor analytics email hash v1", hashlib.sha256).digest())

    def __call__(self, email: str) -> str:
        norm = email.strip().lower().encode("utf-8")
        return hmac.new(self._secret, norm, hashlib.sha256).hexdigest()

    def __repr__(self) -> str:  # never show the secret
        return "<EmailHasher>"


def insert_event(
    conn: Connection,
    hasher: EmailHasher,
    type: str,
    user_id: str | None,
    *,
    email: str | None = None,
    props: dict | None = None,
) -> None:
    conn.execute(
        _INSERT_EVENT,
        {
            "id": f"evt_{uuid.uuid4().hex}",
            "user_id": user_id,
            "type": type,
            "email_hash": hasher(email) if email else None,
            "props": props or None,
            "created_at": datetime.now(UTC),
        },
    )


_INSERT_EVENT = events.insert()  # built once: statements built per call cost more than the I/O


def record_event(
    state: Services,
    type: str,
    user_id: str | None,
    *,
    email: str | None = None,
    props: dict | None = None,
) -> None:
    """Record one event in its own transaction; analytics never breaks the caller."""
    try:
        with state.ledger.transaction() as tx:
            tx.event(type, user_id, email=email, props=props)
    except Exception:  # noqa: BLE001
        log.exception("could not record the %s event", type)


def clean_utm(utm: dict | None) -> dict:
    out = {}
    for k in UTM_FIELDS:
        v = (utm or {}).get(k)
        if v is not None:
            if not isinstance(v, str) or len(v) > 200:
                raise ReferralError(400, "invalid_request", f"{k} must be a string of 0-200 chars")
            out[k] = v
    return out


# --------------------------------------------------------------------------- referrals


def _add_referral(tx: BillingTx, user: dict, code: str, utm: dict) -> dict:
    code = (code or "").strip().upper()
    if not code or len(code) > 32:
        raise ReferralError(400, "invalid_request", "a referral code is 1-32 characters")
    referrer = tx.conn.execute(
        select(users.c.id).where(users.c.referral_code == code)
    ).scalar_one_or_none()
    if referrer is None:
        raise ReferralError(404, "unknown_referral_code", f"no user has the referral code {code}")
    if referrer == user["id"]:
        raise ReferralError(400, "self_referral", "you cannot use your own referral code")
    seen = tx.conn.execute(
        select(referrals.c.id).where(referrals.c.referred_user_id == user["id"])
    ).first()
    if seen is not None:
        raise ReferralError(409, "already_referred", "this account already has a referral")
    ref = {
        "id": f"ref_{uuid.uuid4().hex}",
        "referrer_id": referrer,
        "referred_user_id": user["id"],
        "code": code,
        "rewarded_at": None,
        "created_at": datetime.now(UTC),
    }
    tx.conn.execute(referrals.insert().values(**ref))
    tx.event("referral", user["id"], props={"code": code, "referrer_id": referrer, **utm})
    # the referrer's id stays inside: the code is all the referred user needs to see
    return {"id": ref["id"], "code": code}


def record_signup(
    state: Services, user: dict, ref: str | None = None, utm: dict | None = None
) -> dict:
    """Record a sign-up (event with the hashed email and UTM fields) and, with ``ref``, the
    referral, in one transaction. Called by every user creation path. Raises ReferralError."""
    utm = clean_utm(utm)
    with state.ledger.transaction() as tx:
        tx.lock_user(user["id"])
        tx.event(
            "signup",
            user["id"],
            email=user.get("email"),
            props={**utm, **({"ref": ref.strip().upper()} if ref else {})},
        )
        referral = _add_referral(tx, user, ref, utm) if ref else None
    return {"referral": referral}


def claim_referral(state: Services, user: dict, code: str, utm: dict | None = None) -> dict:
    """A signed-in user names who referred them, within the claim window after sign-up."""
    utm = clean_utm(utm)
    window = timedelta(days=state.config.referral_claim_days)
    created = datetime.fromisoformat(user["created_at"])
    if datetime.now(UTC) - created > window:
        raise ReferralError(
            409,
            "claim_window_closed",
            f"referrals can be claimed within {state.config.referral_claim_days} days of sign-up",
        )
    with state.ledger.transaction() as tx:
        tx.lock_user(user["id"])
        return _add_referral(tx, user, code, utm)


_PENDING_REFERRAL = select(referrals).where(
    referrals.c.referred_user_id == bindparam("user_id"), referrals.c.rewarded_at.is_(None)
)


def reward_referral(tx: BillingTx, user_id: str, bonus: int) -> dict | None:
    """Once the referred user's first run succeeded: ``bonus`` credits to both sides, once."""
    row = tx.conn.execute(_PENDING_REFERRAL, {"user_id": user_id}).first()
    if row is None or row.referrer_id == user_id:
        return None
    res = tx.conn.execute(
        update(referrals)
        .where(referrals.c.id == row.id, referrals.c.rewarded_at.is_(None))
        .values(rewarded_at=datetime.now(UTC))
    )
    if res.rowcount != 1:
        return None
    if bonus > 0:
        tx.add_line(row.referrer_id, bonus, "referral", external_id=f"referral:{row.id}:referrer")
        tx.add_line(user_id, bonus, "referral", external_id=f"referral:{row.id}:referred")
    tx.event("referral_rewarded", user_id, props={"referral_id": row.id, "bonus": bonus})
    return {"referral_id": row.id, "referrer_id": row.referrer_id, "bonus": bonus}


# --------------------------------------------------------------------------- dashboard


def _days(n: int) -> list[date]:
    today = datetime.now(UTC).date()
    return [today - timedelta(days=i) for i in range(n - 1, -1, -1)]


def user_usage(state: Services, user_id: str, days: int) -> dict:
    span = _days(days)
    with state.store.read() as conn:
        rows = conn.execute(
            select(usage_daily).where(
                usage_daily.c.user_id == user_id, usage_daily.c.day >= span[0]
            )
        ).all()
    by_day = {r.day: r for r in rows}
    series = []
    totals = {"jobs": 0, "steps": 0, "credits": 0, "cost_saving_minutes": 0}
    for d in span:
        r = by_day.get(d)
        item = {
            "day": d.isoformat(),
            "jobs": r.jobs if r else 0,
            "steps": r.steps if r else 0,
            "credits": r.credits if r else 0,
            "cost_saving_minutes": r.cost_saving_minutes if r else 0,
        }
        for k in totals:
            totals[k] += item[k]
        series.append(item)
    return {"days": days, "series": series, "totals": totals}


def _rate(num: int, den: int) -> float | None:
    return round(num / den, 4) if den else None


def admin_overview(state: Services, days: int) -> dict:
    now = datetime.now(UTC)
    since = now - timedelta(days=days)
    today = now.date()
    with state.store.read() as conn:
        cohort = select(users.c.id).where(users.c.created_at >= since).subquery()
        signed_up = conn.execute(select(func.count()).select_from(cohort)).scalar_one()

        def reached(table, col) -> int:
            return conn.execute(
                select(func.count(distinct(col))).where(col.in_(select(cohort.c.id)))
            ).scalar_one()

        with_pipeline = reached(pipelines, pipelines.c.user_id)
        with_run = reached(runs, runs.c.user_id)
        paid = conn.execute(
            select(func.count(distinct(events.c.user_id))).where(
                events.c.type.in_(PAID_EVENTS), events.c.user_id.in_(select(cohort.c.id))
            )
        ).scalar_one()

        def active(n: int) -> int:
            return conn.execute(
                select(func.count(distinct(usage_daily.c.user_id))).where(
                    usage_daily.c.day > today - timedelta(days=n), usage_daily.c.jobs > 0
                )
            ).scalar_one()

        active_users = {"day": active(1), "week": active(7), "month": active(30)}
        rev_rows = conn.execute(
            select(events)
            .where(events.c.type.in_(PAID_EVENTS), events.c.created_at >= since)
            .order_by(events.c.created_at.desc())
        ).all()
        counts = dict(
            conn.execute(
                select(events.c.type, func.count())
                .where(events.c.created_at >= since)
                .group_by(events.c.type)
            ).all()
        )
        purchased = conn.execute(
            select(func.coalesce(func.sum(credit_ledger.c.delta), 0)).where(
                and_(
                    credit_ledger.c.reason.in_(("purchase", "subscription")),
                    credit_ledger.c.created_at >= since,
                )
            )
        ).scalar_one()
    amounts: dict[str, int] = {}
    for r in rev_rows:
        p = r.props or {}
        if isinstance(p.get("amount"), int) and isinstance(p.get("currency"), str):
            amounts[p["currency"]] = amounts.get(p["currency"], 0) + p["amount"]
    steps = [
        ("signed_up", signed_up),
        ("created_pipeline", with_pipeline),
        ("ran_pipeline", with_run),
        ("paid", paid),
    ]
    funnel = []
    for i, (name, n) in enumerate(steps):
        funnel.append(
            {
                "step": name,
                "users": n,
                "rate_from_previous": _rate(n, steps[i - 1][1]) if i else None,
                "rate_from_signup": _rate(n, signed_up),
            }
        )
    return {
        "funnel": funnel,
        "active_users": active_users,
        "revenue": {
            "events": len(rev_rows),
            "amount_by_currency": amounts,
            "credits_sold": int(purchased),
            "latest": [
                {
                    "type": r.type,
                    "user_id": r.user_id,
                    "amount": (r.props or {}).get("amount"),
                    "currency": (r.props or {}).get("currency"),
                    "created_at": r.created_at.isoformat(),
                }
                for r in rev_rows[:20]
            ],
        },
        "events": counts,
    }
