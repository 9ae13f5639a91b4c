"""Credentials: ``/credentials``, ``/credentials/<id>`` and its check against the service.
Values are stored encrypted by the vault and never answered."""

from __future__ import annotations

from flask import Response, current_app, jsonify
from jsonschema import Draft202012Validator
from levqor_kernel.http import redact, secrets_in

from levqor_host.errors import ApiError
from levqor_host.web.access import current_user, require
from levqor_host.web.api.blueprint import bp, iso, not_found, state
from levqor_host.web.api.idempotency import idempotent
from levqor_host.web.api.schemas import (
    Credential,
    CredentialCheck,
    CredentialIn,
    CredentialList,
    Deleted,
)
from levqor_host.web.operations import ERROR, IDEMPOTENCY_KEY, answer, operation


def cred_out(c: dict) -> dict:
    return {
        "id": c["id"],
        "name": c["name"],
        "connector": c["connector"],
        "created_at": iso(c.get("created_at")),
        "auth": c.get("auth") or "values",
        "account": c.get("account"),
        "status": c.get("status") or "ok",
        "expires_at": iso(c.get("expires_at")),
    }


def _invalid(message: str, problems: list[dict]) -> ApiError:
    return ApiError(422, "invalid_credentials", message, {"problems": problems})


def _check_schema(schema: dict, values: dict) -> None:
    """Refuse (422) values off the connector's credential schema, saying where, not what (the
    schema's messages may quote the submitted values)."""
    safe = [
        {
            "pointer": "/values" + "".join(f"/{p}" for p in e.absolute_path),
            "message": "does not match the credential schema",
        }
        for e in Draft202012Validator(
            schema, format_checker=Draft202012Validator.FORMAT_CHECKER
        ).iter_errors(values)
    ]
    if safe:
        raise _invalid("the credential values do not match the connector's schema", safe)


def _check_credential_rules(connector: str, values: dict) -> None:
    """Refuse (422, naming each field) values the connector's ``validate_credentials`` rejects."""
    st = state()
    if st.pm.owner_impl("validate_credentials", connector) is None:
        return
    try:
        problems = st.pm.call_owner(
            "validate_credentials",
            connector,
            connector=connector,
            credentials=values,
            env=st.config.plugin_settings(),
        )
    except Exception:  # noqa: BLE001 - a broken check must not store what it could not judge
        current_app.logger.exception("validate_credentials of %s failed", connector)
        problems = {"": "the connector could not check these values"}
    if not problems:
        return
    if not isinstance(problems, dict):
        problems = {"": "; ".join(map(str, problems))}
    secret_values = secrets_in(values)
    safe = [
        {
            "pointer": "/values" + (f"/{field}" if field else ""),
            "field": field or None,
            "message": redact(str(message), secret_values),
        }
        for field, message in problems.items()
    ]
    first = safe[0]
    where = f"{first['field']}: " if first["field"] else ""
    raise _invalid(f"the credential values cannot work: {where}{first['message']}", safe)


@bp.post("/credentials")
@require("credentials:write")
@idempotent()
@operation(
    "Add a credential (stored encrypted, never returned)",
    "The values are checked against the connector's credential schema and its own rules "
    "(422 invalid_credentials names the fields, never their values), then encrypted.",
    tag="credentials",
    body=CredentialIn,
    responses={201: answer(Credential), 409: ERROR, 422: ERROR},
    params=[IDEMPOTENCY_KEY],
)
def create_credential(body: CredentialIn) -> Response:
    st = state()
    info = st.pm.catalog.get(body.connector)
    if info is None:
        raise ApiError(422, "unknown_connector", f"connector {body.connector!r} is not installed")
    if info.credentials is None:
        raise ApiError(422, "no_credentials", f"connector {info.name!r} takes no credentials")
    if not body.name.strip():
        raise ApiError(400, "invalid_request", "name must be 1-100 characters")
    _check_schema(info.credentials, body.values)
    _check_credential_rules(info.name, body.values)
    user = current_user()
    if any(c["name"] == body.name for c in st.store.credentials.list(user["id"])):
        raise ApiError(409, "conflict", f"a credential named {body.name!r} already exists")
    c = st.store.credentials.create(user["id"], body.name, info.name, body.values)
    st.triggers.credential_changed(user["id"], c["name"])  # app triggers waiting for it resume
    resp = jsonify(cred_out(c))
    resp.status_code = 201
    return resp


