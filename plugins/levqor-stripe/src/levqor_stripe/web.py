"""``/api/v1/billing``: the user's plan and balance, Stripe Checkout, the customer portal and
the Stripe webhook. Uses only what the host gives: ``app.extensions["levqor"]`` (a
:class:`levqor_kernel.host.Host`, with its ``ledger``) and the request's signed-in user.
Errors are :class:`levqor_kernel.host.HttpError`, which the host renders like its own."""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import stripe
from flask import Blueprint, current_app, jsonify, request
from levqor_kernel.access import public, requires, signed_in
from levqor_kernel.host import Host, HttpError

from . import grant_monthly_credits
from .config import BillingConfig
from .webhooks import handle_event

log = logging.getLogger("levqor.stripe")

bp = Blueprint("levqor_stripe", __name__, url_prefix="/api/v1/billing")


def _state() -> Host:
    return current_app.extensions["levqor"]


def _cfg() -> BillingConfig:
    return current_app.extensions["levqor_stripe"]


def _user(scope: str | None = "billing") -> dict:
    """The signed-in user, checked by the host (``state.authenticate``): an API key, a Supabase
    JWT or the dashboard's session cookie with its CSRF token, and ``scope`` when given. The
    host's error (401/403) propagates and is rendered by the host. The host has checked the
    route's declaration already; this hands the view its user."""
    return _state().authenticate(scope)


def _body(allowed: dict[str, type]) -> dict:
    """The JSON object sent, parsed by the host (``state.json_body``: its 400/415 propagate),
    with only ``allowed`` fields of the right types; an empty body is ``{}``."""
    b = _state().json_body()
    if not isinstance(b, dict):
        raise HttpError(400, "invalid_request", "the body must be a JSON object")
    unknown = sorted(set(b) - set(allowed))
    if unknown:
        raise HttpError(400, "invalid_request", f"unknown field(s): {', '.join(unknown)}")
    for k, v in b.items():
        if v is not None and (not isinstance(v, allowed[k]) or isinstance(v, bool)):
            raise HttpError(400, "invalid_request", f"field {k} has the wrong type")
    return b


def _client(cfg: BillingConfig) -> stripe.StripeClient:
    missing = cfg.stripe_missing()
    if missing:
        raise HttpError(503, "billing_not_configured", missing)
    kw: dict[str, Any] = {"max_network_retries": 1}
    if cfg.api_base:  # LEVQOR_STRIPE_API_BASE: a local fake in tests, a proxy in production
        kw["base_addresses"] = {"api": cfg.api_base}
    return stripe.StripeClient(cfg.secret_key, **kw)


def _stripe_call(fn, params: dict, *required: str) -> Any:
    """Call Stripe; any failure, and an answer without the ``required`` string fields (a
    proxy's page, JSON that is not the object asked for), is a 502 ``stripe_error``."""
    try:
        obj = fn(params=params)
    except stripe.StripeError as e:
        body = e.json_body if isinstance(e.json_body, dict) else None
        if e.http_status and (body is None or not isinstance(body.get("error"), dict)):
            # not Stripe's error shape: a proxy or a load balancer answered (its page is not
            # repeated to the user)
            msg = f"Stripe's API answered HTTP {e.http_status} without a Stripe error"
        else:
            msg = "Stripe refused the request: " + (e.user_message or str(e) or "request failed")
        log.warning("Stripe refused a request: %s %s %s", type(e).__name__, e.http_status, e.code)
        raise HttpError(
            502,
            "stripe_error",
            msg.replace(_cfg().secret_key or "\0", "***"),
            {"stripe_code": e.code} if e.code else None,
        ) from None
    missing = [f for f in required if not _text_field(obj, f)]
    if missing:
        log.warning("Stripe answered without %s", ", ".join(missing))
        raise HttpError(
            502,
            "stripe_error",
            f"Stripe's API answered without the session's {', '.join(missing)}",
        )
    return obj


