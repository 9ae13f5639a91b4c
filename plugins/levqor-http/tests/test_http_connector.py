"""levqor-http against a local httpbin-style fake over real HTTP (and the SSRF guard)."""

from __future__ import annotations

import copy
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote, urlsplit

import levqor_http
import pytest
from jsonschema import Draft202012Validator
from levqor_http.fake import FakeHttpBin
from levqor_kernel import hookimpl
from levqor_kernel.catalog import check_description
from levqor_kernel.context import StepContext
from levqor_kernel.errors import (
    BlockedURLError,
    CredentialError,
    PayloadError,
    PermanentError,
    RetryableError,
)
from levqor_kernel.testing import ConnectorContract

ALLOW = {"LEVQOR_SSRF_ALLOW": "127.0.0.1"}
API_KEY = "sk-http-secret-abcdef123456"


class _ContractAdapter:
    """levqor_http's own hooks, with the catalog example's absolute URL (api.example.com)
    swapped for a path: the contract kit always runs the example, and a path is resolved
    against the credential's api_base, which the kit points at its fake server. Everything the
    kit checks besides the example (run_task, validate_payload) is the real plugin code."""

    run_task = staticmethod(levqor_http.run_task)
    validate_payload = staticmethod(levqor_http.validate_payload)

    @staticmethod
    @hookimpl
    def describe_schema() -> list[dict[str, Any]]:
        [desc] = copy.deepcopy(levqor_http.describe_schema())
        example = desc["actions"]["request"]["example"]
        example["url"] = urlsplit(example["url"]).path
        return [desc]


class TestContract(ConnectorContract):
    plugin = _ContractAdapter
    lenient_body = True

    def credentials(self, base_url: str) -> dict:
        return {"api_base": base_url, "headers": {"Authorization": f"Bearer {API_KEY}"}}


def test_catalog_description_and_example() -> None:
    [desc] = levqor_http.describe_schema()
    assert check_description(desc) == []
    example = desc["actions"]["request"]["example"]
    assert example["url"].startswith("https://") and urlsplit(example["url"]).path == "/v1/orders"
    assert levqor_http.validate_payload("http", "request", example) == []
    # a step may name a credential (secret headers) but need not
    assert desc["credentials"] == levqor_http.CREDENTIALS_SCHEMA
    assert desc["credentials_required"] is False
    Draft202012Validator.check_schema(levqor_http.CREDENTIALS_SCHEMA)
    assert levqor_http.CREDENTIALS_SCHEMA["properties"]["headers"]["writeOnly"] is True


@pytest.fixture(scope="module")
def shared_bins() -> Iterator[tuple[FakeHttpBin, FakeHttpBin]]:
    # module scope: stopping a FakeServer takes up to 0.5 s
    with FakeHttpBin() as a, FakeHttpBin() as b:
        yield a, b


@pytest.fixture
def srv(shared_bins: tuple[FakeHttpBin, FakeHttpBin]) -> FakeHttpBin:
    for s in shared_bins:
        s.reset()
    return shared_bins[0]


@pytest.fixture
def other(shared_bins: tuple[FakeHttpBin, FakeHttpBin], srv: FakeHttpBin) -> FakeHttpBin:
    return shared_bins[1]


def ctx(env: dict | None = None, *, timeout: float = 5.0) -> StepContext:
    return StepContext(
        run_id="run-1",
        step_id="call",
        deadline=time.monotonic() + timeout,
        env=ALLOW if env is None else env,
    )


def call(payload: dict, creds: Any = None, env: dict | None = None, **kw: Any) -> dict:
    return levqor_http.run_task("http", "request", payload, creds, ctx(env, **kw))


# ----------------------------------------------------------------------------- success


def test_wire_format_json(srv: FakeHttpBin) -> None:
    out = call(
        {
            "method": "POST",
            "url": srv.url + "/anything/orders?existing=1",
            "headers": {"X-Trace": "t-1", "Accept": "application/json"},
            "query": {"page": 2, "flag": True, "tag": ["a", "b"], "q": "x y"},
            "json": {"id": 7, "items": [1, None]},
        },
        {"headers": {"X-API-Key": API_KEY}},
    )
    [req] = srv.requests
    assert (req.method, req.path) == ("POST", "/anything/orders")
    assert req.query == {
        "existing": ["1"],
        "page": ["2"],
        "flag": ["true"],
        "tag": ["a", "b"],
        "q": ["x y"],
    }
    assert req.header("X-API-Key") == API_KEY
    assert req.header("X-Trace") == "t-1"
    assert req.header("Content-Type") == "application/json"
    assert req.header("User-Agent").startswith("levqor/")
    assert req.json() == {"id": 7, "items": [1, None]}
    assert out["status"] == 200 and out["truncated"] is False
    assert out["headers"]["content-type"] == "application/json"
    assert out["body"]["method"] == "POST" and out["body"]["json"] == {"id": 7, "items": [1, None]}
    assert out["url"].startswith(srv.url + "/anything/orders?existing=1&page=2&flag=true")


