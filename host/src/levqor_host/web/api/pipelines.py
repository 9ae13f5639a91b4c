"""Pipelines and their versions: ``/pipelines``, ``/pipelines/<id>``, its versions and webhook
secret."""

from __future__ import annotations

import secrets

from flask import Response, jsonify

from levqor_host.builder.pinned import save_problems
from levqor_host.errors import MAX_VERSION, ApiError
from levqor_host.web.access import current_user, require
from levqor_host.web.api.blueprint import bp, iso, not_found, state
from levqor_host.web.api.idempotency import idempotent
from levqor_host.web.api.schemas import (
    Archived,
    PipelineIn,
    PipelineList,
    PipelineOut,
    VersionList,
    VersionOut,
    WebhookSecret,
    WebhookSecretRemoved,
)
from levqor_host.web.operations import (
    ERROR,
    IDEMPOTENCY_KEY,
    answer,
    operation,
    path,
    query,
)

_TRUE = ("1", "true", "yes")


def webhook_url(p: dict) -> str | None:
    """The URL that starts a run of ``p``: only a webhook-triggered pipeline has one (any
    other answers 404 at ``/hooks/<token>``, so it gets None rather than a dead address)."""
    doc = p.get("doc")
    trigger = doc.get("trigger") if isinstance(doc, dict) else None
    if not isinstance(trigger, dict) or trigger.get("type") != "webhook":
        return None
    return f"{state().config.base_url}/hooks/{p['webhook_token']}"


def pipeline_out(p: dict, *, with_doc: bool = True) -> dict:
    """The API's view of a stored pipeline (``PipelineOut``, or ``PipelineSummary`` without
    ``with_doc``)."""
    out = {
        "id": p["id"],
        "name": p["name"],
        "version": p["version"],
        "archived": bool(p.get("archived")),
        "created_at": iso(p.get("created_at")),
        "updated_at": iso(p.get("updated_at")),
        "webhook_url": webhook_url(p),
        "has_webhook_secret": bool(p.get("has_webhook_secret")),
    }
    out["enabled"] = bool(p.get("enabled", True))
    out["trigger_status"] = None
    doc = p.get("doc")
    if doc is not None:
        out["trigger"] = doc.get("trigger", {}).get("type")
        if out["trigger"] == "app" and out["enabled"]:
            out["trigger_status"] = trigger_status(p["id"])
        if with_doc:
            out["pipeline"] = doc
    return out


def trigger_status(pipeline_id: str) -> dict | None:
    """The app trigger's status as the API shows it (timestamps in ISO 8601), None when the
    trigger service has none for the pipeline."""
    found = state().triggers.status(pipeline_id)
    if not found:
        return None
    return {k: iso(v) for k, v in found.items()}


def _checked(user_id: str, body: PipelineIn) -> list[dict]:
    """The warnings of a pipeline to save; 422 with its problems when it cannot be saved."""
    blocking, warnings = save_problems(state(), user_id, body.pipeline)
    if blocking:
        raise ApiError(422, "invalid_pipeline", "the pipeline is not valid", {"problems": blocking})
    if body.name is not None and not body.name.strip():
        raise ApiError(400, "invalid_request", "name must be 1-200 characters")
    return warnings


_SAVE_NOTE = (
    " The document is validated as a whole first (unknown connectors, payloads against their "
    "schemas, templates): problems answer 422 invalid_pipeline with JSON pointers; a credential "
    "not added yet is a warning, not a refusal."
)


@bp.post("/pipelines")
@require("pipelines:write")
@idempotent()
@operation(
    "Create a pipeline (version 1)",
    "Store a new pipeline; its name defaults to the document's." + _SAVE_NOTE,
    tag="pipelines",
    body=PipelineIn,
    responses={201: answer(PipelineOut), 409: ERROR, 422: ERROR},
    params=[IDEMPOTENCY_KEY],
)
def create_pipeline(body: PipelineIn) -> Response:
    user = current_user()
    warnings = _checked(user["id"], body)
    doc = body.pipeline
    name = body.name or doc.get("name") or "Untitled pipeline"
    if not name.strip() or len(name) > 200:
        raise ApiError(400, "invalid_request", "name must be 1-200 characters")
    st = state()
    p = st.triggers.save(user["id"], doc, lambda: st.store.pipelines.create(user["id"], name, doc))
    assert p is not None  # create returns the new pipeline or raises
    st.export_pipeline(p)
    from levqor_host.growth.analytics import record_event

    record_event(st.ledger, "pipeline_created", user["id"], props={"pipeline_id": p["id"]})
    resp = jsonify({**pipeline_out(p), "warnings": warnings})
    resp.status_code = 201
    return resp


@bp.get("/pipelines")
@require("pipelines:read")
@operation(
    "List pipelines",
    "The caller's pipelines without their documents, archived ones only when asked for.",
    tag="pipelines",
    responses={200: answer(PipelineList)},
    params=[
        query(
            "archived",
            {"type": "boolean"},
            "include archived pipelines",
            parse=lambda raw: raw.lower() in _TRUE,
            default=False,
        )
    ],
)
def list_pipelines(archived: bool) -> Response:
    items = state().store.pipelines.list(current_user()["id"], include_archived=archived)
    return jsonify({"items": [pipeline_out(p, with_doc=False) for p in items]})


