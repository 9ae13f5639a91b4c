"""levqor-telegram against the contract kit and against FakeTelegram (real HTTP over loopback)."""

from __future__ import annotations

import time
from collections.abc import Iterator

import levqor_telegram
import pytest
from levqor_kernel.context import StepContext
from levqor_kernel.errors import (
    BlockedURLError,
    ConnectorError,
    CredentialError,
    PayloadError,
    PermanentError,
    RetryableError,
)
from levqor_kernel.plugins import make_plugin_manager
from levqor_kernel.testing import ConnectorContract
from levqor_telegram.fake import FakeTelegram, error_body

CONTRACT_TOKEN = "123456789:AAEcontractTokenValue_0123456789abc"


class TestContractWithApiBaseCredential(ConnectorContract):
    """A user-supplied api_base (guarded; the kit allows 127.0.0.1)."""

    plugin = levqor_telegram

    def credentials(self, base_url: str) -> dict:
        return {"bot_token": CONTRACT_TOKEN, "api_base": base_url}


class TestContractWithOperatorApiBase(ConnectorContract):
    """The operator's LEVQOR_TELEGRAM_API_BASE (trusted)."""

    plugin = levqor_telegram

    def credentials(self, base_url: str) -> dict:
        return {"bot_token": CONTRACT_TOKEN}

    def env(self, base_url: str) -> dict:
        return {"LEVQOR_TELEGRAM_API_BASE": base_url}


@pytest.fixture(scope="module")
def _tg_server() -> Iterator[FakeTelegram]:
    # one server for the module; the function fixture below resets it between tests
    with FakeTelegram() as fake:
        yield fake


@pytest.fixture
def tg(_tg_server: FakeTelegram) -> Iterator[FakeTelegram]:
    _tg_server.reset()
    yield _tg_server
    _tg_server.reset()


def ctx(tg: FakeTelegram | None, env: dict | None = None, timeout: float = 5.0) -> StepContext:
    if env is None:
        env = {"LEVQOR_TELEGRAM_API_BASE": tg.url} if tg else {}
    return StepContext(run_id="run1", step_id="tg", deadline=time.monotonic() + timeout, env=env)


def send(tg: FakeTelegram, payload: dict, **kw) -> dict:
    creds = kw.pop("credentials", {"bot_token": tg.token})
    return levqor_telegram.run_task("telegram", "send_message", payload, creds, ctx(tg, **kw))


def assert_no_secret(tg: FakeTelegram, err: ConnectorError) -> None:
    text = str(err) + repr(err.to_dict())
    assert tg.token not in text
    assert tg.token.split(":", 1)[1] not in text


# ---------------------------------------------------------------- success


def test_sends_a_message(tg: FakeTelegram) -> None:
    out = send(tg, {"chat_id": tg.PRIVATE_CHAT, "text": "Order 42 paid"})
    [msg] = tg.messages
    assert out == {"message_id": msg["message_id"], "chat_id": tg.PRIVATE_CHAT, "date": msg["date"]}
    assert abs(out["date"] - time.time()) < 5
    [req] = tg.requests
    assert req.method == "POST"
    assert req.path == f"/bot{tg.token}/sendMessage"
    assert req.header("Content-Type") == "application/json"
    assert req.header("User-Agent", "").startswith("levqor/")
    assert req.json() == {"chat_id": tg.PRIVATE_CHAT, "text": "Order 42 paid"}


def test_sends_to_a_channel_username_with_all_options(tg: FakeTelegram) -> None:
    first = send(tg, {"chat_id": "@levqor_alerts", "text": "Deploy started"})
    out = send(
        tg,
        {
            "chat_id": "@levqor_alerts",
            "text": "<b>Deploy</b> finished",
            "parse_mode": "HTML",
            "disable_notification": True,
            "reply_to_message_id": first["message_id"],
        },
    )
    assert out["chat_id"] == tg.CHANNEL_CHAT
    assert tg.requests[1].json() == {
        "chat_id": "@levqor_alerts",
        "text": "<b>Deploy</b> finished",
        "parse_mode": "HTML",
        "disable_notification": True,
        "reply_parameters": {"message_id": first["message_id"]},
    }
    assert tg.messages[1]["reply_to_message"]["message_id"] == first["message_id"]


