"""Levqor connector ``http``: call any HTTP API from a pipeline.

Every URL is user supplied, so every hop (redirects included) goes through the kernel's SSRF
guard. Redirects are followed here, not by ``requests``, so the credential's headers (an
``Authorization`` or ``X-API-Key`` value) are never replayed to another origin. See README.md.
"""

from __future__ import annotations

import json as jsonlib
import re
import time
from collections.abc import Mapping
from typing import Any
from urllib.parse import urljoin, urlsplit

import requests
from levqor_kernel import StepContext, hookimpl
from levqor_kernel.errors import (
    CredentialError,
    PayloadError,
    PermanentError,
    RetryableError,
)
from levqor_kernel.http import drop_credential_headers, error_for_response

__all__ = [
    "CREDENTIALS_SCHEMA",
    "METHODS",
    "MAX_BODY_BYTES",
    "MAX_REDIRECTS",
    "describe_schema",
    "validate_payload",
    "run_task",
]

METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE", "HEAD")
#: response bodies longer than this are cut (text) and reported as truncated
MAX_BODY_BYTES = 1024 * 1024
MAX_REDIRECTS = 5
DEFAULT_TIMEOUT = 30.0
MAX_TIMEOUT = 300.0
CONNECT_TIMEOUT = 10.0
REDIRECT_STATUSES = (301, 302, 303, 307, 308)

#: headers a payload or credential may not set: framing and connection management belong to
#: the HTTP client (request smuggling, a Host that disagrees with the guarded address)
FORBIDDEN_HEADERS = frozenset(
    {
        "host",
        "content-length",
        "transfer-encoding",
        "connection",
        "keep-alive",
        "te",
        "trailer",
        "upgrade",
        "expect",
        "proxy-authorization",
        "proxy-connection",
    }
)
_TOKEN = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]{1,256}$")
_BAD_VALUE = re.compile(r"[\r\n\x00]")

ICON = (
    "data:image/svg+xml,%3Csvg xmlns='http://www.w3.org/2000/svg' viewBox='0 0 24 24'%3E"
    "%3Ccircle cx='12' cy='12' r='9' fill='none' stroke='%23334' stroke-width='2'/%3E"
    "%3Cpath d='M3 12h18M12 3c3 3 3 15 0 18M12 3c-3 3-3 15 0 18' fill='none' stroke='%23334' "
    "stroke-width='1.5'/%3E%3C/svg%3E"
)

_QUERY_SCALAR = {"type": ["string", "number", "boolean"]}

PAYLOAD_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["url"],
    "additionalProperties": False,
    "properties": {
        "method": {
            "type": "string",
            "enum": list(METHODS),
            "default": "GET",
            "description": "HTTP method",
        },
        "url": {
            "type": "string",
            "minLength": 1,
            "maxLength": 8192,
            "description": "An absolute http(s) URL, or a path starting with / resolved against the "
            "credential's api_base. Private, loopback and link-local addresses are refused",
        },
        "headers": {
            "type": "object",
            "description": "Request headers (name -> value). Secrets belong in the credential",
            "additionalProperties": {"type": "string", "maxLength": 8192},
            "maxProperties": 100,
        },
        "query": {
            "type": "object",
            "description": "Query parameters added to the URL (name -> value or list of values)",
            "additionalProperties": {
                "anyOf": [
                    {**_QUERY_SCALAR, "description": "one value"},
                    {
                        "type": "array",
                        "items": _QUERY_SCALAR,
                        "maxItems": 100,
                        "description": "repeated parameter",
                    },
                ]
            },
            "maxProperties": 100,
        },
        "json": {"description": "A JSON request body (any JSON value); not with form"},
        "form": {
            "type": "object",
            "description": "A form-encoded request body (name -> text); not with json",
            "additionalProperties": {"type": "string"},
        },
        "expected_statuses": {
            "type": "array",
            "description": "Statuses that count as success (default: any 2xx). A redirect status "
            "listed here is returned instead of followed",
            "items": {"type": "integer", "minimum": 100, "maximum": 599},
            "minItems": 1,
            "maxItems": 100,
            "uniqueItems": True,
        },
        "timeout": {
            "type": "number",
            "exclusiveMinimum": 0,
            "maximum": MAX_TIMEOUT,
            "default": DEFAULT_TIMEOUT,
            "description": "Seconds for the whole call including redirects (capped by the step "
            "deadline)",
        },
    },
}

