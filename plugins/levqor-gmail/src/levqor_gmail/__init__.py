"""Levqor connector ``gmail``: send email through Resend (default) or the Gmail API.

The credential decides the transport: ``{"resend_api_key"}`` sends with Resend's
``POST /emails`` (with ``Idempotency-Key`` so a retry never sends twice);
``{"google_access_token"}`` sends with Gmail's ``users.messages.send`` (a base64url RFC 5322
message built with the ``email`` package). See README.md.
"""

from __future__ import annotations

import base64
import email.policy
import email.utils
import hashlib
from collections.abc import Mapping
from email.errors import HeaderParseError
from email.message import EmailMessage
from typing import Any

import requests
from levqor_kernel import StepContext, hookimpl
from levqor_kernel.errors import (
    ConnectorError,
    CredentialError,
    PayloadError,
    PermanentError,
    RetryableError,
)
from levqor_kernel.http import error_for_response, parse_retry_after

__all__ = [
    "RESEND_BASE",
    "GMAIL_BASE",
    "describe_schema",
    "validate_payload",
    "run_task",
    "check_credentials",
    "build_mime",
    "transport_for",
]

RESEND_BASE = "https://api.resend.com"
GMAIL_BASE = "https://gmail.googleapis.com"
MAX_RECIPIENTS = 50

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
            "description": "Send as a Google account with an OAuth access token (scope gmail.send)",
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
    ],
}


@hookimpl
def describe_schema() -> list[dict[str, Any]]:
    return [
        {
            "name": "gmail",
            "title": "Email (Gmail / Resend)",
            "description": "Send email through Resend or a Gmail account.",
            "icon": ICON,
            "categories": ["communication", "email"],
            "cooperative": True,  # every wait goes through context.http, bounded by the step deadline
            "docs_url": "https://resend.com/docs/api-reference/emails/send-email",
            "kernel": ">=0.1,<1",
            "credentials": CREDENTIALS_SCHEMA,
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
