"""Levqor connector for Telegram: send messages with the Bot API, start pipelines on new messages.

Requests go to ``{api_base}/bot{token}/sendMessage``. The bot token sits in the URL path, so
it is passed to the HTTP helper as a secret and never appears in an error message. The API
base is ``https://api.telegram.org`` unless the operator sets ``LEVQOR_TELEGRAM_API_BASE``
(trusted) or the credential has an ``api_base`` (a self-hosted Bot API server; user
supplied, so it goes through the SSRF guard).

Two triggers deliver the same item (one per Update that carries a message):

* ``new_message`` (instant): enabling the pipeline calls ``setWebhook`` with the host's URL for
  this trigger and the host's random secret as ``secret_token``; Telegram then sends every
  Update there with the header ``X-Telegram-Bot-Api-Secret-Token``, which
  :func:`receive_delivery` compares with the secret in constant time. Disabling calls
  ``deleteWebhook`` (only when the bot's webhook is still this registration's URL). Telegram
  keeps one webhook per bot: the last pipeline enabled with a bot's instant trigger receives
  its messages. The host's URL must be public HTTPS on port 443, 80, 88 or 8443.
* ``new_message_polling`` (polling, for hosts without a public URL): ``getUpdates`` with the
  stored ``offset``; each poll confirms what the previous one saw. ``getUpdates`` does not work
  while the bot has a webhook (Telegram answers 409 Conflict), so a bot is used either by the
  instant trigger or by the polling one, and by one polling pipeline only (a confirmed update
  is gone for every reader).
"""

from __future__ import annotations

import hmac
import re
from collections.abc import Mapping
from typing import Any

import requests
from levqor_kernel import hookimpl
from levqor_kernel.context import StepContext
from levqor_kernel.errors import (
    ConnectorError,
    CredentialError,
    PayloadError,
    PermanentError,
    SignatureError,
)
from levqor_kernel.triggers import Delivery, DeliveryResult, Poll, TriggerItem

__version__ = "0.1.0"

DEFAULT_API_BASE = "https://api.telegram.org"
TOKEN_PATTERN = re.compile(r"[0-9]{3,}:[A-Za-z0-9_-]{30,}")
PARSE_MODES = ["MarkdownV2", "HTML", "Markdown"]
_NUMERIC = re.compile(r"-?[0-9]+")
#: What Telegram accepts as setWebhook's secret_token (1-256 characters).
SECRET_TOKEN_PATTERN = re.compile(r"[A-Za-z0-9_-]{1,256}")
SECRET_HEADER = "X-Telegram-Bot-Api-Secret-Token"
#: The Update fields that carry a Message, in the order they are looked for.
UPDATE_TYPES = ["message", "edited_message", "channel_post", "edited_channel_post"]
#: Updates read per getUpdates call (Telegram's maximum) and calls per poll.
UPDATES_PER_CALL = 100
MAX_CALLS_PER_POLL = 5

ICON = (
    "data:image/svg+xml,%3Csvg xmlns='http://www.w3.org/2000/svg' viewBox='0 0 24 24'%3E"
    "%3Ccircle cx='12' cy='12' r='11' fill='%2329A9EB'/%3E"
    "%3Cpath d='M5.5 11.8l11.6-4.5c.5-.2 1 .1.8.9l-2 9.3c-.1.6-.5.8-1.1.5l-3-2.2-1.5 1.4"
    "c-.2.2-.3.3-.6.3l.2-3.1 5.6-5c.2-.2 0-.3-.4-.1l-6.9 4.3-3-.9c-.6-.2-.6-.6.3-.9z' "
    "fill='%23fff'/%3E%3C/svg%3E"
)

CREDENTIALS_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["bot_token"],
    "additionalProperties": False,
    "properties": {
        "bot_token": {
            "type": "string",
            "pattern": r"^[0-9]{3,}:[A-Za-z0-9_-]{30,}$",
            "writeOnly": True,
            "title": "Bot token",
            "examples": ["123456789:AAE-example-not-a-real-token-0123456789"],
            "description": "The token @BotFather gave your bot, like 123456789:AAE...",
        },
        "api_base": {
            "type": "string",
            "format": "uri",
            "pattern": "^https?://",
            "title": "Bot API server",
            "description": "Only for a self-hosted Bot API server: its base URL. Leave empty "
            "for https://api.telegram.org. Requests to it pass the SSRF guard.",
        },
    },
}

