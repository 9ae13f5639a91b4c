"""Levqor connector for Slack: post messages, start pipelines on new messages in a channel.

Two kinds of credential (``CREDENTIALS_SCHEMA`` is ``anyOf`` both):

* an incoming webhook URL (posts to the one channel it was made for);
* a connected Slack app (OAuth2, Slack's v2 flow, ``oauth2`` in the description): a bot token
  (``xoxb-``) used as ``Authorization: Bearer`` for ``chat.postMessage`` to any channel and
  ``auth.test``; ``oauth_credentials`` keeps the workspace (``team_id``, ``team_name``) and the
  bot's user id from the token answer.

The trigger ``new_message`` is instant through Slack's Events API. A Slack app has exactly one
Request URL, so the webhook is connector-wide (``<base>/hooks/apps/slack``): the operator sets it
once in the app's settings, every delivery is verified with the app's signing secret
(``LEVQOR_SLACK_SIGNING_SECRET``), and each item carries the route ``{"team", "channel"}`` that
decides which enabled pipelines it starts. ``register_trigger`` therefore calls nothing upstream:
it answers with the route; ``unregister_trigger`` has nothing to remove upstream (the host drops
the route). See :func:`receive_delivery` for what becomes an item.

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

import hashlib
import hmac
import ipaddress
import re
import time
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
    RetryableError,
    SignatureError,
)
from levqor_kernel.http import redact
from levqor_kernel.oauth import OAUTH2_CREDENTIALS, bearer, is_oauth
from levqor_kernel.triggers import Delivery, DeliveryResult, TriggerItem

__version__ = "0.1.0"

SLACK_HOST = "hooks.slack.com"
ALLOWED_HOSTS_ENV = "LEVQOR_SLACK_ALLOWED_HOSTS"
SIGNING_SECRET_ENV = "LEVQOR_SLACK_SIGNING_SECRET"
#: The Web API's base (methods are ``{base}/api/<method>``); ``LEVQOR_SLACK_API_BASE`` overrides.
DEFAULT_API_BASE = "https://slack.com"
#: How old a signed delivery may be (Slack's guidance: five minutes), in seconds.
MAX_DELIVERY_AGE = 300
#: Message subtypes that are still a person's message (the rest: joins, edits, bots, ...).
PERSON_SUBTYPES = ("file_share", "thread_broadcast")
BOT_SCOPES = ["chat:write", "chat:write.public", "channels:history", "groups:history"]

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
_SCOPES = re.compile(r"[a-z][a-z0-9_:.,-]{1,200}")
_STAMP = re.compile(r"[0-9]{1,12}")

PAYLOAD_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "channel": {
            "type": "string",
            "minLength": 1,
            "maxLength": 100,
            "description": "Where to post with a connected Slack app: a channel ID (C0123456789, "
            "from the channel's details) or name (#general). Required with a Slack app; an "
            "incoming webhook always posts to its own channel (only legacy custom-integration "
            "webhooks honour this).",
        },
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

WEBHOOK_URL_FIELD: dict[str, Any] = {
    "type": "string",
    "format": "uri",
    "pattern": "^https?://",
    "writeOnly": True,
    "title": "Webhook URL",
    "examples": ["https://hooks.slack.com/services/T00000000/B00000000/XXXXXXXXXXXXXXXXXXXXXXXX"],
    "description": "The incoming webhook URL from your Slack app "
    "(https://hooks.slack.com/services/T.../B.../...). Anyone with it can post to the channel.",
}

WEBHOOK_CREDENTIALS: dict[str, Any] = {
    "type": "object",
    "title": "Incoming webhook",
    "description": "Posts to the one channel the webhook was made for.",
    "required": ["webhook_url"],
    "additionalProperties": False,
    "properties": {"webhook_url": WEBHOOK_URL_FIELD},
}

SLACK_APP_CREDENTIALS: dict[str, Any] = {
    **OAUTH2_CREDENTIALS,
    "title": "Slack app (Connect)",
    "description": "A bot token from connecting the operator's Slack app to a workspace: posts "
    "to any channel and receives messages (trigger new_message).",
    "properties": {
        **OAUTH2_CREDENTIALS["properties"],
        "team_id": {"type": "string", "description": "The workspace's id (T...)"},
        "team_name": {"type": "string", "description": "The workspace's name"},
        "bot_user_id": {"type": "string", "description": "The app's bot user (U...)"},
        "app_id": {"type": "string"},
        "enterprise_id": {"type": "string", "description": "The Enterprise Grid org, if any"},
    },
}

#: Either credential. ``webhook_url`` is also described at the top level: it is the
#: ``endpoint_field`` (the connector check points it at its fake).
CREDENTIALS_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"webhook_url": WEBHOOK_URL_FIELD},
    "anyOf": [WEBHOOK_CREDENTIALS, SLACK_APP_CREDENTIALS],
}

OAUTH2: dict[str, Any] = {
    "title": "Connect Slack",
    "authorization_url": "https://slack.com/oauth/v2/authorize",
    "token_url": "https://slack.com/api/oauth.v2.access",
    "scopes": BOT_SCOPES,
    "scope_separator": ",",
    # Slack's PKCE marks an app a public client (one way, no client secret); a server with
    # a client secret does not need it
    "pkce": False,
    "client_auth": "body",
    "account": "/team/name",
}

TRIGGER_CONFIG: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "channel": {
            "type": "string",
            "pattern": r"^[CG][A-Z0-9]{2,20}$",
            "title": "Channel ID",
            "description": "Only messages in this channel: its ID (C0123456789, at the bottom of "
            "the channel's details). Empty: every channel the app is in. Invite the app to "
            "the channel (/invite @your-app) so Slack sends it the messages.",
        }
    },
}

TRIGGER_OUTPUT: dict[str, Any] = {
    "type": "object",
    "required": ["team_id", "channel", "user", "text", "ts", "event_id"],
    "properties": {
        "team_id": {"type": "string", "description": "The workspace (T...)"},
        "channel": {"type": "string", "description": "The channel's ID: post back with it"},
        "channel_type": {"type": "string", "description": "channel (public) or group (private)"},
        "user": {"type": "string", "description": "Who wrote it (U...)"},
        "text": {"type": "string", "description": "The message text (Slack mrkdwn)"},
        "ts": {
            "type": "string",
            "description": "The message's timestamp id: reply in its thread with thread_ts",
        },
        "thread_ts": {
            "type": ["string", "null"],
            "description": "The thread's parent ts when the message is a reply",
        },
        "subtype": {"type": ["string", "null"], "description": "file_share, thread_broadcast"},
        "event_id": {"type": "string", "description": "Slack's id of the event (Ev...)"},
        "event_time": {"type": "integer", "description": "Unix time of the event"},
    },
}

TRIGGER_SAMPLE: dict[str, Any] = {
    "team_id": "T0123456789",
    "channel": "C0123456789",
    "channel_type": "channel",
    "user": "U0123456789",
    "text": "Can someone deploy api to production?",
    "ts": "1717000000.000100",
    "thread_ts": None,
    "subtype": None,
    "event_id": "Ev0123456789",
    "event_time": 1717000000,
}


@hookimpl
def describe_schema() -> list[dict[str, Any]]:
    return [
        {
            "name": "slack",
            "title": "Slack",
            "description": "Post messages to Slack channels (incoming webhook or a connected "
            "Slack app) and start pipelines on new messages in a channel.",
            "icon": ICON,
            "categories": ["communication", "chat"],
            "cooperative": True,  # every wait goes through context.http, bounded by the step deadline
            "docs_url": "https://api.slack.com/messaging/webhooks",
            "endpoint_field": "webhook_url",
            "kernel": ">=0.3,<1",
            "credentials": CREDENTIALS_SCHEMA,
            "oauth2": OAUTH2,
            "triggers": {
                "new_message": {
                    "title": "New message in a channel",
                    "description": "Starts a run for every message people post in a channel "
                    "the Slack app is in (Events API). Bot messages, edits, joins and other "
                    "system messages start nothing. Needs a connected Slack app and the "
                    "operator's Events URL and signing secret.",
                    "kind": "instant",
                    "webhook": "connector",
                    "config": TRIGGER_CONFIG,
                    "output": TRIGGER_OUTPUT,
                    "sample": TRIGGER_SAMPLE,
                    "example": {"channel": "C0123456789"},
                }
            },
            "actions": {
                "post_message": {
                    "title": "Post a message",
                    "description": "Post text and/or Block Kit blocks: with a connected Slack "
                    "app to any channel (chat.postMessage), with an incoming webhook to its "
                    "channel; optionally as a reply in a thread.",
                    "payload": PAYLOAD_SCHEMA,
                    "output": {
                        "type": "object",
                        "required": ["ok"],
                        "properties": {
                            "ok": {"type": "boolean", "description": "Slack accepted the message"},
                            "channel": {
                                "type": "string",
                                "description": "The channel's ID (Slack app only)",
                            },
                            "ts": {
                                "type": "string",
                                "description": "The message's ts, for replies in its thread "
                                "(Slack app only; webhooks return none)",
                            },
                        },
                    },
                    "example": {
                        "channel": "#general",
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
    if is_oauth(credentials):
        return {}  # made by Connect, not typed in
    try:
        webhook_url(credentials, env)
    except CredentialError as e:
        return {"webhook_url": e.message}
    return {}


def _message(payload: Mapping[str, Any]) -> dict[str, Any]:
    body: dict[str, Any] = {}
    for key in ("channel", "text", "blocks", "thread_ts", "username", "icon_emoji"):
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
    if is_oauth(credentials):
        return _post_as_app(payload or {}, credentials, context)
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


# ------------------------------------------------------------------ Web API (a connected app)

#: Web API error codes (HTTP 200, ``{"ok": false, "error": ...}``): meaning and class. Codes
#: mapped to a ``CredentialError`` with status 401 make the host refresh the token once (token
#: rotation) and, when that fails too, flag the credential.
API_ERRORS: dict[str, tuple[str, type[ConnectorError], int | None]] = {
    "not_authed": ("no token was sent", CredentialError, 401),
    "invalid_auth": ("the token is not valid: connect Slack again", CredentialError, 401),
    "token_revoked": (
        "the app was removed or the token revoked: connect again",
        CredentialError,
        401,
    ),
    "token_expired": ("the access token expired", CredentialError, 401),
    "account_inactive": ("the bot or workspace was deactivated", CredentialError, 401),
    "missing_scope": ("the app lacks a permission (scope): connect again", CredentialError, 403),
    "not_allowed_token_type": ("this needs a bot token", CredentialError, 403),
    "ekm_access_denied": ("the workspace's keys deny access", CredentialError, 403),
    "not_in_channel": (
        "the app is not in the channel: invite it (/invite @your-app); public channels need "
        "the chat:write.public scope otherwise",
        PermanentError,
        403,
    ),
    "channel_not_found": ("no such channel, or the app cannot see it", PayloadError, 404),
    "is_archived": ("the channel is archived", PermanentError, 410),
    "restricted_action": ("the workspace does not let the app post there", PermanentError, 403),
    "msg_too_long": ("the message text is too long", PayloadError, 400),
    "no_text": ("the message needs text or blocks", PayloadError, 400),
    "invalid_blocks": ("the blocks are not valid Block Kit", PayloadError, 400),
    "invalid_blocks_format": ("the blocks are not a valid Block Kit array", PayloadError, 400),
    "too_many_attachments": ("the message has too many attachments", PayloadError, 400),
    "invalid_arguments": ("Slack refused the arguments", PayloadError, 400),
    "ratelimited": ("rate limited", RetryableError, 429),
    "internal_error": ("Slack had an internal error", RetryableError, 500),
    "fatal_error": ("Slack had a fatal error", RetryableError, 500),
    "service_unavailable": ("Slack is unavailable", RetryableError, 503),
    "request_timeout": ("Slack timed out", RetryableError, 504),
}


def _api_code(resp: requests.Response) -> str | None:
    try:
        data = resp.json()
    except ValueError:
        return None
    code = data.get("error") if isinstance(data, dict) else None
    return code if isinstance(code, str) and _CODE.fullmatch(code) else None


def api_error(
    code: str, *, status: int | None = None, needed: Any = None, retry_after: float | None = None
) -> ConnectorError:
    """The error for a Web API ``error`` code (unknown codes: permanent, named)."""
    meaning, cls, default_status = API_ERRORS.get(code, ("", PermanentError, None))
    msg = f"Slack answered {code}" + (f" ({meaning})" if meaning else "")
    if code == "missing_scope" and isinstance(needed, str) and _SCOPES.fullmatch(needed):
        msg += f"; it needs {needed}"
    return cls(msg, status=default_status or status, code=code, retry_after=retry_after)


def web_api(
    context: StepContext, credentials: Mapping[str, Any] | None, method: str, body: dict[str, Any]
) -> dict[str, Any]:
    """POST ``body`` (JSON) to Web API ``method`` with the bot token; the answer when ``ok``."""
    token = bearer(credentials)
    base, guarded = context.api_base("slack", DEFAULT_API_BASE)
    seen: dict[str, str] = {}

    def detail(resp: requests.Response) -> str | None:
        code = _api_code(resp)
        if code:
            seen["code"] = code
        return code

    try:
        resp = context.http.request(
            "POST",
            f"{base}/api/{method}",
            guard=guarded,
            json=body,
            headers={"Authorization": f"Bearer {token}"},
            secrets=[token],
            service="Slack",
            detail=detail,
            allow_redirects=False,
        )
    except ConnectorError as e:
        code = seen.get("code")
        if e.retryable or code not in API_ERRORS:
            raise
        meaning, cls, _status = API_ERRORS[code]
        if e.status in (401, 403):
            cls = CredentialError
        raise cls(f"{e.message} ({meaning})", status=e.status, code=code) from None
    data = context.http.json(resp, service="Slack")
    if not isinstance(data, dict) or not isinstance(data.get("ok"), bool):
        raise PermanentError(
            f"Slack's {method} answered HTTP {resp.status_code} without an ok field",
            status=resp.status_code,
            code="malformed_response",
        )
    if data["ok"] is not True:
        code = data.get("error") if isinstance(data.get("error"), str) else "unknown_error"
        code = code if _CODE.fullmatch(code) else "unknown_error"
        raise api_error(code, status=resp.status_code, needed=data.get("needed"))
    return data


def _post_as_app(
    payload: Mapping[str, Any], credentials: Mapping[str, Any], context: StepContext
) -> dict[str, Any]:
    problems = _problems(payload)
    if problems:
        raise PayloadError(problems[0])
    channel = payload.get("channel")
    if not isinstance(channel, str) or not channel.strip():
        raise PayloadError(
            "channel is required when posting with a connected Slack app (an ID like "
            "C0123456789, or #name)"
        )
    body = _message(payload)
    body["channel"] = channel.strip()
    body.pop("username", None)  # apps post as themselves unless they hold chat:write.customize
    body.pop("icon_emoji", None)
    data = web_api(context, credentials, "chat.postMessage", body)
    if not isinstance(data.get("ts"), str) or not isinstance(data.get("channel"), str):
        raise PermanentError(
            "Slack's chat.postMessage answered ok without the message's channel and ts",
            code="malformed_response",
        )
    return {"ok": True, "channel": data["channel"], "ts": data["ts"]}


@hookimpl
def check_credentials(
    connector: str, credentials: dict[str, Any], context: StepContext
) -> dict[str, Any] | None:
    """A connected app: ``auth.test`` (read-only). An incoming webhook has no read-only
    endpoint (None: no check)."""
    if connector != "slack" or not is_oauth(credentials):
        return None
    data = web_api(context, credentials, "auth.test", {})
    team = data.get("team") if isinstance(data.get("team"), str) else data.get("team_id")
    return {
        "ok": True,
        "account": team,
        "team_id": data.get("team_id"),
        "user_id": data.get("user_id"),
        "bot_id": data.get("bot_id"),
    }


@hookimpl
def oauth_credentials(
    connector: str, token: dict[str, Any], context: StepContext
) -> dict[str, Any] | None:
    """From Slack's ``oauth.v2.access`` answer: the workspace (``team.id``/``team.name``, the
    account shown), the bot's user id and the app id. A refresh answer without them keeps the
    earlier values (the host merges)."""
    if connector != "slack":
        return None
    out: dict[str, Any] = {}
    team = token.get("team")
    if isinstance(team, Mapping):
        if isinstance(team.get("id"), str):
            out["team_id"] = team["id"]
        if isinstance(team.get("name"), str):
            out["team_name"] = out["account"] = team["name"]
    enterprise = token.get("enterprise")
    if isinstance(enterprise, Mapping) and isinstance(enterprise.get("id"), str):
        out["enterprise_id"] = enterprise["id"]
        if "account" not in out and isinstance(enterprise.get("name"), str):
            out["account"] = enterprise["name"]
    for key in ("bot_user_id", "app_id"):
        if isinstance(token.get(key), str):
            out[key] = token[key]
    return out


# ------------------------------------------------------------------ trigger: new_message


def _check_trigger(trigger: str | None) -> None:
    if trigger not in (None, "new_message"):
        raise PermanentError(f"slack has no trigger {trigger!r}", code="unknown_trigger")


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
    """No upstream call: Slack sends every event of the app to its one Request URL (the
    connector-wide ``webhook_url``, set once by the operator). The registration is the route
    the items must contain: the credential's workspace and, when configured, the channel."""
    _check_trigger(trigger)
    if not is_oauth(credentials):
        raise CredentialError(
            "the trigger new_message needs a connected Slack app (Connect); an incoming "
            "webhook can only post",
            code="needs_slack_app",
        )
    team = credentials.get("team_id") if credentials else None
    if not isinstance(team, str) or not team:
        raise CredentialError(
            "this Slack credential does not name its workspace (team_id): connect Slack again",
            code="missing_team",
        )
    route = {"team": team}
    channel = (config or {}).get("channel")
    if isinstance(channel, str) and channel:
        route["channel"] = channel
    return {"route": route}


