"""Pipelines as MCP tools: names, descriptions and input schemas, without the host."""

from __future__ import annotations

import re

from levqor_mcp.server import ANY_OBJECT, tool_for, tool_name, tools_for

VALID = re.compile(r"^[A-Za-z0-9_.-]{1,128}$")


def test_a_tool_name_is_the_slug_of_the_name_and_a_short_id():
    assert tool_name("Send the weekly report!", "1a2b3c4d-5e6f") == "send_the_weekly_report_1a2b3c4d"
    assert tool_name("   ", "abc") == "pipeline_abc"
    assert tool_name("Übersicht 東京", "0f0f0f0f0f") == "bersicht_0f0f0f0f"
    assert tool_name("Report", "pl_0123456789abcdef") == "report_01234567"
    long = tool_name("x" * 500, "deadbeefcafe")
    assert VALID.match(long) and long.endswith("_deadbeef")


def test_two_pipelines_of_one_name_are_two_tools():
    tools = tools_for([{"id": "aaaaaaaa1", "name": "Report"}, {"id": "bbbbbbbb2", "name": "Report"}])
    assert sorted(tools) == ["report_aaaaaaaa", "report_bbbbbbbb"]
    assert tools["report_bbbbbbbb"][1] == "bbbbbbbb2"


def test_the_input_schema_is_the_declared_one_or_any_object():
    declared = {"type": "object", "properties": {"email": {"type": "string"}}, "required": ["email"]}
    tool = tool_for({"id": "p1", "name": "Invite", "description": "Invite a user", "input": declared})
    assert tool["inputSchema"] == declared and tool["description"] == "Invite a user"
    bare = tool_for({"id": "p2", "name": "Ping"})
    assert bare["inputSchema"] == ANY_OBJECT and bare["description"] == "Ping"
