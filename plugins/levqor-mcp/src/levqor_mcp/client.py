"""The ``mcp`` connector: a step calls a tool of an external MCP server.

The credential names the server's streamable-HTTP endpoint (``url``) and how to authenticate
(``token``, sent as ``Authorization: Bearer``, and/or extra ``headers``). Each call opens one
session with the official ``mcp`` SDK's :class:`mcp.Client` (``mode="auto"``: the 2026
``server/discover`` probe, falling back to the ``initialize`` handshake of older servers), lists
the tools, checks the arguments against the tool's ``inputSchema``, calls it and closes the
session. Legacy SSE-only servers (the 2024-11-05 HTTP+SSE transport) are not supported.

The URL is the user's: every connection goes through the kernel's SSRF guard
(:mod:`levqor_mcp.client_transport`); plain ``http`` is accepted only for a loopback host or
one the operator lists in ``LEVQOR_SSRF_ALLOW`` (elsewhere the token would cross the network
in clear). The SDK is async: each call runs in a private event loop in the step's thread,
bounded as a whole by the step's deadline, so nothing outlives the step.

Errors: a tool result with ``isError`` fails the step permanently with the tool's text; HTTP
401/403 are :class:`~levqor_kernel.errors.CredentialError`; 429, 5xx, timeouts and broken
connections are retryable (with the server's ``Retry-After``); arguments that break the tool's
schema, unknown tools and protocol errors are permanent. Credential values never appear in an
error.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, TypeVar

import anyio
import httpx2
from jsonschema import SchemaError
from jsonschema.validators import validator_for
from levqor_kernel import __version__ as kernel_version
from levqor_kernel.context import StepContext
from levqor_kernel.errors import (
    ConnectorError,
    CredentialError,
    PayloadError,
    PermanentError,
    RetryableError,
)
from levqor_kernel.http import UrlGuard, redact
from mcp import Client, MCPError
from mcp.client.streamable_http import streamable_http_client
from mcp_types import (
    CONNECTION_CLOSED,
    INTERNAL_ERROR,
    REQUEST_TIMEOUT,
    CallToolResult,
    Implementation,
    TextContent,
    Tool,
)
from pydantic import ValidationError
from referencing import Registry
from referencing.exceptions import Unresolvable

from .client_transport import Failure, GuardedTransport
from .connector import (  # noqa: F401 - the description and credential checks live there
    _HEADER_NAME,
    _HEADER_VALUE,
    _LOOPBACK_NAMES,
    CONNECT_TIMEOUT,
    CONNECTOR,
    CREDENTIALS_SCHEMA,
    DEFAULT_TIMEOUT,
    ICON,
    MAX_ERROR_TEXT,
    MAX_TOOL_PAGES,
    OUTPUT_SCHEMA,
    PAYLOAD_SCHEMA,
    RESERVED_HEADERS,
    Server,
    _clear_text_allowed,
    _description,
    _headers_problem,
    _url_problem,
    describe_schema,
    server_from,
    validate_credentials,
)

# --------------------------------------------------------------------------- one session

T = TypeVar("T")


def _deadline_left(context: StepContext) -> float:
    left = context.remaining()
    if left is None:
        return DEFAULT_TIMEOUT
    if left <= 0:
        raise RetryableError("step deadline reached before the MCP call", code="timeout")
    return left


def with_session(
    server: Server,
    context: StepContext,
    work: Callable[[Client], Awaitable[T]],
) -> T:
    """Open a session with ``server``, run ``work`` in it and close it, within the step's
    deadline; every failure comes out as a :class:`ConnectorError`."""
    left = _deadline_left(context)
    transport = GuardedTransport(UrlGuard.from_env(context.env))

    async def main() -> T:
        timeout = httpx2.Timeout(left, connect=min(CONNECT_TIMEOUT, left))
        async with httpx2.AsyncClient(
            transport=transport, headers=server.headers, timeout=timeout, trust_env=False
        ) as http:
            with anyio.fail_after(left):
                async with Client(
                    streamable_http_client(
                        server.url,
                        http_client=http,
                        max_sse_event_size=transport.max_response_bytes,
                    ),
                    client_info=Implementation(name="levqor", version=kernel_version),
                    read_timeout_seconds=left,
                    cache=None,
                ) as client:
                    return await work(client)

    try:
        return _run(main)
    except ConnectorError as e:
        e.message = redact(e.message, server.secrets)
        e.args = (e.message,)
        raise
    except Exception as e:  # noqa: BLE001 - every failure is mapped, none escapes raw
        raise _mapped(e, transport, server) from None


def _run(main: Callable[[], Awaitable[T]]) -> T:
    """Run ``main`` in a private event loop; in a thread of its own when this thread already
    runs a loop (an async caller), so the caller's loop is never entered or blocked twice."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(main())  # type: ignore[arg-type]
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["value"] = asyncio.run(main())  # type: ignore[arg-type]
        except BaseException as e:  # noqa: BLE001 - handed back to the caller's thread
            box["error"] = e

    thread = threading.Thread(target=target, name="levqor-mcp-call", daemon=True)
    thread.start()
    thread.join()
    if "error" in box:
        raise box["error"]
    return box["value"]


