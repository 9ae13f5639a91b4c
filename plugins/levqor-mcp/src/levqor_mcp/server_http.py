"""``POST /mcp``: the MCP server over streamable HTTP, under the host (Flask, WSGI).

The SDK's streamable-HTTP transport is ASGI. Each POST is served on its own: the host signs
the caller in (an API key, a Supabase JWT, or the dashboard session with its CSRF token: the
route declares ``runs:execute``) and parses the body with its one JSON parser (400 malformed,
413 too large, 415 not JSON), then the SDK's session manager, in stateless JSON-response mode,
answers that one JSON-RPC message inside a private event loop in the request's thread. No
session outlives its request, no loop or thread is shared between requests, so this works the
same under the development server and gunicorn's threads. There is no server-sent-event stream:
``GET`` and ``DELETE`` answer 405, as the specification allows a server that offers none.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import anyio
from flask import Blueprint, Response, current_app, request
from levqor_kernel.access import requires
from levqor_kernel.host import Host, HttpError

from .settings import McpSettings

if TYPE_CHECKING:  # the SDK loads on the first message, not with every host process
    from mcp.server import Server

__all__ = ["bp", "serve_one"]

bp = Blueprint("levqor_mcp", __name__)

#: the request headers the SDK does not see: the caller's credentials stay with the host
_KEPT_BACK = frozenset({"authorization", "cookie", "x-csrf-token", "content-length"})


async def _serve(server: Server, scope: dict, body: bytes, max_body: int) -> tuple[int, list, bytes]:
    from mcp.server.streamable_http_manager import StreamableHTTPSessionManager

    manager = StreamableHTTPSessionManager(
        app=server, json_response=True, stateless=True, max_request_body_size=max_body
    )
    status, headers, chunks = 500, [], []
    done = anyio.Event()
    sent_body = False

    async def receive() -> dict:
        nonlocal sent_body
        if not sent_body:
            sent_body = True
            return {"type": "http.request", "body": body, "more_body": False}
        await done.wait()
        return {"type": "http.disconnect"}

    async def send(message: Mapping[str, Any]) -> None:
        nonlocal status, headers
        if message["type"] == "http.response.start":
            status, headers = message["status"], list(message.get("headers") or [])
        elif message["type"] == "http.response.body":
            chunks.append(message.get("body") or b"")
            if not message.get("more_body"):
                done.set()

    async with manager.run():
        await manager.handle_request(scope, receive, send)
    return status, headers, b"".join(chunks)


def serve_one(
    server: Server, headers: Mapping[str, str], body: bytes, *, path: str = "/mcp", max_body: int
) -> tuple[int, list[tuple[str, str]], bytes]:
    """Answer one POSTed JSON-RPC message with ``server`` through the SDK's streamable-HTTP
    transport (stateless, JSON answers), in a private event loop: ``(status, headers, body)``."""
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [
            *(
                (k.lower().encode("latin-1"), v.encode("latin-1"))
                for k, v in headers.items()
                if k.lower() not in _KEPT_BACK
            ),
            (b"content-length", str(len(body)).encode()),
        ],
        "client": None,
        "server": None,
    }
    status, raw, out = anyio.run(_serve, server, scope, body, max_body)
    return status, [(k.decode("latin-1"), v.decode("latin-1")) for k, v in raw], out


def _state() -> Host:
    return current_app.extensions["levqor"]


@bp.post("/mcp")
@requires("runs:execute")
def mcp_endpoint() -> Response:
    """One JSON-RPC message of an MCP client (initialize, tools/list, tools/call, ...)."""
    from .server import build_server

    st = _state()
    settings: McpSettings = current_app.extensions["levqor_mcp"]
    user = st.authenticate("runs:execute")
    # the host's parser first (400 malformed, 413 too large, 415 not JSON), then the body as sent
    message = st.json_body(required=True, max_bytes=settings.max_body_bytes)
    if not isinstance(message, dict):  # MCP has no JSON-RPC batches since 2025-06-18
        raise HttpError(400, "invalid_request", "the body must be a JSON-RPC message (an object)")
    body = request.get_data(cache=True)
    server = build_server(st.pipeline_calls, user, wait_seconds=settings.wait_seconds)
    status, headers, out = serve_one(
        server, dict(request.headers), body, max_body=settings.max_body_bytes
    )
    resp = Response(out, status=status)
    for k, v in headers:
        if k.lower() in ("content-type", "mcp-session-id", "mcp-protocol-version"):
            resp.headers[k] = v
    resp.headers["Cache-Control"] = "no-store"
    return resp


_ERR = {
    "description": "Error",
    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
}
#: what the SDK's transport answers a message it cannot take (a 400 with a JSON-RPC error)
_JSONRPC_ERROR = {
    "type": "object",
    "required": ["jsonrpc", "error"],
    "properties": {
        "jsonrpc": {"const": "2.0"},
        "id": {"type": ["string", "integer", "null"]},
        "error": {
            "type": "object",
            "required": ["code", "message"],
            "properties": {"code": {"type": "integer"}, "message": {"type": "string"}},
        },
    },
}
_BAD_REQUEST = {
    "description": "A request the host or the MCP transport cannot take (not one JSON-RPC "
    "message, a wrong Accept or Content-Type): the host's error, or the transport's JSON-RPC error",
    "content": {
        "application/json": {
            "schema": {"anyOf": [{"$ref": "#/components/schemas/Error"}, _JSONRPC_ERROR]}
        }
    },
}
bp.openapi_paths = {  # type: ignore[attr-defined]
    "/mcp": {
        "post": {
            "summary": "MCP server (streamable HTTP): your pipelines as tools",
            "description": "One JSON-RPC message of the Model Context Protocol (initialize, "
            "tools/list, tools/call, ...), answered as JSON (stateless: no session, no event "
            "stream). Each pipeline with a manual or webhook trigger is a tool; a tool call "
            "is a run (trigger mcp). See docs/mcp.md.",
            "tags": ["mcp"],
            "x-levqor-scope": "runs:execute",
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": {"type": "object"}}},
            },
            "responses": {
                "200": {
                    "description": "The JSON-RPC response",
                    "content": {"application/json": {"schema": {"type": "object"}}},
                },
                "202": {"description": "A notification or response was accepted"},
                **{c: _BAD_REQUEST for c in ("400", "406", "415")},
                **{c: _ERR for c in ("401", "403", "413", "429")},
            },
        }
    }
}
