"""Levqor connector for Slack: post a message through an incoming webhook.

The webhook URL is the credential. Its path is a secret, so it never appears in an error
message. The rules (:func:`webhook_url`, checked when the credential is saved and on every run):

* on ``hooks.slack.com``: ``https``, the path ``/services/<team>/<bot>/<secret>``, no port
  other than 443, no user name, password, query or fragment;
* another host only when the operator lists it in ``LEVQOR_SLACK_ALLOWED_HOSTS`` (comma
  separated host names: a Slack-compatible proxy, a test fake), with ``https``, or plain
  ``http`` to a loopback host only (the path is a secret: it never crosses a network in clear);
* every request goes through the SSRF guard, so a private address also needs
  ``LEVQOR_SSRF_ALLOW``.

There is no ``check_credentials``: an incoming webhook has no read-only endpoint, so the only
way to test one is to post a message.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

import requests
from levqor_kernel import hookimpl
from levqor_kernel.context import StepContext
from levqor_kernel.errors import (
    ConnectorError,
    CredentialError,
    PayloadError,
    PermanentError,
)
from levqor_kernel.http import redact

__version__ = "0.1.0"

SLACK_HOST = "hooks.slack.com"
ALLOWED_HOSTS_ENV = "LEVQOR_SLACK_ALLOWED_HOSTS"

ICON = (
    "data:image/svg+xml,%3Csvg xmlns='http://www.w3.org/2000/svg' viewBox='0 0 24 24'%3E"
    "%3Crect x='9' y='2' width='3' height='9' rx='1.5' fill='%2336C5F0'/%3E"
    "%3Crect x='13' y='9' width='9' height='3' rx='1.5' fill='%232EB67D'/%3E"
    "%3Crect x='12' y='13' width='3' height='9' rx='1.5' fill='%23ECB22E'/%3E"
    "%3Crect x='2' y='12' width='9' height='3' rx='1.5' fill='%23E01E5A'/%3E%3C/svg%3E"
)

#: Slack's plain-text error codes, what they mean, and how a failure is classified.
ERRORS: dict[str, tuple[str, type[ConnectorError]]] = {
    "invalid_payload": (
        "Slack could not read the message (check the blocks and field types)",
        PayloadError,
    ),
    "no_text": ("the message needs text or blocks", PayloadError),
    "invalid_blocks": ("the blocks are not valid Block Kit", PayloadError),
    "invalid_blocks_format": ("the blocks are not a valid Block Kit array", PayloadError),
    "too_many_attachments": ("the message has too many attachments", PayloadError),
    "missing_text_or_fallback_or_attachments": ("the message needs text or blocks", PayloadError),
    "user_not_found": ("a user named in the message does not exist", PayloadError),
    "channel_not_found": (
        "the webhook's channel no longer exists; create a new webhook",
        PermanentError,
    ),
    "channel_is_archived": (
        "the webhook's channel is archived and accepts no messages",
        PermanentError,
    ),
    "action_prohibited": (
        "the workspace restricts what this webhook may post; ask a Slack admin",
        CredentialError,
    ),
    "posting_to_general_channel_denied": (
        "only admins may post to this channel; pick another channel or ask a Slack admin",
        CredentialError,
    ),
    "invalid_token": (
        "the webhook URL is not valid (revoked or mistyped); create a new webhook",
        CredentialError,
    ),
    "no_service": (
        "the webhook is disabled, removed or invalid; create a new webhook",
        CredentialError,
    ),
    "no_service_id": ("the webhook URL is not valid; create a new webhook", CredentialError),
    "no_team": ("the webhook's Slack workspace does not exist", CredentialError),
    "team_disabled": ("the webhook's Slack workspace is disabled", CredentialError),
}

_SLACK_PATH = re.compile(r"/services/[A-Za-z0-9]+/[A-Za-z0-9]+/[A-Za-z0-9]+")
_CODE = re.compile(r"[a-z][a-z0-9_]{1,60}")

PAYLOAD_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "text": {
            "type": "string",
            "maxLength": 40000,
            "description": "Message text (Slack mrkdwn). With blocks it is the notification "
            "fallback; at least one of text and blocks is required.",
        },
        "blocks": {
            "type": "array",
            "minItems": 1,
            "maxItems": 50,
            "items": {
                "type": "object",
                "required": ["type"],
                "properties": {"type": {"type": "string"}},
            },
            "description": "Block Kit layout blocks (at most 50).",
        },
        "thread_ts": {
            "type": "string",
            "pattern": r"^[0-9]+\.[0-9]+$",
            "description": "Timestamp (ts) of a parent message: the message is posted as a "
            "reply in that thread.",
        },
        "username": {
            "type": "string",
            "minLength": 1,
            "maxLength": 80,
            "description": "Display name override. Only legacy custom-integration webhooks "
            "honour it; Slack-app webhooks always post as the app.",
        },
        "icon_emoji": {
            "type": "string",
            "pattern": r"^:[a-z0-9_+'-]+:$",
            "description": "Emoji icon override such as :rocket:. Only legacy "
            "custom-integration webhooks honour it; Slack-app webhooks use the app icon.",
        },
    },
}

CREDENTIALS_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["webhook_url"],
    "additionalProperties": False,
    "properties": {
        "webhook_url": {
            "type": "string",
            "format": "uri",
            "pattern": "^https?://",
            "writeOnly": True,
            "title": "Webhook URL",
            "examples": [
                "https://hooks.slack.com/services/T00000000/B00000000/XXXXXXXXXXXXXXXXXXXXXXXX"
            ],
            "description": "The incoming webhook URL from your Slack app "
            "(https://hooks.slack.com/services/T.../B.../...). Anyone with it can post to the "
            "channel.",
        }
    },
}


@hookimpl
def describe_schema() -> list[dict[str, Any]]:
    return [
        {
            "name": "slack",
            "title": "Slack",
            "description": "Post messages to a Slack channel through an incoming webhook.",
            "icon": ICON,
            "categories": ["communication", "chat"],
            "cooperative": True,  # every wait goes through context.http, bounded by the step deadline
            "docs_url": "https://api.slack.com/messaging/webhooks",
            "endpoint_field": "webhook_url",
            "kernel": ">=0.1,<1",
            "credentials": CREDENTIALS_SCHEMA,
            "actions": {
                "post_message": {
                    "title": "Post a message",
                    "description": "Post text and/or Block Kit blocks to the webhook's channel, "
                    "optionally as a reply in a thread.",
                    "payload": PAYLOAD_SCHEMA,
                    "output": {
                        "type": "object",
                        "required": ["ok"],
                        "properties": {
                            "ok": {"type": "boolean", "description": "Slack accepted the message"}
                        },
                    },
                    "example": {"text": "New order {{ trigger.order_id }} from {{ trigger.name }}"},
                    "price": 1,
                    "minutes_saved": 1,
                    "idempotent": False,
                    "writes": True,
                }
            },
        }
    ]


def _problems(payload: Mapping[str, Any]) -> list[str]:
    if not payload.get("text") and not payload.get("blocks"):
        return ["a Slack message needs text, blocks, or both"]
    return []


@hookimpl
def validate_payload(connector: str, action: str, payload: dict[str, Any]) -> list[str] | None:
    if connector != "slack" or action != "post_message":
        return None
    return _problems(payload)


def _allowed_hosts(env: Mapping[str, str]) -> set[str]:
    extra = env.get(ALLOWED_HOSTS_ENV, "") or ""
    return {h.strip().lower().rstrip(".") for h in extra.split(",") if h.strip()}


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def webhook_url(credentials: Mapping[str, Any] | None, env: Mapping[str, str]) -> str:
    """The checked webhook URL from ``credentials``, or a :class:`CredentialError`.

    Error messages name the host at most, never the path (the path is the secret).
    """
    url = credentials.get("webhook_url") if isinstance(credentials, Mapping) else None
    if not isinstance(url, str) or not url.strip():
        raise CredentialError(
            "a Slack incoming webhook URL (webhook_url) is required", code="missing_credentials"
        )
    url = url.strip()
    try:
        parts = urlsplit(url)
        host = (parts.hostname or "").lower().rstrip(".")
    except ValueError:
        raise CredentialError("the Slack webhook URL is not a valid URL") from None
    if parts.username or parts.password:
        raise CredentialError("the Slack webhook URL must not contain a user name or password")
    if host == SLACK_HOST:
        try:
            port = parts.port
        except ValueError:
            port = -1
        if (
            parts.scheme != "https"
            or port not in (None, 443)
            or not _SLACK_PATH.fullmatch(parts.path)
            or parts.query
            or parts.fragment
        ):
            raise CredentialError(
                "the Slack webhook URL must look like https://hooks.slack.com/services/T.../B.../..."
            )
    elif host and host in _allowed_hosts(env):
        if parts.scheme == "http" and not _is_loopback(host):
            raise CredentialError(
                "the Slack webhook URL must use https (plain http only to a loopback host)"
            )
        if parts.scheme not in ("http", "https"):
            raise CredentialError("the Slack webhook URL must be an https URL")
    else:
        shown = redact(host, [url, parts.path]) if host else "(none)"
        raise CredentialError(
            f"the Slack webhook URL must be on {SLACK_HOST}, not {shown}; an operator can "
            f"allow another host with {ALLOWED_HOSTS_ENV}",
            code="host_not_allowed",
        )
    return url


@hookimpl(optionalhook=True)  # kernel 0.1 has no such hook: the connector still loads there
def validate_credentials(
    connector: str, credentials: dict[str, Any], env: Mapping[str, str]
) -> dict[str, str] | None:
    """The webhook URL rules, checked when the credential is saved."""
    if connector != "slack":
        return None
    try:
        webhook_url(credentials, env)
    except CredentialError as e:
        return {"webhook_url": e.message}
    return {}


def _message(payload: Mapping[str, Any]) -> dict[str, Any]:
    body: dict[str, Any] = {}
    for key in ("text", "blocks", "thread_ts", "username", "icon_emoji"):
        value = payload.get(key)
        if value not in (None, "", []):
            body[key] = value
    return body


@hookimpl
def run_task(
    connector: str,
    action: str,
    payload: dict[str, Any],
    credentials: dict[str, Any] | None,
    context: StepContext,
) -> dict[str, Any]:
    if action != "post_message":
        raise PayloadError(f"slack has no action {action!r}")
    url = webhook_url(credentials, context.env)
    problems = _problems(payload or {})
    if problems:
        raise PayloadError(problems[0])

    seen: dict[str, str] = {}

    def detail(resp: requests.Response) -> str:
        text = resp.text.strip()
        code = text.splitlines()[0].strip() if text else ""
        if code in ERRORS:
            seen["code"] = code
            return f"{code} ({ERRORS[code][0]})"
        if _CODE.fullmatch(code):
            seen["code"] = code
            return code
        return text[:200]

    try:
        resp = context.http.request(
            "POST",
            url,
            guard=True,
            json=_message(payload),
            secrets=[url],
            service="Slack",
            detail=detail,
            allow_redirects=False,
        )
    except ConnectorError as e:
        code = seen.get("code")
        if e.retryable or code is None:
            raise
        cls = ERRORS[code][1] if code in ERRORS else type(e)
        raise cls(e.message, status=e.status, code=code) from None
    if resp.status_code != 200 or resp.text.strip() != "ok":
        ctype = resp.headers.get("Content-Type", "no content type")
        raise PermanentError(
            f"Slack answered HTTP {resp.status_code} ({ctype}) without the expected 'ok' body; "
            "the message may not have been posted",
            status=resp.status_code,
            code="malformed_response",
        )
    return {"ok": True}
