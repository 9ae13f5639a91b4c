"""Support for the OAuth2 ("Connect") tests: a connector behind OAuth2 whose API is a local fake
that accepts exactly the tokens the fake authorization server issued and has not expired.

``acme`` declares ``oauth2`` (PKCE, body client auth, account at ``/team/name``), its one
action ``whoami`` calls ``GET <LEVQOR_ACME_API_BASE>/me`` with the bearer token (401 when the
token is expired or revoked: the host refreshes once), and its ``oauth_credentials`` hook adds
the team id.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import urlsplit

from levqor_kernel import Poll, TriggerItem, hookimpl
from levqor_kernel.oauth import OAUTH2_CREDENTIALS, bearer
from levqor_kernel.testing.fakeserver import FakeServer, Recorded, Reply
from levqor_kernel.testing.oauth import FakeAuthorizationServer

TEAM = {"id": "T0ACME", "name": "Acme Workspace"}
PASSWORD = "oauth test password 123"


class Acme:
    """The test connector (a plugin object: ``plugins=[("acme", Acme())]``)."""

    @hookimpl
    def describe_schema(self) -> list[dict[str, Any]]:
        return [
            {
                "name": "acme",
                "title": "Acme",
                "description": "a service behind OAuth2 (tests)",
                "credentials": {"anyOf": [OAUTH2_CREDENTIALS]},
                "oauth2": {
                    "authorization_url": "https://acme.example/oauth/authorize",
                    "token_url": "https://acme.example/oauth/token",
                    "scopes": ["profile", "write"],
                    "account": "/team/name",
                    "title": "Connect Acme",
                },
                "triggers": {
                    "new_item": {
                        "title": "New item",
                        "kind": "polling",
                        "config": {"type": "object"},
                        "output": {"type": "object", "properties": {"n": {"type": "integer"}}},
                        "sample": {"n": 1},
                    }
                },
                "actions": {
                    "whoami": {
                        "title": "Who am I",
                        "payload": {"type": "object"},
                        "output": {
                            "type": "object",
                            "properties": {"team": {"type": "string"}},
                            "required": ["team"],
                        },
                        "example": {},
                    }
                },
            }
        ]

    @hookimpl
    def run_task(self, connector, action, payload, credentials, context):
        base, guarded = context.api_base("acme", "https://api.acme.example")
        resp = context.http.request(
            "GET",
            f"{base}/me",
            guard=guarded,
            headers={"Authorization": f"Bearer {bearer(credentials)}"},
            service="Acme",
        )
        return {"team": resp.json()["team"]}

    @hookimpl
    def check_credentials(self, connector, credentials, context):
        return self.run_task(connector, "whoami", {}, credentials, context)

    @hookimpl
    def poll_trigger(self, connector, trigger, config, credentials, state, context):
        base, guarded = context.api_base("acme", "https://api.acme.example")
        resp = context.http.request(
            "GET",
            f"{base}/items",
            guard=guarded,
            headers={"Authorization": f"Bearer {bearer(credentials)}"},
            service="Acme",
        )
        items = resp.json()["items"]
        return Poll(
            items=[TriggerItem(id=str(i["n"]), data=i) for i in items],
            state={"count": len(items)},
        )

    @hookimpl
    def oauth_credentials(self, connector, token, context):
        team = token.get("team") or {}
        return {"team_id": team.get("id")} if team.get("id") else None


class AcmeApi:
    """The fake Acme API for a valid bearer token (401 else): ``GET /me`` answers the team,
    ``GET /items`` the items added so far (``add_item``)."""

    def __init__(self, auth: FakeAuthorizationServer) -> None:
        self.auth = auth
        self.server = FakeServer()
        self.calls = 0
        self.refused = 0
        self.items: list[dict] = []
        self.server.route("GET", "/me", lambda req: self._answer(req, {"team": TEAM["name"]}))
        self.server.route("GET", "/items", lambda req: self._answer(req, {"items": list(self.items)}))

    def add_item(self) -> None:
        self.items.append({"n": len(self.items) + 1})

    def _answer(self, req: Recorded, body: dict) -> Reply:
        self.calls += 1
        if not self.auth.bearer_valid(req):
            self.refused += 1
            # echoing the refused token back, as careless APIs do (the host must redact it)
            sent = req.header("Authorization") or ""
            return Reply(
                401,
                {"error": "invalid_token", "token": sent.partition(" ")[2]},
                {"WWW-Authenticate": 'Bearer error="invalid_token"'},
            )
        return Reply(200, body)


@contextmanager
def acme_fakes(**auth_options: Any) -> Iterator[tuple[FakeAuthorizationServer, AcmeApi, dict[str, str]]]:
    """The fake authorization server, the fake API and the host's environment pointing at them."""
    options = {"token_fields": {"team": TEAM}, "require_pkce": True, **auth_options}
    with FakeAuthorizationServer(**options) as auth:
        api = AcmeApi(auth)
        with api.server:
            env = {
                "LEVQOR_OAUTH_ACME_CLIENT_ID": auth.client_id,
                "LEVQOR_OAUTH_ACME_CLIENT_SECRET": auth.client_secret,
                "LEVQOR_OAUTH_ACME_AUTHORIZATION_URL": auth.authorization_url,
                "LEVQOR_OAUTH_ACME_TOKEN_URL": auth.token_url,
                "LEVQOR_ACME_API_BASE": api.server.url,
                "LEVQOR_DEV": "1",  # the session cookie over plain HTTP (no Secure flag)
            }
            yield auth, api, env


def signed_in(srv: Any, email: str, user: dict | None = None) -> tuple[Any, dict, dict[str, str]]:
    """A requests session of ``srv`` signed in with the dashboard's cookie (a new user with a
    password, or ``user`` given a password), the user and the CSRF header."""
    from levqor_host.security.passwords import hash_password

    store = srv.state.store
    user = user or store.users.create(email)
    store.auth.set_password_hash(user["id"], hash_password(PASSWORD))
    c = srv.client()
    r = c.post("/api/v1/auth/login", json={"email": user["email"], "password": PASSWORD})
    assert r.status_code == 200, r.text
    return c, user, {"X-CSRF-Token": r.json()["csrf_token"]}


def connect(c: Any, name: str, connector: str = "acme") -> Any:
    """Click Connect without a browser: start, follow the fake's consent redirect, and answer
    the host's callback. Returns the callback's answer (not followed)."""
    r = c.get(f"/oauth/{connector}/start", params={"name": name}, allow_redirects=False)
    assert r.status_code == 302, r.text
    consent = c.get(r.headers["Location"], allow_redirects=False)
    assert consent.status_code == 302, consent.text
    return c.get(to_server(c, consent.headers["Location"]), allow_redirects=False)


def to_server(c: Any, url: str) -> str:
    """``url`` (the redirect URI under ``LEVQOR_BASE_URL``) at the test server's address."""
    parts = urlsplit(url)
    return c.base + parts.path + (f"?{parts.query}" if parts.query else "")
