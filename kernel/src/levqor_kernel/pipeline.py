"""The pipeline document (``"levqor": 1``), its JSON Schema and whole-pipeline validation.

A pipeline is validated as a whole before any step runs; every problem names its JSON
pointer and, where it belongs to a step, the step id.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError

from . import ai
from .catalog import Catalog
from .conditions import CONDITION_SCHEMA
from .conditions import problems as condition_problems
from .cron import CronError, parse_cron
from .errors import PipelineInvalid, Problem, TemplateError
from .templating import is_template, root_names, step_references

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
_APP_TRIGGER_VALIDATOR = Draft202012Validator(APP_TRIGGER_SCHEMA)
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

_VALIDATOR = Draft202012Validator(PIPELINE_SCHEMA)


def _ptr(parts: Any) -> str:
    return "".join("/" + str(p).replace("~", "~0").replace("/", "~1") for p in parts)


def _step_of(doc: Any, parts: list) -> str | None:
    """The id of the innermost step that the JSON pointer ``parts`` lies in."""
    found: str | None = None
    node, parent_is_list = doc, False
    for p in parts:
        try:
            node = node[p]
        except (KeyError, IndexError, TypeError):
            return found
        if parent_is_list and isinstance(node, Mapping):
            sid = node.get("id")
            if isinstance(sid, str):
                found = sid
            elif isinstance(p, int) and found is None:
                found = f"#{p}"
        parent_is_list = isinstance(node, list)
    return found


def _depth(value: Any, limit: int) -> int:
    """How deep ``value`` nests, counted up to ``limit`` + 1 (no recursion)."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        v, d = stack.pop()
        deepest = max(deepest, d)
        if deepest > limit:
            return deepest
        if isinstance(v, dict):
            stack.extend((x, d + 1) for x in v.values())
        elif isinstance(v, list):
            stack.extend((x, d + 1) for x in v)
    return deepest


def step_type(step: Mapping[str, Any]) -> str:
    """A step's kind: ``action`` unless its ``type`` says otherwise."""
    return str(step.get("type") or "action")


def child_blocks(step: Mapping[str, Any]) -> list[tuple[str, list]]:
    """The step lists nested in ``step``, with their path segment relative to it:
    ``paths[1]``, ``default``, ``[]`` (a loop body, one per item), ``notify`` (an approval's)
    and ``on_error``."""
    out: list[tuple[str, list]] = []
    kind = step_type(step)
    if kind in ("branch", "parallel"):
        out += [(f"paths[{i}]", p.get("steps") or []) for i, p in enumerate(step.get("paths") or [])]
        if kind == "branch" and step.get("default"):
            out.append(("default", step["default"]))
    elif kind == "for_each":
        out.append(("[]", step.get("steps") or []))
    elif kind == "wait" and isinstance(step.get("notify"), list):
        out.append(("notify", step["notify"]))
    if isinstance(step.get("on_error"), list):
        out.append(("on_error", step["on_error"]))
    return out


def walk_steps(steps: list, depth: int = 0) -> Any:
    """Every step in ``steps`` and nested in them, in document order (preorder), with its
    nesting depth."""
    for step in steps:
        yield step, depth
        for _seg, block in child_blocks(step):
            yield from walk_steps(block, depth + 1)


def check_cron(expr: str) -> str | None:
    """A message when ``expr`` is not standard cron (five fields or an @-macro; see ``cron``)."""
    try:
        parse_cron(expr)
    except CronError as e:
        return str(e)
    return None


def retry_policy(step: Mapping[str, Any]) -> dict[str, float]:
    return {**DEFAULT_RETRY, **(step.get("retry") or {})}


def _walk_strings(value: Any, parts: list) -> Any:
    if isinstance(value, str):
        yield parts, value
    elif isinstance(value, dict):
        for k, v in value.items():
            yield from _walk_strings(v, [*parts, k])
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _walk_strings(v, [*parts, i])


