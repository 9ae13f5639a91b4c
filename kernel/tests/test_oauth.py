"""The OAuth2 client protocol against the fake authorization server, and the runner's
refresh-once on a 401, over real HTTP."""

from __future__ import annotations

import base64
import hashlib
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
from levqor_kernel import hookimpl
from levqor_kernel.errors import CredentialError, PermanentError, RefreshRefused, RetryableError
from levqor_kernel.http import Http
from levqor_kernel.oauth import (
    OAUTH2_CREDENTIALS,
    OAuthClient,
    bearer,
    call_with_refresh,
    credential_from_token,
    json_pointer,
    make_pkce,
    needs_refresh,
    pkce_challenge,
)
from levqor_kernel.plugins import make_plugin_manager
from levqor_kernel.recording import ListRecorder, RefreshingCredentials, RunRequest
from levqor_kernel.runner import Runner
from levqor_kernel.testing.oauth import FakeAuthorizationServer

REDIRECT = "http://127.0.0.1:9/oauth/callback"


def client(auth: FakeAuthorizationServer, **spec) -> OAuthClient:
    base = {
        "authorization_url": "https://provider.example/authorize",
        "token_url": "https://provider.example/token",
        "scopes": ["read", "write"],
    }
    return OAuthClient(
        "demo",
        {**base, **spec},
        auth.client_id,
        auth.client_secret,
        authorization_endpoint=auth.authorization_url,
        token_endpoint=auth.token_url,
    )


def consent(url: str) -> dict[str, str]:
    """What the browser does: follow the authorization URL to the redirect, read its query."""
    resp = requests.get(url, allow_redirects=False, timeout=5)
    assert resp.status_code == 302
    loc = resp.headers["Location"]
    assert loc.startswith(REDIRECT)
    return {k: v[0] for k, v in parse_qs(urlsplit(loc).query).items()}


def test_pkce_s256_matches_rfc7636_appendix_b():
    # RFC 7636 appendix B's example pair
    verifier = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"
    assert pkce_challenge(verifier) == (
        "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
    )
    p = make_pkce()
    assert 43 <= len(p.verifier) <= 128 and p.method == "S256"
    digest = hashlib.sha256(p.verifier.encode()).digest()
    assert p.challenge == base64.urlsafe_b64encode(digest).rstrip(b"=").decode()
    assert make_pkce(verifier).verifier == verifier
    with pytest.raises(ValueError):
        make_pkce("short")


def test_authorization_code_with_pkce_then_refresh_keeps_the_refresh_token():
    with FakeAuthorizationServer(expires_in=120, token_fields={"team": {"name": "Acme"}}) as auth:
        c = client(auth, scope_separator=",", extra_params={"access_type": "offline"}, account="/team/name")
        pk = make_pkce()
        url = c.authorization_url(REDIRECT, "st-1", code_challenge=pk.challenge)
        back = consent(url)
        assert back["state"] == "st-1"
        seen = auth.authorizations[0]
        assert seen.query["scope"] == "read,write"
        assert seen.query["access_type"] == "offline"
        assert seen.code_challenge == pk.challenge and seen.query["code_challenge_method"] == "S256"
        assert seen.query["response_type"] == "code" and seen.query["redirect_uri"] == REDIRECT

        http = Http()
        token = c.exchange(http, back["code"], REDIRECT, code_verifier=pk.verifier)
        cred = credential_from_token(token, c.spec, now=1000.0)
        assert cred["auth"] == "oauth2" and cred["account"] == "Acme"
        assert cred["expires_at"] == 1120 and cred["refresh_token"].startswith("fake-rt-")
        assert bearer(cred) == token["access_token"]
        assert auth.token_valid(cred["access_token"])
        assert not needs_refresh(cred, now=1000.0) and needs_refresh(cred, now=1070.0)

        # a code is single use
        with pytest.raises(CredentialError) as e:
            c.exchange(http, back["code"], REDIRECT, code_verifier=pk.verifier)
        assert e.value.code == "invalid_grant" and not isinstance(e.value, RefreshRefused)

        again = c.refresh(http, cred["refresh_token"])
        assert "refresh_token" not in again  # Google's answer: keep the old one
        fresh = credential_from_token(again, c.spec, previous=cred, now=2000.0)
        assert fresh["refresh_token"] == cred["refresh_token"]
        assert fresh["access_token"] != cred["access_token"] and fresh["expires_at"] == 2120
        assert auth.refreshes == 1 and auth.exchanges == 1
        # the client authenticated in the body (the description's default)
        assert auth.token_requests[-1]["client_secret"] == auth.client_secret


