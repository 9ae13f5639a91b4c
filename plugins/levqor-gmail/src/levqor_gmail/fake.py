"""Local fakes of Resend and the Gmail API (the parts levqor-gmail uses), over real HTTP on 127.0.0.1.

Wire contracts followed (checked against the providers' documentation):

Resend
* https://resend.com/docs/api-reference/emails/send-email : ``POST /emails`` with
  ``Authorization: Bearer re_...`` and JSON ``from``, ``to`` (string or array, max 50),
  ``subject``, ``html``, ``text``, ``cc``, ``bcc``, ``reply_to``; answers ``200 {"id": "<uuid>"}``.
* https://resend.com/docs/dashboard/emails/idempotency-keys : ``Idempotency-Key`` header (1-256
  characters, kept 24 hours): the same key with the same request returns the same response
  without sending again; the same key with a different payload is refused (409
  ``invalid_idempotent_request``), and while the first request is still in progress (409
  ``concurrent_idempotent_requests``).
* https://resend.com/docs/api-reference/errors : bodies ``{"statusCode": N, "name": ..., "message": ...}``
  with names invalid_idempotency_key / validation_error (400), missing_api_key /
  restricted_api_key (401), invalid_api_key (403), not_found (404), invalid_idempotent_request /
  concurrent_idempotent_requests (409), missing_required_field / invalid_from_address (422),
  rate_limit_exceeded / daily_quota_exceeded (429), application_error / internal_server_error (500).
* https://resend.com/changelog/api-rate-limit : ``ratelimit-limit``, ``ratelimit-remaining``,
  ``ratelimit-reset`` and ``retry-after`` headers; 429 when over the limit.

Gmail API
* https://developers.google.com/gmail/api/guides/sending : ``POST
  /gmail/v1/users/me/messages/send`` with JSON ``{"raw": base64url(RFC 2822/5322 message)}``,
  OAuth bearer token with the ``gmail.send`` scope; answers a Message resource
  (``id``, ``threadId``, ``labelIds: ["SENT"]``).
* https://developers.google.com/workspace/gmail/api/reference/rest/v1/users/getProfile :
  ``GET /gmail/v1/users/me/profile`` answers ``{"emailAddress", "messagesTotal", "threadsTotal",
  "historyId"}`` (historyId a string: the mailbox's current history record).
* https://developers.google.cn/workspace/gmail/api/guides/list-messages and ListMessagesResponse
  (https://googleapis.dev/dotnet/Google.Apis.Gmail.v1/1.46.0.1950/api/Google.Apis.Gmail.v1.Data.ListMessagesResponse.html):
  ``GET /gmail/v1/users/me/messages`` with ``q`` (Gmail search-box syntax), ``labelIds``,
  ``maxResults`` (default 100, at most 500), ``pageToken``, ``includeSpamTrash``; answers
  ``{"messages": [{"id", "threadId"}], "nextPageToken", "resultSizeEstimate"}``, newest first,
  SPAM and TRASH left out. This fake understands a subset of the search syntax: ``from:``,
  ``to:``, ``subject:``, ``label:``, ``in:``, ``is:unread``/``is:read``, ``-`` negation, quoted
  phrases and bare words (matched, ignoring case, in the sender, recipients, subject and text).
* https://developers.google.com/gmail/api/reference/rest/v1/users.messages/get : ``GET
  /gmail/v1/users/me/messages/{id}`` with ``format`` (full, the default | metadata | minimal |
  raw) and ``metadataHeaders[]`` (with metadata: only those headers); answers a Message
  ``{"id", "threadId", "labelIds", "snippet", "historyId", "internalDate", "sizeEstimate",
  "payload": {"mimeType", "headers": [{"name", "value"}], "body": {"size", "data"}, "parts"}}``
  (body data base64url); an unknown id answers 404 notFound.
* https://doc.deno.land/https://googleapis.deno.dev/v1/gmail:v1.ts/~/UsersHistoryListOptions and
  https://ocaml.org/p/gapi-ocaml/latest/doc/GapiGmailV1Service/UsersResource/History/index.html
  (mirrors of users.history.list): ``GET /gmail/v1/users/me/history`` with ``startHistoryId``
  (required; records after it are returned, in increasing historyId order; "Supplying an invalid
  or out of date startHistoryId typically returns an HTTP 404 error code. A historyId is
  typically valid for at least a week"), ``historyTypes`` (messageAdded | messageDeleted |
  labelAdded | labelRemoved), ``labelId``, ``maxResults`` (default 100, at most 500),
  ``pageToken``; answers ``{"history": [{"id", "messages", "messagesAdded": [{"message":
  {"id", "threadId", "labelIds"}}]}], "nextPageToken", "historyId"}``. History ids increase
  but are not contiguous (https://developers.google.cn/workspace/gmail/api/guides/sync).
* https://developers.google.com/gmail/api/guides/handle-errors : bodies
  ``{"error": {"code", "message", "status", "errors": [{"domain", "reason", "message"}]}}``;
  401 authError / UNAUTHENTICATED, 403 insufficientPermissions / rateLimitExceeded /
  userRateLimitExceeded / dailyLimitExceeded, 429 RESOURCE_EXHAUSTED, 500 backendError.

Usage::

    with FakeResend(api_key="re_test_123") as resend:
        ... LEVQOR_RESEND_API_BASE=resend.url ...
        assert resend.emails[0]["body"]["subject"] == "Hi"
        resend.fail_next(429, retry_after=2)
    with FakeGmail(token="ya29.test") as gmail:
        ... LEVQOR_GMAIL_API_BASE=gmail.url ...
        assert gmail.messages[0]["message"]["Subject"] == "Hi"
        token = gmail.grant()                      # a connected account's access token
        gmail.deliver("Acme <billing@acme.example>", "Invoice 7", text="Attached.")
        gmail.expire_history()                     # older history ids now answer 404
"""

