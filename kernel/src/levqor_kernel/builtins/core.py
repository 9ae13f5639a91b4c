"""The built-in ``core`` connector: transform, filter and delay. No network."""

from __future__ import annotations

import time
from typing import Any

from .. import hookimpl
from ..conditions import CONDITION_SCHEMA, OPS, compare, holds, problems  # noqa: F401 - OPS re-exported
from ..context import StepContext
from ..errors import PayloadError, RetryableError, StopRun

ICON = (
    "data:image/svg+xml,%3Csvg xmlns='http://www.w3.org/2000/svg' viewBox='0 0 24 24'%3E%3Ccircle cx='12' cy='12' "
    "r='9' fill='none' stroke='%23556' stroke-width='2'/%3E%3Cpath d='M8 12h8M12 8v8' stroke='%23556' stroke-width='2'/%3E%3C/svg%3E"
)

CONDITION = {"$ref": "#/$defs/condition"}


@hookimpl
def describe_schema() -> list[dict[str, Any]]:
    return [
        {
            "name": "core",
            "title": "Core",
            "description": "Built-in steps that need no account: reshape data, stop a run on a condition, wait.",
            "icon": ICON,
            "categories": ["utility"],
            "cooperative": True,
            "credentials": None,
            "actions": {
                "transform": {
                    "title": "Transform data",
                    "writes": False,
                    "description": "Build a new object from templated values; the object becomes the step output.",
                    "payload": {
                        "type": "object",
                        "required": ["value"],
                        "additionalProperties": False,
                        "properties": {
                            "value": {"description": "Any JSON value; strings may be templates"}
                        },
                    },
                    "output": {"type": "object", "properties": {"value": {}}},
                    "example": {
                        "value": {
                            "name": "{{ trigger.name }}",
                            "greeting": "Hello {{ trigger.name }}",
                        }
                    },
                    "price": 0,
                    "minutes_saved": 0.5,
                },
                "filter": {
                    "title": "Continue only if",
                    "writes": False,
                    "description": "Stop the run successfully when the conditions do not hold.",
                    "payload": {
                        "type": "object",
                        "$defs": {"condition": CONDITION_SCHEMA},
                        "required": ["conditions"],
                        "additionalProperties": False,
                        "properties": {
                            "conditions": {
                                "type": "array",
                                "minItems": 1,
                                "maxItems": 50,
                                "items": CONDITION,
                            },
                            "mode": {"type": "string", "enum": ["all", "any"], "default": "all"},
                        },
                    },
                    "output": {
                        "type": "object",
                        "required": ["passed"],
                        "properties": {"passed": {"type": "boolean"}},
                    },
                    "example": {
                        "conditions": [{"left": "{{ trigger.amount }}", "op": "gt", "right": 100}]
                    },
                    "price": 0,
                    "minutes_saved": 0.2,
                },
                "delay": {
                    "title": "Delay",
                    "writes": False,
                    "description": "Wait a number of seconds (capped by LEVQOR_MAX_DELAY_SECONDS and the step timeout).",
                    "payload": {
                        "type": "object",
                        "required": ["seconds"],
                        "additionalProperties": False,
                        "properties": {
                            "seconds": {"type": "number", "minimum": 0, "maximum": 3600}
                        },
                    },
                    "output": {"type": "object", "properties": {"waited": {"type": "number"}}},
                    "example": {"seconds": 1},
                    "price": 0,
                },
            },
        }
    ]


#: one comparison, rendered (kept for code written against the filter's first form)
evaluate = compare


@hookimpl
def validate_payload(connector: str, action: str, payload: dict[str, Any]) -> list[str] | None:
    if connector != "core" or action != "filter":
        return None
    return [
        f"conditions/{i}{where}: {message}"
        for i, c in enumerate(payload.get("conditions", []))
        for where, message in problems(c)
    ]


@hookimpl
def run_task(
    connector: str, action: str, payload: dict[str, Any], credentials: Any, context: StepContext
) -> dict[str, Any]:
    if action == "transform":
        return {"value": payload["value"]}
    if action == "filter":
        results = [holds(c) for c in payload["conditions"]]
        passed = any(results) if payload.get("mode") == "any" else all(results)
        if not passed:
            raise StopRun("filter conditions not met", {"passed": False})
        return {"passed": True}
    if action == "delay":
        cap = float(context.env.get("LEVQOR_MAX_DELAY_SECONDS", "300"))
        want = min(float(payload["seconds"]), cap)
        left = context.remaining()
        if left is not None:
            want = min(want, max(0.0, left - 0.05))
        end = time.monotonic() + want
        while (now := time.monotonic()) < end:
            if context.cancelled():
                # not a success: the run is being cancelled or handed to another worker,
                # which will wait again from the start of this step
                raise RetryableError("delay interrupted", code="interrupted")
            time.sleep(min(0.05, end - now))
        return {"waited": round(want, 3)}
    raise PayloadError(f"core has no action {action!r}")
