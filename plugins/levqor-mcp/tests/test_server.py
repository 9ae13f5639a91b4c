"""The MCP server of levqor-mcp without the host: the SDK's own client session against
:func:`levqor_mcp.server.build_server` over the SDK's in-memory transport, and one JSON-RPC
message at a time through the streamable-HTTP bridge (:func:`levqor_mcp.server_http.serve_one`),
over an in-memory :class:`levqor_kernel.host.PipelineCalls`. The same server inside a real
host, over HTTP and stdio, is tested in tests/integration/test_mcp_server.py."""

from __future__ import annotations

import json
from typing import Any

import anyio
import pytest
from levqor_kernel.host import HttpError, PipelineCalls
from levqor_kernel.pipeline import validate_input
from levqor_mcp.server import RUN_STATUS_TOOL, TRIGGER, build_server
from levqor_mcp.server_http import serve_one
from levqor_mcp.settings import McpSettings
from mcp.client import Client

ADA = {"id": "u_ada", "email": "ada@example.com"}
SCHEMA = {
    "type": "object",
    "properties": {"name": {"type": "string"}},
    "required": ["name"],
}


class MemoryCalls:
    """A PipelineCalls over a dict of pipelines; each call finishes as its pipeline says."""

    def __init__(self) -> None:
        self.pipelines = {
            "pl_aaaaaaaa11": {"id": "pl_aaaaaaaa11", "name": "Greet", "description": "Say hi",
                              "input": SCHEMA, "trigger": "manual", "version": 1,
                              "owner": "u_ada", "ends": "succeeded"},
            "pl_bbbbbbbb22": {"id": "pl_bbbbbbbb22", "name": "Break", "description": None,
                              "input": None, "trigger": "webhook", "version": 3,
                              "owner": "u_ada", "ends": "failed"},
            "pl_cccccccc33": {"id": "pl_cccccccc33", "name": "Slow", "description": None,
                              "input": None, "trigger": "manual", "version": 1,
                              "owner": "u_ada", "ends": "running"},
            "pl_dddddddd44": {"id": "pl_dddddddd44", "name": "Bobs", "description": None,
                              "input": None, "trigger": "manual", "version": 1,
                              "owner": "u_bob", "ends": "succeeded"},
        }
        self.runs: dict[str, dict] = {}
        self.calls: list[tuple] = []

    def user_for_key(self, api_key: str, scope: str | None = None) -> dict:
        if api_key != "lvq_good":
            raise HttpError(401, "unauthorized", "invalid or revoked API key")
        return ADA

    def callable_pipelines(self, user_id: str) -> list[dict]:
        return [
            {k: v for k, v in p.items() if k not in ("owner", "ends")}
            for p in self.pipelines.values()
            if p["owner"] == user_id
        ]

    def call_pipeline(self, user, pipeline_id, input, *, trigger, wait_seconds, idempotency_key=None):
        p = self.pipelines.get(pipeline_id)
        if p is None or p["owner"] != user["id"]:
            raise HttpError(404, "not_found", "no such pipeline to call")
        problems = [x.to_dict() for x in validate_input({"input": p["input"]}, input)]
        if problems:
            raise HttpError(422, "invalid_input", "the input does not match", {"problems": problems})
        if input.get("broke"):
            raise HttpError(402, "insufficient_credits", "needs 5 credits, balance is 0")
        self.calls.append((user["id"], pipeline_id, input, trigger, wait_seconds))
        run_id = f"run_{len(self.runs) + 1}"
        status = p["ends"]
        self.runs[run_id] = {
            "run_id": run_id,
            "status": status,
            "output": {"echo": input} if status == "succeeded" else None,
            "error": {"step": "s1", "message": "upstream said no"} if status == "failed" else None,
            "final": status in ("succeeded", "failed"),
        }
        return dict(self.runs[run_id])

    def run_status(self, user_id: str, run_id: str) -> dict | None:
        return self.runs.get(run_id) if user_id == "u_ada" else None

    def start_workers(self) -> bool:
        return True


def session_run(server, fn, mode: str = "legacy") -> Any:
    """``fn(client)`` with the SDK's client connected in-process: ``legacy`` is the initialize
    handshake over a client session (what stdio and streamable HTTP carry), ``auto`` the
    protocol's per-request era."""

    async def main():
        async with Client(server, mode=mode) as client:
            return await fn(client)

    return anyio.run(main)


def test_the_memory_calls_are_a_pipeline_calls():
    assert isinstance(MemoryCalls(), PipelineCalls)


@pytest.mark.parametrize("mode", ["legacy", "auto"])
def test_the_tools_are_the_callers_pipelines_with_their_schemas(mode):
    server = build_server(MemoryCalls(), ADA, wait_seconds=5)

    async def go(session):
        return await session.list_tools()

    tools = {t.name: t for t in session_run(server, go, mode).tools}
    assert sorted(tools) == ["break_bbbbbbbb", "greet_aaaaaaaa", RUN_STATUS_TOOL, "slow_cccccccc"]
    assert tools["greet_aaaaaaaa"].description == "Say hi"
    assert tools["greet_aaaaaaaa"].title == "Greet"
    assert tools["greet_aaaaaaaa"].input_schema == SCHEMA
    assert tools["break_bbbbbbbb"].input_schema == {"type": "object"}
    assert tools["break_bbbbbbbb"].description == "Break"