#: the names every template may read; loop bodies add ``item`` and ``index``, error paths ``error``
BASE_NAMES = ("trigger", "steps", "run")
_NAME_ORDER = ("trigger", "steps", "run", "item", "index", "error", "approval")


def _names_text(names: frozenset[str]) -> str:
    ordered = [n for n in _NAME_ORDER if n in names]
    return ", ".join(ordered[:-1]) + " or " + ordered[-1]


class _Checker:
    """Walks a schema-valid document and collects what the schema cannot say: unknown
    connectors and actions, credentials, payloads, templates that read unknown names or steps
    that do not run before them, duplicate ids, and limits."""

    def __init__(self, catalog: Catalog, credentials: Mapping[str, str] | None) -> None:
        self.catalog = catalog
        self.credentials = credentials
        self.problems: list[Problem] = []
        self.seen: set[str] = set()

    def add(self, pointer: str, message: str, step: str | None = None) -> None:
        self.problems.append(Problem(pointer, message, step))

    def block(self, steps: list, base: str, visible: set[str], names: frozenset[str]) -> set[str]:
        """Check a list of steps; returns what the steps after it can refer to."""
        vis = set(visible)
        for i, step in enumerate(steps):
            self.step(step, f"{base}/{i}", vis, names)
            vis |= exported(step)
        return vis

    def step(self, step: Mapping[str, Any], base: str, vis: set[str], names: frozenset[str]) -> None:
        sid = step["id"]
        if sid in self.seen:
            self.add(f"{base}/id", f"duplicate step id {sid!r}", sid)
        self.seen.add(sid)
        if "if" in step:
            self.condition(step["if"], f"{base}/if", vis, names, sid)
        kind = step_type(step)
        if kind == "action":
            self.action(step, base, vis, names)
        elif kind in ("branch", "parallel"):
            for j, path in enumerate(step["paths"]):
                if kind == "branch":
                    self.condition(path["if"], f"{base}/paths/{j}/if", vis, names, sid)
                self.block(path["steps"], f"{base}/paths/{j}/steps", vis, names)
            if step.get("default"):
                self.block(step["default"], f"{base}/default", vis, names)
        elif kind == "for_each":
            items = step["items"]
            if isinstance(items, str) and not is_template(items):
                self.add(f"{base}/items", "items must be an array or a template such as {{ trigger.rows }}", sid)
            self.templates(items, f"{base}/items", vis, names, sid)
            self.block(step["steps"], f"{base}/steps", vis, names | {"item", "index"})
        elif kind == "wait":
            self.wait(step, base, vis, names)
        elif kind == "agent":
            self.agent(step, base, vis, names)
        else:  # pipeline, stop: templated fields
            for key in ("input", "output", "message"):
                if key in step:
                    self.templates(step[key], f"{base}/{key}", vis, names, sid)
        if isinstance(step.get("on_error"), list):
            self.block(step["on_error"], f"{base}/on_error", vis, names | {"error"})

    def wait(self, step: Mapping[str, Any], base: str, vis: set[str], names: frozenset[str]) -> None:
        sid = step["id"]
        kinds = [k for k in ("seconds", "until", "approval") if k in step]
        if len(kinds) != 1:
            self.add(base, "a wait step needs exactly one of seconds, until or approval", sid)
        seconds = step.get("seconds")
        if isinstance(seconds, str) and not is_template(seconds):
            self.add(f"{base}/seconds", "seconds must be a number or a template", sid)
        for key in ("seconds", "until", "approval"):
            if key in step:
                self.templates(step[key], f"{base}/{key}", vis, names, sid)
        if "notify" in step:
            if "approval" not in step:
                self.add(f"{base}/notify", "notify steps belong to an approval", sid)
            self.block(step["notify"], f"{base}/notify", vis, names | {"approval"})

    def agent(self, step: Mapping[str, Any], base: str, vis: set[str], names: frozenset[str]) -> None:
        sid = step["id"]
        info = self.catalog.get(step["connector"])
        if info is None:
            self.add(f"{base}/connector", f"unknown connector {step['connector']!r} (not installed)", sid)
        elif not info.agent_action:
            self.add(f"{base}/connector", f"connector {info.name!r} cannot drive an agent", sid)
        else:
            self.credential(step, base, info)
        for key in ("system", "goal"):
            if key in step:
                self.templates(step[key], f"{base}/{key}", vis, names, sid)
        seen: set[str] = set()
        for j, tool in enumerate(step.get("tools", [])):
            where = f"{base}/tools/{j}"
            name = tool.get("name") or ai.tool_name(tool["connector"], tool["action"])
            if name in seen:
                self.add(f"{where}/name", f"two tools are named {name!r}", sid)
            seen.add(name)
            if not ai.is_tool_name(name):
                self.add(f"{where}/name", f"{name!r} is not a valid tool name (give one: a-z A-Z 0-9 _ -)", sid)
            tinfo = self.catalog.get(tool["connector"])
            action = tinfo.actions.get(tool["action"]) if tinfo is not None else None
            if tinfo is None:
                self.add(f"{where}/connector", f"unknown connector {tool['connector']!r} (not installed)", sid)
            elif action is None or action.hidden:
                self.add(f"{where}/action", f"connector {tinfo.name!r} has no action {tool['action']!r}", sid)
            else:
                self.credential({**tool, "id": sid}, where, tinfo)
                fixed = tool.get("payload") or {}
                props = action.payload.get("properties") or {}
                for key, value in fixed.items():
                    if key not in props:
                        if action.payload.get("additionalProperties") is False:
                            self.add(f"{where}/payload/{key}", f"{tool['action']!r} takes no field {key!r}", sid)
                        continue
                    if is_template(value) if isinstance(value, str) else False:
                        continue
                    for err in Draft202012Validator(props[key]).iter_errors(value):
                        self.add(f"{where}/payload/{key}", err.message, sid)
            self.templates(tool.get("payload") or {}, f"{where}/payload", vis, names, sid)

    def condition(self, cond: Any, base: str, vis: set[str], names: frozenset[str], sid: str) -> None:
        for where, message in condition_problems(cond):
            self.add(f"{base}{where}", message, sid)
        self.templates(cond, base, vis, names, sid)

    def action(self, step: Mapping[str, Any], base: str, vis: set[str], names: frozenset[str]) -> None:
        sid = step["id"]
        info = self.catalog.get(step["connector"])
        if info is None:
            self.add(f"{base}/connector", f"unknown connector {step['connector']!r} (not installed)", sid)
        elif step["action"] not in info.actions:
            self.add(
                f"{base}/action",
                f"connector {info.name!r} has no action {step['action']!r} (has: {', '.join(sorted(info.actions))})",
                sid,
            )
        else:
            self.credential(step, base, info)
            # payload: templated strings are checked after rendering, at run time
            self.problems += self.catalog.validate_payload(
                info.name, step["action"], step["payload"], base=f"{base}/payload", step=sid, skip=is_template
            )
        self.templates(step["payload"], f"{base}/payload", vis, names, sid)

    def credential(self, step: Mapping[str, Any], base: str, info: Any) -> None:
        sid, cname = step["id"], step.get("credential")
        where = f"{base}/credential"
        if info.credentials is None:
            if cname:
                self.add(where, f"connector {info.name!r} takes no credential", sid)
        elif not cname:
            if info.credentials_required:
                self.add(where, f"connector {info.name!r} needs a credential", sid)
        elif self.credentials is not None:
            if cname not in self.credentials:
                self.add(where, f"credential {cname!r} does not exist", sid)
            elif self.credentials[cname] != info.name:
                self.add(
                    where, f"credential {cname!r} is for {self.credentials[cname]!r}, not {info.name!r}", sid
                )

    def templates(self, value: Any, base: str, vis: set[str], names: frozenset[str], sid: str) -> None:
        for parts, s in _walk_strings(value, []):
            if not is_template(s):
                continue
            where = f"{base}{_ptr(parts)}"
            try:
                roots = root_names(s)
                refs = step_references(s)
            except TemplateError as e:
                self.add(where, e.message, sid)
                continue
            unknown = roots - names
            if unknown:
                self.add(
                    where, f"unknown name(s) {', '.join(sorted(unknown))}: use {_names_text(names)}", sid
                )
            for r in sorted(refs):
                if r not in vis:
                    self.add(where, f"refers to step {r!r}, which is not an earlier step", sid)


