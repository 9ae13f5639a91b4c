"""The HTTP helper every connector shares.

* one ``requests`` session per :class:`Http`, connect and read timeouts, a
  ``levqor/<version>`` User-Agent, and a per-step deadline that caps every timeout;
* 429, 5xx, timeouts and connection failures become :class:`RetryableError` (with the
  Retry-After delay when the upstream gave one), 401/403 :class:`CredentialError`, other 4xx
  :class:`PermanentError`;
* secrets (tokens, webhook paths, API keys) are redacted from every error message;
* the SSRF guard (:class:`UrlGuard`) for URLs a user supplied: it checks the address the
  socket is about to connect to (after DNS, on every redirect hop), so any address the IANA
  special-purpose registries do not mark globally reachable (loopback, private, shared,
  link-local, documentation, benchmarking, protocol assignments, site-local, ...), the IPv6
  forms that carry one (IPv4-mapped, NAT64, 6to4, Teredo) and decimal/octal spellings are all
  refused before a single byte is sent.
"""

from __future__ import annotations

import email.utils
import heapq
import http.cookiejar
import ipaddress
import re
import socket
import threading
import time
from collections.abc import Callable, Iterable, Mapping, MutableMapping
from typing import Any
from urllib.parse import urlsplit

import requests
from requests.adapters import HTTPAdapter
from urllib3 import connection as u3_connection
from urllib3 import connectionpool as u3_pool
from urllib3.util import connection as u3_util_connection

from . import __version__
from .errors import (
    BlockedURLError,
    ConnectorError,
    CredentialError,
    PermanentError,
    RetryableError,
)

USER_AGENT = f"levqor/{__version__}"
DEFAULT_TIMEOUT = (5.0, 30.0)
MAX_RESPONSE_BYTES = 10 * 1024 * 1024
REDACTED = "***"

# Patterns for secrets that appear inside URLs or headers even when nobody registered them.
_SECRET_PATTERNS = [
    # Telegram bot tokens: /bot123456:AAE.../sendMessage
    (re.compile(r"(/bot)\d{3,}:[A-Za-z0-9_-]{10,}"), r"\1" + REDACTED),
    # Slack incoming webhook paths
    (re.compile(r"(hooks\.slack\.com/services/)[A-Za-z0-9/_-]+"), r"\1" + REDACTED),
    (re.compile(r"(/services/)T[A-Za-z0-9]+/B[A-Za-z0-9]+/[A-Za-z0-9]+"), r"\1" + REDACTED),
    # Bearer tokens and basic credentials in headers or text
    (re.compile(r"(?i)(bearer\s+)[A-Za-z0-9._~+/=-]{6,}"), r"\1" + REDACTED),
    (re.compile(r"(?i)(basic\s+)[A-Za-z0-9+/=]{6,}"), r"\1" + REDACTED),
    # key=value query parameters that look secret
    (
        re.compile(
            r"(?i)([?&](?:api[_-]?key|key|token|access_token|secret|password|sig|signature)=)[^&\s\"']+"
        ),
        r"\1" + REDACTED,
    ),
    # Well-known key prefixes
    (
        re.compile(
            r"\b(re_|sk_live_|sk_test_|rk_live_|rk_test_|whsec_|secret_|ntn_|xox[abposr]-|lvq_)[A-Za-z0-9_-]{16,}"
        ),
        r"\1" + REDACTED,
    ),
    # user:password@ in URLs
    (re.compile(r"(://[^/\s:@]+:)[^@\s/]+@"), r"\1" + REDACTED + "@"),
]


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    """Return ``text`` with every given secret and every known secret shape replaced by ``***``."""
    if not text:
        return text
    out = str(text)
    for s in sorted(
        {s for s in secrets if isinstance(s, str) and len(s) >= 4}, key=len, reverse=True
    ):
        out = out.replace(s, REDACTED)
    for pattern, repl in _SECRET_PATTERNS:
        out = pattern.sub(repl, out)
    return out


