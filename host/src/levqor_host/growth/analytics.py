"""Product analytics and referrals: events with keyed email hashes, sign-ups, referral claims
and rewards, and the usage / conversion dashboard (``GET /api/v1/analytics/dashboard``).

Emails never reach the ``events`` table in clear: only ``HMAC-SHA256(secret, email)``, with
the secret from ``LEVQOR_ANALYTICS_SECRET`` or, when unset, derived from the vault key (a plain
SHA-256 would be reversed by hashing a list of known addresses).

Each function is handed what it works on: the ledger (whose transactions carry the events and
referrals that must commit with a sign-up or a reward), or the events and referrals
repositories (``store.events``, ``store.referrals``) for the dashboard's reads. The SQL lives in
:mod:`levqor_host.store.events` and :mod:`levqor_host.store.referrals`.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from levqor_host.billing.ledger import BillingTx, Ledger
    from levqor_host.store.events import EventsRepository
    from levqor_host.store.referrals import ReferralsRepository

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
        explicit = config.growth.analytics_secret
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


def record_event(
    ledger: Ledger,
    type: str,
    user_id: str | None,
    *,
    email: str | None = None,
    props: dict | None = None,
) -> None:
    """Record one event in its own transaction; analytics never breaks the caller."""
    try:
        with ledger.transaction() as tx:
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
    referrals = tx.ledger.store.referrals
    referrer = referrals.user_with_code(tx.conn, code)
    if referrer is None:
        raise ReferralError(404, "unknown_referral_code", f"no user has the referral code {code}")
    if referrer == user["id"]:
        raise ReferralError(400, "self_referral", "you cannot use your own referral code")
    if referrals.is_referred(tx.conn, user["id"]):
        raise ReferralError(409, "already_referred", "this account already has a referral")
    ref = referrals.add(tx.conn, referrer, user["id"], code)
    tx.event("referral", user["id"], props={"code": code, "referrer_id": referrer, **utm})
    # the referrer's id stays inside: the code is all the referred user needs to see
    return {"id": ref.id, "code": code}


def record_signup(
    ledger: Ledger, user: dict, ref: str | None = None, utm: dict | None = None
) -> dict:
    """Record a sign-up (event with the hashed email and UTM fields) and, with ``ref``, the
    referral, in one transaction. Called by every user creation path. Raises ReferralError."""
    utm = clean_utm(utm)
    with ledger.transaction() as tx:
        tx.lock_user(user["id"])
        tx.event(
            "signup",
            user["id"],
            email=user.get("email"),
            props={**utm, **({"ref": ref.strip().upper()} if ref else {})},
        )
        referral = _add_referral(tx, user, ref, utm) if ref else None
    return {"referral": referral}


def claim_referral(
    ledger: Ledger, user: dict, code: str, utm: dict | None = None, *, claim_days: int
) -> dict:
    """A signed-in user names who referred them, within ``claim_days`` after sign-up."""
    utm = clean_utm(utm)
    created = datetime.fromisoformat(user["created_at"])
    if datetime.now(UTC) - created > timedelta(days=claim_days):
        raise ReferralError(
            409,
            "claim_window_closed",
            f"referrals can be claimed within {claim_days} days of sign-up",
        )
    with ledger.transaction() as tx:
        tx.lock_user(user["id"])
        return _add_referral(tx, user, code, utm)


def reward_referral(tx: BillingTx, user_id: str, bonus: int) -> dict | None:
    """Once the referred user's first run succeeded: ``bonus`` credits to both sides, once."""
    referrals = tx.ledger.store.referrals
    ref = referrals.pending(tx.conn, user_id)
    if ref is None or ref.referrer_id == user_id:
        return None
    if not referrals.mark_rewarded(tx.conn, ref.id):
        return None
    if bonus > 0:
        tx.add_line(ref.referrer_id, bonus, "referral", external_id=f"referral:{ref.id}:referrer")
        tx.add_line(user_id, bonus, "referral", external_id=f"referral:{ref.id}:referred")
    tx.event("referral_rewarded", user_id, props={"referral_id": ref.id, "bonus": bonus})
    return {"referral_id": ref.id, "referrer_id": ref.referrer_id, "bonus": bonus}


