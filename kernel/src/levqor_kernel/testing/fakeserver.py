"""A local HTTP server for tests: real HTTP over loopback, scripted answers, recorded requests.

Fakes of third-party APIs are built on it: register handlers per method and path (exact, or
a regular expression), queue one-shot answers to script failures (429 then 200), and read
back what arrived in ``server.requests``.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit


@dataclass
class Recorded:
    """One request the fake server received."""

    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: bytes
    match: re.Match | None = None

    def json(self) -> Any:
        return json.loads(self.body.decode("utf-8"))

    def header(self, name: str, default: str | None = None) -> str | None:
        for k, v in self.headers.items():
            if k.lower() == name.lower():
                return v
        return default


@dataclass
class Reply:
    """An answer: status, body (dict/list -> JSON, str, bytes), headers, optional delay."""

    status: int = 200
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0


Handler = Callable[[Recorded], "Reply | tuple | dict | None"]


def _as_reply(value: Any) -> Reply:
    if isinstance(value, Reply):
        return value
    if isinstance(value, tuple):
        return Reply(*value)
    if value is None:
        return Reply(204, b"")
    return Reply(200, value)


class FakeServer:
    """``with FakeServer() as srv: srv.route("POST", "/x", lambda req: {"ok": True})``."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        self.requests: list[Recorded] = []
        self._routes: list[tuple[str, re.Pattern, Handler]] = []
        self._queues: dict[tuple[str, str], deque[Reply]] = {}
        self._lock = threading.Lock()
        self.default: Reply | None = None
        outer = self

        class _H(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # headers and body go out in separate writes on keep-alive

            def log_message(self, *a: Any) -> None:  # keep test output quiet
                pass

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                parts = urlsplit(self.path)
                rec = Recorded(
                    self.command,
                    parts.path,
                    parse_qs(parts.query),
                    dict(self.headers.items()),
                    body,
                )
                reply = outer._dispatch(rec)
                if reply.delay:
                    time.sleep(reply.delay)
                payload = reply.body
                headers = dict(reply.headers)
                if isinstance(payload, (dict, list)):
                    data = json.dumps(payload).encode()
                    headers.setdefault("Content-Type", "application/json")
                elif isinstance(payload, str):
                    data = payload.encode()
                    headers.setdefault("Content-Type", "text/plain; charset=utf-8")
                elif payload is None:
                    data = b""
                else:
                    data = bytes(payload)
                try:
                    self.send_response(reply.status)
                    for k, v in headers.items():
                        self.send_header(k, v)
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    if self.command != "HEAD":
                        self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = _handle

        self._server = ThreadingHTTPServer((host, 0), _H)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    # ---------------------------------------------------------------- set-up
    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    @property
    def port(self) -> int:
        return self._server.server_address[1]

    def start(self) -> FakeServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> FakeServer:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def route(self, method: str, path: str, handler: Handler | Any) -> None:
        """Answer ``method path`` (a regex, fully matched) with ``handler(request)`` or a fixed value."""
        fn = handler if callable(handler) else (lambda _req, _v=handler: _v)
        with self._lock:
            self._routes.insert(0, (method.upper(), re.compile(path), fn))

    def queue(self, method: str, path: str, *replies: Reply | tuple) -> None:
        """One-shot answers for ``method path`` (exact path), used before any route."""
        with self._lock:
            q = self._queues.setdefault((method.upper(), path), deque())
            q.extend(_as_reply(r) for r in replies)

    def answer_all(self, reply: Reply | tuple | None) -> None:
        """Answer every request with ``reply`` (used by the contract kit)."""
        self.default = None if reply is None else _as_reply(reply)

    def reset(self) -> None:
        with self._lock:
            self.requests.clear()
            self._queues.clear()

    # ---------------------------------------------------------------- dispatch
    def _dispatch(self, rec: Recorded) -> Reply:
        with self._lock:
            self.requests.append(rec)
            q = self._queues.get((rec.method, rec.path))
            if q:
                return q.popleft()
            routes = list(self._routes)
        if self.default is not None:
            return self.default
        for method, pattern, fn in routes:
            if method == rec.method:
                m = pattern.fullmatch(rec.path)
                if m:
                    rec.match = m
                    try:
                        return _as_reply(fn(rec))
                    except Exception as e:  # noqa: BLE001 - a broken fake answers 500, visibly
                        return Reply(500, {"fake_server_error": repr(e)})
        return Reply(404, {"error": "not found", "path": rec.path})

    def requests_to(self, path: str, method: str | None = None) -> list[Recorded]:
        return [
            r for r in self.requests if r.path == path and (method is None or r.method == method)
        ]