@hookimpl
def unregister_trigger(
    connector: str,
    trigger: str,
    config: dict[str, Any],
    credentials: dict[str, Any] | None,
    registration: dict[str, Any],
    context: StepContext,
) -> None:
    """Nothing to remove upstream: the app keeps its Request URL; the host drops the route."""
    _check_trigger(trigger)


def verify_signature(
    delivery: Delivery, signing_secret: str | None, now: float | None = None
) -> None:
    """Slack's request signing (v0): ``X-Slack-Signature`` must be ``v0=`` + the hex HMAC-SHA256
    of ``v0:<X-Slack-Request-Timestamp>:<raw body>`` under the app's signing secret, and the
    timestamp within five minutes of now; :class:`SignatureError` otherwise."""
    stamp = (delivery.header("X-Slack-Request-Timestamp") or "").strip()
    signature = (delivery.header("X-Slack-Signature") or "").strip()
    if not stamp or not signature:
        raise SignatureError(
            "the delivery has no X-Slack-Signature and X-Slack-Request-Timestamp headers"
        )
    if not signing_secret:
        raise SignatureError(
            "Slack deliveries cannot be verified: the operator has not set "
            f"{SIGNING_SECRET_ENV} (the Slack app's Signing Secret, under Basic Information)",
            code="not_configured",
        )
    if not _STAMP.fullmatch(stamp):
        raise SignatureError("X-Slack-Request-Timestamp is not a Unix time")
    if abs((time.time() if now is None else now) - int(stamp)) > MAX_DELIVERY_AGE:
        raise SignatureError(
            "the delivery's timestamp is more than five minutes old (or ahead): refused as a "
            "possible replay",
            code="stale_timestamp",
        )
    base = b"v0:" + stamp.encode() + b":" + delivery.body
    expected = "v0=" + hmac.new(signing_secret.encode(), base, hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected.encode(), signature.encode()):
        raise SignatureError("the delivery's X-Slack-Signature does not verify")


