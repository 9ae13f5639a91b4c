"""Authentication and scopes.

Every route declares who may call it (:mod:`levqor_kernel.access`: ``require(scope)`` here,
``signed_in()``, ``session_only()``, ``public(reason)``); :func:`enforce_access` enforces the
declaration before any view runs, and a route without one is closed.

Three ways in, tried in this order:

* ``Authorization: Bearer lvq_...``: an API key; its scopes are the key's.
* ``Authorization: Bearer <jwt>``: a Supabase access token (see
  :mod:`levqor_host.security.jwt_auth`); the user is created on first sight and has every
  scope but ``admin`` (``admin`` too when the user is an admin).
* the host's session cookie (dashboard sign-in, :mod:`levqor_host.web.sessions`), with the
  same scopes as a JWT. A cookie-authenticated request that changes something (any method but
  GET, HEAD, OPTIONS) must also carry the session's CSRF token in ``X-CSRF-Token`` (or a
  ``csrf_token`` form field); bearer requests are exempt, since a browser never adds them.

A request that sends an ``Authorization`` header is judged by it alone (a bad key never falls
back to a cookie). The outcome is computed once per request and cached on ``flask.g``, so the
rate limiter (which keys authenticated callers by user) and the route share it.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from flask import current_app, g, request
from levqor_kernel.access import (  # noqa: F401 - public, session_only, signed_in: for routes
    Access,
    access_of,
    public,
    requires,
    session_only,
    signed_in,
)

from levqor_host.errors import ApiError
from levqor_host.security.scopes import DEFAULT_SCOPES

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
CSRF_HEADER = "X-CSRF-Token"
#: the readable cookie that carries the session's CSRF token to the dashboard's script
CSRF_COOKIE = "levqor_csrf"


def cookie_name(cfg: Any) -> str:
    """The session cookie's name: ``__Host-`` prefixed (Secure, Path=/) outside development."""
    return "levqor_session" if cfg.dev else "__Host-levqor_session"


@dataclass
class Identity:
    """Who is calling: ``kind`` is ``key``, ``jwt`` or ``session``."""

    kind: str
    user: dict
    scopes: frozenset[str]
    key: dict = field(default_factory=dict)
    session: dict | None = None
    session_id: str | None = None


def _unauthorized(message: str) -> ApiError:
    return ApiError(
        401, "unauthorized", message, headers={"WWW-Authenticate": 'Bearer realm="levqor"'}
    )


def current_user() -> dict:
    return g.levqor_user


def user_scopes(user: dict) -> frozenset[str]:
    """Scopes of a signed-in person (JWT or session): everything, admin only for admins."""
    return frozenset(DEFAULT_SCOPES) | ({"admin"} if user.get("is_admin") else set())


def security_state() -> Any:
    return current_app.extensions.get("levqor_security")


def _identify() -> Identity:
    """Authenticate the request (raises ApiError 401/503); no CSRF check here."""
    state = current_app.extensions["levqor"]
    header = request.headers.get("Authorization")
    if header is not None:
        scheme, _, token = header.partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise _unauthorized("send an API key as 'Authorization: Bearer lvq_...'")
        if token.startswith("lvq_"):
            found = state.store.api_keys.authenticate(token)
            if found is None:
                raise _unauthorized("invalid or revoked API key")
            user, key = found
            return Identity("key", user, frozenset(key.get("scopes") or ()), key=key)
        from levqor_host.security.jwt_auth import InvalidToken, ProviderUnavailable, looks_like_jwt

        sec = security_state()
        verifier = sec.verifier if sec is not None else None
        if not looks_like_jwt(token):
            raise _unauthorized("invalid or revoked API key")
        if verifier is None:
            raise _unauthorized(
                "sign-in tokens are not accepted here: set SUPABASE_JWT_SECRET or SUPABASE_URL "
                "(or use an API key)"
            )
        try:
            claims = verifier.verify(token)
        except InvalidToken as e:
            raise _unauthorized(f"invalid sign-in token: {e}") from None
        except ProviderUnavailable:
            raise ApiError(
                503, "auth_unavailable", "the sign-in provider's keys cannot be fetched right now"
            ) from None

        user = state.store.auth.user_for_identity("supabase", claims["sub"], claims["email"])
        return Identity("jwt", user, user_scopes(user), key={"id": None, "kind": "jwt"})
    sid = request.cookies.get(cookie_name(state.config))
    if sid:
        found = state.store.auth.get_session(sid)
        if found is None:
            raise _unauthorized("your session expired: sign in again")
        user, sess = found
        return Identity(
            "session",
            user,
            user_scopes(user),
            key={"id": None, "kind": "session"},
            session=sess,
            session_id=sid,
        )
    raise _unauthorized("send an API key as 'Authorization: Bearer lvq_...' or sign in")


