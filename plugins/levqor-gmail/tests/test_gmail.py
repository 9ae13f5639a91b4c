"""levqor-gmail against its fake Resend and Gmail APIs over real HTTP."""

from __future__ import annotations

import base64
import threading
import time
from collections.abc import Iterator
from email import policy
from email.parser import BytesParser

import levqor_gmail
import pytest
from levqor_gmail.fake import READ_SCOPE, SEND_SCOPE, FakeGmail, FakeResend
from levqor_kernel.context import StepContext
from levqor_kernel.errors import (
    BlockedURLError,
    CredentialError,
    PayloadError,
    PermanentError,
    RetryableError,
)
from levqor_kernel.plugins import make_plugin_manager
from levqor_kernel.testing import ConnectorContract

RESEND_KEY = "re_secret_key_abcdef123"
GOOGLE_TOKEN = "ya29.secret-google-token-abcdef"
EMAIL = {
    "from": "Acme <orders@acme.example>",
    "to": "ada@example.com",
    "subject": "Hello",
    "text": "Hi Ada",
}


class TestResendContract(ConnectorContract):
    plugin = levqor_gmail

    def credentials(self, base_url: str) -> dict:
        return {"resend_api_key": RESEND_KEY}

    def env(self, base_url: str) -> dict:
        return {"LEVQOR_RESEND_API_BASE": base_url}


class TestGmailContract(ConnectorContract):
    plugin = levqor_gmail

    def credentials(self, base_url: str) -> dict:
        return {"google_access_token": GOOGLE_TOKEN}

    def env(self, base_url: str) -> dict:
        return {"LEVQOR_GMAIL_API_BASE": base_url}


@pytest.fixture(scope="module")
def shared_resend() -> Iterator[FakeResend]:
    # one server per module: stopping a FakeServer takes up to 0.5 s
    with FakeResend(api_key=RESEND_KEY) as fake:
        yield fake


@pytest.fixture
def resend(shared_resend: FakeResend) -> FakeResend:
    shared_resend.reset()
    return shared_resend


@pytest.fixture(scope="module")
def shared_gmail() -> Iterator[FakeGmail]:
    with FakeGmail(token=GOOGLE_TOKEN) as fake:
        yield fake


@pytest.fixture
def gmail(shared_gmail: FakeGmail) -> FakeGmail:
    shared_gmail.reset()
    shared_gmail.scopes = {SEND_SCOPE}
    return shared_gmail


def ctx(
    env: dict, *, run_id: str = "run-1", step_id: str = "mail", timeout: float = 5.0
) -> StepContext:
    return StepContext(run_id=run_id, step_id=step_id, deadline=time.monotonic() + timeout, env=env)


def send_resend(fake: FakeResend, payload: dict, creds: dict | None = None, **kw) -> dict:
    c = ctx({"LEVQOR_RESEND_API_BASE": fake.url}, **kw)
    return levqor_gmail.run_task(
        "gmail", "send_email", payload, creds or {"resend_api_key": RESEND_KEY}, c
    )


def send_gmail(fake: FakeGmail, payload: dict, creds: dict | None = None, **kw) -> dict:
    c = ctx({"LEVQOR_GMAIL_API_BASE": fake.url}, **kw)
    return levqor_gmail.run_task(
        "gmail", "send_email", payload, creds or {"google_access_token": GOOGLE_TOKEN}, c
    )


# ----------------------------------------------------------------------------- Resend: success


def test_resend_wire_format(resend: FakeResend) -> None:
    payload = {
        **EMAIL,
        "to": ["ada@example.com", "Grace <grace@example.com>"],
        "cc": "cc@example.com",
        "bcc": ["b1@example.com"],
        "reply_to": "support@acme.example",
        "html": "<p>Hi Ada</p>",
    }
    out = send_resend(resend, payload, run_id="run-9", step_id="welcome")
    [req] = resend.requests
    assert (req.method, req.path) == ("POST", "/emails")
    assert req.header("Authorization") == f"Bearer {RESEND_KEY}"
    assert req.header("Idempotency-Key") == "run-9:welcome"
    assert req.header("Content-Type") == "application/json"
    assert req.json() == {
        "from": "Acme <orders@acme.example>",
        "to": ["ada@example.com", "Grace <grace@example.com>"],
        "subject": "Hello",
        "html": "<p>Hi Ada</p>",
        "text": "Hi Ada",
        "cc": ["cc@example.com"],
        "bcc": ["b1@example.com"],
        "reply_to": ["support@acme.example"],
    }
    assert out == {"id": resend.emails[0]["id"], "transport": "resend"}


