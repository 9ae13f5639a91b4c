"""Pipelines as MCP tools: which pipelines are tools, and their names, descriptions and input
schemas."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

__all__ = ["ANY_OBJECT", "TRIGGER_KINDS", "tool_for", "tool_name", "tools_for"]

#: the trigger kinds whose pipelines an MCP client may start
TRIGGER_KINDS = frozenset({"manual", "webhook"})
#: the input schema of a pipeline that declares none: any object
ANY_OBJECT: dict[str, Any] = {"type": "object"}
#: an MCP tool name: 1-128 of A-Z a-z 0-9 _ - . (the specification's recommendation)
_NAME_MAX = 128
_ID_CHARS = 8


def tool_name(name: str, pipeline_id: str) -> str:
    """A stable, valid tool name: the pipeline's name as a lower-case slug (``_`` between
    words, at most 100 characters, ``pipeline`` when nothing is left), ``_``, and the first
    8 characters of its id (letters and digits only), so two pipelines of one name differ."""
    slug = re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")[:100].strip("_") or "pipeline"
    short = re.sub(r"[^A-Za-z0-9]", "", pipeline_id)[:_ID_CHARS].lower()
    return f"{slug}_{short}"[:_NAME_MAX] if short else slug


def tool_for(pipeline: Mapping[str, Any]) -> dict[str, Any]:
    """The MCP tool of a callable pipeline (``id``, ``name``, ``description``?, ``input``?):
    ``name``, ``title``, ``description`` and ``inputSchema``."""
    name = str(pipeline.get("name") or "")
    schema = pipeline.get("input")
    return {
        "name": tool_name(name or "pipeline", str(pipeline["id"])),
        "title": name or None,
        "description": str(pipeline.get("description") or name or "A Levqor pipeline"),
        "inputSchema": dict(schema) if isinstance(schema, Mapping) else dict(ANY_OBJECT),
    }


def tools_for(pipelines: Iterable[Mapping[str, Any]]) -> dict[str, tuple[dict[str, Any], str]]:
    """The tools of several pipelines by name, each with its pipeline's id."""
    return {(tool := tool_for(p))["name"]: (tool, str(p["id"])) for p in pipelines}
