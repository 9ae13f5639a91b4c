"""Connect in Chromium: a click on the credentials page goes to the (fake) authorization server
and back, the credential appears under its account's name, a run succeeds after its access
token expired (the fake counts exactly one refresh), and a refused refresh token shows "broken:
reconnect" until Reconnect connects it again.

The host runs in process (its connector is a test plugin, tests/oauth_support.py) on the port
its LEVQOR_BASE_URL names, so the redirect URI the fake sends the browser to is the host's own.
Waits are on events (an element's state, an answer), never sleeps."""

from __future__ import annotations

import re
import threading
import time

import pytest
from browser_support import LAUNCH_ARGS, WAIT_MS, shot
from e2e_support import free_port, make_app, stop_app
from oauth_support import PASSWORD, TEAM, Acme, acme_fakes

try:
    from playwright.sync_api import expect
except ImportError:  # the chromium fixture skips (or fails in CI) and says why
    expect = None

pytestmark = [pytest.mark.services, pytest.mark.timeout(240)]

EMAIL = "connect@example.com"
DOC = {
    "levqor": 1,
    "trigger": {"type": "manual"},
    "steps": [{"id": "me", "connector": "acme", "action": "whoami", "credential": "acme-main", "payload": {}}],
}


@pytest.fixture
def host(tmp_path):
    """The fakes and a Levqor app with the Acme connector served where LEVQOR_BASE_URL says."""
    from levqor_host.security.passwords import hash_password
    from werkzeug.serving import make_server

    with acme_fakes(expires_in=3600) as (auth, api, env):
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        app = make_app(tmp_path, env={**env, "LEVQOR_BASE_URL": url}, plugins=[("acme", Acme())])
        srv = make_server("127.0.0.1", port, app, threaded=True)
        thread = threading.Thread(target=srv.serve_forever, daemon=True)
        thread.start()
        state = app.extensions["levqor"]
        user = state.store.users.create(EMAIL)
        state.store.auth.set_password_hash(user["id"], hash_password(PASSWORD))
        key, _ = state.store.api_keys.create(
            user["id"], name="t", scopes=["pipelines:read", "pipelines:write", "runs:execute"]
        )
        try:
            yield {"url": url, "auth": auth, "api": api, "state": state, "user": user, "key": key}
        finally:
            srv.shutdown()
            srv.server_close()
            stop_app(app)


@pytest.fixture
def page(chromium, host):
    from playwright.sync_api import sync_playwright

    messages: list[str] = []
    errors: list[str] = []
    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=chromium, args=LAUNCH_ARGS)
        ctx = b.new_context(base_url=host["url"], viewport={"width": 1280, "height": 900})
        ctx.set_default_timeout(WAIT_MS)
        expect.set_options(timeout=WAIT_MS)
        pg = ctx.new_page()
        pg.on("console", lambda m: messages.append(f"{m.type}: {m.text}"))
        pg.on("pageerror", lambda e: errors.append(str(e)))
        try:
            yield pg
        finally:
            ctx.close()
            b.close()
    assert [m for m in messages if "Content Security Policy" in m] == []
    assert errors == []


def run_pipeline(host) -> dict:
    import requests

    s = requests.Session()
    s.headers["Authorization"] = f"Bearer {host['key']}"
    base = host["url"]
    p = s.post(f"{base}/api/v1/pipelines", json={"name": "acme", "pipeline": DOC}, timeout=30)
    assert p.status_code == 201, p.text
    rid = s.post(f"{base}/api/v1/run?wait=30", json={"pipeline_id": p.json()["id"]}, timeout=60).json()["id"]
    end = time.monotonic() + 60
    while (got := s.get(f"{base}/api/v1/runs/{rid}", timeout=30).json())["status"] not in ("succeeded", "failed"):
        assert time.monotonic() < end, got
        time.sleep(0.05)
    return got


def test_connect_then_a_run_after_the_token_expired_then_reconnect(page, host):
    auth = host["auth"]
    page.goto("/signin?next=/credentials")
    page.get_by_label("Email", exact=True).fill(EMAIL)
    page.get_by_label("Password", exact=True).fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(re.compile(re.escape(host["url"]) + r"/credentials(\?.*)?$"))

    section = page.locator("#connect-section")
    expect(section).to_be_visible()
    card = section.locator('[data-connector="acme"]')
    card.get_by_label("Credential name").fill("acme-main")
    card.get_by_role("button", name="Connect Acme").click()
    # to the fake's consent (it consents at once) and back to the credentials page
    page.wait_for_url(re.compile(r"/credentials\?connected=acme-main$"))
    cred = page.locator('#creds [data-credential="acme-main"]')
    expect(cred).to_contain_text(TEAM["name"])
    expect(cred.locator('[data-status="ok"]')).to_contain_text("connected")
    assert auth.exchanges == 1 and auth.authorizations[0].code_challenge
    shot(page, "connect-01-connected")

    # the provider considers the access token expired; the host does not know yet
    auth.expire_access_tokens()
    got = run_pipeline(host)
    assert got["status"] == "succeeded", got
    assert auth.refreshes == 1  # refreshed once after the 401, and the step called again

    # the account's access is revoked: the next run fails and the page says reconnect
    auth.revoke()
    assert run_pipeline(host)["status"] == "failed"
    page.reload()
    broken = page.locator('#creds [data-credential="acme-main"]')
    expect(broken.locator('[data-status="broken"]')).to_contain_text("broken: reconnect")
    shot(page, "connect-02-broken")
    broken.get_by_role("button", name="Reconnect").click()
    page.wait_for_url(re.compile(r"/credentials\?connected=acme-main$"))
    expect(page.locator('#creds [data-credential="acme-main"] [data-status="ok"]')).to_be_visible()
    assert auth.exchanges == 2
    assert run_pipeline(host)["status"] == "succeeded"
