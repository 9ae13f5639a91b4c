"""Levqor connector ``gmail``: send email through Resend or the Gmail API, and start pipelines from
new email matching a Gmail search.

The credential decides the transport: ``{"resend_api_key"}`` sends with Resend's
``POST /emails`` (with ``Idempotency-Key`` so a retry never sends twice); a connected Google
account (OAuth2, ``auth: "oauth2"``, refreshed by the host) or a raw ``{"google_access_token"}``
sends with Gmail's ``users.messages.send`` (a base64url RFC 5322 message built with the
``email`` package). The ``new_email`` trigger polls ``users.history.list`` from the last history
id seen and keeps the new messages that ``users.messages.list`` lists for the search. See
README.md.
"""

from __future__ import annotations

import base64
import email.policy
import email.utils
import hashlib
import time
from collections.abc import Mapping
from email.errors import HeaderParseError
from email.message import EmailMessage
from typing import Any
from urllib.parse import quote

import requests
from levqor_kernel import Poll, StepContext, TriggerItem, hookimpl
from levqor_kernel.errors import (
    ConnectorError,
    CredentialError,
    PayloadError,
    PermanentError,
    RetryableError,
)
from levqor_kernel.http import error_for_response, parse_retry_after
from levqor_kernel.oauth import OAUTH2_CREDENTIALS, bearer, is_oauth

__all__ = [
    "RESEND_BASE",
    "GMAIL_BASE",
    "describe_schema",
    "validate_payload",
    "run_task",
    "check_credentials",
    "poll_trigger",
    "oauth_credentials",
    "build_mime",
    "transport_for",
    "SEND_SCOPE",
    "READ_SCOPE",
]

RESEND_BASE = "https://api.resend.com"
GMAIL_BASE = "https://gmail.googleapis.com"
MAX_RECIPIENTS = 50
SEND_SCOPE = "https://www.googleapis.com/auth/gmail.send"
READ_SCOPE = "https://www.googleapis.com/auth/gmail.readonly"
#: history records one poll reads at most (pages of 500); the rest come on the next poll
MAX_HISTORY_PAGES = 4
#: how many of the newest search results a new message must be among to match (pages of 500)
MAX_SEARCH_PAGES = 2
#: messages the first poll hands back as samples (seen, never run)
SAMPLE_MESSAGES = 3
#: after a too-old history id: the newest matching messages looked at, and how far before the
#: last poll (ms) one may have arrived and still start a run
FALLBACK_MESSAGES = 25
FALLBACK_SKEW_MS = 10 * 60 * 1000
#: the longest body text a new_email item carries (characters)
MAX_BODY = 20_000
#: labels that never make a message "new email"
_SKIP_LABELS = {"DRAFT", "SPAM", "TRASH"}

ICON = (
    "data:image/svg+xml,%3Csvg xmlns='http://www.w3.org/2000/svg' viewBox='0 0 24 24'%3E"
    "%3Crect x='2' y='5' width='20' height='14' rx='2' fill='%23fff' stroke='%23c5221f' stroke-width='2'/%3E"
    "%3Cpath d='M3 6l9 7 9-7' fill='none' stroke='%23c5221f' stroke-width='2'/%3E%3C/svg%3E"
)

_NO_NEWLINE = r"^[^\r\n]*$"
_ADDRESS = {"type": "string", "minLength": 3, "maxLength": 320, "pattern": _NO_NEWLINE}


def _addresses(desc: str, *, min_items: int = 0) -> dict[str, Any]:
    return {
        "description": desc,
        "anyOf": [
            {**_ADDRESS, "description": "one address"},
            {
                "type": "array",
                "minItems": max(1, min_items),
                "maxItems": MAX_RECIPIENTS,
                "items": _ADDRESS,
                "description": "several addresses",
            },
        ],
    }


PAYLOAD_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["from", "to", "subject"],
    "additionalProperties": False,
    "properties": {
        "from": {
            **_ADDRESS,
            "description": 'Sender, "Name <you@example.com>" or an address. With Resend it must be on a '
            "verified domain; with Gmail it must be the account or one of its send-as aliases",
        },
        "to": _addresses("Recipient address, or a list of up to 50", min_items=1),
        "cc": _addresses("Cc address or list"),
        "bcc": _addresses("Bcc address or list"),
        "reply_to": _addresses("Reply-To address or list"),
        "subject": {
            "type": "string",
            "minLength": 1,
            "maxLength": 998,
            "pattern": _NO_NEWLINE,
            "description": "Subject line",
        },
        "text": {"type": "string", "maxLength": 1_000_000, "description": "Plain-text body"},
        "html": {"type": "string", "maxLength": 1_000_000, "description": "HTML body"},
    },
}