OUTPUT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["status", "headers", "body", "url"],
    "properties": {
        "status": {"type": "integer", "description": "The final response's HTTP status"},
        "headers": {
            "type": "object",
            "description": "Response headers, names in lower case",
            "additionalProperties": {"type": "string"},
        },
        "body": {
            "description": "Parsed JSON when the response is JSON (application/json or +json), "
            "else the text (first 1 MB)"
        },
        "url": {"type": "string", "description": "The final URL, after redirects"},
        "truncated": {
            "type": "boolean",
            "description": "True when the body was longer than 1 MB and was cut",
        },
    },
}

CREDENTIALS_SCHEMA: dict[str, Any] = {
    "type": "object",
    "title": "HTTP credential",
    "description": "Optional. Secret headers added to every request (e.g. Authorization), "
    "optionally bound to one API's base URL",
    "additionalProperties": False,
    "properties": {
        "headers": {
            "type": "object",
            "writeOnly": True,
            "title": "Secret headers",
            "description": 'Headers with secret values, e.g. {"Authorization": "Bearer ..."} or '
            '{"X-API-Key": "..."}; they override payload headers of the same name and are '
            "never sent to another origin after a redirect",
            "additionalProperties": {"type": "string", "maxLength": 8192},
            "maxProperties": 20,
        },
        "api_base": {
            "type": "string",
            "title": "API base URL",
            "description": "Optional. Payload URLs may then be paths (/v1/items), and the secret "
            "headers are only ever sent to this origin",
        },
    },
}


@hookimpl
def describe_schema() -> list[dict[str, Any]]:
    return [
        {
            "name": "http",
            "title": "HTTP request",
            "description": "Call any HTTP API or webhook: any method, headers, query, JSON or "
            "form body. Private and internal addresses are refused.",
            "icon": ICON,
            "categories": ["developer-tools", "utility"],
            "kernel": ">=0.1,<1",
            # most HTTP calls need no credential; a step may name one to add secret headers
            "credentials": CREDENTIALS_SCHEMA,
            "credentials_required": False,
            "cooperative": True,  # every wait goes through context.http, bounded by the step deadline
            "actions": {
                "request": {
                    "title": "Send an HTTP request",
                    "description": "Sends one request (following up to 5 redirects) and returns "
                    "the status, headers and body. A status outside expected_statuses fails the "
                    "step (429 and 5xx are retried, honouring Retry-After).",
                    "payload": PAYLOAD_SCHEMA,
                    "output": OUTPUT_SCHEMA,
                    "example": {
                        "method": "POST",
                        "url": "https://api.example.com/v1/orders",
                        "headers": {"Accept": "application/json"},
                        "json": {"id": "{{ trigger.order_id }}", "total": "{{ trigger.total }}"},
                        "expected_statuses": [200, 201],
                    },
                    "price": 1,
                    "minutes_saved": 1,
                    "idempotent": False,
                    "writes": True,
                }
            },
        }
    ]


# --------------------------------------------------------------------------- validation


def _header_problems(headers: Any, where: str) -> list[str]:
    if headers is None:
        return []
    if not isinstance(headers, Mapping):
        return [f"{where} must be an object of name -> text"]
    out: list[str] = []
    for name, value in headers.items():
        if not isinstance(name, str) or not _TOKEN.match(name):
            out.append(f"{where}: {str(name)[:60]!r} is not a valid header name")
        elif name.lower() in FORBIDDEN_HEADERS:
            out.append(f"{where}: the {name} header is managed by Levqor and cannot be set")
        if not isinstance(value, str):
            out.append(f"{where}: the value of {str(name)[:60]!r} must be text")
        elif _BAD_VALUE.search(value):
            out.append(f"{where}: the value of {str(name)[:60]!r} contains a line break")
    return out


def _url_problem(url: Any) -> str | None:
    if not isinstance(url, str) or not url.strip():
        return "url is required"
    url = url.strip()
    if any(c.isspace() or ord(c) < 32 for c in url):
        return "url may not contain spaces or control characters (encode them)"
    if url.startswith("/"):
        return "url: //host/... is ambiguous, give the scheme" if url.startswith("//") else None
    parts = urlsplit(url)
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        return "url must be an absolute http(s) URL or a path starting with /"
    return None