def test_numeric_string_chat_id_is_sent_as_a_number(tg: FakeTelegram) -> None:
    # a template such as "{{ trigger.chat }}" can render to a string
    out = send(tg, {"chat_id": f" {tg.CHANNEL_CHAT} ", "text": "hi"})
    assert out["chat_id"] == tg.CHANNEL_CHAT
    assert tg.requests[0].json()["chat_id"] == tg.CHANNEL_CHAT


def test_escaped_markdown_v2_is_accepted(tg: FakeTelegram) -> None:
    send(
        tg,
        {"chat_id": tg.PRIVATE_CHAT, "text": "*Total:* 12\\.50 EUR\\!", "parse_mode": "MarkdownV2"},
    )
    assert tg.messages[0]["text"] == "*Total:* 12\\.50 EUR\\!"


# ---------------------------------------------------------------- schema and payload


def test_catalog() -> None:
    pm = make_plugin_manager(entry_points=False, builtins=False, plugins=[levqor_telegram])
    assert not pm.failures
    info = pm.catalog.get("telegram")
    assert info.credentials["properties"]["bot_token"]["writeOnly"] is True
    ok = {"chat_id": -1001, "text": "x", "parse_mode": "MarkdownV2"}
    assert not pm.catalog.validate_payload("telegram", "send_message", ok)
    assert not pm.catalog.validate_payload(
        "telegram", "send_message", {"chat_id": "@chan_name", "text": "x"}
    )
    for bad in (
        {"chat_id": "general", "text": "x"},
        {"chat_id": 1, "text": ""},
        {"chat_id": 1, "text": "x", "parse_mode": "markdown"},
        {"chat_id": 1, "text": "x" * 4097},
        {"chat_id": 1},
        {"chat_id": 1, "text": "x", "photo": "y"},
    ):
        assert pm.catalog.validate_payload("telegram", "send_message", bad), bad


@pytest.mark.parametrize(
    "payload,match",
    [
        ({"chat_id": "general", "text": "x"}, "chat_id"),
        ({"chat_id": True, "text": "x"}, "chat_id"),
        ({"chat_id": 1, "text": "   "}, "text"),
    ],
)
def test_bad_payload_is_refused_before_sending(tg: FakeTelegram, payload: dict, match: str) -> None:
    with pytest.raises(PayloadError, match=match):
        send(tg, payload)
    assert tg.requests == []


def test_unknown_action(tg: FakeTelegram) -> None:
    with pytest.raises(PayloadError, match="no action 'send_photo'"):
        levqor_telegram.run_task("telegram", "send_photo", {}, {"bot_token": tg.token}, ctx(tg))


# ---------------------------------------------------------------- credentials


@pytest.mark.parametrize(
    "creds",
    [
        None,
        {},
        {"bot_token": ""},
        {"bot_token": 5},
        {"bot_token": "not-a-token"},
        {"bot_token": "12:short"},
    ],
)
def test_missing_or_malformed_token(tg: FakeTelegram, creds) -> None:
    with pytest.raises(CredentialError, match="bot token"):
        send(tg, {"chat_id": 1, "text": "hi"}, credentials=creds)
    assert tg.requests == []


def test_wrong_token_is_unauthorized(tg: FakeTelegram) -> None:
    wrong = "7000000001:AAwrongTokenValue_abcdefghijklmnopqrstu"
    with pytest.raises(CredentialError) as e:
        send(tg, {"chat_id": tg.PRIVATE_CHAT, "text": "hi"}, credentials={"bot_token": wrong})
    assert e.value.status == 401
    assert str(e.value) == "Telegram answered HTTP 401: Unauthorized"
    assert wrong not in str(e.value) and wrong.split(":")[1] not in str(e.value)
    assert tg.messages == []


def test_404_means_the_token_is_unknown(tg: FakeTelegram) -> None:
    tg.fail_next(404)
    with pytest.raises(CredentialError) as e:
        send(tg, {"chat_id": tg.PRIVATE_CHAT, "text": "hi"})
    assert e.value.status == 404 and "did not recognise the bot token" in str(e.value)
    assert_no_secret(tg, e.value)


def test_check_credentials_uses_get_me(tg: FakeTelegram) -> None:
    out = levqor_telegram.check_credentials("telegram", {"bot_token": tg.token}, ctx(tg))
    assert out == {
        "ok": True,
        "account": "@levqor_test_bot",
        "id": 7000000001,
        "username": "levqor_test_bot",
        "name": "Levqor Test",
    }
    [req] = tg.requests
    assert req.method == "GET" and req.path == f"/bot{tg.token}/getMe" and req.body == b""
    assert tg.messages == []  # no side effect