def test_a_call_runs_the_pipeline_and_answers_its_output():
    calls = MemoryCalls()
    server = build_server(calls, ADA, wait_seconds=7)

    async def go(session):
        return await session.call_tool("greet_aaaaaaaa", {"name": "Ada"})

    result = session_run(server, go)
    assert result.is_error is False
    assert json.loads(result.content[0].text) == {"echo": {"name": "Ada"}}
    assert result.structured_content == {
        "run_id": "run_1", "status": "succeeded", "output": {"echo": {"name": "Ada"}}
    }
    assert calls.calls == [("u_ada", "pl_aaaaaaaa11", {"name": "Ada"}, TRIGGER, 7)]


def test_a_failed_run_and_a_refused_call_are_tool_errors_the_model_can_read():
    calls = MemoryCalls()
    server = build_server(calls, ADA, wait_seconds=5)

    async def go(session):
        return (
            await session.call_tool("break_bbbbbbbb", {}),
            await session.call_tool("greet_aaaaaaaa", {"name": 5}),
            await session.call_tool("greet_aaaaaaaa", {"name": "x", "broke": True}),
            await session.call_tool("bobs_dddddddd", {}),
        )

    failed, invalid, refused, foreign = session_run(server, go)
    assert failed.is_error and failed.content[0].text == "run run_1 failed at step s1: upstream said no"
    assert failed.structured_content["error"] == {"step": "s1", "message": "upstream said no"}
    assert invalid.is_error and invalid.structured_content["code"] == "invalid_input"
    assert "/input/name: 5 is not of type 'string'" in invalid.content[0].text
    assert refused.is_error and "needs 5 credits" in refused.content[0].text
    assert foreign.is_error and "unknown tool" in foreign.content[0].text
    assert [c[1] for c in calls.calls] == ["pl_bbbbbbbb22"]  # nothing else started


def test_a_run_still_going_answers_its_id_and_the_status_tool_reads_it_later():
    calls = MemoryCalls()
    server = build_server(calls, ADA, wait_seconds=2)

    async def go(session):
        first = await session.call_tool("slow_cccccccc", {})
        calls.runs["run_1"].update(status="succeeded", output={"done": True}, final=True)
        later = await session.call_tool(RUN_STATUS_TOOL, {"run_id": "run_1"})
        missing = await session.call_tool(RUN_STATUS_TOOL, {"run_id": "run_404"})
        return first, later, missing

    first, later, missing = session_run(server, go)
    assert first.is_error is False
    assert first.structured_content == {"run_id": "run_1", "status": "running", "output": None}
    assert "still running after 2 s" in first.content[0].text
    assert later.structured_content["output"] == {"done": True}
    assert missing.is_error and "no run run_404" in missing.content[0].text


# ---------------------------------------------------------------- the streamable-HTTP bridge
HEADERS = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}


def rpc(server, message: dict, headers: dict | None = None) -> tuple[int, dict | None]:
    status, _headers, body = serve_one(
        server, headers or HEADERS, json.dumps(message).encode(), max_body=1 << 20
    )
    return status, (json.loads(body) if body else None)


def test_the_bridge_answers_one_json_rpc_message_at_a_time():
    server = build_server(MemoryCalls(), ADA, wait_seconds=1)
    status, init = rpc(server, {
        "jsonrpc": "2.0", "id": 1, "method": "initialize",
        "params": {"protocolVersion": "2025-06-18", "capabilities": {},
                   "clientInfo": {"name": "t", "version": "1"}},
    })
    assert status == 200 and init["result"]["serverInfo"]["name"] == "levqor"
    assert "tools" in init["result"]["capabilities"]
    versioned = {**HEADERS, "MCP-Protocol-Version": "2025-06-18"}
    status, listed = rpc(server, {"jsonrpc": "2.0", "id": 2, "method": "tools/list"}, versioned)
    assert status == 200 and len(listed["result"]["tools"]) == 4
    status, called = rpc(server, {
        "jsonrpc": "2.0", "id": 3, "method": "tools/call",
        "params": {"name": "greet_aaaaaaaa", "arguments": {"name": "HTTP"}},
    }, versioned)
    assert status == 200 and called["result"]["structuredContent"]["output"] == {"echo": {"name": "HTTP"}}


def test_the_bridge_refuses_what_is_no_json_rpc_message_with_a_4xx():
    server = build_server(MemoryCalls(), ADA, wait_seconds=1)
    assert 400 <= rpc(server, {"hello": "world"})[0] < 500
    no_accept = {"Content-Type": "application/json", "Accept": "text/html"}
    assert rpc(server, {"jsonrpc": "2.0", "id": 1, "method": "tools/list"}, no_accept)[0] == 406


def test_settings_are_bounded_and_name_the_variable():
    assert McpSettings.from_env({}) == McpSettings(60.0, 1_048_576)
    assert McpSettings.from_env({"LEVQOR_MCP_WAIT_SECONDS": "0"}).wait_seconds == 0
    for bad in ("-1", "301", "soon"):
        with pytest.raises(ValueError, match="LEVQOR_MCP_WAIT_SECONDS"):
            McpSettings.from_env({"LEVQOR_MCP_WAIT_SECONDS": bad})
