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

from flask import Blueprint, Response, current_app, jsonify, redirect
from pydantic import BaseModel

from levqor_host.errors import ApiError
from levqor_host.web.access import (
    CSRF_COOKIE,
    CSRF_HEADER,
    cookie_name,
    identify,
    public,
    session_only,
)
from levqor_host.web.operations import ERROR, Body, answer, operation

bp = Blueprint("auth", __name__)


class LoginIn(Body):
    email: str
    password: str


class SignedIn(BaseModel):
    user: dict
    csrf_token: str
    csrf_header: str


class SignedOut(BaseModel):
    signed_out: bool


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
@operation(
    "Sign in with email and password (sets the session cookie)",
    "For operators without Supabase: answers the CSRF token the dashboard sends back in "
    "X-CSRF-Token on changes (also set as the readable levqor_csrf cookie).",
    tag="auth",
    body=LoginIn,
    responses={200: answer(SignedIn)},
)
def login(body: LoginIn) -> Response:
    from levqor_host.security.passwords import verify_password

    st = _state()
    email = body.email.strip().lower()
    user = st.store.users.get_by_email(email) if 0 < len(email) <= 320 else None
    stored = st.store.auth.get_password_hash(user["id"]) if user else None
    if not verify_password(body.password, stored) or user is None:
        raise ApiError(401, "invalid_credentials", "wrong email or password")
    sid, sess = st.store.auth.create_session(user["id"], st.config.security.session_ttl)
    resp = jsonify(
        {"user": _user_out(user), "csrf_token": sess["csrf_token"], "csrf_header": CSRF_HEADER}
    )
    _set_cookies(resp, sid, sess["csrf_token"])
    return resp


@bp.post("/api/v1/auth/logout")
@session_only()
@operation(
    "End the browser session (needs the session cookie and X-CSRF-Token)",
    "Deletes the session and clears its cookies; an API key is revoked with "
    "`levqor keys revoke` instead.",
    tag="auth",
    responses={200: answer(SignedOut)},
)
def logout() -> Response:
    """Ends the browser session (``session_only``: the session and its CSRF token are checked
    before this runs; an API key is revoked with ``levqor keys revoke`` instead)."""

    ident = identify()
    _state().store.auth.delete_session(ident.session_id or "")
    resp = jsonify({"signed_out": True})
    _clear_cookies(resp)
    return resp


@bp.get("/auth/link/<token>")
@public("the one-time token is the credential")
@operation(
    "Use a one-time login link (sets the session cookie, redirects to the dashboard)",
    "The link printed by `levqor users login-link`; it works once and expires.",
    tag="auth",
    responses={303: answer(None, "signed in; redirect to the dashboard"), 404: ERROR},
)
def login_link(token: str) -> Response:
    st = _state()
    uid = st.store.auth.consume_login_link(token)
    user = st.store.users.get(uid) if uid else None
    if user is None:
        raise ApiError(
            404, "not_found", "this login link is unknown, used or expired: ask for a new one"
        )
    sid, sess = st.store.auth.create_session(user["id"], st.config.security.session_ttl)
    resp = redirect("/", code=303)
    resp.headers["Cache-Control"] = "no-store"
    _set_cookies(resp, sid, sess["csrf_token"])
    return resp
