"""The analytics and referral routes: ``GET /api/v1/analytics/dashboard`` (usage over time;
for admins the funnel, active users and revenue), ``GET /api/v1/referrals`` and
``POST /api/v1/referrals/claim``. The numbers come from :mod:`levqor_host.growth.analytics`."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from flask import Blueprint, Response, current_app, jsonify
from pydantic import Field, create_model

from levqor_host.errors import ApiError
from levqor_host.growth.analytics import (
    UTM_FIELDS,
    ReferralError,
    admin_overview,
    claim_referral,
    user_usage,
)
from levqor_host.growth.analytics import referral_status as referral_summary
from levqor_host.web.access import current_user, require, signed_in
from levqor_host.web.api.idempotency import idempotent
from levqor_host.web.operations import (
    ERROR,
    IDEMPOTENCY_KEY,
    Body,
    answer,
    bounded_int,
    operation,
    query,
)

if TYPE_CHECKING:
    from levqor_host.services import Services

bp = Blueprint("analytics", __name__, url_prefix="/api/v1")


def _state() -> Services:
    return current_app.extensions["levqor"]


#: the code that referred the caller, and where they came from
ReferralClaim = create_model(
    "ReferralClaim",
    __base__=Body,
    code=(str, Field(min_length=1, max_length=32)),
    **{k: (str | None, Field(None, max_length=200)) for k in UTM_FIELDS},
)
_OBJ = {"type": "object"}


@bp.get("/analytics/dashboard")
@require("pipelines:read")
@operation(
    "Usage over time; for admins also the conversion funnel, active users and revenue",
    "Runs, steps and credits per day over the last days, with the balance; an admin also "
    "gets the funnel (sign-up, first pipeline, first run, paid), active users and revenue.",
    tag="analytics",
    responses={200: answer(_OBJ)},
    params=[
        query(
            "days",
            {"type": "integer", "minimum": 1, "maximum": 366},
            "how many days back (30)",
            parse=bounded_int("days", 1, 366),
            default=30,
        )
    ],
)
def dashboard(days: int) -> Response:
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
@operation(
    "Name the code that referred you (within the claim window after sign-up)",
    "Records who referred the caller; both get the referral bonus when the caller's first run "
    "succeeds (409 when already referred or past the window).",
    tag="referrals",
    body=ReferralClaim,
    responses={201: answer(_OBJ), 409: ERROR},
    params=[IDEMPOTENCY_KEY],
)
def referral_claim(body: Any) -> Response:
    st = _state()
    try:
        ref = claim_referral(
            st.ledger,
            current_user(),
            body.code,
            {k: getattr(body, k) for k in UTM_FIELDS},
            claim_days=st.config.growth.referral_claim_days,
        )
    except ReferralError as e:
        raise ApiError(e.status, e.code, e.message) from None
    resp = jsonify({"referral": ref, "bonus_on_first_success": st.config.growth.referral_bonus})
    resp.status_code = 201
    return resp


@bp.get("/referrals")
@signed_in()
@operation(
    "Your referral code and referrals",
    "The caller's code and link, how many users it referred and how many were rewarded, and "
    "the code that referred the caller.",
    tag="referrals",
    responses={200: answer(_OBJ)},
)
def referral_status() -> Response:
    st = _state()
    return jsonify(
        referral_summary(
            st.store.referrals,
            current_user(),
            base_url=st.config.base_url,
            bonus=st.config.growth.referral_bonus,
        )
    )