def referral_status(
    referrals: ReferralsRepository, user: dict, *, base_url: str, bonus: int
) -> dict:
    """A user's referral code and link, how many users they referred (and were rewarded for),
    the bonus each side gets, and the code that referred them."""
    stats = referrals.stats(user["id"])
    return {
        "code": user.get("referral_code"),
        "link": f"{base_url}/?ref={user.get('referral_code')}",
        "referred_users": stats.referred_users,
        "rewarded": stats.rewarded,
        "bonus": bonus,
        "referred_by_code": stats.referred_by_code,
    }


# --------------------------------------------------------------------------- dashboard


def _days(n: int) -> list[date]:
    today = datetime.now(UTC).date()
    return [today - timedelta(days=i) for i in range(n - 1, -1, -1)]


def user_usage(events: EventsRepository, user_id: str, days: int) -> dict:
    """The user's jobs, steps, credits, minutes saved and model tokens (``input_tokens``,
    ``output_tokens`` and their sum ``tokens``) per day over the last ``days`` days."""
    span = _days(days)
    by_day = {u.day: u for u in events.usage_days(user_id, span[0])}
    series = []
    counted = ("jobs", "steps", "credits", "cost_saving_minutes", "input_tokens", "output_tokens")
    totals = dict.fromkeys((*counted, "tokens"), 0)
    for d in span:
        u = by_day.get(d)
        item = {"day": d.isoformat(), **{k: getattr(u, k) if u else 0 for k in counted}}
        item["tokens"] = item["input_tokens"] + item["output_tokens"]
        for k in totals:
            totals[k] += item[k]
        series.append(item)
    return {"days": days, "series": series, "totals": totals}


def _rate(num: int, den: int) -> float | None:
    return round(num / den, 4) if den else None


def _funnel(steps: list[tuple[str, int]]) -> list[dict]:
    signed_up = steps[0][1]
    return [
        {
            "step": name,
            "users": n,
            "rate_from_previous": _rate(n, steps[i - 1][1]) if i else None,
            "rate_from_signup": _rate(n, signed_up),
        }
        for i, (name, n) in enumerate(steps)
    ]


def _revenue_line(props: dict[str, Any] | None) -> tuple[str, int] | None:
    p = props or {}
    if isinstance(p.get("amount"), int) and isinstance(p.get("currency"), str):
        return p["currency"], p["amount"]
    return None


def admin_overview(events: EventsRepository, days: int) -> dict:
    """For admins: the sign-up funnel of the last ``days`` days, active users, revenue, and
    the count of every event type."""
    now = datetime.now(UTC)
    c = events.overview(now - timedelta(days=days), now.date(), PAID_EVENTS)
    amounts: dict[str, int] = {}
    for e in c.revenue_events:
        line = _revenue_line(e.props)
        if line is not None:
            amounts[line[0]] = amounts.get(line[0], 0) + line[1]
    funnel = _funnel(
        [
            ("signed_up", c.signed_up),
            ("created_pipeline", c.created_pipeline),
            ("ran_pipeline", c.ran_pipeline),
            ("paid", c.paid),
        ]
    )
    latest = [
        {
            "type": e.type,
            "user_id": e.user_id,
            "amount": (e.props or {}).get("amount"),
            "currency": (e.props or {}).get("currency"),
            "created_at": e.created_at.isoformat(),
        }
        for e in c.revenue_events[:20]
    ]
    return {
        "funnel": funnel,
        "active_users": c.active_users,
        "revenue": {
            "events": len(c.revenue_events),
            "amount_by_currency": amounts,
            "credits_sold": c.credits_sold,
            "latest": latest,
        },
        "events": c.event_counts,
    }