def _problems(payload: Mapping[str, Any]) -> list[str]:
    out: list[str] = []
    method = payload.get("method", "GET")
    if method not in METHODS:
        out.append(f"method must be one of {', '.join(METHODS)}")
    problem = _url_problem(payload.get("url"))
    if problem:
        out.append(problem)
    out += _header_problems(payload.get("headers"), "headers")
    has_json, has_form = "json" in payload, payload.get("form") is not None
    if has_json and has_form:
        out.append("give a json body or a form body, not both")
    if has_form and (
        not isinstance(payload["form"], Mapping)
        or not all(isinstance(k, str) and isinstance(v, str) for k, v in payload["form"].items())
    ):
        out.append("form must be an object of name -> text")
    if method == "HEAD" and (has_json or has_form):
        out.append("a HEAD request has no body")
    if has_json:
        try:
            jsonlib.dumps(payload["json"], allow_nan=False)
        except (TypeError, ValueError):
            out.append("json must be a JSON value")
    query = payload.get("query")
    if query is not None and not isinstance(query, Mapping):
        out.append("query must be an object")
    statuses = payload.get("expected_statuses")
    if statuses is not None and (
        not isinstance(statuses, list)
        or not statuses
        or not all(
            isinstance(s, int) and not isinstance(s, bool) and 100 <= s <= 599 for s in statuses
        )
    ):
        out.append("expected_statuses must be a list of HTTP statuses (100-599)")
    timeout = payload.get("timeout", DEFAULT_TIMEOUT)
    if (
        isinstance(timeout, bool)
        or not isinstance(timeout, (int, float))
        or not 0 < timeout <= MAX_TIMEOUT
    ):
        out.append(f"timeout must be a number of seconds, more than 0 and at most {MAX_TIMEOUT:g}")
    return out


@hookimpl
def validate_payload(connector: str, action: str, payload: dict[str, Any]) -> list[str] | None:
    if connector != "http" or action != "request":
        return None
    return _problems(payload)


def _credential(credentials: Any) -> tuple[dict[str, str], str | None]:
    """(secret headers, api_base) from an optional credential."""
    if credentials is None:
        return {}, None
    if not isinstance(credentials, Mapping):
        raise CredentialError("the HTTP credential must be an object with headers and/or api_base")
    unknown = set(credentials) - {"headers", "api_base"}
    if unknown:
        raise CredentialError(
            f"the HTTP credential has unknown fields: {', '.join(sorted(map(str, unknown)))[:200]}"
        )
    headers = credentials.get("headers") or {}
    problems = _header_problems(headers, "credential headers")
    if problems:  # messages name headers, never their values
        raise CredentialError("; ".join(problems))
    base = credentials.get("api_base")
    if base is not None and base != "":
        parts = urlsplit(base) if isinstance(base, str) else None
        if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
            raise CredentialError("api_base must be an absolute http(s) URL")
        base = base.rstrip("/")
    return dict(headers), base or None


def _origin(url: str) -> tuple[str, str, int | None]:
    p = urlsplit(url)
    scheme = p.scheme.lower()
    try:
        port = p.port
    except ValueError:
        port = None
    return scheme, (p.hostname or "").lower(), port or {"http": 80, "https": 443}.get(scheme)


def _query(query: Mapping[str, Any] | None) -> dict[str, Any] | None:
    if not query:
        return None

    def one(v: Any) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, (str, int, float)):
            return str(v)
        raise PayloadError("query values must be text, numbers or booleans", code="invalid_payload")

    return {
        str(k): [one(x) for x in v] if isinstance(v, list) else one(v) for k, v in query.items()
    }


def _mime(resp: requests.Response) -> tuple[str, str | None]:
    ctype = resp.headers.get("Content-Type", "")
    mime, _, params = ctype.partition(";")
    charset = None
    for param in params.split(";"):
        k, _, v = param.partition("=")
        if k.strip().lower() == "charset" and v.strip():
            charset = v.strip().strip('"')
    return mime.strip().lower(), charset


def _body(resp: requests.Response, method: str) -> tuple[Any, bool]:
    raw = resp.content or b""
    if method == "HEAD" or not raw:
        return "", False
    mime, charset = _mime(resp)
    truncated = len(raw) > MAX_BODY_BYTES
    is_json = mime == "application/json" or mime.endswith("+json")
    if is_json and not truncated:
        try:
            return jsonlib.loads(raw.decode(charset or "utf-8")), False
        except (ValueError, LookupError):
            pass  # an invalid JSON body is returned as text
    chunk = raw[:MAX_BODY_BYTES]
    try:
        text = chunk.decode(charset or "utf-8", errors="replace")
    except LookupError:
        text = chunk.decode("utf-8", errors="replace")
    return text, truncated