def validate_app_trigger(
    trig: Any, catalog: Catalog, *, credentials: Mapping[str, str] | None = None
) -> list[Problem]:
    """Every problem with an ``app`` trigger on its own (pointers under ``/trigger``), as
    :func:`validate_pipeline` finds them in a whole document: for testing a trigger before
    the pipeline around it is saved."""
    problems = [
        Problem(_ptr(["trigger", *err.absolute_path]), err.message)
        for err in _APP_TRIGGER_VALIDATOR.iter_errors(trig)
    ]
    if problems:
        return sorted(problems, key=lambda p: p.pointer)
    return app_trigger_problems(trig, catalog, credentials)


def app_trigger_problems(
    trig: Mapping[str, Any], catalog: Catalog, credentials: Mapping[str, str] | None = None
) -> list[Problem]:
    """What is wrong with a schema-valid ``app`` trigger: an unknown connector or trigger, a
    config its schema refuses, a missing or mismatched credential (when ``credentials``, name ->
    connector, is given) and an interval on an instant trigger."""
    out: list[Problem] = []
    info = catalog.get(trig["connector"])
    if info is None:
        return [Problem("/trigger/connector", f"unknown connector {trig['connector']!r} (not installed)")]
    t = info.triggers.get(trig["trigger"])
    if t is None:
        has = ", ".join(sorted(info.triggers)) or "none"
        return [
            Problem(
                "/trigger/trigger",
                f"connector {info.name!r} has no trigger {trig['trigger']!r} (has: {has})",
            )
        ]
    for err in t.validator.iter_errors(trig.get("config", {})):
        out.append(Problem(_ptr(["trigger", "config", *err.absolute_path]), err.message))
    cname, where = trig.get("credential"), "/trigger/credential"
    if info.credentials is None:
        if cname:
            out.append(Problem(where, f"connector {info.name!r} takes no credential"))
    elif not cname:
        if info.credentials_required:
            out.append(Problem(where, f"connector {info.name!r} needs a credential"))
    elif credentials is not None:
        if cname not in credentials:
            out.append(Problem(where, f"credential {cname!r} does not exist"))
        elif credentials[cname] != info.name:
            out.append(
                Problem(where, f"credential {cname!r} is for {credentials[cname]!r}, not {info.name!r}")
            )
    if "interval" in trig and t.kind != "polling":
        out.append(Problem("/trigger/interval", "interval applies to polling triggers only"))
    return out


