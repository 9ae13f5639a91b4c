"""The HTTP under the MCP client: an ``httpx2`` transport that only reaches what the SSRF guard
allows, reads bounded bodies and remembers how the server refused.

The ``mcp`` SDK speaks streamable HTTP through an ``httpx2.AsyncClient`` it is handed. This
transport gives that client:

* connections through :class:`GuardedBackend`: the host name is resolved once by the kernel's
  :class:`~levqor_kernel.http.UrlGuard` (which refuses loopback, private, link-local and other
  non-public addresses unless the operator allowed them with ``LEVQOR_SSRF_ALLOW``), the socket
  connects to an address that resolution returned (a second DNS answer cannot rebind it) and the
  peer it reached is checked again; every request, redirects included, opens its connections
  here. No proxy from the environment is used (it would bypass the check) and no Unix socket;
* a cap on every response body (:data:`~levqor_kernel.http.MAX_RESPONSE_BYTES`);
* :attr:`GuardedTransport.failure`: the status, ``Retry-After`` and an excerpt of the body of the
  last refused POST (the SDK turns an HTTP refusal into a JSON-RPC error that has lost the
  status; the connector needs it to tell a bad token from a rate limit).
"""

from __future__ import annotations

import contextlib
import ipaddress
from collections.abc import AsyncIterable, AsyncIterator, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import anyio
import httpcore2
import httpx2
from levqor_kernel.errors import BlockedURLError
from levqor_kernel.http import MAX_RESPONSE_BYTES, UrlGuard, parse_retry_after

#: how much of a refusal's body is read, and how much is kept for the error message
FAILURE_READ_BYTES = 64 * 1024
FAILURE_BODY_BYTES = 2048

# httpcore2's exceptions as httpx2's (the SDK catches the latter); the most specific first
_EXCEPTIONS: tuple[tuple[type[Exception], type[httpx2.HTTPError]], ...] = (
    (httpcore2.ConnectTimeout, httpx2.ConnectTimeout),
    (httpcore2.ReadTimeout, httpx2.ReadTimeout),
    (httpcore2.WriteTimeout, httpx2.WriteTimeout),
    (httpcore2.PoolTimeout, httpx2.PoolTimeout),
    (httpcore2.TimeoutException, httpx2.TimeoutException),
    (httpcore2.ConnectError, httpx2.ConnectError),
    (httpcore2.ReadError, httpx2.ReadError),
    (httpcore2.WriteError, httpx2.WriteError),
    (httpcore2.NetworkError, httpx2.NetworkError),
    (httpcore2.UnsupportedProtocol, httpx2.UnsupportedProtocol),
    (httpcore2.RemoteProtocolError, httpx2.RemoteProtocolError),
    (httpcore2.LocalProtocolError, httpx2.LocalProtocolError),
    (httpcore2.ProtocolError, httpx2.ProtocolError),
)


@contextlib.contextmanager
def _httpx_errors() -> Iterator[None]:
    try:
        yield
    except httpcore2.ProxyError as e:  # never configured; mapped for completeness
        raise httpx2.ProxyError(str(e)) from e
    except Exception as e:
        for source, target in _EXCEPTIONS:
            if isinstance(e, source):
                raise target(str(e)) from e
        raise


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return True


class ResponseTooLarge(httpx2.ReadError):
    """A response body went past the transport's limit."""


@dataclass(frozen=True)
class Failure:
    """How the server refused a POST: status, the delay it asked for, the start of its body."""

    status: int
    retry_after: float | None
    content_type: str
    body: bytes
    www_authenticate: str = ""


class GuardedBackend(httpcore2.AsyncNetworkBackend):
    """Opens TCP connections only to addresses :class:`UrlGuard` allows."""

    def __init__(self, guard: UrlGuard) -> None:
        self.guard = guard
        self._inner = httpcore2.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore2.AsyncNetworkStream:
        if _is_ip(host):  # nothing to look up: no thread
            infos = self.guard.resolve(host, port)
        else:
            # getaddrinfo blocks: in a worker thread (it ends by itself when the loop closes),
            # given up, not waited for, when the call's deadline cancels it
            with anyio.fail_after(timeout):
                infos = await anyio.to_thread.run_sync(
                    self.guard.resolve, host, port, abandon_on_cancel=True
                )
        last: Exception | None = None
        for info in infos:
            address = info[4][0]
            try:
                stream = await self._inner.connect_tcp(
                    address,
                    port,
                    timeout=timeout,
                    local_address=local_address,
                    socket_options=socket_options,
                )
            except httpcore2.ConnectError as e:
                last = e
                continue
            peer = stream.get_extra_info("server_addr")
            if not self.guard.host_allowed(host) and not (
                peer and self.guard.ip_allowed(str(peer[0]))
            ):
                await stream.aclose()
                raise BlockedURLError("destination address is not public", code="blocked_url")
            return stream
        raise last or httpcore2.ConnectError(f"no address to connect to for {host}")

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore2.AsyncNetworkStream:
        raise BlockedURLError("Unix sockets are not used for MCP servers", code="blocked_url")

    async def sleep(self, seconds: float) -> None:
        await anyio.sleep(seconds)


