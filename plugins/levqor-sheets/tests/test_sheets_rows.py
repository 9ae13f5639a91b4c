"""levqor-sheets' new_row trigger, lookup_rows, update_row and Google OAuth2 ("Connect"), against
the fake Google over real HTTP."""

from __future__ import annotations

import base64
import hashlib
import secrets
import time
from collections.abc import Iterator
from urllib.parse import parse_qs, urlencode, urlsplit

import levqor_sheets
import pytest
import requests
from levqor_kernel.catalog import check_description
from levqor_kernel.context import StepContext
from levqor_kernel.errors import CredentialError, PayloadError, PermanentError
from levqor_kernel.plugins import make_plugin_manager
from levqor_kernel.testing import OAuthContract, PollingTriggerContract
from levqor_kernel.triggers import as_poll
from levqor_sheets.fake import SCOPE, FakeGoogleSheets

SHEET_ID = "1BxiMVs0XRA5nFMdKvBdBZjgmUUqptlbs74OgvE2upms"
HEADERS = ["Order", "Email", "Total"]


@pytest.fixture(scope="module")
def shared_google() -> Iterator[FakeGoogleSheets]:
    with FakeGoogleSheets() as fake:
        yield fake


@pytest.fixture
def google(shared_google: FakeGoogleSheets) -> FakeGoogleSheets:
    shared_google.reset()
    levqor_sheets.clear_token_cache()
    shared_google.add_spreadsheet(SHEET_ID, ["Orders", "Q&A 2024"])
    return shared_google


@pytest.fixture
def oauth(google: FakeGoogleSheets) -> dict:
    """A stored "Connect" credential whose access token the fake accepts."""
    return {
        "auth": "oauth2",
        "access_token": google.grant(email="ada@example.com"),
        "refresh_token": "1//0g-refresh-token-not-used-here",
        "token_type": "Bearer",
        "expires_at": time.time() + 3000,
        "scope": SCOPE,
        "account": "ada@example.com",
    }


def ctx(google: FakeGoogleSheets, **env: str) -> StepContext:
    return StepContext(
        run_id="run-1",
        step_id="rows",
        deadline=time.monotonic() + 10,
        env={"LEVQOR_SSRF_ALLOW": "127.0.0.1", "LEVQOR_SHEETS_API_BASE": google.url, **env},
    )


def poll(google: FakeGoogleSheets, creds: dict, state: dict | None, **config):
    config = {"spreadsheet_id": SHEET_ID, "sheet": "Orders", **config}
    return as_poll(
        levqor_sheets.poll_trigger("sheets", "new_row", config, creds, state, ctx(google))
    )


def api_calls(google: FakeGoogleSheets) -> list:
    return [r for r in google.requests if r.path.startswith("/v4/")]


# ----------------------------------------------------------------------------- new_row


def test_first_poll_is_a_baseline_with_samples(google: FakeGoogleSheets, oauth: dict) -> None:
    google.set_rows(
        SHEET_ID, "Orders", [HEADERS] + [[f"A-{i}", f"u{i}@x.example", i] for i in range(1, 6)]
    )
    first = poll(google, oauth, None)
    assert first.state == {"row_count": 6}
    # the last rows come back as samples (the host records them as seen and starts nothing)
    assert [i.id for i in first.items] == ["4", "5", "6"]
    assert first.items[-1].data == {
        "row_number": 6,
        "Order": "A-5",
        "Email": "u5@x.example",
        "Total": "5",
    }
    # the sheet read in pages until one is empty
    first_page, empty = api_calls(google)
    assert first_page.method == "GET"
    assert first_page.path == f"/v4/spreadsheets/{SHEET_ID}/values/%27Orders%27%211%3A5000"
    assert empty.path.endswith("/values/%27Orders%27%215001%3A10000")
    assert first_page.query == {
        "majorDimension": ["ROWS"],
        "valueRenderOption": ["FORMATTED_VALUE"],
    }
    assert first_page.header("Authorization") == f"Bearer {oauth['access_token']}"


