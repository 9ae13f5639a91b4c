"""levqor-gmail's new_email trigger and sending as a connected Google account (OAuth2), against the
fake Gmail API over real HTTP."""

from __future__ import annotations

import base64
import time
from collections.abc import Iterator
from email import policy
from email.parser import BytesParser

import levqor_gmail
import pytest
from jsonschema import Draft202012Validator
from levqor_gmail.fake import READ_SCOPE, SEND_SCOPE, FakeGmail
from levqor_kernel.catalog import check_description
from levqor_kernel.context import StepContext
from levqor_kernel.errors import CredentialError, PayloadError, RetryableError
from levqor_kernel.testing import OAuthContract, PollingTriggerContract
from levqor_kernel.triggers import as_poll

ACME = "Acme Billing <billing@acme.example>"


@pytest.fixture(scope="module")
def shared_gmail() -> Iterator[FakeGmail]:
    with FakeGmail(email_address="ada@example.com") as fake:
        yield fake


@pytest.fixture
def gmail(shared_gmail: FakeGmail) -> FakeGmail:
    shared_gmail.reset()
    return shared_gmail


@pytest.fixture
def oauth(gmail: FakeGmail) -> dict:
    return {
        "auth": "oauth2",
        "access_token": gmail.grant(),
        "refresh_token": "1//0g-refresh-not-used-here",
        "token_type": "Bearer",
        "scope": f"{SEND_SCOPE} {READ_SCOPE}",
        "account": "ada@example.com",
    }


def ctx(gmail: FakeGmail) -> StepContext:
    return StepContext(
        run_id="run-1",
        step_id="mail",
        deadline=time.monotonic() + 10,
        env={"LEVQOR_SSRF_ALLOW": "127.0.0.1", "LEVQOR_GMAIL_API_BASE": gmail.url},
    )


def poll(gmail: FakeGmail, creds: dict, state: dict | None, **config):
    return as_poll(
        levqor_gmail.poll_trigger("gmail", "new_email", config, creds, state, ctx(gmail))
    )


def paths(gmail: FakeGmail) -> list[str]:
    return [r.path for r in gmail.requests]


# ----------------------------------------------------------------------------- new_email


def test_first_poll_is_a_baseline_at_the_profiles_history_id(gmail: FakeGmail, oauth: dict) -> None:
    for i in range(5):
        gmail.deliver(ACME, f"Invoice {i}")
    first = poll(gmail, oauth, None)
    assert first.state["history_id"] == str(gmail.history_id)
    # the newest messages come back as samples, oldest first (seen by the host, never run)
    assert [i.data["subject"] for i in first.items] == ["Invoice 2", "Invoice 3", "Invoice 4"]
    assert paths(gmail)[0] == "/gmail/v1/users/me/profile"
    auth = {r.header("Authorization") for r in gmail.requests}
    assert auth == {f"Bearer {oauth['access_token']}"}


def test_new_messages_become_items(gmail: FakeGmail, oauth: dict) -> None:
    gmail.deliver(ACME, "Old invoice")
    state = poll(gmail, oauth, None).state
    gmail.server.reset()
    idle = poll(gmail, oauth, state)
    assert idle.items == [] and idle.state["history_id"] == state["history_id"]
    assert paths(gmail) == ["/gmail/v1/users/me/history"]  # one request when nothing is new
    [hist] = gmail.requests
    assert hist.query["startHistoryId"] == [state["history_id"]]
    assert hist.query["historyTypes"] == ["messageAdded"]

    a = gmail.deliver(ACME, "Invoice 7", text="Your invoice is attached.", cc="boss@example.com")
    b = gmail.deliver("Grace <grace@example.com>", "Lunch?")
    nxt = poll(gmail, oauth, state)
    assert [i.id for i in nxt.items] == [a, b]
    data = nxt.items[0].data
    assert (
        data["from"] == ACME
        and data["to"] == "ada@example.com"
        and data["cc"] == "boss@example.com"
    )
    assert data["subject"] == "Invoice 7" and data["snippet"] == "Your invoice is attached."
    assert data["labels"] == ["INBOX", "UNREAD"] and data["thread_id"] == a
    assert data["date"] and data["message_id"].startswith("<") and data["internal_date"] > 0
    assert "body" not in data
    assert int(nxt.state["history_id"]) > int(state["history_id"])
    get = [r for r in gmail.requests if r.path == f"/gmail/v1/users/me/messages/{a}"][0]
    assert get.query["format"] == ["metadata"]
    assert set(get.query["metadataHeaders"]) >= {"From", "To", "Subject", "Date"}
    assert poll(gmail, oauth, nxt.state).items == []