def _text_field(obj: Any, name: str) -> str | None:
    """``obj[name]`` when ``obj`` is a mapping holding a non-empty string there."""
    try:
        value = obj[name]
    except (KeyError, TypeError, IndexError):
        return None
    return value if isinstance(value, str) and value else None


def _url(value: str | None, default: str, field: str) -> str:
    if value is None:
        return default
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc or len(value) > 2000:
        raise HttpError(400, "invalid_request", f"{field} must be an http(s) URL")
    return value


# ------------------------------------------------------------------ routes
@bp.get("")
@signed_in()
def billing_info():
    user = _user(None)
    st, cfg = _state(), _cfg()
    if cfg.mode == "local":  # the month's plan credits show before the first run
        with st.ledger.transaction() as tx:
            if tx.lock_user(user["id"]) is not None:
                grant_monthly_credits(tx, cfg, user["id"], user.get("plan"), datetime.now(UTC))
    account = st.ledger.account(user["id"]) or {}
    plan = cfg.plan(user.get("plan"))
    return jsonify(
        {
            "billing": cfg.mode,
            "enforced": cfg.enforced,
            "stripe": {
                "configured": cfg.stripe_missing() is None,
                "webhook_configured": bool(cfg.webhook_secret),
                "missing": cfg.stripe_missing(),
            },
            "plan": plan.public(),
            "balance": st.ledger.balance(user["id"]),
            "runs_today": st.ledger.runs_today(user["id"]),
            "subscription_status": account.get("status"),
            "has_customer": bool(account.get("customer_id")),
            "plans": [p.public() for p in cfg.plans.values()],
            "packs": [{"name": p.name, "credits": p.credits} for p in cfg.packs.values()],
        }
    )


@bp.post("/checkout")
@requires("billing")
def checkout():
    user = _user()
    cfg = _cfg()
    b = _body({"plan": str, "pack": str, "success_url": str, "cancel_url": str})
    client = _client(cfg)
    if bool(b.get("plan")) == bool(b.get("pack")):
        raise HttpError(400, "invalid_request", "name either a plan or a credit pack")
    meta = {"levqor_user_id": user["id"]}
    params: dict[str, Any] = {
        "client_reference_id": user["id"],
        "success_url": _url(
            b.get("success_url"), f"{cfg.base_url}/?checkout=success", "success_url"
        ),
        "cancel_url": _url(
            b.get("cancel_url"), f"{cfg.base_url}/?checkout=cancelled", "cancel_url"
        ),
    }
    if b.get("plan"):
        plan = cfg.plans.get(b["plan"])
        if plan is None:
            raise HttpError(404, "not_found", f"no plan {b['plan']!r}")
        if not plan.price_id:
            raise HttpError(
                422,
                "not_purchasable",
                f"the {plan.name} plan has no Stripe price: "
                f"set LEVQOR_STRIPE_PRICE_{plan.name.upper()} or its price_id in LEVQOR_PLANS",
            )
        meta["plan"] = plan.name
        params.update(
            mode="subscription",
            line_items=[{"price": plan.price_id, "quantity": 1}],
            subscription_data={"metadata": dict(meta)},
        )
    else:
        pack = cfg.packs.get(b["pack"])
        if pack is None:
            raise HttpError(
                404, "not_found", f"no credit pack {b['pack']!r} (LEVQOR_CREDIT_PACKS)"
            )
        meta.update(pack=pack.name, credits=str(pack.credits))
        params.update(mode="payment", line_items=[{"price": pack.price_id, "quantity": 1}])
    params["metadata"] = meta
    account = _state().ledger.account(user["id"]) or {}
    if account.get("customer_id"):
        params["customer"] = account["customer_id"]
    else:
        params["customer_email"] = user["email"]
    session = _stripe_call(client.v1.checkout.sessions.create, params, "id", "url")
    st = _state()
    with st.ledger.transaction() as tx:
        tx.event(
            "checkout_started",
            user["id"],
            email=user["email"],
            props={
                "session": session.id,
                "mode": params["mode"],
                **({"plan": meta["plan"]} if "plan" in meta else {"pack": meta["pack"]}),
            },
        )
    resp = jsonify({"id": session.id, "url": session.url, "mode": params["mode"]})
    resp.status_code = 201
    return resp


