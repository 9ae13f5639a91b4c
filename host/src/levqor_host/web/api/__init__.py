"""JSON API v1 (``/api/v1``). Documented by ``/api/v1/openapi.json``."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, current_app, jsonify, request
from jsonschema import Draft202012Validator

from levqor_host.errors import MAX_VERSION, ApiError, check_fields
from levqor_host.security.auth import current_user, public, require, signed_in
from levqor_host.web.api.idempotency import idempotent, request_key
from levqor_host.web.api.openapi import openapi_document
from levqor_host.web.errors import json_body

bp = Blueprint("api", __name__, url_prefix="/api/v1")

RUN_STATUSES = ("queued", "running", "succeeded", "failed", "cancelled")


def state():
    return current_app.extensions["levqor"]


def body(**kw: Any) -> Any:
    return json_body(state().config.max_json_depth, **kw)


def not_found(what: str) -> ApiError:
    return ApiError(404, "not_found", f"{what} not found")


def _iso(v: Any) -> Any:
    return v.isoformat() if hasattr(v, "isoformat") else v


def webhook_url(p: dict) -> str | None:
    """The URL that starts a run of ``p``: only a webhook-triggered pipeline has one (any
    other answers 404 at ``/hooks/<token>``, so it gets None rather than a dead address)."""
    doc = p.get("doc")
    trigger = doc.get("trigger") if isinstance(doc, dict) else None
    if not isinstance(trigger, dict) or trigger.get("type") != "webhook":
        return None
    return f"{state().config.base_url}/hooks/{p['webhook_token']}"


def pipeline_out(p: dict, *, with_doc: bool = True) -> dict:
    out = {
        "id": p["id"],
        "name": p["name"],
        "version": p["version"],
        "archived": bool(p.get("archived")),
        "created_at": _iso(p.get("created_at")),
        "updated_at": _iso(p.get("updated_at")),
        "webhook_url": webhook_url(p),
        "has_webhook_secret": bool(p.get("has_webhook_secret")),
    }
    doc = p.get("doc")
    if doc is not None:
        out["trigger"] = doc.get("trigger", {}).get("type")
        if with_doc:
            out["pipeline"] = doc
    return out


def run_out(r: dict) -> dict:
    out = {
        "id": r["id"],
        "pipeline_id": r["pipeline_id"],
        "version": r["version"],
        "status": r["status"],
        "trigger": r.get("trigger"),
        "input": r.get("input"),
        "error": r.get("error"),
        "retry_of": r.get("retry_of"),
        "cancel_requested": bool(r.get("cancel_requested")),
        "created_at": _iso(r.get("created_at")),
        "started_at": _iso(r.get("started_at")),
        "finished_at": _iso(r.get("finished_at")),
    }
    if "steps" in r:
        out["steps"] = [
            {
                "id": s["step_id"],
                "position": s["position"],
                "connector": s["connector"],
                "action": s["action"],
                "status": s["status"],
                "attempts": s["attempts"],
                "input": s.get("input"),
                "output": s.get("output"),
                "error": s.get("error"),
                "started_at": _iso(s.get("started_at")),
                "finished_at": _iso(s.get("finished_at")),
            }
            for s in r["steps"]
        ]
    return out


def _save_problems(user_id: str, doc: Any) -> tuple[list[dict], list[dict]]:
    """(blocking problems, warnings). A credential the user has not added yet is a warning on
    save (add it later), but blocks a run."""
    problems = state().runs.validate(user_id, doc)
    blocking = [
        p
        for p in problems
        if not (p["pointer"].endswith("/credential") and "does not exist" in p["message"])
    ]
    warnings = [p for p in problems if p not in blocking]
    return blocking, warnings


# ---------------------------------------------------------------- catalog and spec
@bp.get("/openapi.json")
@public("the API description; it holds no data")
def openapi():
    return jsonify(openapi_document(state()))


@bp.get("/connectors")
@require("pipelines:read")
def connectors():
    st = state()
    data = st.pm.catalog.to_json()
    return jsonify(
        {
            "connectors": list(data["connectors"].values()),
            "failures": [f.to_dict() for f in st.pm.failures],
        }
    )


@bp.get("/me")
@signed_in()
def me():
    u = current_user()
    return jsonify(
        {
            "id": u["id"],
            "email": u["email"],
            "name": u.get("name"),
            "plan": u.get("plan"),
            "is_admin": bool(u.get("is_admin")),
            "referral_code": u.get("referral_code"),
        }
    )


# ---------------------------------------------------------------- pipelines
@bp.post("/pipelines")
@require("pipelines:write")
@idempotent()
def create_pipeline():
    b = check_fields(body(), {"name": str, "pipeline": dict}, required=("pipeline",))
    user = current_user()
    doc = b["pipeline"]
    blocking, warnings = _save_problems(user["id"], doc)
    if blocking:
        raise ApiError(422, "invalid_pipeline", "the pipeline is not valid", {"problems": blocking})
    name = b.get("name") or doc.get("name") or "Untitled pipeline"
    if not name.strip() or len(name) > 200:
        raise ApiError(400, "invalid_request", "name must be 1-200 characters")
    p = state().store.create_pipeline(user["id"], name, doc)
    state().export_pipeline(p)
    from levqor_host.growth.analytics import record_event

    record_event(state().ledger, "pipeline_created", user["id"], props={"pipeline_id": p["id"]})
    resp = jsonify({**pipeline_out(p), "warnings": warnings})
    resp.status_code = 201
    return resp


@bp.get("/pipelines")
@require("pipelines:read")
def list_pipelines():
    archived = request.args.get("archived", "false").lower() in ("1", "true", "yes")
    items = state().store.list_pipelines(current_user()["id"], include_archived=archived)
    return jsonify({"items": [pipeline_out(p, with_doc=False) for p in items]})


@bp.get("/pipelines/<pipeline_id>")
@require("pipelines:read")
def get_pipeline(pipeline_id: str):
    p = state().store.get_pipeline(current_user()["id"], pipeline_id)
    if p is None:
        raise not_found("pipeline")
    return jsonify(pipeline_out(p))


@bp.put("/pipelines/<pipeline_id>")
@require("pipelines:write")
def update_pipeline(pipeline_id: str):
    b = check_fields(body(), {"name": str, "pipeline": dict}, required=("pipeline",))
    user = current_user()
    st = state()
    if st.store.get_pipeline(user["id"], pipeline_id) is None:
        raise not_found("pipeline")
    blocking, warnings = _save_problems(user["id"], b["pipeline"])
    if blocking:
        raise ApiError(422, "invalid_pipeline", "the pipeline is not valid", {"problems": blocking})
    if b.get("name") is not None and (not b["name"].strip() or len(b["name"]) > 200):
        raise ApiError(400, "invalid_request", "name must be 1-200 characters")
    p = st.store.update_pipeline(user["id"], pipeline_id, b["pipeline"], name=b.get("name"))
    if p is None:
        raise not_found("pipeline")
    st.export_pipeline(p)
    return jsonify({**pipeline_out(p), "warnings": warnings})


@bp.delete("/pipelines/<pipeline_id>")
@require("pipelines:write")
def archive_pipeline(pipeline_id: str):
    if not state().store.archive_pipeline(current_user()["id"], pipeline_id):
        raise not_found("pipeline")
    return jsonify({"id": pipeline_id, "archived": True})


@bp.get("/pipelines/<pipeline_id>/versions")
@require("pipelines:read")
def list_versions(pipeline_id: str):
    versions = state().store.list_versions(current_user()["id"], pipeline_id)
    if versions is None:
        raise not_found("pipeline")
    return jsonify(
        {
            "items": [
                {"version": v["version"], "created_at": _iso(v.get("created_at"))} for v in versions
            ]
        }
    )


@bp.get("/pipelines/<pipeline_id>/versions/<int:version>")
@require("pipelines:read")
def get_version(pipeline_id: str, version: int):
    v = None
    if version <= MAX_VERSION:  # a larger one cannot exist (nor be asked of PostgreSQL)
        v = state().store.get_version(current_user()["id"], pipeline_id, version)
    if v is None:
        raise not_found("pipeline version")
    return jsonify(
        {
            "pipeline_id": pipeline_id,
            "version": v["version"],
            "created_at": _iso(v.get("created_at")),
            "pipeline": v["doc"],
        }
    )


@bp.post("/pipelines/<pipeline_id>/webhook-secret")
@require("pipelines:write")
def rotate_webhook_secret(pipeline_id: str):
    """Create (or replace) the pipeline's HMAC secret; it is shown only in this answer."""
    import secrets as _secrets

    secret = "whsec_" + _secrets.token_urlsafe(32)
    if not state().store.set_webhook_secret(current_user()["id"], pipeline_id, secret):
        raise not_found("pipeline")
    return jsonify(
        {
            "pipeline_id": pipeline_id,
            "secret": secret,
            "header": "X-Levqor-Signature",
            "scheme": "sha256=HMAC_SHA256(secret, timestamp + '.' + body)",
        }
    )


