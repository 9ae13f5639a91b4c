"""The hooks a Levqor plugin can implement. Every one is documented in docs/connectors.md.

Connector hooks (``validate_payload``, ``validate_credentials``, ``run_task``,
``check_credentials``, ``load_options``, the trigger hooks and ``oauth_credentials``) are dispatched to
the single plugin that owns the connector named in the call, never to every plugin. Billing
and planner hooks are ``firstresult``: the first plugin that answers (not ``None``) decides.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from . import hookspec
from .context import StepContext
from .triggers import Delivery, DeliveryResult, Poll


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


@hookspec
def load_options(
    connector: str,
    action: str,
    field: str,
    payload: dict[str, Any],
    credentials: dict[str, Any] | None,
    context: StepContext,
) -> list[dict[str, Any]] | None:
    """List the choices of a payload field the action names in its ``options`` (the models a
    server offers, the tools of an MCP server), for the builder's forms.

    Called on the owning plugin with the field, what the form holds so far (``payload``, not
    rendered: it may hold templates) and the decrypted credentials the step would use. Returns
    ``[{"value": ..., "label": "...", "description": "..."?, "schema": {...}?}]`` (``schema``:
    the JSON Schema of what the choice takes, such as an MCP tool's arguments). Raise a
    ``ConnectorError`` when the upstream cannot be asked; ``None`` means no list for that field.

    .. versionadded:: 0.3
    """


@hookspec
def poll_trigger(
    connector: str,
    trigger: str,
    config: dict[str, Any],
    credentials: dict[str, Any] | None,
    state: dict[str, Any] | None,
    context: StepContext,
) -> Poll | dict[str, Any]:
    """Look upstream for a polling trigger's items.

    Called on the owning plugin each time the trigger is due, with its validated ``config``,
    the decrypted credentials and the ``state`` this hook returned last time (``None`` on the
    first poll of a newly enabled trigger: return the current items and a starting state; the
    host records them as seen and starts no runs). Returns a :class:`~levqor_kernel.triggers.Poll`:
    items oldest first, each with a stable id (the host deduplicates by it), and the next
    state. Raise errors as ``run_task`` does: ``RetryableError`` (429, 5xx) makes the host back
    off; a ``CredentialError`` with status 401 on an OAuth2 credential makes it refresh the
    token and poll once more.

    .. versionadded:: 0.3
    """


@hookspec
def register_trigger(
    connector: str,
    trigger: str,
    config: dict[str, Any],
    credentials: dict[str, Any] | None,
    webhook_url: str,
    secret: str,
    context: StepContext,
) -> dict[str, Any] | None:
    """Subscribe an instant trigger upstream when its pipeline is enabled.

    ``webhook_url`` is where deliveries must go (the host's public URL for this trigger, or the
    connector-wide URL when the trigger's ``webhook`` is ``"connector"``); ``secret`` a random
    value the host generated for this registration (send it as the upstream's secret token where
    it has one; it comes back as ``Delivery.secret``). Returns what ``unregister_trigger`` and
    ``receive_delivery`` will need (a webhook id; for connector-wide webhooks a ``route`` object
    the delivered items' routes must contain), stored by the host as given.

    .. versionadded:: 0.3
    """


@hookspec
def unregister_trigger(
    connector: str,
    trigger: str,
    config: dict[str, Any],
    credentials: dict[str, Any] | None,
    registration: dict[str, Any],
    context: StepContext,
) -> None:
    """Remove what ``register_trigger`` subscribed, when the pipeline is disabled, archived or
    its trigger changes. Called with the registration it returned.

    .. versionadded:: 0.3
    """


@hookspec
def receive_delivery(
    connector: str,
    trigger: str | None,
    config: dict[str, Any] | None,
    delivery: Delivery,
    registration: dict[str, Any] | None,
    context: StepContext,
) -> DeliveryResult | dict[str, Any]:
    """Verify and parse one HTTP delivery to an instant trigger.

    Check the signature or secret first and raise :class:`~levqor_kernel.errors.SignatureError`
    when it fails (the host answers 401 and starts nothing). Answer handshakes (a URL challenge)
    through ``DeliveryResult.response``; return the delivery's items, one per event. For a
    connector-wide webhook ``trigger``, ``config`` and ``registration`` are ``None`` and each item
    carries a ``route``; the host starts a run for every enabled registration whose route it
    contains.

    .. versionadded:: 0.3
    """


@hookspec
def oauth_credentials(
    connector: str, token: dict[str, Any], context: StepContext
) -> dict[str, Any] | None:
    """Turn an OAuth2 token response into the credential to store.

    Called on the owning plugin after the authorization code is exchanged (and after each
    refresh, with the previous credential's fields merged under the new token), with the token
    endpoint's JSON answer. Return extra fields for the credential, such as ``account`` (the
    name shown to the user: an email, a workspace) or a team id read from the token response or
    one read-only API call; ``None`` keeps the host's standard fields.

    .. versionadded:: 0.3
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
    "load_options",
    "poll_trigger",
    "register_trigger",
    "unregister_trigger",
    "receive_delivery",
    "oauth_credentials",
    "price_task",
    "gate_run",
    "record_run_cost",
    "plan_pipeline",
)
