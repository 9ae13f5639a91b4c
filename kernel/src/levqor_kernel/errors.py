"""The exceptions every part of Levqor shares.

A connector signals failure by raising a :class:`ConnectorError`. Whether the runner
retries depends only on the class: :class:`RetryableError` (429, 5xx, timeouts, connection
failures) is retried with backoff, everything else is permanent. Any other exception from a
connector is treated as a permanent failure too (fail closed).
"""

from __future__ import annotations

from dataclasses import dataclass


class LevqorError(Exception):
    """Base class of every Levqor error."""


class ConnectorError(LevqorError):
    """A step failed. Permanent unless it is a :class:`RetryableError`.

    ``status`` is the upstream HTTP status when there was one; ``retry_after`` the delay in
    seconds the upstream asked for (Retry-After header or body field); ``code`` a short
    machine-readable reason such as ``"unauthorized"`` or ``"timeout"``.
    """

    retryable: bool = False

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        retry_after: float | None = None,
        code: str | None = None,
        usage: dict | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.retry_after = retry_after
        self.code = code
        #: the tokens a metered action used before it failed (still recorded and charged)
        self.usage = usage

    def to_dict(self) -> dict:
        """A JSON-able description, safe to store and show (messages are pre-redacted)."""
        out: dict = {
            "type": type(self).__name__,
            "message": self.message,
            "retryable": self.retryable,
        }
        if self.status is not None:
            out["status"] = self.status
        if self.retry_after is not None:
            out["retry_after"] = self.retry_after
        if self.code:
            out["code"] = self.code
        if self.usage:
            out["usage"] = self.usage
        return out


class RetryableError(ConnectorError):
    """A transient failure: rate limited, upstream 5xx, timeout, connection reset."""

    retryable = True


class PermanentError(ConnectorError):
    """A failure that retrying cannot fix: bad request, forbidden, not found."""


class CredentialError(PermanentError):
    """Credentials missing, malformed or refused by the upstream API (401/403)."""


class RefreshRefused(CredentialError):
    """The token endpoint refused an OAuth2 refresh token (``invalid_grant``: expired, revoked,
    or issued to another client): only connecting the account again helps. The host marks the
    credential broken. Default ``status`` 401, ``code`` ``"invalid_grant"``."""

    def __init__(
        self, message: str = "the account's refresh token was refused: connect it again", **kw
    ) -> None:
        kw.setdefault("status", 401)
        kw.setdefault("code", "invalid_grant")
        super().__init__(message, **kw)


class SignatureError(PermanentError):
    """An instant trigger's delivery failed its signature or secret check: the host answers
    401 and starts nothing. Default ``status`` 401, ``code`` ``"bad_signature"``."""

    def __init__(self, message: str = "the delivery's signature does not verify", **kw) -> None:
        kw.setdefault("status", 401)
        kw.setdefault("code", "bad_signature")
        super().__init__(message, **kw)


class PayloadError(PermanentError):
    """The step's payload is invalid (schema or cross-field rules)."""


class TemplateError(PermanentError):
    """A payload template failed to render, or tried something the sandbox forbids."""


class TooLargeError(PermanentError):
    """A rendered payload or a step output weighs more than the size limit (``code``
    ``"too_large"``); see :mod:`levqor_kernel.limits`."""


class BlockedURLError(PermanentError):
    """A user-supplied URL points somewhere the SSRF guard forbids."""


class StopRun(LevqorError):
    """Raised by a step (``core.filter``) to end the run successfully, skipping later steps."""

    def __init__(self, reason: str, output: dict | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.output = output or {}


class PluginConflictError(LevqorError):
    """Two plugins claim the same connector name. Start-up stops."""


@dataclass(frozen=True)
class Problem:
    """One validation problem: where (JSON pointer, step id) and what."""

    pointer: str
    message: str
    step: str | None = None

    def to_dict(self) -> dict:
        d = {"pointer": self.pointer, "message": self.message}
        if self.step is not None:
            d["step"] = self.step
        return d

    def __str__(self) -> str:
        where = f"step {self.step!r} " if self.step else ""
        return f"{where}{self.pointer or '/'}: {self.message}"


class PipelineInvalid(LevqorError):
    """A pipeline document failed validation; ``problems`` lists every problem found."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = list(problems)
        super().__init__("; ".join(str(p) for p in self.problems[:10]))
