"""The Flask side of observability: request ids, the access line and HTTP metrics of every
request, the ``/metrics`` answer, and Sentry with its Flask integration. Logging, scrubbing,
the metrics text and Sentry itself are :mod:`levqor_host.observability`."""

from __future__ import annotations

import hmac
import logging
import re
import time
import uuid
from typing import TYPE_CHECKING

from flask import Flask, Response, g, request
from prometheus_client import CONTENT_TYPE_LATEST

from levqor_host.errors import ApiError
from levqor_host.observability import init_sentry, metrics_text, request_id_var

if TYPE_CHECKING:
    from levqor_host.services import Services

log = logging.getLogger("levqor.http")

_REQUEST_ID_OK = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


def _route() -> str:
    rule = request.url_rule
    return rule.rule if rule is not None else "<unmatched>"


def install_request_hooks(app: Flask, state: Services) -> None:
    @app.before_request
    def _start() -> None:
        rid = request.headers.get("X-Request-ID", "")
        if not _REQUEST_ID_OK.match(rid):
            rid = uuid.uuid4().hex
        g.levqor_request_id = rid
        g.levqor_t0 = time.perf_counter()
        g.levqor_rid_token = request_id_var.set(rid)

    @app.after_request
    def _finish(resp: Response) -> Response:
        rid = getattr(g, "levqor_request_id", None)
        if rid:
            resp.headers["X-Request-ID"] = rid
        t0 = getattr(g, "levqor_t0", None)
        elapsed = time.perf_counter() - t0 if t0 is not None else 0.0
        route = _route()
        state.metrics.observe_request(request.method, route, resp.status_code, elapsed)
        if resp.status_code == 429 and not getattr(g, "levqor_rate_limit_counted", False):
            state.metrics.rate_limited.labels("app").inc()
        log.info(
            "%s %s %s",
            request.method,
            route,
            resp.status_code,
            extra={
                "event": "request",
                "method": request.method,
                "route": route,
                "status": resp.status_code,
                "duration_ms": round(elapsed * 1000, 2),
            },
        )
        return resp

    @app.teardown_request
    def _reset(_exc: BaseException | None) -> None:
        token = g.pop("levqor_rid_token", None)
        if token is not None:
            try:
                request_id_var.reset(token)
            except (ValueError, RuntimeError):  # set in another context: just clear it
                request_id_var.set(None)


def metrics_response(state: Services) -> Response:
    token = state.config.observability.metrics_token
    if token:
        auth = request.headers.get("Authorization", "")
        given = auth[7:] if auth.lower().startswith("bearer ") else ""
        if not hmac.compare_digest(given.encode(), token.encode()):
            raise ApiError(
                401,
                "unauthorized",
                "send Authorization: Bearer <LEVQOR_METRICS_TOKEN>",
                headers={"WWW-Authenticate": 'Bearer realm="metrics"'},
            )
    text = metrics_text(state.metrics.registry, state.store, state.config.observability.prometheus_multiproc_dir)
    return Response(text, mimetype=CONTENT_TYPE_LATEST.split(";")[0])


def install_observability(app: Flask, state: Services) -> None:
    """Request ids, access lines and HTTP metrics on ``app``; Sentry when configured."""
    install_request_hooks(app, state)
    from sentry_sdk.integrations.flask import FlaskIntegration

    cfg = state.config
    init_sentry(cfg.observability.sentry_dsn, cfg.observability.sentry_environment, [FlaskIntegration()])