def message_item(envelope: Mapping[str, Any]) -> TriggerItem | None:
    """The item an ``event_callback`` carries: a ``message`` a person posted. Messages from bots
    (``bot_id``, ``bot_message``; Levqor's own posts among them, so a pipeline never triggers
    itself) and system subtypes (joins, topic changes, edits, deletions) carry none; file
    shares and thread broadcasts are a person's messages and do."""
    event = envelope.get("event")
    team = envelope.get("team_id")
    if (
        not isinstance(event, Mapping)
        or event.get("type") != "message"
        or not isinstance(team, str)
    ):
        return None
    subtype = event.get("subtype")
    if subtype is not None and subtype not in PERSON_SUBTYPES:
        return None
    if event.get("bot_id") or event.get("bot_profile"):
        return None
    channel, ts, user = event.get("channel"), event.get("ts"), event.get("user")
    if not all(isinstance(v, str) and v for v in (channel, ts, user)):
        return None
    event_time = envelope.get("event_time")
    data = {
        "team_id": team,
        "channel": channel,
        "channel_type": event.get("channel_type")
        if isinstance(event.get("channel_type"), str)
        else "channel",
        "user": user,
        "text": event.get("text") if isinstance(event.get("text"), str) else "",
        "ts": ts,
        "thread_ts": event.get("thread_ts") if isinstance(event.get("thread_ts"), str) else None,
        "subtype": subtype,
        "event_id": envelope.get("event_id") if isinstance(envelope.get("event_id"), str) else "",
        "event_time": event_time
        if isinstance(event_time, int) and not isinstance(event_time, bool)
        else 0,
    }
    # the message's identity: one run per message even if Slack sends it as two events
    return TriggerItem(
        id=f"{team}:{channel}:{ts}", data=data, route={"team": team, "channel": channel}
    )


