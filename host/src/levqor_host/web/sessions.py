"""Host sessions for operators without Supabase: password sign-in and one-time login links.

* ``POST /api/v1/auth/login`` ``{"email", "password"}``: sets the session cookie and answers
  the CSRF token (also set as the readable ``levqor_csrf`` cookie for the dashboard's script).
* ``POST /api/v1/auth/logout``: ends the session (cookie + CSRF token required).
* ``GET /auth/link/<token>``: consumes a one-time link printed by ``levqor users login-link``,
  sets the cookie and redirects to the dashboard.

The session cookie is HttpOnly, SameSite=Lax and, outside development (``LEVQOR_DEV=1``),
Secure with the ``__Host-`` prefix (no Domain, Path=/, only over HTTPS).
"""

from __future__ import annotations

from flask import Blueprint, current_app, jsonify, redirect

from levqor_host.errors import ApiError, check_fields
from levqor_host.security.auth import (
    CSRF_COOKIE,
    CSRF_HEADER,
    cookie_name,
    identify,
    public,
    session_only,
)
from levqor_host.web.api.openapi import ERR, _json, _op, _path_param
from levqor_host.web.errors import json_body

bp = Blueprint("auth", __name__)


def _state():
    return current_app.extensions["levqor"]


def _user_out(u: dict) -> dict:
    return {"id": u["id"], "email": u["email"], "name": u.get("name"), "plan": u.get("plan")}


def _set_cookies(resp, sid: str, csrf: str) -> None:
    cfg = _state().config
    ttl = cfg.security.session_ttl
    secure = not cfg.dev
    resp.set_cookie(
        cookie_name(cfg), sid, max_age=ttl, httponly=True, secure=secure, samesite="Lax", path="/"
    )
    resp.set_cookie(
        CSRF_COOKIE, csrf, max_age=ttl, httponly=False, secure=secure, samesite="Lax", path="/"
    )


def _clear_cookies(resp) -> None:
    cfg = _state().config
    secure = not cfg.dev
    for name, http_only in ((cookie_name(cfg), True), (CSRF_COOKIE, False)):
        resp.set_cookie(
            name, "", max_age=0, expires=0, httponly=http_only, secure=secure, samesite="Lax"
        )


@bp.post("/api/v1/auth/login")
@public("sign-in itself; rate limited")
def login():
    from levqor_host.security.passwords import verify_password
    from levqor_host.store.auth import create_session, get_password_hash

    st = _state()
    b = check_fields(
        json_body(st.config.max_json_depth), {"email": str, "password": str}, ("email", "password")
    )
    email = b["email"].strip().lower()
    user = st.store.get_user_by_email(email) if 0 < len(email) <= 320 else None
    stored = get_password_hash(st.store, user["id"]) if user else None
    if not verify_password(b["password"], stored) or user is None:
        raise ApiError(401, "invalid_credentials", "wrong email or password")
    sid, sess = create_session(st.store, user["id"], st.config.security.session_ttl)
    resp = jsonify(
        {"user": _user_out(user), "csrf_token": sess["csrf_token"], "csrf_header": CSRF_HEADER}
    )
    _set_cookies(resp, sid, sess["csrf_token"])
    return resp


@bp.post("/api/v1/auth/logout")
@session_only()
def logout():
    """Ends the browser session (``session_only``: the session and its CSRF token are checked
    before this runs; an API key is revoked with ``levqor keys revoke`` instead)."""
    from levqor_host.store.auth import delete_session

    ident = identify()
    delete_session(_state().store, ident.session_id or "")
    resp = jsonify({"signed_out": True})
    _clear_cookies(resp)
    return resp


@bp.get("/auth/link/<token>")
@public("the one-time token is the credential")
def login_link(token: str):
    from levqor_host.store.auth import consume_login_link, create_session

    st = _state()
    uid = consume_login_link(st.store, token)
    user = st.store.get_user(uid) if uid else None
    if user is None:
        raise ApiError(
            404, "not_found", "this login link is unknown, used or expired: ask for a new one"
        )
    sid, sess = create_session(st.store, user["id"], st.config.security.session_ttl)
    resp = redirect("/", code=303)
    resp.headers["Cache-Control"] = "no-store"
    _set_cookies(resp, sid, sess["csrf_token"])
    return resp


bp.openapi_paths = {  # type: ignore[attr-defined]
    "/api/v1/auth/login": {
        "post": _op(
            "Sign in with email and password (sets the session cookie)",
            {
                "200": _json(
                    {
                        "type": "object",
                        "required": ["user", "csrf_token"],
                        "properties": {
                            "user": {"type": "object"},
                            "csrf_token": {"type": "string"},
                            "csrf_header": {"type": "string"},
                        },
                    }
                )
            },
            body={
                "type": "object",
                "required": ["email", "password"],
                "additionalProperties": False,
                "properties": {"email": {"type": "string"}, "password": {"type": "string"}},
            },
            public=True,
            tag="auth",
        )
    },
    "/api/v1/auth/logout": {
        "post": _op(
            "End the browser session (needs the session cookie and X-CSRF-Token)",
            {"200": _json({"type": "object"})},
            tag="auth",
        )
    },
    "/auth/link/{token}": {
        "get": _op(
            "Use a one-time login link (sets the session cookie, redirects to the dashboard)",
            {"303": {"description": "signed in; redirect to the dashboard"}, "404": ERR},
            params=[_path_param("token")],
            public=True,
            tag="auth",
        )
    },
}