PAYLOAD_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["chat_id", "text"],
    "additionalProperties": False,
    "properties": {
        "chat_id": {
            "anyOf": [
                {"type": "integer"},
                {"type": "string", "pattern": r"^(-?[0-9]+|@[A-Za-z][A-Za-z0-9_]{3,31})$"},
            ],
            "description": "Target chat: a numeric chat id (negative for groups and channels) "
            "or a public channel's @username.",
        },
        "text": {
            "type": "string",
            "minLength": 1,
            "maxLength": 4096,
            "description": "Message text, 1-4096 characters after entities parsing.",
        },
        "parse_mode": {
            "type": "string",
            "enum": PARSE_MODES,
            "description": "How Telegram formats the text. With MarkdownV2, characters such as "
            ". ! - must be escaped with a backslash; HTML is easier with templated data.",
        },
        "disable_notification": {
            "type": "boolean",
            "description": "Send silently: recipients get a notification without sound.",
        },
        "reply_to_message_id": {
            "type": "integer",
            "minimum": 1,
            "description": "Id of a message in the same chat to reply to.",
        },
    },
}


_CHAT_OUT: dict[str, Any] = {
    "type": "object",
    "required": ["id", "type"],
    "properties": {
        "id": {
            "type": "integer",
            "description": "Numeric chat id (negative for groups and channels)",
        },
        "type": {"type": "string", "description": "private, group, supergroup or channel"},
        "title": {"type": "string", "description": "Group or channel title"},
        "username": {"type": "string", "description": "@username of the chat, without the @"},
        "first_name": {"type": "string", "description": "First name in a private chat"},
    },
}

_USER_OUT: dict[str, Any] = {
    "type": ["object", "null"],
    "description": "The sender (null for channel posts)",
    "properties": {
        "id": {"type": "integer"},
        "is_bot": {"type": "boolean"},
        "first_name": {"type": "string"},
        "last_name": {"type": "string"},
        "username": {"type": "string"},
        "language_code": {"type": "string"},
    },
}

TRIGGER_CONFIG: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "updates": {
            "type": "array",
            "items": {"enum": UPDATE_TYPES},
            "minItems": 1,
            "uniqueItems": True,
            "default": ["message"],
            "title": "Updates",
            "description": "Which messages start a run: new messages (message), edited ones "
            "(edited_message), channel posts (channel_post, edited_channel_post). Default: "
            "message.",
        },
        "chat_ids": {
            "type": "array",
            "items": {"type": "integer"},
            "maxItems": 100,
            "uniqueItems": True,
            "title": "Only these chats",
            "description": "Numeric chat ids; empty: every chat the bot is in. In groups the "
            "bot sees every message only when its privacy mode is off (@BotFather, "
            "/setprivacy).",
        },
    },
}

TRIGGER_OUTPUT: dict[str, Any] = {
    "type": "object",
    "required": ["update_id", "update_type", "message_id", "date", "chat_id", "chat", "text"],
    "properties": {
        "update_id": {
            "type": "integer",
            "description": "Telegram's id of the Update (the item id)",
        },
        "update_type": {"enum": UPDATE_TYPES, "description": "Which kind of message it is"},
        "message_id": {"type": "integer", "description": "Id of the message in its chat"},
        "date": {"type": "integer", "description": "Unix time the message was sent"},
        "edit_date": {"type": "integer", "description": "Unix time of the edit (edited messages)"},
        "text": {
            "type": "string",
            "description": "The text, or a photo's or document's caption; empty when there is none",
        },
        "chat_id": {
            "type": "integer",
            "description": "The chat's id: reply with {{ trigger.chat_id }}",
        },
        "chat": _CHAT_OUT,
        "from": _USER_OUT,
        "reply_to_message_id": {
            "type": ["integer", "null"],
            "description": "The message this one replies to",
        },
    },
}

