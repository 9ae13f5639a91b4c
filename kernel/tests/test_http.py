"""The shared HTTP helper: SSRF guard, error mapping, redaction, over real loopback HTTP."""

from __future__ import annotations

import email.utils
import ipaddress
import socket
import time

import pytest
from levqor_kernel import __version__
from levqor_kernel.errors import (
    BlockedURLError,
    ConnectorError,
    CredentialError,
    PermanentError,
    RetryableError,
)
from levqor_kernel.http import (
    USER_AGENT,
    Http,
    UrlGuard,
    api_base,
    is_public_ip,
    parse_retry_after,
    redact,
    secrets_in,
)
from levqor_kernel.testing import FakeServer
from levqor_kernel.testing.fakeserver import Reply


@pytest.fixture
def server():
    with FakeServer() as srv:
        yield srv


@pytest.fixture
def http():
    h = Http(timeout=(2.0, 2.0))
    yield h
    h.close()


def closed_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


# --------------------------------------------------------------------- UrlGuard

BLOCKED = [
    "http://127.0.0.1/",
    "http://localhost/",
    "http://0.0.0.0/",
    "http://10.0.0.1/",
    "http://172.16.0.1/",
    "http://192.168.1.1/",
    "http://169.254.169.254/latest/meta-data",
    "http://[::1]/",
    "http://[::ffff:127.0.0.1]/",
    "http://[::ffff:7f00:1]/",
    "http://[::ffff:a9fe:a9fe]/",
    "http://[::]/",
    "http://[fe80::1]/",
    "http://[fc00::1]/",
    "http://[2002:7f00:1::]/",
    "http://[::127.0.0.1]/",
    "http://100.64.0.1/",
    "http://224.0.0.1/",
    "http://2130706433/",
    "http://0177.0.0.1/",
    "http://0x7f.0.0.1/",
    "http://127.1/",
    "https://127.0.0.1:8443/x",
    "file:///etc/passwd",
    "gopher://x",
    "ftp://x",
    "http://user:pass@example.com/",
    "http://user@example.com/",
    "http:///nohost",
    "http://example.com:99999/",
]


@pytest.mark.parametrize("url", BLOCKED)
def test_url_guard_refuses(url):
    with pytest.raises(BlockedURLError) as ei:
        UrlGuard([]).check_url(url)
    assert ei.value.code == "blocked_url"
    assert ei.value.retryable is False


@pytest.mark.parametrize("url", ["file:///etc/passwd", "gopher://x", "ftp://x"])
def test_url_guard_names_the_scheme_problem(url):
    with pytest.raises(BlockedURLError, match="only http and https"):
        UrlGuard([]).check_url(url)


def test_url_guard_refuses_credentials_in_urls():
    with pytest.raises(BlockedURLError, match="credentials"):
        UrlGuard([]).check_url("http://user:pass@example.com/")


@pytest.mark.parametrize(
    "url",
    [
        "http://93.184.216.34/",
        "https://93.184.216.34:8443/path?q=1",
        "http://[2606:2800:220:1:248:1893:25c7:1946]/",
    ],
)
def test_url_guard_allows_public_ip_literals(url):
    assert UrlGuard([]).check_url(url) is None  # resolution only, nothing is sent


def test_is_public_ip():
    assert is_public_ip("93.184.216.34") and is_public_ip("8.8.8.8")
    for ip in (
        "127.0.0.1",
        "10.1.2.3",
        "::1",
        "::ffff:10.0.0.1",
        "169.254.1.1",
        "0.0.0.0",
        "fd00::1",
    ):
        assert not is_public_ip(ip), ip


