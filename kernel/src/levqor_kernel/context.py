"""What a step receives besides its payload and credentials."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .http import Http, UrlGuard, api_base


@dataclass
class StepContext:
    """Per-attempt context handed to ``run_task``.

    ``idempotency_key`` is stable across retries of one step of one run (``<run>:<step>``):
    send it to any API that supports one (Resend's ``Idempotency-Key``) so a retry never
    sends twice. ``http`` is a ready :class:`~levqor_kernel.http.Http` bound to this step's
    deadline; ``env`` is the settings the host hands its plugins (the ``LEVQOR_*`` and other
    variables it was configured from: ``LEVQOR_SSRF_ALLOW``, ``LEVQOR_<NAME>_API_BASE``, a
    connector's own); empty by default, the kernel reads no environment itself.
    """

    run_id: str
    step_id: str
    attempt: int = 1
    deadline: float | None = None
    env: Mapping[str, str] = field(default_factory=dict)
    user_id: str | None = None
    log: logging.Logger = field(default_factory=lambda: logging.getLogger("levqor.step"))
    cancelled: Callable[[], bool] = field(default=lambda: False)
    http: Http = field(init=False)
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.http = Http(guard=UrlGuard.from_env(self.env), deadline=self.deadline)

    @property
    def idempotency_key(self) -> str:
        return f"{self.run_id}:{self.step_id}"

    def remaining(self) -> float | None:
        """Seconds left before this step's deadline (None when it has none)."""
        return None if self.deadline is None else max(0.0, self.deadline - time.monotonic())

    def api_base(
        self, name: str, default: str, credentials: Mapping[str, Any] | None = None
    ) -> tuple[str, bool]:
        """See :func:`levqor_kernel.http.api_base`."""
        return api_base(name, default, credentials, self.env)


def make_context(
    run_id: str = "run-test", step_id: str = "step-test", *, timeout: float | None = 30.0, **kw: Any
) -> StepContext:
    """A context for calling ``run_task`` directly (tests, ``levqor connector check``)."""
    deadline = None if timeout is None else time.monotonic() + timeout
    return StepContext(run_id=run_id, step_id=step_id, deadline=deadline, **kw)
