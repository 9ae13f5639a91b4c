"""The builder's tools: pinned sample data (``/pipelines/<id>/pinned/<step>``), the field
picker (``/pipelines/<id>/fields``) and testing a step (``/pipelines/<id>/steps/<step>/test``)."""

from __future__ import annotations

from flask import Response, jsonify

from levqor_host.builder import pinned
from levqor_host.builder.fields import field_sources
from levqor_host.builder.steptest import try_step
from levqor_host.errors import MAX_VERSION
from levqor_host.web.access import current_user, require
from levqor_host.web.api.blueprint import bp, not_found, state
from levqor_host.web.api.idempotency import idempotent
from levqor_host.web.api.pipelines import pipeline_out
from levqor_host.web.api.schemas import FieldList, PinIn, PipelineOut, StepTestIn, StepTestOut
from levqor_host.web.operations import (
    ERROR,
    IDEMPOTENCY_KEY,
    answer,
    bounded_int,
    operation,
    query,
)

_PINNED = (
    " Pinned outputs are stored with the pipeline (a new version) and never used by real runs: "
    "testing a step with use_pinned and the field picker read them."
)


@bp.put("/pipelines/<pipeline_id>/pinned/<step_id>")
@require("pipelines:write")
@operation(
    "Pin a step's output",
    "Store output as the step's sample data." + _PINNED,
    tag="pipelines",
    body=PinIn,
    responses={200: answer(PipelineOut), 422: ERROR},
)
def pin_output(pipeline_id: str, step_id: str, body: PinIn) -> Response:
    p = pinned.pin(state(), current_user()["id"], pipeline_id, step_id, body.output)
    return jsonify(pipeline_out(p))


@bp.delete("/pipelines/<pipeline_id>/pinned/<step_id>")
@require("pipelines:write")
@operation(
    "Unpin a step's output",
    "Remove the step's pinned sample data (404 when it has none)." + _PINNED,
    tag="pipelines",
    responses={200: answer(PipelineOut), 422: ERROR},
)
def unpin_output(pipeline_id: str, step_id: str) -> Response:
    p = pinned.unpin(state(), current_user()["id"], pipeline_id, step_id)
    return jsonify(pipeline_out(p))


@bp.get("/pipelines/<pipeline_id>/fields")
@require("pipelines:read")
@operation(
    "Fields to pick from",
    "For the trigger and each step in document order (and each loop's item), a sample of its "
    "output (the pinned output, else the output in one of the last runs, else one made from "
    "the action's output schema) flattened to template references with their sample values.",
    tag="pipelines",
    responses={200: answer(FieldList)},
    params=[
        query(
            "version",
            {"type": "integer", "minimum": 1, "maximum": MAX_VERSION},
            "a version of the pipeline (default: the latest)",
            parse=bounded_int("version", 1, MAX_VERSION),
        )
    ],
)
def list_fields(pipeline_id: str, version: int | None) -> Response:
    st, user_id = state(), current_user()["id"]
    if version is None:
        found = st.store.pipelines.get(user_id, pipeline_id)
        doc, number = (found["doc"], found["version"]) if found else (None, 0)
    else:
        v = st.store.pipelines.get_version(user_id, pipeline_id, version)
        doc, number = (v["doc"], v["version"]) if v else (None, 0)
    if doc is None:
        raise not_found("pipeline" if version is None else "pipeline version")
    sources = field_sources(st, user_id, pipeline_id, doc)
    return jsonify({"pipeline_id": pipeline_id, "version": number, "sources": sources})


@bp.post("/pipelines/<pipeline_id>/steps/<step_id>/test")
@require("runs:execute")
@idempotent()
@operation(
    "Test one step",
    "Run the step (or the construct, with its steps) alone with the trigger data and step "
    "outputs of a past run of the pipeline (run_id), or its pinned outputs (use_pinned), and "
    "the owner's credentials; nothing is recorded. Answers the rendered input and the output "
    "or error; a wait answers waiting without waiting. A step whose action writes upstream "
    "(the catalog's writes) really writes: writes is true and warning says so.",
    tag="pipelines",
    body=StepTestIn,
    responses={200: answer(StepTestOut), 422: ERROR},
    params=[IDEMPOTENCY_KEY],
)
def test_step(pipeline_id: str, step_id: str, body: StepTestIn) -> Response:
    out = try_step(
        state(),
        current_user()["id"],
        pipeline_id,
        step_id,
        run_id=body.run_id,
        trigger=body.trigger,
        use_pinned=body.use_pinned,
        version=body.version,
    )
    return jsonify(out)