def _leaves(e: BaseException) -> list[BaseException]:
    if isinstance(e, BaseExceptionGroup):
        out: list[BaseException] = []
        for inner in e.exceptions:
            out.extend(_leaves(inner))
        return out
    return [e]


def _pick(e: BaseException) -> BaseException:
    """The exception that explains a failure best, out of the SDK's task-group nesting."""
    leaves = _leaves(e) or [e]
    for kind in (ConnectorError, TimeoutError, httpx2.TimeoutException, MCPError):
        for leaf in leaves:
            if isinstance(leaf, kind):
                return leaf
    return leaves[0]


def _failure_detail(failure: Failure) -> str:
    text = failure.body.decode("utf-8", "replace").strip()
    if "json" in failure.content_type.lower():
        try:
            body = json.loads(text)
        except ValueError:
            body = None
        if isinstance(body, Mapping):
            error = body.get("error")
            if isinstance(error, Mapping) and isinstance(error.get("message"), str):
                return error["message"]  # a JSON-RPC error
            for key in ("error_description", "message", "detail"):
                if isinstance(body.get(key), str):
                    return body[key]
            if isinstance(error, str):
                return error
    return " ".join(text.split())[:300]


def _http_error(failure: Failure, server: Server) -> ConnectorError:
    status = failure.status
    detail = redact(_failure_detail(failure)[:MAX_ERROR_TEXT], server.secrets)
    msg = f"MCP server answered HTTP {status}" + (f": {detail}" if detail else "")
    if status == 429:
        return RetryableError(
            msg, status=status, retry_after=failure.retry_after, code="rate_limited"
        )
    if status >= 500 or status == 408:
        return RetryableError(
            msg, status=status, retry_after=failure.retry_after, code="upstream_error"
        )
    if status in (401, 403):
        hint = "check the credential's token or headers"
        if "resource_metadata" in failure.www_authenticate.lower():
            # RFC 9728: the server points at its OAuth authorization server
            hint = (
                "the server signs clients in with OAuth, which this connector does not do: "
                "give the credential a token the server accepts, such as a personal access token"
            )
        return CredentialError(
            f"{msg} ({hint})",
            status=status,
            code="unauthorized" if status == 401 else "forbidden",
        )
    if status in (404, 405):
        return PermanentError(
            msg + " (is the url the server's streamable HTTP endpoint?)",
            status=status,
            code="not_mcp_endpoint",
        )
    return PermanentError(msg, status=status, code=f"http_{status}")


def _mapped(e: BaseException, transport: GuardedTransport, server: Server) -> ConnectorError:
    """A failure of the SDK or the transport as the :class:`ConnectorError` the runner needs."""
    leaf = _pick(e)

    def clean(text: str) -> str:
        return redact(str(text), server.secrets)[:MAX_ERROR_TEXT]

    if isinstance(leaf, ConnectorError):
        leaf.message = clean(leaf.message)
        leaf.args = (leaf.message,)
        return leaf
    if transport.too_large:
        return PermanentError(
            f"MCP server response larger than {transport.max_response_bytes} bytes",
            code="response_too_large",
        )
    if transport.failure is not None and not isinstance(leaf, TimeoutError):
        return _http_error(transport.failure, server)
    if isinstance(leaf, (TimeoutError, httpx2.TimeoutException)):
        return RetryableError("MCP server did not answer before the step deadline", code="timeout")
    if isinstance(leaf, httpx2.UnsupportedProtocol):
        return PermanentError(clean(f"MCP server request failed: {leaf}"), code="request")
    if isinstance(leaf, (httpx2.TransportError, OSError)):
        return RetryableError(
            clean(f"MCP server connection failed: {type(leaf).__name__}: {leaf}"),
            code="connection",
        )
    if isinstance(leaf, MCPError):
        text = clean(f"MCP server error {leaf.code}: {leaf.error.message}")
        if leaf.code in (CONNECTION_CLOSED, REQUEST_TIMEOUT, INTERNAL_ERROR):
            return RetryableError(text, code="upstream_error")
        return PermanentError(text, code="protocol_error")
    if isinstance(leaf, ValidationError):
        return PermanentError(
            "MCP server answered with a message that breaks the protocol",
            code="malformed_response",
        )
    return PermanentError(
        clean(f"MCP call failed: {type(leaf).__name__}: {leaf}"), code="mcp_failed"
    )


# --------------------------------------------------------------------------- tools


async def list_all_tools(client: Client) -> list[Tool]:
    """Every tool the server offers (following tools/list pages, at most :data:`MAX_TOOL_PAGES`)."""
    tools: list[Tool] = []
    cursor: str | None = None
    for _ in range(MAX_TOOL_PAGES):
        page = await client.list_tools(cursor=cursor)
        tools.extend(page.tools)
        cursor = page.next_cursor
        if not cursor:
            break
    return tools


