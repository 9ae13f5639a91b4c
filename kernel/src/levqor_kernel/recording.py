"""What a run is given and gives back, and the recorder every transition is reported to."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from .errors import LevqorError

SUCCEEDED, FAILED, CANCELLED, SKIPPED, RUNNING, WAITING = (
    "succeeded",
    "failed",
    "cancelled",
    "skipped",
    "running",
    "waiting",
)


class Recorder(Protocol):
    """Receives every transition of a run. The host persists them; tests collect them."""

    def step_started(
        self, run_id: str, step: Mapping[str, Any], position: int, attempt: int
    ) -> None: ...

    def step_retrying(
        self,
        run_id: str,
        step: Mapping[str, Any],
        position: int,
        attempt: int,
        error: dict,
        delay: float,
    ) -> None: ...

    def step_finished(
        self,
        run_id: str,
        step: Mapping[str, Any],
        position: int,
        *,
        status: str,
        attempts: int,
        input: Any,
        output: Any,
        error: dict | None,
        duration: float,
    ) -> None: ...

    def run_finished(self, run_id: str, status: str, error: dict | None) -> None: ...


class NullRecorder:
    """A recorder that records nothing."""

    def step_started(self, *a: Any, **k: Any) -> None:
        pass

    def step_retrying(self, *a: Any, **k: Any) -> None:
        pass

    def step_finished(self, *a: Any, **k: Any) -> None:
        pass

    def run_finished(self, *a: Any, **k: Any) -> None:
        pass


class ListRecorder(NullRecorder):
    """Keeps every event in ``events`` as ``(kind, dict)`` tuples (tests, CLI)."""

    def __init__(self) -> None:
        self.events: list[tuple[str, dict]] = []

    def step_started(self, run_id, step, position, attempt):  # type: ignore[override]
        self.events.append(("step_started", {"step": step["id"], "attempt": attempt}))

    def step_retrying(self, run_id, step, position, attempt, error, delay):  # type: ignore[override]
        self.events.append(
            (
                "step_retrying",
                {"step": step["id"], "attempt": attempt, "error": error, "delay": delay},
            )
        )

    def step_finished(self, run_id, step, position, **kw):  # type: ignore[override]
        self.events.append(("step_finished", {"step": step["id"], **kw}))

    def run_finished(self, run_id, status, error):  # type: ignore[override]
        self.events.append(("run_finished", {"status": status, "error": error}))


#: What a run is given to read its owner's credentials: ``resolve(name, connector)`` answers
#: the credential's values, or ``None`` when the owner has none by that name for that connector.
#: A :class:`RefreshingCredentials` may be given instead.
CredentialResolver = Callable[[str | None, str], "dict[str, Any] | None"]


@runtime_checkable
class RefreshingCredentials(Protocol):
    """A credential resolver that can also refresh an OAuth2 credential.

    ``resolve(name, connector)`` as :data:`CredentialResolver` (the host refreshes an access
    token that is about to expire before it answers). ``refresh(name, connector, stale)`` is
    called once when a connector answered 401 to the OAuth2 credential ``stale``: it returns the
    refreshed credential (or the one another worker refreshed meanwhile, under the host's lock),
    ``None`` when nothing can be refreshed (the 401 stands), or raises
    :class:`~levqor_kernel.errors.RefreshRefused` when the provider refused the refresh token.
    The runner then calls the connector once more; that call is not a retry attempt.
    """

    def __call__(self, name: str | None, connector: str) -> dict[str, Any] | None: ...

    def refresh(
        self, name: str, connector: str, stale: Mapping[str, Any]
    ) -> dict[str, Any] | None: ...


@dataclass
class RunRequest:
    """One run to execute: the (validated) pipeline document, trigger data and resume state."""

    run_id: str
    pipeline: Mapping[str, Any]
    trigger: Any = field(default_factory=dict)
    completed: Mapping[str, Any] = field(default_factory=dict)
    user_id: str | None = None
    pipeline_id: str | None = None
    #: outcomes of this run's steps that ended without succeeding before (failed steps whose
    #: error path let the run go on, waits and sub-pipelines the host decided), by path:
    #: ``{"status": "succeeded" | "failed", "output": ..., "error": {...}}``
    decided: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    #: ``approval_links(path)``: the signed ``approve_url`` and ``reject_url`` of the approval
    #: the step at ``path`` will wait for (the host signs them); its ``notify`` steps see them
    approval_links: Callable[[str], Mapping[str, Any]] | None = None


@dataclass(frozen=True)
class StepRecord:
    """One step that reached a final state in this call of :meth:`Runner.run` (steps given
    as ``completed`` are not repeated here): what a host needs to settle the run without
    reading it back. ``step_id`` is the step's path (``loop[3].send``, an agent's model turn
    ``agent.turns[0]`` and its tool calls ``agent.turns[0].calls[1]``); constructs have the
    connector ``flow`` and their type as action. ``usage``: the tokens a metered action used
    (:func:`levqor_kernel.ai.usage_of` of its output)."""

    step_id: str
    position: int
    connector: str
    action: str
    status: str
    attempts: int
    duration: float = 0.0
    usage: Mapping[str, Any] | None = None


@dataclass
class RunResult:
    """Where a run got to: a final status, or ``waiting`` with :attr:`wait` saying for what.
    ``steps`` maps every step path to its status and ``outputs`` every succeeded one to its
    output; ``records`` lists the steps this call ran or skipped, in order
    (:class:`StepRecord`); ``output`` is the run's output (a stop step's, else the last
    top-level step's that ran)."""

    status: str
    error: dict | None = None
    outputs: dict[str, Any] = field(default_factory=dict)
    steps: dict[str, str] = field(default_factory=dict)
    records: list[StepRecord] = field(default_factory=list)
    output: Any = None
    #: while ``status`` is ``waiting``: ``{"step": path, "kind": "time" | "approval" |
    #: "pipeline", ...}`` (see docs/pipelines.md)
    wait: dict | None = None


class _Cancelled(LevqorError):
    """The run is being cancelled (or handed back): raised out of the step in flight."""