def test_wrong_verifier_and_wrong_redirect_are_invalid_grant():
    with FakeAuthorizationServer() as auth:
        c = client(auth)
        pk = make_pkce()
        back = consent(c.authorization_url(REDIRECT, "s", code_challenge=pk.challenge))
        with pytest.raises(CredentialError) as e:
            c.exchange(Http(), back["code"], REDIRECT, code_verifier=make_pkce().verifier)
        assert e.value.code == "invalid_grant" and e.value.status == 400
        back = consent(c.authorization_url(REDIRECT, "s"))
        with pytest.raises(CredentialError):
            c.exchange(Http(), back["code"], REDIRECT + "x")
        assert auth.exchanges == 0


def test_basic_client_auth_and_refused_refresh_token_is_redacted():
    with FakeAuthorizationServer(client_auth="basic", rotate_refresh=True) as auth:
        c = client(auth, client_auth="basic")
        tok = auth.issue("read")
        new = c.refresh(Http(), tok["refresh_token"])
        assert new["refresh_token"] != tok["refresh_token"]
        assert "client_secret" not in auth.token_requests[-1]
        # the rotated-away token is dead now
        with pytest.raises(RefreshRefused) as e:
            c.refresh(Http(), tok["refresh_token"])
        assert e.value.code == "invalid_grant" and e.value.status == 401
        assert tok["refresh_token"] not in str(e.value) and auth.client_secret not in str(e.value)
        # body auth against a basic-only server: invalid_client, not a refused refresh token
        with pytest.raises(CredentialError) as e:
            client(auth).refresh(Http(), new["refresh_token"])
        assert e.value.code == "invalid_client" and not isinstance(e.value, RefreshRefused)


def test_slack_style_answers_are_read():
    with FakeAuthorizationServer(
        ok_field=True, token_type="bot", token_fields={"team": {"id": "T1", "name": "Acme"}}
    ) as auth:
        c = client(auth, account="/team/name")
        tok = auth.issue("chat:write")
        cred = credential_from_token(tok, c.spec, extra={"team_id": "T1"})
        assert cred["account"] == "Acme" and cred["team_id"] == "T1" and cred["token_type"] == "bot"
        auth.revoke()
        with pytest.raises(RefreshRefused):
            c.refresh(Http(), tok["refresh_token"])


def test_token_endpoint_outage_is_retryable():
    with FakeAuthorizationServer() as auth:
        auth.server.queue("POST", "/token", (503, {"error": "temporarily_unavailable"}))
        with pytest.raises(RetryableError):
            client(auth).refresh(Http(), "fake-rt-x")


def test_credential_from_token_edges():
    cred = credential_from_token({"access_token": "a" * 10, "expires_in": "60"}, now=0)
    assert cred["expires_at"] == 60 and cred["token_type"] == "Bearer" and "refresh_token" not in cred
    cred = credential_from_token(
        {"access_token": "b" * 10, "expires_in": float("inf")}, previous={"account": "x", "expires_at": 5}
    )
    assert "expires_at" not in cred and cred["account"] == "x"
    with pytest.raises(PermanentError):
        credential_from_token({"token_type": "Bearer"})
    assert json_pointer({"a": [{"b~/": 1}]}, "/a/0/b~0~1") == 1
    assert json_pointer({"a": 1}, "/b") is None


def test_call_with_refresh_calls_once_more_only_on_an_oauth_401():
    calls = []

    def fn(creds):
        calls.append(creds["access_token"])
        if creds["access_token"] == "old":
            raise CredentialError("no", status=401)
        return "ok"

    oauth = {"auth": "oauth2", "access_token": "old"}
    assert call_with_refresh(fn, oauth, lambda stale: {**stale, "access_token": "new"}) == "ok"
    assert calls == ["old", "new"]
    with pytest.raises(CredentialError):  # the refreshed token is refused too: final
        call_with_refresh(fn, oauth, lambda stale: dict(stale))
    with pytest.raises(CredentialError):  # not OAuth2: nothing to refresh
        call_with_refresh(fn, {"access_token": "old"}, lambda s: {"access_token": "new"})


