"""The JSON Schema of the pipeline document (``"levqor": 1``) and the limits it states.

:mod:`levqor_kernel.pipeline` validates documents against it and re-exports every name here.
"""

from __future__ import annotations

from typing import Any

from . import ai
from .conditions import CONDITION_SCHEMA

STEP_ID = r"^[a-z][a-z0-9_]{0,39}$"
DEFAULT_RETRY = {"max_attempts": 5, "initial_delay": 1.0, "max_delay": 300.0}
DEFAULT_TIMEOUT = 30.0
#: steps in one list (a pipeline's steps, a path's, a loop body's)
MAX_STEPS = 100
#: steps in the whole document, nested ones included
MAX_TOTAL_STEPS = 250
#: how deep constructs may nest (a loop in a branch in a loop ... )
MAX_NESTING = 8
#: the kinds of step; an action step may omit ``type``
STEP_TYPES = ("action", "branch", "parallel", "for_each", "wait", "pipeline", "stop", "agent")
#: waits up to this many seconds sleep in the worker; longer ones suspend the run
INLINE_WAIT_SECONDS = 5.0
#: the longest a wait may be (a timer's seconds, an until, an approval's timeout): 366 days
MAX_WAIT_SECONDS = 31_622_400
#: how many items a for-each loop takes at most, unless the operator sets another limit
DEFAULT_MAX_ITEMS = 10_000
#: the default and the largest concurrency of a loop or a parallel step
MAX_CONCURRENCY = 20

_STEPS = {"type": "array", "minItems": 1, "maxItems": MAX_STEPS, "items": {"$ref": "#/$defs/step"}}
_COMMON = {
    "id": {"type": "string", "pattern": STEP_ID},
    "name": {"type": "string", "maxLength": 200},
    "type": {"enum": list(STEP_TYPES)},
    "if": {"$ref": "#/$defs/condition"},
    "on_error": {
        "description": "fail (default), continue (record the error, output null), or fallback "
        "steps that run with the error in scope",
        "anyOf": [{"enum": ["fail", "continue"]}, {"$ref": "#/$defs/steps"}],
    },
}
_RETRY = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "max_attempts": {"type": "integer", "minimum": 1, "maximum": 20},
        "initial_delay": {"type": "number", "minimum": 0, "maximum": 300},
        "max_delay": {"type": "number", "minimum": 0, "maximum": 3600},
    },
}
_CONCURRENCY = {"type": "integer", "minimum": 1, "maximum": MAX_CONCURRENCY}


def _kind(name: str, required: list[str], props: dict[str, Any]) -> dict[str, Any]:
    """The ``if type == name then ...`` part of the step schema."""
    cond: dict[str, Any] = (
        {"not": {"required": ["type"]}}
        if name == "action"
        else {"required": ["type"], "properties": {"type": {"const": name}}}
    )
    if name == "action":
        cond = {"anyOf": [cond, {"properties": {"type": {"const": "action"}}, "required": ["type"]}]}
    return {
        "if": cond,
        "then": {
            "required": ["id", *required],
            "additionalProperties": False,
            "properties": {**{k: True for k in _COMMON}, **props},
        },
    }