# Written from the IANA IPv4 and IPv6 Special-Purpose Address Registries
# (iana.org/assignments/iana-ipv4-special-registry, .../iana-ipv6-special-registry):
# address block, name, "Globally Reachable". The N/A rows (6to4, Teredo) are tested below.
IANA_SPECIAL_PURPOSE = [
    ("0.0.0.0/8", "This network", False),
    ("0.0.0.0/32", "This host on this network", False),
    ("10.0.0.0/8", "Private-Use", False),
    ("100.64.0.0/10", "Shared Address Space", False),
    ("127.0.0.0/8", "Loopback", False),
    ("169.254.0.0/16", "Link Local", False),
    ("172.16.0.0/12", "Private-Use", False),
    ("192.0.0.0/24", "IETF Protocol Assignments", False),
    ("192.0.0.0/29", "IPv4 Service Continuity Prefix", False),
    ("192.0.0.8/32", "IPv4 dummy address", False),
    ("192.0.0.9/32", "Port Control Protocol Anycast", True),
    ("192.0.0.10/32", "Traversal Using Relays around NAT Anycast", True),
    ("192.0.0.170/32", "NAT64/DNS64 Discovery", False),
    ("192.0.0.171/32", "NAT64/DNS64 Discovery", False),
    ("192.0.2.0/24", "Documentation (TEST-NET-1)", False),
    ("192.31.196.0/24", "AS112-v4", True),
    ("192.52.193.0/24", "AMT", True),
    ("192.88.99.0/24", "Deprecated (6to4 Relay Anycast)", False),
    ("192.168.0.0/16", "Private-Use", False),
    ("192.175.48.0/24", "Direct Delegation AS112 Service", True),
    ("198.18.0.0/15", "Benchmarking", False),
    ("198.51.100.0/24", "Documentation (TEST-NET-2)", False),
    ("203.0.113.0/24", "Documentation (TEST-NET-3)", False),
    ("240.0.0.0/4", "Reserved", False),
    ("255.255.255.255/32", "Limited Broadcast", False),
    ("::1/128", "Loopback Address", False),
    ("::/128", "Unspecified Address", False),
    ("::ffff:0:0/96", "IPv4-mapped Address", False),
    ("64:ff9b:1::/48", "IPv4-IPv6 Translat.", False),
    ("100::/64", "Discard-Only Address Block", False),
    ("100:0:0:1::/64", "Dummy IPv6 Prefix", False),
    ("2001::/23", "IETF Protocol Assignments", False),
    ("2001:1::1/128", "Port Control Protocol Anycast", True),
    ("2001:1::2/128", "Traversal Using Relays around NAT Anycast", True),
    ("2001:1::3/128", "DNS-SD Service Registration Protocol Anycast", True),
    ("2001:2::/48", "Benchmarking", False),
    ("2001:3::/32", "AMT", True),
    ("2001:4:112::/48", "AS112-v6", True),
    ("2001:10::/28", "Deprecated (previously ORCHID)", False),
    ("2001:20::/28", "ORCHIDv2", True),
    ("2001:30::/28", "Drone Remote ID Protocol Entity Tags (DETs) Prefix", True),
    ("2001:db8::/32", "Documentation", False),
    ("2620:4f:8000::/48", "Direct Delegation AS112 Service", True),
    ("3fff::/20", "Documentation", False),
    ("5f00::/16", "Segment Routing (SRv6) SIDs", False),
    ("fc00::/7", "Unique-Local", False),
    ("fe80::/10", "Link-Local Unicast", False),
]
TEREDO = ipaddress.IPv6Network("2001::/32")


def _registry_verdict(addr: ipaddress._BaseAddress) -> bool | None:
    """The most specific registry row containing ``addr`` decides (None: no row)."""
    rows = [
        (ipaddress.ip_network(b), g)
        for b, _, g in IANA_SPECIAL_PURPOSE
        if addr in ipaddress.ip_network(b)
        if ipaddress.ip_network(b).version == addr.version
    ]
    return max(rows, key=lambda r: r[0].prefixlen)[1] if rows else None


def _samples(block: str) -> list[ipaddress._BaseAddress]:
    net = ipaddress.ip_network(block)
    mid = net.network_address + net.num_addresses // 2
    return [net.network_address, mid, net.broadcast_address]


@pytest.mark.parametrize(("block", "name", "reachable"), IANA_SPECIAL_PURPOSE)
def test_every_special_purpose_block_is_judged_as_the_registry_says(block, name, reachable):
    for addr in _samples(block):
        expected = _registry_verdict(addr)
        if addr.version == 6 and addr in TEREDO:
            continue  # N/A in the registry: judged by the IPv4 it carries (below)
        if block == "::ffff:0:0/96":  # the socket connects to the IPv4 address it carries
            expected = _registry_verdict(addr.ipv4_mapped) is not False
        assert is_public_ip(addr) is expected, (block, name, str(addr))
        assert UrlGuard([]).ip_allowed(str(addr)) is expected, (block, name, str(addr))