@bp.delete("/pipelines/<pipeline_id>/webhook-secret")
@require("pipelines:write")
def delete_webhook_secret(pipeline_id: str):
    if not state().store.set_webhook_secret(current_user()["id"], pipeline_id, None):
        raise not_found("pipeline")
    return jsonify({"pipeline_id": pipeline_id, "has_webhook_secret": False})


# ---------------------------------------------------------------- credentials
def cred_out(c: dict) -> dict:
    return {
        "id": c["id"],
        "name": c["name"],
        "connector": c["connector"],
        "created_at": _iso(c.get("created_at")),
    }


def _check_credential_rules(connector: str, values: dict) -> None:
    """Refuse (422, naming each field) values the connector's ``validate_credentials`` rejects."""
    from levqor_kernel.http import redact, secrets_in

    st = state()
    if st.pm.owner_impl("validate_credentials", connector) is None:
        return
    try:
        problems = st.pm.call_owner(
            "validate_credentials",
            connector,
            connector=connector,
            credentials=values,
            env=st.config.env,
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
    raise ApiError(
        422,
        "invalid_credentials",
        f"the credential values cannot work: {where}{first['message']}",
        {"problems": safe},
    )


@bp.post("/credentials")
@require("credentials:write")
@idempotent()
def create_credential():
    b = check_fields(
        body(),
        {"name": str, "connector": str, "values": dict},
        required=("name", "connector", "values"),
    )
    st = state()
    info = st.pm.catalog.get(b["connector"])
    if info is None:
        raise ApiError(422, "unknown_connector", f"connector {b['connector']!r} is not installed")
    if info.credentials is None:
        raise ApiError(422, "no_credentials", f"connector {info.name!r} takes no credentials")
    if not b["name"].strip() or len(b["name"]) > 100:
        raise ApiError(400, "invalid_request", "name must be 1-100 characters")
    errors = [
        {"pointer": "/values" + "".join(f"/{p}" for p in e.absolute_path), "message": e.message}
        for e in Draft202012Validator(
            info.credentials, format_checker=Draft202012Validator.FORMAT_CHECKER
        ).iter_errors(b["values"])
    ]
    if errors:
        # messages may quote the submitted values: say where, not what
        safe = [
            {"pointer": e["pointer"], "message": "does not match the credential schema"}
            for e in errors
        ]
        raise ApiError(
            422,
            "invalid_credentials",
            "the credential values do not match the connector's schema",
            {"problems": safe},
        )
    _check_credential_rules(info.name, b["values"])
    user = current_user()
    if any(c["name"] == b["name"] for c in st.store.list_credentials(user["id"])):
        raise ApiError(409, "conflict", f"a credential named {b['name']!r} already exists")
    c = st.store.create_credential(user["id"], b["name"], info.name, b["values"])
    resp = jsonify(cred_out(c))
    resp.status_code = 201
    return resp


@bp.get("/credentials")
@require("pipelines:read")
def list_credentials():
    return jsonify(
        {"items": [cred_out(c) for c in state().store.list_credentials(current_user()["id"])]}
    )


@bp.delete("/credentials/<cred_id>")
@require("credentials:write")
def delete_credential(cred_id: str):
    if not state().store.delete_credential(current_user()["id"], cred_id):
        raise not_found("credential")
    return jsonify({"id": cred_id, "deleted": True})


@bp.post("/credentials/<cred_id>/test")
@require("credentials:write")
def test_credential(cred_id: str):
    from levqor_kernel.context import make_context
    from levqor_kernel.errors import ConnectorError
    from levqor_kernel.http import redact, secrets_in

    st = state()
    user = current_user()
    c = st.store.get_credential(user["id"], cred_id)
    if c is None:
        raise not_found("credential")
    found = st.store.get_credential_values(user["id"], c["name"])
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
    ctx = make_context(
        f"credtest-{cred_id}", "check", timeout=15.0, env=st.config.env, user_id=user["id"]
    )
    # redacted from the helper's errors and dropped from headers on a cross-origin redirect
    ctx.http.add_secrets(*(v for v in secrets_in(values) if len(v) >= 6))
    try:
        out = st.pm.call_owner(
            "check_credentials", connector, connector=connector, credentials=values, context=ctx
        )
    except ConnectorError as e:
        return jsonify(
            {
                "id": cred_id,
                "supported": True,
                "ok": False,
                "message": redact(e.message, secrets_in(values)),
            }
        )
    except Exception:  # noqa: BLE001
        return jsonify(
            {
                "id": cred_id,
                "supported": True,
                "ok": False,
                "message": "the check failed unexpectedly",
            }
        )
    finally:
        ctx.http.close()
    details = {
        k: v for k, v in (out or {}).items() if isinstance(v, (str, int, float, bool)) and k != "ok"
    }
    return jsonify({"id": cred_id, "supported": True, "ok": True, "details": details})


# ---------------------------------------------------------------- runs
def _wait_param() -> float | None:
    raw = request.args.get("wait")
    if raw is None:
        return None
    try:
        w = float(raw)
    except ValueError:
        raise ApiError(400, "invalid_request", "wait must be a number of seconds") from None
    if not 0 <= w <= state().config.run_wait_max:
        raise ApiError(
            400, "invalid_request", f"wait must be between 0 and {state().config.run_wait_max:g}"
        )
    return w


def _answer_run(run: dict, wait: float | None, created: bool):
    user = current_user()
    if wait:
        run = state().runs.wait(user["id"], run["id"], wait) or run
        final = run["status"] in ("succeeded", "failed", "cancelled")
        full = state().store.get_run(user["id"], run["id"]) or run
        resp = jsonify(run_out(full))
        resp.status_code = 200 if final else 202
    else:
        resp = jsonify({"run_id": run["id"], "status": run["status"], "created": created})
        resp.status_code = 202
    resp.headers["Location"] = f"/api/v1/runs/{run['id']}"
    return resp


@bp.post("/run")
@require("runs:execute")
@idempotent(body_field="idempotency_key")
def run_pipeline():
    wait = _wait_param()
    b = check_fields(
        body(),
        {
            "pipeline_id": str,
            "input": (dict, list, str, int, float, bool),
            "idempotency_key": str,
            "version": int,
        },
        required=("pipeline_id",),
    )
    key = request_key("idempotency_key")  # the header or the field: also the run's own key
    if b.get("version") is not None and not 1 <= b["version"] <= MAX_VERSION:
        raise ApiError(400, "invalid_request", f"version must be between 1 and {MAX_VERSION}")
    user = current_user()
    st = state()
    p = st.store.get_pipeline(user["id"], b["pipeline_id"])
    if p is None or p.get("archived"):
        raise not_found("pipeline")
    run, created = st.runs.start(
        user, p, b.get("input", {}), trigger="manual", idempotency_key=key, version=b.get("version")
    )
    return _answer_run(run, wait, created)


@bp.get("/runs")
@require("pipelines:read")
def list_runs():
    status = request.args.get("status")
    if status is not None and status not in RUN_STATUSES:
        raise ApiError(400, "invalid_request", f"status must be one of {', '.join(RUN_STATUSES)}")
    try:
        limit = int(request.args.get("limit", "50"))
    except ValueError:
        raise ApiError(400, "invalid_request", "limit must be an integer") from None
    if not 1 <= limit <= 200:
        raise ApiError(400, "invalid_request", "limit must be between 1 and 200")
    try:
        items, cursor = state().store.list_runs(
            current_user()["id"],
            pipeline_id=request.args.get("pipeline_id"),
            status=status,
            limit=limit,
            cursor=request.args.get("cursor"),
        )
    except ValueError:
        raise ApiError(400, "invalid_request", "invalid cursor") from None
    return jsonify({"items": [run_out(r) for r in items], "next_cursor": cursor})


@bp.get("/runs/<run_id>")
@require("pipelines:read")
def get_run(run_id: str):
    r = state().store.get_run(current_user()["id"], run_id)
    if r is None:
        raise not_found("run")
    return jsonify(run_out(r))


@bp.post("/runs/<run_id>/cancel")
@require("runs:execute")
def cancel_run(run_id: str):
    r = state().runs.cancel(current_user()["id"], run_id)
    if r is None:
        raise not_found("run")
    return jsonify(run_out(r))


@bp.post("/runs/<run_id>/retry")
@require("runs:execute")
@idempotent()
def retry_run(run_id: str):
    """A new run of the same version that reuses the outputs of the steps that succeeded."""
    wait = _wait_param()
    run, created = state().runs.retry(current_user(), run_id)
    return _answer_run(run, wait, created)