_STEP_KINDS = [
    _kind(
        "action",
        ["connector", "action", "payload"],
        {
            "connector": {"type": "string", "maxLength": 40},
            "action": {"type": "string", "maxLength": 40},
            "credential": {"type": "string", "minLength": 1, "maxLength": 100},
            "payload": {"type": "object"},
            "timeout": {"type": "number", "exclusiveMinimum": 0, "maximum": 900},
            "retry": _RETRY,
        },
    ),
    _kind(
        "branch",
        ["paths"],
        {
            "paths": {
                "type": "array",
                "minItems": 1,
                "maxItems": 20,
                "items": {
                    "type": "object",
                    "required": ["if", "steps"],
                    "additionalProperties": False,
                    "properties": {
                        "name": {"type": "string", "maxLength": 200},
                        "if": {"$ref": "#/$defs/condition"},
                        "steps": {"$ref": "#/$defs/steps"},
                    },
                },
            },
            "default": {"$ref": "#/$defs/steps"},
        },
    ),
    _kind(
        "parallel",
        ["paths"],
        {
            "paths": {
                "type": "array",
                "minItems": 1,
                "maxItems": 20,
                "items": {
                    "type": "object",
                    "required": ["steps"],
                    "additionalProperties": False,
                    "properties": {
                        "name": {"type": "string", "maxLength": 200},
                        "steps": {"$ref": "#/$defs/steps"},
                        "required": {
                            "type": "boolean",
                            "default": True,
                            "description": "whether this path's failure fails the whole step",
                        },
                    },
                },
            },
            "concurrency": _CONCURRENCY,
        },
    ),
    _kind(
        "for_each",
        ["items", "steps"],
        {
            "items": {
                "description": "the array to iterate over, usually a template such as "
                "{{ trigger.orders }}",
                "type": ["string", "array"],
            },
            "steps": {"$ref": "#/$defs/steps"},
            "concurrency": _CONCURRENCY,
            "max_items": {"type": "integer", "minimum": 1},
            "on_item_error": {
                "enum": ["stop", "collect"],
                "description": "stop (default): the first failed item fails the loop; collect: "
                "record it, its output is null, and go on",
            },
        },
    ),
    _kind(
        "wait",
        [],
        {
            "seconds": {"type": ["number", "string"], "minimum": 0, "maximum": MAX_WAIT_SECONDS},
            "until": {"type": "string", "maxLength": 2000},
            "approval": {
                "type": "object",
                "additionalProperties": False,
                "properties": {
                    "message": {"type": "string", "maxLength": 5000},
                    "timeout": {"type": "number", "exclusiveMinimum": 0, "maximum": MAX_WAIT_SECONDS},
                    "on_timeout": {"enum": ["reject", "approve"]},
                },
            },
            "notify": {
                "$ref": "#/$defs/steps",
                "description": "steps that run when the approval starts waiting, with approval "
                "in scope (its message and its signed approve_url and reject_url), to post them "
                "where someone will see them",
            },
        },
    ),
    _kind(
        "pipeline",
        ["pipeline"],
        {
            "pipeline": {"type": "string", "minLength": 1, "maxLength": 64},
            "input": {"type": "object"},
        },
    ),
    _kind(
        "agent",
        ["connector", "model", "goal"],
        {
            "connector": {
                "type": "string",
                "maxLength": 40,
                "description": "the model connector (one whose description names an agent action)",
            },
            "credential": {"type": "string", "minLength": 1, "maxLength": 100},
            "model": {"type": "string", "minLength": 1, "maxLength": 200},
            "system": {"type": "string", "maxLength": 20000, "description": "instructions (a template)"},
            "goal": {"type": "string", "minLength": 1, "maxLength": 20000, "description": "the task (a template)"},
            "tools": {
                "type": "array",
                "maxItems": ai.MAX_AGENT_TOOLS,
                "items": {
                    "type": "object",
                    "required": ["connector", "action"],
                    "additionalProperties": False,
                    "properties": {
                        "connector": {"type": "string", "maxLength": 40},
                        "action": {"type": "string", "maxLength": 40},
                        "credential": {"type": "string", "minLength": 1, "maxLength": 100},
                        "name": {
                            "type": "string",
                            "pattern": ai.TOOL_NAME,
                            "description": "the tool's name for the model (default connector_action)",
                        },
                        "description": {"type": "string", "maxLength": 2000},
                        "payload": {
                            "type": "object",
                            "description": "payload fields the author fixes (templates allowed); "
                            "the model neither sees nor sets them",
                        },
                        "approval": {
                            "type": "boolean",
                            "description": "ask for approval before each call (default: the "
                            "agent's approval setting)",
                        },
                        "timeout": {"type": "number", "exclusiveMinimum": 0, "maximum": 900},
                        "retry": _RETRY,
                    },
                },
            },
            "approval": {
                "enum": ["writes", "all", "none"],
                "description": "which tool calls wait for a person's approval first: those of "
                "actions that write upstream (default), all, or none",
            },
            "approval_timeout": {"type": "number", "exclusiveMinimum": 0, "maximum": MAX_WAIT_SECONDS},
            "max_iterations": {"type": "integer", "minimum": 1, "maximum": ai.MAX_AGENT_ITERATIONS},
            "max_tokens": {"type": "integer", "minimum": 1, "maximum": ai.MAX_AGENT_TOKENS},
            "timeout": {
                "type": "number",
                "exclusiveMinimum": 0,
                "maximum": ai.MAX_AGENT_TIMEOUT,
                "description": "seconds the agent may work (waiting for approvals not counted)",
            },
            "temperature": {"type": "number", "minimum": 0, "maximum": 2},
            "retry": _RETRY,
        },
    ),
    _kind(
        "stop",
        [],
        {
            "status": {"enum": ["succeeded", "failed"]},
            "output": {},
            "message": {"type": "string", "maxLength": 2000},
        },
    ),
]