@pytest.mark.parametrize(
    ("block", "name", "reachable"), [r for r in IANA_SPECIAL_PURPOSE if ":" not in r[0]]
)
def test_ipv6_forms_carrying_an_ipv4_address_are_judged_by_it(block, name, reachable):
    for v4 in _samples(block):
        expected = _registry_verdict(v4)
        packed = int(v4)
        forms = {
            "IPv4-mapped": ipaddress.IPv6Address((0xFFFF << 32) | packed),
            "NAT64 64:ff9b::/96": ipaddress.IPv6Address(
                int(ipaddress.IPv6Address("64:ff9b::")) | packed
            ),
            "6to4 2002::/16": ipaddress.IPv6Address((0x2002 << 112) | (packed << 80) | 1),
            # Teredo: server 8.8.8.8, client address stored inverted (RFC 4380)
            "Teredo client": ipaddress.IPv6Address(
                (0x20010000 << 96) | (0x08080808 << 64) | (packed ^ 0xFFFFFFFF)
            ),
            "Teredo server": ipaddress.IPv6Address(
                (0x20010000 << 96) | (packed << 64) | (0x08080808 ^ 0xFFFFFFFF)
            ),
        }
        for form, addr in forms.items():
            assert is_public_ip(addr) is expected, (block, name, form, str(addr))


@pytest.mark.parametrize(
    ("ip", "public"),
    [
        ("8.8.8.8", True),
        ("93.184.216.34", True),
        ("2606:4700:4700::1111", True),
        ("64:ff9b::808:808", True),
        ("2002:808:808::1", True),
        ("224.0.0.1", False),  # multicast
        ("239.255.255.250", False),
        ("ff02::1", False),
        ("ff0e::1", False),
        ("fec0::1", False),  # deprecated site-local
        ("feff:ffff::1", False),
        ("::808:808", False),  # deprecated IPv4-compatible form
        ("4000::1", False),  # reserved by IETF, outside 2000::/3
        ("1::1", False),
    ],
)
def test_outside_the_special_registries(ip, public):
    assert is_public_ip(ip) is public


def test_dummy_and_site_local_addresses_are_refused():
    for url in ("http://192.0.0.8/", "http://[fec0::1]/", "http://[::ffff:192.0.0.8]/"):
        with pytest.raises(BlockedURLError, match="not public"):
            UrlGuard([]).check_url(url)


def test_allow_list_networks_and_host_names():
    UrlGuard(["127.0.0.1"]).check_url("http://127.0.0.1:1234/")
    UrlGuard(["127.0.0.0/8"]).check_url("http://127.0.0.5/")
    UrlGuard([" 10.0.0.0/8 ", ""]).check_url("http://10.2.3.4/")
    UrlGuard(["LOCALHOST"]).check_url("http://localhost/")
    assert UrlGuard(["localhost"]).host_allowed("localhost.")
    # an allowed name that does not resolve is a clean BlockedURLError, not a socket error
    with pytest.raises(BlockedURLError, match="cannot resolve"):
        UrlGuard(["nothing.invalid"]).check_url("http://nothing.invalid/")
    # an allow-list entry allows only itself
    with pytest.raises(BlockedURLError):
        UrlGuard(["127.0.0.1"]).check_url("http://10.0.0.1/")
    with pytest.raises(BlockedURLError):
        UrlGuard(["10.0.0.0/8"]).check_url("http://192.168.0.1/")
    with pytest.raises(BlockedURLError):
        UrlGuard(["localhost"]).check_url("http://127.0.0.1/")
    # the allow-list does not relax scheme or credential rules
    with pytest.raises(BlockedURLError):
        UrlGuard(["127.0.0.1"]).check_url("file://127.0.0.1/etc/passwd")
    with pytest.raises(BlockedURLError):
        UrlGuard(["127.0.0.1"]).check_url("http://u:p@127.0.0.1/")