from __future__ import annotations

import base64
import binascii
import email.utils
import hashlib
import json
import re
import secrets
import shlex
import threading
import time
import uuid
from collections.abc import Callable
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from typing import Any

from levqor_kernel.testing import FakeServer, Recorded, Reply

__all__ = ["FakeResend", "FakeGmail", "resend_error", "google_error", "SEND_SCOPE", "READ_SCOPE"]

SEND_SCOPE = "https://www.googleapis.com/auth/gmail.send"
READ_SCOPE = "https://www.googleapis.com/auth/gmail.readonly"

_RESEND_DEFAULTS: dict[str, tuple[int, str]] = {
    "invalid_idempotency_key": (400, "The key must be between 1-256 chars."),
    "validation_error": (400, "We found an error with one or more fields in the request."),
    "missing_api_key": (401, "Missing API key in the authorization header."),
    "restricted_api_key": (401, "This API key is restricted to only send emails."),
    "invalid_api_key": (403, "API key is invalid."),
    "not_found": (404, "The requested endpoint does not exist."),
    "invalid_idempotent_request": (
        409,
        "Same idempotency key used with a different request payload.",
    ),
    "concurrent_idempotent_requests": (
        409,
        "Same idempotency key used while original request is still in progress.",
    ),
    "missing_required_field": (422, "The request body is missing one or more required fields."),
    "invalid_from_address": (422, "Invalid `from` field."),
    "rate_limit_exceeded": (429, "Too many requests. You can only make 2 requests per second."),
    "daily_quota_exceeded": (429, "You have reached your daily email sending quota."),
    "application_error": (500, "An unexpected error occurred."),
    "internal_server_error": (500, "An unexpected error occurred."),
}
_RESEND_NAME_FOR_STATUS = {
    400: "validation_error",
    401: "missing_api_key",
    403: "invalid_api_key",
    404: "not_found",
    409: "invalid_idempotent_request",
    422: "missing_required_field",
    429: "rate_limit_exceeded",
    500: "internal_server_error",
}