def test_resend_retry_with_same_key_does_not_send_twice(resend: FakeResend) -> None:
    first = send_resend(resend, EMAIL, run_id="run-2", step_id="s")
    again = send_resend(resend, EMAIL, run_id="run-2", step_id="s")  # a retry of the same step
    assert first == again
    assert len(resend.emails) == 1 and len(resend.requests) == 2
    # a different step is a different email
    send_resend(resend, EMAIL, run_id="run-2", step_id="other")
    assert len(resend.emails) == 2


def test_resend_lost_response_then_retry_sends_once(resend: FakeResend) -> None:
    """The first attempt reaches Resend but its answer arrives after the deadline: the retry
    gets the stored answer instead of sending a second email."""
    resend.processing_delay = 1.0
    with pytest.raises(RetryableError) as e:
        send_resend(resend, EMAIL, run_id="run-3", step_id="s", timeout=0.4)
    assert e.value.code == "timeout"
    time.sleep(0.8)  # the fake finishes processing the first attempt
    resend.processing_delay = 0.0
    out = send_resend(resend, EMAIL, run_id="run-3", step_id="s")
    assert len(resend.emails) == 1 and out["id"] == resend.emails[0]["id"]


def test_resend_same_key_different_body_is_refused(resend: FakeResend) -> None:
    send_resend(resend, EMAIL, run_id="run-4", step_id="s")
    with pytest.raises(PermanentError) as e:
        send_resend(resend, {**EMAIL, "subject": "Changed"}, run_id="run-4", step_id="s")
    assert not isinstance(e.value, RetryableError)
    assert e.value.status == 409 and e.value.code == "invalid_idempotent_request"
    assert "different request payload" in str(e.value)
    assert len(resend.emails) == 1


def test_resend_concurrent_same_key_is_retryable(resend: FakeResend) -> None:
    resend.processing_delay = 0.6
    errors: list[Exception] = []
    results: list[dict] = []

    def attempt() -> None:
        try:
            results.append(send_resend(resend, EMAIL, run_id="run-5", step_id="s"))
        except Exception as exc:  # noqa: BLE001 - collected for the assertion below
            errors.append(exc)

    t = threading.Thread(target=attempt)
    t.start()
    time.sleep(0.2)
    with pytest.raises(RetryableError) as e:
        send_resend(resend, EMAIL, run_id="run-5", step_id="s")
    t.join()
    assert e.value.code == "concurrent_idempotent_requests" and e.value.status == 409
    assert not errors and len(results) == 1 and len(resend.emails) == 1


def test_long_run_ids_still_give_a_valid_key(resend: FakeResend) -> None:
    send_resend(resend, EMAIL, run_id="r" * 300, step_id="s")
    key = resend.requests[-1].header("Idempotency-Key")
    assert 1 <= len(key) <= 256 and key.startswith("levqor-")
    assert len(resend.emails) == 1


# ----------------------------------------------------------------------------- Resend: errors


@pytest.mark.parametrize(
    ("status", "name", "cls", "code"),
    [
        (400, "validation_error", PayloadError, "validation_error"),
        (400, "invalid_idempotency_key", PermanentError, "invalid_idempotency_key"),
        (401, "missing_api_key", CredentialError, "unauthorized"),
        (401, "restricted_api_key", CredentialError, "unauthorized"),
        (403, "invalid_api_key", CredentialError, "forbidden"),
        (403, "validation_error", PermanentError, "validation_error"),
        (404, "not_found", PermanentError, "not_found"),
        (422, "missing_required_field", PayloadError, "missing_required_field"),
        (422, "invalid_from_address", PayloadError, "invalid_from_address"),
        (429, "daily_quota_exceeded", PermanentError, "quota_exceeded"),
        (500, "application_error", RetryableError, "upstream_error"),
        (500, "internal_server_error", RetryableError, "upstream_error"),
    ],
)
def test_resend_documented_errors(
    resend: FakeResend, status: int, name: str, cls: type, code: str
) -> None:
    resend.fail_next(status, name, f"explained {name}")
    with pytest.raises(cls) as e:
        send_resend(resend, EMAIL)
    assert type(e.value) is cls
    assert (e.value.status, e.value.code) == (status, code)
    assert f"{name}: explained {name}" in str(e.value)
    assert RESEND_KEY not in str(e.value)


def test_resend_wrong_key_and_unverified_domain(resend: FakeResend) -> None:
    with pytest.raises(CredentialError) as e:
        send_resend(resend, EMAIL, creds={"resend_api_key": "re_wrong_key_000000"})
    assert "invalid_api_key" in str(e.value) and "re_wrong_key_000000" not in str(e.value)
    with pytest.raises(PermanentError) as e2:
        send_resend(resend, {**EMAIL, "from": "me@unverified.example"})
    assert not isinstance(e2.value, CredentialError) and "domain is not verified" in str(e2.value)
    assert resend.emails == []


