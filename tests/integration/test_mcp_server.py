"""levqor-mcp's server inside a real host, driven by the MCP SDK's own clients: the streamable
HTTP client against ``/mcp`` of a host served over loopback, and the stdio client against a
``levqor mcp serve`` subprocess. Each tool call is a run of the caller's pipeline (trigger
``mcp``), seen in the runs API."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import anyio
import httpx2
import jsonschema
import pytest
from e2e_support import ROOT, LiveServer, backend_env, clean_env, make_app
from mcp import ClientSession
from mcp.client.stdio import StdioServerParameters, stdio_client
from mcp.client.streamable_http import streamable_http_client

pytest.importorskip("levqor_mcp")

pytestmark = [pytest.mark.backends, pytest.mark.workers]

GREET = {
    "levqor": 1,
    "name": "Greet",
    "description": "Greets someone by name",
    "trigger": {"type": "manual"},
    "input": {
        "type": "object",
        "properties": {"name": {"type": "string", "minLength": 1}},
        "required": ["name"],
        "additionalProperties": False,
    },
    "steps": [
        {
            "id": "hello",
            "connector": "core",
            "action": "transform",
            "payload": {"value": {"greeting": "Hello, {{ trigger.name }}!"}},
        }
    ],
}
REFUSE = {
    "levqor": 1,
    "name": "Refuse",
    "trigger": {"type": "webhook"},
    "steps": [{"id": "no", "type": "stop", "status": "failed", "message": "not today"}],
}
NIGHTLY = {
    "levqor": 1,
    "name": "Nightly",
    "trigger": {"type": "schedule", "cron": "0 3 * * *"},
    "steps": [{"id": "v", "connector": "core", "action": "transform", "payload": {"value": 1}}],
}


GUIDE = (ROOT / "docs" / "mcp.md").read_text()


def example(name: str) -> str:
    """The code block under ``<!-- example: NAME -->`` in docs/mcp.md."""
    found = re.search(rf"<!-- example: {name} -->\n```\w+\n(.*?)^```", GUIDE, re.S | re.M)
    assert found, f"docs/mcp.md has no example {name}"
    return found.group(1)


@pytest.fixture
def live(tmp_path):
    srv = LiveServer(make_app(tmp_path))
    yield srv
    srv.stop()


def _pipeline(client, doc: dict) -> dict:
    r = client.post("/api/v1/pipelines", json={"name": doc["name"], "pipeline": doc})
    assert r.status_code == 201, r.text
    return r.json()


async def _with_session(url: str, key: str, fn) -> Any:
    async with httpx2.AsyncClient(headers={"Authorization": f"Bearer {key}"}, timeout=60) as http:
        async with streamable_http_client(f"{url}/mcp", http_client=http) as (read, write):
            async with ClientSession(read, write) as session:
                await session.initialize()
                return await fn(session)


def over_http(live: LiveServer, key: str, fn) -> Any:
    return anyio.run(_with_session, live.url, key, fn)


def test_the_sdk_client_lists_the_callers_pipelines_and_a_call_is_a_run(live):
    _user, key = live.user_with_key("ada@example.com")
    api = live.client(key)
    greet = _pipeline(api, GREET)
    refuse = _pipeline(api, REFUSE)
    _pipeline(api, NIGHTLY)  # a schedule starts itself: no tool

    async def go(session: ClientSession):
        listed = await session.list_tools()
        ok = await session.call_tool(f"greet_{greet['id'][3:11]}", {"name": "Ada"})
        failed = await session.call_tool(f"refuse_{refuse['id'][3:11]}", {})
        return listed, ok, failed

    listed, ok, failed = over_http(live, key, go)
    tools = {t.name: t for t in listed.tools}
    greet_tool = tools[f"greet_{greet['id'][3:11]}"]
    assert greet_tool.description == "Greets someone by name"
    assert greet_tool.input_schema == GREET["input"]
    assert tools[f"refuse_{refuse['id'][3:11]}"].input_schema == {"type": "object"}
    assert not any(name.startswith("nightly") for name in tools)
    assert "levqor_run_status" in tools

    assert ok.is_error is False
    assert json.loads(ok.content[0].text) == {"value": {"greeting": "Hello, Ada!"}}
    run_id = ok.structured_content["run_id"]
    run = api.get(f"/api/v1/runs/{run_id}").json()
    assert run["status"] == "succeeded" and run["trigger"] == "mcp"
    assert run["pipeline_id"] == greet["id"] and run["input"] == {"name": "Ada"}
    assert run["output"] == ok.structured_content["output"]

    assert failed.is_error is True
    assert "failed" in failed.content[0].text and "not today" in failed.content[0].text
    assert api.get(f"/api/v1/runs/{failed.structured_content['run_id']}").json()["status"] == "failed"


def test_input_that_breaks_the_schema_is_a_tool_error_and_no_run(live):
    _user, key = live.user_with_key("ada@example.com")
    api = live.client(key)
    greet = _pipeline(api, GREET)
    name = f"greet_{greet['id'][3:11]}"

    async def go(session: ClientSession):
        bad = await session.call_tool(name, {"name": 7})
        unknown = await session.call_tool("no_such_tool", {})
        status = await session.call_tool("levqor_run_status", {"run_id": "run_nope"})
        return bad, unknown, status

    bad, unknown, status = over_http(live, key, go)
    assert bad.is_error is True
    assert "/input/name" in bad.content[0].text
    assert bad.structured_content["code"] == "invalid_input"
    assert unknown.is_error is True and "unknown tool" in unknown.content[0].text
    assert status.is_error is True
    assert api.get("/api/v1/runs").json()["items"] == []


def test_another_users_pipelines_are_neither_listed_nor_callable(live):
    _ada, ada_key = live.user_with_key("ada@example.com")
    _bob, bob_key = live.user_with_key("bob@example.com")
    adas = _pipeline(live.client(ada_key), GREET)
    name = f"greet_{adas['id'][3:11]}"

    async def go(session: ClientSession):
        return await session.list_tools(), await session.call_tool(name, {"name": "Bob"})

    listed, called = over_http(live, bob_key, go)
    assert [t.name for t in listed.tools] == ["levqor_run_status"]
    assert called.is_error is True
    assert live.client(ada_key).get("/api/v1/runs").json()["items"] == []


def test_a_run_still_going_when_the_wait_ends_answers_its_id(tmp_path):
    srv = LiveServer(make_app(tmp_path, start_workers=False, env={"LEVQOR_MCP_WAIT_SECONDS": "0"}))
    try:
        _user, key = srv.user_with_key("ada@example.com")
        greet = _pipeline(srv.client(key), GREET)
        name = f"greet_{greet['id'][3:11]}"

        async def go(session: ClientSession):
            first = await session.call_tool(name, {"name": "Ada"})
            later = await session.call_tool(
                "levqor_run_status", {"run_id": first.structured_content["run_id"]}
            )
            return first, later

        first, later = over_http(srv, key, go)
        assert first.is_error is False and first.structured_content["status"] == "queued"
        assert "levqor_run_status" in first.content[0].text
        assert later.structured_content["run_id"] == first.structured_content["run_id"]
        assert later.structured_content["status"] == "queued"
    finally:
        srv.stop()


def test_without_credentials_or_the_scope_mcp_answers_401_or_403(live):
    import requests

    init = {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {}}
    r = requests.post(f"{live.url}/mcp", json=init, timeout=10)
    assert r.status_code == 401
    assert r.headers["WWW-Authenticate"].startswith("Bearer")
    r = requests.post(
        f"{live.url}/mcp", json=init, headers={"Authorization": "Bearer lvq_nope"}, timeout=10
    )
    assert r.status_code == 401
    _user, read_only = live.user_with_key("ro@example.com", scopes=["pipelines:read"])
    r = live.client(read_only).post("/mcp", json=init)
    assert r.status_code == 403


def test_malformed_and_huge_bodies_are_4xx(live):
    _user, key = live.user_with_key("ada@example.com")
    c = live.client(key)
    accept = {"Accept": "application/json, text/event-stream"}
    json_type = {**accept, "Content-Type": "application/json"}
    assert c.post("/mcp", data=b"{not json", headers=json_type).status_code == 400
    assert c.post("/mcp", data=b"[1, 2", headers=json_type).status_code == 400
    assert c.post("/mcp", data=b"42", headers=json_type).status_code == 400
    assert c.post("/mcp", data=b"{}", headers={**accept, "Content-Type": "text/plain"}).status_code == 415
    assert c.post("/mcp", json=[None, None], headers=accept).status_code == 400  # no batches
    not_rpc = c.post("/mcp", json={"hello": "world"}, headers=accept)
    assert 400 <= not_rpc.status_code < 500
    # whoever answers (the host or the SDK's transport), the body is what the OpenAPI says
    declared = c.get("/api/v1/openapi.json").json()
    schema = declared["paths"]["/mcp"]["post"]["responses"][str(not_rpc.status_code)]
    schema = {**schema["content"]["application/json"]["schema"], "components": declared["components"]}
    jsonschema.validate(not_rpc.json(), schema)
    huge = {"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {"x": "a" * 2_000_000}}
    assert c.post("/mcp", json=huge, headers=accept).status_code == 413
    assert c.get("/mcp", headers=accept).status_code == 405
    assert c.delete("/mcp", headers=accept).status_code == 405


def test_mcp_is_in_the_openapi_document(live):
    doc = live.client().get("/api/v1/openapi.json").json()
    post = doc["paths"]["/mcp"]["post"]
    assert post["x-levqor-scope"] == "runs:execute" and "401" in post["responses"]


# ---------------------------------------------------------------- stdio: levqor mcp serve
async def _over_stdio(params: StdioServerParameters, fn) -> Any:
    async with stdio_client(params) as (read, write):
        async with ClientSession(read, write) as session:
            await session.initialize()
            return await fn(session)


def _serve_params(tmp_path, env: dict[str, str]) -> StdioServerParameters:
    """The guide's Claude Desktop configuration, with this environment's ``levqor``, the test's
    data folder (and database) and ``env``."""
    (server,) = json.loads(example("mcp_stdio_config"))["mcpServers"].values()
    assert server["command"] == "levqor" and set(server["env"]) == {"LEVQOR_API_KEY", "LEVQOR_DATA_DIR"}
    guide_env = {k: v for k, v in server["env"].items() if k != "LEVQOR_API_KEY"}
    return StdioServerParameters(
        command=str(Path(sys.executable).parent / "levqor"),
        args=server["args"],
        env={
            **clean_env(),
            **guide_env,
            "LEVQOR_DATA_DIR": str(tmp_path / "data"),
            "LEVQOR_SCHEDULER": "off",
            "LEVQOR_POLL_INTERVAL": "0.05",
            "LEVQOR_EXECUTOR": "embedded",
            **backend_env(tmp_path),
            **env,
        },
    )


def test_levqor_mcp_serve_lists_and_calls_over_stdio(tmp_path):
    app = make_app(tmp_path, start_workers=False)
    srv = LiveServer(app)
    try:
        _user, key = srv.user_with_key("ada@example.com")
        api = srv.client(key)
        greet = _pipeline(api, GREET)
        name = f"greet_{greet['id'][3:11]}"

        async def go(session: ClientSession):
            return await session.list_tools(), await session.call_tool(name, {"name": "Stdio"})

        listed, called = anyio.run(
            _over_stdio, _serve_params(tmp_path, {"LEVQOR_API_KEY": key}), go
        )
        assert name in {t.name for t in listed.tools}
        assert called.is_error is False, called.content
        assert json.loads(called.content[0].text) == {"value": {"greeting": "Hello, Stdio!"}}
        run = api.get(f"/api/v1/runs/{called.structured_content['run_id']}").json()
        assert run["status"] == "succeeded" and run["trigger"] == "mcp"
    finally:
        srv.stop()


def test_levqor_mcp_serve_refuses_to_start_without_a_valid_key(tmp_path):
    params = _serve_params(tmp_path, {})
    for extra, expected in (({}, "LEVQOR_API_KEY is not set"), ({"LEVQOR_API_KEY": "lvq_bad"}, "invalid")):
        r = subprocess.run(
            [params.command, *params.args],
            env={**params.env, **extra},
            input="",
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert r.returncode != 0 and expected in r.stderr, r.stderr
        assert r.stdout == ""


# ---------------------------------------------------------------- docs/mcp.md, run
def test_the_guides_pipeline_is_a_tool_its_python_client_calls(live, tmp_path):
    """docs/mcp.md's pipeline saved as it is written, and its Python client run as it is
    written (the SDK's streamable HTTP client) against the live host."""
    _user, key = live.user_with_key("guide@example.com", scopes=["pipelines:write", "runs:execute"])
    doc = json.loads(example("mcp_tool"))
    saved = _pipeline(live.client(key), doc)
    script = tmp_path / "client.py"
    script.write_text(example("mcp_python_client"))
    done = subprocess.run(
        [sys.executable, str(script)],
        env=clean_env(LEVQOR_URL=live.url, LEVQOR_API_KEY=key),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    answer = json.loads(done.stdout)
    assert answer == {
        "tool": f"new_customer_{saved['id'][3:11]}",
        "error": False,
        "output": {"value": {"customer": "ada@example.com", "greeting": "Welcome, Ada!"}},
    }

    async def bad(session: ClientSession):
        return await session.call_tool(answer["tool"], {"email": "not an address", "name": "Ada"})

    refused = over_http(live, key, bad)
    assert refused.is_error and "/input/email" in refused.content[0].text


# ---------------------------------------------------------------- session sign-in, billing
def test_the_dashboard_session_calls_with_its_csrf_token(tmp_path):
    """"API-key or session auth": the session cookie works on /mcp as on every route, with the
    CSRF token of its sign-in (a cookie alone is refused, as for any change)."""
    from levqor_host.security.passwords import hash_password

    srv = LiveServer(make_app(tmp_path, env={"LEVQOR_DEV": "1"}))  # plain-HTTP cookies
    try:
        user = srv.state.store.users.create("cookie@example.com")
        srv.state.store.auth.set_password_hash(user["id"], hash_password("correct horse battery"))
        browser = srv.client()
        login = browser.post(
            "/api/v1/auth/login",
            json={"email": "cookie@example.com", "password": "correct horse battery"},
        )
        assert login.status_code == 200, login.text
        csrf = {"X-CSRF-Token": login.json()["csrf_token"]}
        saved = browser.post(
            "/api/v1/pipelines", json={"name": "Greet", "pipeline": GREET}, headers=csrf
        )
        assert saved.status_code == 201, saved.text
        accept = {"Accept": "application/json, text/event-stream"}
        listing = {"jsonrpc": "2.0", "id": 1, "method": "tools/list"}
        refused = browser.post("/mcp", json=listing, headers=accept)
        assert refused.status_code == 403 and refused.json()["error"]["code"] == "csrf_failed"
        listed = browser.post("/mcp", json=listing, headers={**accept, **csrf})
        assert listed.status_code == 200, listed.text
        names = [t["name"] for t in listed.json()["result"]["tools"]]
        assert f"greet_{saved.json()['id'][3:11]}" in names
    finally:
        srv.stop()


def test_a_call_is_gated_and_billed_like_any_run(tmp_path):
    pytest.importorskip("levqor_stripe")
    env = {
        "LEVQOR_BILLING": "local",
        "LEVQOR_PLANS": json.dumps({"pro": {"monthly_credits": 0}}),
        "LEVQOR_PRICES": "core.transform=5",
    }
    srv = LiveServer(make_app(tmp_path, env=env))
    try:
        user, key = srv.user_with_key("payer@example.com", plan="pro")
        api = srv.client(key)
        greet = _pipeline(api, GREET)
        name = f"greet_{greet['id'][3:11]}"

        async def call(session: ClientSession):
            return await session.call_tool(name, {"name": "Ada"})

        broke = over_http(srv, key, call)
        assert broke.is_error is True and "credits" in broke.content[0].text
        assert api.get("/api/v1/runs").json()["items"] == []
        srv.state.ledger.grant(user["id"], 12)
        paid = over_http(srv, key, call)
        assert paid.is_error is False, paid.content
        assert srv.state.ledger.balance(user["id"]) == 7
        lines = srv.state.ledger.lines(user["id"])
        assert any(line["run_id"] == paid.structured_content["run_id"] and line["delta"] == -5 for line in lines)
    finally:
        srv.stop()


@pytest.mark.parametrize("mode", ["auto", "legacy"])
def test_the_sdks_client_in_either_protocol_era_lists_and_calls(live, mode):
    """The SDK's high-level Client: ``auto`` speaks the protocol's per-request era
    (``server/discover``, no handshake) where the server offers it, ``legacy`` the
    ``initialize`` handshake; /mcp answers both."""
    from mcp.client import Client
    from mcp_types.version import HANDSHAKE_PROTOCOL_VERSIONS, MODERN_PROTOCOL_VERSIONS

    _user, key = live.user_with_key("ada@example.com")
    greet = _pipeline(live.client(key), GREET)
    name = f"greet_{greet['id'][3:11]}"

    async def go():
        headers = {"Authorization": f"Bearer {key}"}
        async with httpx2.AsyncClient(headers=headers, timeout=60) as http:
            transport = streamable_http_client(f"{live.url}/mcp", http_client=http)
            async with Client(transport, mode=mode) as client:
                listed = await client.list_tools()
                return client.protocol_version, listed, await client.call_tool(name, {"name": mode})

    version, listed, called = anyio.run(go)
    era = MODERN_PROTOCOL_VERSIONS if mode == "auto" else HANDSHAKE_PROTOCOL_VERSIONS
    assert version in era
    assert name in {t.name for t in listed.tools}
    assert called.is_error is False
    assert called.structured_content["output"] == {"value": {"greeting": f"Hello, {mode}!"}}
