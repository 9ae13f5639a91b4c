"""The ``mcp`` connector's description and offline credential checks, and its hooks.

What every host process loads (the catalog is built at start-up) stays light: the MCP SDK is
imported only when a step, a credential test or the builder's tool list talks to a server
(:mod:`levqor_mcp.client`).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from levqor_kernel import hookimpl
from levqor_kernel.context import StepContext
from levqor_kernel.errors import CredentialError
from levqor_kernel.http import USER_AGENT, UrlGuard, secrets_in

CONNECTOR = "mcp"
#: a step without a deadline (a direct call) gets this long
DEFAULT_TIMEOUT = 60.0
#: connecting may take this long at most (within the deadline)
CONNECT_TIMEOUT = 10.0
#: tools/list pages read at most
MAX_TOOL_PAGES = 20
#: characters of a tool's error text or a server's refusal kept in an error message
MAX_ERROR_TEXT = 1000
#: headers the transport sets itself
RESERVED_HEADERS = frozenset(
    {
        "accept",
        "connection",
        "content-length",
        "content-type",
        "host",
        "last-event-id",
        "mcp-protocol-version",
        "mcp-session-id",
        "transfer-encoding",
        "upgrade",
    }
)
_HEADER_NAME = re.compile(r"^[A-Za-z0-9!#$%&'*+.^_`|~-]{1,100}$")
_HEADER_VALUE = r"^[^\r\n\x00]*$"
_LOOPBACK_NAMES = frozenset({"localhost", "localhost.localdomain"})

ICON = (
    "data:image/svg+xml,%3Csvg xmlns='http://www.w3.org/2000/svg' viewBox='0 0 24 24'%3E"
    "%3Crect width='24' height='24' rx='5' fill='%23111827'/%3E"
    "%3Cpath d='M6 15.5l6.2-6.2a2.2 2.2 0 013.1 3.1l-5 5m3.4-6.7a2.2 2.2 0 013.1 3.1L11 19' "
    "fill='none' stroke='%23fff' stroke-width='1.6' stroke-linecap='round'/%3E%3C/svg%3E"
)

CREDENTIALS_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["url"],
    "additionalProperties": False,
    "properties": {
        "url": {
            "type": "string",
            "format": "uri",
            "pattern": "^https?://",
            "maxLength": 2048,
            "writeOnly": True,
            "title": "Server URL",
            "examples": ["https://mcp.example.com/mcp"],
            "description": "The MCP server's streamable HTTP endpoint, often ending in /mcp. "
            "https, or http to a loopback host or one the operator allows. Kept secret: "
            "some servers put an access key in the URL.",
        },
        "token": {
            "type": "string",
            "minLength": 1,
            "maxLength": 8192,
            "pattern": _HEADER_VALUE,
            "writeOnly": True,
            "title": "Bearer token",
            "description": "Sent as Authorization: Bearer <token>. Leave empty for a server "
            "without authentication or one that takes a key in a header below.",
        },
        "headers": {
            "type": "object",
            "maxProperties": 20,
            "propertyNames": {"pattern": _HEADER_NAME.pattern},
            "additionalProperties": {"type": "string", "maxLength": 8192, "pattern": _HEADER_VALUE},
            "writeOnly": True,
            "title": "Extra headers",
            "description": 'Other headers sent with every request, such as {"X-Api-Key": '
            '"..."}. Kept secret.',
        },
    },
}

PAYLOAD_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["tool"],
    "additionalProperties": False,
    "properties": {
        "tool": {
            "type": "string",
            "minLength": 1,
            "maxLength": 128,
            "title": "Tool",
            "description": "The name of the server's tool, as its tools/list gives it.",
        },
        "arguments": {
            "type": "object",
            "title": "Arguments",
            "description": "The tool's arguments; checked against the tool's input schema "
            "before the call.",
        },
    },
}

OUTPUT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["content", "structured", "text", "is_error"],
    "properties": {
        "content": {
            "type": "array",
            "description": "The MCP content blocks the tool returned (text, image, audio, "
            "resource_link, resource), as the protocol spells them",
            "items": {
                "type": "object",
                "required": ["type"],
                "properties": {"type": {"type": "string"}},
            },
        },
        "structured": {
            "type": ["object", "null"],
            "description": "The tool's structuredContent (checked against its outputSchema), "
            "or null when it gave none",
        },
        "text": {"type": "string", "description": "The text blocks, joined by new lines"},
        "is_error": {
            "type": "boolean",
            "description": "Always false here: a tool error fails the step",
        },
    },
}


def _description() -> dict[str, Any]:
    return {
        "name": CONNECTOR,
        "title": "MCP server",
        "description": "Call a tool of any Model Context Protocol server over streamable HTTP.",
        "icon": ICON,
        "categories": ["ai", "developer-tools"],
        "kernel": ">=0.3,<1",
        "cooperative": True,  # every wait is bounded by the step deadline (one private loop)
        "docs_url": "https://modelcontextprotocol.io/specification/latest/server/tools",
        "endpoint_field": "url",
        "credentials": CREDENTIALS_SCHEMA,
        "actions": {
            "call_tool": {
                "title": "Call a tool",
                "description": "Call one tool of the MCP server with arguments; the output "
                "holds its content blocks, its structured content and its text.",
                "payload": PAYLOAD_SCHEMA,
                "output": OUTPUT_SCHEMA,
                "example": {"tool": "get_forecast", "arguments": {"city": "Oslo"}},
                "options": ["tool"],
                "idempotent": False,
                "price": 1,
                "minutes_saved": 2,
            }
        },
    }


# --------------------------------------------------------------------------- credentials


@dataclass(frozen=True)
class Server:
    """Where and how to reach one MCP server (from a credential)."""

    url: str
    headers: dict[str, str]
    secrets: tuple[str, ...]


def _url_problem(url: str, guard: UrlGuard) -> str | None:
    """Why ``url`` can never be an MCP endpoint, checked offline (None when it may be)."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises on a bad port
    except ValueError:
        return "is not a valid URL"
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return "must be an http(s) URL with a host"
    if parts.username is not None or parts.password is not None:
        return "must not carry a user name or password: use the token or headers"
    if parts.fragment:
        return "must not have a #fragment"
    if parts.scheme == "http" and not _clear_text_allowed(parts.hostname, guard):
        return (
            "must use https (plain http only to a loopback host or one allowed in "
            "LEVQOR_SSRF_ALLOW)"
        )
    return None


