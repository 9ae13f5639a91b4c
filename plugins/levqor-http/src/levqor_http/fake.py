"""A local httpbin-style server for testing levqor-http (and pipelines that call HTTP APIs),
over real HTTP on 127.0.0.1.

The generic HTTP connector has no single upstream API; this fake follows the conventions of
httpbin, the de-facto test service for HTTP clients:

* https://github.com/zapier/httpbin (README endpoint table) and https://httpbin.org/legacy :
  ``/anything`` echoes the request (method, url, args, headers, data, form, json);
  ``/status/:code`` answers that status; ``/redirect-to?url=..&status_code=..`` redirects
  (302 by default); ``/delay/:n`` delays the answer; ``/html`` serves an HTML page;
  ``/response-headers?key=val`` sets response headers.
* RFC 9110 section 10.2.3 (Retry-After) and section 15.4 (3xx redirects): a 303 is followed with
  GET, 307/308 keep the method and body.

Extras for tests: ``/text/:n`` (n bytes of text), ``/bad-json`` (``application/json`` that does
not parse), ``fail_next(status, body, headers)`` (the next request of any path gets that answer)
and ``requests`` (everything received).

Usage::

    with FakeHttpBin() as srv:
        ... payload {"url": srv.url + "/anything/orders", "method": "POST", "json": {...}} ...
        assert srv.requests[0].json() == {...}
"""

from __future__ import annotations

import threading
import time
from collections import deque
from typing import Any
from urllib.parse import parse_qs

from levqor_kernel.testing import FakeServer, Recorded, Reply

__all__ = ["FakeHttpBin"]

_METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE", "HEAD")


class FakeHttpBin:
    """httpbin's useful subset. ``requests`` lists every request received."""

    def __init__(self) -> None:
        self.server = FakeServer()
        self._lock = threading.Lock()
        self._scripted: deque[Reply] = deque()
        for method in _METHODS:
            # FakeServer tries the most recently added route first: the catch-all goes in first
            self.server.route(method, r"/.*", self._scripted_or_404)
            self.server.route(method, r"/anything(/.*)?", self._anything)
            self.server.route(method, r"/status/(\d{3})", self._status)
            self.server.route(method, r"/redirect-to", self._redirect_to)
            self.server.route(method, r"/delay/(\d+(?:\.\d+)?)", self._delay)
            self.server.route(method, r"/html", self._html)
            self.server.route(method, r"/text/(\d+)", self._text)
            self.server.route(method, r"/bad-json", self._bad_json)
            self.server.route(method, r"/response-headers", self._response_headers)

    # ------------------------------------------------------------------ life cycle
    @property
    def url(self) -> str:
        return self.server.url

    @property
    def port(self) -> int:
        return self.server.port

    @property
    def requests(self) -> list[Recorded]:
        return self.server.requests

    def start(self) -> FakeHttpBin:
        self.server.start()
        return self

    def stop(self) -> None:
        self.server.stop()

    def __enter__(self) -> FakeHttpBin:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def reset(self) -> None:
        with self._lock:
            self._scripted.clear()
        self.server.reset()

    def fail_next(
        self,
        status: int,
        body: Any = None,
        headers: dict[str, str] | None = None,
        *,
        delay: float = 0.0,
    ) -> None:
        """Answer the next request (any path) with this reply."""
        with self._lock:
            self._scripted.append(Reply(status, body, dict(headers or {}), delay))

    def _next(self) -> Reply | None:
        with self._lock:
            return self._scripted.popleft() if self._scripted else None

    # ------------------------------------------------------------------ endpoints
    @staticmethod
    def echo(req: Recorded) -> dict[str, Any]:
        """What httpbin's /anything answers for ``req``."""
        ctype = (req.header("Content-Type") or "").split(";")[0].strip().lower()
        text = req.body.decode("utf-8", "replace")
        form: dict[str, Any] = {}
        parsed_json: Any = None
        if ctype == "application/x-www-form-urlencoded":
            form = {k: v[0] if len(v) == 1 else v for k, v in parse_qs(text).items()}
        elif ctype == "application/json" and text:
            try:
                parsed_json = req.json()
            except ValueError:
                parsed_json = None
        return {
            "method": req.method,
            "path": req.path,
            "args": {k: v[0] if len(v) == 1 else v for k, v in req.query.items()},
            "headers": dict(req.headers),
            "data": text,
            "form": form,
            "json": parsed_json,
        }

    def _anything(self, req: Recorded) -> Reply:
        return self._next() or Reply(200, self.echo(req))

    def _status(self, req: Recorded) -> Reply:
        scripted = self._next()
        if scripted:
            return scripted
        assert req.match is not None
        status = int(req.match.group(1))
        headers = {}
        if "retry_after" in req.query:
            headers["Retry-After"] = req.query["retry_after"][0]
        if "location" in req.query:
            headers["Location"] = req.query["location"][0]
        body = {"status": status} if status not in (204, 304) else None
        return Reply(status, body, headers)

    def _redirect_to(self, req: Recorded) -> Reply:
        scripted = self._next()
        if scripted:
            return scripted
        target = req.query.get("url", [""])[0]
        status = int(req.query.get("status_code", ["302"])[0])
        return Reply(status, b"", {"Location": target})

    def _delay(self, req: Recorded) -> Reply:
        assert req.match is not None
        time.sleep(min(float(req.match.group(1)), 10.0))
        return self._next() or Reply(200, self.echo(req))

    def _html(self, req: Recorded) -> Reply:
        return self._next() or Reply(
            200,
            "<!DOCTYPE html><html><body><h1>Herman Melville - Moby-Dick</h1></body></html>",
            {"Content-Type": "text/html; charset=utf-8"},
        )

    def _text(self, req: Recorded) -> Reply:
        assert req.match is not None
        n = int(req.match.group(1))
        return self._next() or Reply(200, ("0123456789" * (n // 10 + 1))[:n])

    def _bad_json(self, req: Recorded) -> Reply:
        return self._next() or Reply(200, b'{"truncated": ', {"Content-Type": "application/json"})

    def _response_headers(self, req: Recorded) -> Reply:
        scripted = self._next()
        if scripted:
            return scripted
        headers = {k: v[0] for k, v in req.query.items()}
        return Reply(200, {k: v for k, v in headers.items()}, headers)

    def _scripted_or_404(self, req: Recorded) -> Reply:
        return self._next() or Reply(404, {"error": "not found", "path": req.path})