def argument_problems(schema: Mapping[str, Any], arguments: Any) -> list[str] | None:
    """What is wrong with ``arguments`` for a tool's input schema; None when the schema itself
    is unusable (the server is then the judge). Never fetches a remote ``$ref``."""
    try:
        cls = validator_for(schema)
        cls.check_schema(schema)
        validator = cls(schema, registry=Registry())
        errors = sorted(validator.iter_errors(arguments), key=lambda err: list(err.path))
    except (SchemaError, Unresolvable, TypeError, RecursionError):  # a $ref to itself without end
        return None
    out = []
    for err in errors[:5]:
        where = "/".join(str(p) for p in err.path)
        out.append(f"{'arguments/' + where if where else 'arguments'}: {err.message[:200]}")
    return out


def tool_output(result: CallToolResult) -> dict[str, Any]:
    """A tool result as the step's output."""
    blocks = [b.model_dump(by_alias=True, mode="json", exclude_none=True) for b in result.content]
    text = "\n".join(b.text for b in result.content if isinstance(b, TextContent))
    structured = result.structured_content
    return {
        "content": blocks,
        "structured": structured if isinstance(structured, dict) else None,
        "text": text,
        "is_error": bool(result.is_error),
    }


def _names(tools: list[Tool]) -> str:
    names = sorted(t.name for t in tools)
    shown = ", ".join(names[:20]) + (f" and {len(names) - 20} more" if len(names) > 20 else "")
    return shown or "none"


def call_tool(
    server: Server, name: str, arguments: Mapping[str, Any], context: StepContext
) -> dict[str, Any]:
    """List the tools, check ``arguments`` against ``name``'s input schema, call it."""

    async def work(client: Client) -> dict[str, Any]:
        tools = await list_all_tools(client)
        tool = next((t for t in tools if t.name == name), None)
        if tool is None:
            raise PermanentError(
                f"the MCP server has no tool {name!r} (it offers: {_names(tools)})",
                code="unknown_tool",
            )
        problems = argument_problems(tool.input_schema, dict(arguments))
        if problems:
            raise PayloadError(
                f"arguments do not match the input schema of tool {name!r}: " + "; ".join(problems),
                code="invalid_arguments",
            )
        result = await client.call_tool(name, dict(arguments))
        if result.is_error:
            text = "\n".join(b.text for b in result.content if isinstance(b, TextContent))
            raise PermanentError(
                f"MCP tool {name!r} failed: {text.strip()[:MAX_ERROR_TEXT] or 'no message'}",
                code="tool_error",
            )
        return tool_output(result)

    return with_session(server, context, work)


# --------------------------------------------------------------------------- hooks


def run_task(
    connector: str,
    action: str,
    payload: dict[str, Any],
    credentials: dict[str, Any] | None,
    context: StepContext,
) -> dict[str, Any]:
    if connector != CONNECTOR or action != "call_tool":
        raise PermanentError(f"unknown action {connector}.{action}", code="unknown_action")
    server = server_from(credentials, context.env)
    name = payload.get("tool")
    arguments = payload.get("arguments") or {}
    if not isinstance(name, str) or not name or not isinstance(arguments, Mapping):
        raise PayloadError(
            "call_tool needs a tool name and an arguments object", code="bad_payload"
        )
    return call_tool(server, name, arguments, context)


def check_credentials(
    connector: str, credentials: dict[str, Any], context: StepContext
) -> dict[str, Any] | None:
    if connector != CONNECTOR:
        return None
    server = server_from(credentials, context.env)

    async def work(client: Client) -> dict[str, Any]:
        tools = await list_all_tools(client)
        info = client.server_info
        name = " ".join(x for x in (info.name, info.version) if x) if info else ""
        # flat values: the host shows a check's scalar details only
        return {
            "ok": True,
            "server": name or "unnamed server",
            "protocol": client.protocol_version,
            "tools": len(tools),
        }

    return with_session(server, context, work)


def load_options(
    connector: str,
    action: str,
    field: str,
    payload: dict[str, Any],
    credentials: dict[str, Any] | None,
    context: StepContext,
) -> list[dict[str, Any]] | None:
    if connector != CONNECTOR or action != "call_tool" or field != "tool":
        return None
    server = server_from(credentials, context.env)
    tools = with_session(server, context, list_all_tools)
    options = []
    for tool in sorted(tools, key=lambda t: t.name):
        label = tool.title or (tool.annotations.title if tool.annotations else None) or tool.name
        option: dict[str, Any] = {"value": tool.name, "label": label}
        if tool.description:
            option["description"] = tool.description
        option["schema"] = tool.input_schema
        options.append(option)
    return options


__all__ = [
    "CONNECTOR",
    "Server",
    "call_tool",
    "check_credentials",
    "describe_schema",
    "load_options",
    "run_task",
    "server_from",
    "validate_credentials",
    "with_session",
]
