"""Chat Completions over the step's HTTP helper: where to send, how to authenticate, and how the
server's errors become Levqor's error classes.

Steps call the server with ``context.http`` (requests with the SSRF guard, the step deadline and
secret redaction), not with the ``openai`` package the planner uses: a base URL a user typed
into a credential must pass the SSRF guard on every hop, and every wait must end at the step
deadline, which the SDK's own HTTP client and retries know nothing about.

Which server and key (:func:`endpoint`):

1. the step's credential: ``api_key`` and ``base_url`` (default https://api.openai.com/v1); a
   ``base_url`` without a key is a local server that needs none (Ollama, vLLM); a user-supplied
   ``base_url`` goes through the SSRF guard;
2. otherwise the operator's ``OPENAI_API_KEY`` / ``OPENAI_BASE_URL`` from the host's settings
   (``context.env``), trusted like any operator setting;
3. otherwise a permanent :class:`CredentialError` saying what to set.

Errors (the documented body ``{"error": {"message", "type", "param", "code"}}``):

* 429 is retryable with the delay of ``retry-after-ms`` or ``Retry-After``, except
  ``insufficient_quota`` (permanent: only the account's billing fixes it);
* 408, 409 and 5xx are retryable (as the official clients retry them), so are timeouts and
  connection failures (:class:`~levqor_kernel.http.Http`);
* 401 and 403 are credential errors;
* 400 ``context_length_exceeded`` is permanent with code ``context_length_exceeded``; a content
  policy refusal (``content_policy_violation``, ``content_filter``, ``invalid_prompt``) is
  permanent with code ``content_policy``; both carry the provider's message (redacted);
* other 4xx are permanent (``model_not_found``, ``bad_request``, ...).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import requests
from levqor_kernel.context import StepContext
from levqor_kernel.errors import (
    ConnectorError,
    CredentialError,
    PermanentError,
    RetryableError,
)
from levqor_kernel.http import parse_retry_after, redact

DEFAULT_BASE_URL = "https://api.openai.com/v1"
#: connect timeout, and the longest a model may take to answer (the step deadline caps both)
TIMEOUT = (10.0, 600.0)
CONTENT_POLICY_CODES = frozenset({"content_policy_violation", "content_filter", "invalid_prompt"})
NOT_CONFIGURED = (
    "no OpenAI credential on the step and none configured for the host: add an OpenAI "
    "credential (api_key, and base_url for an OpenAI-compatible server) or set OPENAI_API_KEY "
    "(and OPENAI_BASE_URL) in the host's environment"
)


@dataclass(frozen=True)
class Endpoint:
    """Where a step's requests go: ``guarded`` when the base URL came from a user."""

    base_url: str
    api_key: str = ""
    organization: str = ""
    guarded: bool = False

    @property
    def service(self) -> str:
        return "OpenAI" if self.base_url == DEFAULT_BASE_URL else "the model server"

    def headers(self) -> dict[str, str]:
        h = {"Accept": "application/json"}
        if self.api_key:
            h["Authorization"] = f"Bearer {self.api_key}"
        if self.organization:
            h["OpenAI-Organization"] = self.organization
        return h


def _text(value: Any) -> str:
    return value.strip() if isinstance(value, str) else ""


def endpoint(credentials: Mapping[str, Any] | None, env: Mapping[str, str]) -> Endpoint:
    """The server and key a step uses (see the module docstring), or a CredentialError."""
    creds = credentials if isinstance(credentials, Mapping) else {}
    key, base = _text(creds.get("api_key")), _text(creds.get("base_url"))
    if key or base:
        return Endpoint(
            base_url=(base or DEFAULT_BASE_URL).rstrip("/"),
            api_key=key,
            organization=_text(creds.get("organization")),
            guarded=bool(base),
        )
    key, base = _text(env.get("OPENAI_API_KEY")), _text(env.get("OPENAI_BASE_URL"))
    if key or base:
        return Endpoint(base_url=(base or DEFAULT_BASE_URL).rstrip("/"), api_key=key)
    raise CredentialError(NOT_CONFIGURED, code="not_configured")