def test_form_body_and_methods(srv: FakeHttpBin) -> None:
    out = call({"method": "PUT", "url": srv.url + "/anything", "form": {"a": "1", "b": "x&y"}})
    [req] = srv.requests
    assert req.method == "PUT"
    assert req.header("Content-Type") == "application/x-www-form-urlencoded"
    assert req.body == b"a=1&b=x%26y"
    assert out["body"]["form"] == {"a": "1", "b": "x&y"}
    for method in ("GET", "PATCH", "DELETE"):
        assert call({"method": method, "url": srv.url + "/anything"})["body"]["method"] == method
    head = call({"method": "HEAD", "url": srv.url + "/anything"})
    assert head["status"] == 200 and head["body"] == ""
    assert srv.requests[-1].method == "HEAD"


def test_api_base_paths_and_binding(srv: FakeHttpBin, other: FakeHttpBin) -> None:
    creds = {
        "api_base": srv.url + "/anything/v2/",
        "headers": {"Authorization": f"Bearer {API_KEY}"},
    }
    out = call({"url": "/items", "headers": {"authorization": "Bearer payload"}}, creds)
    [req] = srv.requests
    assert req.path == "/anything/v2/items"
    assert req.header("Authorization") == f"Bearer {API_KEY}"  # the credential wins
    assert out["url"] == srv.url + "/anything/v2/items"
    # a bound credential's headers never go to another origin
    with pytest.raises(PayloadError) as e:
        call({"url": other.url + "/anything"}, creds)
    assert e.value.code == "credential_origin"
    with pytest.raises(PayloadError):
        call({"url": "/items"}, {"headers": {"X-A": "b"}})  # a path needs an api_base
    with pytest.raises(PayloadError):
        call({"url": "/items"})
    assert len(srv.requests) == 1 and not other.requests


def test_text_html_truncation_and_bad_json(srv: FakeHttpBin) -> None:
    html = call({"url": srv.url + "/html"})
    assert isinstance(html["body"], str) and "Moby-Dick" in html["body"]
    plain = call({"url": srv.url + "/text/25"})
    assert plain["body"] == "0123456789012345678901234" and plain["truncated"] is False
    big = call({"url": srv.url + "/text/1500000"})
    assert big["truncated"] is True and len(big["body"]) == levqor_http.MAX_BODY_BYTES
    bad = call({"url": srv.url + "/bad-json"})
    assert bad["body"] == '{"truncated": '
    srv.fail_next(200, b'{"k": "\xc3\xa9"}', {"Content-Type": "application/problem+json"})
    assert call({"url": srv.url + "/anything"})["body"] == {"k": "é"}


def test_expected_statuses(srv: FakeHttpBin) -> None:
    out = call({"url": srv.url + "/status/404", "expected_statuses": [200, 404]})
    assert out["status"] == 404 and out["body"] == {"status": 404}
    assert call({"url": srv.url + "/status/201"})["status"] == 201  # default: any 2xx
    with pytest.raises(PermanentError) as e:
        call({"url": srv.url + "/status/200", "expected_statuses": [201]})
    assert e.value.status == 200 and "expected 201" in str(e.value)
    # a redirect status listed as expected is returned, not followed
    loc = quote(srv.url + "/anything")
    out = call({"url": f"{srv.url}/status/302?location={loc}", "expected_statuses": [302]})
    assert out["status"] == 302 and out["headers"]["location"] == srv.url + "/anything"
    assert len(srv.requests) == 4


# ----------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("status", "cls", "code"),
    [
        (400, PermanentError, "bad_request"),
        (401, CredentialError, "unauthorized"),
        (403, CredentialError, "forbidden"),
        (404, PermanentError, "http_404"),
        (500, RetryableError, "upstream_error"),
        (503, RetryableError, "upstream_error"),
    ],
)
def test_error_statuses(srv: FakeHttpBin, status: int, cls: type, code: str) -> None:
    srv.fail_next(status, {"error": f"nope-{status}"})
    with pytest.raises(cls) as e:
        call({"url": srv.url + "/anything"})
    assert e.value.status == status and e.value.code == code
    assert f"answered HTTP {status}" in str(e.value) and f"nope-{status}" in str(e.value)
    assert "127.0.0.1" in str(e.value)  # names the host
    if cls is PermanentError:
        assert not isinstance(e.value, RetryableError)