def _clear_text_allowed(host: str, guard: UrlGuard) -> bool:
    host = host.strip("[]").lower().rstrip(".")
    if host in _LOOPBACK_NAMES or guard.host_allowed(host):
        return True
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return False
    return ip.is_loopback or any(ip in n for n in guard.allow_nets if n.version == ip.version)


def _headers_problem(credentials: Mapping[str, Any]) -> str | None:
    headers = credentials.get("headers") or {}
    if not isinstance(headers, Mapping):
        return "must be an object of header names and values"
    for name, value in headers.items():
        if not isinstance(name, str) or not _HEADER_NAME.match(name):
            return "holds a header name that is not a valid HTTP header name"
        if name.lower() in RESERVED_HEADERS:
            return f"must not set {name}: the MCP transport sets it"
        if name.lower() == "authorization" and credentials.get("token"):
            return "sets Authorization and the token field does too: keep one"
        if not isinstance(value, str) or re.search(r"[\r\n\x00]", value):
            return f"holds a value for {name} that is not a single-line string"
    return None


def server_from(credentials: Any, env: Mapping[str, str]) -> Server:
    """The :class:`Server` a credential describes, or a :class:`CredentialError` naming what
    is wrong (never quoting a value)."""
    if not isinstance(credentials, Mapping) or not credentials:
        raise CredentialError(
            "the MCP server credential is missing: add one with the server's url",
            code="missing_credentials",
        )
    url = credentials.get("url")
    if not isinstance(url, str) or not url:
        raise CredentialError("the MCP server credential has no url", code="bad_credentials")
    problem = _url_problem(url, UrlGuard.from_env(env))
    if problem:
        raise CredentialError(f"the MCP server url {problem}", code="bad_credentials")
    problem = _headers_problem(credentials)
    if problem:
        raise CredentialError(f"the MCP server headers {problem}", code="bad_credentials")
    token = credentials.get("token")
    if token is not None and (not isinstance(token, str) or re.search(r"[\r\n\x00]", token)):
        raise CredentialError(
            "the MCP server token is not a single-line string", code="bad_credentials"
        )
    headers = {"User-Agent": USER_AGENT, **dict(credentials.get("headers") or {})}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    secrets = [s for s in secrets_in(dict(credentials)) if len(s) >= 4]
    return Server(url=url, headers=headers, secrets=tuple(secrets))


# --------------------------------------------------------------------------- hooks


@hookimpl
def describe_schema() -> list[dict[str, Any]]:
    return [_description()]


@hookimpl
def validate_credentials(
    connector: str, credentials: dict[str, Any], env: Mapping[str, str]
) -> dict[str, str] | None:
    if connector != CONNECTOR:
        return None
    problems: dict[str, str] = {}
    url = credentials.get("url")
    if isinstance(url, str):
        problem = _url_problem(url, UrlGuard.from_env(env))
        if problem:
            problems["url"] = f"the URL {problem}"
    problem = _headers_problem(credentials)
    if problem:
        problems["headers"] = f"the headers {problem}"
    return problems


@hookimpl
def run_task(
    connector: str,
    action: str,
    payload: dict[str, Any],
    credentials: dict[str, Any] | None,
    context: StepContext,
) -> dict[str, Any]:
    from . import client

    return client.run_task(connector, action, payload, credentials, context)


@hookimpl
def check_credentials(
    connector: str, credentials: dict[str, Any], context: StepContext
) -> dict[str, Any] | None:
    from . import client

    return client.check_credentials(connector, credentials, context)


@hookimpl
def load_options(
    connector: str,
    action: str,
    field: str,
    payload: dict[str, Any],
    credentials: dict[str, Any] | None,
    context: StepContext,
) -> list[dict[str, Any]] | None:
    from . import client

    return client.load_options(connector, action, field, payload, credentials, context)