class Protected:
    """A connector whose API checks the bearer token at the fake authorization server."""

    def __init__(self, auth: FakeAuthorizationServer) -> None:
        self.auth = auth
        self.calls = 0

    @hookimpl
    def describe_schema(self):
        return [
            {
                "name": "protected",
                "title": "Protected",
                "description": "an API behind OAuth2",
                "credentials": {"anyOf": [OAUTH2_CREDENTIALS]},
                "oauth2": {"authorization_url": "https://p.example/a", "token_url": "https://p.example/t"},
                "actions": {
                    "read": {"title": "Read", "payload": {"type": "object"}, "output": {"type": "object"}, "example": {}}
                },
            }
        ]

    @hookimpl
    def run_task(self, connector, action, payload, credentials, context):
        self.calls += 1
        token = bearer(credentials)
        if not self.auth.token_valid(token):
            raise CredentialError(f"upstream refused Bearer {token}", status=401, code="unauthorized")
        return {"ok": True}


class Vault:
    """A RefreshingCredentials for the runner: one credential, refreshed at the fake."""

    def __init__(self, auth: FakeAuthorizationServer, cred: dict) -> None:
        self.cred = cred
        self.client = client(auth)
        self.refreshed = 0

    def __call__(self, name, connector):
        return self.cred if name == "acct" else None

    def refresh(self, name, connector, stale):
        self.refreshed += 1
        tok = self.client.refresh(Http(), stale["refresh_token"])
        self.cred = credential_from_token(tok, previous=stale)
        return self.cred


def _run(pm, creds, attempts=1):
    step = {
        "id": "s",
        "connector": "protected",
        "action": "read",
        "credential": "acct",
        "payload": {},
        "retry": {"max_attempts": attempts},
    }
    doc = {"levqor": 1, "trigger": {"type": "manual"}, "steps": [step]}
    rec = ListRecorder()
    res = Runner(pm, env={}, sleep=lambda s: None).run(RunRequest("r1", doc), credentials=creds, recorder=rec)
    return res, rec


def test_runner_refreshes_once_on_a_401_and_calls_again_in_the_same_attempt():
    with FakeAuthorizationServer() as auth:
        plugin = Protected(auth)
        pm = make_plugin_manager(entry_points=False, builtins=False, plugins=[("protected", plugin)])
        tok = auth.issue()
        vault = Vault(auth, credential_from_token(tok))
        assert isinstance(vault, RefreshingCredentials)
        auth.expire_access_tokens()
        res, rec = _run(pm, vault)
        assert res.status == "succeeded", res.error
        assert auth.refreshes == 1 and vault.refreshed == 1 and plugin.calls == 2
        finished = [e for k, e in rec.events if k == "step_finished"]
        assert finished[0]["attempts"] == 1  # the call after the refresh is no retry

        # revoked: the refresh is refused, the step fails with RefreshRefused, one refresh only
        auth.revoke()
        res, rec = _run(pm, vault, attempts=3)
        assert res.status == "failed"
        assert res.error["type"] == "RefreshRefused" and res.error["code"] == "invalid_grant"
        assert vault.refreshed == 2 and plugin.calls == 3
        text = repr(rec.events) + repr(res.error)
        assert vault.cred["access_token"] not in text and vault.cred["refresh_token"] not in text


def test_a_plain_resolver_is_not_refreshed():
    with FakeAuthorizationServer() as auth:
        plugin = Protected(auth)
        pm = make_plugin_manager(entry_points=False, builtins=False, plugins=[("protected", plugin)])
        cred = credential_from_token(auth.issue())
        auth.expire_access_tokens()
        res, _ = _run(pm, lambda name, connector: cred)
        assert res.status == "failed" and res.error["status"] == 401
        assert cred["access_token"] not in repr(res.error)
        assert auth.refreshes == 0 and plugin.calls == 1