def test_check_credentials_refuses_a_wrong_token(tg: FakeTelegram) -> None:
    wrong = "7000000001:AAwrongTokenValue_abcdefghijklmnopqrstu"
    with pytest.raises(CredentialError) as e:
        levqor_telegram.check_credentials("telegram", {"bot_token": wrong}, ctx(tg))
    assert "Unauthorized" in str(e.value) and wrong not in str(e.value)


def test_check_credentials_ignores_other_connectors(tg: FakeTelegram) -> None:
    assert levqor_telegram.check_credentials("slack", {"bot_token": tg.token}, ctx(tg)) is None
    assert tg.requests == []


# ---------------------------------------------------------------- documented errors


@pytest.mark.parametrize(
    "prepare,payload,cls,status,description",
    [
        (None, {"chat_id": 42, "text": "hi"}, PayloadError, 400, "Bad Request: chat not found"),
        (
            None,
            {"chat_id": "@nobody_here", "text": "hi"},
            PayloadError,
            400,
            "Bad Request: chat not found",
        ),
        (
            None,
            {"chat_id": 123456789, "text": "Total: 12.50", "parse_mode": "MarkdownV2"},
            PayloadError,
            400,
            "Bad Request: can't parse entities: Character '.' is reserved",
        ),
        (
            None,
            {"chat_id": 123456789, "text": "hi", "reply_to_message_id": 999},
            PayloadError,
            400,
            "Bad Request: message to be replied not found",
        ),
        (
            lambda tg: tg.block(tg.PRIVATE_CHAT),
            {"chat_id": 123456789, "text": "hi"},
            CredentialError,
            403,
            "Forbidden: bot was blocked by the user",
        ),
    ],
)
def test_documented_error_bodies(
    tg: FakeTelegram, prepare, payload, cls, status, description
) -> None:
    if prepare:
        prepare(tg)
    with pytest.raises(cls) as e:
        send(tg, payload)
    err = e.value
    assert not err.retryable and err.status == status
    assert str(err).startswith(f"Telegram answered HTTP {status}: {description}")
    assert_no_secret(tg, err)
    assert tg.messages == []


def test_migrated_group_names_the_new_chat(tg: FakeTelegram) -> None:
    tg.add_chat(-4001, "group", title="Ops")
    tg.migrate(-4001, -1009876543210)
    with pytest.raises(PayloadError) as e:
        send(tg, {"chat_id": -4001, "text": "hi"})
    assert "upgraded to a supergroup" in str(e.value) and "-1009876543210" in str(e.value)
    assert send(tg, {"chat_id": -1009876543210, "text": "hi"})["chat_id"] == -1009876543210


def test_error_text_is_redacted_even_if_telegram_echoes_the_token(tg: FakeTelegram) -> None:
    tg.fail_next(400, error_body(400, f"Bad Request: weird {tg.token} echo"))
    with pytest.raises(PayloadError) as e:
        send(tg, {"chat_id": tg.PRIVATE_CHAT, "text": "hi"})
    assert "weird *** echo" in str(e.value)
    assert_no_secret(tg, e.value)


# ---------------------------------------------------------------- retries


def test_flood_control_honours_the_body_retry_after(tg: FakeTelegram) -> None:
    tg.flood_next(17)  # no Retry-After header: only parameters.retry_after
    with pytest.raises(RetryableError) as e:
        send(tg, {"chat_id": tg.PRIVATE_CHAT, "text": "hi"})
    assert e.value.status == 429 and e.value.retry_after == 17
    assert "Too Many Requests: retry after 17" in str(e.value)
    assert_no_secret(tg, e.value)
    assert tg.messages == []


def test_body_retry_after_wins_over_the_header(tg: FakeTelegram) -> None:
    tg.fail_next(
        429,
        error_body(429, "Too Many Requests: retry after 9", retry_after=9),
        {"Retry-After": "2"},
    )
    with pytest.raises(RetryableError) as e:
        send(tg, {"chat_id": tg.PRIVATE_CHAT, "text": "hi"})
    assert e.value.retry_after == 9


