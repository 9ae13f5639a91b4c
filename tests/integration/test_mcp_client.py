"""A real Levqor host calls a tool of an MCP server built with the official SDK: the credential is
stored and tested, the builder's tool list comes from the server's tools/list, the pipeline of
docs/mcp.md calls the tool and its output is in the run; a wrong token fails the step with a clear
error that does not show it."""

from __future__ import annotations

import copy
import json
import re

import pytest
from e2e_support import ROOT, LiveServer, make_app
from levqor_mcp.client_fake import WeatherServer

# scripts/test-backends runs this file again on PostgreSQL and Celery (its host starts workers)
pytestmark = [pytest.mark.backends, pytest.mark.workers]


@pytest.fixture
def weather():
    with WeatherServer() as srv:
        yield srv


@pytest.fixture
def host(tmp_path):
    srv = LiveServer(make_app(tmp_path, executor={"workers": 2}))  # LEVQOR_SSRF_ALLOW=127.0.0.1
    yield srv
    srv.stop()


def add_credential(c, name: str, values: dict) -> str:
    r = c.post("/api/v1/credentials", json={"name": name, "connector": "mcp", "values": values})
    assert r.status_code == 201, r.text
    return r.json()["id"]


#: the example pipeline of docs/mcp.md (its credential is named "weather")
DOC_EXAMPLE = json.loads(
    re.search(
        r"<!-- example: mcp_call -->\n```json\n(.*?)^```",
        (ROOT / "docs" / "mcp.md").read_text(),
        re.S | re.M,
    ).group(1)
)


def forecast_pipeline(credential: str, on_error: str | None = None) -> dict:
    doc = copy.deepcopy(DOC_EXAMPLE)
    doc["steps"][0]["credential"] = credential
    if on_error:
        doc["steps"][0]["on_error"] = on_error
    return doc


def run(c, doc: dict, data: dict) -> dict:
    r = c.post("/api/v1/pipelines", json={"pipeline": doc})
    assert r.status_code == 201, r.text
    r = c.post("/api/v1/run?wait=30", json={"pipeline_id": r.json()["id"], "input": data})
    assert r.status_code == 200, r.text
    return r.json()


def test_a_pipeline_step_calls_a_tool_of_an_sdk_built_server(host, weather):
    _user, key = host.user_with_key("mcp@example.com")
    c = host.client(key)
    cred = add_credential(c, "weather", {"url": weather.url, "token": weather.token})
    listed = c.get("/api/v1/credentials").text
    assert weather.token not in listed and weather.url not in listed

    # the credential's test: initialize/discover and tools/list against the server
    r = c.post(f"/api/v1/credentials/{cred}/test")
    assert r.status_code == 200 and r.json()["ok"] is True, r.text
    assert r.json()["details"] == {
        "server": "weather 1.4.2",
        "protocol": r.json()["details"]["protocol"],
        "tools": 5,
    }

    # the builder's tool list, with each tool's input schema
    r = c.post(
        "/api/v1/connectors/mcp/actions/call_tool/options/tool", json={"credential": "weather"}
    )
    assert r.status_code == 200, r.text
    options = {o["value"]: o for o in r.json()["options"]}
    assert set(options) == {"get_forecast", "shout", "repeat", "fail", "slow"}
    assert options["get_forecast"]["label"] == "Weather forecast"
    assert options["get_forecast"]["schema"]["required"] == ["city"]
    weather.reset()

    result = run(c, forecast_pipeline("weather"), {"city": "Bergen"})
    assert result["status"] == "succeeded", result
    steps = {s["id"]: s for s in result["steps"]}
    out = steps["forecast"]["output"]
    assert out["structured"] == {
        "city": "Bergen",
        "days": 3,
        "temp_c": 21.5,
        "summary": "Sunny in Bergen",
    }
    assert out["is_error"] is False and "Sunny in Bergen" in out["text"]
    assert steps["note"]["output"] == {"value": "Sunny in Bergen"}
    assert weather.calls == [("get_forecast", {"city": "Bergen", "days": 3})]


def test_a_wrong_token_fails_the_step_with_a_clear_error(host, weather):
    _user, key = host.user_with_key("mcp-wrong@example.com")
    c = host.client(key)
    wrong = "not-the-token-0123456789"
    cred = add_credential(c, "weather-wrong", {"url": weather.url, "token": wrong})
    r = c.post(f"/api/v1/credentials/{cred}/test")
    assert r.status_code == 200 and r.json()["ok"] is False, r.text
    assert "401" in r.json()["message"] and wrong not in r.text

    result = run(c, forecast_pipeline("weather-wrong"), {"city": "Oslo"})
    assert result["status"] == "failed", result
    step = {s["id"]: s for s in result["steps"]}["forecast"]
    assert step["status"] == "failed"
    error = step["error"]
    assert error["type"] == "CredentialError" and error["status"] == 401, error
    assert "MCP server answered HTTP 401" in error["message"]
    assert "token" in error["message"]  # names what to fix
    assert wrong not in str(result)
    assert weather.calls == []  # the tool never ran


def test_a_tool_error_can_be_continued_past(host, weather):
    _user, key = host.user_with_key("mcp-continue@example.com")
    c = host.client(key)
    add_credential(c, "weather", {"url": weather.url, "token": weather.token})
    doc = forecast_pipeline("weather", on_error="continue")
    doc["steps"][0]["payload"] = {
        "tool": "fail",
        "arguments": {"reason": "no data for {{ trigger.city }}"},
    }
    doc["steps"][1]["payload"] = {"value": "went on"}
    result = run(c, doc, {"city": "Tromsø"})
    assert result["status"] == "succeeded", result
    steps = {s["id"]: s for s in result["steps"]}
    assert steps["forecast"]["status"] == "failed"
    assert "no data for Tromsø" in steps["forecast"]["error"]["message"]
    assert steps["note"]["output"] == {"value": "went on"}