def test_url_guard_reads_the_settings_it_is_handed_never_the_environment(monkeypatch):
    monkeypatch.setenv("LEVQOR_SSRF_ALLOW", "127.0.0.1,internal.example")
    with pytest.raises(BlockedURLError):
        UrlGuard().check_url("http://127.0.0.1/")
    g = UrlGuard.from_env({"LEVQOR_SSRF_ALLOW": "127.0.0.1,internal.example"})
    assert g.host_allowed("internal.example")
    g.check_url("http://127.0.0.1/")
    g2 = UrlGuard.from_env({"LEVQOR_SSRF_ALLOW": "10.0.0.0/8"})
    g2.check_url("http://10.9.9.9/")
    with pytest.raises(BlockedURLError):
        UrlGuard.from_env({}).check_url("http://10.9.9.9/")


# --------------------------------------------------------------------- guarded requests


def test_guarded_request_to_loopback_is_refused_before_sending(server):
    server.route("GET", "/x", {"ok": True})
    h = Http(guard=UrlGuard([]))
    try:
        with pytest.raises(BlockedURLError):
            h.request("GET", server.url + "/x", guard=True)
    finally:
        h.close()
    assert server.requests == []


def test_guarded_request_with_allow_list_goes_through(server):
    server.route("GET", "/x", {"ok": True})
    h = Http(guard=UrlGuard(["127.0.0.1"]))
    try:
        resp = h.request("GET", server.url + "/x", guard=True)
    finally:
        h.close()
    assert resp.json() == {"ok": True}
    assert len(server.requests_to("/x", "GET")) == 1


def test_unguarded_request_reaches_loopback(server, http):
    server.route("GET", "/x", {"ok": True})
    assert http.request("GET", server.url + "/x").json() == {"ok": True}


def test_redirect_to_a_forbidden_address_is_refused():
    with FakeServer() as first, FakeServer() as second:
        second.route("GET", "/secret", {"secret": True})
        target = f"http://127.0.0.1:{second.port}/secret"
        first.route("GET", "/go", Reply(302, b"", {"Location": target}))
        h = Http(guard=UrlGuard(["localhost"]), timeout=(2.0, 2.0))
        try:
            with pytest.raises(BlockedURLError):
                h.request("GET", f"http://localhost:{first.port}/go", guard=True)
        finally:
            h.close()
        assert len(first.requests_to("/go")) == 1
        assert second.requests == []


def test_redirect_within_the_allow_list_is_followed():
    with FakeServer() as first, FakeServer() as second:
        second.route("GET", "/end", {"done": True})
        first.route("GET", "/go", Reply(302, b"", {"Location": f"{second.url}/end"}))
        h = Http(guard=UrlGuard(["127.0.0.1"]))
        try:
            assert h.request("GET", f"{first.url}/go", guard=True).json() == {"done": True}
        finally:
            h.close()
        assert len(second.requests_to("/end")) == 1


def test_a_redirect_to_another_origin_drops_every_header_carrying_a_secret():
    secret = "sk-live-1234567890"
    headers = {
        "Authorization": f"Bearer {secret}",
        "X-Api-Key": "short",  # a conventional credential header, whatever its value
        "X-Custom-Token": f"token={secret}",  # a secret of the step in a header of any name
        "X-Trace": "trace-1",
        "Accept": "application/json",
    }
    with FakeServer() as first, FakeServer() as second:
        second.route("GET", "/end", {"done": True})
        first.route("GET", "/away", Reply(302, b"", {"Location": f"{second.url}/end"}))
        first.route("GET", "/here", Reply(307, b"", {"Location": "/end"}))
        first.route("GET", "/end", {"done": True})
        plain, guarded = (
            Http(secrets=[secret]),
            Http(guard=UrlGuard(["127.0.0.1"]), secrets=[secret]),
        )
        for h, guard in ((plain, False), (guarded, True)):
            try:
                for path in ("/away", "/here"):
                    resp = h.request("GET", first.url + path, guard=guard, headers=headers)
                    assert resp.json() == {"done": True}
            finally:
                h.close()
        for moved in second.requests_to("/end"):  # another port: another origin
            assert moved.header("Authorization") is None
            assert moved.header("X-Api-Key") is None
            assert moved.header("X-Custom-Token") is None
            assert moved.header("X-Trace") == "trace-1"
            assert moved.header("Accept") == "application/json"
        for stayed in first.requests_to("/end"):  # the same origin keeps them all
            assert stayed.header("Authorization") == f"Bearer {secret}"
            assert stayed.header("X-Api-Key") == "short"
            assert stayed.header("X-Custom-Token") == f"token={secret}"
        assert len(second.requests_to("/end")) == 2 and len(first.requests_to("/end")) == 2


