"""Billing configuration, read from the environment mapping the host gives its plugins.

``LEVQOR_BILLING``: ``auto`` (default: ``stripe`` when ``STRIPE_SECRET_KEY`` is set, else
``unlimited``), ``unlimited`` (no gate: every run is allowed, nothing is charged), ``local``
(plans and credits enforced; credits come from ``levqor credits grant``) or ``stripe`` (plans
and credits enforced; credits and plans also come from Stripe Checkout and its webhooks).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

MODES = ("unlimited", "local", "stripe")

DEFAULT_PLANS: dict[str, dict[str, Any]] = {
    # the free plan: one run a day, included (no credits needed)
    "free": {"monthly_credits": 0, "runs_per_day": 1, "included_runs_per_day": 1, "price_id": None},
    "pro": {
        "monthly_credits": 5000,
        "runs_per_day": None,
        "included_runs_per_day": 0,
        "price_id": None,
    },
    "business": {
        "monthly_credits": 50000,
        "runs_per_day": None,
        "included_runs_per_day": 0,
        "price_id": None,
    },
}
PLAN_KEYS = {"monthly_credits", "runs_per_day", "included_runs_per_day", "price_id", "title"}


@dataclass(frozen=True)
class Plan:
    name: str
    monthly_credits: int
    runs_per_day: int | None
    included_runs_per_day: int
    price_id: str | None
    title: str

    def public(self) -> dict:
        return {
            "name": self.name,
            "title": self.title,
            "monthly_credits": self.monthly_credits,
            "runs_per_day": self.runs_per_day,
            "included_runs_per_day": self.included_runs_per_day,
            "purchasable": bool(self.price_id),
        }


@dataclass(frozen=True)
class Pack:
    name: str
    credits: int
    price_id: str


@dataclass(frozen=True)
class BillingConfig:
    mode: str
    plans: dict[str, Plan]
    packs: dict[str, Pack]
    secret_key: str | None = field(default=None, repr=False)
    webhook_secret: str | None = field(default=None, repr=False)
    api_base: str | None = None
    base_url: str = "http://127.0.0.1:8000"

    @property
    def enforced(self) -> bool:
        return self.mode in ("local", "stripe")

    def plan(self, name: str | None) -> Plan:
        return self.plans.get(name or "free") or self.plans["free"]

    def plan_for_price(self, price_id: str | None) -> str | None:
        for p in self.plans.values():
            if price_id and p.price_id == price_id:
                return p.name
        return None

    def stripe_missing(self) -> str | None:
        """What to set before Stripe can be used (None when it can)."""
        if self.mode != "stripe":
            return (
                f"billing with Stripe is off (LEVQOR_BILLING={self.mode}): set STRIPE_SECRET_KEY "
                "and STRIPE_WEBHOOK_SECRET (and LEVQOR_BILLING=stripe or auto)"
            )
        if not self.secret_key:
            return "set STRIPE_SECRET_KEY to use Stripe billing"
        return None


def _opt_int(value: Any, what: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{what} must be a whole number >= 0 or null")
    return value


def load(env: Mapping[str, str], base_url: str = "http://127.0.0.1:8000") -> BillingConfig:
    """The billing configuration; raises ValueError naming the variable that is wrong."""
    secret = env.get("STRIPE_SECRET_KEY") or None
    mode = (env.get("LEVQOR_BILLING") or "auto").strip().lower()
    if mode == "auto":
        mode = "stripe" if secret else "unlimited"
    if mode not in MODES:
        raise ValueError("LEVQOR_BILLING must be auto, unlimited, local or stripe")

    raw = {k: dict(v) for k, v in DEFAULT_PLANS.items()}
    for name in ("pro", "business"):
        pid = env.get(f"LEVQOR_STRIPE_PRICE_{name.upper()}")
        if pid:
            raw[name]["price_id"] = pid
    if env.get("LEVQOR_PLANS"):
        try:
            extra = json.loads(env["LEVQOR_PLANS"])
        except ValueError as e:
            raise ValueError(f"LEVQOR_PLANS is not JSON: {e}") from None
        if not isinstance(extra, dict) or not all(isinstance(v, dict) for v in extra.values()):
            raise ValueError('LEVQOR_PLANS must be {"plan": {"monthly_credits": ...}, ...}')
        for name, fields in extra.items():
            bad = set(fields) - PLAN_KEYS
            if bad:
                raise ValueError(f"LEVQOR_PLANS: unknown keys for {name}: {sorted(bad)}")
            raw.setdefault(
                name,
                {
                    "monthly_credits": 0,
                    "runs_per_day": None,
                    "included_runs_per_day": 0,
                    "price_id": None,
                },
            )
            raw[name].update(fields)
    plans = {}
    for name, f in raw.items():
        plans[name] = Plan(
            name=name,
            monthly_credits=_opt_int(f.get("monthly_credits", 0), f"{name}.monthly_credits") or 0,
            runs_per_day=_opt_int(f.get("runs_per_day"), f"{name}.runs_per_day"),
            included_runs_per_day=_opt_int(
                f.get("included_runs_per_day", 0), f"{name}.included_runs_per_day"
            )
            or 0,
            price_id=f.get("price_id") or None,
            title=str(f.get("title") or name.capitalize()),
        )

    packs = {}
    if env.get("LEVQOR_CREDIT_PACKS"):
        try:
            data = json.loads(env["LEVQOR_CREDIT_PACKS"])
        except ValueError as e:
            raise ValueError(f"LEVQOR_CREDIT_PACKS is not JSON: {e}") from None
        if not isinstance(data, dict):
            raise ValueError(
                'LEVQOR_CREDIT_PACKS must be {"name": {"credits": N, "price_id": "price_..."}}'
            )
        for name, f in data.items():
            if not isinstance(f, dict) or not f.get("price_id"):
                raise ValueError(f"LEVQOR_CREDIT_PACKS: {name} needs credits and price_id")
            credits = _opt_int(f.get("credits"), f"LEVQOR_CREDIT_PACKS {name}.credits")
            if not credits:
                raise ValueError(f"LEVQOR_CREDIT_PACKS: {name}.credits must be > 0")
            packs[name] = Pack(name, credits, str(f["price_id"]))

    return BillingConfig(
        mode=mode,
        plans=plans,
        packs=packs,
        secret_key=secret,
        webhook_secret=env.get("STRIPE_WEBHOOK_SECRET") or None,
        api_base=(env.get("LEVQOR_STRIPE_API_BASE") or "").rstrip("/") or None,
        base_url=base_url,
    )