TRIGGER_SAMPLE: dict[str, Any] = {
    "update_id": 815000123,
    "update_type": "message",
    "message_id": 42,
    "date": 1717000000,
    "text": "Is order 1042 on its way?",
    "chat_id": 123456789,
    "chat": {"id": 123456789, "type": "private", "first_name": "Ada", "username": "ada"},
    "from": {"id": 123456789, "is_bot": False, "first_name": "Ada", "username": "ada"},
    "reply_to_message_id": None,
}

TRIGGERS: dict[str, Any] = {
    "new_message": {
        "title": "New message",
        "description": "Starts a run for every message your bot receives, the moment Telegram "
        "sends it (setWebhook). Needs the host's public HTTPS URL; one webhook per bot.",
        "kind": "instant",
        "webhook": "trigger",
        "config": TRIGGER_CONFIG,
        "output": TRIGGER_OUTPUT,
        "sample": TRIGGER_SAMPLE,
        "example": {"updates": ["message"]},
    },
    "new_message_polling": {
        "title": "New message (polling)",
        "description": "Looks for new messages every few minutes with getUpdates: for hosts "
        "without a public URL. Not while the bot has a webhook (an instant trigger or another "
        "service): Telegram refuses getUpdates then.",
        "kind": "polling",
        "config": TRIGGER_CONFIG,
        "output": TRIGGER_OUTPUT,
        "sample": TRIGGER_SAMPLE,
        "example": {"updates": ["message"]},
    },
}


@hookimpl
def describe_schema() -> list[dict[str, Any]]:
    return [
        {
            "name": "telegram",
            "title": "Telegram",
            "description": "Send messages from your Telegram bot to users, groups and channels, "
            "and start pipelines when it receives one.",
            "icon": ICON,
            "categories": ["communication", "chat"],
            "cooperative": True,  # every wait goes through context.http, bounded by the step deadline
            "docs_url": "https://core.telegram.org/bots/api#sendmessage",
            "kernel": ">=0.3,<1",
            "credentials": CREDENTIALS_SCHEMA,
            "triggers": TRIGGERS,
            "actions": {
                "send_message": {
                    "title": "Send a message",
                    "description": "Send a text message from your bot to a chat.",
                    "payload": PAYLOAD_SCHEMA,
                    "output": {
                        "type": "object",
                        "required": ["message_id", "chat_id", "date"],
                        "properties": {
                            "message_id": {"type": "integer", "description": "Id of the message"},
                            "chat_id": {"type": "integer", "description": "Numeric chat id"},
                            "date": {"type": "integer", "description": "Unix time it was sent"},
                        },
                    },
                    "example": {
                        "chat_id": "@levqor_alerts",
                        "text": "New order {{ trigger.order_id }} from {{ trigger.name }}",
                    },
                    "price": 1,
                    "minutes_saved": 1,
                    "idempotent": False,
                    "writes": True,
                }
            },
        }
    ]


def bot_token(credentials: Mapping[str, Any] | None) -> str:
    """The bot token from ``credentials``, or a :class:`CredentialError` (never echoing it)."""
    token = credentials.get("bot_token") if isinstance(credentials, Mapping) else None
    if not isinstance(token, str) or not token.strip():
        raise CredentialError(
            "a Telegram bot token (bot_token) is required", code="missing_credentials"
        )
    token = token.strip()
    if not TOKEN_PATTERN.fullmatch(token):
        raise CredentialError(
            "the Telegram bot token is malformed: @BotFather's tokens look like "
            "123456789:AAE... (digits, a colon, then letters, digits, - and _)",
            code="malformed_credentials",
        )
    return token


def _body(resp: requests.Response) -> dict[str, Any] | None:
    try:
        data = resp.json()
    except ValueError:
        return None
    return data if isinstance(data, dict) else None