@bp.get("/credentials")
@require("pipelines:read")
@operation(
    "List credentials (names and connectors only)",
    "The caller's credentials; their values (tokens) are never answered. A connected account "
    "(auth oauth2) shows its account name, when its access token expires (refreshed before) "
    "and status broken once the provider refused its refresh token (connect it again).",
    tag="credentials",
    responses={200: answer(CredentialList)},
)
def list_credentials() -> Response:
    return jsonify(
        {"items": [cred_out(c) for c in state().store.credentials.list(current_user()["id"])]}
    )


@bp.delete("/credentials/<cred_id>")
@require("credentials:write")
@operation(
    "Delete a credential",
    "Pipelines that name it fail validation until another credential of that name is added.",
    tag="credentials",
    responses={200: answer(Deleted)},
)
def delete_credential(cred_id: str) -> Response:
    if not state().store.credentials.delete(current_user()["id"], cred_id):
        raise not_found("credential")
    return jsonify({"id": cred_id, "deleted": True})


@bp.post("/credentials/<cred_id>/test")
@require("credentials:write")
@operation(
    "Test a credential against its service",
    "Calls the connector's check_credentials (15 s): ok with safe details, or the redacted "
    "reason; supported is false when the connector offers no check.",
    tag="credentials",
    responses={200: answer(CredentialCheck)},
)
def test_credential(cred_id: str) -> Response:
    st = state()
    user = current_user()
    c = st.store.credentials.get(user["id"], cred_id)
    found = st.store.credentials.values(user["id"], c["name"]) if c is not None else None
    if found is None:
        raise not_found("credential")
    connector, values = found
    if st.pm.owner_impl("check_credentials", connector) is None:
        return jsonify(
            {
                "id": cred_id,
                "supported": False,
                "ok": None,
                "message": f"connector {connector!r} offers no credential check",
            }
        )
    checked = _check(cred_id, c["name"], connector, values)
    if checked is None:  # the connector has a check, but not for this kind of credential
        return jsonify(
            {
                "id": cred_id,
                "supported": False,
                "ok": None,
                "message": f"connector {connector!r} offers no credential check",
            }
        )
    return jsonify({"id": cred_id, "supported": True, **checked})


def _check(cred_id: str, name: str, connector: str, values: dict) -> dict | None:
    """``ok`` and ``details``, or ``ok: false`` and the redacted ``message``; None when the
    connector answers that it has no check for this credential (Slack's incoming webhook). A
    connected account's token is refreshed when it expires soon, and once more after a 401."""
    from levqor_kernel.context import make_context
    from levqor_kernel.errors import ConnectorError

    st = state()
    ctx = make_context(
        f"credtest-{cred_id}", "check", timeout=15.0, env=st.config.plugin_settings(), user_id=current_user()["id"]
    )
    # redacted from the helper's errors and dropped from headers on a cross-origin redirect
    ctx.http.add_secrets(*(v for v in secrets_in(values) if len(v) >= 6))
    hidden = secrets_in(values)

    def check(creds: dict | None) -> dict:
        ctx.http.add_secrets(*(v for v in secrets_in(creds or {}) if len(v) >= 6))
        hidden.extend(secrets_in(creds or {}))
        return st.pm.call_owner(
            "check_credentials", connector, connector=connector, credentials=creds, context=ctx
        )

    try:
        out = (
            st.oauth.call_with_refresh(current_user()["id"], name, connector, check)
            if st.oauth is not None
            else check(values)
        )
    except ConnectorError as e:
        return {"ok": False, "message": redact(e.message, hidden)}
    except Exception:  # noqa: BLE001
        return {"ok": False, "message": "the check failed unexpectedly"}
    finally:
        ctx.http.close()
    if out is None:
        return None
    details = {
        k: v for k, v in out.items() if isinstance(v, (str, int, float, bool)) and k != "ok"
    }
    return {"ok": True, "details": details}
