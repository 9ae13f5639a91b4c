"""Connect a real connector in Chromium: "Connect Google Sheets" on the credentials page goes to
the fake Google's consent page (plugins/levqor-sheets' fake speaks Google's web-server flow,
its token endpoint with PKCE and its id_token) and back; the credential appears under the
account's email, and a sheets.append_rows run with it writes the row after the access token
expired (the host refreshes it once before the call) and again after Google refused it early
(a 401: refreshed once more and the call repeated). Once the user removed the app's access the
run fails, the page says "broken: reconnect", and Reconnect connects the account again. No
token reaches the page or an API answer.

The host runs in process on the port its LEVQOR_BASE_URL names, so the redirect URI the fake
sends the browser to is the host's own. Waits are on events (an element's state, an answer, the
fake's token expiry) in polling loops, never fixed sleeps."""

from __future__ import annotations

import re
import threading
import time

import pytest
import requests
from browser_support import LAUNCH_ARGS, WAIT_MS, shot
from e2e_support import free_port, make_app, stop_app
from levqor_sheets.fake import FakeGoogleSheets
from oauth_support import PASSWORD

try:
    from playwright.sync_api import expect
except ImportError:  # the chromium fixture skips (or fails in CI) and says why
    expect = None

pytestmark = [pytest.mark.services, pytest.mark.timeout(240)]

EMAIL = "connect-google@example.com"
#: the Google account that consents (not the Levqor user's email)
GOOGLE_ACCOUNT = "ada.lovelace@example.com"
SHEET_ID = "1BxiMVs0XRA5nFMdKvBdBZjgmUUqptlbs74OgvE2upms"


@pytest.fixture
def host(tmp_path):
    """The fake Google and a Levqor app served where LEVQOR_BASE_URL says, its Sheets OAuth
    client pointed at the fake."""
    from levqor_host.security.passwords import hash_password
    from werkzeug.serving import make_server

    with FakeGoogleSheets() as google:
        google.user_email = GOOGLE_ACCOUNT
        google.add_spreadsheet(SHEET_ID, ["Orders"])
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        env = {
            "LEVQOR_BASE_URL": url,
            "LEVQOR_DEV": "1",  # the session cookie over plain HTTP
            "LEVQOR_OAUTH_SHEETS_CLIENT_ID": google.client_id,
            "LEVQOR_OAUTH_SHEETS_CLIENT_SECRET": google.client_secret,
            "LEVQOR_OAUTH_SHEETS_AUTHORIZATION_URL": google.authorization_url,
            "LEVQOR_OAUTH_SHEETS_TOKEN_URL": google.token_uri,
            "LEVQOR_SHEETS_API_BASE": google.url,
        }
        app = make_app(tmp_path, env=env)
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
            yield {"url": url, "google": google, "state": state, "user": user, "key": key}
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


def api(host) -> requests.Session:
    s = requests.Session()
    s.headers["Authorization"] = f"Bearer {host['key']}"
    return s


def run_append(host, pipeline_id: str) -> dict:
    """Run the pipeline and answer the run's API answer once it finished."""
    s, base = api(host), host["url"]
    r = s.post(f"{base}/api/v1/run?wait=30", json={"pipeline_id": pipeline_id}, timeout=60)
    assert r.status_code in (200, 201, 202), r.text
    rid = r.json()["id"]
    end = time.monotonic() + 60
    while (got := s.get(f"{base}/api/v1/runs/{rid}", timeout=30)).json()["status"] not in (
        "succeeded",
        "failed",
    ):
        assert time.monotonic() < end, got.text
        time.sleep(0.05)
    return {"json": got.json(), "text": got.text}


def issued_tokens(google: FakeGoogleSheets) -> list[str]:
    """Every access and refresh token the fake Google handed out."""
    return [*dict(google.tokens), *dict(google.token_emails), *dict(google.refresh_tokens)]


def shows_no_token(text: str, google: FakeGoogleSheets) -> None:
    leaked = [t[:12] + "..." for t in issued_tokens(google) if t in text]
    assert leaked == [], f"token values in the text: {leaked}"
    assert "ya29." not in text and "1//0" not in text  # Google's access and refresh token prefixes
    assert "eyJ" not in text  # nor an id_token (a JWT)


