"""Webhook triggers: ``POST /hooks/<token>``, and app triggers' deliveries:
``/hooks/triggers/<token>`` and ``/hooks/apps/<connector>``.

The token is unguessable and per pipeline. When the pipeline has a webhook secret (or its
trigger sets ``require_signature``), the request must carry ``X-Levqor-Timestamp`` (Unix
seconds, within 5 minutes) and ``X-Levqor-Signature: sha256=<hex HMAC-SHA256 of
"<timestamp>.<raw body>">``. A repeated ``X-Levqor-Delivery`` (or ``Idempotency-Key``) id
returns the run it started the first time instead of starting another. A pipeline switched off
answers 404 (its trigger starts no run).

An instant app trigger's upstream (Telegram's ``setWebhook``, Slack's Events API) posts to the
URL the host registered: ``/hooks/triggers/<token>`` (one per enabled pipeline) or
``/hooks/apps/<connector>`` (one for a connector whose webhook is connector-wide). These routes
only read the request (its raw body bounded by ``LEVQOR_WEBHOOK_MAX_BYTES``: 413 beyond) into a
:class:`levqor_kernel.Delivery` and answer what the trigger service says; the connector verifies
it (a bad signature is 401), answers handshakes (a GET, a URL challenge) and the service starts
one run per new item.
"""

from __future__ import annotations

import hashlib
import hmac
import time

from flask import Blueprint, Response, current_app, jsonify, request
from levqor_kernel import Delivery

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
    if not p.get("enabled", True):  # switched off: its trigger starts no run
        raise ApiError(404, "not_found", "not found")
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


# ------------------------------------------------------------------------------ app triggers
#: the longest query string a delivery may carry (handshakes put a challenge or a token there)
MAX_QUERY_FIELDS = 50


def read_delivery(max_bytes: int) -> Delivery:
    """The current request as a :class:`Delivery`: header names lower case, the raw body (read
    no further than ``max_bytes``: 413 beyond), the query's first value per name."""
    length = request.content_length
    if length is not None and length > max_bytes:
        raise ApiError(413, "body_too_large", f"delivery body larger than {max_bytes} bytes")
    raw = request.stream.read(max_bytes + 1)
    if len(raw) > max_bytes:
        raise ApiError(413, "body_too_large", f"delivery body larger than {max_bytes} bytes")
    if len(request.args) > MAX_QUERY_FIELDS:
        raise ApiError(400, "invalid_request", f"at most {MAX_QUERY_FIELDS} query parameters")
    return Delivery(
        method=request.method,
        headers={k.lower(): v for k, v in request.headers.items()},
        body=raw,
        query={k: request.args.get(k, "") for k in request.args},
    )


def delivery_response(status: int, body: object, headers: dict[str, str] | None) -> Response:
    """The service's ``(status, body, headers)`` as an answer: an object or a list as JSON, text
    as ``text/plain`` (a challenge echoed back) unless the headers name a type, bytes as they are."""
    headers = dict(headers or {})
    if isinstance(body, dict | list):
        resp = jsonify(body)
    elif isinstance(body, bytes):
        resp = Response(body, mimetype="application/octet-stream")
    elif body is None:
        resp = Response(b"")
    else:
        resp = Response(str(body), mimetype="text/plain")
    resp.status_code = status
    for k, v in headers.items():
        resp.headers[k] = v
    return resp


_DELIVERY_BODY = {
    "required": False,
    "content": {
        "application/json": {"schema": {}},
        "application/x-www-form-urlencoded": {"schema": {"type": "object"}},
    },
    "description": "what the app sends, in any media type: the connector verifies and parses it",
}
_DELIVERY_ANSWERS = {
    200: answer(None, "the delivery was taken (or a handshake answered: the connector's body)"),
    401: answer(None, "the connector refused the delivery's signature"),
}


def _deliver(**target: str) -> Response:
    st = current_app.extensions["levqor"]
    delivery = read_delivery(st.config.web.webhook_max_bytes)
    status, body, headers = st.triggers.deliver(delivery=delivery, **target)
    return delivery_response(status, body, headers)


_TOKEN_ACCESS = "the unguessable per-registration token (and the connector's signature check) is the credential"
_CONNECTOR_ACCESS = "the connector verifies each delivery (a signing secret); unsigned ones are refused"
_TOKEN_TEXT = (
    "Where an instant app trigger's upstream sends its events (the URL the host registered "
    "when the pipeline was switched on). The connector verifies the delivery (401 when its "
    "signature does not), answers handshakes (a URL challenge) and each new item starts one "
    "run; a repeated delivery or item starts nothing. 404 for an unknown or switched-off "
    "trigger; 413 for a body over LEVQOR_WEBHOOK_MAX_BYTES."
)
_CONNECTOR_TEXT = (
    "Where an app that sends every event to one URL (Slack's Events API) sends them: the "
    "connector verifies the delivery, answers handshakes, and routes each item to the "
    "switched-on pipelines whose registration it matches. 404 for a connector with no "
    "connector-wide trigger; 413 for a body over LEVQOR_WEBHOOK_MAX_BYTES."
)


def _token_view(token: str) -> Response:
    if len(token) > 200:
        raise ApiError(404, "not_found", "not found")
    return _deliver(token=token)


def _connector_view(connector: str) -> Response:
    if len(connector) > 40:
        raise ApiError(404, "not_found", "not found")
    return _deliver(connector=connector)


@bp.post("/hooks/triggers/<token>")
@public(_TOKEN_ACCESS)
@operation(
    "App trigger delivery",
    _TOKEN_TEXT,
    tag="triggers",
    responses=_DELIVERY_ANSWERS,
    request_body=_DELIVERY_BODY,
)
def app_trigger_delivery(token: str) -> Response:
    return _token_view(token)


@bp.get("/hooks/triggers/<token>")
@public(_TOKEN_ACCESS)
@operation(
    "App trigger handshake",
    "An upstream's check of the URL before it sends events (a GET with a challenge in the "
    "query), answered by the connector. " + _TOKEN_TEXT,
    tag="triggers",
    responses=_DELIVERY_ANSWERS,
)
def app_trigger_handshake(token: str) -> Response:
    return _token_view(token)


@bp.post("/hooks/apps/<connector>")
@public(_CONNECTOR_ACCESS)
@operation(
    "Connector-wide app trigger delivery",
    _CONNECTOR_TEXT,
    tag="triggers",
    responses=_DELIVERY_ANSWERS,
    request_body=_DELIVERY_BODY,
)
def app_connector_delivery(connector: str) -> Response:
    return _connector_view(connector)


@bp.get("/hooks/apps/<connector>")
@public(_CONNECTOR_ACCESS)
@operation(
    "Connector-wide app trigger handshake",
    "An upstream's check of the URL before it sends events, answered by the connector. "
    + _CONNECTOR_TEXT,
    tag="triggers",
    responses=_DELIVERY_ANSWERS,
)
def app_connector_handshake(connector: str) -> Response:
    return _connector_view(connector)