def test_server_error_then_success(tg: FakeTelegram) -> None:
    tg.fail_next(502, "<html><body>502 Bad Gateway</body></html>", {"Content-Type": "text/html"})
    with pytest.raises(RetryableError) as e:
        send(tg, {"chat_id": tg.PRIVATE_CHAT, "text": "hi"})
    assert e.value.status == 502
    out = send(tg, {"chat_id": tg.PRIVATE_CHAT, "text": "hi"})
    assert out["message_id"] == tg.messages[0]["message_id"]
    assert len(tg.requests) == 2 and len(tg.messages) == 1


def test_timeout_is_retryable(tg: FakeTelegram) -> None:
    tg.fail_next(200, {"ok": True, "result": {}}, delay=1.5)
    started = time.monotonic()
    with pytest.raises(RetryableError) as e:
        send(tg, {"chat_id": tg.PRIVATE_CHAT, "text": "hi"}, timeout=0.5)
    assert time.monotonic() - started < 1.4
    assert e.value.code == "timeout"
    assert_no_secret(tg, e.value)


def test_connection_refused_hides_the_token() -> None:
    with FakeTelegram() as fake:
        base, token = fake.url, fake.token
    with pytest.raises(RetryableError) as e:
        levqor_telegram.run_task(
            "telegram",
            "send_message",
            {"chat_id": 1, "text": "hi"},
            {"bot_token": token},
            ctx(None, env={"LEVQOR_TELEGRAM_API_BASE": base}),
        )
    assert token not in str(e.value) and token.split(":")[1] not in str(e.value)


# ---------------------------------------------------------------- fail closed


@pytest.mark.parametrize(
    "body",
    [
        {"ok": False, "error_code": 400, "description": "Bad Request: odd"},
        {"ok": True},
        {"ok": True, "result": True},
        {"ok": True, "result": {"message_id": 1, "chat": {"id": "x"}, "date": 1}},
        ["ok"],
        "ok",
    ],
)
def test_unexpected_2xx_bodies_fail_closed(tg: FakeTelegram, body) -> None:
    tg.fail_next(200, body)
    with pytest.raises(PermanentError) as e:
        send(tg, {"chat_id": tg.PRIVATE_CHAT, "text": "hi"})
    assert not e.value.retryable
    assert_no_secret(tg, e.value)


# ---------------------------------------------------------------- API base and SSRF guard


def test_api_base_credential_is_guarded(tg: FakeTelegram) -> None:
    creds = {"bot_token": tg.token, "api_base": tg.url}
    with pytest.raises(BlockedURLError):
        send(tg, {"chat_id": tg.PRIVATE_CHAT, "text": "hi"}, credentials=creds, env={})
    assert tg.requests == []
    with pytest.raises(BlockedURLError):
        levqor_telegram.check_credentials("telegram", creds, ctx(tg, env={}))
    assert tg.requests == []
    # allowed by the operator, the same credential works
    out = send(
        tg,
        {"chat_id": tg.PRIVATE_CHAT, "text": "hi"},
        credentials=creds,
        env={"LEVQOR_SSRF_ALLOW": "127.0.0.1"},
    )
    assert out["chat_id"] == tg.PRIVATE_CHAT


def test_api_base_credential_wins_over_the_operator_base(tg: FakeTelegram) -> None:
    creds = {"bot_token": tg.token, "api_base": "http://169.254.169.254"}
    env = {"LEVQOR_TELEGRAM_API_BASE": tg.url, "LEVQOR_SSRF_ALLOW": "127.0.0.1"}
    with pytest.raises(BlockedURLError):
        send(tg, {"chat_id": tg.PRIVATE_CHAT, "text": "hi"}, credentials=creds, env=env)
    assert tg.requests == []


def test_operator_api_base_is_trusted(tg: FakeTelegram) -> None:
    # no LEVQOR_SSRF_ALLOW: the operator's own base URL is not guarded
    out = send(
        tg,
        {"chat_id": tg.PRIVATE_CHAT, "text": "hi"},
        env={"LEVQOR_TELEGRAM_API_BASE": tg.url + "/"},
    )
    assert out["chat_id"] == tg.PRIVATE_CHAT
    assert tg.requests[0].path == f"/bot{tg.token}/sendMessage"


def test_send_message_is_marked_as_writing_upstream():
    (desc,) = levqor_telegram.describe_schema()
    assert desc["actions"]["send_message"]["writes"] is True