def _detail(resp: requests.Response) -> str | None:
    data = _body(resp)
    if data is None or not isinstance(data.get("description"), str):
        return None
    text = data["description"]
    params = data.get("parameters")
    if isinstance(params, dict) and isinstance(params.get("migrate_to_chat_id"), int):
        text += (
            f" (the group is now the supergroup {params['migrate_to_chat_id']}: use that chat_id)"
        )
    return text


def _retry_after(resp: requests.Response) -> float | None:
    data = _body(resp)
    params = data.get("parameters") if data else None
    value = params.get("retry_after") if isinstance(params, dict) else None
    if isinstance(value, (int, float)) and not isinstance(value, bool) and value >= 0:
        return float(value)
    return None


def call(
    context: StepContext,
    credentials: Mapping[str, Any] | None,
    method: str,
    params: dict[str, Any] | None = None,
) -> Any:
    """Call Bot API ``method`` and return its ``result``, or raise the right ConnectorError."""
    token = bot_token(credentials)
    base, guarded = context.api_base("telegram", DEFAULT_API_BASE, credentials)
    try:
        resp = context.http.request(
            "POST" if params is not None else "GET",
            f"{base}/bot{token}/{method}",
            guard=guarded,
            json=params,
            secrets=[token],
            service="Telegram",
            detail=_detail,
            retry_after=_retry_after,
            allow_redirects=False,
        )
    except ConnectorError as e:
        if e.retryable:
            raise
        if e.status == 404:  # Telegram answers 404 for a token it does not know at all
            raise CredentialError(
                f"{e.message} (Telegram did not recognise the bot token)",
                status=404,
                code="unknown_token",
            ) from None
        if e.status == 400:
            raise PayloadError(e.message, status=400, code="bad_request") from None
        raise
    data = context.http.json(resp, service="Telegram")
    if not isinstance(data, dict) or data.get("ok") is not True or "result" not in data:
        desc = data.get("description") if isinstance(data, dict) else None
        why = f": {desc[:200]}" if isinstance(desc, str) else ""
        raise PermanentError(
            f"Telegram answered HTTP {resp.status_code} without an ok result{why}",
            status=resp.status_code,
            code="malformed_response",
        )
    return data["result"]


def _chat_id(value: Any) -> int | str:
    if isinstance(value, bool):
        raise PayloadError("chat_id must be a number or an @username")
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        value = value.strip()
        if _NUMERIC.fullmatch(value):
            return int(value)
        if value.startswith("@") and len(value) > 1:
            return value
    raise PayloadError("chat_id must be a numeric chat id or a channel's @username")


def message_params(payload: Mapping[str, Any]) -> dict[str, Any]:
    """The sendMessage parameters for a step payload."""
    text = payload.get("text")
    if not isinstance(text, str) or not text.strip():
        raise PayloadError("text is required and must not be blank")
    params: dict[str, Any] = {"chat_id": _chat_id(payload.get("chat_id")), "text": text}
    if payload.get("parse_mode"):
        params["parse_mode"] = payload["parse_mode"]
    if payload.get("disable_notification") is not None:
        params["disable_notification"] = bool(payload["disable_notification"])
    if payload.get("reply_to_message_id") is not None:
        params["reply_parameters"] = {"message_id": int(payload["reply_to_message_id"])}
    return params


@hookimpl
def run_task(
    connector: str,
    action: str,
    payload: dict[str, Any],
    credentials: dict[str, Any] | None,
    context: StepContext,
) -> dict[str, Any]:
    if action != "send_message":
        raise PayloadError(f"telegram has no action {action!r}")
    bot_token(credentials)  # refuse bad credentials before looking at the payload
    result = call(context, credentials, "sendMessage", message_params(payload or {}))
    chat = result.get("chat") if isinstance(result, dict) else None
    out = {
        "message_id": result.get("message_id") if isinstance(result, dict) else None,
        "chat_id": chat.get("id") if isinstance(chat, dict) else None,
        "date": result.get("date") if isinstance(result, dict) else None,
    }
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in out.values()):
        raise PermanentError(
            "Telegram answered ok but the result is not a Message (no message_id, chat or date)",
            code="malformed_response",
        )
    return out


