"""Levqor's microkernel. A connector needs only ``from levqor_kernel import hookimpl``."""

from __future__ import annotations

import pluggy

__version__ = "0.2.0"

#: Marker for hook implementations in plugins: ``@hookimpl def describe_schema(): ...``
hookimpl = pluggy.HookimplMarker("levqor")
#: Marker used by :mod:`levqor_kernel.hookspecs` (and by the host's own hookspecs).
hookspec = pluggy.HookspecMarker("levqor")

from .context import StepContext  # noqa: E402
from .errors import (  # noqa: E402
    ConnectorError,
    CredentialError,
    PayloadError,
    PermanentError,
    RetryableError,
    StopRun,
)

__all__ = [
    "__version__",
    "hookimpl",
    "hookspec",
    "StepContext",
    "ConnectorError",
    "CredentialError",
    "PayloadError",
    "PermanentError",
    "RetryableError",
    "StopRun",
]
