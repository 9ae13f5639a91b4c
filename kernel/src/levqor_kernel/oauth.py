"""OAuth2 credentials: the shape the host stores after "Connect", how a connector reads it, and
the client side of the protocol (Flask-free and database-free; the host stores and locks).

A connector that declares ``oauth2`` in its description accepts this shape as one variant of
its credentials schema::

    "credentials": {"anyOf": [SERVICE_ACCOUNT_SCHEMA, OAUTH2_CREDENTIALS]}

The host fills it from the token endpoint's answer (plus what ``oauth_credentials`` adds),
refreshes ``access_token`` before ``expires_at``, and hands it to ``run_task`` and the trigger
hooks like any credential. A connector sends ``Authorization: Bearer <access_token>``
(:func:`bearer`) and raises a ``CredentialError`` with status 401 when the upstream refuses it:
the host then refreshes once and calls again (:func:`call_with_refresh`).

The protocol (:class:`OAuthClient`) follows RFC 6749 (authorization code grant, section 4.1;
refreshing, section 6; client authentication, section 2.3.1; error answers, section 5.2) and
RFC 7636 (PKCE with ``S256``). It is a few dozen lines over the kernel's :class:`~levqor_kernel.http.Http`
helper rather than oauthlib's client: the requests must go through that helper anyway (its
timeouts, its step deadline, its redaction of secrets from errors), and what would be left to
a library (building a query string, a form body, one SHA-256) is the standard library's.
"""

from __future__ import annotations

import base64
import hashlib
import math
import secrets as _secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar
from urllib.parse import quote, urlencode, urlsplit, urlunsplit

from .errors import CredentialError, PermanentError, RefreshRefused
from .http import Http, error_for_response, redact

__all__ = [
    "OAUTH2_CREDENTIALS",
    "OAuthClient",
    "Pkce",
    "REFRESH_LEEWAY",
    "bearer",
    "call_with_refresh",
    "credential_from_token",
    "is_oauth",
    "json_pointer",
    "make_pkce",
    "needs_refresh",
    "pkce_challenge",
    "sample_oauth_credentials",
]

#: Seconds before ``expires_at`` at which an access token counts as expired (refreshed first).
REFRESH_LEEWAY = 60.0

#: The token endpoint's answers to a refresh that mean "this refresh token is dead": RFC 6749
#: section 5.2's ``invalid_grant``, and Slack's ``invalid_refresh_token`` (it answers HTTP 200
#: with ``ok: false`` and its own error names).
REFUSED_REFRESH = frozenset({"invalid_grant", "invalid_refresh_token"})

T = TypeVar("T")

#: The JSON Schema of a stored OAuth2 credential. Extra fields (a team id, a workspace id, the
#: account's email) are allowed: ``oauth_credentials`` adds them.
OAUTH2_CREDENTIALS: dict[str, Any] = {
    "type": "object",
    "title": "Connected account (OAuth2)",
    "required": ["auth", "access_token"],
    "properties": {
        "auth": {"const": "oauth2"},
        "access_token": {"type": "string", "minLength": 1, "writeOnly": True},
        "refresh_token": {"type": "string", "minLength": 1, "writeOnly": True},
        "token_type": {"type": "string"},
        "expires_at": {
            "type": "number",
            "description": "Unix time the access token expires (absent: it does not expire)",
        },
        "scope": {"type": "string"},
        "account": {"type": "string", "description": "The connected account, as shown to the user"},
    },
}


def sample_oauth_credentials() -> dict[str, Any]:
    """A well-formed OAuth2 credential (the catalog checks a connector's schema accepts it)."""
    return {
        "auth": "oauth2",
        "access_token": "sample-access-token",
        "refresh_token": "sample-refresh-token",
        "token_type": "Bearer",
        "expires_at": 4102444800,
        "scope": "",
        "account": "user@example.com",
    }


def is_oauth(credentials: Mapping[str, Any] | None) -> bool:
    """True when ``credentials`` came from "Connect" (the OAuth2 variant)."""
    return isinstance(credentials, Mapping) and credentials.get("auth") == "oauth2"


def bearer(credentials: Mapping[str, Any] | None) -> str:
    """The access token of an OAuth2 credential, or a :class:`CredentialError` (never echoing it)."""
    token = credentials.get("access_token") if is_oauth(credentials) else None
    if not isinstance(token, str) or not token:
        raise CredentialError(
            "this credential has no OAuth2 access token: connect the account again",
            code="missing_credentials",
        )
    return token


def needs_refresh(
    credentials: Mapping[str, Any] | None, *, now: float | None = None, leeway: float = REFRESH_LEEWAY
) -> bool:
    """True when an OAuth2 credential's access token expires within ``leeway`` seconds and it
    has a refresh token to get a new one with."""
    if not is_oauth(credentials) or not credentials.get("refresh_token"):
        return False
    exp = credentials.get("expires_at")
    if not isinstance(exp, (int, float)) or isinstance(exp, bool):
        return False
    return exp - leeway <= (time.time() if now is None else now)