def test_the_search_filters_new_messages(gmail: FakeGmail, oauth: dict) -> None:
    config = {"q": "from:billing@acme.example subject:invoice"}
    state = poll(gmail, oauth, None, **config).state
    gmail.deliver("Grace <grace@example.com>", "Invoice from Grace")  # not from Acme
    hit = gmail.deliver(ACME, "Invoice 8")
    gmail.deliver(ACME, "Newsletter")  # not an invoice
    nxt = poll(gmail, oauth, state, **config)
    assert [i.id for i in nxt.items] == [hit]
    listing = [r for r in gmail.requests if r.path == "/gmail/v1/users/me/messages"][-1]
    assert listing.query["q"] == [config["q"]]


def test_label_and_sent_drafts_spam(gmail: FakeGmail, oauth: dict) -> None:
    state = poll(gmail, oauth, None, label="INBOX").state
    inbox = gmail.deliver(ACME, "In the inbox")
    gmail.deliver(ACME, "Archived", labels=("CATEGORY_UPDATES",))
    gmail.deliver(ACME, "Spam", labels=("SPAM",))
    nxt = poll(gmail, oauth, state, label="INBOX")
    assert [i.id for i in nxt.items] == [inbox]
    hist = [r for r in gmail.requests if r.path == "/gmail/v1/users/me/history"][-1]
    assert hist.query["labelId"] == ["INBOX"]
    # without a label every new message counts, but never spam, trash or drafts
    state = nxt.state
    gmail.deliver(ACME, "Draft", labels=("DRAFT",))
    gmail.deliver(ACME, "Trash", labels=("TRASH",))
    other = gmail.deliver(ACME, "Updates", labels=("CATEGORY_UPDATES",))
    assert [i.id for i in poll(gmail, oauth, state).items] == [other]


def test_include_body(gmail: FakeGmail, oauth: dict) -> None:
    state = poll(gmail, oauth, None, include_body=True).state
    gmail.deliver(ACME, "Invoice", text="Line one\nLine two\n")
    [item] = poll(gmail, oauth, state, include_body=True).items
    assert item.data["body"] == "Line one\nLine two\n"
    get = [r for r in gmail.requests if r.path.startswith("/gmail/v1/users/me/messages/")][-1]
    assert get.query["format"] == ["full"]


def test_a_message_deleted_meanwhile_is_skipped(gmail: FakeGmail, oauth: dict) -> None:
    state = poll(gmail, oauth, None).state
    gone = gmail.deliver(ACME, "Gone")
    kept = gmail.deliver(ACME, "Kept")
    gmail.mailbox[:] = [m for m in gmail.mailbox if m["id"] != gone]
    assert [i.id for i in poll(gmail, oauth, state).items] == [kept]


def test_too_old_history_id_falls_back_without_flooding(gmail: FakeGmail, oauth: dict) -> None:
    for i in range(10):
        gmail.deliver(ACME, f"Old {i}")
    first = poll(gmail, oauth, None)
    state = {**first.state, "checked_at": int(time.time() * 1000)}
    # mail that arrived long before the last poll: never a run
    for m in gmail.mailbox:
        m["internalDate"] -= 3600 * 1000
    fresh = gmail.deliver(ACME, "New while the history expired")
    gmail.expire_history()
    out = poll(gmail, oauth, state)
    assert [i.id for i in out.items] == [fresh]
    assert out.state["history_id"] == str(gmail.history_id)
    assert "/gmail/v1/users/me/profile" in paths(gmail)
    # and the trigger goes on from the new baseline
    later = gmail.deliver(ACME, "Later")
    assert [i.id for i in poll(gmail, oauth, out.state).items] == [later]


def test_errors_and_credentials(gmail: FakeGmail, oauth: dict) -> None:
    with pytest.raises(CredentialError) as e:
        poll(gmail, {"resend_api_key": "re_secret_key_abcdef123"}, None)
    assert e.value.code == "wrong_credentials"
    state = poll(gmail, oauth, None).state
    gmail.fail_next(429, retry_after=3, path="/gmail/v1/users/me/history", method="GET")
    with pytest.raises(RetryableError) as e:
        poll(gmail, oauth, state)
    assert e.value.retry_after == 3.0
    gmail.revoke_tokens()
    with pytest.raises(CredentialError) as e:
        poll(gmail, oauth, state)
    assert e.value.status == 401 and oauth["access_token"] not in str(e.value)
    with pytest.raises(PayloadError):
        levqor_gmail.poll_trigger("gmail", "nope", {}, oauth, None, ctx(gmail))