def test_a_secret_given_to_one_request_is_dropped_on_its_redirect_only():
    with FakeServer() as first, FakeServer() as second:
        second.route("GET", "/end", {"done": True})
        first.route("GET", "/away", Reply(302, b"", {"Location": f"{second.url}/end"}))
        h = Http()
        try:
            h.request(
                "GET",
                first.url + "/away",
                headers={"X-Sig": "per-request-secret"},
                secrets=["per-request-secret"],
            )
            h.request("GET", first.url + "/away", headers={"X-Sig": "per-request-secret"})
        finally:
            h.close()
        one, two = second.requests_to("/end")
        assert one.header("X-Sig") is None
        assert two.header("X-Sig") == "per-request-secret"  # not a secret of that request


def test_redirect_loop_is_a_permanent_error(server, http):
    server.route("GET", "/loop", Reply(302, b"", {"Location": "/loop"}))
    with pytest.raises(PermanentError) as ei:
        http.request("GET", server.url + "/loop")
    assert ei.value.code == "too_many_redirects"
    assert not ei.value.retryable


def test_guarded_session_ignores_environment_proxies(server, monkeypatch):
    # a proxy from the environment would connect to the proxy, not the checked address
    monkeypatch.setenv("HTTP_PROXY", "http://10.0.0.1:3128")
    monkeypatch.setenv("http_proxy", "http://10.0.0.1:3128")
    server.route("GET", "/x", {"ok": True})
    h = Http(guard=UrlGuard(["127.0.0.1"]), timeout=(1.0, 1.0))
    try:
        assert h.request("GET", server.url + "/x", guard=True).json() == {"ok": True}
    finally:
        h.close()


# --------------------------------------------------------------------- error mapping


def test_success_and_user_agent(server, http):
    server.route("POST", "/echo", lambda req: {"got": req.json()})
    resp = http.request("POST", server.url + "/echo", json={"a": 1})
    assert resp.status_code == 200 and resp.json() == {"got": {"a": 1}}
    assert USER_AGENT == f"levqor/{__version__}"
    assert server.requests[0].header("User-Agent") == f"levqor/{__version__}"


def test_guarded_requests_send_the_user_agent_too(server):
    server.route("GET", "/x", {})
    h = Http(guard=UrlGuard(["127.0.0.1"]))
    try:
        h.request("GET", server.url + "/x", guard=True)
    finally:
        h.close()
    assert server.requests[0].header("User-Agent") == f"levqor/{__version__}"


def test_429_with_retry_after_seconds(server, http):
    server.route("GET", "/r", Reply(429, {"error": "slow down"}, {"Retry-After": "7"}))
    with pytest.raises(RetryableError) as ei:
        http.request("GET", server.url + "/r", service="Acme")
    e = ei.value
    assert e.status == 429 and e.retry_after == 7.0 and e.code == "rate_limited"
    assert e.retryable and "Acme answered HTTP 429" in e.message and "slow down" in e.message


def test_429_with_retry_after_http_date(server, http):
    when = email.utils.formatdate(time.time() + 30, usegmt=True)
    server.route("GET", "/r", Reply(429, "", {"Retry-After": when}))
    with pytest.raises(RetryableError) as ei:
        http.request("GET", server.url + "/r")
    assert ei.value.retry_after is not None and 25 <= ei.value.retry_after <= 31


def test_retry_after_from_the_body_extractor(server, http):
    server.route("GET", "/r", Reply(429, {"parameters": {"retry_after": 12}}))
    with pytest.raises(RetryableError) as ei:
        http.request(
            "GET",
            server.url + "/r",
            retry_after=lambda r: r.json()["parameters"]["retry_after"],
            detail=lambda r: "too many",
        )
    assert ei.value.retry_after == 12 and ei.value.message.endswith("too many")