def test_a_long_sheet_is_read_in_pages_for_the_baseline(
    google: FakeGoogleSheets, oauth: dict
) -> None:
    rows = [HEADERS] + [[f"A-{i}"] for i in range(1, 5100)]
    for i in range(4990, 5000):
        rows[i] = []  # the first page ends in empty rows; the data goes on below
    google.set_rows(SHEET_ID, "Orders", rows)
    first = poll(google, oauth, None)
    assert first.state == {"row_count": 5100}
    assert [i.id for i in first.items] == ["5098", "5099", "5100"]
    assert len(api_calls(google)) == 3
    google.add_row(SHEET_ID, "Orders", ["A-new"])
    assert [i.id for i in poll(google, oauth, first.state).items] == ["5101"]


def test_new_rows_are_items_and_the_cursor_advances(google: FakeGoogleSheets, oauth: dict) -> None:
    google.set_rows(SHEET_ID, "Orders", [HEADERS, ["A-1", "a@x.example", 10]])
    state = poll(google, oauth, None).state
    google.server.reset()
    idle = poll(google, oauth, state)
    assert idle.items == [] and idle.state == state
    [req] = api_calls(google)  # one request when nothing is new
    assert req.path.endswith("/values/%27Orders%27%213%3A502")

    assert google.add_row(SHEET_ID, "Orders", ["A-2", "b@x.example", 20]) == 3
    assert google.add_row(SHEET_ID, "Orders", ["A-3", "c@x.example", 30.5]) == 4
    nxt = poll(google, oauth, state)
    assert [(i.id, i.data) for i in nxt.items] == [
        ("3", {"row_number": 3, "Order": "A-2", "Email": "b@x.example", "Total": "20"}),
        ("4", {"row_number": 4, "Order": "A-3", "Email": "c@x.example", "Total": "30.5"}),
    ]
    assert nxt.state == {"row_count": 4}
    assert poll(google, oauth, nxt.state).items == []


def test_header_handling(google: FakeGoogleSheets, oauth: dict) -> None:
    google.set_rows(SHEET_ID, "Q&A 2024", [["Name", "", "Name", "row_number"]])
    state = poll(google, oauth, None, sheet="Q&A 2024").state
    google.add_row(SHEET_ID, "Q&A 2024", ["Ada", "x", "Lovelace", "r", "extra"])
    [item] = poll(google, oauth, state, sheet="Q&A 2024").items
    # empty header -> the letter; a name used twice -> the letter added; no header -> the letter
    assert item.data == {
        "row_number": 2,
        "Name": "Ada",
        "B": "x",
        "Name (C)": "Lovelace",
        "row_number (D)": "r",
        "E": "extra",
    }


def test_no_header_row_and_unformatted_values(google: FakeGoogleSheets, oauth: dict) -> None:
    first = poll(google, oauth, None, header_row=0, value_render_option="UNFORMATTED_VALUE")
    assert first.items == [] and first.state == {"row_count": 0}
    google.add_row(SHEET_ID, "Orders", ["A-1", 42, True])
    [item] = poll(
        google, oauth, first.state, header_row=0, value_render_option="UNFORMATTED_VALUE"
    ).items
    assert item.id == "1" and item.data == {"row_number": 1, "A": "A-1", "B": 42, "C": True}


def test_a_long_backlog_is_read_in_bounded_pages(google: FakeGoogleSheets, oauth: dict) -> None:
    google.set_rows(SHEET_ID, "Orders", [HEADERS])
    state = poll(google, oauth, None).state
    for i in range(levqor_sheets.MAX_POLL_ROWS + 20):
        google.add_row(SHEET_ID, "Orders", [f"A-{i}"])
    one = poll(google, oauth, state)
    assert len(one.items) == levqor_sheets.MAX_POLL_ROWS
    two = poll(google, oauth, one.state)
    assert [i.id for i in two.items] == [str(n) for n in range(502, 522)]
    assert two.state == {"row_count": 521}


def test_empty_rows_in_between_are_skipped(google: FakeGoogleSheets, oauth: dict) -> None:
    google.set_rows(SHEET_ID, "Orders", [HEADERS])
    state = poll(google, oauth, None).state
    google.add_row(SHEET_ID, "Orders", [])
    google.add_row(SHEET_ID, "Orders", ["A-9"])
    nxt = poll(google, oauth, state)
    assert [i.id for i in nxt.items] == ["3"] and nxt.state == {"row_count": 3}