def test_send_as_a_connected_account(gmail: FakeGmail, oauth: dict) -> None:
    email = {"from": "ada@example.com", "to": "grace@example.com", "subject": "Hi", "text": "Hello"}
    out = levqor_gmail.run_task("gmail", "send_email", email, oauth, ctx(gmail))
    assert out["transport"] == "gmail"
    [req] = [r for r in gmail.requests if r.path.endswith("/messages/send")]
    assert req.header("Authorization") == f"Bearer {oauth['access_token']}"
    raw = req.json()["raw"]
    msg = BytesParser(policy=policy.default).parsebytes(
        base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4))
    )
    assert msg["Subject"] == "Hi" and msg["To"] == "grace@example.com"
    # an expired access token: 401 for the host to refresh and retry
    gmail.revoke_tokens()
    with pytest.raises(CredentialError) as e:
        levqor_gmail.run_task("gmail", "send_email", email, oauth, ctx(gmail))
    assert e.value.status == 401


def test_account_from_the_profile(gmail: FakeGmail) -> None:
    token = {"access_token": gmail.grant(), "expires_in": 3599, "refresh_token": "1//0g-r"}
    assert levqor_gmail.oauth_credentials("gmail", token, ctx(gmail)) == {
        "account": "ada@example.com"
    }
    assert paths(gmail) == ["/gmail/v1/users/me/profile"]
    # a refresh keeps the stored account without another call
    again = levqor_gmail.oauth_credentials(
        "gmail", {**token, "account": "ada@example.com"}, ctx(gmail)
    )
    assert again == {"account": "ada@example.com"} and len(gmail.requests) == 1
    assert levqor_gmail.oauth_credentials("sheets", token, ctx(gmail)) is None
    check = levqor_gmail.check_credentials(
        "gmail", {"auth": "oauth2", "access_token": token["access_token"]}, ctx(gmail)
    )
    assert check == {"ok": True, "transport": "gmail", "account": "ada@example.com"}


def test_description(gmail: FakeGmail) -> None:
    (desc,) = levqor_gmail.describe_schema()
    assert check_description(desc) == []
    o = desc["oauth2"]
    assert o["authorization_url"] == "https://accounts.google.com/o/oauth2/v2/auth"
    assert o["token_url"] == "https://oauth2.googleapis.com/token"
    assert set(o["scopes"]) == {SEND_SCOPE, READ_SCOPE}
    assert o["extra_params"]["access_type"] == "offline" and o["pkce"] is True
    trig = desc["triggers"]["new_email"]
    assert trig["kind"] == "polling"
    assert not list(Draft202012Validator(trig["config"]).iter_errors(trig["example"]))
    assert list(Draft202012Validator(trig["config"]).iter_errors({"q": "a\nb"}))


# ----------------------------------------------------------------------------- the contract kit


def _kit_fake() -> FakeGmail:
    return FakeGmail(email_address="kit@example.com")


class TestNewEmailContract(PollingTriggerContract):
    plugin = levqor_gmail
    connector = "gmail"
    trigger = "new_email"

    def fake(self) -> FakeGmail:
        return _kit_fake()

    def config(self, fake: FakeGmail) -> dict:
        return {"q": "from:billing@acme.example subject:invoice", "label": "INBOX"}

    def credentials(self, fake: FakeGmail) -> dict:
        return {"auth": "oauth2", "access_token": fake.grant(), "account": "kit@example.com"}

    def env(self, fake: FakeGmail) -> dict:
        return {"LEVQOR_GMAIL_API_BASE": fake.url}

    def add_item(self, fake: FakeGmail) -> str:
        return fake.deliver(ACME, "Invoice 1")


class TestOAuthContract(OAuthContract):
    plugin = levqor_gmail
    connector = "gmail"

    def fake(self) -> FakeGmail:
        return _kit_fake()

    def env(self, fake: FakeGmail) -> dict:
        return {"LEVQOR_GMAIL_API_BASE": fake.url}

    def oauth_credentials(self, fake: FakeGmail) -> dict:
        return {
            "auth": "oauth2",
            "access_token": fake.grant(),
            "refresh_token": "1//0g-kit-refresh",
            "token_type": "Bearer",
            "scope": f"{SEND_SCOPE} {READ_SCOPE}",
        }
