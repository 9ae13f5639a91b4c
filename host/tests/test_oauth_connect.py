"""OAuth2 "Connect" end to end over real HTTP: the host, the fake authorization server and a
connector's fake API (tests/oauth_support.py). Start and callback, the stored credential and
what the API shows of it, bad states, the provider's errors, a missing client configuration,
refresh before expiry and after a 401 (once, across threads and across two apps), and a
refused refresh token (broken, one email)."""

from __future__ import annotations

import base64
import json
import threading
import time
from urllib.parse import parse_qs, urlsplit

import pytest
from e2e_support import LiveServer, make_app
from levqor_kernel.errors import RefreshRefused
from oauth_support import Acme, acme_fakes, connect, signed_in, to_server

# scripts/test-backends runs this file again on PostgreSQL, embedded and with Celery
pytestmark = [pytest.mark.backends, pytest.mark.workers]

DOC = {
    "levqor": 1,
    "trigger": {"type": "manual"},
    "steps": [{"id": "me", "connector": "acme", "action": "whoami", "credential": "acme-main", "payload": {}}],
}


@pytest.fixture
def fakes():
    with acme_fakes() as f:
        yield f


@pytest.fixture
def srv(tmp_path, fakes):
    s = LiveServer(make_app(tmp_path, env=fakes[2], plugins=[("acme", Acme())]))
    yield s
    s.stop()


def stored(srv, user, name="acme-main"):
    return srv.state.store.credentials.values(user["id"], name)[1]


def run(c, csrf):
    p = c.post("/api/v1/pipelines", json={"name": "acme", "pipeline": DOC}, headers=csrf)
    assert p.status_code == 201, p.text
    r = c.post("/api/v1/run?wait=30", json={"pipeline_id": p.json()["id"]}, headers=csrf)
    assert r.status_code in (200, 201, 202), r.text
    rid = r.json()["id"]
    end = time.monotonic() + 60
    while (got := c.get(f"/api/v1/runs/{rid}").json())["status"] not in ("succeeded", "failed"):
        assert time.monotonic() < end, got
        time.sleep(0.05)
    return got


def test_connect_stores_the_account_and_a_run_uses_it(srv, fakes):
    auth, api, _env = fakes
    c, user, csrf = signed_in(srv, "ann@example.com")
    r = connect(c, "acme-main")
    assert r.status_code == 302 and r.headers["Location"] == "/credentials?connected=acme-main"
    seen = auth.authorizations[0].query
    assert seen["redirect_uri"] == srv.state.config.base_url + "/oauth/callback"
    assert seen["scope"] == "profile write" and seen["code_challenge_method"] == "S256"
    assert len(seen["code_challenge"]) == 43 and "code_verifier" not in seen
    # the verifier reached the token endpoint (the fake checked it against the challenge)
    assert auth.exchanges == 1 and auth.token_requests[0]["code_verifier"] not in seen["state"]

    acme = next(x for x in c.get("/api/v1/connectors").json()["connectors"] if x["name"] == "acme")
    assert acme["oauth2_configured"] is True and acme["oauth2"]["title"] == "Connect Acme"
    [cred] = c.get("/api/v1/credentials").json()["items"]
    assert cred["name"] == "acme-main" and cred["auth"] == "oauth2"
    assert cred["account"] == "Acme Workspace" and cred["status"] == "ok" and cred["expires_at"]
    values = stored(srv, user)
    assert values["team_id"] == "T0ACME"  # the connector's oauth_credentials hook
    listing = c.get("/api/v1/credentials").text
    assert values["access_token"] not in listing and values["refresh_token"] not in listing

    got = run(c, csrf)
    assert got["status"] == "succeeded", got
    assert api.calls == 1 and auth.refreshes == 0

    # connecting the name again replaces the tokens (one credential still)
    assert connect(c, "acme-main").status_code == 302
    assert len(c.get("/api/v1/credentials").json()["items"]) == 1
    assert stored(srv, user)["access_token"] != values["access_token"]