def test_broken_extractors_do_not_mask_the_error(server, http):
    server.route("GET", "/r", Reply(503, "not json"))
    with pytest.raises(RetryableError) as ei:
        http.request(
            "GET", server.url + "/r", detail=lambda r: r.json()["x"], retry_after=lambda r: 1 / 0
        )
    assert ei.value.status == 503 and ei.value.retry_after is None


@pytest.mark.parametrize("status", [500, 502, 503, 504, 408])
def test_5xx_are_retryable(server, http, status):
    server.route("GET", "/e", Reply(status, {"error": "boom"}))
    with pytest.raises(RetryableError) as ei:
        http.request("GET", server.url + "/e")
    assert ei.value.status == status and ei.value.code == "upstream_error"


@pytest.mark.parametrize(("status", "code"), [(401, "unauthorized"), (403, "forbidden")])
def test_401_403_are_credential_errors(server, http, status, code):
    server.route("GET", "/e", Reply(status, {"error": "no"}))
    with pytest.raises(CredentialError) as ei:
        http.request("GET", server.url + "/e")
    assert ei.value.status == status and ei.value.code == code and not ei.value.retryable


@pytest.mark.parametrize(
    ("status", "code"), [(400, "bad_request"), (404, "http_404"), (422, "http_422")]
)
def test_other_4xx_are_permanent(server, http, status, code):
    server.route("GET", "/e", Reply(status, {"error": "bad"}))
    with pytest.raises(PermanentError) as ei:
        http.request("GET", server.url + "/e")
    e = ei.value
    assert type(e) is PermanentError
    assert e.status == status and e.code == code and not e.retryable
    assert e.to_dict()["status"] == status and e.to_dict()["retryable"] is False


def test_expect_overrides_the_accepted_statuses(server, http):
    server.route("GET", "/e", Reply(404, {"error": "gone"}))
    assert http.request("GET", server.url + "/e", expect=[200, 404]).status_code == 404
    server.route("GET", "/ok", {"ok": True})
    with pytest.raises(PermanentError):
        http.request("GET", server.url + "/ok", expect=[201])


def test_slow_server_past_the_timeout_is_retryable(server):
    server.route("GET", "/slow", Reply(200, {"late": True}, delay=1.0))
    h = Http(timeout=(1.0, 0.2))
    t0 = time.monotonic()
    try:
        with pytest.raises(RetryableError) as ei:
            h.request("GET", server.url + "/slow")
    finally:
        h.close()
    assert ei.value.code == "timeout"
    assert time.monotonic() - t0 < 0.9


def test_step_deadline_caps_the_timeout(server):
    server.route("GET", "/slow", Reply(200, {"late": True}, delay=1.0))
    h = Http(timeout=(5.0, 30.0), deadline=time.monotonic() + 0.25)
    t0 = time.monotonic()
    try:
        with pytest.raises(RetryableError) as ei:
            h.request("GET", server.url + "/slow")
    finally:
        h.close()
    assert ei.value.code == "timeout" and time.monotonic() - t0 < 0.9


def test_expired_deadline_sends_nothing(server):
    server.route("GET", "/x", {})
    h = Http(deadline=time.monotonic() - 1)
    with pytest.raises(RetryableError) as ei:
        h.request("GET", server.url + "/x")
    assert ei.value.code == "timeout" and server.requests == []


def test_closed_port_is_a_retryable_connection_error(http):
    with pytest.raises(RetryableError) as ei:
        http.request("GET", f"http://127.0.0.1:{closed_port()}/x")
    assert ei.value.code == "connection"


def test_body_larger_than_the_limit_is_refused(server):
    server.route("GET", "/big", Reply(200, b"x" * 200_000))
    h = Http(max_response_bytes=10_000)
    try:
        with pytest.raises(PermanentError) as ei:
            h.request("GET", server.url + "/big")
    finally:
        h.close()
    assert ei.value.code == "response_too_large" and not ei.value.retryable
    server.route("GET", "/small", Reply(200, b"y" * 5_000))
    h = Http(max_response_bytes=10_000)
    try:
        assert h.request("GET", server.url + "/small").content == b"y" * 5_000
    finally:
        h.close()


