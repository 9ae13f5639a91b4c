"""Pinned data: a step's output stored with the pipeline as sample data (n8n's data pinning).

The document's optional top-level ``pinned`` maps step ids to output objects. Pinning or
unpinning saves a new version of the pipeline; the runner ignores ``pinned`` (real runs never
use it): testing a step and the field picker read it, so later steps can be built before
earlier ones work.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from levqor_kernel.limits import json_size

from levqor_host.builder.document import find_step
from levqor_host.errors import ApiError

if TYPE_CHECKING:
    from levqor_host.services import Services
    from levqor_host.store.rows import PipelineRow

__all__ = ["pin", "save_problems", "unpin"]


def save_problems(state: Services, user_id: str, doc: Any) -> tuple[list[dict], list[dict]]:
    """(problems that keep ``doc`` from being saved, warnings). A credential the user has not
    added yet is a warning when saving (add it later), but blocks a run."""
    problems = state.runs.validate(user_id, doc)
    blocking = [
        p
        for p in problems
        if not (p["pointer"].endswith("/credential") and "does not exist" in p["message"])
    ]
    return blocking, [p for p in problems if p not in blocking]


def _pipeline(state: Services, user_id: str, pipeline_id: str) -> PipelineRow:
    p = state.store.pipelines.get(user_id, pipeline_id)
    if p is None:
        raise ApiError(404, "not_found", "pipeline not found")
    return p


def _save(state: Services, user_id: str, pipeline_id: str, doc: dict) -> PipelineRow:
    blocking, _ = save_problems(state, user_id, doc)
    if blocking:
        raise ApiError(422, "invalid_pipeline", "the pipeline is not valid", {"problems": blocking})
    before = state.store.pipelines.get(user_id, pipeline_id)
    p = state.triggers.save(
        user_id, doc, lambda: state.store.pipelines.update(user_id, pipeline_id, doc), pipeline=before
    )
    if p is None:
        raise ApiError(404, "not_found", "pipeline not found")
    state.export_pipeline(p)
    return p


def pin(
    state: Services, user_id: str, pipeline_id: str, step_id: str, output: dict[str, Any]
) -> PipelineRow:
    """Save a new version of the pipeline with ``output`` pinned for step ``step_id`` (404 for
    an unknown pipeline or step, 422 for an output over the executor's value limit)."""
    doc = _pipeline(state, user_id, pipeline_id)["doc"]
    if find_step(doc, step_id) is None:
        raise ApiError(404, "not_found", f"the pipeline has no step {step_id!r}")
    most = state.config.executor.max_value_bytes
    if json_size(output) > most:
        raise ApiError(
            422, "too_large", f"the pinned output is larger than {most} bytes as JSON"
        )
    pinned = dict(doc.get("pinned") or {})
    pinned[step_id] = output
    return _save(state, user_id, pipeline_id, {**doc, "pinned": pinned})


def unpin(state: Services, user_id: str, pipeline_id: str, step_id: str) -> PipelineRow:
    """Save a new version of the pipeline without step ``step_id``'s pinned output (404 when
    it has none)."""
    doc = _pipeline(state, user_id, pipeline_id)["doc"]
    pinned = dict(doc.get("pinned") or {})
    if step_id not in pinned:
        raise ApiError(404, "not_found", f"step {step_id!r} has no pinned output")
    del pinned[step_id]
    new = {k: v for k, v in doc.items() if k != "pinned"}
    if pinned:
        new["pinned"] = pinned
    return _save(state, user_id, pipeline_id, new)
