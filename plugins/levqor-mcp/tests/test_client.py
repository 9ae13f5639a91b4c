"""The ``mcp`` connector against an MCP server built with the official SDK (real streamable HTTP
over loopback, the server checking its bearer token itself) and against the contract kit."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator

import levqor_mcp
import pytest
from jsonschema import Draft202012Validator
from levqor_kernel.context import StepContext
from levqor_kernel.errors import (
    BlockedURLError,
    CredentialError,
    PayloadError,
    PermanentError,
    RetryableError,
)
from levqor_kernel.plugins import make_plugin_manager
from levqor_kernel.testing import ConnectorContract, FakeServer, Reply
from levqor_mcp import client
from levqor_mcp.client_fake import WeatherServer
from mcp_types.version import HANDSHAKE_PROTOCOL_VERSIONS

ALLOW = {"LEVQOR_SSRF_ALLOW": "127.0.0.1"}


class TestContract(ConnectorContract):
    """401/403/429/503, a malformed answer and a timeout from a server that is not MCP at all."""

    plugin = levqor_mcp

    def credentials(self, base_url: str) -> dict:
        return {"url": base_url + "/mcp", "token": "contract-token-0123456789"}


class TestContractWithHeaders(ConnectorContract):
    plugin = levqor_mcp

    def credentials(self, base_url: str) -> dict:
        return {"url": base_url + "/mcp", "headers": {"X-Api-Key": "contract-key-0123456789"}}


@pytest.fixture(scope="module")
def _server() -> Iterator[WeatherServer]:
    with WeatherServer() as srv:
        yield srv


@pytest.fixture
def srv(_server: WeatherServer) -> Iterator[WeatherServer]:
    _server.reset()
    yield _server


def ctx(env: dict | None = None, timeout: float = 20.0) -> StepContext:
    return StepContext(
        run_id="run1",
        step_id="ask",
        deadline=time.monotonic() + timeout,
        env=ALLOW if env is None else env,
    )


def creds(srv: WeatherServer, **extra) -> dict:
    return {"url": srv.url, "token": srv.token, **extra}


def call(srv: WeatherServer, tool: str, arguments: dict | None = None, **kw) -> dict:
    credentials = kw.pop("credentials", None) or creds(srv)
    payload = {"tool": tool} if arguments is None else {"tool": tool, "arguments": arguments}
    return levqor_mcp.run_task("mcp", "call_tool", payload, credentials, ctx(**kw))


# ---------------------------------------------------------------- the description


def test_the_connector_is_in_the_catalog_with_its_tool_choices():
    pm = make_plugin_manager(entry_points=False, builtins=False, plugins=[("mcp", levqor_mcp)])
    assert pm.failures == []
    info = pm.catalog.get("mcp")
    assert info.title == "MCP server" and info.endpoint_field == "url"
    action = info.actions["call_tool"]
    assert action.options == ["tool"] and action.writes is None  # unknown: counts as writing
    secret = {k for k, v in info.credentials["properties"].items() if v.get("writeOnly")}
    assert secret == {"url", "token", "headers"}


# ---------------------------------------------------------------- calls


def test_a_tool_with_structured_output(srv):
    out = call(srv, "get_forecast", {"city": "Oslo", "days": 2})
    assert out["structured"] == {
        "city": "Oslo",
        "days": 2,
        "temp_c": 21.5,
        "summary": "Sunny in Oslo",
    }
    assert out["is_error"] is False
    assert [b["type"] for b in out["content"]] == ["text"]
    assert "Sunny in Oslo" in out["text"]
    Draft202012Validator(client.OUTPUT_SCHEMA).validate(out)
    assert srv.calls == [("get_forecast", {"city": "Oslo", "days": 2})]
    # the connector spoke to the server with its token, as levqor
    posts = [s for s in srv.requests if s.method == "POST"]
    assert posts and all(s.headers["authorization"] == f"Bearer {srv.token}" for s in posts)
    assert all(s.headers["user-agent"].startswith("levqor/") for s in posts)
    assert srv.rpc_methods()[-1] == "tools/call"


def test_a_text_tool_has_no_structured_content(srv):
    out = call(srv, "shout", {"text": "hello"})
    assert out == {
        "content": [{"type": "text", "text": "HELLO"}],
        "structured": None,
        "text": "HELLO",
        "is_error": False,
    }


def test_a_tool_error_fails_the_step_permanently_with_its_text(srv):
    with pytest.raises(PermanentError) as e:
        call(srv, "fail", {"reason": "the printer is on fire"})
    assert e.value.code == "tool_error" and not e.value.retryable
    assert "fail" in e.value.message and "the printer is on fire" in e.value.message


def test_arguments_that_break_the_tools_schema_never_reach_the_server(srv):
    with pytest.raises(PayloadError) as e:
        call(srv, "get_forecast", {"city": 5, "days": 9})
    assert e.value.code == "invalid_arguments"
    assert "arguments/city" in e.value.message and "arguments/days" in e.value.message
    with pytest.raises(PayloadError) as e:
        call(srv, "get_forecast", {})
    assert "'city' is a required property" in e.value.message
    assert srv.calls == [] and "tools/call" not in srv.rpc_methods()


def test_an_unknown_tool_is_refused_naming_the_tools_there_are(srv):
    with pytest.raises(PermanentError) as e:
        call(srv, "get_weather", {"city": "Oslo"})
    assert e.value.code == "unknown_tool"
    assert "fail, get_forecast, repeat, shout, slow" in e.value.message
    assert "tools/call" not in srv.rpc_methods()


def test_a_wrong_or_missing_token_is_a_credential_error_without_the_token(srv):
    bad = "wrong-token-abcdef0123456789"
    with pytest.raises(CredentialError) as e:
        call(srv, "get_forecast", {"city": "Oslo"}, credentials={"url": srv.url, "token": bad})
    assert e.value.status == 401 and e.value.code == "unauthorized"
    assert bad not in str(e.value) + repr(e.value.to_dict())
    assert "token" in e.value.message
    with pytest.raises(CredentialError) as e:
        call(srv, "get_forecast", {"city": "Oslo"}, credentials={"url": srv.url})
    assert e.value.status == 401
    assert srv.calls == []


def test_a_server_that_signs_in_with_oauth_is_named_as_such():
    with WeatherServer(oauth=True) as oauth:
        with pytest.raises(CredentialError) as e:
            call(oauth, "shout", {"text": "x"}, credentials={"url": oauth.url})
        assert e.value.status == 401 and "OAuth" in e.value.message
        assert "personal access token" in e.value.message
        assert call(oauth, "shout", {"text": "x"})["text"] == "X"  # a token it accepts works


def test_headers_from_the_credential_are_sent(srv):
    credentials = {
        "url": srv.url,
        "headers": {"Authorization": f"Bearer {srv.token}", "X-Tenant": "acme"},
    }
    out = call(srv, "shout", {"text": "hi"}, credentials=credentials)
    assert out["text"] == "HI"
    assert all(s.headers.get("x-tenant") == "acme" for s in srv.requests if s.method == "POST")


def test_a_missing_or_broken_credential_is_refused_before_any_request(srv):
    for bad in (None, {}, {"token": "x"}, {"url": "ftp://127.0.0.1/mcp"},
                {"url": srv.url, "headers": {"Host": "evil"}},
                {"url": srv.url, "token": "a", "headers": {"Authorization": "Bearer b"}},
                {"url": srv.url.replace("http://", "http://user:pw@")}):  # fmt: skip
        with pytest.raises(CredentialError):
            levqor_mcp.run_task("mcp", "call_tool", {"tool": "shout"}, bad, ctx())
    assert srv.requests == []


# ---------------------------------------------------------------- the SSRF guard


def test_a_loopback_server_is_refused_unless_the_operator_allows_it(srv):
    for url in (srv.url, srv.url.replace("127.0.0.1", "localhost")):
        with pytest.raises(BlockedURLError) as e:
            call(srv, "shout", {"text": "x"}, credentials=creds(srv, url=url), env={})
        assert "LEVQOR_SSRF_ALLOW" in e.value.message
    with pytest.raises(BlockedURLError):
        levqor_mcp.load_options("mcp", "call_tool", "tool", {}, creds(srv), ctx(env={}))
    with pytest.raises(BlockedURLError):
        levqor_mcp.check_credentials("mcp", creds(srv), ctx(env={}))
    assert srv.requests == []  # refused before a byte was sent
    assert call(srv, "shout", {"text": "x"}, env=ALLOW)["text"] == "X"


def test_plain_http_is_only_for_loopback_or_allowed_hosts():
    no_env: dict = {}
    check = levqor_mcp.validate_credentials
    assert check("mcp", {"url": "http://mcp.example.com/mcp"}, no_env) == {
        "url": "the URL must use https (plain http only to a loopback host or one allowed in "
        "LEVQOR_SSRF_ALLOW)"
    }
    assert check("mcp", {"url": "https://mcp.example.com/mcp"}, no_env) == {}
    assert check("mcp", {"url": "http://127.0.0.1:8000/mcp"}, no_env) == {}
    assert check("mcp", {"url": "http://10.1.2.3/mcp"}, {"LEVQOR_SSRF_ALLOW": "10.0.0.0/8"}) == {}
    assert check("mcp", {"url": "http://mcp.lan/mcp"}, {"LEVQOR_SSRF_ALLOW": "mcp.lan"}) == {}
    assert "headers" in check(
        "mcp", {"url": "https://a.example/mcp", "headers": {"Mcp-Session-Id": "x"}}, no_env
    )
    with pytest.raises(CredentialError) as e:
        levqor_mcp.run_task(
            "mcp",
            "call_tool",
            {"tool": "x"},
            {"url": "http://mcp.example.com/mcp", "token": "t0ken-secret"},
            ctx(env={}),
        )
    assert "https" in e.value.message and "t0ken-secret" not in e.value.message


def test_a_redirect_to_another_origin_is_not_followed(srv):
    # the operator allows the redirector; the SDK follows redirects within the endpoint's
    # origin only, so the token never travels to the server it points at
    with FakeServer() as hop:
        hop.route("POST", "/mcp", Reply(307, b"", {"Location": srv.url}))
        with pytest.raises(PermanentError) as e:
            call(srv, "shout", {"text": "x"}, credentials=creds(srv, url=hop.url + "/mcp"))
        assert "not followed" in e.value.message and srv.token not in e.value.message
        assert hop.requests and srv.requests == []


# ---------------------------------------------------------------- the deadline


def no_new_threads(before: set[threading.Thread], wait: float = 10.0) -> bool:
    """True once every thread started since ``before`` has ended (a lookup's worker thread
    ends by itself just after its loop closes)."""
    end = time.monotonic() + wait
    while set(threading.enumerate()) - before:
        if time.monotonic() > end:
            return False
        time.sleep(0.05)
    return True


def test_a_slow_tool_is_cut_at_the_step_deadline_and_leaves_no_thread(srv):
    before = set(threading.enumerate())
    with pytest.raises(RetryableError) as e:
        call(srv, "slow", {"seconds": 30}, timeout=1.0)
    assert e.value.code == "timeout"
    assert no_new_threads(before)
    # the same connector answers at once afterwards, by a name to look up too
    by_name = creds(srv, url=srv.url.replace("127.0.0.1", "localhost"))
    loopback = {"LEVQOR_SSRF_ALLOW": "127.0.0.1,::1"}  # localhost may be ::1 as well
    assert (
        call(srv, "shout", {"text": "again"}, credentials=by_name, env=loopback)["text"] == "AGAIN"
    )
    assert no_new_threads(before)


def test_a_passed_deadline_fails_before_connecting(srv):
    late = StepContext(run_id="r", step_id="s", deadline=time.monotonic() - 1, env=ALLOW)
    with pytest.raises(RetryableError):
        levqor_mcp.run_task(
            "mcp", "call_tool", {"tool": "shout", "arguments": {"text": "x"}}, creds(srv), late
        )
    assert srv.requests == []


def test_an_answer_over_the_size_limit_is_not_read(srv):
    out = call(srv, "repeat", {"text": "0123456789" * 100, "times": 2_000})  # 2 MB: read
    assert len(out["text"]) == 2_000_000
    with pytest.raises(PermanentError) as e:  # 11 MB: more than any step may read
        call(srv, "repeat", {"text": "0123456789" * 100, "times": 11_000})
    assert e.value.code == "response_too_large" and not e.value.retryable


def test_a_call_from_inside_a_running_event_loop(srv):
    async def caller() -> dict:
        return call(srv, "shout", {"text": "from a loop"})

    assert asyncio.run(caller())["text"] == "FROM A LOOP"


# ---------------------------------------------------------------- the builder's choices and the test button


def test_load_options_lists_the_tools_with_their_schemas(srv):
    options = levqor_mcp.load_options("mcp", "call_tool", "tool", {}, creds(srv), ctx())
    assert [o["value"] for o in options] == ["fail", "get_forecast", "repeat", "shout", "slow"]
    forecast = options[1]
    assert forecast["label"] == "Weather forecast"
    assert forecast["description"] == "The forecast for a city."
    assert forecast["schema"]["required"] == ["city"]
    assert forecast["schema"]["properties"]["days"]["maximum"] == 7
    assert options[3]["label"] == "shout"  # no title: the name
    assert levqor_mcp.load_options("mcp", "call_tool", "arguments", {}, creds(srv), ctx()) is None
    assert "tools/call" not in srv.rpc_methods()


def test_check_credentials_names_the_server_and_counts_its_tools(srv):
    out = levqor_mcp.check_credentials("mcp", creds(srv), ctx())
    assert out["ok"] is True
    assert out["server"] == "weather 1.4.2"
    assert out["tools"] == 5 and out["protocol"]
    with pytest.raises(CredentialError):
        levqor_mcp.check_credentials("mcp", creds(srv, token="nope-nope-nope"), ctx())


def test_a_server_of_the_handshake_era_is_called_after_initialize():
    with WeatherServer(legacy=True) as old:
        out = call(old, "get_forecast", {"city": "Rome"})
        assert out["structured"]["summary"] == "Sunny in Rome"
        methods = old.rpc_methods()
        assert methods[:2] == ["server/discover", "initialize"]  # refused probe, then handshake
        assert methods[-1] == "tools/call"
        session = {s.headers.get("mcp-session-id") for s in old.requests if s.rpc == "tools/call"}
        assert len(session) == 1 and None not in session  # the call ran in the session
        check = levqor_mcp.check_credentials("mcp", creds(old), ctx())
        assert check["protocol"] in HANDSHAKE_PROTOCOL_VERSIONS and check["tools"] == 5


def test_a_server_without_auth_needs_no_token():
    with WeatherServer(token=None) as open_srv:
        out = call(open_srv, "shout", {"text": "open"}, credentials={"url": open_srv.url})
        assert out["text"] == "OPEN"
        assert "authorization" not in open_srv.requests[0].headers


def test_an_endpoint_that_is_not_mcp_says_so(srv):
    with pytest.raises(PermanentError) as e:
        call(
            srv,
            "shout",
            {"text": "x"},
            credentials=creds(srv, url=srv.url.replace("/mcp", "/nothing")),
        )
    assert e.value.status == 404 and "streamable HTTP endpoint" in e.value.message