def test_rate_limited_honours_retry_after(srv: FakeHttpBin) -> None:
    with pytest.raises(RetryableError) as e:
        call({"url": srv.url + "/status/429?retry_after=17"})
    assert e.value.status == 429 and e.value.retry_after == 17.0 and e.value.code == "rate_limited"
    srv.fail_next(503, "busy", {"Retry-After": "3"})
    with pytest.raises(RetryableError) as e:
        call({"url": srv.url + "/anything"})
    assert e.value.retry_after == 3.0


def test_5xx_then_success(srv: FakeHttpBin) -> None:
    srv.fail_next(502, "bad gateway")
    payload = {"method": "POST", "url": srv.url + "/anything", "json": {"n": 1}}
    with pytest.raises(RetryableError):
        call(payload)
    out = call(payload)
    assert out["status"] == 200 and out["body"]["json"] == {"n": 1}
    assert len(srv.requests) == 2


def test_timeouts(srv: FakeHttpBin) -> None:
    started = time.monotonic()
    with pytest.raises(RetryableError) as e:
        call({"url": srv.url + "/delay/2", "timeout": 0.3})
    assert e.value.code == "timeout" and time.monotonic() - started < 1.0
    started = time.monotonic()
    with pytest.raises(RetryableError) as e:  # the step deadline caps a longer payload timeout
        call({"url": srv.url + "/delay/2", "timeout": 60}, timeout=0.4)
    assert e.value.code == "timeout" and time.monotonic() - started < 1.0


def test_secrets_never_in_errors(srv: FakeHttpBin) -> None:
    srv.fail_next(400, {"error": f"bad key {API_KEY}", "auth": f"Bearer {API_KEY}"})
    with pytest.raises(PermanentError) as e:
        call({"url": srv.url + "/anything"}, {"headers": {"X-API-Key": API_KEY}})
    text = str(e.value) + repr(e.value.to_dict())
    assert "bad key ***" in text and API_KEY not in text


# ----------------------------------------------------------------------------- redirects


def test_same_origin_redirect_keeps_credential(srv: FakeHttpBin) -> None:
    out = call(
        {"url": srv.url + "/redirect-to?url=/anything/next"}, {"headers": {"X-API-Key": API_KEY}}
    )
    assert out["url"] == srv.url + "/anything/next" and out["status"] == 200
    first, second = srv.requests
    assert first.path == "/redirect-to" and second.path == "/anything/next"
    assert second.header("X-API-Key") == API_KEY


def test_cross_origin_redirect_strips_secret_headers(srv: FakeHttpBin, other: FakeHttpBin) -> None:
    target = quote(other.url + "/anything/landed")
    out = call(
        {
            "method": "POST",
            "url": f"{srv.url}/redirect-to?url={target}&status_code=307",
            "headers": {"Authorization": "Bearer payload-token", "X-Trace": "t-9"},
            "json": {"keep": True},
        },
        {"headers": {"X-API-Key": API_KEY}},
    )
    assert out["url"] == other.url + "/anything/landed"
    assert srv.requests[0].header("X-API-Key") == API_KEY
    [landed] = other.requests
    assert landed.method == "POST" and landed.json() == {"keep": True}  # 307 keeps both
    assert landed.header("X-Trace") == "t-9"
    assert landed.header("X-API-Key") is None and landed.header("Authorization") is None


def test_303_becomes_get_without_body(srv: FakeHttpBin) -> None:
    out = call(
        {
            "method": "POST",
            "url": srv.url + "/redirect-to?url=/anything/done&status_code=303",
            "json": {"a": 1},
        }
    )
    assert out["body"]["method"] == "GET" and out["body"]["data"] == ""
    assert srv.requests[-1].header("Content-Type") is None


def test_redirect_loop_stops(srv: FakeHttpBin) -> None:
    for _ in range(levqor_http.MAX_REDIRECTS + 3):
        srv.fail_next(302, b"", {"Location": "/anything/again"})
    with pytest.raises(PermanentError) as e:
        call({"url": f"{srv.url}/anything/start"})
    assert e.value.code == "too_many_redirects"
    assert len(srv.requests) == levqor_http.MAX_REDIRECTS + 1