def call_with_refresh(
    fn: Callable[[Any], T],
    credentials: Any,
    refresh: Callable[[Mapping[str, Any]], Mapping[str, Any] | None],
) -> T:
    """``fn(credentials)``; when it raises a :class:`CredentialError` with status 401 and the
    credential is OAuth2, ``refresh(credentials)`` and call ``fn`` once more with the answer.

    ``refresh`` returns the refreshed credential (or the one another worker refreshed
    meanwhile), ``None`` when it cannot (the 401 stands), or raises :class:`RefreshRefused`.
    A second 401 is final: nothing loops.
    """
    try:
        return fn(credentials)
    except CredentialError as e:
        if e.status != 401 or isinstance(e, RefreshRefused) or not is_oauth(credentials):
            raise
        fresh = refresh(credentials)
        if not fresh:
            raise
    return fn(fresh)


# --------------------------------------------------------------------------- PKCE (RFC 7636)


@dataclass(frozen=True)
class Pkce:
    """A PKCE pair: the ``code_verifier`` kept by the client, the ``code_challenge`` sent."""

    verifier: str
    challenge: str
    method: str = "S256"


def pkce_challenge(verifier: str) -> str:
    """RFC 7636 section 4.2: ``BASE64URL-ENCODE(SHA256(ASCII(code_verifier)))``, unpadded."""
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def make_pkce(verifier: str | None = None) -> Pkce:
    """A new pair (or the pair of ``verifier``). RFC 7636 section 4.1: 43 to 128 characters of
    ``[A-Z] / [a-z] / [0-9] / "-" / "." / "_" / "~"``; 32 random bytes base64url-encoded give 43."""
    v = verifier or _secrets.token_urlsafe(32)
    if not 43 <= len(v) <= 128:
        raise ValueError("a PKCE code verifier has 43 to 128 characters")
    return Pkce(v, pkce_challenge(v))


# --------------------------------------------------------------------------- the client


def json_pointer(doc: Any, pointer: str) -> Any:
    """The value at an RFC 6901 JSON pointer (``/team/name``), or ``None`` when absent."""
    if pointer in ("", "/"):
        return doc if pointer == "" else (doc.get("") if isinstance(doc, Mapping) else None)
    if not pointer.startswith("/"):
        return None
    cur = doc
    for raw in pointer[1:].split("/"):
        key = raw.replace("~1", "/").replace("~0", "~")
        if isinstance(cur, Mapping):
            if key not in cur:
                return None
            cur = cur[key]
        elif isinstance(cur, list) and key.isdigit() and int(key) < len(cur):
            cur = cur[int(key)]
        else:
            return None
    return cur


