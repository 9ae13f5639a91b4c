"""Pipelines as MCP tools: which pipelines are tools, their names, descriptions and input
schemas, and the MCP server (the SDK's low-level :class:`mcp.server.Server`) that lists them and
runs one per tool call, for one signed-in caller.

The server knows the host only through :class:`levqor_kernel.host.PipelineCalls`; the transports
(:mod:`levqor_mcp.server_http`, :mod:`levqor_mcp.server_stdio`) sign the caller in and hand it
the caller's user.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from typing import Any

import anyio
import mcp_types as types
from levqor_kernel.host import HttpError, PipelineCalls
from mcp.server import Server

from . import __version__

__all__ = [
    "ANY_OBJECT",
    "RUN_STATUS_TOOL",
    "TRIGGER",
    "build_server",
    "tool_for",
    "tool_name",
    "tools_for",
]

#: the runs a tool call starts carry this trigger (the run page and the runs API show it)
TRIGGER = "mcp"
#: the input schema of a pipeline that declares none: any object
ANY_OBJECT: dict[str, Any] = {"type": "object"}
#: the tool that reads a run a call left running (its name has no pipeline's ``_<id>`` tail)
RUN_STATUS_TOOL = "levqor_run_status"
_NAME_MAX = 128  # an MCP tool name: 1-128 of A-Z a-z 0-9 _ - .
_ID_CHARS = 8
_TEXT_MAX = 100_000  # characters of a result's text content (structuredContent is whole)


def tool_name(name: str, pipeline_id: str) -> str:
    """A stable, valid tool name: the pipeline's name as a lower-case slug (``_`` between
    words, at most 100 characters, ``pipeline`` when nothing is left), ``_``, and the first
    8 letters or digits of its id after the ``pl_`` prefix, so two pipelines of one name
    differ."""
    slug = re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")[:100].strip("_") or "pipeline"
    tail = pipeline_id.rsplit("_", 1)[-1] if "_" in pipeline_id.strip("_") else pipeline_id
    short = re.sub(r"[^A-Za-z0-9]", "", tail)[:_ID_CHARS].lower()
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


_STATUS_TOOL = types.Tool(
    name=RUN_STATUS_TOOL,
    title="Levqor run status",
    description="The status, output and error of a run a pipeline tool started (its run_id), "
    "for a call that answered before the run finished.",
    input_schema={
        "type": "object",
        "properties": {"run_id": {"type": "string", "minLength": 1, "maxLength": 64}},
        "required": ["run_id"],
        "additionalProperties": False,
    },
)


def _text(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)
    return text if len(text) <= _TEXT_MAX else text[:_TEXT_MAX] + "…"


def _error_result(message: str, **structured: Any) -> types.CallToolResult:
    return types.CallToolResult(
        content=[types.TextContent(text=message)],
        structured_content=structured or None,
        is_error=True,
    )


def result_of(answer: Mapping[str, Any], wait_seconds: float) -> types.CallToolResult:
    """A call's answer (:meth:`PipelineCalls.call_pipeline`) as the tool's result: the run's
    output as JSON text; ``structuredContent`` ``{"run_id", "status", "output"}``; a failed or
    cancelled run is an error result with its (redacted) error message; a run not final yet
    names its run id and status for ``levqor_run_status``."""
    run_id, status = answer["run_id"], answer["status"]
    structured = {"run_id": run_id, "status": status, "output": answer.get("output")}
    if status == "succeeded":
        return types.CallToolResult(
            content=[types.TextContent(text=_text(answer.get("output")))],
            structured_content=structured,
        )
    if status in ("failed", "cancelled"):
        error = answer.get("error") if isinstance(answer.get("error"), Mapping) else {}
        where = f" at step {error['step']}" if error.get("step") else ""
        message = error.get("message") or status
        return _error_result(
            f"run {run_id} {status}{where}: {message}", **structured, error=dict(error) or None
        )
    if status == "waiting":
        note = f"run {run_id} is waiting (an approval, a timer or a child run)"
    else:
        note = f"run {run_id} is still {status} after {wait_seconds:g} s"
    return types.CallToolResult(
        content=[types.TextContent(text=f"{note}: ask {RUN_STATUS_TOOL} with its run_id later")],
        structured_content=structured,
    )


def _refusal(e: HttpError) -> types.CallToolResult:
    """A refused call (bad input, billing, a pipeline that cannot run) as an error result the
    model can read and correct: the message and each problem's pointer."""
    problems = (e.details or {}).get("problems") if isinstance(e.details, dict) else None
    lines = [e.message]
    for p in problems or []:
        if isinstance(p, Mapping):
            lines.append(f"{p.get('pointer') or '/'}: {p.get('message')}")
    return _error_result("\n".join(lines), code=e.code, problems=problems or None)


def build_server(calls: PipelineCalls, user: Mapping[str, Any], *, wait_seconds: float) -> Server:
    """The MCP server of one signed-in caller: ``tools/list`` lists their callable pipelines
    (and ``levqor_run_status``); ``tools/call`` runs one and waits up to ``wait_seconds`` for
    it. The host's calls block (the database, the wait): they run in a worker thread, so the
    event loop keeps serving the connection meanwhile."""
    user = dict(user)

    async def listed() -> dict[str, tuple[dict[str, Any], str]]:
        pipelines = await anyio.to_thread.run_sync(calls.callable_pipelines, user["id"])
        return tools_for(pipelines)

    async def list_tools(ctx: Any, params: types.PaginatedRequestParams | None) -> types.ListToolsResult:
        tools = [
            types.Tool(
                name=t["name"],
                title=t["title"],
                description=t["description"],
                input_schema=t["inputSchema"],
            )
            for t, _pid in (await listed()).values()
        ]
        return types.ListToolsResult(tools=[*tools, _STATUS_TOOL])

    async def call_tool(ctx: Any, params: types.CallToolRequestParams) -> types.CallToolResult:
        args = params.arguments if params.arguments is not None else {}
        if params.name == RUN_STATUS_TOOL:
            run_id = args.get("run_id")
            if not isinstance(run_id, str) or not run_id:
                return _error_result("run_id (a string) is required")
            answer = await anyio.to_thread.run_sync(calls.run_status, user["id"], run_id)
            if answer is None:
                return _error_result(f"no run {run_id} of yours")
            return result_of(answer, 0)
        found = (await listed()).get(params.name)
        if found is None:
            return _error_result(f"unknown tool {params.name!r}: list the tools again")
        _tool, pipeline_id = found

        def call() -> dict[str, Any]:
            return calls.call_pipeline(
                user, pipeline_id, args, trigger=TRIGGER, wait_seconds=wait_seconds
            )

        try:
            answer = await anyio.to_thread.run_sync(call)
        except HttpError as e:
            if e.status >= 500:
                raise
            return _refusal(e)
        return result_of(answer, wait_seconds)

    return Server(
        "levqor",
        version=__version__,
        title="Levqor pipelines",
        instructions="Each tool runs one of your Levqor pipelines with the arguments as its "
        f"input and answers with the run's output; {RUN_STATUS_TOOL} reads a run that was "
        "still going when its call answered.",
        on_list_tools=list_tools,
        on_call_tool=call_tool,
    )