def test_an_expired_access_token_is_refreshed_once_and_the_run_succeeds(srv, fakes):
    auth, api, _env = fakes
    c, user, csrf = signed_in(srv, "bob@example.com")
    assert connect(c, "acme-main").status_code == 302
    before = stored(srv, user)
    auth.expire_access_tokens()  # the provider refuses it now; the host still thinks it is good
    got = run(c, csrf)
    assert got["status"] == "succeeded", got
    assert auth.refreshes == 1 and api.refused == 1  # 401, refresh, the same step called again
    steps = c.get(f"/api/v1/runs/{got['id']}").json()
    assert before["access_token"] not in str(steps)
    after = stored(srv, user)
    assert after["access_token"] != before["access_token"]
    assert after["refresh_token"] == before["refresh_token"]  # the answer had none: kept

    # the credential's Test: a 401 refreshes it too
    auth.expire_access_tokens()
    [cred] = c.get("/api/v1/credentials").json()["items"]
    r = c.post(f"/api/v1/credentials/{cred['id']}/test", headers=csrf)
    assert r.json() == {"id": cred["id"], "supported": True, "ok": True, "details": {"team": "Acme Workspace"}}
    assert auth.refreshes == 2
    after = stored(srv, user)

    # an access token about to expire is refreshed before the step uses it (no 401 at all)
    srv.state.store.credentials.connect(user["id"], "acme-main", "acme", {**after, "expires_at": time.time() + 5})
    refused = api.refused
    assert run(c, csrf)["status"] == "succeeded"
    assert auth.refreshes == 3 and api.refused == refused


