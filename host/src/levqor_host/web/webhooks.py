"""Webhook triggers: ``POST /hooks/<token>``.

The token is unguessable and per pipeline. When the pipeline has a webhook secret (or its
trigger sets ``require_signature``), the request must carry ``X-Levqor-Timestamp`` (Unix
seconds, within 5 minutes) and ``X-Levqor-Signature: sha256=<hex HMAC-SHA256 of
"<timestamp>.<raw body>">``. A repeated ``X-Levqor-Delivery`` (or ``Idempotency-Key``) id
returns the run it started the first time instead of starting another.
"""

from __future__ import annotations

import hashlib
import hmac
import time

from flask import Blueprint, Response, current_app, jsonify, request

from levqor_host.errors import ApiError, parse_json
from levqor_host.web.access import public
from levqor_host.web.api.schemas import RunAccepted
from levqor_host.web.operations import answer, header, operation

bp = Blueprint("hooks", __name__)

SIGNATURE_TOLERANCE = 300


def _parse_body(max_bytes: int, max_depth: int) -> dict:
    raw = request.get_data(cache=True)
    if len(raw) > max_bytes:
        raise ApiError(413, "body_too_large", f"webhook body larger than {max_bytes} bytes")
    ctype = (request.mimetype or "").lower()
    if not raw:
        return {}
    if ctype == "application/json" or ctype.endswith("+json"):
        value = parse_json(raw, max_depth)  # the API's parser: NaN, lone surrogates, depth: 400
        return value if isinstance(value, dict) else {"body": value}
    if ctype == "application/x-www-form-urlencoded":
        from urllib.parse import parse_qs

        try:
            form = parse_qs(
                raw.decode("utf-8"),
                keep_blank_values=True,
                strict_parsing=False,
                max_num_fields=1000,
            )
        except (UnicodeDecodeError, ValueError):
            raise ApiError(400, "invalid_form", "malformed form body") from None
        return {k: (v[0] if len(v) == 1 else v) for k, v in form.items()}
    raise ApiError(
        415,
        "unsupported_media_type",
        "webhooks accept application/json or application/x-www-form-urlencoded bodies",
    )


def _check_signature(secret: str) -> None:
    ts = request.headers.get("X-Levqor-Timestamp", "")
    sig = request.headers.get("X-Levqor-Signature", "")
    if not ts or not sig:
        raise ApiError(
            401,
            "signature_required",
            "X-Levqor-Timestamp and X-Levqor-Signature headers are required",
        )
    try:
        ts_i = int(ts)
    except ValueError:
        raise ApiError(
            401, "invalid_signature", "X-Levqor-Timestamp must be Unix seconds"
        ) from None
    if abs(time.time() - ts_i) > SIGNATURE_TOLERANCE:
        raise ApiError(
            401, "invalid_signature", "timestamp outside the 5 minute tolerance (replay?)"
        )
    expected = hmac.new(
        secret.encode(), f"{ts_i}.".encode() + request.get_data(cache=True), hashlib.sha256
    ).hexdigest()
    given = sig.split("=", 1)[1] if sig.startswith("sha256=") else ""
    if not hmac.compare_digest(expected, given):
        raise ApiError(401, "invalid_signature", "signature does not match")


@bp.post("/hooks/<token>")
@public("the unguessable token (and the optional HMAC signature) is the credential")
@operation(
    "Webhook trigger",
    "Start a run of the pipeline with the body as trigger data (JSON, or a form as an "
    "object). With a webhook secret the request must be signed: X-Levqor-Timestamp and "
    "X-Levqor-Signature. A repeated delivery id answers the run it started the first time.",
    tag="triggers",
    responses={202: answer(RunAccepted), 200: answer(RunAccepted)},
    params=[header("X-Levqor-Delivery", {"type": "string"})],
    request_body={
        "required": False,
        "content": {
            "application/json": {"schema": {}},
            "application/x-www-form-urlencoded": {"schema": {"type": "object"}},
        },
    },
)
def receive(token: str) -> Response:
    st = current_app.extensions["levqor"]
    if len(token) > 200:
        raise ApiError(404, "not_found", "not found")
    # The lookups and the transaction that queues the run share one pooled connection.
    with st.store.pinned():
        run, created, user_id, trig = _accept(st, token)
    if trig.get("wait"):
        run = st.runs.wait(user_id, run["id"], float(trig.get("wait_seconds", 10))) or run
        final = run["status"] in ("succeeded", "failed", "cancelled")
        full = st.store.runs.get(user_id, run["id"]) or run
        out = {"run_id": run["id"], "status": run["status"], "created": created}
        if final:
            steps = full.get("steps") or []
            last = [s for s in steps if s["status"] == "succeeded"]
            out["output"] = last[-1]["output"] if last else None
            out["error"] = full.get("error")
        resp = jsonify(out)
        resp.status_code = 200 if final else 202
        return resp
    resp = jsonify({"run_id": run["id"], "status": run["status"], "created": created})
    resp.status_code = 202
    return resp


def _accept(st, token: str) -> tuple[dict, bool, str, dict]:
    """Check and queue a delivery: (run, created, user id, the pipeline's trigger)."""
    target = st.store.pipelines.webhook_target(token)
    doc = target.pipeline.get("doc") if target is not None else None
    if not isinstance(doc, dict) or (doc.get("trigger") or {}).get("type") != "webhook":
        raise ApiError(404, "not_found", "not found")
    p, trig = target.pipeline, doc["trigger"]
    if target.secret:
        _check_signature(target.secret)
    elif trig.get("require_signature"):
        raise ApiError(
            401, "signature_required", "this webhook requires a signature but has no secret yet"
        )
    data = _parse_body(st.config.web.webhook_max_bytes, st.config.web.max_json_depth)
    delivery = request.headers.get("X-Levqor-Delivery") or request.headers.get("Idempotency-Key")
    if delivery is not None and not (1 <= len(delivery) <= 200):
        raise ApiError(400, "invalid_request", "delivery id must be 1-200 characters")
    run, created = st.runs.start(
        target.user,
        p,
        data,
        trigger="webhook",
        idempotency_key=f"hook:{p['id']}:{delivery}" if delivery else None,
        credentials=target.credentials,
    )
    return run, created, target.user["id"], trig