#: the ``app`` trigger: an event in a connected app (a polling or an instant trigger of a connector)
APP_TRIGGER_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["type", "connector", "trigger"],
    "additionalProperties": False,
    "properties": {
        "type": {"const": "app"},
        "connector": {"type": "string", "minLength": 1, "maxLength": 40},
        "trigger": {"type": "string", "minLength": 1, "maxLength": 40},
        "credential": {
            "type": "string",
            "minLength": 1,
            "maxLength": 100,
            "description": "The owner's credential for the connector",
        },
        "config": {
            "type": "object",
            "default": {},
            "description": "The trigger's settings (its config schema)",
        },
        "interval": {
            "type": "integer",
            "minimum": 1,
            "description": "Polling triggers: seconds between polls (the host's minimum applies)",
        },
    },
}
# in the document's trigger, as the other kinds are written (``type`` is checked by the enum)
_APP_TRIGGER_THEN: dict[str, Any] = {
    "required": ["connector", "trigger"],
    "additionalProperties": False,
    "properties": {**APP_TRIGGER_SCHEMA["properties"], "type": True},
}

PIPELINE_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "$id": "https://levqor.dev/schemas/pipeline-1.json",
    "title": "Levqor pipeline",
    "type": "object",
    "required": ["levqor", "trigger", "steps"],
    "additionalProperties": False,
    "properties": {
        "levqor": {"const": 1, "description": "Document format version"},
        "name": {"type": "string", "maxLength": 200},
        "description": {"type": "string", "maxLength": 5000},
        "notify_on_failure": {"type": "boolean", "description": "Email the owner when a run fails"},
        "trigger": {
            "type": "object",
            "required": ["type"],
            "properties": {"type": {"enum": ["manual", "webhook", "schedule", "app"]}},
            "allOf": [
                {
                    "if": {"properties": {"type": {"const": "manual"}}},
                    "then": {"properties": {"type": True}, "additionalProperties": False},
                },
                {
                    "if": {"properties": {"type": {"const": "webhook"}}},
                    "then": {
                        "additionalProperties": False,
                        "properties": {
                            "type": True,
                            "wait": {
                                "type": "boolean",
                                "description": "Answer the webhook with the finished run",
                            },
                            "wait_seconds": {"type": "number", "minimum": 0, "maximum": 30},
                            "require_signature": {"type": "boolean"},
                        },
                    },
                },
                {
                    "if": {"properties": {"type": {"const": "schedule"}}},
                    "then": {
                        "required": ["cron"],
                        "additionalProperties": False,
                        "properties": {
                            "type": True,
                            "cron": {
                                "type": "string",
                                "maxLength": 200,
                                "description": "Standard 5-field cron (day-of-week 0 and 7 "
                                "are Sunday, 1-5 Monday to Friday) or an @-macro",
                            },
                            "timezone": {"type": "string", "maxLength": 64, "default": "UTC"},
                            "input": {"type": "object"},
                        },
                    },
                },
                {"if": {"properties": {"type": {"const": "app"}}}, "then": _APP_TRIGGER_THEN},
            ],
        },
        "steps": {"$ref": "#/$defs/steps"},
        "on_failure": {
            "$ref": "#/$defs/steps",
            "description": "Steps that run (with the error in scope) when the run fails",
        },
        "error_pipeline": {
            "type": "string",
            "minLength": 1,
            "maxLength": 64,
            "description": "Another pipeline of the same owner started with the failed run's "
            "id, pipeline, step and error",
        },
        "input": {
            "type": "object",
            "description": "JSON Schema of what a run starts with (manual and webhook triggers, "
            "MCP tool calls): checked when a run starts; it is the tool's input schema over MCP",
        },
        "pinned": {
            "type": "object",
            "description": "Sample outputs by step id, for building and testing steps; real "
            "runs never use them",
            "propertyNames": {"pattern": STEP_ID},
            "additionalProperties": {"type": "object"},
        },
    },
    "$defs": {
        "steps": _STEPS,
        "step": {
            "type": "object",
            "required": ["id"],
            "properties": _COMMON,
            "allOf": _STEP_KINDS,
        },
        "condition": CONDITION_SCHEMA,
    },
}