def test_json_helper(server, http):
    server.route("GET", "/j", {"a": 1})
    server.route("GET", "/t", "not json")
    assert http.json(http.request("GET", server.url + "/j")) == {"a": 1}
    with pytest.raises(PermanentError) as ei:
        http.json(http.request("GET", server.url + "/t"), service="Acme")
    assert ei.value.code == "malformed_response" and "Acme" in ei.value.message


# --------------------------------------------------------------------- redaction

TG = "123456789:AAEhBOweik6ad9r_QXMENQjcrGbqCr4K-aB"
SLACK = "https://hooks.slack.com/services/T0000AAAA/B0000BBBB/XXXXXXXXXXXXXXXXXXXXXXXX"


def test_redact_registered_secrets():
    out = redact("token is s3cr3t-value and again s3cr3t-value", ["s3cr3t-value"])
    assert "s3cr3t-value" not in out and out.count("***") == 2
    # very short values are not treated as secrets (they would shred the text)
    assert redact("a b c", ["a"]) == "a b c"
    # the longest secret wins when one contains another
    assert redact("abcdefgh", ["abcd", "abcdefgh"]) == "***"
    assert redact("", ["x"]) == ""


@pytest.mark.parametrize(
    ("text", "leak"),
    [
        (f"POST https://api.telegram.org/bot{TG}/sendMessage failed", TG.split(":")[1]),
        (f"url {SLACK} gave 404", "XXXXXXXXXXXXXXXXXXXXXXXX"),
        ("Authorization: Bearer abcdef123456.xyz", "abcdef123456"),
        ("header was bearer eyJhbGciOiJIUzI1NiJ9.payload.sig", "eyJhbGciOiJIUzI1NiJ9"),
        ("Authorization: Basic dXNlcjpwYXNzd29yZA==", "dXNlcjpwYXNzd29yZA"),
        ("GET https://x.io/v1?api_key=KEY123456&q=1", "KEY123456"),
        ("GET https://x.io/v1?q=1&apikey=KEY123456", "KEY123456"),
        ("GET https://x.io/v1?access_token=TOK98765", "TOK98765"),
        ("connect to https://bob:hunter2pass@db.example.com/x", "hunter2pass"),
        ("key re_abcdefghijklmnopqrstuvwx leaked", "abcdefghijklmnopqrstuvwx"),
    ],
)
def test_redact_known_secret_shapes(text, leak):
    out = redact(text)
    assert leak not in out
    assert "***" in out


def test_redact_keeps_innocent_text():
    text = "GET https://x.io/v1?q=1&page=2 answered 404: not found"
    assert redact(text) == text


def test_secrets_in_collects_nested_values():
    found = secrets_in({"token": "abc123", "nested": {"list": ["x1", {"k": SLACK}]}, "n": 5})
    assert {"abc123", "x1", SLACK} <= set(found)
    assert "/services/T0000AAAA/B0000BBBB/XXXXXXXXXXXXXXXXXXXXXXXX" in found


def test_secrets_never_appear_in_errors_even_when_echoed(server):
    secret = "sk_test_supersecretvalue123"
    server.route(
        "POST", "/e", lambda req: Reply(401, {"error": f"invalid key {req.header('X-Key')}"})
    )
    server.route("POST", "/bad", lambda req: Reply(400, f"you sent {req.body.decode()}"))
    h = Http(timeout=(2.0, 2.0))
    try:
        with pytest.raises(CredentialError) as ei:
            h.request("POST", server.url + "/e", headers={"X-Key": secret}, secrets=[secret])
        with pytest.raises(PermanentError) as ei2:
            h.request(
                "POST",
                server.url + "/bad",
                data="tok=ZZZZ-my-secret-ZZZZ",
                secrets=["ZZZZ-my-secret-ZZZZ"],
            )
    finally:
        h.close()
    for e in (ei.value, ei2.value):
        assert secret not in str(e) and "ZZZZ-my-secret-ZZZZ" not in str(e)
        assert secret not in repr(e.to_dict()) and "ZZZZ-my-secret-ZZZZ" not in repr(e.to_dict())
        assert "***" in e.message