def identify(*, cached_errors: bool = True) -> Identity:
    """The caller's identity, computed once per request (errors are cached too)."""
    cached = g.get("_levqor_identity")
    if cached is None:
        try:
            cached = _identify()
        except ApiError as e:
            cached = e
        g._levqor_identity = cached
    if isinstance(cached, ApiError):
        raise cached
    return cached


def peek_identity() -> Identity | None:
    """The identity when the request carries valid credentials, else None (never raises)."""
    try:
        return identify()
    except ApiError:
        return None


def check_csrf(ident: Identity) -> None:
    if ident.kind != "session" or request.method in SAFE_METHODS:
        return
    given = request.headers.get(CSRF_HEADER) or ""
    if not given and request.mimetype == "application/x-www-form-urlencoded":
        given = request.form.get("csrf_token", "")
    expected = (ident.session or {}).get("csrf_token") or ""
    if not given or not expected or not hmac.compare_digest(given, expected):
        raise ApiError(
            403,
            "csrf_failed",
            f"missing or wrong CSRF token: send the {CSRF_HEADER} header with the token "
            "from sign-in (cookie levqor_csrf)",
        )


def authenticate() -> tuple[dict, dict]:
    """``(user, key)`` of the caller (raises 401/403); ``key`` is the API key row for keys,
    ``{"id": None, "kind": "jwt"|"session"}`` otherwise."""
    ident = identify()
    check_csrf(ident)
    return ident.user, {**ident.key, "scopes": sorted(ident.scopes)}


def check_request(scope: str | None = None) -> Identity:
    """Authenticate the current request as :func:`require` does: the caller (API key, JWT or
    session cookie plus its CSRF token on mutations), with ``scope`` when given. Sets
    ``g.levqor_user``/``g.levqor_key``; raises ApiError 401/403 (and 503 from the JWT check).
    Plugins reach it through ``Services.authenticate(scope)``."""
    ident = identify()
    check_csrf(ident)
    scopes = ident.scopes
    if scope and scope not in scopes and "admin" not in scopes:
        raise ApiError(
            403,
            "insufficient_scope",
            f"this API key lacks the scope {scope!r}",
            {"required_scope": scope},
        )
    g.levqor_user = ident.user
    g.levqor_key = {**ident.key, "scopes": sorted(scopes)}
    g.levqor_identity = ident
    return ident


def require(scope: str) -> Callable:
    """Decorator: the route needs a signed-in caller holding ``scope``. It records the
    declaration on the view (:mod:`levqor_kernel.access`); :func:`enforce_access` enforces it
    before the view runs, for host and plugin routes alike."""
    return requires(scope)


def _is_static(endpoint: str) -> bool:
    """Flask's own view for a static folder (the app's or a blueprint's): public files."""
    return endpoint == "static" or endpoint.endswith(".static")


def route_access(endpoint: str) -> Access | None:
    """The declaration of the route ``endpoint`` (static folders are public by construction)."""
    if _is_static(endpoint):
        return Access("public", reason="files of a package's static folder")
    return access_of(current_app.view_functions.get(endpoint))


def enforce_access() -> None:
    """``before_request``: enforce the declaration of the matched route (see
    :mod:`levqor_kernel.access`). A route without one is closed (500 ``access_undeclared``), so
    a route nobody reviewed never answers; ``signed_in()`` holds only for GET and HEAD."""
    endpoint = request.endpoint
    if endpoint is None:  # no route matched: Flask answers 404/405
        return
    if request.method == "OPTIONS" and request.url_rule is not None:
        if getattr(current_app.view_functions.get(endpoint), "provide_automatic_options", True):
            return  # Flask's automatic answer, the view does not run
    access = route_access(endpoint)
    if access is None or (access.kind == "signed_in" and request.method not in SAFE_METHODS):
        raise ApiError(
            500,
            "access_undeclared",
            "this route declares no access rule and stays closed: its module must declare one "
            "(levqor_kernel.access)",
        )
    if access.kind == "public":
        return
    ident = check_request(access.scope if access.kind == "scope" else None)
    if access.kind == "session" and ident.kind != "session":
        raise ApiError(
            403,
            "session_required",
            "this route takes the dashboard's session cookie, not an API key or sign-in token",
        )


def undeclared_routes(app: Any) -> list[str]:
    """Rules of ``app`` whose view declares no access (logged at start; closed when called)."""
    with app.app_context():
        return sorted(
            f"{','.join(sorted(r.methods - {'HEAD', 'OPTIONS'}))} {r.rule}"
            for r in app.url_map.iter_rules()
            if route_access(r.endpoint) is None
        )
