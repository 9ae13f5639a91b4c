"""Applying verified Stripe events, each exactly once.

Every event runs in one host ledger transaction that first stores ``stripe:<event id>``
(``tx.claim_event``): a replay finds it and changes nothing. Credits are keyed by the Stripe
object they come from (``stripe:checkout:<session>``, ``stripe:invoice:<invoice>``), and plan
changes carry the event's ``created`` time and a rank (checkout < updated < deleted): an older
event delivered after a newer one cannot undo it, so shuffled deliveries end in the same state.

Events (https://docs.stripe.com/api/events/types): checkout.session.completed,
invoice.paid, invoice.payment_failed, customer.subscription.updated and .deleted.
"""

from __future__ import annotations

import logging
from typing import Any

from levqor_kernel.host import BillingTransaction, Host

from .config import BillingConfig

log = logging.getLogger("levqor.stripe")

RANK = {"checkout": 0, "updated": 1, "deleted": 2}
ACTIVE = ("active", "trialing")
ENDED = ("canceled", "unpaid", "incomplete_expired")


def _meta(obj: dict) -> dict:
    return obj.get("metadata") or {}


def _invoice_meta(inv: dict) -> dict:
    """Subscription metadata copied on the invoice (API versions before and after 2025-03)."""
    parent = (inv.get("parent") or {}).get("subscription_details") or {}
    return parent.get("metadata") or (inv.get("subscription_details") or {}).get("metadata") or {}


def _invoice_price(inv: dict) -> str | None:
    for line in (inv.get("lines") or {}).get("data") or []:
        price = line.get("price") or {}
        pid = price.get("id") if isinstance(price, dict) else price
        if not pid:
            details = (line.get("pricing") or {}).get("price_details") or {}
            pid = details.get("price")
        if pid:
            return pid
    return None


def _sub_price(sub: dict) -> str | None:
    for item in (sub.get("items") or {}).get("data") or []:
        price = item.get("price") or {}
        pid = price.get("id") if isinstance(price, dict) else price
        if pid:
            return pid
    return None


def _resolve_user(tx: BillingTransaction, obj: dict, meta: dict) -> str | None:
    uid = obj.get("client_reference_id") or meta.get("levqor_user_id")
    if not uid and isinstance(obj.get("customer"), str):
        uid = tx.user_id_for_customer(obj["customer"])
    if uid and tx.lock_user(uid) is not None:
        return uid
    return None


def _apply_plan(
    tx: BillingTransaction, uid: str, plan: str, created: int, kind: str, **account: Any
) -> bool:
    acct = tx.account(uid)
    rank = RANK[kind]
    if acct is not None and (created, rank) < (acct["plan_event_at"], acct["plan_event_rank"]):
        tx.save_account(uid, "stripe", **{k: v for k, v in account.items() if k == "customer_id"})
        return False  # an older event than the plan change already applied
    tx.set_plan(uid, plan)
    tx.save_account(uid, "stripe", plan_event_at=created, plan_event_rank=rank, **account)
    return True


def handle_event(state: Host, cfg: BillingConfig, event: dict) -> dict:
    etype = event["type"]
    obj = (event.get("data") or {}).get("object") or {}
    created = int(event.get("created") or 0)
    with state.ledger.transaction() as tx:
        if not tx.claim_event(f"stripe:{event['id']}", etype):
            return {"duplicate": True}
        out = _dispatch(tx, cfg, etype, obj, created)
    return {"duplicate": False, **out}


def _dispatch(
    tx: BillingTransaction, cfg: BillingConfig, etype: str, obj: dict, created: int
) -> dict:
    customer = obj.get("customer") if isinstance(obj.get("customer"), str) else None

    if etype == "checkout.session.completed":
        meta = _meta(obj)
        uid = _resolve_user(tx, obj, meta)
        if uid is None:
            return {"ignored": "no Levqor user for this session"}
        if customer:
            tx.save_account(uid, "stripe", customer_id=customer)
        props = {
            "session": obj.get("id"),
            "mode": obj.get("mode"),
            "amount": obj.get("amount_total"),
            "currency": obj.get("currency"),
        }
        if obj.get("mode") == "payment":
            if obj.get("payment_status") not in ("paid", "no_payment_required"):
                return {"ignored": "payment not completed"}
            try:
                credits = int(meta.get("credits") or 0)
            except ValueError:
                credits = 0
            if credits > 0:
                tx.add_line(
                    uid, credits, "purchase", external_id=f"stripe:checkout:{obj.get('id')}"
                )
            tx.event("checkout_completed", uid, props={**props, "credits": credits})
            return {"credits": credits}
        plan = meta.get("plan")
        if plan not in cfg.plans:
            return {"ignored": f"unknown plan {plan!r}"}
        sub = obj.get("subscription") if isinstance(obj.get("subscription"), str) else None
        applied = _apply_plan(
            tx,
            uid,
            plan,
            created,
            "checkout",
            customer_id=customer,
            subscription_id=sub,
            status="active",
        )
        tx.event("checkout_completed", uid, props={**props, "plan": plan})
        return {"plan": plan if applied else None}

    if etype in ("invoice.paid", "invoice.payment_failed"):
        meta = _invoice_meta(obj)
        uid = _resolve_user(tx, {"customer": customer}, meta)
        if uid is None:
            return {"ignored": "no Levqor user for this customer"}
        if customer:
            tx.save_account(uid, "stripe", customer_id=customer)
        props = {
            "invoice": obj.get("id"),
            "amount": obj.get("amount_paid"),
            "currency": obj.get("currency"),
        }
        if etype == "invoice.payment_failed":
            tx.save_account(uid, "stripe", status="past_due")
            tx.event("payment_failed", uid, props={**props, "amount": obj.get("amount_due")})
            return {"status": "past_due"}
        plan = meta.get("plan") if meta.get("plan") in cfg.plans else None
        plan = plan or cfg.plan_for_price(_invoice_price(obj))
        credits = cfg.plan(plan).monthly_credits if plan else 0
        if credits > 0:
            tx.add_line(uid, credits, "subscription", external_id=f"stripe:invoice:{obj.get('id')}")
        tx.event("invoice_paid", uid, props={**props, "plan": plan, "credits": credits})
        return {"credits": credits}

    if etype in ("customer.subscription.updated", "customer.subscription.deleted"):
        meta = _meta(obj)
        uid = _resolve_user(tx, {"customer": customer}, meta)
        if uid is None:
            return {"ignored": "no Levqor user for this customer"}
        status = "canceled" if etype.endswith("deleted") else obj.get("status")
        kind = "deleted" if etype.endswith("deleted") else "updated"
        if status in ACTIVE:
            plan = cfg.plan_for_price(_sub_price(obj)) or (
                meta.get("plan") if meta.get("plan") in cfg.plans else None
            )
            if plan is None:
                return {"ignored": "unknown price"}
        elif status in ENDED:
            plan = "free"
        else:  # past_due, incomplete, paused: keep the plan, note the status
            tx.save_account(uid, "stripe", customer_id=customer, status=status)
            return {"status": status}
        applied = _apply_plan(
            tx,
            uid,
            plan,
            created,
            kind,
            customer_id=customer,
            subscription_id=obj.get("id"),
            status=status,
        )
        tx.event("subscription_" + kind, uid, props={"plan": plan, "status": status})
        return {"plan": plan if applied else None, "status": status}

    return {"ignored": f"event type {etype} is not used"}