@hookimpl
def receive_delivery(
    connector: str,
    trigger: str | None,
    config: dict[str, Any] | None,
    delivery: Delivery,
    registration: dict[str, Any] | None,
    context: StepContext,
) -> DeliveryResult:
    """One Events API request to ``<base>/hooks/apps/slack``: the signature first; a
    ``url_verification`` is answered with its challenge (Slack checks the Request URL with it);
    an ``event_callback`` gives at most one item (:func:`message_item`), named by its
    ``event_id`` so Slack's retries (``X-Slack-Retry-Num``) start nothing twice; other types
    (``app_rate_limited``) give none."""
    _check_trigger(trigger)
    verify_signature(delivery, context.env.get(SIGNING_SECRET_ENV))
    body = delivery.json()
    if not isinstance(body, Mapping) or not isinstance(body.get("type"), str):
        raise PermanentError(
            "the delivery is not a Slack Events API request (no type)", status=400, code="bad_body"
        )
    if body["type"] == "url_verification":
        challenge = body.get("challenge")
        if not isinstance(challenge, str) or not challenge or len(challenge) > 200:
            raise PermanentError(
                "url_verification without a challenge", status=400, code="bad_body"
            )
        return DeliveryResult(response=(200, {"challenge": challenge}, {}))
    if body["type"] != "event_callback":
        return DeliveryResult()
    event_id = body.get("event_id")
    if not isinstance(event_id, str) or not event_id or len(event_id) > 200:
        raise PermanentError("an event_callback without an event_id", status=400, code="bad_body")
    item = message_item(body)
    return DeliveryResult(items=[item] if item else [], delivery_id=event_id)
