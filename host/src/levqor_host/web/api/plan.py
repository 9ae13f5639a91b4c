"""``POST /api/v1/plan``: the AI builder (plain words -> a stored, valid pipeline)."""

from __future__ import annotations

import time
from typing import Any

from flask import Blueprint, Response, current_app, jsonify
from pydantic import BaseModel, Field

from levqor_host.errors import ApiError
from levqor_host.planner.service import MAX_PROMPT_CHARS, check_prompt, has_planner, plan
from levqor_host.web.access import current_user, require
from levqor_host.web.api.idempotency import idempotent
from levqor_host.web.api.pipelines import pipeline_out
from levqor_host.web.api.schemas import PipelineDocument, PipelineOut
from levqor_host.web.operations import ERROR, IDEMPOTENCY_KEY, Body, Error, answer, operation

bp = Blueprint("plan", __name__, url_prefix="/api/v1")


class PlanIn(Body):
    prompt: str = Field(min_length=1, max_length=MAX_PROMPT_CHARS)
    name: str | None = Field(None, min_length=1, max_length=200)
    dry_run: bool | None = False


class PlanWarning(BaseModel):
    message: str
    pointer: str | None = None
    step: str | None = None
    credential: str | None = None
    connector: str | None = None


class _Plan(BaseModel):
    dry_run: bool = False
    name: str | None = None
    explanation: str = Field("", description="the planner's explanation for the user")
    warnings: list[PlanWarning] = Field(
        [], description="what the user still has to do, such as credentials to add"
    )
    price: int | None = Field(None, description="credits the plan cost")
    planner: dict[str, Any] = Field({}, description="model, mode (strict|json), attempts")


class PlannedPipeline(PipelineOut, _Plan):
    """The planned pipeline, stored (version 1)."""


class DryRunPlan(_Plan):
    """The plan, not stored."""

    pipeline: PipelineDocument


def check_rate(st, user_id: str) -> None:
    """LEVQOR_PLAN_RATE_PER_MINUTE plans per user and minute (429 with Retry-After).

    Counted in the app's Flask-Limiter storage (memory, or Redis shared by every worker with
    LEVQOR_RATE_LIMIT_STORAGE) with its strategy, so ``LEVQOR_RATE_LIMITS=off`` turns this
    limit off too.
    """
    per_minute = st.config.planner.rate_per_minute
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
@operation(
    "Plan a pipeline from plain words (AI builder)",
    "The installed planner (levqor-openai) turns the prompt into a pipeline, repaired until "
    "it validates against the installed connectors; it is stored as a new pipeline unless "
    "dry_run. Priced and gated like a run (402), rate limited per user (429).",
    tag="pipelines",
    body=PlanIn,
    responses={
        201: answer(PlannedPipeline, "The planned pipeline, stored as a new pipeline (version 1)"),
        200: answer(DryRunPlan, "dry_run: the plan, not stored"),
        402: ERROR,
        422: answer(
            Error,
            "No valid pipeline after the repair rounds (details.problems), or the model refused",
        ),
        502: answer(Error, "The model server failed or refused the key"),
        503: answer(
            Error,
            "No planner installed (install levqor-openai), OPENAI_API_KEY not set, or the model "
            "server is rate limiting",
        ),
        504: answer(Error, "The model server timed out"),
    },
    params=[IDEMPOTENCY_KEY],
)
def create_plan(body: PlanIn) -> Response:
    st = current_app.extensions["levqor"]
    check_prompt(body.prompt, body.name)
    user = current_user()
    if has_planner(st):
        check_rate(st, user["id"])
    out = plan(st, user, body.prompt, name=body.name, dry_run=bool(body.dry_run))
    stored = out.pop("stored", None)
    if stored is None:
        return jsonify(out)
    resp = jsonify({**pipeline_out(stored), **out})
    resp.status_code = 201
    resp.headers["Location"] = f"/api/v1/pipelines/{stored['id']}"
    return resp