def test_deleting_rows_shifts_row_numbers(google: FakeGoogleSheets, oauth: dict) -> None:
    """The documented limit: row numbers are ids, so after a deletion the next new row takes a
    number already seen, and rows start runs again once the sheet grows past the last seen."""
    google.set_rows(SHEET_ID, "Orders", [HEADERS, ["A-1"], ["A-2"], ["A-3"]])
    state = poll(google, oauth, None).state
    google.delete_row(SHEET_ID, "Orders", 2)
    google.add_row(SHEET_ID, "Orders", ["A-4"])  # row 4 again
    assert poll(google, oauth, state).items == []
    google.add_row(SHEET_ID, "Orders", ["A-5"])  # row 5: past the last row seen
    assert [(i.id, i.data["Order"]) for i in poll(google, oauth, state).items] == [("5", "A-5")]


def test_service_account_polls_too(google: FakeGoogleSheets) -> None:
    creds = google.service_account()
    google.set_rows(SHEET_ID, "Orders", [HEADERS])
    state = poll(google, creds, None).state
    google.add_row(SHEET_ID, "Orders", ["A-1"])
    assert [i.id for i in poll(google, creds, state).items] == ["2"]
    assert google.grants == ["urn:ietf:params:oauth:grant-type:jwt-bearer"]  # one token, cached


def test_trigger_through_the_plugin_manager(google: FakeGoogleSheets, oauth: dict) -> None:
    pm = make_plugin_manager(
        entry_points=False, builtins=False, plugins=[("sheets", levqor_sheets)]
    )
    info = pm.catalog.trigger("sheets", "new_row")
    assert info is not None and info.kind == "polling"
    assert not list(info.validator.iter_errors(info.example))
    out = as_poll(
        pm.call_owner(
            "poll_trigger",
            "sheets",
            connector="sheets",
            trigger="new_row",
            config={"spreadsheet_id": SHEET_ID, "sheet": "Orders"},
            credentials=oauth,
            state=None,
            context=ctx(google),
        )
    )
    assert out.state == {"row_count": 1}


def test_poll_errors(google: FakeGoogleSheets, oauth: dict) -> None:
    with pytest.raises(PayloadError):
        poll(google, oauth, None, sheet="Nope")
    with pytest.raises(PermanentError) as e:
        poll(google, oauth, None, spreadsheet_id="missing")
    assert e.value.code == "not_found"
    google.denied.add(SHEET_ID)
    with pytest.raises(CredentialError) as e:
        poll(google, oauth, None)
    assert "the connected account ada@example.com" in str(e.value)
    with pytest.raises(PayloadError):
        levqor_sheets.poll_trigger("sheets", "nope", {}, oauth, None, ctx(google))


# ----------------------------------------------------------------------------- OAuth credential


def test_oauth_401_is_a_credential_error_for_the_host_to_refresh(
    google: FakeGoogleSheets, oauth: dict
) -> None:
    google.revoke_tokens()
    with pytest.raises(CredentialError) as e:
        poll(google, oauth, None)
    assert e.value.status == 401
    assert oauth["access_token"] not in str(e.value)
    assert len(api_calls(google)) == 1  # no retry of its own: the host refreshes and calls again
    assert not google.server.requests_to("/token")
    with pytest.raises(CredentialError) as e:
        levqor_sheets.run_task(
            "sheets",
            "append_rows",
            {"spreadsheet_id": SHEET_ID, "range": "Orders", "values": [1]},
            oauth,
            ctx(google),
        )
    assert e.value.status == 401


def test_oauth_appends_with_the_bearer_token(google: FakeGoogleSheets, oauth: dict) -> None:
    out = levqor_sheets.run_task(
        "sheets",
        "append_rows",
        {"spreadsheet_id": SHEET_ID, "range": "Orders!A1", "values": [["a", 1]]},
        oauth,
        ctx(google),
    )
    assert out["updated_range"] == "Orders!A1:B1"
    [req] = api_calls(google)
    assert req.header("Authorization") == f"Bearer {oauth['access_token']}"


def _pkce() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(48)
    challenge = (
        base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).decode().rstrip("=")
    )
    return verifier, challenge