@dataclass(frozen=True)
class OAuthClient:
    """The operator's OAuth2 client for one connector, with the connector's ``oauth2``
    description (``spec``: authorization_url, token_url, scopes, scope_separator, pkce,
    extra_params, client_auth, token_body, account). ``authorization_endpoint`` and
    ``token_endpoint`` override the description's URLs (the operator's settings; tests point
    them at a fake)."""

    connector: str
    spec: Mapping[str, Any]
    client_id: str
    client_secret: str | None = field(default=None, repr=False)
    authorization_endpoint: str | None = None
    token_endpoint: str | None = None

    @property
    def authorize_url(self) -> str:
        return self.authorization_endpoint or self.spec["authorization_url"]

    @property
    def token_url(self) -> str:
        return self.token_endpoint or self.spec["token_url"]

    @property
    def pkce(self) -> bool:
        return bool(self.spec.get("pkce", True))

    def authorization_url(
        self,
        redirect_uri: str,
        state: str,
        *,
        code_challenge: str | None = None,
        scopes: list[str] | None = None,
    ) -> str:
        """Where to send the user's browser (RFC 6749 section 4.1.1): ``response_type=code``,
        ``client_id``, ``redirect_uri``, ``scope`` (joined by ``scope_separator``), ``state``,
        the PKCE challenge (S256) and the description's ``extra_params``, added to the
        endpoint's own query."""
        params: dict[str, str] = {
            "response_type": "code",
            "client_id": self.client_id,
            "redirect_uri": redirect_uri,
        }
        wanted = self.spec.get("scopes") if scopes is None else scopes
        if wanted:
            params["scope"] = str(self.spec.get("scope_separator", " ")).join(wanted)
        params["state"] = state
        if code_challenge is not None:
            params["code_challenge"] = code_challenge
            params["code_challenge_method"] = "S256"
        for k, v in (self.spec.get("extra_params") or {}).items():
            params.setdefault(k, str(v))
        parts = urlsplit(self.authorize_url)
        query = "&".join(q for q in (parts.query, urlencode(params, quote_via=quote)) if q)
        return urlunsplit((parts.scheme, parts.netloc, parts.path, query, ""))

    def exchange(
        self, http: Http, code: str, redirect_uri: str, *, code_verifier: str | None = None
    ) -> dict[str, Any]:
        """Trade an authorization code for tokens (RFC 6749 section 4.1.3, RFC 7636 section
        4.5); the token endpoint's JSON answer."""
        form = {"grant_type": "authorization_code", "code": code, "redirect_uri": redirect_uri}
        if code_verifier is not None:
            form["code_verifier"] = code_verifier
        return self._token_request(http, form, secrets=(code, code_verifier or ""))

    def refresh(self, http: Http, refresh_token: str, *, scope: str | None = None) -> dict[str, Any]:
        """A new access token for ``refresh_token`` (RFC 6749 section 6); raises
        :class:`RefreshRefused` when the endpoint answers ``invalid_grant``."""
        form = {"grant_type": "refresh_token", "refresh_token": refresh_token}
        if scope:
            form["scope"] = scope
        return self._token_request(http, form, secrets=(refresh_token,))

    def _token_request(
        self, http: Http, form: dict[str, str], *, secrets: tuple[str, ...]
    ) -> dict[str, Any]:
        service = f"{self.connector} token endpoint"
        hidden = [s for s in (*secrets, self.client_secret or "") if s]
        headers = {"Accept": "application/json"}
        auth = None
        if self.spec.get("client_auth", "body") == "basic":
            # RFC 6749 section 2.3.1: id and secret form-encoded, then HTTP Basic
            auth = (quote(self.client_id, safe=""), quote(self.client_secret or "", safe=""))
        else:
            form["client_id"] = self.client_id
            if self.client_secret:
                form["client_secret"] = self.client_secret
        # RFC 6749 asks for a form; some providers (Notion) document a JSON object instead
        encoded = {"json": form} if self.spec.get("token_body") == "json" else {"data": form}
        resp = http.request(
            "POST",
            self.token_url,
            **encoded,
            headers=headers,
            auth=auth,
            expect=[*range(200, 300), 400, 401, 403],
            secrets=hidden,
            service=service,
        )
        try:
            body = resp.json()
        except ValueError:
            body = None
        if not isinstance(body, dict):
            if 200 <= resp.status_code < 300:
                raise PermanentError(
                    f"{service} answered HTTP {resp.status_code} without a JSON object",
                    code="malformed_response",
                )
            raise error_for_response(resp, secrets=hidden, service=service)
        error = body.get("error")
        access = body.get("access_token")
        if resp.status_code < 300 and isinstance(access, str) and access:
            return body
        if not error:
            if resp.status_code < 300:
                raise PermanentError(
                    f"{service} answered without an access_token", code="malformed_response"
                )
            raise error_for_response(resp, secrets=hidden, service=service)
        code = str(error)[:100]
        desc = body.get("error_description")
        said = f" ({desc})" if isinstance(desc, str) and desc else ""
        text = redact(f"{service} refused the request: {code}{said}", hidden)[:500]
        if form["grant_type"] == "refresh_token" and code in REFUSED_REFRESH:
            raise RefreshRefused(text, status=401, code="invalid_grant")
        status = resp.status_code if resp.status_code >= 400 else 400
        raise CredentialError(text, status=status, code=code)


def credential_from_token(
    token: Mapping[str, Any],
    spec: Mapping[str, Any] | None = None,
    *,
    previous: Mapping[str, Any] | None = None,
    extra: Mapping[str, Any] | None = None,
    now: float | None = None,
) -> dict[str, Any]:
    """The credential to store for a token endpoint's answer (:data:`OAUTH2_CREDENTIALS`).

    ``expires_at`` is now + ``expires_in`` (absent when the answer has none: the token does not
    expire); a refresh answer without a ``refresh_token`` keeps ``previous``'s (RFC 6749
    section 6: the server MAY issue a new one); ``account`` comes from the description's
    ``account`` JSON pointer, else from ``previous``; ``extra`` (what the ``oauth_credentials``
    hook answered) is laid over the top, except ``auth``. Other fields of ``previous`` (a team
    id an earlier hook added) are kept.
    """
    access = token.get("access_token")
    if not isinstance(access, str) or not access:
        raise PermanentError("the token answer has no access_token", code="malformed_response")
    prev = dict(previous or {})
    cred: dict[str, Any] = {k: v for k, v in prev.items() if k not in ("expires_at",)}
    cred["auth"] = "oauth2"
    cred["access_token"] = access
    refresh = token.get("refresh_token")
    if isinstance(refresh, str) and refresh:
        cred["refresh_token"] = refresh
    ttype = token.get("token_type")
    if isinstance(ttype, str) and ttype:
        cred["token_type"] = ttype
    else:
        cred.setdefault("token_type", "Bearer")
    scope = token.get("scope")
    if isinstance(scope, str):
        cred["scope"] = scope
    else:
        cred.setdefault("scope", "")
    expires_in = token.get("expires_in")
    try:
        seconds = None if isinstance(expires_in, bool) else float(expires_in)
    except (TypeError, ValueError):
        seconds = None
    if seconds is not None and math.isfinite(seconds) and seconds > 0:
        cred["expires_at"] = int((time.time() if now is None else now) + seconds)
    pointer = (spec or {}).get("account")
    if pointer:
        account = json_pointer(token, pointer)
        if isinstance(account, (str, int)) and not isinstance(account, bool) and str(account):
            cred["account"] = str(account)[:200]
    for k, v in (extra or {}).items():
        if k != "auth" and v is not None:
            cred[k] = v
    return cred