@hookimpl
def check_credentials(
    connector: str, credentials: dict[str, Any], context: StepContext
) -> dict[str, Any] | None:
    """Test the bot token with ``getMe`` (read-only)."""
    if connector != "telegram":
        return None
    me = call(context, credentials, "getMe")
    if (
        not isinstance(me, dict)
        or not isinstance(me.get("id"), int)
        or me.get("is_bot") is not True
    ):
        raise PermanentError(
            "Telegram's getMe answered without a bot user", code="malformed_response"
        )
    username = me.get("username") if isinstance(me.get("username"), str) else None
    return {
        "ok": True,
        "account": f"@{username}" if username else str(me.get("first_name", me["id"])),
        "id": me["id"],
        "username": username,
        "name": me.get("first_name"),
    }


# ---------------------------------------------------------------------------------- triggers


def _updates(config: Mapping[str, Any] | None) -> list[str]:
    wanted = (config or {}).get("updates")
    if isinstance(wanted, list) and wanted:
        return [u for u in UPDATE_TYPES if u in wanted]
    return ["message"]


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _pick(obj: Any, keys: tuple[str, ...]) -> dict[str, Any] | None:
    if not isinstance(obj, Mapping):
        return None
    return {k: obj[k] for k in keys if obj.get(k) is not None}


def update_item(update: Mapping[str, Any], config: Mapping[str, Any] | None) -> TriggerItem | None:
    """The item an Update carries, or None when it is of a kind or from a chat the config leaves
    out (an Update without a Message, such as a callback query, carries none)."""
    update_id = _int(update.get("update_id"))
    if update_id is None:
        return None
    kind = next((k for k in UPDATE_TYPES if isinstance(update.get(k), Mapping)), None)
    if kind is None or kind not in _updates(config):
        return None
    msg = update[kind]
    chat = _pick(msg.get("chat"), ("id", "type", "title", "username", "first_name"))
    message_id, date, chat_id = _int(msg.get("message_id")), _int(msg.get("date")), None
    if chat is not None:
        chat_id = _int(chat.get("id"))
    if message_id is None or date is None or chat_id is None:
        return None
    only = (config or {}).get("chat_ids")
    if isinstance(only, list) and only and chat_id not in only:
        return None
    text = msg.get("text")
    if not isinstance(text, str):
        text = msg.get("caption") if isinstance(msg.get("caption"), str) else ""
    reply = msg.get("reply_to_message")
    data: dict[str, Any] = {
        "update_id": update_id,
        "update_type": kind,
        "message_id": message_id,
        "date": date,
        "text": text,
        "chat_id": chat_id,
        "chat": chat,
        "from": _pick(
            msg.get("from"),
            ("id", "is_bot", "first_name", "last_name", "username", "language_code"),
        ),
        "reply_to_message_id": _int(reply.get("message_id"))
        if isinstance(reply, Mapping)
        else None,
    }
    if _int(msg.get("edit_date")) is not None:
        data["edit_date"] = msg["edit_date"]
    return TriggerItem(id=str(update_id), data=data)