# --------------------------------------------------------------------------- the request


@hookimpl
def run_task(
    connector: str,
    action: str,
    payload: dict[str, Any],
    credentials: dict[str, Any] | None,
    context: StepContext,
) -> dict[str, Any]:
    if connector != "http" or action != "request":
        raise PayloadError(f"http has no action {action!r}", code="unknown_action")
    secret_headers, api_base = _credential(credentials)
    problems = _problems(payload)
    if problems:
        raise PayloadError("invalid HTTP request: " + "; ".join(problems), code="invalid_payload")

    method: str = payload.get("method", "GET")
    url: str = payload["url"].strip()
    if url.startswith("/"):
        if not api_base:
            raise PayloadError(
                "url is a path: use a credential with an api_base, or give an absolute URL",
                code="invalid_payload",
            )
        url = api_base + url
    if api_base and secret_headers and _origin(url) != _origin(api_base):
        raise PayloadError(
            "url points outside the credential's api_base; its secret headers are only sent there",
            code="credential_origin",
        )
    secrets = list(secret_headers.values())

    headers: dict[str, str] = {}
    lowered: dict[str, str] = {}
    for name, value in (payload.get("headers") or {}).items():
        headers[name] = value
        lowered[name.lower()] = name
    for name, value in secret_headers.items():  # the credential wins
        if name.lower() in lowered:
            headers.pop(lowered[name.lower()])
        headers[name] = value
        lowered[name.lower()] = name
    credential_names = {n.lower() for n in secret_headers}

    body: dict[str, Any] = {}
    if "json" in payload:
        body["json"] = payload["json"]
    elif payload.get("form") is not None:
        body["data"] = dict(payload["form"])
    params = _query(payload.get("query"))
    expected = set(payload["expected_statuses"]) if payload.get("expected_statuses") else None

    step_deadline = context.deadline
    local_deadline = time.monotonic() + float(payload.get("timeout", DEFAULT_TIMEOUT))
    deadline = local_deadline if step_deadline is None else min(local_deadline, step_deadline)

    resp: requests.Response | None = None
    for hop in range(MAX_REDIRECTS + 1):
        left = deadline - time.monotonic()
        if left <= 0:
            raise RetryableError(f"{_host(url)} did not answer in time", code="timeout")
        resp = context.http.request(
            method,
            url,
            guard=True,  # user supplied, on every hop
            expect=range(100, 600),
            headers=headers,
            params=params if hop == 0 else None,
            allow_redirects=False,
            timeout=(min(CONNECT_TIMEOUT, left), left),
            secrets=secrets,
            service=_host(url),
            **body,
        )
        status = resp.status_code
        location = resp.headers.get("Location")
        if status not in REDIRECT_STATUSES or not location or (expected and status in expected):
            break
        if hop == MAX_REDIRECTS:
            raise PermanentError(
                f"{_host(url)}: more than {MAX_REDIRECTS} redirects", code="too_many_redirects"
            )
        target = urljoin(resp.url, location.strip())
        if _origin(target) != _origin(resp.url):
            drop_credential_headers(headers, secrets, credential_names)
        if status == 303 and method != "HEAD" or status in (301, 302) and method == "POST":
            method = "GET"
            body = {}
            for name in list(headers):
                if name.lower() == "content-type":
                    del headers[name]
        url = target
    assert resp is not None

    ok = resp.status_code in expected if expected else 200 <= resp.status_code < 300
    if not ok:
        detail = resp.content[:300].decode("utf-8", errors="replace").strip()
        if expected:
            detail = f"{detail} (expected {', '.join(str(s) for s in sorted(expected))})".strip()
        raise error_for_response(resp, detail=detail, secrets=secrets, service=_host(resp.url))
    out_body, truncated = _body(resp, method)
    return {
        "status": resp.status_code,
        "headers": {k.lower(): v for k, v in resp.headers.items()},
        "body": out_body,
        "url": resp.url,
        "truncated": truncated,
    }


def _host(url: str) -> str:
    try:
        return urlsplit(url).hostname or "the server"
    except ValueError:
        return "the server"
