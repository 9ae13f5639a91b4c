"""An MCP server built with the official SDK, for testing the ``mcp`` connector.

:class:`WeatherServer` is an :class:`mcp.server.MCPServer` with a few tools, served over
streamable HTTP on 127.0.0.1 by uvicorn in a background thread, the way a real deployment
serves one. It checks a bearer token with the SDK's own auth (a :class:`TokenVerifier`: a
request without the right token is refused 401 with ``WWW-Authenticate``, server side) and
records what reached it (JSON-RPC methods, the headers of each request, tool calls), so tests
can tell what the connector sent and what it never sent. Its tools are coroutines: the server
starts no worker thread, so a test can count the threads a client call leaves behind.

Tools:

* ``get_forecast(city, days=1)``: structured output (``{"city", "days", "temp_c",
  "summary"}``, with an output schema);
* ``shout(text)``: text only, no structured content;
* ``repeat(text, times)``: the text ``times`` over (a large answer);
* ``fail(reason)``: always a tool error (``isError``) with ``reason`` in its text;
* ``slow(seconds)``: answers after ``seconds`` (released early when the server stops).
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import anyio
import uvicorn
from mcp.server import MCPServer
from mcp.server.auth.provider import AccessToken
from mcp.server.auth.settings import AuthSettings
from mcp.server.mcpserver.exceptions import ToolError
from pydantic import BaseModel, Field

DEFAULT_TOKEN = "mcp-test-token-0123456789abcdef"


class Forecast(BaseModel):
    city: str
    days: int
    temp_c: float
    summary: str


@dataclass
class Seen:
    """One HTTP request that reached the server."""

    method: str  # HTTP method
    rpc: str | None  # the JSON-RPC method of a POST, when it had one
    headers: dict[str, str]


class _Tokens:
    def __init__(self, token: str) -> None:
        self.token = token

    async def verify_token(self, token: str) -> AccessToken | None:
        if token != self.token:
            return None
        return AccessToken(token=token, client_id="levqor-tests", scopes=[])


@dataclass
class _Record:
    requests: list[Seen] = field(default_factory=list)
    calls: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


#: what a server of the handshake era (protocol 2025-11-25 and before, the 1.x SDKs) answers a
#: request outside a session: the 2026 ``server/discover`` probe gets it, and the client falls
#: back to the ``initialize`` handshake
_NO_SESSION = json.dumps(
    {
        "jsonrpc": "2.0",
        "id": "server-error",
        "error": {"code": -32600, "message": "Bad Request: Missing session ID"},
    }
).encode()


def _recording(app: Any, record: _Record, legacy: bool) -> Any:
    """ASGI middleware noting each request's method, JSON-RPC method and headers (and, for a
    ``legacy`` server, refusing the 2026 discovery probe as a handshake-era server does)."""

    async def wrapped(scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await app(scope, receive, send)
            return
        body = bytearray()
        more = True
        messages = []
        while more:
            message = await receive()
            messages.append(message)
            body.extend(message.get("body", b""))
            more = message.get("type") == "http.request" and message.get("more_body", False)
        rpc = None
        if body:
            try:
                rpc = json.loads(body).get("method")
            except (ValueError, AttributeError):
                rpc = None
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        with record.lock:
            record.requests.append(Seen(scope["method"], rpc, headers))
        if legacy and rpc == "server/discover":
            await send(
                {
                    "type": "http.response.start",
                    "status": 400,
                    "headers": [(b"content-type", b"application/json")],
                }
            )
            await send({"type": "http.response.body", "body": _NO_SESSION})
            return
        replay = iter(messages)

        async def again() -> dict:
            try:
                return next(replay)
            except StopIteration:
                return await receive()

        await app(scope, again, send)

    return wrapped


class WeatherServer:
    """The SDK-built MCP server on a loopback port. Use as a context manager.

    ``token``: the bearer token the server accepts (None: no authentication). ``legacy``: the
    server speaks only the handshake era of the protocol (``initialize``, a session id, the
    GET stream), as servers on the 1.x SDKs do. ``oauth``: a refusal points at the server's OAuth
    protected-resource metadata (``WWW-Authenticate: Bearer resource_metadata=...``), as servers
    that sign clients in with OAuth answer.
    """

    def __init__(
        self,
        token: str | None = DEFAULT_TOKEN,
        *,
        name: str = "weather",
        legacy: bool = False,
        oauth: bool = False,
    ) -> None:
        self.token = token
        self.legacy = legacy
        self.oauth = oauth
        self.name = name
        self.version = "1.4.2"
        self._record = _Record()
        self._stopping = threading.Event()
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self.port = 0
        self.mcp = self._build()

    # ------------------------------------------------------------------ the SDK server
    def _build(self) -> MCPServer:
        auth: dict[str, Any] = {}
        if self.token is not None:
            auth = {
                "token_verifier": _Tokens(self.token),
                "auth": AuthSettings(
                    issuer_url="https://auth.example.com",
                    resource_server_url="https://mcp.example.com/mcp" if self.oauth else None,
                    validate_token_resource=False if self.oauth else None,
                ),
            }
        server = MCPServer(self.name, version=self.version, log_level="WARNING", **auth)
        record, stopping = self._record, self._stopping

        @server.tool(title="Weather forecast")
        async def get_forecast(
            city: str = Field(description="City name", min_length=1),
            days: int = Field(default=1, ge=1, le=7, description="How many days ahead"),
        ) -> Forecast:
            """The forecast for a city."""
            with record.lock:
                record.calls.append(("get_forecast", {"city": city, "days": days}))
            return Forecast(city=city, days=days, temp_c=21.5, summary=f"Sunny in {city}")

        @server.tool(structured_output=False)
        async def shout(text: str) -> str:
            """The text in capitals."""
            with record.lock:
                record.calls.append(("shout", {"text": text}))
            return text.upper()

        @server.tool(structured_output=False)
        async def repeat(text: str, times: int = Field(ge=1, le=100_000_000)) -> str:
            """The text, many times over (a large answer)."""
            with record.lock:
                record.calls.append(("repeat", {"text": text[:20], "times": times}))
            return text * times

        @server.tool()
        async def fail(reason: str) -> str:
            """Always fails with the reason."""
            with record.lock:
                record.calls.append(("fail", {"reason": reason}))
            raise ToolError(f"could not do it: {reason}")

        @server.tool()
        async def slow(seconds: float) -> str:
            """Answers after some seconds."""
            with record.lock:
                record.calls.append(("slow", {"seconds": seconds}))
            end = time.monotonic() + seconds
            while time.monotonic() < end and not stopping.is_set():
                await anyio.sleep(0.05)
            return "done"

        return server

    # ------------------------------------------------------------------ what reached it
    @property
    def url(self) -> str:
        """The streamable HTTP endpoint."""
        return f"http://127.0.0.1:{self.port}/mcp"

    @property
    def requests(self) -> list[Seen]:
        with self._record.lock:
            return list(self._record.requests)

    @property
    def calls(self) -> list[tuple[str, dict[str, Any]]]:
        """The tool calls that reached a tool's code, in order."""
        with self._record.lock:
            return list(self._record.calls)

    def rpc_methods(self) -> list[str]:
        return [s.rpc for s in self.requests if s.rpc]

    def reset(self) -> None:
        with self._record.lock:
            self._record.requests.clear()
            self._record.calls.clear()

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> WeatherServer:
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        self.port = sock.getsockname()[1]
        app = _recording(self.mcp.streamable_http_app(), self._record, self.legacy)
        config = uvicorn.Config(
            app, log_level="warning", lifespan="on", timeout_graceful_shutdown=2
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [sock]}, name="mcp-test-server", daemon=True
        )
        self._thread.start()
        end = time.monotonic() + 30
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > end:
                raise RuntimeError("the MCP test server did not start")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        self._stopping.set()
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(10)

    def __enter__(self) -> WeatherServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


@contextmanager
def weather_server(
    token: str | None = DEFAULT_TOKEN, *, legacy: bool = False
) -> Iterator[WeatherServer]:
    """``with weather_server() as srv:``: a started :class:`WeatherServer`, stopped after."""
    with WeatherServer(token, legacy=legacy) as srv:
        yield srv