def test_resend_rate_limit_uses_retry_after(resend: FakeResend) -> None:
    resend.fail_next(429, retry_after=4)
    with pytest.raises(RetryableError) as e:
        send_resend(resend, EMAIL)
    assert e.value.retry_after == 4 and e.value.code == "rate_limited"
    assert "rate_limit_exceeded" in str(e.value)


def test_resend_rate_limit_falls_back_to_ratelimit_reset(resend: FakeResend) -> None:
    resend.fail_next(
        429, headers={"ratelimit-limit": "2", "ratelimit-remaining": "0", "ratelimit-reset": "2"}
    )
    with pytest.raises(RetryableError) as e:
        send_resend(resend, EMAIL)
    assert e.value.retry_after == 2


def test_resend_5xx_then_success_sends_once(resend: FakeResend) -> None:
    resend.fail_next(500)
    with pytest.raises(RetryableError):
        send_resend(resend, EMAIL, run_id="run-6", step_id="s")
    out = send_resend(resend, EMAIL, run_id="run-6", step_id="s")
    assert [m["id"] for m in resend.emails] == [out["id"]]
    assert [r.header("Idempotency-Key") for r in resend.requests] == ["run-6:s", "run-6:s"]


def test_resend_timeout_is_retryable(resend: FakeResend) -> None:
    resend.delay_next(1.5)
    with pytest.raises(RetryableError) as e:
        send_resend(resend, EMAIL, timeout=0.5)
    assert e.value.code == "timeout"


@pytest.mark.parametrize("body", [b"<html>hi</html>", {"ok": True}, {"id": ""}, ["x"]])
def test_resend_malformed_success_fails_closed(resend: FakeResend, body) -> None:
    resend.fail_next(200, body=body)
    with pytest.raises(PermanentError) as e:
        send_resend(resend, EMAIL)
    assert not isinstance(e.value, RetryableError)


def test_resend_user_api_base_is_guarded(resend: FakeResend) -> None:
    creds = {"resend_api_key": RESEND_KEY, "api_base": resend.url}
    with pytest.raises(BlockedURLError):
        levqor_gmail.run_task("gmail", "send_email", EMAIL, creds, ctx({}))
    assert resend.requests == []
    out = levqor_gmail.run_task(
        "gmail", "send_email", EMAIL, creds, ctx({"LEVQOR_SSRF_ALLOW": "127.0.0.1"})
    )
    assert out["transport"] == "resend" and len(resend.emails) == 1


# ----------------------------------------------------------------------------- Gmail: success


def test_gmail_wire_format_and_mime(gmail: FakeGmail) -> None:
    payload = {
        **EMAIL,
        "to": ["ada@example.com", "Grâce <grace@example.com>"],
        "cc": "cc@example.com",
        "bcc": "hidden@example.com",
        "reply_to": ["support@acme.example"],
        "subject": "Héllo ✓",
        "html": "<p>Hi Ada</p>",
    }
    out = send_gmail(gmail, payload, run_id="run-7", step_id="mail")
    [req] = gmail.requests
    assert (req.method, req.path) == ("POST", "/gmail/v1/users/me/messages/send")
    assert req.header("Authorization") == f"Bearer {GOOGLE_TOKEN}"
    body = req.json()
    assert list(body) == ["raw"]
    raw = base64.urlsafe_b64decode(body["raw"])
    msg = BytesParser(policy=policy.default).parsebytes(raw)
    assert msg["From"] == "Acme <orders@acme.example>"
    assert msg["To"] == "ada@example.com, Grâce <grace@example.com>"
    assert msg["Cc"] == "cc@example.com" and msg["Bcc"] == "hidden@example.com"
    assert msg["Reply-To"] == "support@acme.example"
    assert msg["Subject"] == "Héllo ✓"
    assert msg["Date"] and msg["Message-ID"].endswith("@acme.example>")
    assert msg.get_content_type() == "multipart/alternative"
    assert msg.get_body(("plain",)).get_content().strip() == "Hi Ada"
    assert msg.get_body(("html",)).get_content().strip() == "<p>Hi Ada</p>"
    assert out == {
        "id": gmail.messages[0]["id"],
        "transport": "gmail",
        "thread_id": gmail.messages[0]["threadId"],
    }
    # a retry of the same step carries the same Message-ID (clients collapse duplicates)
    send_gmail(gmail, payload, run_id="run-7", step_id="mail")
    assert gmail.messages[1]["message"]["Message-ID"] == msg["Message-ID"]