def test_concurrent_refreshes_ask_the_provider_once(tmp_path, fakes):
    auth, _api, env = fakes
    from levqor_host.security.vault import Vault

    auth.token_delay = 0.3  # the refreshes overlap at the token endpoint if they are not locked
    env = {**env, "LEVQOR_SECRET_KEY": Vault.generate_key()}  # two hosts, one deployment
    one = LiveServer(make_app(tmp_path / "a", env=env, plugins=[("acme", Acme())], start_workers=False))
    try:
        c, user, _csrf = signed_in(one, "cy@example.com")
        assert connect(c, "acme-main").status_code == 302
        stale = stored(one, user)
        auth.expire_access_tokens()
        # a second app on the same database (another host), when the backend allows it
        apps = [one.state]
        url = one.state.config.database.url
        second = None
        if not url.startswith("sqlite:///:memory:"):
            second = make_app(tmp_path / "b", env={**env, "DATABASE_URL": url},
                              plugins=[("acme", Acme())], start_workers=False)  # fmt: skip
            apps.append(second.extensions["levqor"])
        barrier = threading.Barrier(4)
        got: list = []

        def refresh(state):
            barrier.wait()
            got.append(state.oauth.refresh(user["id"], "acme-main", "acme", stale))

        threads = [threading.Thread(target=refresh, args=(apps[i % len(apps)],)) for i in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert len(got) == 4 and auth.refreshes == 1
        assert len({g["access_token"] for g in got}) == 1 and got[0]["access_token"] != stale["access_token"]
        assert auth.token_valid(got[0]["access_token"])
    finally:
        one.stop()
        if second is not None:
            from e2e_support import stop_app

            stop_app(second)


def test_a_refused_refresh_token_breaks_the_credential_and_emails_once(tmp_path):
    fake = pytest.importorskip("levqor_gmail.fake", reason="levqor-gmail holds the Resend fake")
    with acme_fakes() as (auth, api, env), fake.FakeResend(api_key="re_test_oauth_0123456789") as resend:
        env = {**env, "RESEND_API_KEY": "re_test_oauth_0123456789", "LEVQOR_RESEND_API_BASE": resend.url,
               "LEVQOR_MAIL_FROM": "Levqor <noreply@acme.example>"}
        srv = LiveServer(make_app(tmp_path, env=env, plugins=[("acme", Acme())]))
        try:
            c, user, csrf = signed_in(srv, "dee@example.com")
            assert connect(c, "acme-main").status_code == 302
            values = stored(srv, user)
            auth.revoke()
            got = run(c, csrf)
            assert got["status"] == "failed"
            err = got["error"]
            assert err["code"] == "invalid_grant" and "connected again" in err["message"]
            assert values["refresh_token"] not in str(got) and values["access_token"] not in str(got)
            [cred] = c.get("/api/v1/credentials").json()["items"]
            assert cred["status"] == "broken"
            # a second run fails the same way without asking the provider or emailing again
            asked = len(auth.token_requests)
            assert run(c, csrf)["status"] == "failed"
            assert len(auth.token_requests) == asked
            with pytest.raises(RefreshRefused):
                srv.state.oauth.refresh(user["id"], "acme-main", "acme", values)
            end = time.monotonic() + 10
            while not [e for e in resend.emails if "again" in e["body"]["subject"]]:
                assert time.monotonic() < end, resend.emails
                time.sleep(0.05)
            time.sleep(0.3)  # a second email would be on its way by now
            mails = [e["body"] for e in resend.emails if "again" in e["body"]["subject"]]
            assert len(mails) == 1 and "acme-main" in mails[0]["text"]
            assert values["refresh_token"] not in mails[0]["text"]
            # connecting again clears broken
            assert connect(c, "acme-main").status_code == 302
            assert c.get("/api/v1/credentials").json()["items"][0]["status"] == "ok"
            assert run(c, csrf)["status"] == "succeeded"
        finally:
            srv.stop()


def _page(r, status, words):
    assert r.status_code == status, (r.status_code, r.text)
    assert r.headers["Content-Type"].startswith("text/html") and words in r.text, r.text


def test_bad_states_provider_errors_and_unknown_connectors_are_4xx_and_store_nothing(srv, fakes):
    auth, _api, _env = fakes
    c, user, _csrf = signed_in(srv, "eve@example.com")
    start = c.get("/oauth/acme/start", params={"name": "acme-main"}, allow_redirects=False)
    state = parse_qs(urlsplit(start.headers["Location"]).query)["state"][0]
    body, sig = state.rsplit(".", 1)
    cases = [
        ({"state": "x", "code": "c"}, 400, "not valid"),
        ({"state": f"{body}.{sig[:-2]}AA", "code": "c"}, 400, "not valid"),  # forged signature
        ({"state": f"{body[:-4]}AAAA.{sig}", "code": "c"}, 400, "not valid"),  # altered body
        ({"code": "c"}, 400, "not valid"),
        ({"state": state, "error": "access_denied"}, 400, "not allowed"),
        ({"state": state, "error": "server_error", "error_description": "down"}, 400, "server_error"),
        ({"state": state}, 400, "no authorization code"),
        ({"state": state, "code": "not-a-code"}, 400, "refused"),
    ]
    for params, status, words in cases:
        _page(c.get("/oauth/callback", params=params, allow_redirects=False), status, words)
    # another account's state
    c2, _u2, _ = signed_in(srv, "mallory@example.com")
    consent = c.get(start.headers["Location"], allow_redirects=False)
    _page(c2.get(to_server(c2, consent.headers["Location"]), allow_redirects=False), 403, "another account")
    # an expired state
    # an expired state (well signed with the host's key, its expiry passed)
    fields = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    old = base64.urlsafe_b64encode(json.dumps({**fields, "x": int(time.time()) - 1}).encode()).decode().rstrip("=")
    expired = f"{old}.{srv.state.oauth.signer.sign('oauth-state', old)}"
    r = c.get("/oauth/callback", params={"state": expired, "code": "c"}, allow_redirects=False)
    _page(r, 400, "took too long")
    # unknown connector, a connector without OAuth2, no name, a cross-site start
    _page(c.get("/oauth/nope/start", params={"name": "x"}), 404, "not installed")
    _page(c.get("/oauth/core/start", params={"name": "x"}), 404, "no Connect option")
    _page(c.get("/oauth/acme/start", params={"name": " "}), 400, "name the credential")
    _page(c.get("/oauth/acme/start", params={"name": "x"}, headers={"Sec-Fetch-Site": "cross-site"}), 403, "dashboard")
    # without the session: 401; with an API key: the session is required
    assert srv.client().get("/oauth/callback", params={"state": state}).status_code == 401
    assert c.get("/api/v1/credentials").json()["items"] == []
    assert srv.state.store.credentials.list(user["id"]) == []
    assert auth.exchanges == 0


def test_a_connector_without_a_configured_client_says_what_to_set(tmp_path):
    srv = LiveServer(make_app(tmp_path, env={"LEVQOR_DEV": "1"}, plugins=[("acme", Acme())], start_workers=False))
    try:
        c, _user, _ = signed_in(srv, "fay@example.com")
        r = c.get("/oauth/acme/start", params={"name": "acme-main"}, allow_redirects=False)
        _page(r, 503, "LEVQOR_OAUTH_ACME_CLIENT_ID")
        assert "LEVQOR_OAUTH_ACME_CLIENT_SECRET" in r.text and "/oauth/callback" in r.text
        acme = next(x for x in c.get("/api/v1/connectors").json()["connectors"] if x["name"] == "acme")
        assert acme["oauth2_configured"] is False
    finally:
        srv.stop()
