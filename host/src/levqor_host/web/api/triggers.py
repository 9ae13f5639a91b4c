"""Switching a pipeline on and off (``/pipelines/<id>/enable``, ``/disable``) and testing an app
trigger (``/pipelines/<id>/trigger/test``, ``/triggers/test``): the trigger service does the work.

A pipeline is on unless switched off: off, its schedule does not fire and its app trigger is
neither polled nor registered upstream. Testing a trigger fetches items now with the owner's
credential and records nothing (no item is marked seen, no run starts), so later steps can be
built against real data before the pipeline is saved.
"""

from __future__ import annotations

from flask import Response, jsonify

from levqor_host.errors import ApiError
from levqor_host.web.access import current_user, require
from levqor_host.web.api.blueprint import bp, not_found, state
from levqor_host.web.api.pipelines import pipeline_out
from levqor_host.web.api.schemas import AppTriggerIn, PipelineOut, TriggerTestOut
from levqor_host.web.operations import ERROR, answer, operation

_SWITCH = (
    " Off, its schedule does not fire and its app trigger is neither polled nor registered "
    "upstream (an instant trigger's webhook is removed); on again, a polling trigger's first "
    "check records a new baseline, so events from while it was off start no run."
)


def _switch(pipeline_id: str, enabled: bool) -> Response:
    """The pipeline switched on or off by the trigger service (404 when it is not the caller's
    or archived; a registration the connector refuses answers its 4xx and leaves it off)."""
    p = state().triggers.set_enabled(current_user(), pipeline_id, enabled)
    return jsonify(pipeline_out(p))


@bp.post("/pipelines/<pipeline_id>/enable")
@require("pipelines:write")
@operation(
    "Switch a pipeline on",
    "Its trigger starts runs again (already on: nothing changes)." + _SWITCH,
    tag="pipelines",
    responses={200: answer(PipelineOut), 409: ERROR, 422: ERROR, 503: ERROR},
)
def enable_pipeline(pipeline_id: str) -> Response:
    return _switch(pipeline_id, True)


@bp.post("/pipelines/<pipeline_id>/disable")
@require("pipelines:write")
@operation(
    "Switch a pipeline off",
    "Its trigger starts no run until it is switched on (already off: nothing changes); Run "
    "now and the API still start it." + _SWITCH,
    tag="pipelines",
    responses={200: answer(PipelineOut)},
)
def disable_pipeline(pipeline_id: str) -> Response:
    return _switch(pipeline_id, False)


_TEST = (
    " A polling trigger is polled now with the owner's credential as if for the first time "
    "(source upstream: the newest few items' data, newest first); an instant trigger answers "
    "its connector's sample item (source sample). Nothing is recorded: no item is marked seen "
    "and no run starts. 422 invalid_trigger with problems (pointers under /trigger) when the "
    "trigger is not valid; 422 trigger_failed when the upstream refuses, 503 when it cannot "
    "be reached."
)


@bp.post("/pipelines/<pipeline_id>/trigger/test")
@require("runs:execute")
@operation(
    "Test a pipeline's app trigger",
    "Fetch sample items of the saved pipeline's app trigger." + _TEST,
    tag="pipelines",
    responses={200: answer(TriggerTestOut), 422: ERROR, 503: ERROR},
)
def test_pipeline_trigger(pipeline_id: str) -> Response:
    st, user = state(), current_user()
    p = st.store.pipelines.get(user["id"], pipeline_id)
    if p is None:
        raise not_found("pipeline")
    trigger = (p.get("doc") or {}).get("trigger")
    if not isinstance(trigger, dict) or trigger.get("type") != "app":
        raise ApiError(422, "not_an_app_trigger", "the pipeline's trigger is not an app trigger")
    return jsonify(st.triggers.test(user, trigger))


@bp.post("/triggers/test")
@require("runs:execute")
@operation(
    "Test an app trigger before saving it",
    "Fetch sample items of an app trigger that is not saved yet (the builder's Test trigger)."
    + _TEST,
    tag="pipelines",
    body=AppTriggerIn,
    responses={200: answer(TriggerTestOut), 422: ERROR, 503: ERROR},
)
def test_trigger(body: AppTriggerIn) -> Response:
    return jsonify(state().triggers.test(current_user(), body.trigger))
