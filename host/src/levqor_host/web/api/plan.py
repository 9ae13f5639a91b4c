"""``POST /api/v1/plan``: the AI builder (plain words -> a stored, valid pipeline)."""

from __future__ import annotations

import time

from flask import Blueprint, current_app, jsonify

from levqor_host.errors import ApiError, check_fields
from levqor_host.planner.service import check_prompt, has_planner, plan
from levqor_host.security.auth import current_user, require
from levqor_host.web.api import pipeline_out
from levqor_host.web.api.idempotency import idempotent
from levqor_host.web.api.openapi import ERR, IDEMPOTENCY_KEY, _json, _op, _ref
from levqor_host.web.errors import json_body

bp = Blueprint("plan", __name__, url_prefix="/api/v1")

def check_rate(st, user_id: str) -> None:
    """LEVQOR_PLAN_RATE_PER_MINUTE plans per user and minute (429 with Retry-After).

    Counted in the app's Flask-Limiter storage (memory, or Redis shared by every worker with
    LEVQOR_RATE_LIMIT_STORAGE) with its strategy, so ``LEVQOR_RATE_LIMITS=off`` turns this
    limit off too.
    """
    per_minute = st.config.plan_rate_per_minute
    if per_minute <= 0:
        return
    fl = current_app.extensions["levqor_security"].limiter  # create_app always installs it
    if not getattr(fl, "enabled", True):
        return
    from limits import RateLimitItemPerMinute

    item = RateLimitItemPerMinute(per_minute)
    if fl.limiter.hit(item, "levqor-plan", user_id):
        return
    reset = fl.limiter.get_window_stats(item, "levqor-plan", user_id).reset_time
    retry = max(1, int(reset - time.time() + 0.999))
    raise ApiError(
        429,
        "rate_limited",
        f"at most {per_minute} plan requests per minute (LEVQOR_PLAN_RATE_PER_MINUTE); "
        "try again later",
        {"retry_after": retry},
        headers={"Retry-After": str(retry)},
    )


@bp.post("/plan")
@require("pipelines:write")
@idempotent()
def create_plan():
    st = current_app.extensions["levqor"]
    b = check_fields(
        json_body(st.config.max_json_depth),
        {"prompt": str, "name": str, "dry_run": bool},
        required=("prompt",),
    )
    check_prompt(b["prompt"], b.get("name"))
    user = current_user()
    if has_planner(st):
        check_rate(st, user["id"])
    out = plan(st, user, b["prompt"], name=b.get("name"), dry_run=bool(b.get("dry_run")))
    stored = out.pop("stored", None)
    if stored is None:
        return jsonify(out)
    resp = jsonify({**pipeline_out(stored), **out})
    resp.status_code = 201
    resp.headers["Location"] = f"/api/v1/pipelines/{stored['id']}"
    return resp


_WARNING = {
    "type": "object",
    "required": ["message"],
    "properties": {
        "message": {"type": "string"},
        "pointer": {"type": "string"},
        "step": {"type": "string"},
        "credential": {"type": ["string", "null"]},
        "connector": {"type": ["string", "null"]},
    },
}
_PLAN_FIELDS = {
    "dry_run": {"type": "boolean"},
    "name": {"type": "string"},
    "explanation": {"type": "string", "description": "the planner's explanation for the user"},
    "warnings": {
        "type": "array",
        "items": _WARNING,
        "description": "what the user still has to do, such as credentials to add",
    },
    "price": {"type": "integer", "description": "credits the plan cost"},
    "planner": {"type": "object", "description": "model, mode (strict|json), attempts"},
}

bp.openapi_paths = {
    "/api/v1/plan": {
        "post": _op(
            "Plan a pipeline from plain words (AI builder)",
            {
                "201": _json(
                    {
                        "allOf": [_ref("PipelineOut")],
                        "properties": _PLAN_FIELDS,
                    },
                    "The planned pipeline, stored as a new pipeline (version 1)",
                ),
                "200": _json(
                    {
                        "type": "object",
                        "required": ["dry_run", "pipeline", "explanation", "warnings"],
                        "properties": {**_PLAN_FIELDS, "pipeline": _ref("PipelineDocument")},
                    },
                    "dry_run: the plan, not stored",
                ),
                "402": ERR,
                "422": _json(
                    _ref("Error"),
                    "No valid pipeline after the repair rounds (details.problems), or the "
                    "model refused",
                ),
                "502": _json(_ref("Error"), "The model server failed or refused the key"),
                "503": _json(
                    _ref("Error"),
                    "No planner installed (install levqor-openai), OPENAI_API_KEY not set, or "
                    "the model server is rate limiting",
                ),
                "504": _json(_ref("Error"), "The model server timed out"),
            },
            body={
                "type": "object",
                "required": ["prompt"],
                "additionalProperties": False,
                "properties": {
                    "prompt": {"type": "string", "minLength": 1, "maxLength": 4000},
                    "name": {"type": "string", "minLength": 1, "maxLength": 200},
                    "dry_run": {"type": "boolean", "default": False},
                },
            },
            scope="pipelines:write",
            params=[IDEMPOTENCY_KEY],
            tag="pipelines",
        )
    }
}
