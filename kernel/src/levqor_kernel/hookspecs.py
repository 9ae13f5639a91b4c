"""The hooks a Levqor plugin can implement. Every one is documented in docs/connectors.md.

Connector hooks (``validate_payload``, ``validate_credentials``, ``run_task``,
``check_credentials``) are dispatched to
the single plugin that owns the connector named in the call, never to every plugin. Billing
and planner hooks are ``firstresult``: the first plugin that answers (not ``None``) decides.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from . import hookspec
from .context import StepContext


@hookspec
def describe_schema() -> list[dict[str, Any]]:
    """Describe the connectors this plugin offers.

    Called once when the plugin manager builds its catalog. Returns a list of connector
    descriptions; the JSON Schema they must satisfy is
    :data:`levqor_kernel.catalog.CONNECTOR_SCHEMA` (name, title, description, icon,
    categories, credentials schema, actions with payload/output schemas, an example and a
    price in credits each).

    .. versionadded:: 0.1
    """


@hookspec
def validate_payload(connector: str, action: str, payload: dict[str, Any]) -> list[str] | None:
    """Check a rendered payload beyond its JSON Schema (cross-field rules).

    Called on the owning plugin after schema validation, before ``run_task``. Returns a list
    of problem messages; an empty list or ``None`` means valid.

    .. versionadded:: 0.1
    """


@hookspec
def validate_credentials(
    connector: str, credentials: dict[str, Any], env: Mapping[str, str]
) -> dict[str, str] | None:
    """Check credential values beyond their JSON Schema, offline, before they are stored.

    Called on the owning plugin when a user saves a credential, after schema validation, with
    the host's configuration as ``env``. Returns ``{field: problem}`` for values that can never
    work (the field names a property of the credentials schema; the message must not quote
    secret values); an empty dict or ``None`` means valid. No network calls: that is
    ``check_credentials``.

    .. versionadded:: 0.2
    """


@hookspec
def run_task(
    connector: str,
    action: str,
    payload: dict[str, Any],
    credentials: dict[str, Any] | None,
    context: StepContext,
) -> dict[str, Any]:
    """Perform one action and return its output (a JSON-able dict).

    Called on the owning plugin once per attempt, with a payload already rendered and
    validated and the decrypted credentials (or ``None`` when the connector needs none).
    Raise :class:`~levqor_kernel.errors.RetryableError` for transient failures and any other
    :class:`~levqor_kernel.errors.ConnectorError` for permanent ones; raise
    :class:`~levqor_kernel.errors.StopRun` to end the run successfully. Anything that is not
    a dict, or any other exception, fails the step (fail closed).

    .. versionadded:: 0.1
    """


@hookspec
def check_credentials(
    connector: str, credentials: dict[str, Any], context: StepContext
) -> dict[str, Any] | None:
    """Test stored credentials against the upstream API without side effects.

    Called on the owning plugin when a user presses "test". Returns details such as
    ``{"ok": True, "account": "..."}``; raises a ``ConnectorError`` when they do not work;
    ``None`` means the connector has no check.

    .. versionadded:: 0.1
    """


@hookspec(firstresult=True)
def price_task(connector: str, action: str, payload: dict[str, Any], price: int) -> int | None:
    """Price one step in credits.

    Called for every step when a run is priced before it is queued; ``price`` is the
    catalog's price for the action (after operator overrides). Return a different number to
    change it, or ``None`` to keep it.

    .. versionadded:: 0.1
    """


@hookspec(firstresult=True)
def gate_run(
    user: dict[str, Any], pipeline: dict[str, Any], price: int, ledger: Any
) -> dict[str, Any] | None:
    """Decide whether ``user`` may start a run of ``pipeline`` costing ``price`` credits.

    Called before the run row is queued, inside the transaction that will reserve its
    credits (``ledger`` is the host's ledger for that transaction). Return ``None`` to allow;
    return ``{"allow": False, "status": 402, "reason": "...", "retry_at": iso8601|None}`` to
    refuse.

    .. versionadded:: 0.1
    """


@hookspec
def record_run_cost(user: dict[str, Any], run: dict[str, Any], cost: int, ledger: Any) -> None:
    """Record what a finished run cost.

    Called once when a run reaches a final state, with its status, whether the failure was
    the platform's (``run["platform_failure"]``, refundable) and the credits it used.

    .. versionadded:: 0.1
    """


@hookspec(firstresult=True)
def plan_pipeline(
    prompt: str, catalog: dict[str, Any], credentials: list[dict[str, Any]], options: dict[str, Any]
) -> dict[str, Any] | None:
    """Turn a plain-words description into a pipeline document.

    Called by the AI builder with the installed catalog (JSON form), the names and connectors
    of the user's credentials (never their values) and options (``name``, repair rounds).
    Returns ``{"pipeline": {...}, "explanation": "..."}``; ``None`` when this plugin does not
    plan.

    .. versionadded:: 0.1
    """


HOOK_NAMES = (
    "describe_schema",
    "validate_payload",
    "validate_credentials",
    "run_task",
    "check_credentials",
    "price_task",
    "gate_run",
    "record_run_cost",
    "plan_pipeline",
)