def exported(step: Mapping[str, Any]) -> set[str]:
    """The step ids the steps after ``step`` can read: its own, and those nested in its
    paths and error steps (a loop body's are per item, so only the loop's own; an approval's
    notify steps are its own business)."""
    out = {step["id"]}
    for seg, block in child_blocks(step):
        if seg not in ("[]", "notify"):
            for s in block:
                out |= exported(s)
    return out


def validate_pipeline(
    doc: Any,
    catalog: Catalog,
    *,
    credentials: Mapping[str, str] | None = None,
) -> list[Problem]:
    """Every problem with ``doc``; an empty list means it can run.

    ``credentials`` maps the owner's credential names to their connector; when given,
    missing or mismatched credentials are problems too.
    """
    if not isinstance(doc, Mapping):
        return [Problem("", "pipeline must be a JSON object")]
    if _depth(doc, 4 * MAX_NESTING + 40) > 4 * MAX_NESTING + 40:
        return [Problem("", "pipeline nests too deeply")]
    problems: list[Problem] = []
    for err in _VALIDATOR.iter_errors(doc):
        parts = list(err.absolute_path)
        problems.append(Problem(_ptr(parts), err.message, _step_of(doc, parts)))
    if problems:
        return sorted(problems, key=lambda p: p.pointer)

    trig = doc["trigger"]
    if trig["type"] == "schedule":
        msg = check_cron(trig["cron"])
        if msg:
            problems.append(Problem("/trigger/cron", msg))
        tz = trig.get("timezone", "UTC")
        try:
            ZoneInfo(tz)
        except (ZoneInfoNotFoundError, ValueError):
            problems.append(Problem("/trigger/timezone", f"unknown time zone {tz!r}"))

    if trig["type"] == "app":
        problems += app_trigger_problems(trig, catalog, credentials)

    counted = list(walk_steps([*doc["steps"], *doc.get("on_failure", [])]))
    too_many = len(counted) > MAX_TOTAL_STEPS
    if too_many:
        problems.append(Problem("/steps", f"a pipeline has at most {MAX_TOTAL_STEPS} steps, nested ones included"))
    if any(d >= MAX_NESTING for _s, d in counted):
        too_many = True
        problems.append(Problem("/steps", f"steps nest at most {MAX_NESTING} deep"))
    if too_many:
        return problems
    check = _Checker(catalog, credentials)
    names = frozenset(BASE_NAMES)
    after = check.block(doc["steps"], "/steps", set(), names)
    if doc.get("on_failure"):
        check.block(doc["on_failure"], "/on_failure", after, names | {"error"})
    if "input" in doc:
        try:
            Draft202012Validator.check_schema(doc["input"])
        except SchemaError as e:
            problems.append(Problem("/input", f"not a valid JSON Schema (draft 2020-12): {e.message}"))
        else:
            problems += _schedule_input_problems(doc)
    for sid in doc.get("pinned", {}):
        if sid not in check.seen:
            check.add(f"/pinned/{sid}", f"pinned data for step {sid!r}, which is not in the pipeline")
    return problems + check.problems


