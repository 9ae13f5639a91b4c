"""The analytics and referral routes: ``GET /api/v1/analytics/dashboard`` (usage over time;
for admins the funnel, active users and revenue), ``GET /api/v1/referrals`` and
``POST /api/v1/referrals/claim``. The numbers come from :mod:`levqor_host.growth.analytics`."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from flask import Blueprint, current_app, jsonify, request

from levqor_host.errors import ApiError, check_fields
from levqor_host.growth.analytics import (
    UTM_FIELDS,
    ReferralError,
    admin_overview,
    claim_referral,
    user_usage,
)
from levqor_host.growth.analytics import referral_status as referral_summary
from levqor_host.security.auth import current_user, require, signed_in
from levqor_host.web.api.idempotency import idempotent
from levqor_host.web.api.openapi import ERR, IDEMPOTENCY_KEY, _json, _op
from levqor_host.web.errors import json_body

if TYPE_CHECKING:
    from levqor_host.services import Services

bp = Blueprint("analytics", __name__, url_prefix="/api/v1")


def _state() -> Services:
    return current_app.extensions["levqor"]


@bp.get("/analytics/dashboard")
@require("pipelines:read")
def dashboard():
    raw = request.args.get("days", "30")
    try:
        days = int(raw)
    except ValueError:
        raise ApiError(400, "invalid_request", "days must be a whole number") from None
    if not 1 <= days <= 366:
        raise ApiError(400, "invalid_request", "days must be between 1 and 366")
    st = _state()
    user = current_user()
    out: dict[str, Any] = {
        "user": {"id": user["id"], "plan": user.get("plan")},
        "balance": st.ledger.balance(user["id"]),
        "usage": user_usage(st.store.events, user["id"], days),
    }
    if user.get("is_admin"):
        out["admin"] = admin_overview(st.store.events, days)
    return jsonify(out)


@bp.post("/referrals/claim")
@require("billing")
@idempotent()
def referral_claim():
    st = _state()
    b = check_fields(
        json_body(st.config.max_json_depth),
        {"code": str, **{k: str for k in UTM_FIELDS}},
        required=("code",),
    )
    try:
        ref = claim_referral(
            st.ledger,
            current_user(),
            b["code"],
            {k: b.get(k) for k in UTM_FIELDS},
            claim_days=st.config.referral_claim_days,
        )
    except ReferralError as e:
        raise ApiError(e.status, e.code, e.message) from None
    resp = jsonify({"referral": ref, "bonus_on_first_success": st.config.referral_bonus})
    resp.status_code = 201
    return resp


@bp.get("/referrals")
@signed_in()
def referral_status():
    st = _state()
    return jsonify(
        referral_summary(
            st.store.referrals,
            current_user(),
            base_url=st.config.base_url,
            bonus=st.config.referral_bonus,
        )
    )


_OBJ = {"type": "object"}
bp.openapi_paths = {  # type: ignore[attr-defined]
    "/api/v1/analytics/dashboard": {
        "get": _op(
            "Usage over time; for admins also the conversion funnel, active users and revenue",
            {"200": _json(_OBJ)},
            scope="pipelines:read",
            params=[
                {
                    "name": "days",
                    "in": "query",
                    "required": False,
                    "schema": {"type": "integer", "minimum": 1, "maximum": 366},
                }
            ],
            tag="analytics",
        )
    },
    "/api/v1/referrals": {
        "get": _op("Your referral code and referrals", {"200": _json(_OBJ)}, tag="referrals")
    },
    "/api/v1/referrals/claim": {
        "post": _op(
            "Name the code that referred you (within the claim window after sign-up)",
            {"201": _json(_OBJ), "409": ERR},
            scope="billing",
            params=[IDEMPOTENCY_KEY],
            body={
                "type": "object",
                "required": ["code"],
                "additionalProperties": False,
                "properties": {
                    "code": {"type": "string", "minLength": 1, "maxLength": 32},
                    **{k: {"type": "string", "maxLength": 200} for k in UTM_FIELDS},
                },
            },
            tag="referrals",
        )
    },
}