def test_gmail_html_only(gmail: FakeGmail) -> None:
    send_gmail(gmail, {**{k: v for k, v in EMAIL.items() if k != "text"}, "html": "<b>x</b>"})
    msg = gmail.messages[0]["message"]
    assert msg.get_content_type() == "text/html" and msg.get_content().strip() == "<b>x</b>"


# ----------------------------------------------------------------------------- Gmail: errors


@pytest.mark.parametrize(
    ("status", "reason", "cls", "code"),
    [
        (400, "badRequest", PayloadError, "invalid_argument"),
        (400, "failedPrecondition", PayloadError, "failed_precondition"),
        (401, "authError", CredentialError, "unauthorized"),
        (403, "insufficientPermissions", CredentialError, "forbidden"),
        (403, "rateLimitExceeded", RetryableError, "rate_limited"),
        (403, "userRateLimitExceeded", RetryableError, "rate_limited"),
        (403, "dailyLimitExceeded", PermanentError, "quota_exceeded"),
        (429, "tooManyRequests", RetryableError, "rate_limited"),
        (500, "backendError", RetryableError, "upstream_error"),
        (503, "serviceUnavailable", RetryableError, "upstream_error"),
    ],
)
def test_gmail_documented_errors(
    gmail: FakeGmail, status: int, reason: str, cls: type, code: str
) -> None:
    gmail.fail_next(status, reason, f"explained {reason}")
    with pytest.raises(cls) as e:
        send_gmail(gmail, EMAIL)
    assert type(e.value) is cls
    assert (e.value.status, e.value.code) == (status, code)
    assert f"explained {reason}" in str(e.value) and f"reason: {reason}" in str(e.value)
    assert GOOGLE_TOKEN not in str(e.value)


def test_gmail_real_auth_and_scope_errors(gmail: FakeGmail) -> None:
    with pytest.raises(CredentialError) as e:
        send_gmail(gmail, EMAIL, creds={"google_access_token": "ya29.wrong-token-000"})
    assert "UNAUTHENTICATED" in str(e.value) and "ya29.wrong-token-000" not in str(e.value)
    gmail.scopes = {READ_SCOPE}
    with pytest.raises(CredentialError) as e2:
        send_gmail(gmail, EMAIL)
    assert "insufficient authentication scopes" in str(e2.value)
    assert gmail.messages == []


def test_gmail_429_retry_after_and_5xx_then_success(gmail: FakeGmail) -> None:
    gmail.fail_next(429, retry_after=3)
    with pytest.raises(RetryableError) as e:
        send_gmail(gmail, EMAIL)
    assert e.value.retry_after == 3
    gmail.fail_next(503)
    with pytest.raises(RetryableError):
        send_gmail(gmail, EMAIL)
    out = send_gmail(gmail, EMAIL)
    assert [m["id"] for m in gmail.messages] == [out["id"]]


def test_gmail_timeout_and_malformed(gmail: FakeGmail) -> None:
    gmail.delay_next(1.5)
    with pytest.raises(RetryableError) as e:
        send_gmail(gmail, EMAIL, timeout=0.5)
    assert e.value.code == "timeout"
    gmail.fail_next(200, body=b"<html>login</html>", headers={"Content-Type": "text/html"})
    with pytest.raises(PermanentError):
        send_gmail(gmail, EMAIL)


def test_gmail_ignores_user_api_base(gmail: FakeGmail) -> None:
    """The Gmail transport never sends the Google token to a user-chosen host."""
    creds = {"google_access_token": GOOGLE_TOKEN, "api_base": "http://127.0.0.1:1"}
    out = send_gmail(gmail, EMAIL, creds=creds)
    assert out["transport"] == "gmail" and len(gmail.messages) == 1


# ----------------------------------------------------------------------------- payload + credentials


@pytest.mark.parametrize(
    ("payload", "fragment"),
    [
        ({k: v for k, v in EMAIL.items() if k != "text"}, "text or an html body"),
        ({**EMAIL, "text": ""}, "text or an html body"),
        ({**EMAIL, "to": "not-an-address"}, "to: 'not-an-address'"),
        ({**EMAIL, "to": []}, "at least one recipient"),
        ({**EMAIL, "cc": ["ok@example.com", "bad"]}, "cc: 'bad'"),
        ({**EMAIL, "from": "x@y.example\nBcc: evil@example.com"}, "from:"),
        ({**EMAIL, "subject": "a\r\nBcc: evil@example.com"}, "one-line subject"),
        ({**EMAIL, "to": [f"u{i}@example.com" for i in range(51)]}, "at most 50"),
    ],
)
def test_payload_rules(resend: FakeResend, gmail: FakeGmail, payload: dict, fragment: str) -> None:
    problems = levqor_gmail.validate_payload("gmail", "send_email", payload)
    assert problems and any(fragment in p for p in problems), problems
    for send, fake in ((send_resend, resend), (send_gmail, gmail)):
        with pytest.raises(PayloadError) as e:
            send(fake, payload)
        assert fragment in str(e.value)
        assert fake.requests == []


