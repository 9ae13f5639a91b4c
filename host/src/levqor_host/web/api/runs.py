"""Runs: start one (``/run``), list, read, cancel and retry them (``/runs``)."""

from __future__ import annotations

from flask import Response, jsonify

from levqor_host.errors import ApiError
from levqor_host.store.runs import FINAL_RUN_STATUSES, RUN_STATUSES
from levqor_host.web.access import current_user, require
from levqor_host.web.api.blueprint import bp, iso, not_found, state
from levqor_host.web.api.idempotency import idempotent, request_key
from levqor_host.web.api.schemas import Run, RunAccepted, RunIn, RunList
from levqor_host.web.operations import (
    ERROR,
    IDEMPOTENCY_KEY,
    answer,
    bounded_int,
    one_of,
    operation,
    query,
)


def _step_out(s: dict) -> dict:
    return {
        "id": s["step_id"],
        "position": s["position"],
        "connector": s["connector"],
        "action": s["action"],
        "status": s["status"],
        "attempts": s["attempts"],
        "input": s.get("input"),
        "output": s.get("output"),
        "error": s.get("error"),
        "started_at": iso(s.get("started_at")),
        "finished_at": iso(s.get("finished_at")),
    }


def run_out(r: dict) -> dict:
    """The API's view of a run (``Run``), with its steps when ``r`` has them."""
    out = {
        "id": r["id"],
        "pipeline_id": r["pipeline_id"],
        "version": r["version"],
        "status": r["status"],
        "trigger": r.get("trigger"),
        "input": r.get("input"),
        "error": r.get("error"),
        "retry_of": r.get("retry_of"),
        "cancel_requested": bool(r.get("cancel_requested")),
        "created_at": iso(r.get("created_at")),
        "started_at": iso(r.get("started_at")),
        "finished_at": iso(r.get("finished_at")),
    }
    if "steps" in r:
        out["steps"] = [_step_out(s) for s in r["steps"]]
    return out


def _wait(raw: str) -> float:
    try:
        w = float(raw)
    except ValueError:
        raise ValueError("wait must be a number of seconds") from None
    most = state().config.web.run_wait_max
    if not 0 <= w <= most:
        raise ValueError(f"wait must be between 0 and {most:g}")
    return w


WAIT = query(
    "wait",
    {"type": "number", "minimum": 0, "maximum": 60},
    "seconds to wait for the run to finish (at most LEVQOR_RUN_WAIT_MAX)",
    parse=_wait,
)
_STARTED = {
    202: answer(RunAccepted, "Queued (or still running after wait)"),
    200: answer(Run, "Finished within wait"),
    409: ERROR,
    422: ERROR,
}


def _answer_run(run: dict, wait: float | None, created: bool) -> Response:
    user = current_user()
    if wait:
        run = state().runs.wait(user["id"], run["id"], wait) or run
        full = state().store.runs.get(user["id"], run["id"]) or run
        resp = jsonify(run_out(full))
        resp.status_code = 200 if run["status"] in FINAL_RUN_STATUSES else 202
    else:
        resp = jsonify({"run_id": run["id"], "status": run["status"], "created": created})
        resp.status_code = 202
    resp.headers["Location"] = f"/api/v1/runs/{run['id']}"
    return resp


@bp.post("/run")
@require("runs:execute")
@idempotent(body_field="idempotency_key")
@operation(
    "Start a run",
    "Queue a run of the pipeline's latest version (or version) with input as trigger data, "
    "after the billing gate (402). With wait, answer the finished run (200) or, still "
    "running, 202; Location names the run either way.",
    tag="runs",
    body=RunIn,
    responses={**_STARTED, 402: ERROR},
    params=[WAIT, IDEMPOTENCY_KEY],
)
def run_pipeline(body: RunIn, wait: float | None) -> Response:
    key = request_key("idempotency_key")  # the header or the field: also the run's own key
    user = current_user()
    st = state()
    p = st.store.pipelines.get(user["id"], body.pipeline_id)
    if p is None or p.get("archived"):
        raise not_found("pipeline")
    run, created = st.runs.start(
        user, p, body.input, trigger="manual", idempotency_key=key, version=body.version
    )
    return _answer_run(run, wait, created)


@bp.get("/runs")
@require("pipelines:read")
@operation(
    "List runs (newest first, cursor pagination)",
    "The caller's runs, filtered by pipeline and status; pass next_cursor back as cursor for "
    "the next page.",
    tag="runs",
    responses={200: answer(RunList)},
    params=[
        query("pipeline_id", {"type": "string"}, parse=str),
        query("status", {"enum": list(RUN_STATUSES)}, parse=one_of("status", RUN_STATUSES)),
        query(
            "limit",
            {"type": "integer", "minimum": 1, "maximum": 200},
            parse=bounded_int("limit", 1, 200, "limit must be an integer"),
            default=50,
        ),
        query("cursor", {"type": "string"}, parse=str),
    ],
)
def list_runs(pipeline_id: str | None, status: str | None, limit: int, cursor: str | None) -> Response:
    try:
        items, next_cursor = state().store.runs.list(
            current_user()["id"], pipeline_id=pipeline_id, status=status, limit=limit, cursor=cursor
        )
    except ValueError:
        raise ApiError(400, "invalid_request", "invalid cursor") from None
    return jsonify({"items": [run_out(r) for r in items], "next_cursor": next_cursor})


@bp.get("/runs/<run_id>")
@require("pipelines:read")
@operation(
    "Get a run with its steps",
    "The run, its input and error, and each step's attempts, input, output and error.",
    tag="runs",
    responses={200: answer(Run)},
)
def get_run(run_id: str) -> Response:
    r = state().store.runs.get(current_user()["id"], run_id)
    if r is None:
        raise not_found("run")
    return jsonify(run_out(r))


@bp.post("/runs/<run_id>/cancel")
@require("runs:execute")
@operation(
    "Cancel a run",
    "Ask the run to stop: a queued run is cancelled at once, a running one after its current "
    "step (cancel_requested shows the request).",
    tag="runs",
    responses={200: answer(Run)},
)
def cancel_run(run_id: str) -> Response:
    r = state().runs.cancel(current_user()["id"], run_id)
    if r is None:
        raise not_found("run")
    return jsonify(run_out(r))


@bp.post("/runs/<run_id>/retry")
@require("runs:execute")
@idempotent()
@operation(
    "Retry a failed run from its failed step",
    "A new run of the same version that reuses the outputs of the steps that succeeded (409 "
    "unless the run failed or was cancelled).",
    tag="runs",
    responses=_STARTED,
    params=[WAIT, IDEMPOTENCY_KEY],
)
def retry_run(run_id: str, wait: float | None) -> Response:
    run, created = state().runs.retry(current_user(), run_id)
    return _answer_run(run, wait, created)