OUTPUT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["id", "transport"],
    "properties": {
        "id": {"type": "string", "description": "The provider's message id"},
        "transport": {
            "type": "string",
            "enum": ["resend", "gmail"],
            "description": "Which API sent it",
        },
        "thread_id": {"type": "string", "description": "Gmail thread id (Gmail transport only)"},
    },
}

CREDENTIALS_SCHEMA: dict[str, Any] = {
    "type": "object",
    "oneOf": [
        {
            "title": "Resend",
            "description": "Send through Resend (retries never send twice: Levqor sends an Idempotency-Key)",
            "type": "object",
            "required": ["resend_api_key"],
            "additionalProperties": False,
            "properties": {
                "resend_api_key": {
                    "type": "string",
                    "minLength": 8,
                    "pattern": r"^\S+$",
                    "writeOnly": True,
                    "title": "Resend API key",
                    "description": "A Resend API key (re_...), sending access is enough",
                },
                "api_base": {
                    "type": "string",
                    "format": "uri",
                    "title": "API base URL",
                    "description": "Only for a Resend-compatible proxy; defaults to https://api.resend.com",
                },
            },
        },
        {
            "title": "Gmail API",
            "description": "Send as a Google account with an OAuth access token (scope gmail.send) "
            "you obtained yourself; it expires within the hour: prefer Connect",
            "type": "object",
            "required": ["google_access_token"],
            "additionalProperties": False,
            "properties": {
                "google_access_token": {
                    "type": "string",
                    "minLength": 8,
                    "pattern": r"^\S+$",
                    "writeOnly": True,
                    "title": "Google OAuth access token",
                    "description": "An access token with the https://www.googleapis.com/auth/gmail.send scope",
                },
            },
        },
        {
            **OAUTH2_CREDENTIALS,
            "title": "Google account (Connect)",
            "description": "A Gmail account connected with Connect: sends, and reads new mail "
            "for the new_email trigger; Levqor refreshes its access token",
        },
    ],
}


_LABEL = {
    "type": "string",
    "minLength": 1,
    "maxLength": 200,
    "pattern": r"^[^\r\n]*$",
    "description": "Only messages with this label id (INBOX, UNREAD, IMPORTANT, CATEGORY_UPDATES, "
    "or a user label's id such as Label_12); for a label by its name, put label:<name> in q",
}

NEW_EMAIL_CONFIG: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "q": {
            "type": "string",
            "maxLength": 1000,
            "pattern": r"^[^\r\n]*$",
            "default": "",
            "description": "A Gmail search, as typed in Gmail's search box (from:billing@acme.com "
            "subject:invoice has:attachment); empty: every new message",
        },
        "label": _LABEL,
        "include_body": {
            "type": "boolean",
            "default": False,
            "description": f"Also fetch the plain-text body (up to {MAX_BODY} characters)",
        },
    },
}

NEW_EMAIL_OUTPUT: dict[str, Any] = {
    "type": "object",
    "required": ["id", "thread_id", "from", "subject", "snippet", "labels"],
    "properties": {
        "id": {"type": "string", "description": "Gmail message id"},
        "thread_id": {"type": "string", "description": "Gmail thread id"},
        "from": {"type": "string", "description": "The From header"},
        "to": {"type": "string", "description": "The To header"},
        "cc": {"type": "string", "description": "The Cc header"},
        "subject": {"type": "string", "description": "The Subject header"},
        "date": {"type": "string", "description": "The Date header"},
        "message_id": {"type": "string", "description": "The Message-ID header"},
        "snippet": {"type": "string", "description": "A short part of the message text"},
        "labels": {"type": "array", "items": {"type": "string"}, "description": "Label ids"},
        "internal_date": {
            "type": "integer",
            "description": "When Gmail received it, milliseconds since the epoch",
        },
        "history_id": {"type": "string", "description": "The message's last history id"},
        "body": {"type": "string", "description": "The plain-text body (include_body only)"},
    },
}

OAUTH2: dict[str, Any] = {
    "authorization_url": "https://accounts.google.com/o/oauth2/v2/auth",
    "token_url": "https://oauth2.googleapis.com/token",
    "scopes": [SEND_SCOPE, READ_SCOPE],
    "scope_separator": " ",
    "pkce": True,
    # offline + consent: Google issues a refresh token (again, on every Connect)
    "extra_params": {
        "access_type": "offline",
        "prompt": "consent",
        "include_granted_scopes": "true",
    },
    "client_auth": "body",
    "title": "Connect Gmail",
}