def test_connect_google_sheets_runs_refresh_the_expired_token_and_reconnect(page, host):
    google: FakeGoogleSheets = host["google"]
    page.goto("/signin?next=/credentials")
    page.get_by_label("Email", exact=True).fill(EMAIL)
    page.get_by_label("Password", exact=True).fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(re.compile(re.escape(host["url"]) + r"/credentials(\?.*)?$"))

    # the access token Google issues at Connect lives one second: the host refreshes it first
    google.token_lifetime = 1
    card = page.locator('#connect-section [data-connector="sheets"]')
    expect(card).to_be_visible()
    card.get_by_label("Credential name").fill("my-google")
    card.get_by_role("button", name="Connect Google Sheets").click()
    # to the fake Google's consent (it consents at once) and back to the credentials page
    page.wait_for_url(re.compile(r"/credentials\?connected=my-google$"))
    cred = page.locator('#creds [data-credential="my-google"]')
    expect(cred.locator('[data-status="ok"]')).to_contain_text("connected")
    expect(cred.locator(".account")).to_have_text(GOOGLE_ACCOUNT)  # from Google's id_token
    asked = next(q for q in google.requests if q.path == "/o/oauth2/v2/auth").query
    assert asked["access_type"] == ["offline"] and asked["code_challenge_method"] == ["S256"]
    assert google.grants == ["authorization_code"]
    shows_no_token(page.content(), google)
    shot(page, "connect-google-01-connected")

    s, base = api(host), host["url"]
    [listed] = s.get(f"{base}/api/v1/credentials", timeout=30).json()["items"]
    assert listed["auth"] == "oauth2" and listed["account"] == GOOGLE_ACCOUNT
    doc = {
        "levqor": 1,
        "trigger": {"type": "manual"},
        "steps": [
            {
                "id": "add",
                "connector": "sheets",
                "action": "append_rows",
                "credential": "my-google",
                "payload": {
                    "spreadsheet_id": SHEET_ID,
                    "range": "Orders!A1",
                    "values": [["A-100", "paid"]],
                },
            }
        ],
    }
    p = s.post(f"{base}/api/v1/pipelines", json={"name": "sheet", "pipeline": doc}, timeout=30)
    assert p.status_code == 201, p.text

    # the connected access token has expired by Google's clock (expires_in was 1)
    [(_, expiry)] = dict(google.tokens).values()
    while time.time() <= expiry:
        time.sleep(0.05)
    google.token_lifetime = 3599
    first = run_append(host, p.json()["id"])
    assert first["json"]["status"] == "succeeded", first["text"]
    assert google.grants == ["authorization_code", "refresh_token"]  # exactly one refresh
    assert google.rows(SHEET_ID, "Orders") == [["A-100", "paid"]]
    shows_no_token(first["text"], google)

    # Google refuses the fresh access token early (a 401): refreshed once more, the call repeated
    google.revoke_tokens()
    second = run_append(host, p.json()["id"])
    assert second["json"]["status"] == "succeeded", second["text"]
    assert google.grants == ["authorization_code", "refresh_token", "refresh_token"]
    assert google.rows(SHEET_ID, "Orders") == [["A-100", "paid"], ["A-100", "paid"]]
    shows_no_token(second["text"], google)

    # the page still shows the account, connected, and no token
    page.reload()
    cred = page.locator('#creds [data-credential="my-google"]')
    expect(cred.locator('[data-status="ok"]')).to_contain_text("connected")
    expect(cred.locator(".account")).to_have_text(GOOGLE_ACCOUNT)
    shows_no_token(page.content(), google)
    shows_no_token(s.get(f"{base}/api/v1/credentials", timeout=30).text, google)

    # the user removed the app's access at Google: the run fails, the page says reconnect, and
    # Reconnect (the same name) connects the account again
    google.revoke_refresh_tokens()
    google.revoke_tokens()
    third = run_append(host, p.json()["id"])
    assert third["json"]["status"] == "failed", third["text"]
    shows_no_token(third["text"], google)
    page.reload()
    broken = page.locator('#creds [data-credential="my-google"]')
    expect(broken.locator('[data-status="broken"]')).to_contain_text("broken: reconnect")
    shot(page, "connect-google-02-broken")
    broken.get_by_role("button", name="Reconnect").click()
    page.wait_for_url(re.compile(r"/credentials\?connected=my-google$"))
    expect(cred.locator('[data-status="ok"]')).to_contain_text("connected")
    expect(cred.locator(".account")).to_have_text(GOOGLE_ACCOUNT)
    shows_no_token(page.content(), google)
    assert run_append(host, p.json()["id"])["json"]["status"] == "succeeded"
    assert google.rows(SHEET_ID, "Orders") == [["A-100", "paid"]] * 3
