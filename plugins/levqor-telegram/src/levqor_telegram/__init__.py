"""Levqor connector for Telegram: send messages with the Bot API.

Requests go to ``{api_base}/bot{token}/sendMessage``. The bot token sits in the URL path, so
it is passed to the HTTP helper as a secret and never appears in an error message. The API
base is ``https://api.telegram.org`` unless the operator sets ``LEVQOR_TELEGRAM_API_BASE``
(trusted) or the credential has an ``api_base`` (a self-hosted Bot API server; user
supplied, so it goes through the SSRF guard).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import requests
from levqor_kernel import hookimpl
from levqor_kernel.context import StepContext
from levqor_kernel.errors import ConnectorError, CredentialError, PayloadError, PermanentError

__version__ = "0.1.0"

DEFAULT_API_BASE = "https://api.telegram.org"
TOKEN_PATTERN = re.compile(r"[0-9]{3,}:[A-Za-z0-9_-]{30,}")
PARSE_MODES = ["MarkdownV2", "HTML", "Markdown"]
_NUMERIC = re.compile(r"-?[0-9]+")

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


@hookimpl
def describe_schema() -> list[dict[str, Any]]:
    return [
        {
            "name": "telegram",
            "title": "Telegram",
            "description": "Send messages from your Telegram bot to users, groups and channels.",
            "icon": ICON,
            "categories": ["communication", "chat"],
            "cooperative": True,  # every wait goes through context.http, bounded by the step deadline
            "docs_url": "https://core.telegram.org/bots/api#sendmessage",
            "kernel": ">=0.1,<1",
            "credentials": CREDENTIALS_SCHEMA,
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
