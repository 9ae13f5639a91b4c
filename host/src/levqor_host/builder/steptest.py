"""Test one step (or one construct, with what is nested in it) alone, recording nothing.

The step runs with the trigger data and step outputs of one of the pipeline's past runs, or
with its pinned sample outputs (or both: pinned outputs win), through the kernel's
``Runner.test_step`` and the owner's credentials. Inside a loop it sees the first item of each
enclosing loop. An action that writes upstream really writes: the answer says so
(``writes``, ``warning``), and the builder says so before it is tested.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from levqor_kernel.errors import LevqorError
from levqor_kernel.templating import render

from levqor_host.builder.document import Placed, find_step, writing_actions
from levqor_host.errors import ApiError

if TYPE_CHECKING:
    from levqor_host.services import Services

__all__ = ["try_step"]

WARNING = (
    "this step writes upstream ({actions}): testing it really sends, creates or changes "
    "something there"
)


def _document(state: Services, user_id: str, pipeline_id: str, version: int | None) -> dict:
    if version is None:
        p = state.store.pipelines.get(user_id, pipeline_id)
        if p is None:
            raise ApiError(404, "not_found", "pipeline not found")
        return p["doc"]
    v = state.store.pipelines.get_version(user_id, pipeline_id, version)
    if v is None:
        raise ApiError(404, "not_found", "pipeline version not found")
    return v["doc"]


def _past_run(state: Services, user_id: str, pipeline_id: str, run_id: str) -> tuple[Any, dict]:
    """(trigger data, {step id: output}) of the user's run of this pipeline (404 otherwise):
    outputs outside loops and in each loop's first item."""
    run = state.store.runs.get(user_id, run_id, with_steps=False)
    if run is None or run["pipeline_id"] != pipeline_id:
        raise ApiError(404, "not_found", "run not found")
    outputs: dict[str, Any] = {}
    for path, output in state.store.steps.sample_outputs(run_id).items():
        outputs.setdefault(path.rsplit(".", 1)[-1], output)
    return run.get("input"), outputs


def _first_item(
    state: Services, doc: Any, placed: Placed, trigger: Any, outputs: Mapping[str, Any]
) -> tuple[Any, int]:
    """The ``item`` (and ``index`` 0) a step inside loops sees: the first of the innermost
    loop's items, each loop's items rendered with the first item of the loops around it."""
    item: Any = None
    steps = {"steps": {k: {"output": v, "status": "succeeded"} for k, v in outputs.items()}}
    for loop_id in placed.loops:
        loop = find_step(doc, loop_id)
        scope = {"trigger": trigger, **steps, "item": item, "index": 0, "run": {"id": "test"}}
        try:
            items = render(loop.step.get("items") if loop else None, scope,
                           max_bytes=state.config.executor.max_value_bytes)  # fmt: skip
        except LevqorError:
            return None, 0
        item = items[0] if isinstance(items, list) and items else None
    return item, 0


def _credentials(state: Services, user_id: str) -> Callable[[str | None, str], dict | None]:
    """The runner's credential resolver: the owner's credentials from the vault (an OAuth2
    credential refreshed before it expires and after a 401)."""
    if state.oauth is not None:
        return state.oauth.resolver(user_id)

    def credentials(name: str | None, connector: str) -> dict | None:
        if not name:
            return None
        found = state.store.credentials.values(user_id, name)
        if found is None or found[0] != connector:
            return None
        return found[1]

    return credentials


def try_step(
    state: Services,
    user_id: str,
    pipeline_id: str,
    step_id: str,
    *,
    run_id: str | None = None,
    trigger: Any = None,
    use_pinned: bool = False,
    version: int | None = None,
) -> dict[str, Any]:
    """Run step ``step_id`` of the user's pipeline alone: ``{"status", "input", "output",
    "error", "writes"}`` (``warning`` when it writes upstream, ``wait`` for a wait or a
    sub-pipeline, which answers ``waiting`` without waiting). 404 for a pipeline, version,
    run or step that is not the user's."""
    doc = _document(state, user_id, pipeline_id, version)
    placed = find_step(doc, step_id)
    if placed is None:
        raise ApiError(404, "not_found", f"the pipeline has no step {step_id!r}")
    data, outputs = _past_run(state, user_id, pipeline_id, run_id) if run_id else (None, {})
    if use_pinned:
        outputs.update(doc.get("pinned") or {})
    if trigger is None:
        trigger = data if data is not None else {}
    item, index = _first_item(state, doc, placed, trigger, outputs)
    result = state.runner.test_step(
        doc, step_id, trigger=trigger, outputs=outputs, item=item, index=index,
        credentials=_credentials(state, user_id),
    )  # fmt: skip
    written = writing_actions(state.pm.catalog, placed.step)
    result["writes"] = bool(written)
    if written:
        result["warning"] = WARNING.format(actions=", ".join(written))
    return result
