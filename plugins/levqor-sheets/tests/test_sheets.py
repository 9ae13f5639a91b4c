"""levqor-sheets against its fake Google token endpoint and Sheets API over real HTTP."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs

import jwt
import levqor_sheets
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from levqor_kernel.context import StepContext
from levqor_kernel.errors import (
    BlockedURLError,
    CredentialError,
    PayloadError,
    PermanentError,
    RetryableError,
)
from levqor_kernel.testing import ConnectorContract
from levqor_sheets.fake import JWT_GRANT, SCOPE, FakeGoogleSheets

SHEET_ID = "1BxiMVs0XRA5nFMdKvBdBZjgmUUqptlbs74OgvE2upms"
ALLOW = {"LEVQOR_SSRF_ALLOW": "127.0.0.1"}


def _pem(key: Any) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()


# the service account's key pair, generated for this test module
_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
PRIVATE_PEM = _pem(_KEY)
PUBLIC_KEY = _KEY.public_key()


class TestContract(ConnectorContract):
    plugin = levqor_sheets
    # client_email and token_uri are identifiers, not secrets
    secret_fields = ("private_key", "private_key_id")

    def credentials(self, base_url: str) -> dict:
        return {
            "type": "service_account",
            "client_email": "contract@levqor-test.iam.gserviceaccount.com",
            "private_key": PRIVATE_PEM,
            "private_key_id": "contract-key-id-123456",
            "token_uri": f"{base_url}/token",
        }

    def env(self, base_url: str) -> dict:
        return {"LEVQOR_SHEETS_API_BASE": base_url}


@pytest.fixture(scope="module")
def shared_google() -> Iterator[FakeGoogleSheets]:
    # one server per module: stopping a FakeServer takes up to 0.5 s
    with FakeGoogleSheets(public_key=PUBLIC_KEY) as fake:
        yield fake


@pytest.fixture
def google(shared_google: FakeGoogleSheets) -> FakeGoogleSheets:
    shared_google.reset()
    levqor_sheets.clear_token_cache()
    shared_google.add_spreadsheet(SHEET_ID, ["Orders", "Sales 2024"])
    return shared_google


@pytest.fixture
def creds(google: FakeGoogleSheets) -> dict:
    return google.service_account(PRIVATE_PEM)


def ctx(env: dict, *, timeout: float = 5.0) -> StepContext:
    return StepContext(
        run_id="run-1", step_id="sheet", deadline=time.monotonic() + timeout, env=env
    )


def env_for(google: FakeGoogleSheets) -> dict:
    return {**ALLOW, "LEVQOR_SHEETS_API_BASE": google.url}


def append(google: FakeGoogleSheets, creds: Any, payload: dict | None = None, **kw: Any) -> dict:
    payload = payload or {"spreadsheet_id": SHEET_ID, "range": "Orders!A1", "values": [["a", 1]]}
    return levqor_sheets.run_task(
        "sheets", "append_rows", payload, creds, ctx(kw.pop("env", None) or env_for(google), **kw)
    )


def token_calls(google: FakeGoogleSheets) -> list:
    return google.server.requests_to("/token", "POST")


def append_calls(google: FakeGoogleSheets) -> list:
    return [r for r in google.requests if r.path.endswith(":append")]


# ----------------------------------------------------------------------------- success


def test_wire_format(google: FakeGoogleSheets, creds: dict) -> None:
    payload = {
        "spreadsheet_id": SHEET_ID,
        "range": "'Sales 2024'!A1",
        "values": [["Ada", 42, True, None], ["Grace", 3.5, False, "=1+1"]],
    }
    out = append(google, creds, payload)

    [tok] = token_calls(google)
    assert tok.header("Content-Type") == "application/x-www-form-urlencoded"
    form = parse_qs(tok.body.decode())
    assert form["grant_type"] == [JWT_GRANT]
    assertion = form["assertion"][0]
    assert jwt.get_unverified_header(assertion) == {
        "alg": "RS256",
        "typ": "JWT",
        "kid": google.key_id,
    }
    claims = jwt.decode(assertion, PUBLIC_KEY, algorithms=["RS256"], audience=google.token_uri)
    assert claims["iss"] == google.client_email
    assert claims["scope"] == SCOPE
    assert claims["aud"] == google.token_uri
    assert claims["exp"] - claims["iat"] == 3600
    assert abs(claims["iat"] - time.time()) < 10

    [req] = append_calls(google)
    assert req.method == "POST"
    assert req.path == f"/v4/spreadsheets/{SHEET_ID}/values/%27Sales%202024%27%21A1:append"
    assert req.query == {"valueInputOption": ["USER_ENTERED"], "insertDataOption": ["INSERT_ROWS"]}
    [issued] = google.tokens
    assert req.header("Authorization") == f"Bearer {issued}"
    assert req.header("Content-Type") == "application/json"
    assert req.json() == {
        "range": "'Sales 2024'!A1",
        "majorDimension": "ROWS",
        "values": [["Ada", 42, True, None], ["Grace", 3.5, False, "=1+1"]],
    }
    assert google.rows(SHEET_ID, "Sales 2024") == payload["values"]
    assert out == {
        "spreadsheet_id": SHEET_ID,
        "updated_range": "'Sales 2024'!A1:D2",
        "updated_rows": 2,
        "updated_cells": 8,
    }


def test_single_row_url_id_and_options(google: FakeGoogleSheets, creds: dict) -> None:
    append(google, creds)  # row 1
    out = append(
        google,
        creds,
        {
            "spreadsheet_id": f"https://docs.google.com/spreadsheets/d/{SHEET_ID}/edit#gid=0",
            "range": "Orders!C1",
            "values": ["b", 2, "=SUM(A:A)"],
            "value_input_option": "RAW",
            "insert_data_option": "OVERWRITE",
        },
    )
    assert out["updated_range"] == "Orders!C2:E2"
    assert (out["updated_rows"], out["updated_cells"]) == (1, 3)
    req = append_calls(google)[-1]
    assert req.query == {"valueInputOption": ["RAW"], "insertDataOption": ["OVERWRITE"]}
    assert req.json()["values"] == [["b", 2, "=SUM(A:A)"]]
    assert google.appends[-1]["value_input_option"] == "RAW"
    assert google.rows(SHEET_ID, "Orders") == [["a", 1], [None, None, "b", 2, "=SUM(A:A)"]]


def test_token_is_cached_per_key(google: FakeGoogleSheets, creds: dict) -> None:
    append(google, creds)
    append(google, creds)
    assert len(token_calls(google)) == 1 and len(google.appends) == 2
    # the same client_email with different key material never gets the cached token
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    with pytest.raises(CredentialError) as e:
        append(google, {**creds, "private_key": _pem(other)})
    assert "Invalid JWT Signature" in str(e.value)
    assert len(token_calls(google)) == 2 and len(google.appends) == 2


def test_expiring_token_is_renewed(google: FakeGoogleSheets, creds: dict) -> None:
    append(google, creds)
    append(google, creds)
    assert len(token_calls(google)) == 1  # a token is reused while it is fresh
    google.revoke_tokens()
    google.token_lifetime = 1  # the next one is cached for half of it
    append(google, creds)
    calls = len(token_calls(google))
    time.sleep(0.6)  # past the half: however slow the machine, the cached token is stale now
    append(google, creds)
    assert len(token_calls(google)) == calls + 1 and len(google.appends) == 4


def test_401_drops_cached_token_and_retries_once(google: FakeGoogleSheets, creds: dict) -> None:
    append(google, creds)
    google.revoke_tokens()
    out = append(google, creds)
    assert out["updated_rows"] == 1
    assert len(token_calls(google)) == 2 and len(append_calls(google)) == 3
    assert len(google.appends) == 2


def test_401_with_fresh_token_is_a_credential_error(google: FakeGoogleSheets, creds: dict) -> None:
    google.fail_next(401)
    with pytest.raises(CredentialError) as e:
        append(google, creds)
    assert e.value.status == 401 and "UNAUTHENTICATED" in str(e.value)
    assert len(append_calls(google)) == 1
    append(google, creds)  # the refused token was not kept
    assert len(token_calls(google)) == 2


def test_escaped_newlines_in_key_are_accepted(google: FakeGoogleSheets, creds: dict) -> None:
    out = append(google, {**creds, "private_key": PRIVATE_PEM.replace("\n", "\\n")})
    assert out["updated_rows"] == 1


def test_check_credentials(google: FakeGoogleSheets, creds: dict) -> None:
    c = ctx(env_for(google))
    assert levqor_sheets.check_credentials("sheets", creds, c) == {
        "ok": True,
        "account": google.client_email,
    }
    assert len(token_calls(google)) == 1 and not append_calls(google)
    assert levqor_sheets.check_credentials("other", creds, c) is None
    with pytest.raises(CredentialError):
        levqor_sheets.check_credentials("sheets", {**creds, "client_email": "x@y.z"}, c)


# ----------------------------------------------------------------------------- token errors


@pytest.mark.parametrize(
    ("override", "text"),
    [
        ({"client_email": "someone-else@levqor-test.iam.gserviceaccount.com"}, "account not found"),
        ({"private_key_id": "not-the-right-kid"}, "Invalid JWT Signature"),
    ],
)
def test_token_refused_is_credential_error(
    google: FakeGoogleSheets, creds: dict, override: dict, text: str
) -> None:
    with pytest.raises(CredentialError) as e:
        append(google, {**creds, **override})
    msg = str(e.value)
    assert e.value.status == 400 and e.value.code == "invalid_grant"
    assert text in msg and "invalid_grant" in msg
    assert "PRIVATE KEY" not in msg and PRIVATE_PEM[40:80] not in msg
    assert not append_calls(google)


@pytest.mark.parametrize(
    ("status", "headers", "retry_after"),
    [(429, {"Retry-After": "9"}, 9.0), (503, {}, None), (500, {}, None)],
)
def test_token_endpoint_transient_errors(
    google: FakeGoogleSheets, creds: dict, status: int, headers: dict, retry_after: float | None
) -> None:
    google.fail_next(status, {"error": "temporarily_unavailable"}, headers, endpoint="token")
    with pytest.raises(RetryableError) as e:
        append(google, creds)
    assert e.value.status == status and e.value.retry_after == retry_after
    assert append(google, creds)["updated_rows"] == 1  # the next attempt works


def test_token_endpoint_malformed_success(google: FakeGoogleSheets, creds: dict) -> None:
    google.fail_next(200, "<html>login</html>", {"Content-Type": "text/html"}, endpoint="token")
    with pytest.raises(PermanentError) as e:
        append(google, creds)
    assert e.value.code == "malformed_response" and not isinstance(e.value, RetryableError)
    google.fail_next(200, {"access_token": "abc", "token_type": "mac"}, endpoint="token")
    with pytest.raises(PermanentError):
        append(google, creds)
    assert not append_calls(google)


# ----------------------------------------------------------------------------- Sheets errors


def test_unknown_sheet_is_payload_error(google: FakeGoogleSheets, creds: dict) -> None:
    with pytest.raises(PayloadError) as e:
        append(google, creds, {"spreadsheet_id": SHEET_ID, "range": "Nope!A1", "values": [1]})
    assert e.value.status == 400 and e.value.code == "invalid_argument"
    assert "INVALID_ARGUMENT: Unable to parse range: Nope!A1" in str(e.value)


def test_permission_denied_names_the_account(google: FakeGoogleSheets, creds: dict) -> None:
    google.denied.add(SHEET_ID)
    with pytest.raises(CredentialError) as e:
        append(google, creds)
    msg = str(e.value)
    assert e.value.status == 403 and "PERMISSION_DENIED" in msg
    assert f"share the spreadsheet with {google.client_email}" in msg


def test_not_found(google: FakeGoogleSheets, creds: dict) -> None:
    with pytest.raises(PermanentError) as e:
        append(google, creds, {"spreadsheet_id": "missing_id", "range": "A1", "values": [1]})
    assert type(e.value) is PermanentError and e.value.code == "not_found"
    assert "NOT_FOUND" in str(e.value) and "missing_id" in str(e.value)


def test_rate_limited_keeps_retry_after(google: FakeGoogleSheets, creds: dict) -> None:
    google.fail_next(429, headers={"Retry-After": "12"})
    with pytest.raises(RetryableError) as e:
        append(google, creds)
    assert e.value.status == 429 and e.value.retry_after == 12.0
    assert "RESOURCE_EXHAUSTED" in str(e.value)
    assert not google.appends


def test_resource_exhausted_as_403_is_retryable(google: FakeGoogleSheets, creds: dict) -> None:
    google.fail_next(
        403, {"error": {"code": 403, "message": "quota", "status": "RESOURCE_EXHAUSTED"}}
    )
    with pytest.raises(RetryableError):
        append(google, creds)


def test_unavailable_then_success(google: FakeGoogleSheets, creds: dict) -> None:
    google.fail_next(503)
    with pytest.raises(RetryableError) as e:
        append(google, creds)
    assert e.value.status == 503 and "UNAVAILABLE" in str(e.value)
    assert append(google, creds)["updated_range"] == "Orders!A1:B1"
    assert len(google.appends) == 1 and len(token_calls(google)) == 1


def test_timeout_is_retryable(google: FakeGoogleSheets, creds: dict) -> None:
    append(google, creds)  # token cached
    google.delay_next(1.0)
    started = time.monotonic()
    with pytest.raises(RetryableError) as e:
        append(google, creds, timeout=0.4)
    assert e.value.code == "timeout" and time.monotonic() - started < 0.9


def test_malformed_success_fails_closed(google: FakeGoogleSheets, creds: dict) -> None:
    google.fail_next(200, "<html>surprise</html>", {"Content-Type": "text/html"})
    with pytest.raises(PermanentError) as e:
        append(google, creds)
    assert e.value.code == "malformed_response"
    google.fail_next(200, {"spreadsheetId": SHEET_ID})
    with pytest.raises(PermanentError):
        append(google, creds)


def test_secrets_never_in_errors(google: FakeGoogleSheets, creds: dict) -> None:
    append(google, creds)
    [token] = google.tokens
    echo = f"bad token {token} key {PRIVATE_PEM} kid {google.key_id}"
    google.fail_next(
        400, google_body := {"error": {"code": 400, "message": echo, "status": "INVALID_ARGUMENT"}}
    )
    with pytest.raises(PayloadError) as e:
        append(google, creds)
    text = str(e.value) + repr(e.value.to_dict())
    assert google_body["error"]["message"][:10] in text  # the message is shown ...
    for secret in (token, google.key_id, PRIVATE_PEM, PRIVATE_PEM.splitlines()[1]):
        assert secret not in text  # ... without the secrets in it


# ----------------------------------------------------------------------------- credentials, payload, SSRF


@pytest.mark.parametrize(
    "bad",
    [
        None,
        {},
        {"client_email": "bot@x.iam.gserviceaccount.com"},
        {"private_key": "x"},
        {
            "type": "authorized_user",
            "client_email": "a@b.c",
            "private_key": "-----BEGIN PRIVATE KEY-----",
        },
        {"client_email": "not-an-email", "private_key": "p"},
        {
            "client_email": "a@b.c",
            "private_key": "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----",
        },
        {"client_email": "a@b.c", "private_key": "EC", "token_uri": "ftp://x"},
    ],
)
def test_bad_credentials_fail_before_any_request(google: FakeGoogleSheets, bad: Any) -> None:
    if bad and bad.get("private_key") == "EC":
        bad = {**bad, "private_key": _pem(ec.generate_private_key(ec.SECP256R1()))}
    with pytest.raises(CredentialError) as e:
        append(google, bad)
    assert "AAAA" not in str(e.value)
    assert not google.requests


def test_token_uri_goes_through_the_ssrf_guard(google: FakeGoogleSheets, creds: dict) -> None:
    with pytest.raises(BlockedURLError):
        append(google, creds, env={"LEVQOR_SHEETS_API_BASE": google.url})
    assert not google.requests


def test_api_base_credential_goes_through_the_ssrf_guard(
    google: FakeGoogleSheets, creds: dict
) -> None:
    c = {**creds, "api_base": google.url}
    append(google, c, env=ALLOW)  # allowed: works, and caches the token
    assert len(google.appends) == 1
    google.server.reset()
    with pytest.raises(BlockedURLError):
        append(google, c, env={"LEVQOR_SSRF_ALLOW": ""})
    assert not google.requests and len(google.appends) == 1


def test_payload_validation(google: FakeGoogleSheets, creds: dict) -> None:
    v = levqor_sheets.validate_payload
    ok = {"spreadsheet_id": SHEET_ID, "range": "A1", "values": [[1]]}
    assert v("sheets", "append_rows", ok) == []
    assert v("other", "append_rows", ok) is None
    assert v("sheets", "append_rows", {**ok, "values": [[1], 2]})
    assert v("sheets", "append_rows", {**ok, "values": [[{"a": 1}]]})
    assert v("sheets", "append_rows", {**ok, "values": []})
    assert v("sheets", "append_rows", {**ok, "spreadsheet_id": "../../etc"})
    assert v("sheets", "append_rows", {**ok, "range": "A1\nB2"})
    assert v("sheets", "append_rows", {**ok, "value_input_option": "FORMULA"})
    with pytest.raises(PayloadError):
        append(google, creds, {**ok, "spreadsheet_id": "a/b"})
    with pytest.raises(PayloadError):
        levqor_sheets.run_task("sheets", "delete_rows", ok, creds, ctx(env_for(google)))
    assert not google.requests


def test_append_rows_is_marked_as_writing_upstream():
    (desc,) = levqor_sheets.describe_schema()
    assert desc["actions"]["append_rows"]["writes"] is True
