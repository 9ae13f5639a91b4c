"""An agent step offers a tool of an MCP server (the agent tool of docs/mcp.md) to a scripted
model: the call is a child step that reaches the SDK-built server, its result goes back to the
model, and without ``"approval": false`` the call waits for a person first."""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path

import levqor_mcp
import pytest
from levqor_kernel import ai, hookimpl
from levqor_kernel.pipeline import validate_pipeline
from levqor_kernel.plugins import make_plugin_manager
from levqor_kernel.runner import ListRecorder, Runner, RunRequest
from levqor_mcp.client_fake import WeatherServer

DOC = (Path(__file__).resolve().parents[3] / "docs" / "mcp.md").read_text()
#: the agent tool the guide shows (its credential is named "weather")
AGENT_TOOL = json.loads(
    re.search(r"### In an agent step.*?```json\n(.*?)^```", DOC, re.S | re.M).group(1)
)


class Model:
    """A model connector whose turn action answers from a script."""

    def __init__(self) -> None:
        self.script: list[dict] = []
        self.seen: list[dict] = []

    @hookimpl
    def describe_schema(self):
        return [
            {
                "name": "model",
                "title": "Model",
                "description": "a scripted model",
                "credentials": None,
                "agent": {"action": "turn"},
                "actions": {
                    "turn": {
                        "title": "Agent turn",
                        "payload": ai.AGENT_TURN_PAYLOAD,
                        "output": ai.AGENT_TURN_OUTPUT,
                        "usage": "tokens",
                        "hidden": True,
                        "writes": False,
                        "example": {"model": "m", "messages": [{"role": "user", "content": "hi"}]},
                    }
                },
            }
        ]

    @hookimpl
    def run_task(self, connector, action, payload, credentials, context):
        self.seen.append(copy.deepcopy(payload))
        return self.script.pop(0)


def turn(content=None, calls=()):
    return {
        "content": content,
        "tool_calls": [
            {"id": f"call_{n}", "name": name, "arguments": args}
            for n, (name, args) in enumerate(calls)
        ],
        "usage": {"model": "m1", "input_tokens": 10, "output_tokens": 5},
    }


@pytest.fixture(scope="module")
def weather():
    with WeatherServer() as srv:
        yield srv


@pytest.fixture
def model():
    return Model()


@pytest.fixture
def runner(model):
    pm = make_plugin_manager(
        entry_points=False, builtins=False, plugins=[("model", model), ("mcp", levqor_mcp)]
    )
    r = Runner(pm, sleep=lambda s: None, env={"LEVQOR_SSRF_ALLOW": "127.0.0.1"})
    yield r
    r.close()


def pipeline(tool: dict) -> dict:
    return {
        "levqor": 1,
        "trigger": {"type": "manual"},
        "steps": [
            {
                "id": "helper",
                "type": "agent",
                "connector": "model",
                "model": "m1",
                "goal": "What will the weather be in {{ trigger.city }}?",
                "tools": [tool],
            }
        ],
    }


def run(runner, weather, doc):
    def credentials(name, connector):
        return {"url": weather.url, "token": weather.token} if name == "weather" else None

    rec = ListRecorder()
    res = runner.run(
        RunRequest("run1", doc, {"city": "Oslo"}), credentials=credentials, recorder=rec
    )
    return res, rec


def test_the_guides_agent_tool_calls_the_mcp_server_as_a_child_step(runner, model, weather):
    weather.reset()
    doc = pipeline(AGENT_TOOL)
    assert validate_pipeline(doc, runner.pm.catalog, credentials={"weather": "mcp"}) == []
    model.script = [
        turn(calls=[("get_forecast", {"arguments": {"city": "Oslo", "days": 2}})]),
        turn("Sunny in Oslo, 21.5 degrees."),
    ]
    res, rec = run(runner, weather, doc)
    assert res.status == "succeeded", res.error
    assert res.outputs["helper"]["answer"] == "Sunny in Oslo, 21.5 degrees."
    assert weather.calls == [("get_forecast", {"city": "Oslo", "days": 2})]
    # the model was offered the tool's arguments, not the fixed tool name nor the credential
    offered = {t["name"]: t for t in model.seen[0]["tools"]}
    assert set(offered) == {"get_forecast"}
    assert set(offered["get_forecast"]["parameters"]["properties"]) == {"arguments"}
    # the call is a child step of mcp.call_tool, and its output came back to the model
    recs = {r.step_id: r for r in res.records}
    call = recs["helper.turns[0].calls[0]"]
    assert (call.connector, call.action, call.status) == ("mcp", "call_tool", "succeeded")
    events = {e["step"]: e for k, e in rec.events if k == "step_finished"}
    assert events["helper.turns[0].calls[0]"]["input"] == {
        "tool": "get_forecast",
        "arguments": {"city": "Oslo", "days": 2},
    }
    result = model.seen[1]["messages"][-1]
    assert result["role"] == "tool" and "Sunny in Oslo" in result["content"]
    assert weather.token not in repr(model.seen) + repr(rec.events)


def test_without_approval_false_a_call_waits_for_a_person(runner, model, weather):
    weather.reset()
    tool = {k: v for k, v in AGENT_TOOL.items() if k != "approval"}
    model.script = [turn(calls=[("get_forecast", {"arguments": {"city": "Oslo"}})])]
    res, _rec = run(runner, weather, pipeline(tool))
    assert res.status == "waiting"
    assert (
        res.wait["kind"] == "approval" and res.wait["step"] == "helper.turns[0].calls[0].approval"
    )
    assert weather.calls == [] and "tools/call" not in weather.rpc_methods()