def _schedule_input_problems(doc: Mapping[str, Any]) -> list[Problem]:
    """A schedule's runs start with its ``input`` and ``scheduled_at``: checked against the
    ``input`` schema when the document is saved (no person sees a scheduled run refused)."""
    if doc["trigger"]["type"] != "schedule":
        return []
    data = {**(doc["trigger"].get("input") or {}), "scheduled_at": "2026-01-01T09:00:00+00:00"}
    why = "a scheduled run's input (the trigger's input and scheduled_at) must fit the input schema"
    return [Problem("/trigger" + p.pointer, f"{why}: {p.message}") for p in validate_input(doc, data)]


def validate_input(doc: Mapping[str, Any], data: Any) -> list[Problem]:
    """What is wrong with ``data`` as the input of a run of ``doc`` (the document's ``input``
    schema; pointers under ``/input``): none when the document declares no schema."""
    schema = doc.get("input") if isinstance(doc, Mapping) else None
    if not isinstance(schema, Mapping):
        return []
    v = Draft202012Validator(schema, format_checker=Draft202012Validator.FORMAT_CHECKER)
    return [
        Problem(_ptr(["input", *err.absolute_path]), err.message)
        for err in sorted(v.iter_errors(data), key=lambda e: list(e.absolute_path))
    ][:50]


def assert_valid(
    doc: Any, catalog: Catalog, *, credentials: Mapping[str, str] | None = None
) -> None:
    """Raise :class:`PipelineInvalid` listing every problem."""
    problems = validate_pipeline(doc, catalog, credentials=credentials)
    if problems:
        raise PipelineInvalid(problems)
