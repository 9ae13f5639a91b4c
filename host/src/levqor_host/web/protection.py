"""Wire the security layer into an app: sign-in, rate limits, headers, trusted proxies.

Called once by ``create_app``. Rate limits (Flask-Limiter, application-wide limits chosen by
path, so routes added later by plugins, such as ``/api/v1/billing/*``, are covered without
touching their modules):

=========== =================================== =========================== =================
scope       applies to                          keyed by                    setting
=========== =================================== =========================== =================
user        every request with valid credentials the user                   LEVQOR_RATE_LIMITS_<PLAN>
                                                                            (else ..._USER_DEFAULT)
ip          every request without valid ones     the client address         LEVQOR_RATE_LIMIT_IP
signin      /api/v1/auth/login, /auth/link/*     the client address         LEVQOR_RATE_LIMIT_SIGNIN
billing     /api/v1/billing and below            the user, or the address   LEVQOR_RATE_LIMIT_BILLING
            (without credentials: only refused
            requests count, see below)
webhook     /hooks/<token>, app triggers'        the URL (its token, or     LEVQOR_RATE_LIMIT_WEBHOOK
            /hooks/triggers/<token> and          the connector)
            /hooks/apps/<connector>
=========== =================================== =========================== =================

Limited answers carry ``X-RateLimit-Limit``, ``-Remaining`` and ``-Reset``; ``Retry-After`` goes
only with a 429 (the limit's wait, unless the route gave its own) and a 503 that sets it.

Requests to ``/api/v1/billing`` without credentials are a payment provider's signed webhook
deliveries (the billing plugin verifies the signature): they are not counted by the IP limit,
and count against the billing limit per address only when refused (4xx/5xx: a bad signature),
so a burst of genuine deliveries is never throttled while forgeries still are.

``/health`` and the dashboard's static files are never limited. ``LEVQOR_RATE_LIMITS=off`` turns
every limit off.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from flask import Flask, request
from werkzeug.middleware.proxy_fix import ProxyFix

from levqor_host.security.jwt_auth import SupabaseVerifier
from levqor_host.web.access import enforce_access, peek_identity, undeclared_routes

log = logging.getLogger("levqor.security")

EXEMPT_PATHS = ("/health",)
#: the dashboard's static files (CSS, ES modules): a page load fetches several at once
EXEMPT_PREFIXES = ("/dashboard/static/",)
SIGNIN_PATHS = ("/api/v1/auth/login",)
SIGNIN_PREFIXES = ("/auth/link/",)
BILLING_PREFIX = "/api/v1/billing"
#: where Flask-Limiter writes its wait; :func:`_security_headers` turns it into ``Retry-After``
#: on a 429 only (the extension sends it on every answer, 200s too)
LIMITER_RETRY_AFTER = "X-Levqor-Limiter-Retry-After"
#: the only statuses that tell a client to come back later
RETRY_STATUSES = frozenset({429, 503})


@dataclass
class SecurityState:
    verifier: SupabaseVerifier | None
    limiter: Any = None


def _client_ip() -> str:
    return request.remote_addr or "unknown"


def _exempt() -> bool:
    return (
        request.path in EXEMPT_PATHS
        or request.path.startswith(EXEMPT_PREFIXES)
        or request.method == "OPTIONS"
    )


def _is_signin() -> bool:
    return request.path in SIGNIN_PATHS or request.path.startswith(SIGNIN_PREFIXES)


def _is_billing() -> bool:
    p = request.path
    return p == BILLING_PREFIX or p.startswith(BILLING_PREFIX + "/")


def _is_anonymous_billing() -> bool:
    """A request to the billing routes without credentials (a provider's webhook delivery)."""
    return _is_billing() and peek_identity() is None


def _refused(response: Any) -> bool:
    return response.status_code >= 400


def _is_webhook() -> bool:
    return request.path.startswith("/hooks/")


def _user_key() -> str:
    ident = peek_identity()
    return f"user:{ident.user['id']}" if ident is not None else f"ip:{_client_ip()}"


def _make_limiter(app: Flask, settings: Any) -> Any:
    from flask_limiter import ApplicationLimit, HeaderNames, Limiter

    def plan_limit() -> str:
        ident = peek_identity()
        plan = (ident.user.get("plan") if ident else None) or "free"
        return settings.plan_limits.get(plan, settings.rate_limit_user_default)

    limits = [
        ApplicationLimit(
            plan_limit,
            key_function=_user_key,
            scope="user",
            exempt_when=lambda: _exempt() or peek_identity() is None,
        ),
        ApplicationLimit(
            settings.rate_limit_ip,
            key_function=_client_ip,
            scope="ip",
            exempt_when=lambda: (
                _exempt() or _is_webhook() or _is_billing() or peek_identity() is not None
            ),
        ),
        ApplicationLimit(
            settings.rate_limit_signin,
            key_function=_client_ip,
            scope="signin",
            exempt_when=lambda: not _is_signin(),
        ),
        ApplicationLimit(
            settings.rate_limit_billing,
            key_function=_user_key,
            scope="billing",
            exempt_when=lambda: not _is_billing() or peek_identity() is None,
        ),
        ApplicationLimit(
            settings.rate_limit_billing,
            key_function=_client_ip,
            scope="billing",
            exempt_when=lambda: not _is_anonymous_billing(),
            deduct_when=_refused,
        ),
        ApplicationLimit(
            settings.rate_limit_webhook,
            key_function=lambda: request.path,
            scope="webhook",
            exempt_when=lambda: not _is_webhook(),
        ),
    ]
    return Limiter(
        _client_ip,
        app=app,
        application_limits=limits,
        storage_uri=settings.rate_limit_storage,
        strategy=settings.rate_limit_strategy,
        key_prefix=settings.rate_limit_prefix,
        headers_enabled=True,
        header_name_mapping={HeaderNames.RETRY_AFTER: LIMITER_RETRY_AFTER},
        retry_after="delta-seconds",
        in_memory_fallback_enabled=settings.rate_limit_storage.startswith("redis"),
        enabled=settings.rate_limits,
    )


def _security_headers(app: Flask, settings: Any) -> None:
    static = {
        "Content-Security-Policy": settings.csp,
        "Cross-Origin-Opener-Policy": "same-origin",
        "Cross-Origin-Embedder-Policy": "require-corp",
        "Cross-Origin-Resource-Policy": "same-origin",
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",
        "X-Frame-Options": "DENY",
        "Permissions-Policy": "camera=(), microphone=(), geolocation=(), payment=()",
    }
    if settings.hsts_max_age > 0:
        static["Strict-Transport-Security"] = f"max-age={settings.hsts_max_age}; includeSubDomains"

    @app.after_request  # registered before the limiter's, so it runs after it
    def _add_headers(resp):
        limiter_wait = resp.headers.pop(LIMITER_RETRY_AFTER, None)
        if resp.status_code not in RETRY_STATUSES:
            resp.headers.pop("Retry-After", None)
        elif resp.status_code == 429 and limiter_wait is not None:
            resp.headers.setdefault("Retry-After", limiter_wait)  # a route's own wait wins
        for k, v in static.items():
            resp.headers.setdefault(k, v)
        if request.path.startswith(("/api/", "/auth/", "/hooks/")):
            resp.headers.setdefault("Cache-Control", "no-store")
        return resp


def install_security(app: Flask, state: Any) -> SecurityState:
    settings = state.config.security
    # urllib3 logs every request line at DEBUG, full path included: Telegram bot tokens and Slack
    # webhook paths live in URL paths, so that logger never goes below INFO (found by the secrets
    # test in tests/security with a DEBUG root logger).
    u3 = logging.getLogger("urllib3.connectionpool")
    if u3.getEffectiveLevel() < logging.INFO or u3.level < logging.INFO:
        u3.setLevel(logging.INFO)
    if settings.trusted_proxies > 0:
        app.wsgi_app = ProxyFix(  # type: ignore[method-assign]
            app.wsgi_app,
            x_for=settings.trusted_proxies,
            x_proto=settings.trusted_proxies,
            x_host=settings.trusted_proxies,
        )
    verifier = None
    if settings.jwt_enabled:
        verifier = SupabaseVerifier(settings)
    elif settings.jwt_algorithms:
        log.warning(
            "Supabase sign-in is off: the token issuer is unknown (set SUPABASE_URL or "
            "LEVQOR_JWT_ISSUER)"
        )
    sec = SecurityState(verifier=verifier)
    app.extensions["levqor_security"] = sec
    _security_headers(app, settings)
    sec.limiter = _make_limiter(app, settings)
    app.before_request(enforce_access)  # after the limiter's check: a refused caller is counted
    if settings.rate_limits and settings.rate_limit_storage.startswith("memory://"):
        log.debug("rate limits kept in memory (per process); set LEVQOR_RATE_LIMIT_STORAGE")
    return sec


def report_undeclared_routes(app: Flask) -> None:
    """Log each route that declares no access (it stays closed); called once all blueprints,
    plugins' too, are registered."""
    for route in undeclared_routes(app):
        log.warning("route %s declares no access rule: it answers 500 until it declares one", route)