def resend_error(
    name: str, message: str | None = None, status: int | None = None
) -> dict[str, Any]:
    """A documented Resend error body."""
    st, msg = _RESEND_DEFAULTS.get(name, (status or 500, name))
    return {
        "statusCode": status or st,
        "name": name,
        "message": message if message is not None else msg,
    }


def _rerr(name: str, message: str | None = None, headers: dict[str, str] | None = None) -> Reply:
    body = resend_error(name, message)
    return Reply(body["statusCode"], body, headers or {})


def _life_cycle(cls: type) -> type:
    def start(self):  # type: ignore[no-untyped-def]
        self.server.start()
        return self

    def stop(self) -> None:
        self.server.stop()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    cls.start, cls.stop, cls.__enter__, cls.__exit__ = start, stop, start, __exit__  # type: ignore[attr-defined]
    cls.url = property(lambda self: self.server.url)  # type: ignore[attr-defined]
    cls.requests = property(lambda self: self.server.requests)  # type: ignore[attr-defined]
    return cls


@_life_cycle
class FakeResend:
    """A fake Resend API. ``emails`` holds every email actually sent (a retry with the same
    Idempotency-Key and body is answered from the idempotency store and is not added)."""

    url: str
    requests: list[Recorded]

    def __init__(self, api_key: str = "re_fake_key_123456", *, restricted: bool = True) -> None:
        self.api_key = api_key
        #: a sending-only key (Resend's "Sending access"): GET /domains answers restricted_api_key
        self.restricted = restricted
        self.server = FakeServer()
        self.emails: list[dict[str, Any]] = []
        self.domains: list[str] = ["acme.example"]
        #: Idempotency-Key -> (body fingerprint, reply)
        self.idempotency: dict[str, tuple[str, Reply]] = {}
        self._in_progress: set[str] = set()
        self._lock = threading.Lock()
        #: delay (seconds) applied while a request holds its idempotency key, to test concurrency
        self.processing_delay = 0.0
        for method in ("GET", "POST", "PATCH", "PUT", "DELETE"):
            self.server.route(method, "/.*", lambda req: _rerr("not_found"))
        self.server.route("POST", "/emails", self._send)
        self.server.route("GET", "/domains", self._domains)

    def reset(self) -> None:
        """Forget requests, sent emails, idempotency keys and scripted answers."""
        self.server.reset()
        self.emails.clear()
        self.idempotency.clear()
        self._in_progress.clear()
        self.processing_delay = 0.0

    def fail_next(
        self,
        status: int,
        name: str | None = None,
        message: str | None = None,
        *,
        retry_after: float | None = None,
        headers: dict[str, str] | None = None,
        delay: float = 0.0,
        body: Any = None,
        path: str = "/emails",
        method: str = "POST",
    ) -> None:
        """Answer the next ``method path`` with a documented error (or ``body`` verbatim)."""
        hdrs = dict(headers or {})
        if retry_after is not None:
            hdrs.update(
                {
                    "retry-after": str(retry_after),
                    "ratelimit-limit": "2",
                    "ratelimit-remaining": "0",
                    "ratelimit-reset": str(retry_after),
                }
            )
        if body is None:
            n = name or _RESEND_NAME_FOR_STATUS.get(status, "application_error")
            body = resend_error(n, message, status)
        self.server.queue(method, path, Reply(status, body, hdrs, delay))

    def delay_next(self, seconds: float) -> None:
        """Answer the next send successfully but only after ``seconds`` (nothing is recorded as sent)."""
        self.server.queue("POST", "/emails", Reply(200, {"id": str(uuid.uuid4())}, {}, seconds))

    # ------------------------------------------------------------------ handlers
    def _auth(self, req: Recorded) -> Reply | None:
        auth = req.header("Authorization")
        if not auth:
            return _rerr("missing_api_key")
        if auth != f"Bearer {self.api_key}":
            return _rerr("invalid_api_key")
        return None

    def _domains(self, req: Recorded) -> Reply:
        if (bad := self._auth(req)) is not None:
            return bad
        if self.restricted:
            return _rerr("restricted_api_key")
        return Reply(
            200,
            {
                "object": "list",
                "data": [
                    {
                        "id": str(uuid.uuid4()),
                        "name": d,
                        "status": "verified",
                        "region": "us-east-1",
                    }
                    for d in self.domains
                ],
            },
        )

    def _validate(self, body: Any) -> Reply | None:
        if not isinstance(body, dict):
            return _rerr("validation_error", "Invalid JSON body.")
        for field in ("from", "to", "subject"):
            if not body.get(field):
                return _rerr("missing_required_field", f"Missing `{field}` field.")
        if not body.get("html") and not body.get("text"):
            return _rerr("validation_error", "Missing `html` or `text` field.")
        to = body["to"] if isinstance(body["to"], list) else [body["to"]]
        if len(to) > 50:
            return _rerr("validation_error", "The `to` field must have at most 50 recipients.")
        for field in ("to", "cc", "bcc", "reply_to"):
            value = body.get(field)
            if value is None:
                continue
            for addr in value if isinstance(value, list) else [value]:
                if not isinstance(addr, str) or "@" not in addr:
                    return _rerr(
                        "validation_error",
                        f"Invalid `{field}` field. The email address needs to follow "
                        "the `email@example.com` or `Name <email@example.com>` format.",
                    )
        sender = str(body["from"])
        domain = sender.rsplit("@", 1)[-1].rstrip(">").strip().lower()
        if domain not in self.domains:
            return Reply(
                403,
                resend_error(
                    "validation_error",
                    f"The {domain} domain is not verified. Please, add "
                    "and verify your domain on https://resend.com/domains",
                    403,
                ),
            )
        return None

    def _send(self, req: Recorded) -> Reply:
        if (bad := self._auth(req)) is not None:
            return bad
        try:
            body = json.loads(req.body.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            return _rerr("validation_error", "Invalid JSON body.")
        key = req.header("Idempotency-Key")
        if key is not None and not 1 <= len(key) <= 256:
            return _rerr("invalid_idempotency_key")
        fingerprint = hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()
        if key is not None:
            with self._lock:
                if key in self._in_progress:
                    return _rerr("concurrent_idempotent_requests")
                stored = self.idempotency.get(key)
                if stored is not None:
                    if stored[0] != fingerprint:
                        return _rerr("invalid_idempotent_request")
                    return stored[1]  # replay: the same response, no second email
                self._in_progress.add(key)
        try:
            if self.processing_delay:
                threading.Event().wait(self.processing_delay)
            if (bad := self._validate(body)) is not None:
                return bad
            email_id = str(uuid.uuid4())
            reply = Reply(
                200,
                {"id": email_id},
                {"ratelimit-limit": "2", "ratelimit-remaining": "1", "ratelimit-reset": "1"},
            )
            with self._lock:
                self.emails.append(
                    {
                        "id": email_id,
                        "body": body,
                        "idempotency_key": key,
                        "headers": dict(req.headers),
                    }
                )
                if key is not None:
                    self.idempotency[key] = (fingerprint, reply)
            return reply
        finally:
            if key is not None:
                with self._lock:
                    self._in_progress.discard(key)


# --------------------------------------------------------------------------- Gmail

_GOOGLE_DEFAULTS: dict[str, tuple[int, str, str]] = {
    # reason: (code, status, message)
    "authError": (
        401,
        "UNAUTHENTICATED",
        "Request had invalid authentication credentials. Expected OAuth 2 access "
        "token, login cookie or other valid authentication credential.",
    ),
    "insufficientPermissions": (
        403,
        "PERMISSION_DENIED",
        "Request had insufficient authentication scopes.",
    ),
    "rateLimitExceeded": (403, "PERMISSION_DENIED", "Rate Limit Exceeded"),
    "userRateLimitExceeded": (403, "PERMISSION_DENIED", "User Rate Limit Exceeded"),
    "dailyLimitExceeded": (403, "PERMISSION_DENIED", "Daily Limit Exceeded"),
    "badRequest": (400, "INVALID_ARGUMENT", "Invalid argument"),
    "failedPrecondition": (400, "FAILED_PRECONDITION", "Precondition check failed."),
    "notFound": (404, "NOT_FOUND", "Requested entity was not found."),
    "tooManyRequests": (429, "RESOURCE_EXHAUSTED", "Too many concurrent requests for user"),
    "backendError": (500, "INTERNAL", "Backend Error"),
    "serviceUnavailable": (503, "UNAVAILABLE", "The service is currently unavailable."),
}
_GOOGLE_REASON_FOR_STATUS = {
    400: "badRequest",
    401: "authError",
    403: "insufficientPermissions",
    404: "notFound",
    429: "tooManyRequests",
    500: "backendError",
    503: "serviceUnavailable",
}


def google_error(
    reason: str, message: str | None = None, code: int | None = None
) -> dict[str, Any]:
    """A documented Google API error body."""
    c, st, msg = _GOOGLE_DEFAULTS.get(reason, (code or 500, "UNKNOWN", reason))
    msg = message if message is not None else msg
    return {
        "error": {
            "code": code or c,
            "message": msg,
            "status": st,
            "errors": [
                {
                    "message": msg,
                    "domain": "global" if reason != "dailyLimitExceeded" else "usageLimits",
                    "reason": reason,
                }
            ],
        }
    }


def _gerr(reason: str, message: str | None = None) -> Reply:
    body = google_error(reason, message)
    return Reply(body["error"]["code"], body)


@_life_cycle
class FakeGmail:
    """A fake Gmail API. ``messages`` holds each sent message: ``id``, ``threadId``, ``raw`` (the
    decoded bytes) and ``message`` (an :class:`email.message.EmailMessage`)."""

    url: str
    requests: list[Recorded]

    def __init__(
        self,
        token: str = "ya29.fake-token-123456",
        *,
        scopes: tuple[str, ...] = (SEND_SCOPE,),
        email_address: str = "me@gmail.example",
        authority: Callable[[str], bool] | None = None,
    ) -> None:
        self.token = token
        self.scopes = set(scopes)
        self.email_address = email_address
        #: access tokens from grant(): token -> scopes
        self.granted: dict[str, set[str]] = {}
        #: another token issuer to trust (a FakeAuthorizationServer's token_valid): its tokens
        #: get the send and read scopes
        self.authority = authority
        self.server = FakeServer()
        self.messages: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        #: the mailbox, oldest first: dicts with id, threadId, labelIds, internalDate (ms),
        #: historyId (int), message (EmailMessage), raw (bytes), snippet
        self.mailbox: list[dict[str, Any]] = []
        #: history records, oldest first: {"id": int, "messagesAdded": [...]}
        self.history: list[dict[str, Any]] = []
        self.history_id = 1000
        #: history ids below this answer 404 (expired)
        self.oldest_history = 0
        for method in ("GET", "POST", "PATCH", "PUT", "DELETE"):
            self.server.route(method, "/.*", lambda req: _gerr("notFound"))
        self.server.route("POST", "/gmail/v1/users/me/messages/send", self._send)
        self.server.route("GET", "/gmail/v1/users/me/profile", self._profile)
        self.server.route("GET", "/gmail/v1/users/me/messages", self._list)
        self.server.route("GET", "/gmail/v1/users/me/messages/([^/]+)", self._get)
        self.server.route("GET", "/gmail/v1/users/me/history", self._history)

    def reset(self) -> None:
        self.server.reset()
        with self._lock:
            self.messages.clear()
            self.mailbox.clear()
            self.history.clear()
            self.granted.clear()
            self.oldest_history = 0

    # ------------------------------------------------------------------ mailbox
    def grant(self, scopes: tuple[str, ...] = (SEND_SCOPE, READ_SCOPE)) -> str:
        """An access token this fake accepts, as "Connect" would have obtained."""
        token = "ya29.a0" + secrets.token_urlsafe(24)
        with self._lock:
            self.granted[token] = set(scopes)
        return token

    def revoke_tokens(self) -> None:
        """Every granted token is refused from now on (401): as an expired access token."""
        with self._lock:
            self.granted.clear()

    def _next_history_id(self) -> int:
        self.history_id += 1 + secrets.randbelow(5)  # increasing, with gaps
        return self.history_id

    def _add(self, msg: EmailMessage, raw: bytes, labels: list[str], thread_id: str | None) -> str:
        """Put a message in the mailbox and record its messageAdded history. Lock held."""
        mid = uuid.uuid4().hex[:16]
        hid = self._next_history_id()
        body = msg.get_body(("plain", "html"))
        text = body.get_content() if body is not None else ""
        entry = {
            "id": mid,
            "threadId": thread_id or mid,
            "labelIds": labels,
            "internalDate": int(time.time() * 1000),
            "historyId": hid,
            "message": msg,
            "raw": raw,
            "snippet": re.sub(r"\s+", " ", text).strip()[:100],
        }
        self.mailbox.append(entry)
        ref = {"id": mid, "threadId": entry["threadId"], "labelIds": list(labels)}
        self.history.append({"id": hid, "messages": [ref], "messagesAdded": [{"message": ref}]})
        return mid

    def deliver(
        self,
        sender: str,
        subject: str,
        *,
        to: str | None = None,
        text: str = "Hello",
        cc: str | None = None,
        labels: tuple[str, ...] = ("INBOX", "UNREAD"),
        thread_id: str | None = None,
    ) -> str:
        """An email arriving in the mailbox upstream; returns its message id."""
        msg = EmailMessage(policy=policy.default)
        msg["From"] = sender
        msg["To"] = to or self.email_address
        if cc:
            msg["Cc"] = cc
        msg["Subject"] = subject
        msg["Date"] = email.utils.formatdate(usegmt=True)
        msg["Message-ID"] = email.utils.make_msgid(domain="mail.example")
        msg.set_content(text)
        with self._lock:
            return self._add(msg, msg.as_bytes(), list(labels), thread_id)

    def expire_history(self) -> None:
        """Forget the history so far: a startHistoryId before now answers 404 (as after a
        week without polling)."""
        with self._lock:
            self.oldest_history = self.history_id  # the current id stays valid
            self.history.clear()

    def fail_next(
        self,
        status: int,
        reason: str | None = None,
        message: str | None = None,
        *,
        retry_after: float | None = None,
        headers: dict[str, str] | None = None,
        delay: float = 0.0,
        body: Any = None,
        path: str = "/gmail/v1/users/me/messages/send",
        method: str = "POST",
    ) -> None:
        hdrs = dict(headers or {})
        if retry_after is not None:
            hdrs["Retry-After"] = str(retry_after)
        if body is None:
            body = google_error(
                reason or _GOOGLE_REASON_FOR_STATUS.get(status, "backendError"), message, status
            )
        self.server.queue(method, path, Reply(status, body, hdrs, delay))

    def delay_next(self, seconds: float) -> None:
        self.server.queue(
            "POST",
            "/gmail/v1/users/me/messages/send",
            Reply(200, {"id": "delayed", "threadId": "delayed", "labelIds": ["SENT"]}, {}, seconds),
        )

    def _auth(self, req: Recorded, scopes: set[str]) -> Reply | None:
        auth = req.header("Authorization") or ""
        token = auth[7:] if auth.startswith("Bearer ") else None
        with self._lock:
            if token is not None and token == self.token:
                have: set[str] | None = self.scopes
            else:
                have = self.granted.get(token or "")
        if have is None and token and self.authority is not None and self.authority(token):
            have = {SEND_SCOPE, READ_SCOPE}
        if have is None:
            return _gerr("authError")
        if not have & scopes:
            return _gerr("insufficientPermissions")
        return None

    def _profile(self, req: Recorded) -> Reply:
        if (bad := self._auth(req, {READ_SCOPE, "https://mail.google.com/"})) is not None:
            return bad
        with self._lock:
            return Reply(
                200,
                {
                    "emailAddress": self.email_address,
                    "messagesTotal": len(self.mailbox),
                    "threadsTotal": len({m["threadId"] for m in self.mailbox}),
                    "historyId": str(self.history_id),
                },
            )

    def _send(self, req: Recorded) -> Reply:
        if (
            bad := self._auth(
                req,
                {
                    SEND_SCOPE,
                    "https://mail.google.com/",
                    "https://www.googleapis.com/auth/gmail.compose",
                },
            )
        ) is not None:
            return bad
        try:
            body = json.loads(req.body.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            return _gerr("badRequest", "Invalid JSON payload received.")
        raw = body.get("raw") if isinstance(body, dict) else None
        if not isinstance(raw, str) or not raw:
            return _gerr(
                "badRequest",
                "'raw' RFC822 payload message string or uploading message via /upload/* URL "
                "required",
            )
        if "+" in raw or "/" in raw:
            return _gerr(
                "badRequest", "Invalid value at 'message.raw' (TYPE_BYTES), Base64 decoding failed."
            )
        try:
            data = base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4))
        except (binascii.Error, ValueError):
            return _gerr(
                "badRequest", "Invalid value at 'message.raw' (TYPE_BYTES), Base64 decoding failed."
            )
        msg: EmailMessage = BytesParser(policy=policy.default).parsebytes(data)  # type: ignore[assignment]
        if not any(msg.get(h) for h in ("To", "Cc", "Bcc")):
            return _gerr("badRequest", "Invalid To header")
        if not msg.get("From") and not self.email_address:
            return _gerr("failedPrecondition")
        with self._lock:
            mid = self._add(msg, data, ["SENT"], None)  # a sent message is in the mailbox too
            self.messages.append({"id": mid, "threadId": mid, "raw": data, "message": msg})
        return Reply(200, {"id": mid, "threadId": mid, "labelIds": ["SENT"]})

    # ------------------------------------------------------------------ reading
    _READ = {READ_SCOPE, "https://mail.google.com/", "https://www.googleapis.com/auth/gmail.modify"}

    @staticmethod
    def _matches(entry: dict[str, Any], q: str) -> bool:
        msg = entry["message"]
        fields = {
            "from": str(msg.get("From", "")),
            "to": " ".join(str(msg.get(h, "")) for h in ("To", "Cc", "Bcc")),
            "subject": str(msg.get("Subject", "")),
        }
        labels = {lbl.lower() for lbl in entry["labelIds"]}
        try:
            terms = shlex.split(q)
        except ValueError:
            terms = q.split()
        for term in terms:
            negate = term.startswith("-") and len(term) > 1
            term = term[1:] if negate else term
            key, sep, value = term.partition(":")
            key, value = key.lower(), value.lower()
            if sep and key in fields:
                hit = value in fields[key].lower()
            elif sep and key in ("label", "in"):
                hit = value.replace("-", "_") in labels
            elif sep and key == "is":
                hit = ("unread" in labels) if value == "unread" else ("unread" not in labels)
            else:
                text = " ".join([*fields.values(), entry["snippet"]]).lower()
                hit = term.lower() in text
            if hit == negate:
                return False
        return True

    @staticmethod
    def _page(req: Recorded, default: int) -> tuple[int, int]:
        q = req.query
        try:
            size = max(1, min(500, int(q.get("maxResults", [default])[0])))
            start = int(q.get("pageToken", ["0"])[0])
        except ValueError:
            size, start = -1, -1
        return size, start

    def _list(self, req: Recorded) -> Reply:
        if (bad := self._auth(req, self._READ)) is not None:
            return bad
        size, start = self._page(req, 100)
        if size < 0:
            return _gerr("badRequest", "Invalid pageToken or maxResults")
        q = req.query.get("q", [""])[0]
        wanted = {lbl.lower() for lbl in req.query.get("labelIds", [])}
        spam_trash = req.query.get("includeSpamTrash", ["false"])[0] == "true"
        with self._lock:
            found = [
                m
                for m in reversed(self.mailbox)  # newest first
                if wanted <= {lbl.lower() for lbl in m["labelIds"]}
                and (spam_trash or not {"SPAM", "TRASH"} & set(m["labelIds"]))
                and self._matches(m, q)
            ]
        page = found[start : start + size]
        out: dict[str, Any] = {"resultSizeEstimate": len(found)}
        if page:
            out["messages"] = [{"id": m["id"], "threadId": m["threadId"]} for m in page]
        if start + size < len(found):
            out["nextPageToken"] = str(start + size)
        return Reply(200, out)

    @staticmethod
    def _part(part: EmailMessage) -> dict[str, Any]:
        out: dict[str, Any] = {
            "mimeType": part.get_content_type(),
            "headers": [{"name": k, "value": str(v)} for k, v in part.items()],
        }
        if part.is_multipart():
            out["body"] = {"size": 0}
            out["parts"] = [FakeGmail._part(p) for p in part.iter_parts()]  # type: ignore[arg-type]
        else:
            data = part.get_payload(decode=True) or b""
            out["body"] = {
                "size": len(data),
                "data": base64.urlsafe_b64encode(data).decode().rstrip("="),
            }
        return out

    def _get(self, req: Recorded) -> Reply:
        scopes = self._READ | {"https://www.googleapis.com/auth/gmail.metadata"}
        if (bad := self._auth(req, scopes)) is not None:
            return bad
        assert req.match is not None
        mid = req.match.group(1)
        fmt = req.query.get("format", ["full"])[0].lower()
        if fmt not in ("full", "metadata", "minimal", "raw"):
            return _gerr("badRequest", f"Invalid value at 'format' ({fmt})")
        with self._lock:
            entry = next((m for m in self.mailbox if m["id"] == mid), None)
        if entry is None:
            return _gerr("notFound")
        out: dict[str, Any] = {
            "id": entry["id"],
            "threadId": entry["threadId"],
            "labelIds": list(entry["labelIds"]),
            "snippet": entry["snippet"],
            "historyId": str(entry["historyId"]),
            "internalDate": str(entry["internalDate"]),
            "sizeEstimate": len(entry["raw"]),
        }
        msg: EmailMessage = entry["message"]
        if fmt == "raw":
            out["raw"] = base64.urlsafe_b64encode(entry["raw"]).decode()
        elif fmt == "metadata":
            names = {h.lower() for h in req.query.get("metadataHeaders", [])}
            out["payload"] = {
                "mimeType": msg.get_content_type(),
                "headers": [
                    {"name": k, "value": str(v)}
                    for k, v in msg.items()
                    if not names or k.lower() in names
                ],
            }
        elif fmt == "full":
            out["payload"] = self._part(msg)
        return Reply(200, out)

    def _history(self, req: Recorded) -> Reply:
        scopes = self._READ | {"https://www.googleapis.com/auth/gmail.metadata"}
        if (bad := self._auth(req, scopes)) is not None:
            return bad
        start_s = req.query.get("startHistoryId", [""])[0]
        if not start_s.isdigit():
            return _gerr("badRequest", "Invalid startHistoryId")
        size, offset = self._page(req, 100)
        if size < 0:
            return _gerr("badRequest", "Invalid pageToken or maxResults")
        start = int(start_s)
        types = set(req.query.get("historyTypes", [])) or {"messageAdded"}
        label = req.query.get("labelId", [None])[0]
        with self._lock:
            if start < self.oldest_history or start > self.history_id:
                return _gerr("notFound")
            records = []
            for rec in self.history:
                if rec["id"] <= start:
                    continue
                added = [
                    a
                    for a in rec["messagesAdded"]
                    if "messageAdded" in types
                    and (label is None or label in a["message"]["labelIds"])
                ]
                if added:
                    records.append(
                        {"id": str(rec["id"]), "messages": rec["messages"], "messagesAdded": added}
                    )
            current = str(self.history_id)
        page = records[offset : offset + size]
        out: dict[str, Any] = {"historyId": current}
        if page:
            out["history"] = page
        if offset + size < len(records):
            out["nextPageToken"] = str(offset + size)
        return Reply(200, out)
