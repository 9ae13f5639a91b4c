"""The choices of an action's payload field (``/connectors/<c>/actions/<a>/options/<field>``):
the models a server offers, the tools of an MCP server, for the builder's forms.

The owning plugin's ``load_options`` answers them, called with the caller's own credential
(decrypted here, never answered; an OAuth2 one refreshed like a run's) and a context with the
host's plugin settings and a short deadline. What the upstream says when it cannot be asked is
redacted of the credential's secrets and answered 502; a plugin that breaks answers 502 too,
never a 500: the builder then falls back to a free text field.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from flask import Response, current_app, jsonify
from levqor_kernel.context import make_context
from levqor_kernel.errors import ConnectorError
from levqor_kernel.http import redact, secrets_in

from levqor_host.errors import ApiError
from levqor_host.web.access import current_user, require
from levqor_host.web.api.blueprint import bp, state
from levqor_host.web.api.schemas import OptionList, OptionsIn
from levqor_host.web.operations import ERROR, answer, operation

#: seconds the plugin has to answer (the builder waits for it)
TIMEOUT = 15.0
#: the most choices answered (a server with more lists the first ones)
MAX_OPTIONS = 1000


def _no_options(message: str) -> ApiError:
    return ApiError(404, "no_options", message)


def _unusable() -> ApiError:
    return ApiError(502, "options_failed", "the connector could not list the choices")


def clean_options(found: Any) -> list[dict[str, Any]]:
    """The hook's answer as the API answers it: each choice's ``value`` and ``label`` (the
    value as text when it has none), ``description`` and ``schema`` when given; a ValueError
    when it is not a list of choices."""
    if not isinstance(found, list):
        raise ValueError("load_options answered no list")
    out = []
    for item in found[:MAX_OPTIONS]:
        if not isinstance(item, Mapping) or "value" not in item:
            raise ValueError("a choice without a value")
        value = item["value"]
        if not isinstance(value, (str, int, float, bool)):
            raise ValueError("a choice's value is not a string or number")
        label = item.get("label")
        choice: dict[str, Any] = {"value": value, "label": label if isinstance(label, str) else str(value)}
        if isinstance(item.get("description"), str):
            choice["description"] = item["description"]
        if isinstance(item.get("schema"), Mapping):
            choice["schema"] = dict(item["schema"])
        out.append(choice)
    return out


@bp.post("/connectors/<connector>/actions/<action>/options/<field>")
@require("pipelines:read")
@operation(
    "The choices of an action's field",
    "For a payload field the action lists in its options (the catalog's options): the "
    "choices its connector answers now, such as the models a server offers or an MCP server's "
    "tools (each value, label, and optionally a description and the JSON Schema of what the "
    "choice takes). credential names one of the caller's credentials of that connector, used "
    "to ask the upstream (15 s); payload is what the form holds so far. 404 not_found for an "
    "unknown connector, action or credential, 422 wrong_connector for a credential of another "
    "connector, 404 no_options when the field has no list, 502 options_failed (with the "
    "upstream's redacted reason) when it cannot be asked.",
    tag="catalog",
    body=OptionsIn,
    responses={200: answer(OptionList), 404: ERROR, 422: ERROR, 502: ERROR},
)
def load_options(connector: str, action: str, field: str, body: OptionsIn) -> Response:
    st, user_id = state(), current_user()["id"]
    info = st.pm.catalog.get(connector)
    if info is None:
        raise ApiError(404, "not_found", f"connector {connector!r} is not installed")
    act = info.actions.get(action)
    if act is None:
        raise ApiError(404, "not_found", f"connector {connector!r} has no action {action!r}")
    if field not in act.options or st.pm.owner_impl("load_options", connector) is None:
        raise _no_options(f"{connector}.{action} lists no choices for field {field!r}")
    values: dict[str, Any] | None = None
    if body.credential is not None:
        found = st.store.credentials.values(user_id, body.credential)
        if found is None:
            raise ApiError(404, "not_found", "credential not found")
        if found[0] != connector:
            raise ApiError(
                422, "wrong_connector", f"credential {body.credential!r} is not for {connector!r}"
            )
        values = found[1]
    hidden = secrets_in(values or {})
    ctx = make_context(
        f"options-{connector}", f"{action}.{field}", timeout=TIMEOUT,
        env=st.config.plugin_settings(), user_id=user_id,
    )  # fmt: skip

    def ask(creds: dict[str, Any] | None) -> Any:
        ctx.http.add_secrets(*(v for v in secrets_in(creds or {}) if len(v) >= 6))
        hidden.extend(secrets_in(creds or {}))
        return st.pm.call_owner(
            "load_options", connector, connector=connector, action=action, field=field,
            payload=dict(body.payload), credentials=creds, context=ctx,
        )  # fmt: skip

    try:
        if body.credential is not None and st.oauth is not None:
            found_options = st.oauth.call_with_refresh(user_id, body.credential, connector, ask)
        else:
            found_options = ask(values)
    except ConnectorError as e:
        raise ApiError(
            502, "options_failed", f"the choices could not be loaded: {redact(e.message, hidden)}"
        ) from None
    except Exception:  # noqa: BLE001 - a broken plugin answers 502, never a 500
        current_app.logger.exception("load_options of %s.%s (%s) failed", connector, action, field)
        raise _unusable() from None
    finally:
        ctx.http.close()
    if found_options is None:
        raise _no_options(f"{connector}.{action} has no list for field {field!r} now")
    try:
        options = clean_options(found_options)
    except ValueError as e:
        current_app.logger.warning("load_options of %s.%s answered badly: %s", connector, action, e)
        raise _unusable() from None
    return jsonify({"options": options})
