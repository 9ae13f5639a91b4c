"""``Idempotency-Key`` on the API's creating requests (one mechanism for every such route).

A client may send ``Idempotency-Key: <1-200 characters>`` (on ``POST /api/v1/run`` also the
body field ``idempotency_key``; both at once must agree) with a request that creates something.
Keys belong to the signed-in user and are kept in the database for ``LEVQOR_IDEMPOTENCY_HOURS``
(24) hours. The semantics are Stripe's and the IETF ``Idempotency-Key`` draft's:

* the first request runs; a success (2xx) is kept: status, body and ``Location``;
* the same key with the same request (method, path, query and JSON body) answers the kept
  status and body again, with ``Idempotent-Replayed: true``, and creates nothing;
* the same key with a different request: 422 ``idempotency_key_reused``;
* the same key while the first request is still running: 409 ``idempotency_key_in_use``;
* an error answer (4xx, 5xx) is not kept: the key is free again, so a corrected retry proceeds.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable
from datetime import timedelta
from functools import wraps
from typing import Any

from flask import Response, current_app, request

from levqor_host.errors import ApiError
from levqor_host.web.access import current_user

log = logging.getLogger("levqor.idempotency")

HEADER = "Idempotency-Key"
REPLAYED = "Idempotent-Replayed"


def _fingerprint() -> str:
    raw = request.get_data(cache=True)
    try:
        body: Any = json.dumps(json.loads(raw), sort_keys=True, separators=(",", ":"))
    except (ValueError, UnicodeDecodeError, RecursionError):
        body = raw.decode("latin-1")
    query = sorted(request.args.items(multi=True))
    text = json.dumps([request.method, request.path, query, body], separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def request_key(body_field: str | None = None) -> str | None:
    """The request's idempotency key (the header, or ``body_field`` of a JSON object body);
    400 when it is malformed or the two disagree."""
    header = request.headers.get(HEADER)
    field = None
    if body_field is not None:
        try:
            data = json.loads(request.get_data(cache=True))
        except (ValueError, UnicodeDecodeError, RecursionError):
            data = None  # the route answers a malformed body
        if isinstance(data, dict) and data.get(body_field) is not None:
            field = data[body_field]
            if not isinstance(field, str):
                raise ApiError(400, "invalid_request", f"field {body_field} has the wrong type")
    if header is not None and field is not None and header != field:
        raise ApiError(
            400,
            "invalid_request",
            f"the {HEADER} header and the {body_field} field differ: send one key",
        )
    key = header if header is not None else field
    if key is not None and not 1 <= len(key) <= 200:
        raise ApiError(400, "invalid_request", f"{HEADER} must be 1-200 characters")
    return key


def idempotent(body_field: str | None = None) -> Callable:
    """Decorator for a creating route: honour its idempotency key as the module says. Put it
    under the access declaration (the key belongs to the signed-in user)."""

    def deco(fn: Callable) -> Callable:
        @wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            key = request_key(body_field)
            if key is None:
                return fn(*args, **kwargs)
            st = current_app.extensions["levqor"]
            user_id = current_user()["id"]
            found = st.store.idempotency.claim(
                user_id,
                key,
                _fingerprint(),
                ttl=timedelta(hours=st.config.web.idempotency_hours),
                stale=timedelta(seconds=st.config.web.run_wait_max + 120),
            )
            if found.state == "done":
                resp = Response(found.body, status=found.status, mimetype="application/json")
                if found.location:
                    resp.headers["Location"] = found.location
                resp.headers[REPLAYED] = "true"
                return resp
            if found.state == "mismatch":
                raise ApiError(
                    422,
                    "idempotency_key_reused",
                    f"this {HEADER} was used with a different request: use a new key",
                )
            if found.state == "running":
                raise ApiError(
                    409,
                    "idempotency_key_in_use",
                    f"a request with this {HEADER} is still being answered: retry shortly",
                )
            try:
                resp = current_app.make_response(fn(*args, **kwargs))
            except BaseException:
                st.store.idempotency.release(user_id, key)
                raise
            try:
                if 200 <= resp.status_code < 300:
                    st.store.idempotency.complete(
                        user_id,
                        key,
                        resp.status_code,
                        resp.get_data(as_text=True),
                        resp.headers.get("Location"),
                    )
                else:
                    st.store.idempotency.release(user_id, key)
            except Exception:  # noqa: BLE001 - the work is done: answer it truthfully
                log.warning("could not keep the answer for an Idempotency-Key", exc_info=True)
            return resp

        return wrapper

    return deco