def secrets_in(obj: Any) -> list[str]:
    """Every string value inside a credentials mapping (recursively), for redaction."""
    found: list[str] = []
    if isinstance(obj, str):
        found.append(obj)
        # a URL credential's path or a JSON key's private key body leaks in pieces too
        parts = urlsplit(obj) if "://" in obj else None
        if parts and parts.path and len(parts.path) > 8:
            found.append(parts.path)
    elif isinstance(obj, Mapping):
        for v in obj.values():
            found.extend(secrets_in(v))
    elif isinstance(obj, (list, tuple)):
        for v in obj:
            found.extend(secrets_in(v))
    return found


# --------------------------------------------------------------------------- SSRF guard


def _parse_allow(entries: Iterable[str]) -> tuple[set[str], list[ipaddress._BaseNetwork]]:
    hosts: set[str] = set()
    nets: list[ipaddress._BaseNetwork] = []
    for raw in entries:
        item = raw.strip().lower()
        if not item:
            continue
        try:
            nets.append(ipaddress.ip_network(item.strip("[]"), strict=False))
        except ValueError:
            hosts.add(item)
    return hosts, nets


# The IANA special-purpose address registries (iana-ipv4-special-registry,
# iana-ipv6-special-registry), column "Globally Reachable": the most specific block containing
# an address decides. Blocks marked N/A there (6to4, Teredo) and the NAT64 and IPv4-mapped
# forms are judged by the IPv4 address they carry. Python's ``ipaddress.is_global`` is not used:
# its answer changes between patch releases (3.11.7 calls 192.0.0.8 and fec0::/10 global) and
# lags the registries.
SPECIAL_PURPOSE_BLOCKS: tuple[tuple[str, bool], ...] = (
    # IPv4
    ("0.0.0.0/8", False),
    ("0.0.0.0/32", False),
    ("10.0.0.0/8", False),
    ("100.64.0.0/10", False),
    ("127.0.0.0/8", False),
    ("169.254.0.0/16", False),
    ("172.16.0.0/12", False),
    ("192.0.0.0/24", False),
    ("192.0.0.0/29", False),
    ("192.0.0.8/32", False),
    ("192.0.0.9/32", True),
    ("192.0.0.10/32", True),
    ("192.0.0.170/32", False),
    ("192.0.0.171/32", False),
    ("192.0.2.0/24", False),
    ("192.31.196.0/24", True),
    ("192.52.193.0/24", True),
    ("192.88.99.0/24", False),  # deprecated 6to4 relay anycast (RFC 7526)
    ("192.168.0.0/16", False),
    ("192.175.48.0/24", True),
    ("198.18.0.0/15", False),
    ("198.51.100.0/24", False),
    ("203.0.113.0/24", False),
    ("240.0.0.0/4", False),
    ("255.255.255.255/32", False),
    ("224.0.0.0/4", False),  # multicast (IPv4 address space registry)
    # IPv6 (outside 2000::/3 nothing is global unicast: see is_public_ip)
    ("::1/128", False),
    ("::/128", False),
    ("64:ff9b:1::/48", False),
    ("100::/64", False),
    ("100:0:0:1::/64", False),
    ("2001::/23", False),
    ("2001:1::1/128", True),
    ("2001:1::2/128", True),
    ("2001:1::3/128", True),
    ("2001:2::/48", False),
    ("2001:3::/32", True),
    ("2001:4:112::/48", True),
    ("2001:10::/28", False),
    ("2001:20::/28", True),
    ("2001:30::/28", True),
    ("2001:db8::/32", False),
    ("2620:4f:8000::/48", True),
    ("3fff::/20", False),
    ("5f00::/16", False),
    ("fc00::/7", False),
    ("fe80::/10", False),
)
_SPECIAL = sorted(
    ((ipaddress.ip_network(net), reachable) for net, reachable in SPECIAL_PURPOSE_BLOCKS),
    key=lambda e: -e[0].prefixlen,
)
_V6_GLOBAL_UNICAST = ipaddress.IPv6Network("2000::/3")
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")