@bp.post("/portal")
@requires("billing")
def portal():
    user = _user()
    cfg = _cfg()
    b = _body({"return_url": str})
    client = _client(cfg)
    account = _state().ledger.account(user["id"]) or {}
    if not account.get("customer_id"):
        raise HttpError(
            409,
            "no_customer",
            "you have no Stripe customer yet: buy a plan or "
            "credits through /api/v1/billing/checkout first",
        )
    session = _stripe_call(
        client.v1.billing_portal.sessions.create,
        {
            "customer": account["customer_id"],
            "return_url": _url(b.get("return_url"), cfg.base_url + "/", "return_url"),
        },
        "url",
    )
    return jsonify({"url": session.url})


@bp.post("/webhook")
@public("Stripe's signature (STRIPE_WEBHOOK_SECRET) is the credential")
def webhook():
    cfg = _cfg()
    if cfg.mode != "stripe" or not cfg.webhook_secret:
        raise HttpError(
            503,
            "billing_not_configured",
            "set STRIPE_WEBHOOK_SECRET (and STRIPE_SECRET_KEY) to receive Stripe webhooks",
        )
    payload = request.get_data(cache=False)  # the raw bytes, verified before anything is read
    try:
        stripe.Webhook.construct_event(
            payload, request.headers.get("Stripe-Signature"), cfg.webhook_secret, tolerance=300
        )
    except stripe.SignatureVerificationError:
        raise HttpError(
            400,
            "invalid_signature",
            "the Stripe-Signature header does not verify (forged or older than 300 s)",
        ) from None
    except ValueError:
        raise HttpError(
            400, "invalid_payload", "the webhook body is not a Stripe event"
        ) from None
    event = json.loads(payload)
    if not isinstance(event, dict) or not event.get("id") or not event.get("type"):
        raise HttpError(400, "invalid_payload", "the webhook body is not a Stripe event")
    outcome = handle_event(_state(), cfg, event)
    return jsonify({"received": True, **outcome})


_ERR = {
    "description": "Error",
    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
}
_OBJ = {"description": "OK", "content": {"application/json": {"schema": {"type": "object"}}}}


def _doc(
    summary: str,
    ok: str,
    *,
    scope: str | None = "billing",
    body: dict | None = None,
    public: bool = False,
    extra: tuple = (),
) -> dict:
    responses = {ok: _OBJ, **{c: _ERR for c in ("400", "401", "403", "503", *extra)}}
    op: dict[str, Any] = {"summary": summary, "tags": ["billing"], "responses": responses}
    if body:
        op["requestBody"] = {"required": False, "content": {"application/json": {"schema": body}}}
    if public:
        op["security"] = []
    elif scope:
        op["x-levqor-scope"] = scope
    return op


bp.openapi_paths = {  # type: ignore[attr-defined]
    "/api/v1/billing": {"get": _doc("Plan, balance and whether billing is on", "200", scope=None)},
    "/api/v1/billing/checkout": {
        "post": _doc(
            "Start a Stripe Checkout Session for a plan (subscription) or a credit pack",
            "201",
            body={
                "type": "object",
                "additionalProperties": False,
                "properties": {
                    "plan": {"type": "string"},
                    "pack": {"type": "string"},
                    "success_url": {"type": "string", "format": "uri"},
                    "cancel_url": {"type": "string", "format": "uri"},
                },
            },
            extra=("404", "422", "502"),
        )
    },
    "/api/v1/billing/portal": {
        "post": _doc(
            "Open the Stripe customer portal",
            "200",
            body={
                "type": "object",
                "additionalProperties": False,
                "properties": {"return_url": {"type": "string", "format": "uri"}},
            },
            extra=("409", "502"),
        )
    },
    "/api/v1/billing/webhook": {
        "post": {
            **_doc(
                "Stripe webhook (Stripe-Signature verified, 300 s tolerance)", "200", public=True
            ),
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": {"type": "object"}}},
            },
        }
    },
}