@hookimpl
def describe_schema() -> list[dict[str, Any]]:
    return [
        {
            "name": "gmail",
            "title": "Email (Gmail / Resend)",
            "description": "Send email through Resend or a Gmail account, and start pipelines "
            "from new email matching a Gmail search.",
            "icon": ICON,
            "categories": ["communication", "email"],
            "cooperative": True,  # every wait goes through context.http, bounded by the step deadline
            "docs_url": "https://developers.google.com/workspace/gmail/api/reference/rest",
            "kernel": ">=0.3,<1",
            "credentials": CREDENTIALS_SCHEMA,
            "oauth2": OAUTH2,
            "triggers": {
                "new_email": {
                    "title": "New email matching a search",
                    "description": "Starts a run for each message that arrives in the connected "
                    "Gmail account and matches a Gmail search (and label). Needs a connected Google "
                    "account (scope gmail.readonly).",
                    "kind": "polling",
                    "config": NEW_EMAIL_CONFIG,
                    "output": NEW_EMAIL_OUTPUT,
                    "sample": {
                        "id": "18c2b4f0a1d2e3f4",
                        "thread_id": "18c2b4f0a1d2e3f4",
                        "from": "Acme Billing <billing@acme.example>",
                        "to": "ada@example.com",
                        "subject": "Invoice 2024-117",
                        "date": "Tue, 5 Mar 2024 09:12:44 +0000",
                        "snippet": "Your invoice for March is attached.",
                        "labels": ["INBOX", "UNREAD", "CATEGORY_UPDATES"],
                        "internal_date": 1709629964000,
                        "history_id": "123456",
                    },
                    "example": {"q": "from:billing@acme.example subject:invoice", "label": "INBOX"},
                }
            },
            "actions": {
                "send_email": {
                    "title": "Send an email",
                    "writes": True,
                    "description": "Sends one email (text and/or HTML) with Resend or the Gmail API, "
                    "chosen by the credential. Resend sends are idempotent across retries.",
                    "payload": PAYLOAD_SCHEMA,
                    "output": OUTPUT_SCHEMA,
                    "example": {
                        "from": "Acme <orders@acme.example>",
                        "to": ["ada@example.com", "Grace <grace@example.com>"],
                        "subject": "Order {{ trigger.order_id }} received",
                        "text": "Thanks {{ trigger.name }}, we got your order.",
                    },
                    "price": 1,
                    "minutes_saved": 2,
                }
            },
        }
    ]


# --------------------------------------------------------------------------- payload