def _error_body(resp: requests.Response) -> dict[str, Any]:
    try:
        data = resp.json()
    except ValueError:
        return {}
    err = data.get("error") if isinstance(data, dict) else None
    if isinstance(err, dict):
        return err
    if isinstance(data, dict) and isinstance(data.get("message"), str):  # vLLM, some proxies
        return data
    if isinstance(err, str):
        return {"message": err}
    return {}


def retry_after(resp: requests.Response) -> float | None:
    """``retry-after-ms`` (OpenAI's, in milliseconds) or ``Retry-After`` (seconds or a date)."""
    ms = resp.headers.get("retry-after-ms")
    if ms:
        try:
            value = float(ms) / 1000.0
        except ValueError:
            value = -1.0
        if value >= 0:
            return value
    return parse_retry_after(resp.headers.get("Retry-After"))


def error_for(resp: requests.Response, ep: Endpoint) -> ConnectorError:
    """The Levqor error for a server's error answer (see the module docstring)."""
    status = resp.status_code
    err = _error_body(resp)
    code = _text(err.get("code")) or None
    etype = _text(err.get("type")) or None
    message = _text(err.get("message"))
    if not message:
        try:
            message = resp.text[:300].strip()
        except Exception:  # noqa: BLE001 - an undecodable body is just not shown
            message = ""
    message = redact(message[:1000], [ep.api_key])
    text = f"{ep.service} answered HTTP {status}" + (f": {message}" if message else "")
    if status == 429:
        if "insufficient_quota" in (code, etype):
            return PermanentError(text, status=status, code="insufficient_quota")
        return RetryableError(text, status=status, retry_after=retry_after(resp), code="rate_limited")
    if status >= 500 or status in (408, 409):
        return RetryableError(text, status=status, retry_after=retry_after(resp), code="upstream_error")
    if status in (401, 403):
        return CredentialError(text, status=status, code="unauthorized" if status == 401 else "forbidden")
    if code == "context_length_exceeded":
        return PermanentError(text, status=status, code="context_length_exceeded")
    if code in CONTENT_POLICY_CODES or etype in CONTENT_POLICY_CODES:
        return PermanentError(text, status=status, code="content_policy")
    return PermanentError(
        text, status=status, code=code or ("bad_request" if status == 400 else f"http_{status}")
    )


def call(
    context: StepContext, ep: Endpoint, method: str, path: str, body: Any = None
) -> dict[str, Any]:
    """Send one request and return its JSON object, or raise the right ConnectorError."""
    return _json_object(context, _send(context, ep, method, path, body), ep)


def _send(
    context: StepContext, ep: Endpoint, method: str, path: str, body: Any
) -> requests.Response:
    resp = context.http.request(
        method,
        ep.base_url + path,
        guard=ep.guarded,
        json=body,
        headers=ep.headers(),
        secrets=[ep.api_key],
        service=ep.service,
        expect=range(100, 600),  # every answer comes back: error_for maps the failures
        timeout=TIMEOUT,
        allow_redirects=False,
    )
    if not 200 <= resp.status_code < 300:
        raise error_for(resp, ep)
    return resp


def _json_object(context: StepContext, resp: requests.Response, ep: Endpoint) -> dict[str, Any]:
    data = context.http.json(resp, service=ep.service)
    if not isinstance(data, dict):
        raise PermanentError(
            f"{ep.service} answered HTTP {resp.status_code} with JSON that is not an object",
            code="malformed_response",
        )
    return data


def list_models(context: StepContext, ep: Endpoint) -> list[str]:
    """The ids of ``GET /models`` (``{"object": "list", "data": [{"id", ...}]}``), sorted."""
    data = call(context, ep, "GET", "/models")
    items = data.get("data")
    if not isinstance(items, list):
        raise PermanentError(
            f"{ep.service} answered /models without a data list", code="malformed_response"
        )
    return sorted({m["id"] for m in items if isinstance(m, dict) and isinstance(m.get("id"), str)})
