"""The contract kit's trigger and OAuth2 checks: a small connector with a fake of its API passes
them, and each broken variant of it is caught by the check meant for it."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
from typing import Any

import pytest
from levqor_kernel import (
    CredentialError,
    Delivery,
    DeliveryResult,
    Poll,
    SignatureError,
    TriggerItem,
    hookimpl,
)
from levqor_kernel.oauth import OAUTH2_CREDENTIALS, is_oauth, sample_oauth_credentials
from levqor_kernel.testing import (
    FakeServer,
    InstantTriggerContract,
    OAuthContract,
    PollingTriggerContract,
    Recorded,
    Reply,
    check_instant_trigger,
    check_oauth,
    check_polling_trigger,
)


class FakeNotes:
    """A made-up notes API (the kit's own test subject, not a third-party one): a bearer token,
    ``GET /v1/notes?after=<id>`` oldest first, ``POST /v1/webhooks {url, secret}`` and
    ``DELETE /v1/webhooks/<id>``; deliveries carry ``{"events": [...]}`` signed with
    ``X-Notes-Signature: sha256=<hex HMAC of the body with the webhook's secret>``; a new
    webhook URL is verified with ``{"type": "url_verification", "challenge": ...}``."""

    def __init__(self) -> None:
        self.token = "notes-token-0123456789"
        self.notes: list[dict[str, Any]] = []
        self.webhooks: dict[str, dict[str, str]] = {}
        self._lock = threading.Lock()
        self._event = 0
        self.server = FakeServer()
        self.server.route("GET", "/v1/notes", self._list)
        self.server.route("POST", "/v1/webhooks", self._hook)
        self.server.route("DELETE", r"/v1/webhooks/(?P<id>\w+)", self._unhook)

    def __enter__(self) -> FakeNotes:
        self.server.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.server.stop()

    @property
    def url(self) -> str:
        return self.server.url

    def add(self, text: str = "hello") -> dict[str, Any]:
        with self._lock:
            note = {"id": len(self.notes) + 1, "text": text}
            self.notes.append(note)
        return note

    def _authorized(self, req: Recorded) -> bool:
        return req.header("Authorization") == f"Bearer {self.token}"

    def _list(self, req: Recorded) -> Reply:
        if not self._authorized(req):
            return Reply(401, {"error": {"message": "bad token"}})
        after = int(req.query.get("after", ["0"])[0])
        return Reply(200, {"notes": [n for n in self.notes if n["id"] > after]})

    def _hook(self, req: Recorded) -> Reply:
        if not self._authorized(req):
            return Reply(401, {"error": {"message": "bad token"}})
        with self._lock:
            hid = f"wh{len(self.webhooks) + 1}"
            self.webhooks[hid] = req.json()
        return Reply(201, {"id": hid})

    def _unhook(self, req: Recorded) -> Reply:
        self.webhooks.pop(req.match["id"], None)
        return Reply(204, b"")

    def delivery(self, body: dict[str, Any], secret: str) -> Delivery:
        raw = json.dumps(body).encode()
        sig = "sha256=" + hmac.new(secret.encode(), raw, hashlib.sha256).hexdigest()
        return Delivery("POST", {"content-type": "application/json", "x-notes-signature": sig}, raw)

    def events(self, count: int) -> list[dict[str, Any]]:
        out = []
        for _ in range(count):
            self._event += 1
            out.append({"id": f"ev{self._event}", "note": self.add(f"pushed {self._event}")})
        return out


NOTE = {
    "type": "object",
    "required": ["id", "text"],
    "properties": {"id": {"type": "integer"}, "text": {"type": "string"}},
}


class Notes:
    """The connector under test; ``bug`` names one way to get the contract wrong."""

    def __init__(self, bug: str | None = None) -> None:
        self.bug = bug
        self.calls = 0

    @hookimpl
    def describe_schema(self) -> list[dict[str, Any]]:
        key = {"type": "object", "required": ["token"], "properties": {"token": {"type": "string", "writeOnly": True}}}
        creds = {"anyOf": [key, OAUTH2_CREDENTIALS]} if self.bug != "no_oauth_variant" else key
        return [{
            "name": "notes",
            "title": "Notes",
            "description": "notes",
            "credentials": creds,
            "oauth2": {
                "authorization_url": "https://notes.example/authorize",
                "token_url": "https://notes.example/token",
                "scopes": ["notes.read"],
                **({"account": "/user/email"} if self.bug == "account_pointer" else {}),
                **({"account": "/user/name"} if self.bug == "account_pointer_missing" else {}),
            },
            "triggers": {
                "new_note": {"title": "New note", "kind": "polling", "config": {"type": "object"},
                             "output": NOTE,
                             "sample": {"id": 1, "text": "x"} if self.bug != "bad_sample" else {"id": "one"}},
                "note_pushed": {"title": "Note pushed", "kind": "instant", "config": {"type": "object"},
                                "output": NOTE, "sample": {"id": 1, "text": "x"}},
            },
            "actions": {"noop": {"title": "Noop", "payload": {"type": "object"}, "output": {"type": "object"},
                                 "example": {}}},
        }]

    def _get(self, context: Any, credentials: Any, path: str, **params: Any) -> Any:
        token = credentials["access_token"] if is_oauth(credentials) else credentials["token"]
        if self.bug == "caches_token":  # one client for the process, made with the first token
            token = self.__dict__.setdefault("cached_token", token)
        headers = {"Authorization": f"Bearer {token}"}
        if self.bug == "token_in_query" and is_oauth(credentials):
            headers, params = {}, {**params, "access_token": token}
        resp = context.http.request(
            "GET", context.env["NOTES_API"] + path, params=params, headers=headers, secrets=[token],
            service="Notes",
        )
        return context.http.json(resp, service="Notes")

    @hookimpl
    def run_task(self, connector, action, payload, credentials, context):
        self._get(context, credentials, "/v1/notes", after=0)
        return {}

    @hookimpl
    def poll_trigger(self, connector, trigger, config, credentials, state, context):
        bug = self.bug
        self.calls += 1
        after = 0 if bug == "ids_per_poll" else (state or {}).get("after", 0)
        try:
            notes = self._get(context, credentials, "/v1/notes", after=after)["notes"]
        except CredentialError as e:
            if bug == "swallows_401":
                return Poll(items=[], state=state or {})
            if bug == "401_without_status":
                raise CredentialError("refused") from None
            raise e
        if bug == "no_baseline" and state is None:
            return Poll(items=[], state={"after": max([after] + [n["id"] for n in notes])})
        items = []
        for n in notes:
            nid = f"note:{n['id']}:{self.calls}" if bug in ("unstable_ids", "ids_per_poll") else f"note:{n['id']}"
            data = {"id": n["id"]} if bug == "item_schema" else n
            items.append(TriggerItem(id=nid, data=data))
        if bug == "duplicate_ids":
            items = items + items[-1:]
        last = max([after] + [n["id"] for n in notes])
        new_state: dict[str, Any] = {"after": last}
        if bug == "cursor_stuck":
            new_state = {"after": 0}
        elif bug == "skips_new":
            new_state = {"after": last + 1}
        elif bug == "token_in_state":
            new_state["token"] = credentials["token"]
        elif bug == "state_not_json":
            new_state["seen"] = {1, 2}  # type: ignore[assignment]
        return Poll(items=items, state=new_state)

    @hookimpl
    def register_trigger(self, connector, trigger, config, credentials, webhook_url, secret, context):
        if self.bug == "no_register":
            return {"id": "nothing"}
        try:
            resp = context.http.request(
                "POST", context.env["NOTES_API"] + "/v1/webhooks", json={"url": webhook_url, "secret": secret},
                headers={"Authorization": f"Bearer {credentials['token']}"}, secrets=[credentials["token"]],
                service="Notes", expect=(201,),
            )
        except CredentialError:
            if self.bug == "register_swallows_errors":
                return {"id": "unknown"}
            raise
        return {"id": resp.json()["id"]}

    @hookimpl
    def unregister_trigger(self, connector, trigger, config, credentials, registration, context):
        if self.bug == "no_unregister":
            return
        context.http.request(
            "DELETE", context.env["NOTES_API"] + f"/v1/webhooks/{registration['id']}",
            headers={"Authorization": f"Bearer {credentials['token']}"}, service="Notes", expect=(204,),
        )

    @hookimpl
    def receive_delivery(self, connector, trigger, config, delivery, registration, context):
        bug = self.bug
        sig = delivery.header("X-Notes-Signature")
        want = "sha256=" + hmac.new((delivery.secret or "").encode(), delivery.body, hashlib.sha256).hexdigest()
        if bug == "no_signature_check":
            pass
        elif bug == "optional_signature":
            if sig is not None and not hmac.compare_digest(sig, want):
                raise SignatureError()
        elif bug == "signature_ignores_body":
            if not sig or not sig.startswith("sha256="):
                raise SignatureError()
        elif not sig or not hmac.compare_digest(sig, want):
            raise SignatureError()
        body = delivery.json()
        if body.get("type") == "url_verification":
            if bug == "no_challenge":
                return DeliveryResult()
            return DeliveryResult(response=(200, {"challenge": body["challenge"]}, {}))
        events = body["events"][:1] if bug == "first_event_only" else body["events"]
        self.calls += 1
        return DeliveryResult(items=[
            TriggerItem(id=f"{e['id']}:{self.calls}" if bug == "random_ids" else e["id"], data=e["note"])
            for e in events
        ])

    @hookimpl
    def oauth_credentials(self, connector, token, context):
        if self.bug in ("no_account", "account_pointer", "account_pointer_missing"):
            return {}
        return {"account": token.get("user", {}).get("email", "")}


class NotesAdapter:
    """What every contract below shares about FakeNotes."""

    connector = "notes"

    def fake(self) -> FakeNotes:
        return FakeNotes()

    def credentials(self, fake: FakeNotes) -> dict[str, Any]:
        return {"token": fake.token}

    def env(self, fake: FakeNotes) -> dict[str, str]:
        return {"NOTES_API": fake.url}


class TestNewNote(NotesAdapter, PollingTriggerContract):
    plugin = Notes()
    trigger = "new_note"

    def add_item(self, fake: FakeNotes) -> str:
        return f"note:{fake.add()['id']}"


class TestNotePushed(NotesAdapter, InstantTriggerContract):
    plugin = Notes()
    trigger = "note_pushed"
    signs_body = True

    def delivery(self, fake: FakeNotes, events: int, sign_with: str) -> Delivery:
        return fake.delivery({"events": fake.events(events)}, sign_with)

    def handshake(self, fake: FakeNotes, sign_with: str) -> tuple[Delivery, tuple]:
        return fake.delivery({"type": "url_verification", "challenge": "c-42"}, sign_with), (200, {"challenge": "c-42"})

    def is_registered(self, fake: FakeNotes, webhook_url: str) -> bool:
        return any(w["url"] == webhook_url for w in fake.webhooks.values())


class TestNotesOAuth(NotesAdapter, OAuthContract):
    plugin = Notes()

    def oauth_credentials(self, fake: FakeNotes) -> dict[str, Any]:
        return {**sample_oauth_credentials(), "access_token": fake.token}

    def token_response(self, fake: FakeNotes) -> dict[str, Any]:
        return {"access_token": fake.token, "token_type": "Bearer", "user": {"email": "ada@example.com"}}


def test_the_checks_that_ran_are_named():
    res = check_polling_trigger(TestNewNote())
    assert res.ok, res.problems
    assert any("first poll (state None)" in c for c in res.checks)
    assert any("401 raises CredentialError with status 401" in c for c in res.checks)
    res = check_instant_trigger(TestNotePushed())
    assert res.ok, res.problems
    assert sum("SignatureError" in c for c in res.checks) == 4
    res = check_oauth(TestNotesOAuth())
    assert res.ok, res.problems
    assert any("Bearer" in c for c in res.checks)


def caught(spec: Any, check: Any, bug: str) -> list[str]:
    spec.plugin = Notes(bug)
    return check(spec).problems


@pytest.mark.parametrize(
    "bug,message",
    [
        ("bad_sample", "sample does not match the output schema"),
        ("no_baseline", "it returned no items although the fake has one upstream"),
        ("unstable_ids", "ids must be stable"),
        ("ids_per_poll", "it returned ids the first poll did not"),
        ("duplicate_ids", "ids repeat within one poll"),
        ("item_schema", "does not match the output schema at /: 'text' is a required property"),
        ("cursor_stuck", "the state (cursor) advances after a new item: it stayed"),
        ("skips_new", "the poll with the previous state returned no new id"),
        ("token_in_state", "a credential value appears in the state"),
        ("state_not_json", "the state is not JSON"),
        ("swallows_401", "poll: 401 raises CredentialError with status 401 (the host refreshes an OAuth2 token and retries once): returned"),
        ("401_without_status", "give the CredentialError status=401"),
    ],
)
def test_polling_checks_catch_each_bug(bug, message):
    problems = caught(TestNewNote(), check_polling_trigger, bug)
    assert any(message in p for p in problems), problems


class FlakyRetryAfter(TestNewNote):
    """An adapter whose fake drops Retry-After: the connector cannot know the delay."""

    def fail(self, fake: Any, status: int, retry_after: int | None = None) -> None:
        super().fail(fake, status, None if status == 429 else retry_after)


class Down503AsPermanent(TestNewNote):
    """A fake answering 503 where the kit expects it; the connector is fine, so this shows the
    check reads what the hook raised: a 400 instead of a 503 makes a PermanentError."""

    def fail(self, fake: Any, status: int, retry_after: int | None = None) -> None:
        super().fail(fake, 400 if status == 503 else status, retry_after)


def test_polling_error_checks_read_retry_after_and_the_error_class():
    problems = check_polling_trigger(FlakyRetryAfter(), ["errors"]).problems
    assert any("retry_after is None, expected 7" in p for p in problems), problems
    problems = check_polling_trigger(Down503AsPermanent(), ["errors"]).problems
    assert any("503 raises RetryableError" in p and "expected RetryableError" in p for p in problems), problems


@pytest.mark.parametrize(
    "bug,message",
    [
        ("no_signature_check", "a delivery signed with a wrong secret raises SignatureError: it was accepted"),
        ("optional_signature", "a delivery without its headers and query raises SignatureError: it was accepted"),
        ("signature_ignores_body", "whose body was changed after signing raises SignatureError: it was accepted"),
        ("no_challenge", "a handshake gets the expected answer and starts nothing: no response"),
        ("first_event_only", "a delivery carrying 3 events gives 3 items: it gave 1 items"),
        ("random_ids", "the same delivery received again gives the same ids"),
        ("no_register", "afterwards the fake has no webhook"),
        ("register_swallows_errors", "register_trigger: 401 raises CredentialError"),
    ],
)
def test_instant_checks_catch_each_bug(bug, message):
    problems = caught(TestNotePushed(), check_instant_trigger, bug)
    assert any(message in p for p in problems), problems


def test_unregister_that_leaves_the_webhook_is_caught():
    problems = caught(TestNotePushed(), check_instant_trigger, "no_unregister")
    assert any("unregister_trigger removes the subscription: the fake still has a webhook" in p
               for p in problems), problems


@pytest.mark.parametrize(
    "bug,message",
    [
        ("no_oauth_variant", "does not accept an OAuth2 credential"),
        ("token_in_query", "GET /v1/notes sent Authorization none"),
        ("401_without_status", "give the CredentialError status=401"),
        ("no_account", "neither oauth_credentials nor an oauth2.account pointer names the account"),
        ("caches_token", "a refreshed access token is sent at once: GET /v1/notes sent Authorization the previous token"),
    ],
)
def test_oauth_checks_catch_each_bug(bug, message):
    problems = caught(TestNotesOAuth(), check_oauth, bug)
    assert any(message in p for p in problems), problems


def test_the_account_may_come_from_the_oauth2_pointer():
    assert caught(TestNotesOAuth(), check_oauth, "account_pointer") == []
    problems = caught(TestNotesOAuth(), check_oauth, "account_pointer_missing")
    assert any("oauth2.account '/user/name' finds None in token_response(fake)" in p for p in problems), problems


def test_an_adapter_without_a_fake_says_what_to_override():
    class Half(PollingTriggerContract):
        plugin = Notes()
        connector = "notes"
        trigger = "new_note"

    with pytest.raises(NotImplementedError, match="override fake"):
        check_polling_trigger(Half(), ["baseline"])
    wrong = TestNewNote()
    wrong.trigger = "nope"
    assert "has no trigger 'nope' (it has ['new_note', 'note_pushed']" in check_polling_trigger(wrong).problems[0]
    wrong = TestNotePushed()
    wrong.trigger = "new_note"
    assert "the trigger's kind is 'polling', this contract checks instant triggers" in (
        check_instant_trigger(wrong).problems[0]
    )
