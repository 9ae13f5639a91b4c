"""A local fake OAuth2 authorization server: ``/authorize`` and ``/token`` over real HTTP.

It speaks the wire contract of the authorization code grant with PKCE and of refreshing, so the
host's "Connect" flow and its refresh path run against it unchanged, and connector helpers
configure it with their provider's quirks.

Contract sources (checked with the docs search before writing this fake):

* RFC 6749 section 4.1.1-4.1.2 (https://www.rfc-editor.org/rfc/rfc6749#section-4.1; the
  authorization response example quoted at
  https://docs.microsoft.com/en-us/openspecs/windows_protocols/ms-oapx/d09e9772-51df-45e0-9c4a-93f44197a73e):
  ``GET /authorize?response_type=code&client_id&redirect_uri&scope&state``; on consent the
  server answers ``302 Found`` to ``redirect_uri?code=...&state=...`` (``state`` exactly as
  received); when the user denies, ``error=access_denied`` (and ``state``) in the query; a
  missing or unknown ``client_id`` or ``redirect_uri`` is shown to the user and never
  redirected (https://ldapwiki.com/wiki/OAuth%20Error).
* RFC 6749 section 4.1.3 / 5.1 / 5.2 (https://www.rfc-editor.org/rfc/rfc6749#section-5.2,
  list quoted at https://snippets.aktagon.com/snippets/981-oauth2-errors): ``POST /token``,
  ``application/x-www-form-urlencoded``, ``grant_type=authorization_code`` with ``code`` and
  ``redirect_uri`` (which must match the authorization request's); success is JSON
  ``access_token``, ``token_type``, ``expires_in``, ``refresh_token``, ``scope`` with
  ``Cache-Control: no-store``; errors are HTTP 400 JSON ``{"error", "error_description"}``
  with ``invalid_request``, ``invalid_client`` (401, with ``WWW-Authenticate`` when the client
  used HTTP Basic), ``invalid_grant`` (code or refresh token invalid, expired, revoked, used
  for another redirect URI or client), ``unsupported_grant_type``. An authorization code is
  single use.
* RFC 6749 section 2.3.1: client authentication by HTTP Basic (id and secret form-encoded
  first) or by ``client_id``/``client_secret`` in the body.
* RFC 6749 section 6 (https://rfcinfo.com/rfc-6749/refreshAccessToken,
  https://oauth.net/2/grant-types/refresh-token/): ``grant_type=refresh_token&refresh_token``;
  the answer is as 5.1; the server MAY issue a new refresh token (then the old one is dead);
  Google's answer carries none, so the client keeps the one it has.
* RFC 7636 sections 4.2-4.6 (S256 as quoted at https://ldapwiki.com/wiki/Code_challenge):
  ``code_challenge`` and ``code_challenge_method=S256`` on the authorization request;
  ``code_verifier`` on the token request; the server checks
  ``BASE64URL-ENCODE(SHA256(ASCII(code_verifier))) == code_challenge`` and answers
  ``invalid_grant`` otherwise.
* Provider shapes a helper reproduces with ``token_fields`` and ``ok_field``: Slack's
  ``oauth.v2.access`` (https://docs.slack.dev/reference/methods/oauth.v2.access; response type
  https://app.unpkg.com/@slack/web-api@6.8.1/files/dist/response/OauthV2AccessResponse.d.ts):
  HTTP 200 with ``ok`` true/false, ``team: {id, name}``, ``bot_user_id``, ``app_id``,
  ``token_type: "bot"``, ``scope`` comma separated, errors such as ``invalid_code`` and
  ``invalid_refresh_token`` in ``error``; Notion's ``POST /v1/oauth/token``
  (https://developers.notion.com/reference/create-a-token): HTTP Basic client auth,
  ``workspace_name``, ``workspace_id``, ``bot_id``, ``owner``; Google's refresh answer: no
  ``refresh_token`` and no ``id_token`` unless asked.

Usage::

    with FakeAuthorizationServer(expires_in=3600, token_fields={"team": {"name": "Acme"}}) as auth:
        env = {"LEVQOR_OAUTH_DEMO_AUTHORIZATION_URL": auth.authorization_url,
               "LEVQOR_OAUTH_DEMO_TOKEN_URL": auth.token_url,
               "LEVQOR_OAUTH_DEMO_CLIENT_ID": auth.client_id,
               "LEVQOR_OAUTH_DEMO_CLIENT_SECRET": auth.client_secret}
        ...
        auth.expire_access_tokens()     # what the resource server sees as expired now
        assert auth.refreshes == 1
        auth.revoke()                   # the next refresh answers invalid_grant
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, unquote, urlencode, urlsplit, urlunsplit

from .fakeserver import FakeServer, Recorded, Reply

__all__ = ["Authorization", "FakeAuthorizationServer"]

_NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}


def _s256(verifier: str) -> str:
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


@dataclass
class Authorization:
    """One authorization request the fake received (``query`` flattened to single values)."""

    query: dict[str, str]
    code: str | None = None

    @property
    def scopes(self) -> str | None:
        return self.query.get("scope")

    @property
    def code_challenge(self) -> str | None:
        return self.query.get("code_challenge")


@dataclass
class _Code:
    client_id: str
    redirect_uri: str | None
    challenge: str | None
    method: str | None
    scope: str
    used: bool = False


@dataclass
class _Grant:
    """What a refresh token stands for (the user's consent)."""

    scope: str
    revoked: bool = False
    access_tokens: set[str] = field(default_factory=set)


class FakeAuthorizationServer:
    """An OAuth2 authorization server on a :class:`FakeServer`.

    ``client_auth`` is ``"body"`` or ``"basic"`` (what the token endpoint requires);
    ``expires_in`` the access tokens' lifetime (``None``: the answer has none);
    ``token_fields`` extra fields of every token answer (a dict, or a callable given the grant
    type returning one); ``rotate_refresh`` issues a new refresh token on each refresh (the old
    one then answers ``invalid_grant``), otherwise the refresh answer has no ``refresh_token``;
    ``ok_field`` answers as Slack's Web API does (``ok`` in every body, errors with HTTP 200);
    ``require_pkce`` refuses an authorization request without an S256 challenge;
    ``token_delay`` holds each token answer that many seconds (to make concurrent refreshes
    overlap). ``consent = False`` makes the next authorizations answer ``access_denied``.
    """

    def __init__(
        self,
        *,
        client_id: str = "levqor-client",
        client_secret: str = "levqor-client-secret",
        client_auth: str = "body",
        expires_in: int | None = 3600,
        token_fields: Mapping[str, Any] | Callable[[str], Mapping[str, Any]] | None = None,
        rotate_refresh: bool = False,
        ok_field: bool = False,
        require_pkce: bool = False,
        token_delay: float = 0.0,
        token_type: str = "Bearer",
    ) -> None:
        if client_auth not in ("body", "basic"):
            raise ValueError("client_auth is 'body' or 'basic'")
        self.client_id = client_id
        self.client_secret = client_secret
        self.client_auth = client_auth
        self.expires_in = expires_in
        self.token_fields = token_fields
        self.rotate_refresh = rotate_refresh
        self.ok_field = ok_field
        self.require_pkce = require_pkce
        self.token_delay = token_delay
        self.token_type = token_type
        self.consent = True
        self.authorizations: list[Authorization] = []
        self.token_requests: list[dict[str, str]] = []
        self.exchanges = 0
        self.refreshes = 0
        self._codes: dict[str, _Code] = {}
        self._grants: dict[str, _Grant] = {}  # refresh token -> grant
        self._access: dict[str, float | None] = {}  # access token -> expiry (monotonic) or None
        self._lock = threading.Lock()
        self.server = FakeServer()
        self.server.route("GET", "/authorize", self._authorize)
        self.server.route("POST", "/token", self._token)

    # ---------------------------------------------------------------- set-up
    @property
    def url(self) -> str:
        return self.server.url

    @property
    def authorization_url(self) -> str:
        return f"{self.server.url}/authorize"

    @property
    def token_url(self) -> str:
        return f"{self.server.url}/token"

    def start(self) -> FakeAuthorizationServer:
        self.server.start()
        return self

    def stop(self) -> None:
        self.server.stop()

    def __enter__(self) -> FakeAuthorizationServer:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    # ---------------------------------------------------------------- what tests do
    def issue(self, scope: str = "") -> dict[str, Any]:
        """Tokens as if a user had connected (for tests that skip the browser): the token
        answer's JSON."""
        with self._lock:
            return self._issue("authorization_code", scope, None)

    def expire_access_tokens(self) -> None:
        """Every access token issued so far is expired from now on (as the resource sees it)."""
        with self._lock:
            for t in self._access:
                self._access[t] = 0.0

    def revoke(self, refresh_token: str | None = None) -> None:
        """Revoke one refresh token (or all): refreshing then answers ``invalid_grant``, and
        the access tokens it gave stop working."""
        with self._lock:
            for rt, grant in self._grants.items():
                if refresh_token is None or rt == refresh_token:
                    grant.revoked = True
                    for at in grant.access_tokens:
                        self._access[at] = 0.0

    def token_valid(self, access_token: str | None) -> bool:
        """Whether a resource server would accept ``access_token`` now."""
        with self._lock:
            if not access_token or access_token not in self._access:
                return False
            exp = self._access[access_token]
            return exp is None or exp > time.monotonic()

    def bearer_valid(self, req: Recorded) -> bool:
        """Whether a request to a fake resource carries a valid ``Authorization: Bearer``."""
        auth = req.header("Authorization") or ""
        scheme, _, token = auth.partition(" ")
        return scheme.lower() == "bearer" and self.token_valid(token.strip())

    @property
    def issued(self) -> list[str]:
        """Every access and refresh token issued so far (for tests that grep for leaks)."""
        with self._lock:
            return [*self._access, *self._grants]

    @property
    def refresh_tokens(self) -> list[str]:
        with self._lock:
            return [rt for rt, g in self._grants.items() if not g.revoked]

    # ---------------------------------------------------------------- /authorize
    def _authorize(self, req: Recorded) -> Reply:
        q = {k: v[0] for k, v in req.query.items()}
        auth = Authorization(q)
        with self._lock:
            self.authorizations.append(auth)
        redirect = q.get("redirect_uri")
        if q.get("client_id") != self.client_id or not redirect or "://" not in redirect:
            # never redirect to an unverified URI: tell the user
            return Reply(400, "invalid client_id or redirect_uri", {})
        params: dict[str, str] = {}
        if q.get("response_type") != "code":
            params["error"] = "unsupported_response_type"
        elif not self.consent:
            params["error"] = "access_denied"
        elif q.get("code_challenge") and q.get("code_challenge_method", "plain") != "S256":
            params["error"] = "invalid_request"
            params["error_description"] = "only S256 is supported"
        elif self.require_pkce and not q.get("code_challenge"):
            params["error"] = "invalid_request"
            params["error_description"] = "code challenge required"
        else:
            code = secrets.token_urlsafe(24)
            with self._lock:
                self._codes[code] = _Code(
                    self.client_id,
                    redirect,
                    q.get("code_challenge"),
                    q.get("code_challenge_method"),
                    q.get("scope", ""),
                )
            auth.code = code
            params["code"] = code
        if "state" in q:
            params["state"] = q["state"]
        parts = urlsplit(redirect)
        query = "&".join(p for p in (parts.query, urlencode(params)) if p)
        return Reply(302, b"", {"Location": urlunsplit((*parts[:3], query, ""))})

    # ---------------------------------------------------------------- /token
    def _error(self, error: str, description: str, status: int = 400, **headers: str) -> Reply:
        body: dict[str, Any] = {"error": error, "error_description": description}
        if self.ok_field:
            return Reply(200, {"ok": False, "error": error}, dict(_NO_STORE))
        return Reply(status, body, {**_NO_STORE, **headers})

    def _client(self, req: Recorded, form: dict[str, str]) -> tuple[bool, bool]:
        """(authenticated, used Basic)."""
        header = req.header("Authorization") or ""
        if header.lower().startswith("basic "):
            try:
                raw = base64.b64decode(header[6:].strip()).decode("utf-8")
            except (ValueError, UnicodeDecodeError):
                return False, True
            cid, _, secret = raw.partition(":")
            ok = unquote(cid) == self.client_id and unquote(secret) == self.client_secret
            return ok and self.client_auth == "basic", True
        ok = form.get("client_id") == self.client_id and form.get("client_secret") == self.client_secret
        return ok and self.client_auth == "body", False

    def _issue(self, grant_type: str, scope: str, grant_rt: str | None) -> dict[str, Any]:
        access = "fake-at-" + secrets.token_urlsafe(18)
        self._access[access] = (
            None if self.expires_in is None else time.monotonic() + self.expires_in
        )
        body: dict[str, Any] = {"access_token": access, "token_type": self.token_type}
        if self.expires_in is not None:
            body["expires_in"] = self.expires_in
        if grant_rt is None or self.rotate_refresh:
            rt = "fake-rt-" + secrets.token_urlsafe(18)
            self._grants[rt] = _Grant(scope)
            if grant_rt is not None:
                self._grants[grant_rt].revoked = True  # rotated away
            body["refresh_token"] = rt
        else:
            rt = grant_rt
        self._grants[rt].access_tokens.add(access)
        body["scope"] = scope
        extra = self.token_fields(grant_type) if callable(self.token_fields) else self.token_fields
        body.update(extra or {})
        if self.ok_field:
            body["ok"] = True
        return body

    def _token(self, req: Recorded) -> Reply:
        ctype = (req.header("Content-Type") or "").split(";")[0].strip().lower()
        try:
            if ctype == "application/json":
                raw = json.loads(req.body or b"{}")
                form = {str(k): str(v) for k, v in raw.items()} if isinstance(raw, dict) else {}
            else:
                form = {k: v[0] for k, v in parse_qs(req.body.decode("utf-8")).items()}
        except (ValueError, UnicodeDecodeError):
            return self._error("invalid_request", "the body is not a form")
        with self._lock:
            self.token_requests.append(form)
        if self.token_delay:
            time.sleep(self.token_delay)
        ok, basic = self._client(req, form)
        if not ok:
            extra = {"WWW-Authenticate": 'Basic realm="token"'} if basic else {}
            return self._error("invalid_client", "client authentication failed", 401, **extra)
        grant_type = form.get("grant_type")
        with self._lock:
            if grant_type == "authorization_code":
                code = self._codes.get(form.get("code", ""))
                if code is None or code.used:
                    return self._error("invalid_grant", "the code is unknown or was used")
                code.used = True  # single use, whatever follows
                if code.redirect_uri != form.get("redirect_uri"):
                    return self._error("invalid_grant", "redirect_uri does not match")
                if code.challenge is not None:
                    verifier = form.get("code_verifier")
                    if not verifier or _s256(verifier) != code.challenge:
                        return self._error("invalid_grant", "code_verifier does not match")
                self.exchanges += 1
                return Reply(200, self._issue("authorization_code", code.scope, None), dict(_NO_STORE))
            if grant_type == "refresh_token":
                rt = form.get("refresh_token", "")
                grant = self._grants.get(rt)
                if grant is None or grant.revoked:
                    name = "invalid_refresh_token" if self.ok_field else "invalid_grant"
                    return self._error(name, "the refresh token is invalid or revoked")
                self.refreshes += 1
                return Reply(200, self._issue("refresh_token", grant.scope, rt), dict(_NO_STORE))
        if not grant_type:
            return self._error("invalid_request", "grant_type is missing")
        return self._error("unsupported_grant_type", f"{grant_type} is not supported")