class _BoundedStream(httpx2.AsyncByteStream):
    """A response body that stops with :class:`ResponseTooLarge` past ``limit`` bytes."""

    def __init__(self, inner: AsyncIterable[bytes], limit: int) -> None:
        self._inner = inner
        self._limit = limit
        self._read = 0

    async def __aiter__(self) -> AsyncIterator[bytes]:
        with _httpx_errors():
            async for chunk in self._inner:
                self._read += len(chunk)
                if self._read > self._limit:
                    raise ResponseTooLarge(f"response larger than {self._limit} bytes")
                yield chunk

    async def aclose(self) -> None:
        closer = getattr(self._inner, "aclose", None)
        if closer is not None:
            with _httpx_errors():
                await closer()


class GuardedTransport(httpx2.AsyncBaseTransport):
    """An ``httpx2`` transport over :class:`GuardedBackend`, for one MCP call.

    ``failure`` is the last refused POST (reset by the next POST that succeeds); ``too_large``
    is set once a body went past ``max_response_bytes``.
    """

    def __init__(
        self,
        guard: UrlGuard,
        *,
        max_response_bytes: int = MAX_RESPONSE_BYTES,
        verify: Any = True,
    ) -> None:
        self.max_response_bytes = max_response_bytes
        self.failure: Failure | None = None
        self.too_large = False
        self._pool = httpcore2.AsyncConnectionPool(
            ssl_context=httpx2.create_ssl_context(verify=verify, trust_env=False),
            max_connections=4,
            network_backend=GuardedBackend(guard),
        )

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        core_request = httpcore2.Request(
            method=request.method,
            url=httpcore2.URL(
                scheme=request.url.raw_scheme,
                host=request.url.raw_host,
                port=request.url.port,
                target=request.url.raw_path,
            ),
            headers=request.headers.raw,
            content=request.stream,
            extensions=request.extensions,
        )
        with _httpx_errors():
            response = await self._pool.handle_async_request(core_request)
        stream = _BoundedStream(response.stream, self.max_response_bytes)  # type: ignore[arg-type]
        headers = httpx2.Headers(response.headers)
        if request.method == "POST":
            if response.status >= 400:
                return await self._refused(response.status, headers, stream, response.extensions)
            if response.status < 300:
                self.failure = None
        return httpx2.Response(
            status_code=response.status,
            headers=headers,
            stream=_Watched(stream, self),
            extensions=response.extensions,
        )

    async def _refused(
        self,
        status: int,
        headers: httpx2.Headers,
        stream: _BoundedStream,
        extensions: Any,
    ) -> httpx2.Response:
        """Read a refusal's body (bounded), remember it, and hand it on whole when it fit."""
        raw = bytearray()
        complete = True
        try:
            async for chunk in stream:
                raw.extend(chunk)
                if len(raw) > FAILURE_READ_BYTES:
                    complete = False
                    break
        finally:
            await stream.aclose()
        kept = headers
        if not complete:  # a cut body cannot be decoded: hand on what there is, as it is
            kept = httpx2.Headers(
                [
                    (k, v)
                    for k, v in headers.multi_items()
                    if k.lower() not in ("content-length", "content-encoding")
                ]
            )
        response = httpx2.Response(
            status_code=status, headers=kept, content=bytes(raw), extensions=extensions
        )
        try:
            text = response.read()[:FAILURE_BODY_BYTES]
        except httpx2.DecodingError:
            text = b""
        self.failure = Failure(
            status=status,
            retry_after=parse_retry_after(headers.get("retry-after")),
            content_type=headers.get("content-type", ""),
            body=text,
            www_authenticate=headers.get("www-authenticate", ""),
        )
        return httpx2.Response(
            status_code=status, headers=kept, content=bytes(raw), extensions=extensions
        )

    async def aclose(self) -> None:
        await self._pool.aclose()


class _Watched(httpx2.AsyncByteStream):
    """Marks the transport when a body turns out too large (the SDK may swallow the error)."""

    def __init__(self, inner: _BoundedStream, transport: GuardedTransport) -> None:
        self._inner = inner
        self._transport = transport

    async def __aiter__(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self._inner:
                yield chunk
        except ResponseTooLarge:
            self._transport.too_large = True
            raise

    async def aclose(self) -> None:
        await self._inner.aclose()
