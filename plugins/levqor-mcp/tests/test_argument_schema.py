"""A tool's input schema comes from an MCP server the connector does not control: arguments are
checked against it only when it can be used (local ``$ref``s that end), else the server judges."""

from __future__ import annotations

from levqor_mcp.client import argument_problems


def test_a_schema_whose_ref_refers_to_itself_leaves_the_arguments_to_the_server():
    endless = {"type": "object", "$defs": {"a": {"$ref": "#/$defs/a"}},
               "properties": {"x": {"$ref": "#/$defs/a"}}}  # fmt: skip
    assert argument_problems(endless, {"x": 1}) is None


def test_a_usable_schema_still_names_what_is_wrong():
    schema = {"type": "object", "$defs": {"n": {"type": "integer"}}, "properties": {"x": {"$ref": "#/$defs/n"}}}
    assert argument_problems(schema, {"x": 1}) == []
    assert argument_problems(schema, {"x": "one"}) == ["arguments/x: 'one' is not of type 'integer'"]
