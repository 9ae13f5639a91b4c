"""Runs: start one (``/run``), list, read, cancel and retry them (``/runs``)."""

from __future__ import annotations

from flask import Response, jsonify

from levqor_host.errors import ApiError
from levqor_host.store.runs import FINAL_RUN_STATUSES, RUN_STATUSES
from levqor_host.web.access import current_user, require
from levqor_host.web.api.blueprint import bp, iso, not_found, state
from levqor_host.web.api.idempotency import idempotent, request_key
from levqor_host.web.api.schemas import ApprovalIn, LoopPage, Run, RunAccepted, RunIn, RunList
from levqor_host.web.errors import json_body
from levqor_host.web.operations import (
    ERROR,
    IDEMPOTENCY_KEY,
    answer,
    bounded_int,
    one_of,
    operation,
    query,
)


def step_out(s: dict) -> dict:
    """The API's view of a step record (``Step``), with what is nested under it."""
    out = {
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
        "scope": s.get("scope"),
        "usage": s.get("usage"),
    }
    if s.get("children"):
        out["children"] = [step_out(c) for c in s["children"]]
    if "items" in s:
        items = s["items"]
        page = items["page"]
        out["items"] = {**items, "page": None if page is None else _items_out(page)}
    return out


def _items_out(items: list[dict]) -> list[dict]:
    return [{**i, "steps": [step_out(x) for x in i["steps"]]} for i in items]


#: what a waiting run's ``wait`` shows (never its nonce: the signed links carry it)
_WAIT_FIELDS = ("kind", "step", "since", "until", "expires_at", "pipeline", "child_run_id")


def wait_out(r: dict) -> dict | None:
    """What a waiting run waits for (``RunWait``), None when it waits for nothing."""
    wait = r.get("wait")
    if r.get("status") != "waiting" or not isinstance(wait, dict):
        return None
    out = {k: wait.get(k) for k in _WAIT_FIELDS if wait.get(k) is not None}
    approval = wait.get("approval")
    if isinstance(approval, dict):
        out["message"] = approval.get("message")
        out["on_timeout"] = approval.get("on_timeout") or "reject"
    return out


def run_out(r: dict, steps: list[dict] | None = None, usage: dict | None = None) -> dict:
    """The API's view of a run (``Run``), with ``steps`` (the tree of ``store.steps.tree``)
    when given and ``usage`` (its tokens, ``store.steps.usage``); a run waiting for an
    approval carries its signed approve and reject URLs."""
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
        "output": r.get("output"),
        "parent_run_id": r.get("parent_run_id"),
        "parent_step": r.get("parent_step"),
        "wait": wait_out(r),
        "usage": usage,
    }
    if out["wait"] is not None and out["wait"]["kind"] == "approval":
        flow = state().runs.flow
        out["approve_url"] = flow.link(r, "approve")
        out["reject_url"] = flow.link(r, "reject")
    if steps is not None:
        out["steps"] = [step_out(s) for s in steps]
    return out


def run_with_steps(user_id: str, run_id: str, items_limit: int = 20) -> dict:
    """The user's run with its steps as a tree (404 when it is not theirs)."""
    st = state()
    r = st.store.runs.get(user_id, run_id, with_steps=False)
    if r is None:
        raise not_found("run")
    tree = st.store.steps.tree(run_id, items_limit=items_limit)
    out = run_out(r, tree, st.store.steps.usage([run_id]).get(run_id))
    out["children"] = st.store.waits.children(run_id)
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
        resp = jsonify(run_with_steps(user["id"], run["id"]))
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
    "running or waiting (a timer, an approval, a child run), 202 with the run as it is "
    "then; Location names the run either way.",
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
    usage = state().store.steps.usage([r["id"] for r in items])
    return jsonify(
        {"items": [run_out(r, usage=usage.get(r["id"])) for r in items], "next_cursor": next_cursor}
    )


ITEMS_LIMIT = query(
    "items_limit",
    {"type": "integer", "minimum": 1, "maximum": 200},
    "how many items of each loop to include (the first page)",
    parse=bounded_int("items_limit", 1, 200),
    default=20,
)