def test_helper_secrets_redact_connection_errors():
    secret = "verysecretpathtoken"
    h = Http(secrets=[secret], timeout=(1.0, 1.0))
    try:
        with pytest.raises(RetryableError) as ei:
            h.request("GET", f"http://127.0.0.1:{closed_port()}/hook/{secret}?sig=abcdef")
    finally:
        h.close()
    assert secret not in str(ei.value) and "abcdef" not in str(ei.value)
    h2 = Http()
    h2.add_secrets({"token": "another-secret-token"})
    try:
        with pytest.raises(RetryableError) as ei:
            h2.request("GET", f"http://127.0.0.1:{closed_port()}/x/another-secret-token")
    finally:
        h2.close()
    assert "another-secret-token" not in str(ei.value)


def test_secret_in_url_is_redacted_from_oversize_and_timeout_errors(server):
    secret = "url-secret-999999"
    server.route("GET", "/big/.*", Reply(200, b"x" * 50_000))
    h = Http(max_response_bytes=1000)
    try:
        with pytest.raises(ConnectorError) as ei:
            h.request(
                "GET", f"{server.url}/big/{secret}", secrets=[secret], service=f"svc {secret}"
            )
    finally:
        h.close()
    assert secret not in str(ei.value)


# --------------------------------------------------------------------- parse_retry_after / api_base


def test_parse_retry_after():
    now = time.time()
    assert parse_retry_after("120") == 120.0
    assert parse_retry_after(" 1.5 ") == 1.5
    assert parse_retry_after("-5") == 0.0
    assert parse_retry_after(
        email.utils.formatdate(now + 60, usegmt=True), now=now
    ) == pytest.approx(60, abs=1)
    assert parse_retry_after(email.utils.formatdate(now - 60, usegmt=True), now=now) == 0.0
    for garbage in (None, "", "   ", "soon", "nan", "inf", "Mon, 99 Foo 2020", "12abc"):
        assert parse_retry_after(garbage) is None, garbage


def test_api_base_precedence():
    env = {"LEVQOR_MY_CONN_API_BASE": "http://operator.internal:8080/"}
    default = "https://api.example.com/v1/"
    # a credential's api_base is honoured but must go through the guard
    assert api_base("my-conn", default, {"api_base": "https://user.example/api/"}, env) == (
        "https://user.example/api",
        True,
    )
    # the operator's environment is trusted
    assert api_base("my-conn", default, {"token": "x"}, env) == (
        "http://operator.internal:8080",
        False,
    )
    assert api_base("my-conn", default, {"api_base": ""}, env) == (
        "http://operator.internal:8080",
        False,
    )
    assert api_base("my-conn", default, {"api_base": 5}, env) == (
        "http://operator.internal:8080",
        False,
    )
    # otherwise the default
    assert api_base("my-conn", default, None, {}) == ("https://api.example.com/v1", False)
    assert api_base("other", default, None, env) == ("https://api.example.com/v1", False)


def test_api_base_reads_the_settings_it_is_handed_never_the_environment(monkeypatch):
    monkeypatch.setenv("LEVQOR_ACME_API_BASE", "http://127.0.0.1:9/")
    assert api_base("acme", "https://acme.io") == ("https://acme.io", False)
    settings = {"LEVQOR_ACME_API_BASE": "http://127.0.0.1:9/"}
    assert api_base("acme", "https://acme.io", None, settings) == ("http://127.0.0.1:9", False)


def test_step_context_http_uses_the_env_allow_list(server):
    from levqor_kernel.context import make_context

    server.route("GET", "/x", {"ok": True})
    ctx = make_context(env={"LEVQOR_SSRF_ALLOW": "127.0.0.1"})
    assert ctx.http.request("GET", server.url + "/x", guard=True).json() == {"ok": True}
    ctx2 = make_context(env={})
    with pytest.raises(BlockedURLError):
        ctx2.http.request("GET", server.url + "/x", guard=True)
    assert len(server.requests) == 1
    assert ctx.api_base("acme", "https://a.io/", {"api_base": "http://x/"}) == ("http://x", True)
