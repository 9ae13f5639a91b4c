"""Connect with Google end to end: the host's OAuth2 flow against the fake Google (its consent
redirect, its token endpoint's authorization_code and refresh_token grants with PKCE, its
id_token), then Sheets and Gmail used with the connected account: the account named, a run
after the access token expired (refreshed once, the stored refresh token kept), a revoked
grant marking the credential broken, and Gmail's new_email trigger on a connected mailbox (a
poll after the access token expired refreshes it once)."""

from __future__ import annotations

import pytest
from e2e_support import LiveServer, make_app
from levqor_gmail.fake import READ_SCOPE, SEND_SCOPE, FakeGmail
from levqor_sheets.fake import FakeGoogleSheets
from oauth_support import connect, signed_in
from trigger_support import wait_for

# scripts/test-backends runs this file again on PostgreSQL
pytestmark = [pytest.mark.backends]

SHEET_ID = "1BxiMVs0XRA5nFMdKvBdBZjgmUUqptlbs74OgvE2upms"


def google_env(google: FakeGoogleSheets, connector: str) -> dict[str, str]:
    up = connector.upper()
    return {
        f"LEVQOR_OAUTH_{up}_CLIENT_ID": google.client_id,
        f"LEVQOR_OAUTH_{up}_CLIENT_SECRET": google.client_secret,
        f"LEVQOR_OAUTH_{up}_AUTHORIZATION_URL": google.authorization_url,
        f"LEVQOR_OAUTH_{up}_TOKEN_URL": google.token_uri,
        "LEVQOR_DEV": "1",  # the session cookie over plain HTTP
    }


def run_doc(c, csrf, doc: dict) -> dict:
    p = c.post("/api/v1/pipelines", json={"name": "google", "pipeline": doc}, headers=csrf)
    assert p.status_code == 201, p.text
    r = c.post("/api/v1/run?wait=30", json={"pipeline_id": p.json()["id"]}, headers=csrf)
    assert r.status_code in (200, 201, 202), r.text
    rid = r.json()["id"]
    return wait_for(
        lambda: (
            (got := c.get(f"/api/v1/runs/{rid}").json())["status"] in ("succeeded", "failed")
            and got
        ),
        what=f"run {rid}",
    )


def append_doc(value: str) -> dict:
    return {
        "levqor": 1,
        "trigger": {"type": "manual"},
        "steps": [
            {
                "id": "add",
                "connector": "sheets",
                "action": "append_rows",
                "credential": "my-google",
                "payload": {"spreadsheet_id": SHEET_ID, "range": "Orders!A1", "values": [[value]]},
            }
        ],
    }


def test_connect_sheets_names_the_account_and_refreshes_after_expiry(tmp_path) -> None:
    with FakeGoogleSheets() as google:
        google.add_spreadsheet(SHEET_ID, ["Orders"])
        env = {**google_env(google, "sheets"), "LEVQOR_SHEETS_API_BASE": google.url}
        srv = LiveServer(make_app(tmp_path, env=env))
        try:
            c, user, csrf = signed_in(srv, "ada@example.com")
            r = connect(c, "my-google", "sheets")
            assert r.status_code == 302, r.text
            asked = next(q for q in google.requests if q.path == "/o/oauth2/v2/auth").query
            assert asked["access_type"] == ["offline"] and asked["prompt"] == ["consent"]
            assert asked["code_challenge_method"] == ["S256"]
            assert "https://www.googleapis.com/auth/spreadsheets" in asked["scope"][0].split()
            [cred] = c.get("/api/v1/credentials").json()["items"]
            # the account's email, read from the id_token of Google's token answer
            assert cred["auth"] == "oauth2" and cred["account"] == "ada@example.com"
            assert cred["status"] == "ok"
            assert run_doc(c, csrf, append_doc("first"))["status"] == "succeeded"
            stored = srv.state.store.credentials.values(user["id"], "my-google")[1]

            google.revoke_tokens()  # the access token expired early: Sheets answers 401
            got = run_doc(c, csrf, append_doc("second"))
            assert got["status"] == "succeeded", got
            assert google.grants == ["authorization_code", "refresh_token"]  # refreshed once
            after = srv.state.store.credentials.values(user["id"], "my-google")[1]
            assert after["access_token"] != stored["access_token"]
            assert after["refresh_token"] == stored["refresh_token"]  # Google sends none: kept
            assert after["account"] == "ada@example.com"
            assert google.rows(SHEET_ID, "Orders") == [["first"], ["second"]]
            assert stored["access_token"] not in str(c.get(f"/api/v1/runs/{got['id']}").json())

            # the user removed the app's access: the refresh is refused, the credential broken
            google.revoke_refresh_tokens()
            google.revoke_tokens()
            assert run_doc(c, csrf, append_doc("third"))["status"] == "failed"
            [cred] = c.get("/api/v1/credentials").json()["items"]
            assert cred["status"] == "broken"
            assert google.rows(SHEET_ID, "Orders") == [["first"], ["second"]]
        finally:
            srv.stop()


