"""What model steps share: token usage, the agent's model-turn contract, and its limits.

A connector with model actions declares them ``"usage": "tokens"`` in its description: each
such action's output carries ``usage`` (:data:`USAGE_SCHEMA`), which the runner copies into the
step's :class:`~levqor_kernel.recording.StepRecord` so the host can record and price it
(``rates`` in the connector's description: credits per million tokens, by model).

A connector that can drive an ``agent`` step names its *turn action* (``"agent": {"action":
...}``): the flow calls it once per model turn with :data:`AGENT_TURN_PAYLOAD` (the
conversation so far, in the provider-neutral form below, and the tools on offer) and expects
:data:`AGENT_TURN_OUTPUT` (the model's text, the tools it wants called, the tokens used). The
flow itself calls the tools: each is a connector action of the catalog, run as a child step
of the agent (docs/ai-steps.md).

Messages::

    {"role": "system" | "user", "content": "..."}
    {"role": "assistant", "content": "..." | None,
     "tool_calls": [{"id": "call_1", "name": "slack_send_message", "arguments": {...}}]}
    {"role": "tool", "tool_call_id": "call_1", "name": "slack_send_message", "content": "<JSON>"}
"""

from __future__ import annotations

import copy
import re
from collections.abc import Iterable, Mapping
from typing import Any

#: a tool's name, as OpenAI-compatible servers accept function names
TOOL_NAME = r"^[a-zA-Z0-9_-]{1,64}$"
_TOOL_NAME = re.compile(TOOL_NAME)

DEFAULT_AGENT_ITERATIONS = 10
MAX_AGENT_ITERATIONS = 50
DEFAULT_AGENT_TIMEOUT = 300.0
MAX_AGENT_TIMEOUT = 3600.0
DEFAULT_AGENT_TOKENS = 100_000
MAX_AGENT_TOKENS = 10_000_000
MAX_AGENT_TOOLS = 32

#: what a metered action's output carries as ``usage``, and a turn's
USAGE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["model", "input_tokens", "output_tokens"],
    "properties": {
        "model": {"type": "string"},
        "input_tokens": {"type": "integer", "minimum": 0},
        "output_tokens": {"type": "integer", "minimum": 0},
        "total_tokens": {"type": "integer", "minimum": 0},
    },
}

_TOOL_CALL: dict[str, Any] = {
    "type": "object",
    "required": ["id", "name", "arguments"],
    "properties": {
        "id": {"type": "string", "minLength": 1},
        "name": {"type": "string", "minLength": 1},
        "arguments": {"type": "object"},
    },
}

MESSAGE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["role"],
    "properties": {
        "role": {"enum": ["system", "user", "assistant", "tool"]},
        "content": {"type": ["string", "null"]},
        "tool_calls": {"type": "array", "items": _TOOL_CALL},
        "tool_call_id": {"type": "string"},
        "name": {"type": "string"},
    },
}

TOOL_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["name", "description", "parameters"],
    "properties": {
        "name": {"type": "string", "pattern": TOOL_NAME},
        "description": {"type": "string"},
        "parameters": {"type": "object", "description": "JSON Schema of the arguments"},
    },
}

#: the payload the flow gives an agent's turn action
AGENT_TURN_PAYLOAD: dict[str, Any] = {
    "type": "object",
    "required": ["model", "messages"],
    "properties": {
        "model": {"type": "string", "minLength": 1},
        "messages": {"type": "array", "minItems": 1, "items": MESSAGE_SCHEMA},
        "tools": {"type": "array", "items": TOOL_SCHEMA},
        "temperature": {"type": "number", "minimum": 0, "maximum": 2},
        "max_tokens": {"type": "integer", "minimum": 1},
    },
}

#: what an agent's turn action answers: ``content`` is the final answer when ``tool_calls``
#: is empty
AGENT_TURN_OUTPUT: dict[str, Any] = {
    "type": "object",
    "required": ["content", "tool_calls", "usage"],
    "properties": {
        "content": {"type": ["string", "null"]},
        "tool_calls": {"type": "array", "items": _TOOL_CALL},
        "usage": USAGE_SCHEMA,
        "finish_reason": {"type": ["string", "null"]},
    },
}