@bp.get("/runs/<run_id>")
@require("pipelines:read")
@operation(
    "Get a run with its steps",
    "The run, its input, output and error, what it waits for (with the signed approve and "
    "reject URLs of an approval), its parent and child runs, and its steps as a tree: the "
    "top-level steps in document order, a construct's steps under it (children), a loop's "
    "items paged (the first page and counts by status; the next pages from "
    "/runs/{run_id}/steps/{loop}/items).",
    tag="runs",
    responses={200: answer(Run)},
    params=[ITEMS_LIMIT],
)
def get_run(run_id: str, items_limit: int) -> Response:
    return jsonify(run_with_steps(current_user()["id"], run_id, items_limit))


def _cursor(raw: str) -> int:
    if not raw.isdigit() or len(raw) > 9:
        raise ValueError("invalid cursor")
    return int(raw)


@bp.get("/runs/<run_id>/steps/<loop>/items")
@require("pipelines:read")
@operation(
    "Page a loop's items",
    "The items of a for_each step (its path, such as each or outer[2].inner) in index order, "
    "each with its status and its steps, and the counts by status; pass next back as cursor.",
    tag="runs",
    responses={200: answer(LoopPage)},
    params=[
        query("cursor", {"type": "string"}, parse=_cursor),
        query(
            "limit",
            {"type": "integer", "minimum": 1, "maximum": 200},
            parse=bounded_int("limit", 1, 200),
            default=50,
        ),
    ],
)
def list_loop_items(run_id: str, loop: str, cursor: int | None, limit: int) -> Response:
    st = state()
    if st.store.runs.get(current_user()["id"], run_id, with_steps=False) is None:
        raise not_found("run")
    page = st.store.steps.items(run_id, loop, after=cursor, limit=limit)
    if page is None:
        raise not_found("loop")
    return jsonify({**page, "items": _items_out(page["items"])})


def _decide(run_id: str, approved: bool) -> Response:
    data = json_body(state().config.web.max_json_depth, required=False)
    if not isinstance(data, dict):
        raise ApiError(400, "invalid_request", "the body must be a JSON object")
    try:
        body = ApprovalIn.model_validate(data)
    except ValueError as e:
        raise ApiError(400, "invalid_request", f"invalid body: {str(e).splitlines()[-1]}") from None
    user = current_user()
    state().runs.flow.approve(
        user["id"], run_id, approved, by=user.get("email") or user["id"], comment=body.comment
    )
    return jsonify(run_with_steps(user["id"], run_id))


_APPROVAL_BODY = {
    "required": False,
    "content": {"application/json": {"schema": ApprovalIn.model_json_schema()}},
}


@bp.post("/runs/<run_id>/approve")
@require("runs:execute")
@operation(
    "Approve the approval a run waits for",
    "The run's approval step succeeds ({approved: true, by, at, comment}) and the run goes "
    "on. 409 when the run waits for no approval, or it was decided already (exactly one "
    "decision wins, from any host).",
    tag="runs",
    responses={200: answer(Run), 409: ERROR},
    request_body=_APPROVAL_BODY,
)
def approve_run(run_id: str) -> Response:
    return _decide(run_id, True)


@bp.post("/runs/<run_id>/reject")
@require("runs:execute")
@operation(
    "Reject the approval a run waits for",
    "The run's approval step fails with a Rejected error (its on_error applies). 409 when "
    "the run waits for no approval, or it was decided already.",
    tag="runs",
    responses={200: answer(Run), 409: ERROR},
    request_body=_APPROVAL_BODY,
)
def reject_run(run_id: str) -> Response:
    return _decide(run_id, False)


@bp.post("/runs/<run_id>/cancel")
@require("runs:execute")
@operation(
    "Cancel a run",
    "Ask the run to stop: a queued or waiting run is cancelled at once, a running one after "
    "its current step (cancel_requested shows the request).",
    tag="runs",
    responses={200: answer(Run)},
)
def cancel_run(run_id: str) -> Response:
    user_id = current_user()["id"]
    if state().runs.cancel(user_id, run_id) is None:
        raise not_found("run")
    return jsonify(run_with_steps(user_id, run_id))


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