@hookimpl
def poll_trigger(
    connector: str,
    trigger: str,
    config: dict[str, Any],
    credentials: dict[str, Any] | None,
    state: dict[str, Any] | None,
    context: StepContext,
) -> Poll:
    """``getUpdates`` from the stored offset (none on the first poll: whatever Telegram still
    holds, which the host records as seen). The next offset, one past the newest update, also
    confirms everything read so far: Telegram forgets confirmed updates."""
    if trigger != "new_message_polling":
        raise PermanentError(f"telegram has no polling trigger {trigger!r}", code="unknown_trigger")
    offset = _int((state or {}).get("offset")) or 0
    items: list[TriggerItem] = []
    for _ in range(MAX_CALLS_PER_POLL):
        params: dict[str, Any] = {
            "timeout": 0,
            "limit": UPDATES_PER_CALL,
            "allowed_updates": _updates(config),
        }
        if offset:
            params["offset"] = offset
        try:
            result = call(context, credentials, "getUpdates", params)
        except ConnectorError as e:
            if e.status == 409:
                raise PermanentError(
                    f"{e.message} (this bot delivers its updates to a webhook, set by an instant "
                    "'new_message' trigger or another service; Telegram refuses getUpdates while "
                    "one is set: use the instant trigger, or remove the webhook)",
                    status=409,
                    code="webhook_active",
                ) from None
            raise
        if not isinstance(result, list):
            raise PermanentError(
                "Telegram's getUpdates answered without a list of updates",
                code="malformed_response",
            )
        ids = [_int(u.get("update_id")) for u in result if isinstance(u, Mapping)]
        ids = [i for i in ids if i is not None]
        for update in result:
            item = update_item(update, config) if isinstance(update, Mapping) else None
            if item is not None:
                items.append(item)
        if ids:
            offset = max(offset, max(ids) + 1)
        if len(result) < UPDATES_PER_CALL:
            break
    return Poll(items=items, state={"offset": offset})


def _check_instant(trigger: str | None) -> None:
    if trigger != "new_message":
        raise PermanentError(f"telegram has no instant trigger {trigger!r}", code="unknown_trigger")


@hookimpl
def register_trigger(
    connector: str,
    trigger: str,
    config: dict[str, Any],
    credentials: dict[str, Any] | None,
    webhook_url: str,
    secret: str,
    context: StepContext,
) -> dict[str, Any]:
    """``setWebhook`` to the host's URL with its secret as ``secret_token``. Updates still
    pending at Telegram are dropped: a newly enabled trigger starts with what arrives next."""
    _check_instant(trigger)
    if not SECRET_TOKEN_PATTERN.fullmatch(secret or ""):
        raise PermanentError(
            "Telegram's secret_token allows 1-256 letters, digits, _ and -; the host's secret "
            "does not fit",
            code="bad_secret",
        )
    params = {
        "url": webhook_url,
        "secret_token": secret,
        "allowed_updates": _updates(config),
        "drop_pending_updates": True,
    }
    try:
        call(context, credentials, "setWebhook", params)
    except PayloadError as e:
        raise PermanentError(
            f"{e.message} (Telegram delivers only to a public HTTPS URL on port 443, 80, 88 or "
            "8443: check the host's public URL)",
            status=e.status,
            code="bad_webhook",
        ) from None
    return {"url": webhook_url}


@hookimpl
def unregister_trigger(
    connector: str,
    trigger: str,
    config: dict[str, Any],
    credentials: dict[str, Any] | None,
    registration: dict[str, Any],
    context: StepContext,
) -> None:
    """``deleteWebhook``, unless the bot's webhook is no longer ours (a later pipeline or
    another service set its own: removing it would cut that one off)."""
    _check_instant(trigger)
    info = call(context, credentials, "getWebhookInfo")
    current = info.get("url") if isinstance(info, Mapping) else None
    if not current or current != (registration or {}).get("url"):
        return
    call(context, credentials, "deleteWebhook", {"drop_pending_updates": False})


@hookimpl
def receive_delivery(
    connector: str,
    trigger: str | None,
    config: dict[str, Any] | None,
    delivery: Delivery,
    registration: dict[str, Any] | None,
    context: StepContext,
) -> DeliveryResult:
    """One Update sent to the webhook: the secret header must equal this registration's
    secret (compared in constant time); the Update becomes at most one item."""
    _check_instant(trigger)
    expected = delivery.secret or ""
    got = delivery.header(SECRET_HEADER) or ""
    if not expected or not hmac.compare_digest(got.encode(), expected.encode()):
        raise SignatureError(f"the delivery has no valid {SECRET_HEADER} header")
    update = delivery.json()
    if not isinstance(update, Mapping) or _int(update.get("update_id")) is None:
        raise PermanentError(
            "the delivery is not a Telegram Update (no update_id)", status=400, code="bad_body"
        )
    item = update_item(update, config)
    return DeliveryResult(
        items=[item] if item is not None else [], delivery_id=str(update["update_id"])
    )
