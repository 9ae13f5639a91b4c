"""levqor-telegram's triggers against FakeTelegram: setWebhook and the Updates it sends to a
receiver on 127.0.0.1 (real HTTP both ways), and getUpdates polling."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import levqor_telegram
import pytest
from levqor_kernel.context import StepContext
from levqor_kernel.errors import (
    CredentialError,
    PermanentError,
    RetryableError,
    SignatureError,
)
from levqor_kernel.plugins import make_plugin_manager
from levqor_kernel.testing import (
    FakeServer,
    InstantTriggerContract,
    PollingTriggerContract,
    Recorded,
    Reply,
)
from levqor_kernel.triggers import Delivery, as_delivery_result, as_poll
from levqor_telegram.fake import FakeTelegram

SECRET = "s3cr3t-Registration_Token-0123456789"


@pytest.fixture(scope="module")
def _tg_server() -> Iterator[FakeTelegram]:
    with FakeTelegram() as fake:
        yield fake


@pytest.fixture
def tg(_tg_server: FakeTelegram) -> Iterator[FakeTelegram]:
    _tg_server.reset()
    _tg_server.require_https = False
    yield _tg_server
    _tg_server.reset()


def ctx(tg: FakeTelegram) -> StepContext:
    return StepContext(
        run_id="trigger",
        step_id="telegram",
        deadline=time.monotonic() + 10,
        env={"LEVQOR_TELEGRAM_API_BASE": tg.url},
    )


def creds(tg: FakeTelegram) -> dict:
    return {"bot_token": tg.token}


class Receiver:
    """What the host does with a delivery, in miniature: hand it to receive_delivery, answer
    401 on a bad secret, keep the items."""

    def __init__(self, tg: FakeTelegram, config: dict, secret: str = SECRET) -> None:
        self.tg, self.config, self.secret = tg, config, secret
        self.items: list = []
        self.delivery_ids: list[str] = []
        self.server = FakeServer()
        self.server.route("POST", "/hooks/triggers/tok", self._handle)

    @property
    def url(self) -> str:
        return self.server.url + "/hooks/triggers/tok"

    def _handle(self, req: Recorded) -> Reply:
        delivery = Delivery(
            method=req.method,
            headers={k.lower(): v for k, v in req.headers.items()},
            body=req.body,
            secret=self.secret,
        )
        try:
            res = as_delivery_result(
                levqor_telegram.receive_delivery(
                    "telegram",
                    "new_message",
                    self.config,
                    delivery,
                    {"url": self.url},
                    ctx(self.tg),
                )
            )
        except SignatureError as e:
            return Reply(401, {"error": e.code})
        self.items += res.items
        self.delivery_ids.append(res.delivery_id)
        return Reply(200, {"ok": True})

    def __enter__(self) -> Receiver:
        self.server.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.stop()


def register(tg: FakeTelegram, url: str, config: dict | None = None, secret: str = SECRET) -> dict:
    return levqor_telegram.register_trigger(
        "telegram", "new_message", config or {}, creds(tg), url, secret, ctx(tg)
    )


def poll(tg: FakeTelegram, state: dict | None, config: dict | None = None):
    return as_poll(
        levqor_telegram.poll_trigger(
            "telegram", "new_message_polling", config or {}, creds(tg), state, ctx(tg)
        )
    )


# ---------------------------------------------------------------- description


def test_both_triggers_are_in_the_catalog() -> None:
    pm = make_plugin_manager(entry_points=False, builtins=False, plugins=[levqor_telegram])
    assert not pm.failures
    instant = pm.catalog.trigger("telegram", "new_message")
    polling = pm.catalog.trigger("telegram", "new_message_polling")
    assert instant.kind == "instant" and instant.webhook == "trigger"
    assert polling.kind == "polling"
    assert not list(instant.validator.iter_errors({"updates": ["message", "channel_post"]}))
    assert list(instant.validator.iter_errors({"updates": ["callback_query"]}))
    assert list(instant.validator.iter_errors({"chat_ids": ["@nope"]}))


# ---------------------------------------------------------------- instant: setWebhook


def test_enabling_sets_the_webhook_with_the_secret_and_drops_old_updates(tg: FakeTelegram) -> None:
    tg.push_message(tg.PRIVATE_CHAT, "sent before the pipeline was enabled")
    reg = register(tg, "https://levqor.example/hooks/triggers/abc", {"updates": ["message"]})
    assert reg == {"url": "https://levqor.example/hooks/triggers/abc"}
    [req] = [r for r in tg.requests if r.path.endswith("/setWebhook")]
    assert req.json() == {
        "url": "https://levqor.example/hooks/triggers/abc",
        "secret_token": SECRET,
        "allowed_updates": ["message"],
        "drop_pending_updates": True,
    }
    assert tg.webhook["url"] == "https://levqor.example/hooks/triggers/abc"
    assert tg.webhook["secret_token"] == SECRET
    assert list(tg.pending) == []  # no flood of old messages


def test_a_message_reaches_the_webhook_as_one_item(tg: FakeTelegram) -> None:
    with Receiver(tg, {}) as rx:
        register(tg, rx.url)
        update = tg.push_message(tg.PRIVATE_CHAT, "Is order 1042 on its way?")
        assert tg.deliveries[-1]["status"] == 200
        [item] = rx.items
        [req] = rx.server.requests
    assert req.header("X-Telegram-Bot-Api-Secret-Token") == SECRET
    assert item.id == str(update["update_id"]) and rx.delivery_ids == [item.id]
    msg = update["message"]
    assert item.data == {
        "update_id": update["update_id"],
        "update_type": "message",
        "message_id": msg["message_id"],
        "date": msg["date"],
        "text": "Is order 1042 on its way?",
        "chat_id": tg.PRIVATE_CHAT,
        "chat": {"id": tg.PRIVATE_CHAT, "type": "private", "first_name": "Ada", "username": "ada"},
        "from": {"id": tg.PRIVATE_CHAT, "is_bot": False, "first_name": "Ada", "username": "ada"},
        "reply_to_message_id": None,
    }
    pm = make_plugin_manager(entry_points=False, builtins=False, plugins=[levqor_telegram])
    output = pm.catalog.trigger("telegram", "new_message").output
    from jsonschema import Draft202012Validator

    assert not list(Draft202012Validator(output).iter_errors(item.data))


@pytest.mark.parametrize("header", [None, "wrong-secret", SECRET + "x", ""])
def test_a_delivery_without_the_secret_is_refused(tg: FakeTelegram, header) -> None:
    body = b'{"update_id": 1, "message": {"message_id": 1, "date": 1, "chat": {"id": 1, "type": "private"}}}'
    headers = {} if header is None else {"x-telegram-bot-api-secret-token": header}
    with pytest.raises(SignatureError) as e:
        levqor_telegram.receive_delivery(
            "telegram",
            "new_message",
            {},
            Delivery("POST", headers, body, secret=SECRET),
            {},
            ctx(tg),
        )
    assert e.value.status == 401 and SECRET not in str(e.value)


def test_a_registration_without_a_secret_accepts_nothing(tg: FakeTelegram) -> None:
    body = b'{"update_id": 1}'
    for secret in (None, ""):
        d = Delivery("POST", {"x-telegram-bot-api-secret-token": ""}, body, secret=secret)
        with pytest.raises(SignatureError):
            levqor_telegram.receive_delivery("telegram", "new_message", {}, d, {}, ctx(tg))


def test_forged_deliveries_stay_pending_at_telegram(tg: FakeTelegram) -> None:
    with Receiver(tg, {}, secret="the-host-expects-another-secret") as rx:
        register(tg, rx.url)
        tg.push_message(tg.PRIVATE_CHAT, "hi")
        assert rx.items == [] and tg.deliveries[-1]["status"] == 401
        info = levqor_telegram.call(ctx(tg), creds(tg), "getWebhookInfo")
        assert info["pending_update_count"] == 1
        assert info["last_error_message"] == "Wrong response from the webhook: 401"
        rx.secret = SECRET  # Telegram retries; now the secret matches
        assert tg.deliver_pending() == 1
        assert len(rx.items) == 1 and list(tg.pending) == []


@pytest.mark.parametrize(
    "body", [b"not json", b"[]", b'{"message": {}}', b'{"update_id": "7"}', b'{"update_id": true}']
)
def test_a_body_that_is_not_an_update_is_a_400(tg: FakeTelegram, body: bytes) -> None:
    d = Delivery("POST", {"x-telegram-bot-api-secret-token": SECRET}, body, secret=SECRET)
    with pytest.raises(PermanentError) as e:
        levqor_telegram.receive_delivery("telegram", "new_message", {}, d, {}, ctx(tg))
    assert e.value.status == 400


def test_updates_without_a_message_carry_no_item(tg: FakeTelegram) -> None:
    body = b'{"update_id": 99, "callback_query": {"id": "1", "from": {"id": 1}, "data": "x"}}'
    d = Delivery("POST", {"x-telegram-bot-api-secret-token": SECRET}, body, secret=SECRET)
    res = as_delivery_result(
        levqor_telegram.receive_delivery("telegram", "new_message", {}, d, {}, ctx(tg))
    )
    assert res.items == [] and res.delivery_id == "99"


def test_config_filters_update_types_and_chats(tg: FakeTelegram) -> None:
    tg.add_chat(-1002000000001, "supergroup", title="Ops")
    config = {"updates": ["message", "edited_message"], "chat_ids": [-1002000000001]}
    with Receiver(tg, config) as rx:
        register(tg, rx.url, config)
        assert tg.webhook["allowed_updates"] == ["message", "edited_message"]
        tg.push_message(tg.PRIVATE_CHAT, "not from the chosen chat")
        tg.push_message(-1002000000001, "deploy done")
        tg.push_message(-1002000000001, "deploy done!", update_type="edited_message")
        # Telegram itself sends no channel posts: they are not in allowed_updates
        assert tg.push_message(tg.CHANNEL_CHAT, "news", update_type="channel_post") is None
        assert [(i.data["update_type"], i.data["text"]) for i in rx.items] == [
            ("message", "deploy done"),
            ("edited_message", "deploy done!"),
        ]
        assert rx.items[0].data["chat"] == {
            "id": -1002000000001,
            "type": "supergroup",
            "title": "Ops",
        }
        assert "edit_date" in rx.items[1].data
        assert len(rx.delivery_ids) == 3  # the private message was delivered, and skipped


def test_channel_posts_have_no_sender(tg: FakeTelegram) -> None:
    with Receiver(tg, {"updates": ["channel_post"]}) as rx:
        register(tg, rx.url, {"updates": ["channel_post"]})
        tg.push_message(tg.CHANNEL_CHAT, "Release 2.0 is out", update_type="channel_post")
        [item] = rx.items
    assert item.data["from"] is None and item.data["chat"]["type"] == "channel"


def test_disabling_deletes_the_webhook(tg: FakeTelegram) -> None:
    reg = register(tg, "https://levqor.example/hooks/triggers/abc")
    levqor_telegram.unregister_trigger("telegram", "new_message", {}, creds(tg), reg, ctx(tg))
    assert tg.webhook == {"url": ""}
    assert [r.path.rsplit("/", 1)[1] for r in tg.requests][-2:] == [
        "getWebhookInfo",
        "deleteWebhook",
    ]
    # a message now waits for getUpdates instead of going anywhere
    tg.push_message(tg.PRIVATE_CHAT, "hello?")
    assert tg.deliveries == [] and len(tg.pending) == 1


def test_disabling_leaves_a_webhook_someone_else_set(tg: FakeTelegram) -> None:
    old = register(tg, "https://levqor.example/hooks/triggers/old")
    register(tg, "https://levqor.example/hooks/triggers/new")  # a later pipeline, same bot
    levqor_telegram.unregister_trigger("telegram", "new_message", {}, creds(tg), old, ctx(tg))
    assert tg.webhook["url"] == "https://levqor.example/hooks/triggers/new"
    assert not tg.server.requests_to(f"/bot{tg.token}/deleteWebhook")


def test_telegram_refusing_the_url_says_what_it_needs(tg: FakeTelegram) -> None:
    tg.require_https = True
    with pytest.raises(PermanentError) as e:
        register(tg, "http://127.0.0.1:8000/hooks/triggers/abc")
    assert e.value.code == "bad_webhook" and e.value.status == 400
    assert "An HTTPS URL must be provided" in str(e.value) and "443, 80, 88 or 8443" in str(e.value)
    with pytest.raises(PermanentError, match="ports 80, 88, 443 or 8443"):
        register(tg, "https://levqor.example:8000/hooks/triggers/abc")
    assert tg.webhook == {"url": ""}


def test_a_secret_telegram_would_refuse_is_caught_before_calling(tg: FakeTelegram) -> None:
    with pytest.raises(PermanentError, match="secret_token"):
        register(tg, "https://levqor.example/h", secret="has spaces and $ymbols")
    assert tg.requests == []


def test_a_revoked_token_fails_registration_with_a_credential_error(tg: FakeTelegram) -> None:
    wrong = {"bot_token": "7000000001:AAwrongTokenValue_abcdefghijklmnopqrstu"}
    with pytest.raises(CredentialError) as e:
        levqor_telegram.register_trigger(
            "telegram", "new_message", {}, wrong, "https://levqor.example/h", SECRET, ctx(tg)
        )
    assert e.value.status == 401 and wrong["bot_token"] not in str(e.value)


# ---------------------------------------------------------------- polling: getUpdates


def test_first_poll_returns_what_is_there_and_a_cursor(tg: FakeTelegram) -> None:
    first = poll(tg, None)
    assert first.items == [] and first.state == {"offset": 0}
    a = tg.push_message(tg.PRIVATE_CHAT, "one")
    b = tg.push_message(tg.PRIVATE_CHAT, "two")
    seen = poll(tg, first.state)
    assert [i.id for i in seen.items] == [str(a["update_id"]), str(b["update_id"])]
    assert seen.state == {"offset": b["update_id"] + 1}
    req = tg.requests[-1]
    assert req.path == f"/bot{tg.token}/getUpdates"
    assert req.json() == {"timeout": 0, "limit": 100, "allowed_updates": ["message"]}


def test_the_offset_advances_and_confirms(tg: FakeTelegram) -> None:
    tg.push_message(tg.PRIVATE_CHAT, "old")
    baseline = poll(tg, None)  # the host records this one as seen and starts nothing
    assert [i.data["text"] for i in baseline.items] == ["old"]
    c = tg.push_message(tg.PRIVATE_CHAT, "new")
    nxt = poll(tg, baseline.state)
    assert [i.data["text"] for i in nxt.items] == ["new"]
    assert tg.requests[-1].json()["offset"] == baseline.state["offset"]
    assert list(tg.pending) == [c]  # "old" was confirmed by the offset and is gone
    again = poll(tg, nxt.state)
    assert again.items == [] and again.state == nxt.state
    assert list(tg.pending) == []


def test_a_poll_that_failed_to_be_stored_sees_the_same_items_again(tg: FakeTelegram) -> None:
    state = poll(tg, None).state
    tg.push_message(tg.PRIVATE_CHAT, "x")
    once = poll(tg, state)
    twice = poll(tg, state)  # the host crashed before storing once.state: same ids, deduplicated
    assert [i.id for i in once.items] == [i.id for i in twice.items] and once.state == twice.state


def test_polling_reads_more_than_one_page(tg: FakeTelegram) -> None:
    state = poll(tg, None).state
    for n in range(130):
        tg.push_message(tg.PRIVATE_CHAT, f"m{n}")
    out = poll(tg, state)
    assert [i.data["text"] for i in out.items] == [f"m{n}" for n in range(130)]
    assert len(tg.server.requests_to(f"/bot{tg.token}/getUpdates")) == 3


def test_polling_applies_the_config(tg: FakeTelegram) -> None:
    config = {"updates": ["message"], "chat_ids": [tg.PRIVATE_CHAT]}
    state = poll(tg, None, config).state
    tg.add_chat(-4001, "group", title="Other")
    tg.push_message(-4001, "elsewhere")
    last = tg.push_message(tg.PRIVATE_CHAT, "mine")
    out = poll(tg, state, config)
    assert [i.data["text"] for i in out.items] == ["mine"]
    assert out.state == {"offset": last["update_id"] + 1}  # skipped updates are confirmed too


def test_polling_while_a_webhook_is_set_names_the_conflict(tg: FakeTelegram) -> None:
    register(tg, "https://levqor.example/hooks/triggers/abc")
    with pytest.raises(PermanentError) as e:
        poll(tg, {"offset": 5})
    err = e.value
    assert err.status == 409 and err.code == "webhook_active" and not err.retryable
    assert "can't use getUpdates method while webhook is active" in str(err)
    assert "instant trigger" in str(err) and tg.token not in str(err)


def test_polling_flood_control_backs_off(tg: FakeTelegram) -> None:
    tg.flood_next(30)
    with pytest.raises(RetryableError) as e:
        poll(tg, {"offset": 1})
    assert e.value.retry_after == 30


def test_a_malformed_getupdates_answer_fails_closed(tg: FakeTelegram) -> None:
    tg.fail_next(200, {"ok": True, "result": {"not": "a list"}})
    with pytest.raises(PermanentError, match="list of updates"):
        poll(tg, None)


def test_unknown_trigger_names_are_refused(tg: FakeTelegram) -> None:
    with pytest.raises(PermanentError):
        levqor_telegram.poll_trigger("telegram", "new_message", {}, creds(tg), None, ctx(tg))
    with pytest.raises(PermanentError):
        levqor_telegram.register_trigger(
            "telegram", "new_message_polling", {}, creds(tg), "https://x", SECRET, ctx(tg)
        )
    assert tg.requests == []


# ---------------------------------------------------------------- the contract kit


class TestPollingContract(PollingTriggerContract):
    plugin = levqor_telegram
    connector = "telegram"
    trigger = "new_message_polling"

    def fake(self) -> FakeTelegram:
        return FakeTelegram()

    def credentials(self, fake: FakeTelegram) -> dict:
        return {"bot_token": fake.token}

    def env(self, fake: FakeTelegram) -> dict:
        return {"LEVQOR_TELEGRAM_API_BASE": fake.url}

    def add_item(self, fake: FakeTelegram) -> str:
        return str(fake.push_message(fake.PRIVATE_CHAT, "contract")["update_id"])


class TestInstantContract(InstantTriggerContract):
    plugin = levqor_telegram
    connector = "telegram"
    trigger = "new_message"
    events_per_delivery = 1  # Telegram sends one Update per request

    def fake(self) -> FakeTelegram:
        return FakeTelegram()

    def credentials(self, fake: FakeTelegram) -> dict:
        return {"bot_token": fake.token}

    def env(self, fake: FakeTelegram) -> dict:
        return {"LEVQOR_TELEGRAM_API_BASE": fake.url}

    def delivery(self, fake: FakeTelegram, events: int, sign_with: str) -> Delivery:
        update = fake.make_update(fake.PRIVATE_CHAT, "contract")
        return Delivery(
            "POST",
            {"content-type": "application/json", "x-telegram-bot-api-secret-token": sign_with},
            json.dumps(update).encode(),
        )

    def is_registered(self, fake: FakeTelegram, webhook_url: str) -> bool:
        return fake.webhook.get("url") == webhook_url