def _as_list(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    return list(value)


def _address_ok(value: Any) -> bool:
    if not isinstance(value, str) or "\r" in value or "\n" in value:
        return False
    name, addr = email.utils.parseaddr(value)
    if not addr or "@" not in addr:
        return False
    local, _, domain = addr.rpartition("@")
    return bool(local) and "." in domain and " " not in addr


def _problems(payload: Mapping[str, Any]) -> list[str]:
    out: list[str] = []
    text, html = payload.get("text"), payload.get("html")
    if not (isinstance(text, str) and text) and not (isinstance(html, str) and html):
        out.append("give a text or an html body (or both)")
    if not _address_ok(payload.get("from")):
        out.append(f"from: {payload.get('from')!r} is not an email address")
    for field in ("to", "cc", "bcc", "reply_to"):
        items = _as_list(payload.get(field))
        if field == "to" and not items:
            out.append("to: at least one recipient is required")
        if len(items) > MAX_RECIPIENTS:
            out.append(f"{field}: at most {MAX_RECIPIENTS} addresses")
        for item in items:
            if not _address_ok(item):
                out.append(f"{field}: {item!r} is not an email address")
    subject = payload.get("subject")
    if not isinstance(subject, str) or not subject or "\n" in subject or "\r" in subject:
        out.append("subject: a one-line subject is required")
    return out


@hookimpl
def validate_payload(connector: str, action: str, payload: dict[str, Any]) -> list[str] | None:
    if connector != "gmail" or action != "send_email":
        return None
    return _problems(payload)


def _message_id(idempotency_key: str, sender: str) -> str:
    """A Message-ID stable across retries of one step (recipients' clients collapse duplicates)."""
    domain = email.utils.parseaddr(sender)[1].rpartition("@")[2] or "levqor.invalid"
    digest = hashlib.sha256(idempotency_key.encode()).hexdigest()[:32]
    return f"<{digest}.levqor@{domain}>"


def build_mime(payload: Mapping[str, Any], *, message_id: str | None = None) -> EmailMessage:
    """The RFC 5322 message for a send_email payload (PayloadError when it cannot be built)."""
    msg = EmailMessage(policy=email.policy.SMTP)
    try:
        msg["From"] = payload["from"]
        msg["To"] = ", ".join(_as_list(payload["to"]))
        for field, header in (("cc", "Cc"), ("bcc", "Bcc"), ("reply_to", "Reply-To")):
            items = _as_list(payload.get(field))
            if items:
                msg[header] = ", ".join(items)
        msg["Subject"] = payload["subject"]
        msg["Date"] = email.utils.formatdate(localtime=False, usegmt=True)
        if message_id:
            msg["Message-ID"] = message_id
        text, html = payload.get("text") or "", payload.get("html") or ""
        if text and html:
            msg.set_content(text)
            msg.add_alternative(html, subtype="html")
        elif html:
            msg.set_content(html, subtype="html")
        else:
            msg.set_content(text)
        for header in ("From", "To", "Cc", "Bcc", "Reply-To"):
            if header in msg and getattr(msg[header], "defects", None):
                raise PayloadError(
                    f"{header}: {msg[header]!s} is not a valid address list", code="invalid_payload"
                )
    except (ValueError, TypeError, IndexError, HeaderParseError) as e:
        raise PayloadError(f"cannot build the email: {e}", code="invalid_payload") from None
    return msg


# --------------------------------------------------------------------------- credentials


def transport_for(credentials: Any) -> tuple[str, str]:
    """("resend", key) or ("gmail", token) from the credential; CredentialError otherwise."""
    if not isinstance(credentials, Mapping) or not credentials:
        raise CredentialError(
            "email credentials are missing: give resend_api_key (Resend) or google_access_token (Gmail API)"
        )
    if is_oauth(credentials):  # a connected Google account
        return "gmail", bearer(credentials)
    has_resend = credentials.get("resend_api_key") not in (None, "")
    has_google = credentials.get("google_access_token") not in (None, "")
    if has_resend and has_google:
        raise CredentialError("give either resend_api_key or google_access_token, not both")
    if not has_resend and not has_google:
        raise CredentialError(
            "email credentials need resend_api_key (Resend) or google_access_token (Gmail API)"
        )
    field = "resend_api_key" if has_resend else "google_access_token"
    value = credentials[field]
    if (
        not isinstance(value, str)
        or len(value.strip()) < 8
        or any(c.isspace() for c in value.strip())
    ):
        raise CredentialError(f"{field} is malformed")
    return ("resend" if has_resend else "gmail"), value.strip()


# --------------------------------------------------------------------------- Resend

#: Resend error names that retrying within minutes cannot fix although they come as 429
_RESEND_QUOTA = {"daily_quota_exceeded", "monthly_quota_exceeded"}


def _json_or_none(resp: requests.Response) -> Any:
    try:
        return resp.json()
    except ValueError:
        return None


def _resend_error_body(resp: requests.Response) -> dict[str, Any] | None:
    data = _json_or_none(resp)
    if isinstance(data, dict) and isinstance(data.get("name"), str):
        return data
    return None


def _resend_retry_after(resp: requests.Response) -> float | None:
    ra = parse_retry_after(resp.headers.get("Retry-After"))
    if ra is None:
        ra = parse_retry_after(resp.headers.get("ratelimit-reset"))
    return ra


def _resend_error(resp: requests.Response, secrets: list[str]) -> ConnectorError:
    err = _resend_error_body(resp)
    name = err["name"] if err else None
    detail = f"{name}: {err.get('message') or ''}".strip() if err else resp.text[:300]
    if name == "invalid_idempotent_request":
        detail += " (this step's idempotency key was already used for a different email)"
    base = error_for_response(
        resp,
        detail=detail,
        retry_after=_resend_retry_after(resp),
        secrets=secrets,
        service="Resend",
    )
    status = resp.status_code
    if name == "concurrent_idempotent_requests":  # the first attempt is still being processed
        return RetryableError(
            base.message, status=status, retry_after=base.retry_after or 1.0, code=name
        )
    if name in _RESEND_QUOTA:
        return PermanentError(base.message, status=status, code="quota_exceeded")
    if status == 403 and name not in (
        None,
        "invalid_api_key",
        "missing_api_key",
        "restricted_api_key",
    ):
        # e.g. validation_error "You can only send testing emails to your own email address":
        # the key works, the sender domain is not verified
        return PermanentError(base.message, status=status, code=name)
    if status in (400, 422) and name not in (None, "invalid_idempotency_key"):
        return PayloadError(base.message, status=status, code=name)
    if name and not isinstance(base, (RetryableError, CredentialError)):
        base.code = name
    return base


def _idempotency_key(context: StepContext) -> str:
    key = context.idempotency_key
    # Resend accepts 1-256 characters
    return key if 0 < len(key) <= 256 else "levqor-" + hashlib.sha256(key.encode()).hexdigest()


def _send_resend(
    payload: Mapping[str, Any], key: str, credentials: Mapping[str, Any], context: StepContext
) -> dict:
    base, guarded = context.api_base("resend", RESEND_BASE, credentials)
    body: dict[str, Any] = {
        "from": payload["from"],
        "to": _as_list(payload["to"]),
        "subject": payload["subject"],
    }
    for field in ("html", "text"):
        if payload.get(field):
            body[field] = payload[field]
    for field in ("cc", "bcc", "reply_to"):
        if payload.get(field):
            body[field] = _as_list(payload[field])
    resp = context.http.request(
        "POST",
        f"{base}/emails",
        guard=guarded,
        expect=range(100, 600),
        json=body,
        headers={"Authorization": f"Bearer {key}", "Idempotency-Key": _idempotency_key(context)},
        secrets=[key],
        service="Resend",
    )
    if not 200 <= resp.status_code < 300:
        raise _resend_error(resp, [key])
    data = context.http.json(resp, service="Resend")
    if not isinstance(data, dict) or not isinstance(data.get("id"), str) or not data["id"]:
        raise PermanentError(
            f"Resend answered HTTP {resp.status_code} without an email id",
            code="malformed_response",
        )
    return {"id": data["id"], "transport": "resend"}


# --------------------------------------------------------------------------- Gmail API

_GOOGLE_RATE_REASONS = {"rateLimitExceeded", "userRateLimitExceeded"}
_GOOGLE_QUOTA_REASONS = {"dailyLimitExceeded", "quotaExceeded"}


def _google_error(resp: requests.Response, secrets: list[str]) -> ConnectorError:
    data = _json_or_none(resp)
    err = data.get("error") if isinstance(data, dict) else None
    if isinstance(err, dict):
        reasons = {e.get("reason") for e in err.get("errors") or [] if isinstance(e, dict)}
        gstatus = err.get("status") if isinstance(err.get("status"), str) else None
        detail = " ".join(
            x for x in (gstatus and f"{gstatus}:", str(err.get("message") or "")) if x
        )
        if reasons - {None}:
            detail += f" (reason: {', '.join(sorted(r for r in reasons if r))})"
    else:
        reasons, gstatus, detail = set(), None, resp.text[:300]
    base = error_for_response(resp, detail=detail, secrets=secrets, service="Gmail")
    status = resp.status_code
    if status == 403 and reasons & _GOOGLE_RATE_REASONS:  # Google answers some rate limits with 403
        return RetryableError(
            base.message, status=status, retry_after=base.retry_after, code="rate_limited"
        )
    if reasons & _GOOGLE_QUOTA_REASONS:
        return PermanentError(base.message, status=status, code="quota_exceeded")
    if (
        status == 400
        and gstatus in ("INVALID_ARGUMENT", "FAILED_PRECONDITION", None)
        and isinstance(err, dict)
    ):
        return PayloadError(base.message, status=status, code=(gstatus or "bad_request").lower())
    return base


def _send_gmail(payload: Mapping[str, Any], token: str, context: StepContext) -> dict:
    base, guarded = context.api_base("gmail", GMAIL_BASE, None)  # the operator's override only
    msg = build_mime(payload, message_id=_message_id(context.idempotency_key, payload["from"]))
    raw = base64.urlsafe_b64encode(msg.as_bytes()).decode("ascii")
    resp = context.http.request(
        "POST",
        f"{base}/gmail/v1/users/me/messages/send",
        guard=guarded,
        expect=range(100, 600),
        json={"raw": raw},
        headers={"Authorization": f"Bearer {token}"},
        secrets=[token],
        service="Gmail",
    )
    if not 200 <= resp.status_code < 300:
        raise _google_error(resp, [token])
    data = context.http.json(resp, service="Gmail")
    if not isinstance(data, dict) or not isinstance(data.get("id"), str) or not data["id"]:
        raise PermanentError(
            f"Gmail answered HTTP {resp.status_code} without a message id",
            code="malformed_response",
        )
    out = {"id": data["id"], "transport": "gmail"}
    if isinstance(data.get("threadId"), str):
        out["thread_id"] = data["threadId"]
    return out


# --------------------------------------------------------------------------- hooks


@hookimpl
def run_task(
    connector: str,
    action: str,
    payload: dict[str, Any],
    credentials: dict[str, Any] | None,
    context: StepContext,
) -> dict[str, Any]:
    if connector != "gmail" or action != "send_email":
        raise PayloadError(f"gmail has no action {action!r}", code="unknown_action")
    transport, secret = transport_for(credentials)
    problems = _problems(payload)
    if problems:
        raise PayloadError("invalid email: " + "; ".join(problems), code="invalid_payload")
    if transport == "resend":
        return _send_resend(payload, secret, credentials or {}, context)
    return _send_gmail(payload, secret, context)


@hookimpl
def check_credentials(
    connector: str, credentials: dict[str, Any], context: StepContext
) -> dict[str, Any] | None:
    """Resend: ``GET /domains`` (a sending-only key answers 401 restricted_api_key, which still
    proves the key). Gmail: ``GET users/me/profile`` (a gmail.send-only token answers 403
    insufficient scope, which still proves the token)."""
    if connector != "gmail":
        return None
    transport, secret = transport_for(credentials)
    if transport == "resend":
        base, guarded = context.api_base("resend", RESEND_BASE, credentials)
        resp = context.http.request(
            "GET",
            f"{base}/domains",
            guard=guarded,
            expect=range(100, 600),
            headers={"Authorization": f"Bearer {secret}"},
            secrets=[secret],
            service="Resend",
        )
        err = _resend_error_body(resp)
        if resp.status_code == 401 and err and err.get("name") == "restricted_api_key":
            return {"ok": True, "transport": "resend", "access": "sending"}
        if not 200 <= resp.status_code < 300:
            raise _resend_error(resp, [secret])
        data = context.http.json(resp, service="Resend")
        domains = data.get("data") if isinstance(data, dict) else None
        if not isinstance(domains, list):
            raise PermanentError(
                "Resend answered /domains without a domain list", code="malformed_response"
            )
        names = [
            d.get("name") for d in domains if isinstance(d, dict) and isinstance(d.get("name"), str)
        ]
        return {"ok": True, "transport": "resend", "access": "full", "domains": names}
    base, guarded = context.api_base("gmail", GMAIL_BASE, None)
    resp = context.http.request(
        "GET",
        f"{base}/gmail/v1/users/me/profile",
        guard=guarded,
        expect=range(100, 600),
        headers={"Authorization": f"Bearer {secret}"},
        secrets=[secret],
        service="Gmail",
    )
    if resp.status_code == 403:
        data = _json_or_none(resp)
        err = data.get("error") if isinstance(data, dict) else None
        reasons = {e.get("reason") for e in (err or {}).get("errors") or [] if isinstance(e, dict)}
        if "insufficientPermissions" in reasons or "ACCESS_TOKEN_SCOPE_INSUFFICIENT" in str(err):
            return {
                "ok": True,
                "transport": "gmail",
                "account": None,
                "note": "token accepted; it cannot read the profile (a gmail.send-only token)",
            }
    if not 200 <= resp.status_code < 300:
        raise _google_error(resp, [secret])
    data = context.http.json(resp, service="Gmail")
    if not isinstance(data, dict) or not isinstance(data.get("emailAddress"), str):
        raise PermanentError(
            "Gmail answered the profile request without an emailAddress", code="malformed_response"
        )
    return {"ok": True, "transport": "gmail", "account": data["emailAddress"]}


# --------------------------------------------------------------------------- new_email trigger


def _gmail_token(credentials: Any) -> str:
    transport, secret = transport_for(credentials)
    if transport != "gmail":
        raise CredentialError(
            "the new_email trigger reads a Gmail mailbox: connect a Google account (a Resend key "
            "cannot read mail)",
            code="wrong_credentials",
        )
    return secret


class _Gmail:
    """Read-only Gmail API calls for one poll (``GET .../gmail/v1/users/me/...``)."""

    def __init__(self, token: str, context: StepContext) -> None:
        self.token, self.context = token, context
        self.base, self.guarded = context.api_base("gmail", GMAIL_BASE, None)

    def get(self, path: str, params: Any = None, *, missing_ok: bool = False) -> Any:
        """The JSON answer; None for a 404 when ``missing_ok`` (a message deleted meanwhile, a
        history id too old); the right ConnectorError otherwise."""
        resp = self.context.http.request(
            "GET",
            f"{self.base}/gmail/v1/users/me/{path}",
            guard=self.guarded,
            expect=range(100, 600),
            params=params,
            headers={"Authorization": f"Bearer {self.token}"},
            secrets=[self.token],
            service="Gmail",
        )
        if resp.status_code == 404 and missing_ok:
            return None
        if not 200 <= resp.status_code < 300:
            raise _google_error(resp, [self.token])
        data = _json_or_none(resp)
        if not isinstance(data, dict):
            raise PermanentError(
                f"Gmail answered HTTP {resp.status_code} with a body that is not a JSON object",
                code="malformed_response",
            )
        return data

    def history_id(self) -> str:
        profile = self.get("profile")
        hid = profile.get("historyId")
        if not isinstance(hid, (str, int)) or isinstance(hid, bool) or not str(hid).isdigit():
            raise PermanentError("Gmail's profile has no historyId", code="malformed_response")
        return str(hid)

    def search(self, q: str, label: str | None, limit: int) -> list[str]:
        """Ids of the newest messages ``messages.list`` lists for the search (newest first)."""
        ids: list[str] = []
        page: str | None = None
        while len(ids) < limit:
            params: dict[str, Any] = {"maxResults": min(500, limit - len(ids))}
            if q:
                params["q"] = q
            if label:
                params["labelIds"] = label
            if page:
                params["pageToken"] = page
            data = self.get("messages", params)
            for m in data.get("messages") or []:
                if isinstance(m, dict) and isinstance(m.get("id"), str):
                    ids.append(m["id"])
            page = data.get("nextPageToken")
            if not isinstance(page, str) or not page:
                break
        return ids

    def message(self, mid: str, include_body: bool) -> dict[str, Any] | None:
        params: list[tuple[str, str]] = [("format", "full" if include_body else "metadata")]
        if not include_body:
            params += [
                ("metadataHeaders", h)
                for h in ("From", "To", "Cc", "Subject", "Date", "Message-ID")
            ]
        return self.get(f"messages/{quote(mid, safe='')}", params, missing_ok=True)


def _headers(payload: Any) -> dict[str, str]:
    """A payload's ``headers`` list as {lower-cased name: first value}."""
    found = payload.get("headers") if isinstance(payload, dict) else None
    out: dict[str, str] = {}
    for h in found if isinstance(found, list) else []:
        if (
            isinstance(h, dict)
            and isinstance(h.get("name"), str)
            and isinstance(h.get("value"), str)
        ):
            out.setdefault(h["name"].lower(), h["value"])
    return out


def _plain_text(part: Any) -> str | None:
    """The first text/plain body in a message's payload (base64url ``body.data``)."""
    if not isinstance(part, dict):
        return None
    if part.get("mimeType") == "text/plain":
        data = (part.get("body") or {}).get("data")
        if isinstance(data, str):
            try:
                raw = base64.urlsafe_b64decode(data + "=" * (-len(data) % 4))
            except ValueError:
                return None
            return raw.decode("utf-8", "replace")
    for sub in part.get("parts") or []:
        text = _plain_text(sub)
        if text is not None:
            return text
    return None


def email_item(msg: Mapping[str, Any]) -> TriggerItem | None:
    """A ``users.messages.get`` answer as a new_email item (None for drafts, spam and trash)."""
    mid = msg.get("id")
    if not isinstance(mid, str) or not mid:
        return None
    labels = [lbl for lbl in msg.get("labelIds") or [] if isinstance(lbl, str)]
    if _SKIP_LABELS & set(labels):
        return None
    h = _headers(msg.get("payload"))
    data: dict[str, Any] = {
        "id": mid,
        "thread_id": str(msg.get("threadId") or mid),
        "from": h.get("from", ""),
        "to": h.get("to", ""),
        "subject": h.get("subject", ""),
        "date": h.get("date", ""),
        "snippet": str(msg.get("snippet") or ""),
        "labels": labels,
    }
    for key, header in (("cc", "cc"), ("message_id", "message-id")):
        if header in h:
            data[key] = h[header]
    if str(msg.get("internalDate") or "").isdigit():
        data["internal_date"] = int(msg["internalDate"])
    if msg.get("historyId") is not None:
        data["history_id"] = str(msg["historyId"])
    text = _plain_text(msg.get("payload"))
    if text is not None:
        data["body"] = text[:MAX_BODY]
    return TriggerItem(id=mid, data=data)


def _items(api: _Gmail, ids: list[str], include_body: bool) -> list[TriggerItem]:
    out = []
    for mid in ids:
        msg = api.message(mid, include_body)
        item = email_item(msg) if msg is not None else None  # None: deleted since
        if item is not None:
            out.append(item)
    return out


def _new_in_history(api: _Gmail, start: str, label: str | None) -> tuple[list[str], str] | None:
    """(ids of the messages added since history id ``start``, oldest first; the history id to
    start from next time), or None when ``start`` is too old (Gmail answers 404)."""
    ids: list[str] = []
    page: str | None = None
    latest = start
    for _ in range(MAX_HISTORY_PAGES):
        params: dict[str, Any] = {
            "startHistoryId": start,
            "historyTypes": "messageAdded",
            "maxResults": 500,
        }
        if label:
            params["labelId"] = label
        if page:
            params["pageToken"] = page
        data = api.get("history", params, missing_ok=True)
        if data is None:
            return None
        for record in data.get("history") or []:
            if not isinstance(record, dict):
                continue
            for added in record.get("messagesAdded") or []:
                msg = added.get("message") if isinstance(added, dict) else None
                if not isinstance(msg, dict) or not isinstance(msg.get("id"), str):
                    continue
                if _SKIP_LABELS & set(msg.get("labelIds") or []):
                    continue
                if msg["id"] not in ids:
                    ids.append(msg["id"])
            if str(record.get("id") or "").isdigit():
                latest = str(record["id"])
        page = data.get("nextPageToken")
        if not isinstance(page, str) or not page:
            hid = data.get("historyId")
            return ids, str(hid) if str(hid or "").isdigit() else latest
    return ids, latest  # more history than one poll reads: go on from the last record next time


def _poll_new_email(
    config: Mapping[str, Any],
    credentials: Any,
    state: Mapping[str, Any] | None,
    context: StepContext,
) -> Poll:
    api = _Gmail(_gmail_token(credentials), context)
    q = str(config.get("q") or "").strip()
    label = config.get("label") or None
    include_body = bool(config.get("include_body"))
    now_ms = int(time.time() * 1000)
    start = (state or {}).get("history_id")
    if not isinstance(start, str) or not start.isdigit():
        # first poll: the mailbox's history id is the baseline; the newest matches are samples
        hid = api.history_id()
        samples = api.search(q, label, SAMPLE_MESSAGES)
        items = _items(api, list(reversed(samples)), include_body)
        return Poll(items=items, state={"history_id": hid, "checked_at": now_ms})
    found = _new_in_history(api, start, label)
    if found is None:
        # the history id is too old (Gmail keeps about a week): start again from the profile's
        # history id, and take from the newest matches only those that arrived since the last
        # poll (with a margin for clock skew; the host's seen ids stop a second run)
        hid = api.history_id()
        since = (state or {}).get("checked_at")
        recent = api.search(q, label, FALLBACK_MESSAGES)
        items = []
        if isinstance(since, int) and not isinstance(since, bool):
            items = [
                i
                for i in _items(api, list(reversed(recent)), include_body)
                if i.data.get("internal_date", 0) >= since - FALLBACK_SKEW_MS
            ]
        return Poll(items=items, state={"history_id": hid, "checked_at": now_ms})
    ids, hid = found
    if ids and q:  # the search decides: Gmail's own search over the newest messages
        listed = set(api.search(q, label, 500 * MAX_SEARCH_PAGES))
        ids = [i for i in ids if i in listed]
    return Poll(
        items=_items(api, ids, include_body), state={"history_id": hid, "checked_at": now_ms}
    )


@hookimpl
def poll_trigger(
    connector: str,
    trigger: str,
    config: dict[str, Any],
    credentials: dict[str, Any] | None,
    state: dict[str, Any] | None,
    context: StepContext,
) -> Poll:
    if connector != "gmail" or trigger != "new_email":
        raise PayloadError(f"gmail has no trigger {trigger!r}", code="unknown_trigger")
    return _poll_new_email(config or {}, credentials, state, context)


@hookimpl
def oauth_credentials(
    connector: str, token: dict[str, Any], context: StepContext
) -> dict[str, Any] | None:
    """The account's address: kept after a refresh, else read with ``users.getProfile``."""
    if connector != "gmail":
        return None
    if isinstance(token.get("account"), str) and token["account"]:
        return {"account": token["account"]}
    access = token.get("access_token")
    if not isinstance(access, str) or not access:
        raise CredentialError("the token response has no access_token", code="malformed_response")
    profile = _Gmail(access, context).get("profile")
    email = profile.get("emailAddress")
    if not isinstance(email, str) or "@" not in email:
        raise PermanentError("Gmail's profile has no emailAddress", code="malformed_response")
    return {"account": email}