@bp.get("/pipelines/<pipeline_id>")
@require("pipelines:read")
@operation(
    "Get a pipeline",
    "The pipeline's latest version with its document and webhook address.",
    tag="pipelines",
    responses={200: answer(PipelineOut)},
)
def get_pipeline(pipeline_id: str) -> Response:
    p = state().store.pipelines.get(current_user()["id"], pipeline_id)
    if p is None:
        raise not_found("pipeline")
    return jsonify(pipeline_out(p))


@bp.put("/pipelines/<pipeline_id>")
@require("pipelines:write")
@operation(
    "Update a pipeline (a new version)",
    "Store the document as the pipeline's next version; earlier versions stay readable and "
    "runs keep the version they started with." + _SAVE_NOTE,
    tag="pipelines",
    body=PipelineIn,
    responses={200: answer(PipelineOut), 422: ERROR},
)
def update_pipeline(pipeline_id: str, body: PipelineIn) -> Response:
    user = current_user()
    st = state()
    before = st.store.pipelines.get(user["id"], pipeline_id)
    if before is None:
        raise not_found("pipeline")
    warnings = _checked(user["id"], body)
    p = st.triggers.save(
        user["id"],
        body.pipeline,
        lambda: st.store.pipelines.update(user["id"], pipeline_id, body.pipeline, name=body.name),
        pipeline=before,
    )
    if p is None:
        raise not_found("pipeline")
    st.export_pipeline(p)
    return jsonify({**pipeline_out(p), "warnings": warnings})


@bp.delete("/pipelines/<pipeline_id>")
@require("pipelines:write")
@operation(
    "Archive a pipeline",
    "The pipeline stops taking runs and leaves the default listing; its runs stay.",
    tag="pipelines",
    responses={200: answer(Archived)},
)
def archive_pipeline(pipeline_id: str) -> Response:
    st = state()
    if not st.store.pipelines.archive(current_user()["id"], pipeline_id):
        raise not_found("pipeline")
    st.triggers.archived(pipeline_id)  # its app trigger is unregistered and forgotten
    return jsonify({"id": pipeline_id, "archived": True})


@bp.get("/pipelines/<pipeline_id>/versions")
@require("pipelines:read")
@operation(
    "List versions",
    "Every stored version of the pipeline with when it was saved.",
    tag="pipelines",
    responses={200: answer(VersionList)},
)
def list_versions(pipeline_id: str) -> Response:
    versions = state().store.pipelines.list_versions(current_user()["id"], pipeline_id)
    if versions is None:
        raise not_found("pipeline")
    return jsonify(
        {
            "items": [
                {"version": v["version"], "created_at": iso(v.get("created_at"))} for v in versions
            ]
        }
    )


@bp.get("/pipelines/<pipeline_id>/versions/<int:version>")
@require("pipelines:read")
@operation(
    "Get one version",
    "The document of one version of the pipeline.",
    tag="pipelines",
    responses={200: answer(VersionOut)},
    params=[path("version", {"type": "integer", "minimum": 1, "maximum": MAX_VERSION})],
)
def get_version(pipeline_id: str, version: int) -> Response:
    v = None
    if version <= MAX_VERSION:  # a larger one cannot exist (nor be asked of PostgreSQL)
        v = state().store.pipelines.get_version(current_user()["id"], pipeline_id, version)
    if v is None:
        raise not_found("pipeline version")
    return jsonify(
        {
            "pipeline_id": pipeline_id,
            "version": v["version"],
            "created_at": iso(v.get("created_at")),
            "pipeline": v["doc"],
        }
    )


@bp.post("/pipelines/<pipeline_id>/webhook-secret")
@require("pipelines:write")
@operation(
    "Create or replace the webhook HMAC secret (shown once)",
    "Webhook calls must then be signed: X-Levqor-Timestamp and X-Levqor-Signature, "
    "sha256=HMAC_SHA256(secret, timestamp + '.' + body). The secret is shown only here.",
    tag="pipelines",
    responses={200: answer(WebhookSecret)},
)
def rotate_webhook_secret(pipeline_id: str) -> Response:
    secret = "whsec_" + secrets.token_urlsafe(32)
    if not state().store.pipelines.set_webhook_secret(current_user()["id"], pipeline_id, secret):
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
@operation(
    "Remove the webhook secret",
    "Webhook calls need no signature again (unless the trigger sets require_signature).",
    tag="pipelines",
    responses={200: answer(WebhookSecretRemoved)},
)
def delete_webhook_secret(pipeline_id: str) -> Response:
    if not state().store.pipelines.set_webhook_secret(current_user()["id"], pipeline_id, None):
        raise not_found("pipeline")
    return jsonify({"pipeline_id": pipeline_id, "has_webhook_secret": False})
