"""Levqor's microkernel. A connector needs only ``from levqor_kernel import hookimpl``.

The names below load on first use (PEP 562), so importing one small module of the kernel
(``levqor_kernel.cron``, say) does not import pluggy and the rest.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.3.0"

#: Where each public name lives: ``hookimpl`` marks hook implementations in plugins
#: (``@hookimpl def describe_schema(): ...``), ``hookspec`` the hook specifications.
_NAMES = {
    "hookimpl": "pluggy",
    "hookspec": "pluggy",
    "StepContext": ".context",
    "ConnectorError": ".errors",
    "CredentialError": ".errors",
    "PayloadError": ".errors",
    "PermanentError": ".errors",
    "RefreshRefused": ".errors",
    "RetryableError": ".errors",
    "SignatureError": ".errors",
    "StopRun": ".errors",
    "Delivery": ".triggers",
    "DeliveryResult": ".triggers",
    "Poll": ".triggers",
    "TriggerItem": ".triggers",
}


def __getattr__(name: str) -> Any:
    where = _NAMES.get(name)
    if where is None:
        raise AttributeError(f"module 'levqor_kernel' has no attribute {name!r}")
    if where == "pluggy":
        import pluggy

        value: Any = pluggy.HookimplMarker("levqor") if name == "hookimpl" else pluggy.HookspecMarker("levqor")
    else:
        from importlib import import_module

        value = getattr(import_module(where, __name__), name)
    globals()[name] = value  # once: later lookups never come here
    return value


__all__ = ["__version__", *_NAMES]
