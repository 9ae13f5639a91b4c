"""The store-backed recorder of the kernel's runner: every transition of a run, persisted."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from levqor_kernel.ai import usage_of

if TYPE_CHECKING:
    from levqor_kernel.catalog import Catalog

    from levqor_host.metrics import Metrics
    from levqor_host.store import Store

#: actions with no effect outside the run: running one again after a crash sends nothing
#: anywhere, so they need no "running" row written before they run
PURE_ACTIONS = frozenset({("core", "transform"), ("core", "filter")})
#: the most finished rows of pure steps held back before they are written
MAX_HELD_ROWS = 500


def now() -> datetime:
    return datetime.now(UTC)


class StoreRecorder:
    """Persists every runner transition through the Store, in as few write transactions as
    the guarantees allow: a finished step's row is held back until the next step starts (then
    it is written together with that step's "running" row, before the next connector is
    called, so a succeeded step is never sent again) or until the run ends (then it is written
    in the transaction that finishes and settles the run, see :meth:`RunService.complete`).

    A step of a pure action (:data:`PURE_ACTIONS`, such as a loop body of ``core.transform``)
    writes no "running" row while no held-back row is of an action with effects: the rows are
    written with the next step that is not pure, every :data:`MAX_HELD_ROWS` rows, or at the
    end. A crash loses at most rows of pure steps and constructs, and running them again sends
    nothing.

    A finished step of a metered action (``catalog``: its ``usage`` is ``"tokens"``) records
    the tokens its output says it used (:func:`levqor_kernel.ai.usage_of`).
    """

    def __init__(
        self, store: Store, metrics: Metrics, run: dict[str, Any], catalog: Catalog | None = None
    ) -> None:
        self.store = store
        self.metrics = metrics
        self.run = run
        self.catalog = catalog
        self._started: dict[str, datetime] = {}
        #: finished step rows not written yet
        self.pending: list[dict[str, Any]] = []
        #: time.monotonic() when the last action that is not pure finished (the executor reads
        #: a cancel request after each such step, and at most every 0.2 s otherwise)
        self.last_finish = 0.0
        #: held-back rows of actions that are not pure (their loss would send them again)
        self._held_effects = 0

    def _row(self, run_id: str, step: dict, position: int, **values: Any) -> dict[str, Any]:
        return self.store.steps.row(
            run_id,
            step["id"],
            position=position,
            connector=step["connector"],
            action=step["action"],
            **values,
        )

    def flush(self, *also: dict[str, Any]) -> None:
        """Write the held-back rows (and ``also``) now, in one transaction."""
        rows = [*self.pending, *also]
        if rows:
            self.store.steps.record_many(rows)
        self.pending = []
        self._held_effects = 0

    def step_started(self, run_id: str, step: dict, position: int, attempt: int) -> None:
        started = self._started.setdefault(step["id"], now())
        if _pure(step) and not self._held_effects and len(self.pending) < MAX_HELD_ROWS:
            return
        self.flush(
            self._row(
                run_id, step, position, status="running", attempts=attempt, started_at=started
            )
        )

    def step_retrying(
        self, run_id: str, step: dict, position: int, attempt: int, error: dict, delay: float
    ) -> None:
        self.flush(
            self._row(
                run_id,
                step,
                position,
                status="running",
                attempts=attempt,
                error={**error, "retry_in": round(delay, 3)},
                started_at=self._started.get(step["id"]),
            )
        )
        self.metrics.retries.labels(step["connector"]).inc()

    def step_finished(
        self,
        run_id: str,
        step: dict,
        position: int,
        *,
        status: str,
        attempts: int,
        input: Any,
        output: Any,
        error: dict | None,
        duration: float,
    ) -> None:
        ran = status != "skipped"
        if _sends(step):
            self.last_finish = time.monotonic()
            self._held_effects += 1
        started = self._started.pop(step["id"], None)
        self.pending.append(
            self._row(
                run_id,
                step,
                position,
                status=status,
                attempts=attempts,
                input=input,
                output=output,
                error=error,
                started_at=started if ran else None,
                finished_at=now() if ran else None,
                usage=self.usage(step, output if status == "succeeded" else error),
            )
        )
        if ran:
            self.metrics.step_seconds.labels(step["connector"]).observe(duration)

    def usage(self, step: dict, output: Any) -> dict[str, Any] | None:
        """The tokens a metered action's ``output`` (or a failed one's ``error``) says it used
        (None for other steps)."""
        if self.catalog is None or step.get("connector") == "flow":
            return None
        action = self.catalog.action(step["connector"], step["action"])
        return usage_of(output) if action is not None and action.metered else None

    def run_finished(self, run_id: str, status: str, error: dict | None) -> None:
        # the executor finishes the run row itself (it knows whether it still owns the lease)
        pass


def _pure(step: dict) -> bool:
    return (step.get("connector"), step.get("action")) in PURE_ACTIONS


def _sends(step: dict) -> bool:
    """Whether running ``step`` again could reach outside the run: an action that is not pure
    (a construct's own row only records what its steps did)."""
    return step.get("connector") != "flow" and not _pure(step)