def usage_of(output: Any) -> dict[str, Any] | None:
    """The ``usage`` of a metered step's output, normalised (``total_tokens`` filled in), or
    ``None`` when it has none that fits :data:`USAGE_SCHEMA`."""
    if not isinstance(output, Mapping):
        return None
    u = output.get("usage")
    if not isinstance(u, Mapping) or not isinstance(u.get("model"), str):
        return None
    counts = []
    for key in ("input_tokens", "output_tokens"):
        v = u.get(key)
        if isinstance(v, bool) or not isinstance(v, int) or v < 0:
            return None
        counts.append(v)
    return {
        "model": u["model"],
        "input_tokens": counts[0],
        "output_tokens": counts[1],
        "total_tokens": counts[0] + counts[1],
    }


def add_usage(usages: Iterable[Mapping[str, Any] | None]) -> dict[str, Any]:
    """Token counts summed over ``usages`` (``None`` items skipped), with ``by_model``."""
    total = {"input_tokens": 0, "output_tokens": 0, "total_tokens": 0}
    by_model: dict[str, dict[str, int]] = {}
    for u in usages:
        if not u:
            continue
        m = by_model.setdefault(str(u.get("model", "")), {"input_tokens": 0, "output_tokens": 0})
        for key in ("input_tokens", "output_tokens"):
            n = int(u.get(key) or 0)
            total[key] += n
            m[key] += n
            total["total_tokens"] += n
    return {**total, "by_model": by_model}


def tool_name(connector: str, action: str) -> str:
    """The default name of the tool for ``connector.action`` (``slack_send_message``)."""
    return f"{connector}_{action}"[:64]


def is_tool_name(name: Any) -> bool:
    return isinstance(name, str) and bool(_TOOL_NAME.match(name))


def tool_parameters(payload_schema: Mapping[str, Any], fixed: Iterable[str] = ()) -> dict[str, Any]:
    """The arguments schema the model sees for an action: its payload schema without the fields
    the pipeline's author fixed (``fixed``), which the model neither sees nor sets."""
    schema = copy.deepcopy(dict(payload_schema))
    fixed = set(fixed)
    if not fixed:
        return schema
    props = schema.get("properties")
    if isinstance(props, dict):
        schema["properties"] = {k: v for k, v in props.items() if k not in fixed}
    if isinstance(schema.get("required"), list):
        schema["required"] = [r for r in schema["required"] if r not in fixed]
    return schema


def price_tokens(usage: Mapping[str, Any] | None, rates: Mapping[str, Any] | None) -> int:
    """Credits for ``usage`` at ``rates`` (``{model: {"input": n, "output": n}}``, credits per
    million tokens; ``"*"`` for models not listed), rounded up; 0 without usage or a rate."""
    if not usage or not rates:
        return 0
    rate = rates.get(str(usage.get("model"))) or rates.get("*")
    if not isinstance(rate, Mapping):
        return 0
    millionths = int(usage.get("input_tokens") or 0) * float(rate.get("input") or 0) + int(
        usage.get("output_tokens") or 0
    ) * float(rate.get("output") or 0)
    return int(-(-millionths // 1_000_000)) if millionths > 0 else 0


__all__ = [
    "AGENT_TURN_OUTPUT",
    "AGENT_TURN_PAYLOAD",
    "DEFAULT_AGENT_ITERATIONS",
    "DEFAULT_AGENT_TIMEOUT",
    "DEFAULT_AGENT_TOKENS",
    "MAX_AGENT_ITERATIONS",
    "MAX_AGENT_TIMEOUT",
    "MAX_AGENT_TOKENS",
    "MAX_AGENT_TOOLS",
    "MESSAGE_SCHEMA",
    "TOOL_NAME",
    "TOOL_SCHEMA",
    "USAGE_SCHEMA",
    "add_usage",
    "is_tool_name",
    "price_tokens",
    "tool_name",
    "tool_parameters",
    "usage_of",
]
