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
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import threading
import uuid
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from typing import Any

from levqor_kernel.testing import FakeServer, Recorded, Reply

__all__ = ["FakeResend", "FakeGmail", "resend_error", "google_error", "SEND_SCOPE"]

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
    ) -> None:
        self.token = token
        self.scopes = set(scopes)
        self.email_address = email_address
        self.server = FakeServer()
        self.messages: list[dict[str, Any]] = []
        for method in ("GET", "POST", "PATCH", "PUT", "DELETE"):
            self.server.route(method, "/.*", lambda req: _gerr("notFound"))
        self.server.route("POST", "/gmail/v1/users/me/messages/send", self._send)
        self.server.route("GET", "/gmail/v1/users/me/profile", self._profile)

    def reset(self) -> None:
        self.server.reset()
        self.messages.clear()

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
        if req.header("Authorization") != f"Bearer {self.token}":
            return _gerr("authError")
        if not self.scopes & scopes:
            return _gerr("insufficientPermissions")
        return None

    def _profile(self, req: Recorded) -> Reply:
        if (bad := self._auth(req, {READ_SCOPE, "https://mail.google.com/"})) is not None:
            return bad
        return Reply(
            200,
            {
                "emailAddress": self.email_address,
                "messagesTotal": len(self.messages),
                "threadsTotal": len(self.messages),
                "historyId": "1",
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
        mid = uuid.uuid4().hex[:16]
        self.messages.append({"id": mid, "threadId": mid, "raw": data, "message": msg})
        return Reply(200, {"id": mid, "threadId": mid, "labelIds": ["SENT"]})