def _embedded_ipv4(ip: ipaddress.IPv6Address) -> tuple[ipaddress.IPv4Address, ...]:
    """The IPv4 addresses a packet to ``ip`` ends up at (IPv4-mapped, NAT64, 6to4, Teredo)."""
    if ip.ipv4_mapped is not None:
        return (ip.ipv4_mapped,)
    if ip in _NAT64:
        return (ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF),)
    if ip.sixtofour is not None:
        return (ip.sixtofour,)
    if ip.teredo is not None:
        return ip.teredo  # the Teredo server and the client's public address
    return ()


def _effective_ip(ip: ipaddress._BaseAddress) -> ipaddress._BaseAddress:
    if isinstance(ip, ipaddress.IPv6Address):
        embedded = _embedded_ipv4(ip)
        if embedded:
            return embedded[-1]
        # IPv4-compatible ::a.b.c.d (deprecated but still routable by some stacks)
        if int(ip) >> 32 == 0 and int(ip) > 1:
            return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return ip


def is_public_ip(ip: str | ipaddress._BaseAddress) -> bool:
    """True when ``ip`` is globally reachable per the IANA special-purpose address registries.

    An IPv6 address that carries an IPv4 one (mapped, NAT64, 6to4, Teredo) is public only when
    every IPv4 address it carries is; other IPv6 addresses must be global unicast (2000::/3).
    """
    addr = ipaddress.ip_address(ip) if isinstance(ip, str) else ip
    if isinstance(addr, ipaddress.IPv6Address):
        if addr.scope_id:
            return False
        embedded = _embedded_ipv4(addr)
        if embedded:
            return all(is_public_ip(v4) for v4 in embedded)
        if addr not in _V6_GLOBAL_UNICAST:
            return False
    for net, reachable in _SPECIAL:
        if net.version == addr.version and addr in net:
            return reachable
    return True


class UrlGuard:
    """Refuses connections to non-public addresses unless the operator allowed them.

    ``allow`` holds host names (``internal.example.com``) and networks (``10.1.0.0/16``,
    ``127.0.0.1``); none by default. :meth:`from_env` reads ``LEVQOR_SSRF_ALLOW`` (comma
    separated) from the settings a step is handed.
    """

    def __init__(self, allow: Iterable[str] | None = None) -> None:
        self.allow_hosts, self.allow_nets = _parse_allow(allow or ())

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> UrlGuard:
        """The guard of a step's settings (:attr:`StepContext.env`)."""
        return cls((env.get("LEVQOR_SSRF_ALLOW") or "").split(","))

    def host_allowed(self, host: str) -> bool:
        return host.lower().rstrip(".") in self.allow_hosts

    def ip_allowed(self, ip: str) -> bool:
        addr = ipaddress.ip_address(ip.split("%", 1)[0])
        eff = _effective_ip(addr)
        if any(
            eff in n or addr in n
            for n in self.allow_nets
            if n.version in (eff.version, addr.version)
        ):
            return True
        return is_public_ip(addr)

    def check_url(self, url: str) -> None:
        """Refuse a URL with a scheme other than http(s), credentials, or a forbidden host."""
        try:
            parts = urlsplit(url)
        except ValueError as e:
            raise BlockedURLError(f"invalid URL: {e}", code="blocked_url") from None
        if parts.scheme not in ("http", "https"):
            raise BlockedURLError("only http and https URLs are allowed", code="blocked_url")
        if not parts.hostname:
            raise BlockedURLError("URL has no host", code="blocked_url")
        if parts.username or parts.password:
            raise BlockedURLError(
                "URLs with embedded credentials are not allowed", code="blocked_url"
            )
        try:
            port = parts.port or (443 if parts.scheme == "https" else 80)
        except ValueError:
            raise BlockedURLError("invalid port", code="blocked_url") from None
        self.resolve(parts.hostname, port)

    def resolve(self, host: str, port: int) -> list[tuple]:
        """Resolve ``host`` and return getaddrinfo entries, refusing any non-allowed address."""
        host = host.strip("[]")
        try:
            infos = socket.getaddrinfo(host, port, 0, socket.SOCK_STREAM)
        except socket.gaierror as e:
            raise BlockedURLError(
                f"cannot resolve host: {e.strerror}", code="blocked_url"
            ) from None
        if self.host_allowed(host):
            return infos
        if not infos:
            raise BlockedURLError("host resolves to no address", code="blocked_url")
        for info in infos:
            ip = info[4][0]
            if not self.ip_allowed(ip):
                raise BlockedURLError(
                    "destination address is not public (loopback, private, link-local or "
                    "reserved); an operator can allow it with LEVQOR_SSRF_ALLOW",
                    code="blocked_url",
                )
        return infos