def test_google_web_server_flow_against_the_fake(google: FakeGoogleSheets) -> None:
    """What the host's Connect does with the connector's oauth2 description, step by step."""
    (desc,) = levqor_sheets.describe_schema()
    o = desc["oauth2"]
    assert o["authorization_url"] == "https://accounts.google.com/o/oauth2/v2/auth"
    assert o["token_url"] == "https://oauth2.googleapis.com/token"
    assert (
        o["extra_params"]["access_type"] == "offline" and o["extra_params"]["prompt"] == "consent"
    )
    assert o["pkce"] is True and SCOPE in o["scopes"]
    verifier, challenge = _pkce()
    redirect = "https://levqor.example/oauth/callback"
    params = {
        "client_id": google.client_id,
        "redirect_uri": redirect,
        "response_type": "code",
        "scope": " ".join(o["scopes"]),
        "state": "signed-state",
        "code_challenge": challenge,
        "code_challenge_method": "S256",
        **o["extra_params"],
    }
    resp = requests.get(
        f"{google.authorization_url}?{urlencode(params)}", allow_redirects=False, timeout=5
    )
    assert resp.status_code == 302
    back = parse_qs(urlsplit(resp.headers["Location"]).query)
    assert back["state"] == ["signed-state"]
    form = {
        "grant_type": "authorization_code",
        "code": back["code"][0],
        "redirect_uri": redirect,
        "client_id": google.client_id,
        "client_secret": google.client_secret,
        "code_verifier": verifier,
    }
    token = requests.post(google.token_uri, data=form, timeout=5).json()
    assert set(token) == {
        "access_token",
        "expires_in",
        "refresh_token",
        "scope",
        "token_type",
        "id_token",
    }
    # a code is used once
    again = requests.post(google.token_uri, data=form, timeout=5)
    assert again.status_code == 400 and again.json()["error"] == "invalid_grant"

    c = ctx(google)
    assert levqor_sheets.oauth_credentials("sheets", token, c) == {"account": "ada@example.com"}
    assert not google.server.requests_to("/v1/userinfo")  # the id_token named the account

    refreshed = requests.post(
        google.token_uri,
        data={
            "grant_type": "refresh_token",
            "refresh_token": token["refresh_token"],
            "client_id": google.client_id,
            "client_secret": google.client_secret,
        },
        timeout=5,
    ).json()
    assert "refresh_token" not in refreshed and refreshed["access_token"] != token["access_token"]
    google.revoke_refresh_tokens()
    dead = requests.post(
        google.token_uri,
        data={
            "grant_type": "refresh_token",
            "refresh_token": token["refresh_token"],
            "client_id": google.client_id,
            "client_secret": google.client_secret,
        },
        timeout=5,
    )
    assert dead.status_code == 400
    assert dead.json() == {
        "error": "invalid_grant",
        "error_description": "Token has been expired or revoked.",
    }


def test_wrong_pkce_verifier_is_refused(google: FakeGoogleSheets) -> None:
    _verifier, challenge = _pkce()
    redirect = "https://levqor.example/oauth/callback"
    resp = requests.get(
        google.authorization_url,
        params={
            "client_id": google.client_id,
            "redirect_uri": redirect,
            "response_type": "code",
            "scope": SCOPE,
            "code_challenge": challenge,
            "code_challenge_method": "S256",
        },
        allow_redirects=False,
        timeout=5,
    )
    code = parse_qs(urlsplit(resp.headers["Location"]).query)["code"][0]
    bad = requests.post(
        google.token_uri,
        data={
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": redirect,
            "client_id": google.client_id,
            "client_secret": google.client_secret,
            "code_verifier": "wrong",
        },
        timeout=5,
    )
    assert bad.status_code == 400 and bad.json()["error"] == "invalid_grant"


def test_account_from_userinfo_when_no_id_token(google: FakeGoogleSheets) -> None:
    token = {"access_token": google.grant(email="grace@example.com"), "expires_in": 3599}
    c = ctx(google, LEVQOR_GOOGLE_USERINFO_API_BASE=google.userinfo_url)
    assert levqor_sheets.oauth_credentials("sheets", token, c) == {"account": "grace@example.com"}
    [req] = google.server.requests_to("/v1/userinfo")
    assert req.header("Authorization") == f"Bearer {token['access_token']}"
    # after a refresh the stored account is kept without another call
    assert levqor_sheets.oauth_credentials(
        "sheets", {**token, "account": "grace@example.com"}, c
    ) == {"account": "grace@example.com"}
    assert len(google.server.requests_to("/v1/userinfo")) == 1
    assert levqor_sheets.oauth_credentials("notion", token, c) is None
    assert levqor_sheets.check_credentials(
        "sheets", {"auth": "oauth2", "access_token": token["access_token"]}, c
    ) == {"ok": True, "account": "grace@example.com"}