# ----------------------------------------------------------------------------- SSRF guard


def test_ssrf_guard_refuses_internal_addresses(srv: FakeHttpBin) -> None:
    p = srv.port
    urls = [
        f"http://127.0.0.1:{p}/anything",
        f"http://localhost:{p}/anything",
        f"http://0.0.0.0:{p}/anything",
        "http://10.0.0.1/",
        "http://172.16.0.1/",
        "http://192.168.1.1/",
        "http://169.254.169.254/latest/meta-data/",
        f"http://[::1]:{p}/anything",
        f"http://[::ffff:127.0.0.1]:{p}/anything",
        f"http://2130706433:{p}/anything",
        f"http://0177.0.0.1:{p}/anything",
        f"http://127.1:{p}/anything",
    ]
    for url in urls:
        started = time.monotonic()
        with pytest.raises(BlockedURLError) as e:
            call({"url": url}, env={})
        assert "not public" in str(e.value), url  # the address check, not a DNS failure
        assert time.monotonic() - started < 1.0, url  # refused before any connection attempt
    assert not srv.requests
    with pytest.raises(PayloadError):
        call({"url": "file:///etc/passwd"}, env={})


def test_ssrf_guard_checks_redirect_targets(srv: FakeHttpBin, other: FakeHttpBin) -> None:
    """The first server is allowed by host name; its redirect to 127.0.0.1 is refused and the
    target server never receives a request."""
    target = quote(other.url + "/anything/internal")
    url = f"http://localhost:{srv.port}/redirect-to?url={target}"
    with pytest.raises(BlockedURLError):
        call({"url": url}, env={"LEVQOR_SSRF_ALLOW": "localhost"})
    assert [r.path for r in srv.requests] == ["/redirect-to"]
    assert not other.requests
    # control: with the target allowed as well, the same redirect does reach it
    out = call({"url": url}, env={"LEVQOR_SSRF_ALLOW": "localhost,127.0.0.1"})
    assert out["url"] == other.url + "/anything/internal" and len(other.requests) == 1
    # a redirect to a non-http scheme is refused too
    srv.reset()
    with pytest.raises(BlockedURLError):
        call({"url": f"{srv.url}/redirect-to?url=file:///etc/passwd"})


def test_api_base_credential_is_guarded(srv: FakeHttpBin) -> None:
    with pytest.raises(BlockedURLError):
        call({"url": "/anything"}, {"api_base": srv.url}, env={})
    assert not srv.requests


# ----------------------------------------------------------------------------- validation


def test_payload_validation(srv: FakeHttpBin) -> None:
    v = levqor_http.validate_payload
    ok = {"url": "https://api.example.com/x"}
    assert v("http", "request", ok) == []
    assert v("other", "request", ok) is None
    bad = [
        {**ok, "json": {}, "form": {"a": "b"}},
        {**ok, "method": "HEAD", "json": 1},
        {**ok, "headers": {"Host": "internal"}},
        {**ok, "headers": {"Transfer-Encoding": "chunked"}},
        {**ok, "headers": {"X-A": "b\r\nX-Injected: 1"}},
        {**ok, "headers": {"bad name": "x"}},
        {"url": "ftp://example.com/"},
        {"url": "//example.com/x"},
        {"url": "https://example.com/a b"},
        {**ok, "expected_statuses": [99]},
        {**ok, "timeout": 0},
        {**ok, "method": "TRACE"},
    ]
    for payload in bad:
        assert v("http", "request", payload), payload
        with pytest.raises(PayloadError):
            call(payload)
    with pytest.raises(PayloadError):
        levqor_http.run_task("http", "fetch", ok, None, ctx())
    assert not srv.requests


@pytest.mark.parametrize(
    "creds",
    [
        "Bearer x",
        {"headers": "Authorization: x"},
        {"headers": {"X-Key": 5}},
        {"headers": {"X-Key": "a\nb"}},
        {"headers": {"Content-Length": "1"}},
        {"token": "x"},
        {"api_base": "ftp://x"},
    ],
)
def test_bad_credentials(srv: FakeHttpBin, creds: Any) -> None:
    with pytest.raises(CredentialError) as e:
        call({"url": srv.url + "/anything"}, creds)
    assert "a\nb" not in str(e.value)
    assert not srv.requests


def test_request_is_marked_as_writing_upstream():
    (desc,) = levqor_http.describe_schema()
    assert desc["actions"]["request"]["writes"] is True