class _GuardedMixin:
    levqor_guard: UrlGuard

    def _new_conn(self):  # type: ignore[override]
        guard: UrlGuard = self.levqor_guard
        infos = guard.resolve(self._dns_host, self.port)  # type: ignore[attr-defined]
        err: OSError | None = None
        for family, socktype, proto, _canon, sockaddr in infos:
            sock = None
            try:
                sock = socket.socket(family, socktype, proto)
                u3_util_connection._set_socket_options(sock, self.socket_options)  # type: ignore[attr-defined]
                timeout = self.timeout  # type: ignore[attr-defined]
                if isinstance(timeout, (int, float)):
                    sock.settimeout(timeout)
                if self.source_address:  # type: ignore[attr-defined]
                    sock.bind(self.source_address)  # type: ignore[attr-defined]
                sock.connect(sockaddr)
                # DNS answered twice? The peer we reached is what counts.
                peer = sock.getpeername()[0]
                if not guard.host_allowed(self._dns_host) and not guard.ip_allowed(peer):  # type: ignore[attr-defined]
                    sock.close()
                    raise BlockedURLError("destination address is not public", code="blocked_url")
                return sock
            except BlockedURLError:
                raise
            except OSError as e:
                err = e
                if sock is not None:
                    sock.close()
        from urllib3.exceptions import NewConnectionError

        raise NewConnectionError(self, f"Failed to establish a new connection: {err}")  # type: ignore[arg-type]


def _guarded_pools(guard: UrlGuard) -> dict[str, type]:
    http_conn = type(
        "GuardedHTTPConnection",
        (_GuardedMixin, u3_connection.HTTPConnection),
        {"levqor_guard": guard},
    )
    https_conn = type(
        "GuardedHTTPSConnection",
        (_GuardedMixin, u3_connection.HTTPSConnection),
        {"levqor_guard": guard},
    )
    http_pool = type(
        "GuardedHTTPConnectionPool", (u3_pool.HTTPConnectionPool,), {"ConnectionCls": http_conn}
    )
    https_pool = type(
        "GuardedHTTPSConnectionPool", (u3_pool.HTTPSConnectionPool,), {"ConnectionCls": https_conn}
    )
    return {"http": http_pool, "https": https_pool}


class GuardedAdapter(HTTPAdapter):
    """A requests adapter whose connections go through a :class:`UrlGuard`."""

    def __init__(self, guard: UrlGuard, **kwargs: Any) -> None:
        self._levqor_guard = guard
        super().__init__(**kwargs)

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = _guarded_pools(self._levqor_guard)
        self.poolmanager.key_fn_by_scheme = dict(self.poolmanager.key_fn_by_scheme)

    def get_connection_with_tls_context(self, request, verify, proxies=None, cert=None):  # type: ignore[override]
        if proxies and any(proxies.values()):
            raise BlockedURLError("proxies are not used for guarded requests", code="blocked_url")
        return super().get_connection_with_tls_context(request, verify, proxies=proxies, cert=cert)