@pytest.mark.parametrize(
    "creds",
    [
        None,
        {},
        {"resend_api_key": ""},
        {"resend_api_key": "short"},
        {"google_access_token": "has a space in it"},
        {"resend_api_key": RESEND_KEY, "google_access_token": GOOGLE_TOKEN},
        {"api_base": "https://x.example"},
    ],
)
def test_bad_credentials_fail_before_any_request(resend: FakeResend, creds) -> None:
    with pytest.raises(CredentialError) as e:
        levqor_gmail.run_task(
            "gmail", "send_email", EMAIL, creds, ctx({"LEVQOR_RESEND_API_BASE": resend.url})
        )
    assert RESEND_KEY not in str(e.value) and GOOGLE_TOKEN not in str(e.value)
    assert resend.requests == []


def test_schema_example_and_credentials_oneof() -> None:
    from jsonschema import Draft202012Validator

    pm = make_plugin_manager(entry_points=False, builtins=False, plugins=[("gmail", levqor_gmail)])
    assert not pm.failures
    info = pm.catalog.get("gmail")
    action = info.actions["send_email"]
    assert pm.catalog.validate_payload("gmail", "send_email", action.example) == []
    assert levqor_gmail.validate_payload("gmail", "send_email", action.example) == []
    v = Draft202012Validator(info.credentials)
    assert v.is_valid({"resend_api_key": RESEND_KEY})
    assert v.is_valid({"resend_api_key": RESEND_KEY, "api_base": "https://proxy.example"})
    assert v.is_valid({"google_access_token": GOOGLE_TOKEN})
    assert not v.is_valid({"resend_api_key": RESEND_KEY, "google_access_token": GOOGLE_TOKEN})
    assert not v.is_valid({})
    oauth = {"auth": "oauth2", "access_token": GOOGLE_TOKEN, "refresh_token": "1//0g-r"}
    assert v.is_valid(oauth)  # a connected Google account (exactly one branch)
    for branch in info.credentials["oneOf"]:
        secret = next(k for k in branch["required"] if k != "auth")
        assert branch["properties"][secret]["writeOnly"] is True


def test_unknown_action() -> None:
    with pytest.raises(PayloadError):
        levqor_gmail.run_task("gmail", "read_inbox", EMAIL, {"resend_api_key": RESEND_KEY}, ctx({}))


def test_check_credentials(resend: FakeResend, gmail: FakeGmail) -> None:
    rctx = ctx({"LEVQOR_RESEND_API_BASE": resend.url})
    assert levqor_gmail.check_credentials("gmail", {"resend_api_key": RESEND_KEY}, rctx) == {
        "ok": True,
        "transport": "resend",
        "access": "sending",
    }
    resend.restricted = False
    try:
        out = levqor_gmail.check_credentials("gmail", {"resend_api_key": RESEND_KEY}, rctx)
    finally:
        resend.restricted = True
    assert out == {"ok": True, "transport": "resend", "access": "full", "domains": ["acme.example"]}
    with pytest.raises(CredentialError):
        levqor_gmail.check_credentials("gmail", {"resend_api_key": "re_wrong_key_000000"}, rctx)
    assert resend.emails == []  # no side effects

    gctx = ctx({"LEVQOR_GMAIL_API_BASE": gmail.url})
    out = levqor_gmail.check_credentials("gmail", {"google_access_token": GOOGLE_TOKEN}, gctx)
    assert out["ok"] is True and out["account"] is None  # gmail.send cannot read the profile
    gmail.scopes = {SEND_SCOPE, READ_SCOPE}
    out = levqor_gmail.check_credentials("gmail", {"google_access_token": GOOGLE_TOKEN}, gctx)
    assert out == {"ok": True, "transport": "gmail", "account": "me@gmail.example"}
    with pytest.raises(CredentialError):
        levqor_gmail.check_credentials(
            "gmail", {"google_access_token": "ya29.wrong-token-000"}, gctx
        )
    assert gmail.messages == []


def test_send_email_is_marked_as_writing_upstream():
    (desc,) = levqor_gmail.describe_schema()
    assert desc["actions"]["send_email"]["writes"] is True