def test_description_accepts_both_credentials(google: FakeGoogleSheets, oauth: dict) -> None:
    (desc,) = levqor_sheets.describe_schema()
    assert check_description(desc) == []
    from jsonschema import Draft202012Validator

    v = Draft202012Validator(desc["credentials"])
    assert v.is_valid(oauth) and v.is_valid(google.service_account())
    assert not v.is_valid({"client_email": "x@y.z"})


# ----------------------------------------------------------------------------- lookup_rows


def lookup(google: FakeGoogleSheets, creds: dict, **payload) -> dict:
    payload = {"spreadsheet_id": SHEET_ID, "sheet": "Orders", **payload}
    return levqor_sheets.run_task("sheets", "lookup_rows", payload, creds, ctx(google))


def test_lookup_rows(google: FakeGoogleSheets, oauth: dict) -> None:
    google.set_rows(
        SHEET_ID,
        "Orders",
        [
            HEADERS,
            ["A-1", "a@x.example", 10],
            ["A-2", "b@x.example", 20],
            ["A-3", "a@x.example", 30],
        ],
    )
    out = lookup(google, oauth, column="Email", value="a@x.example")
    assert out["count"] == 2 and out["truncated"] is False
    assert [r["row_number"] for r in out["rows"]] == [2, 4]
    assert out["first"] == {"row_number": 2, "Order": "A-1", "Email": "a@x.example", "Total": "10"}
    # by letter, a number compared as the sheet shows it, a column name in another case
    assert lookup(google, oauth, column="C", value=20)["first"]["Order"] == "A-2"
    assert lookup(google, oauth, column="total", value=30.0)["first"]["row_number"] == 4
    limited = lookup(google, oauth, column="Email", value="a@x.example", limit=1)
    assert limited["count"] == 1 and limited["truncated"] is True
    none = lookup(google, oauth, column="Email", value="nobody@x.example")
    assert none == {"rows": [], "count": 0, "truncated": False}
    # the header row itself is never a match
    assert lookup(google, oauth, column="Email", value="Email")["count"] == 0
    # the header row, the one column, and the matching rows in one batchGet: never the sheet
    google.server.reset()
    lookup(google, oauth, column="Email", value="a@x.example")
    header, column, batch = api_calls(google)
    assert header.path.endswith("/values/%27Orders%27%211%3A1")
    assert column.path.endswith("/values/%27Orders%27%21B2%3AB")
    assert batch.path == f"/v4/spreadsheets/{SHEET_ID}/values:batchGet"
    assert batch.query["ranges"] == ["'Orders'!2:2", "'Orders'!4:4"]


def test_lookup_unknown_column(google: FakeGoogleSheets, oauth: dict) -> None:
    google.set_rows(SHEET_ID, "Orders", [HEADERS])
    with pytest.raises(PayloadError) as e:
        lookup(google, oauth, column="Colour", value="red")
    assert e.value.code == "unknown_column" and "Order, Email, Total" in str(e.value)


# ----------------------------------------------------------------------------- update_row


def update(google: FakeGoogleSheets, creds: dict, **payload) -> dict:
    payload = {"spreadsheet_id": SHEET_ID, "sheet": "Orders", **payload}
    return levqor_sheets.run_task("sheets", "update_row", payload, creds, ctx(google))


def test_update_row_by_column_name_keeps_other_cells(google: FakeGoogleSheets, oauth: dict) -> None:
    google.set_rows(SHEET_ID, "Orders", [HEADERS + ["Status"], ["A-1", "a@x.example", 10, "new"]])
    out = update(
        google,
        oauth,
        row_number=2,
        values={"Email": "z@x.example", "Status": "paid"},
        value_input_option="RAW",
    )
    assert out == {
        "spreadsheet_id": SHEET_ID,
        "updated_range": "Orders!B2:D2",
        "updated_cells": 2,
        "row_number": 2,
    }
    assert google.rows(SHEET_ID, "Orders")[1] == ["A-1", "z@x.example", 10, "paid"]
    put = [r for r in api_calls(google) if r.method == "PUT"][0]
    assert put.path.endswith("/values/%27Orders%27%21B2%3AD2")
    assert put.query == {"valueInputOption": ["RAW"]}
    assert put.json() == {
        "range": "'Orders'!B2:D2",
        "majorDimension": "ROWS",
        "values": [["z@x.example", None, "paid"]],
    }