# --------------------------------------------------------------------------- responses


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or HTTP date)."""
    if value is None:
        return None
    value = str(value).strip()
    if not value:
        return None
    try:
        secs = float(value)
        return max(0.0, secs) if secs == secs and secs != float("inf") else None
    except ValueError:
        pass
    try:
        dt = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if dt is None:
        return None
    return max(0.0, dt.timestamp() - (now if now is not None else time.time()))


def error_for_response(
    resp: requests.Response,
    *,
    detail: str | None = None,
    retry_after: float | None = None,
    secrets: Iterable[str] = (),
    service: str = "upstream",
) -> ConnectorError:
    """Map a non-success response to the right :class:`ConnectorError` subclass."""
    status = resp.status_code
    if retry_after is None:
        retry_after = parse_retry_after(resp.headers.get("Retry-After"))
    if detail is None:
        try:
            detail = resp.text[:300]
        except Exception:  # noqa: BLE001 - undecodable bodies are just not shown
            detail = ""
    detail = redact((detail or "").strip(), secrets)
    msg = f"{service} answered HTTP {status}" + (f": {detail}" if detail else "")
    if status == 429:
        return RetryableError(msg, status=status, retry_after=retry_after, code="rate_limited")
    if status >= 500 or status == 408:
        return RetryableError(msg, status=status, retry_after=retry_after, code="upstream_error")
    if status in (401, 403):
        return CredentialError(
            msg, status=status, code="unauthorized" if status == 401 else "forbidden"
        )
    return PermanentError(
        msg, status=status, code="bad_request" if status == 400 else f"http_{status}"
    )


class _Watchdog:
    """One daemon thread for every deadline in the process (a timer thread per request
    would cost more than the request on a fast local API)."""

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, _Deadline]] = []
        self._cv = threading.Condition()
        self._seq = 0
        self._thread: threading.Thread | None = None

    def schedule(self, when: float, resp: requests.Response) -> _Deadline:
        d = _Deadline(resp)
        with self._cv:
            self._seq += 1
            heapq.heappush(self._heap, (when, self._seq, d))
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(
                    target=self._run, name="levqor-http-deadlines", daemon=True
                )
                self._thread.start()
            self._cv.notify()
        return d

    def _run(self) -> None:
        while True:
            with self._cv:
                while not self._heap:
                    self._cv.wait()
                when, _, d = self._heap[0]
                left = when - time.monotonic()
                if left > 0:
                    self._cv.wait(left)
                    continue
                heapq.heappop(self._heap)
            if d.active:
                d.fire()


class _Deadline:
    def __init__(self, resp: requests.Response) -> None:
        self.resp = resp
        self.active = True
        self.fired = False

    def cancel(self) -> None:
        self.active = False
        self.resp = None  # type: ignore[assignment]

    def fire(self) -> None:
        resp = self.resp
        if resp is None:
            return
        self.fired = True
        conn = getattr(resp.raw, "connection", None) or getattr(resp.raw, "_connection", None)
        sock = getattr(conn, "sock", None)
        try:
            if sock is not None:
                sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass


_WATCHDOG = _Watchdog()
_LOCAL = threading.local()


# headers that carry credentials by convention: dropped on a redirect to another origin,
# whatever their value (requests itself drops only Authorization)
_CREDENTIAL_HEADERS = frozenset(
    {
        "authorization",
        "proxy-authorization",
        "cookie",
        "x-api-key",
        "api-key",
        "x-auth-token",
        "x-access-token",
    }
)
_MIN_SECRET_IN_HEADER = 8  # shorter credential values ("json", "true") are not looked for


def drop_credential_headers(
    headers: MutableMapping[str, Any], secrets: Iterable[str] = (), names: Iterable[str] = ()
) -> None:
    """Remove from ``headers``, in place, what must not follow a redirect to another origin:
    the conventional credential headers (``Authorization``, ``Cookie``, ``X-Api-Key``...), the
    headers named in ``names``, and every header whose value holds one of ``secrets`` (those of
    at least 8 characters)."""
    drop = _CREDENTIAL_HEADERS | {n.lower() for n in names}
    held = [x for x in secrets if len(x) >= _MIN_SECRET_IN_HEADER]
    for name in list(headers):
        if name.lower() in drop or any(x in str(headers[name]) for x in held):
            del headers[name]


class _Session(requests.Session):
    """A session whose redirects to another origin (scheme, host or port) also drop every
    header that carries one of the step's secrets (an ``X-Api-Key``, a token in a custom
    header), not only ``Authorization``: a connector author never has to think about it."""

    redirect_secrets: tuple[str, ...] = ()

    def rebuild_auth(
        self, prepared_request: requests.PreparedRequest, response: requests.Response
    ) -> None:
        old_url = response.request.url if response.request is not None else None
        new_url = prepared_request.url
        if old_url and new_url and self.should_strip_auth(old_url, new_url):
            drop_credential_headers(prepared_request.headers, self.redirect_secrets)
        super().rebuild_auth(prepared_request, response)


def _no_cookies(s: requests.Session) -> requests.Session:
    # sessions are shared by the steps a thread runs: nothing may carry over between them
    s.cookies.set_policy(http.cookiejar.DefaultCookiePolicy(allowed_domains=[]))
    return s


def _thread_session(guard: UrlGuard | None) -> requests.Session:
    """A keep-alive session per thread (and per guard configuration), reused across steps."""
    cache = getattr(_LOCAL, "sessions", None)
    if cache is None:
        cache = _LOCAL.sessions = {}
    key = (
        None
        if guard is None
        else (tuple(sorted(guard.allow_hosts)), tuple(sorted(map(str, guard.allow_nets))))
    )
    s = cache.get(key)
    if s is None:
        s = _no_cookies(_Session())
        s.headers["User-Agent"] = USER_AGENT
        s.max_redirects = 5
        if guard is not None:
            s.trust_env = False  # an environment proxy would bypass the address check
            adapter = GuardedAdapter(guard)
            s.mount("http://", adapter)
            s.mount("https://", adapter)
        cache[key] = s
    return s


class Http:
    """A configured requests session for one step (or one connector instance).

    ``deadline`` is a ``time.monotonic()`` instant after which no request may still be
    waiting; ``secrets`` are redacted from every error this helper raises.
    """

    def __init__(
        self,
        *,
        timeout: tuple[float, float] = DEFAULT_TIMEOUT,
        guard: UrlGuard | None = None,
        deadline: float | None = None,
        secrets: Iterable[str] = (),
        session: requests.Session | None = None,
        max_response_bytes: int = MAX_RESPONSE_BYTES,
    ) -> None:
        self.timeout = timeout
        self.guard = guard or UrlGuard([])
        self.deadline = deadline
        self.secrets = list(secrets)
        self.max_response_bytes = max_response_bytes
        self._session = session
        self._guarded: requests.Session | None = None

    # sessions are per thread and kept alive across steps; many steps never touch the network
    @property
    def session(self) -> requests.Session:
        if self._session is None:
            self._session = _thread_session(None)
        return self._session

    @property
    def guarded_session(self) -> requests.Session:
        if self._guarded is None:
            self._guarded = _thread_session(self.guard)
        return self._guarded

    def add_secrets(self, *values: Any) -> None:
        """Register more values to redact from errors raised by this helper."""
        for v in values:
            self.secrets.extend(secrets_in(v))

    def _deadline_timer(self, resp: requests.Response) -> _Deadline | None:
        """Shut the socket down when the step deadline passes while the body is still arriving
        (a read timeout alone restarts with every byte a slow server trickles)."""
        if self.deadline is None:
            return None
        return _WATCHDOG.schedule(self.deadline, resp)

    def _timeout(self) -> tuple[float, float]:
        connect, read = self.timeout
        if self.deadline is not None:
            left = self.deadline - time.monotonic()
            if left <= 0:
                raise RetryableError(
                    "step deadline reached before the request was sent", code="timeout"
                )
            connect, read = min(connect, left), min(read, left)
        return (connect, read)

    def request(
        self,
        method: str,
        url: str,
        *,
        guard: bool = False,
        expect: Iterable[int] | None = None,
        secrets: Iterable[str] = (),
        service: str = "upstream",
        detail: Callable[[requests.Response], str | None] | None = None,
        retry_after: Callable[[requests.Response], float | None] | None = None,
        **kwargs: Any,
    ) -> requests.Response:
        """Send a request and return the response, or raise the right :class:`ConnectorError`.

        ``guard=True`` sends through the SSRF guard (use it for every URL a user supplied).
        ``expect`` lists the accepted statuses (default: any 2xx). ``detail`` and
        ``retry_after`` extract an error message and a delay from an error body.
        """
        all_secrets = [*self.secrets, *secrets_in(list(secrets))]
        if guard:
            self.guard.check_url(url)
            sess = self.guarded_session
        else:
            sess = self.session
        cap = self._timeout()
        asked = kwargs.get("timeout")
        if asked is None:
            kwargs["timeout"] = cap
        else:  # a caller's own timeout never outlives the step deadline
            a_conn, a_read = asked if isinstance(asked, tuple) else (asked, asked)
            kwargs["timeout"] = (min(a_conn, cap[0]), min(a_read, cap[1]))
        kwargs["stream"] = True
        if isinstance(sess, _Session):
            sess.redirect_secrets = tuple(all_secrets)
        try:
            try:
                resp = sess.request(method, url, **kwargs)
            finally:
                if isinstance(sess, _Session):
                    sess.redirect_secrets = ()
            body = bytearray()
            timer = self._deadline_timer(resp)
            try:
                for chunk in resp.iter_content(65536):
                    body.extend(chunk)
                    if len(body) > self.max_response_bytes:
                        break
            except requests.exceptions.RequestException:
                if timer is not None and timer.fired:
                    raise RetryableError(
                        f"{service} response did not finish before the step deadline",
                        code="timeout",
                    ) from None
                raise
            finally:
                if timer is not None:
                    timer.cancel()
            if timer is not None and timer.fired:
                resp.close()
                raise RetryableError(
                    f"{service} response did not finish before the step deadline", code="timeout"
                )
            if len(body) > self.max_response_bytes:
                resp.close()
                raise PermanentError(
                    f"{service} response larger than {self.max_response_bytes} bytes",
                    code="response_too_large",
                )
            resp._content = bytes(body)
            resp._content_consumed = True
        except ConnectorError as e:
            e.message = redact(e.message, all_secrets)
            e.args = (e.message,)
            raise
        except requests.exceptions.Timeout as e:
            raise RetryableError(
                redact(f"{service} timed out: {type(e).__name__}", all_secrets), code="timeout"
            ) from None
        except requests.exceptions.TooManyRedirects:
            raise PermanentError(
                f"{service}: too many redirects", code="too_many_redirects"
            ) from None
        except (requests.exceptions.ConnectionError, requests.exceptions.ChunkedEncodingError) as e:
            raise RetryableError(
                redact(f"{service} connection failed: {e}", all_secrets), code="connection"
            ) from None
        except requests.exceptions.RequestException as e:
            raise PermanentError(
                redact(f"{service} request failed: {e}", all_secrets), code="request"
            ) from None
        ok = (200 <= resp.status_code < 300) if expect is None else resp.status_code in set(expect)
        if ok:
            return resp
        d = None
        ra = None
        if detail is not None:
            try:
                d = detail(resp)
            except Exception:  # noqa: BLE001 - a body we cannot parse still fails the step
                d = None
        if retry_after is not None:
            try:
                ra = retry_after(resp)
            except Exception:  # noqa: BLE001
                ra = None
        raise error_for_response(
            resp, detail=d, retry_after=ra, secrets=all_secrets, service=service
        )

    def json(self, resp: requests.Response, *, service: str = "upstream") -> Any:
        """The response body as JSON, or a permanent error naming the service (fail closed)."""
        try:
            return resp.json()
        except ValueError:
            raise PermanentError(
                f"{service} answered HTTP {resp.status_code} with a body that is not JSON",
                code="malformed_response",
            ) from None

    def close(self) -> None:
        """Forget the sessions (they are shared per thread and stay open for the next step)."""
        self._session = None
        self._guarded = None


def api_base(
    name: str,
    default: str,
    credentials: Mapping[str, Any] | None = None,
    env: Mapping[str, str] | None = None,
) -> tuple[str, bool]:
    """The API base URL for connector ``name`` and whether it must go through the SSRF guard.

    An ``api_base`` credential field (user supplied) is honoured but guarded; the operator's
    ``LEVQOR_<NAME>_API_BASE`` setting (in ``env``, the settings a step is handed) is trusted;
    otherwise ``default``.
    """
    env = {} if env is None else env
    if credentials and isinstance(credentials.get("api_base"), str) and credentials["api_base"]:
        return credentials["api_base"].rstrip("/"), True
    key = f"LEVQOR_{name.upper().replace('-', '_')}_API_BASE"
    if env.get(key):
        return env[key].rstrip("/"), False
    return default.rstrip("/"), False