def test_connect_gmail_sends_and_its_new_email_trigger_runs(tmp_path) -> None:
    with (
        FakeGoogleSheets() as google,
        FakeGmail(
            email_address="ada@gmail.example", authority=lambda t: t in google.tokens
        ) as gmail,
    ):
        google.user_email = "ada@gmail.example"
        env = {
            **google_env(google, "gmail"),
            "LEVQOR_GMAIL_API_BASE": gmail.url,
            "LEVQOR_POLL_MIN_INTERVAL": "1",
        }
        srv = LiveServer(make_app(tmp_path, env=env, start_scheduler=True))
        try:
            c, user, csrf = signed_in(srv, "ada@example.com")
            assert connect(c, "mailbox", "gmail").status_code == 302
            asked = next(q for q in google.requests if q.path == "/o/oauth2/v2/auth").query
            assert set(asked["scope"][0].split()) == {SEND_SCOPE, READ_SCOPE}
            [cred] = c.get("/api/v1/credentials").json()["items"]
            assert cred["account"] == "ada@gmail.example"  # users.getProfile's emailAddress

            send = {
                "levqor": 1,
                "trigger": {"type": "manual"},
                "steps": [
                    {
                        "id": "mail",
                        "connector": "gmail",
                        "action": "send_email",
                        "credential": "mailbox",
                        "payload": {
                            "from": "ada@gmail.example",
                            "to": "grace@example.com",
                            "subject": "Hello",
                            "text": "Hi Grace",
                        },
                    }
                ],
            }
            google.revoke_tokens()  # expired: the send refreshes first
            got = run_doc(c, csrf, send)
            assert got["status"] == "succeeded", got
            assert [m["message"]["Subject"] for m in gmail.messages] == ["Hello"]
            assert google.grants == ["authorization_code", "refresh_token"]

            doc = {
                "levqor": 1,
                "name": "invoices",
                "trigger": {
                    "type": "app",
                    "connector": "gmail",
                    "trigger": "new_email",
                    "credential": "mailbox",
                    "config": {"q": "subject:invoice"},
                    "interval": 1,
                },
                "steps": [
                    {
                        "id": "echo",
                        "connector": "core",
                        "action": "transform",
                        "payload": {"value": "{{ trigger.subject }}"},
                    }
                ],
            }
            r = c.post("/api/v1/pipelines", json={"pipeline": doc}, headers=csrf)
            assert r.status_code == 201, r.text
            pid = r.json()["id"]
            store = srv.state.store
            wait_for(
                lambda: (t := store.triggers.get_by_pipeline(pid)) is not None and t["state"],
                what="the baseline poll",
            )
            mid = gmail.deliver("Acme <billing@acme.example>", "Invoice 12")
            gmail.deliver("Acme <billing@acme.example>", "Newsletter")

            def app_runs() -> list[dict]:
                found, _ = store.runs.list(user["id"], pipeline_id=pid, limit=100)
                return [r for r in found if r["trigger"] == "app"]

            [run] = wait_for(app_runs, what="the run of the new invoice")
            assert run["input"]["id"] == mid and run["input"]["subject"] == "Invoice 12"
            before = store.triggers.get_by_pipeline(pid)["last_polled_at"]
            wait_for(
                lambda: store.triggers.get_by_pipeline(pid)["last_polled_at"] != before,
                what="another poll",
            )
            assert len(app_runs()) == 1

            # the access token expires between polls: the poll's 401 refreshes it once
            google.revoke_tokens()
            later = gmail.deliver("Acme <billing@acme.example>", "Invoice 13")
            wait_for(lambda: len(app_runs()) == 2, what="the run of the next invoice")
            assert {r["input"]["id"] for r in app_runs()} == {mid, later}
            assert google.grants == ["authorization_code", "refresh_token", "refresh_token"]
            [cred] = c.get("/api/v1/credentials").json()["items"]
            assert cred["status"] == "ok" and cred["account"] == "ada@gmail.example"
        finally:
            srv.stop()