def test_update_row_by_letters_and_array(google: FakeGoogleSheets, oauth: dict) -> None:
    google.set_rows(SHEET_ID, "Orders", [HEADERS, ["A-1", "a@x.example", 10]])
    update(google, oauth, row_number=3, values={"E": "late"})  # a row and column not there yet
    assert google.rows(SHEET_ID, "Orders")[2] == [None, None, None, None, "late"]
    out = update(google, oauth, row_number=2, values=["A-1b", None, 11])
    assert out["updated_range"] == "Orders!A2:C2"
    assert google.rows(SHEET_ID, "Orders")[1] == ["A-1b", "a@x.example", 11]


def test_update_row_refusals(google: FakeGoogleSheets, oauth: dict) -> None:
    google.set_rows(SHEET_ID, "Orders", [HEADERS])
    with pytest.raises(PayloadError):
        update(google, oauth, row_number=1, values={"Email": "x"})  # the header row
    with pytest.raises(PayloadError):
        update(google, oauth, row_number=2, values={"Colour": "red"})
    with pytest.raises(PayloadError):
        update(google, oauth, row_number=2, values={"Email": {"nested": 1}})
    assert not [r for r in api_calls(google) if r.method == "PUT"]
    v = levqor_sheets.validate_payload
    ok = {"spreadsheet_id": SHEET_ID, "sheet": "Orders", "row_number": 2, "values": {"A": 1}}
    assert v("sheets", "update_row", ok) == []
    assert v("sheets", "update_row", {**ok, "sheet": ""})
    assert v("sheets", "update_row", {**ok, "values": {}})
    assert v("sheets", "lookup_rows", {**ok, "spreadsheet_id": "a/b"})


# ----------------------------------------------------------------------------- the contract kit

EXAMPLE_ID = "1BxiMVs0XRA5nFMdKvBdBZjgmUUqptlbs74OgvE2upms"  # the examples' spreadsheet


def _kit_fake() -> FakeGoogleSheets:
    fake = FakeGoogleSheets()
    fake.add_spreadsheet(EXAMPLE_ID, ["Orders"])
    fake.set_rows(
        EXAMPLE_ID, "Orders", [HEADERS + ["Status"], ["A-0", "a@x.example", 1, "new"]] * 4
    )
    return fake


class TestNewRowContract(PollingTriggerContract):
    plugin = levqor_sheets
    connector = "sheets"
    trigger = "new_row"

    def fake(self) -> FakeGoogleSheets:
        return _kit_fake()

    def credentials(self, fake: FakeGoogleSheets) -> dict:
        return {"auth": "oauth2", "access_token": fake.grant(), "account": fake.user_email}

    def env(self, fake: FakeGoogleSheets) -> dict:
        return {"LEVQOR_SHEETS_API_BASE": fake.url}

    def add_item(self, fake: FakeGoogleSheets) -> str:
        return str(fake.add_row(EXAMPLE_ID, "Orders", ["A-new", "n@x.example", 5]))


class TestNewRowContractServiceAccount(TestNewRowContract):
    secret_fields = ("private_key", "private_key_id")

    def credentials(self, fake: FakeGoogleSheets) -> dict:
        return fake.service_account()


class TestOAuthContract(OAuthContract):
    plugin = levqor_sheets
    connector = "sheets"

    def fake(self) -> FakeGoogleSheets:
        return _kit_fake()

    def env(self, fake: FakeGoogleSheets) -> dict:
        return {
            "LEVQOR_SHEETS_API_BASE": fake.url,
            "LEVQOR_GOOGLE_USERINFO_API_BASE": fake.userinfo_url,
        }

    def oauth_credentials(self, fake: FakeGoogleSheets) -> dict:
        return {
            "auth": "oauth2",
            "access_token": fake.grant(email="kit@example.com"),
            "refresh_token": "1//0g-kit-refresh",
            "token_type": "Bearer",
            "scope": SCOPE,
        }
