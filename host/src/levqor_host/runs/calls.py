"""A caller's pipelines as things to call (``state.pipeline_calls``, the kernel's
:class:`~levqor_kernel.host.PipelineCalls`): what the MCP server offers as tools and runs when
a tool is called. A call is a run like any other (:meth:`RunService.start`: validated with the
input schema, gated, billed, recorded), started with the run's ``trigger`` naming its source,
then waited for."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from levqor_host.errors import ApiError
from levqor_host.store.runs import FINAL_RUN_STATUSES

if TYPE_CHECKING:
    from levqor_host.runs.service import RunService
    from levqor_host.store import Store

#: the trigger kinds whose pipelines a client may start (the others start themselves)
CALLABLE_TRIGGERS = ("manual", "webhook")


def _unauthorized(message: str) -> ApiError:
    return ApiError(
        401, "unauthorized", message, headers={"WWW-Authenticate": 'Bearer realm="levqor"'}
    )


def _trigger_kind(doc: Any) -> str | None:
    trigger = doc.get("trigger") if isinstance(doc, dict) else None
    return trigger.get("type") if isinstance(trigger, dict) else None


def call_answer(run: dict) -> dict[str, Any]:
    """What a caller learns of a run: its id, status, output and (redacted) error."""
    return {
        "run_id": run["id"],
        "status": run["status"],
        "output": run.get("output"),
        "error": run.get("error"),
        "final": run["status"] in FINAL_RUN_STATUSES,
    }


class PipelineCalls:
    """Handed the store and the run service; ``start_workers`` (set by the wiring) starts the
    embedded executor in this process and says whether runs will execute."""

    def __init__(self, store: Store, runs: RunService) -> None:
        self.store = store
        self.runs = runs
        self.start_workers_fn: Callable[[], bool] = lambda: False

    def user_for_key(self, api_key: str, scope: str | None = None) -> dict[str, Any]:
        found = self.store.api_keys.authenticate(api_key) if isinstance(api_key, str) else None
        if found is None:
            raise _unauthorized("invalid or revoked API key")
        user, key = found
        scopes = set(key.get("scopes") or ())
        if scope and scope not in scopes and "admin" not in scopes:
            raise ApiError(
                403,
                "insufficient_scope",
                f"this API key lacks the scope {scope!r}",
                {"required_scope": scope},
            )
        return dict(user)

    def _callable(self, pipeline: dict | None) -> bool:
        return (
            pipeline is not None
            and not pipeline.get("archived")
            and bool(pipeline.get("enabled", True))
            and _trigger_kind(pipeline.get("doc")) in CALLABLE_TRIGGERS
        )

    def callable_pipelines(self, user_id: str) -> list[dict[str, Any]]:
        out = []
        for p in self.store.pipelines.list(user_id):
            if not self._callable(p):
                continue
            doc = p["doc"]
            schema = doc.get("input")
            out.append(
                {
                    "id": p["id"],
                    "name": p["name"],
                    "description": doc.get("description") or None,
                    "input": schema if isinstance(schema, dict) else None,
                    "trigger": _trigger_kind(doc),
                    "version": p["version"],
                }
            )
        return out

    def call_pipeline(
        self,
        user: dict[str, Any],
        pipeline_id: str,
        input: Any,
        *,
        trigger: str,
        wait_seconds: float,
        idempotency_key: str | None = None,
    ) -> dict[str, Any]:
        pipeline = self.store.pipelines.get(user["id"], pipeline_id)
        if not self._callable(pipeline):
            raise ApiError(404, "not_found", "no such pipeline to call (or it is switched off)")
        assert pipeline is not None
        # RunService.start checks the input against the document's schema (422 invalid_input)
        run, _created = self.runs.start(
            user, pipeline, input, trigger=trigger, idempotency_key=idempotency_key
        )
        if wait_seconds > 0 and run["status"] not in FINAL_RUN_STATUSES:
            run = self.runs.wait(user["id"], run["id"], wait_seconds) or run
        return call_answer(run)

    def run_status(self, user_id: str, run_id: str) -> dict[str, Any] | None:
        if not isinstance(run_id, str) or not run_id or len(run_id) > 64:
            return None
        run = self.store.runs.get(user_id, run_id, with_steps=False)
        return None if run is None else call_answer(run)

    def start_workers(self) -> bool:
        return self.start_workers_fn()
