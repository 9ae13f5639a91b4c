"""The planner's answer schema, built from the installed catalog.

:func:`plan_schema` composes one JSON Schema for the model's answer
``{"explanation": str, "pipeline": {...}}``: the trigger is manual, webhook, schedule or one of
the installed connectors' app triggers (:func:`trigger_schemas`), and
each step is an ``anyOf`` of one branch per installed action whose ``connector`` and ``action``
are one-value enums and whose ``payload`` is that action's payload schema from its plugin, or
one of the kernel's constructs; the agent construct offers the installed actions as its tools
the same way (:func:`agent_schemas`). A plan can therefore never name a connector or an action
that is not installed, nor an action kept out of the step picker (``hidden``). What a run
starts with is declared as a list of fields (:data:`INPUT_FIELDS`) that :func:`expand_input`
turns into the document's ``input`` JSON Schema.

The planner asks for strict structured outputs when :func:`~levqor_openai.strict.strictify`
can express the schema in OpenAI's subset (:mod:`levqor_openai.strict`); when it cannot (a
free-form object such as ``core.transform``'s ``value``), it falls back to JSON mode with the
schema in the prompt.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

from jsonschema import Draft202012Validator
from levqor_kernel.pipeline import PIPELINE_SCHEMA

# the strict subset lives in .strict; imported here too, where callers have always found it
from .strict import NotStrictable, strict_problems, strictify, strip_nulls

__all__ = [
    "INPUT_FIELDS",
    "NotStrictable",
    "agent_schemas",
    "construct_schemas",
    "expand_input",
    "offered_actions",
    "plan_schema",
    "step_schemas",
    "strict_problems",
    "strictify",
    "strip_nulls",
    "strip_plan_nulls",
    "trigger_schemas",
]

STEP_ID = r"^[a-z][a-z0-9_]{0,39}$"
MAX_STEPS = 20

# ------------------------------------------------------------------------ the answer schema
TRIGGERS: list[dict[str, Any]] = [
    {
        "type": "object",
        "description": "Started by hand or through the API (POST /api/v1/run).",
        "additionalProperties": False,
        "required": ["type"],
        "properties": {"type": {"type": "string", "enum": ["manual"]}},
    },
    {
        "type": "object",
        "description": "Started by an HTTP POST to the pipeline's webhook URL; the JSON body is "
        "available to templates as trigger.*. wait: answer the caller with the finished run.",
        "additionalProperties": False,
        "required": ["type", "wait"],
        "properties": {
            "type": {"type": "string", "enum": ["webhook"]},
            "wait": {"type": "boolean"},
        },
    },
    {
        "type": "object",
        "description": "Started on a standard 5-field cron schedule (minute hour day-of-month "
        "month day-of-week; day-of-week 0 and 7 are Sunday) in an IANA time zone.",
        "additionalProperties": False,
        "required": ["type", "cron", "timezone"],
        "properties": {
            "type": {"type": "string", "enum": ["schedule"]},
            "cron": {"type": "string"},
            "timezone": {"type": "string", "description": "IANA name such as UTC or Europe/Paris"},
        },
    },
]


def _credential_schema(
    connector: str, credentials: list[Mapping[str, Any]], *, optional: bool = False
) -> dict[str, Any]:
    names = sorted({str(c["name"]) for c in credentials if c.get("connector") == connector})
    if names:
        return {
            "type": "string",
            "description": f"Name of one of the user's {connector} credentials: "
            + ", ".join(names)
            + (" (optional)" if optional else ""),
            "enum": names,
        }
    if optional:
        return {
            "type": "string",
            "pattern": r"^[A-Za-z0-9][A-Za-z0-9 _.-]{0,99}$",
            "description": f"Optional: leave it out to use the server's own {connector} "
            "settings; name one only when the user asks for a credential of their own.",
        }
    return {
        "type": "string",
        "pattern": r"^[A-Za-z0-9][A-Za-z0-9 _.-]{0,99}$",
        "description": f"The user has no {connector} credential yet: name the one they should "
        f"add (for example {connector!r}).",
    }


#: the seconds between polls the planner may ask for (the host's minimum still applies)
MIN_POLL_INTERVAL = 60


def _sample_text(sample: Any, limit: int = 400) -> str:
    import json

    try:
        text = json.dumps(sample, separators=(",", ":"), sort_keys=True)
    except (TypeError, ValueError):
        return ""
    return text if len(text) <= limit else text[: limit - 3] + "..."


def trigger_schemas(
    catalog: Mapping[str, Any], credentials: list[Mapping[str, Any]] = ()
) -> list[dict[str, Any]]:
    """The trigger kinds the model may choose: manual, webhook and schedule, and one ``app``
    trigger per installed connector trigger (connector and trigger as one-value enums, its
    config schema, the credential, and for polling an interval)."""
    out = copy.deepcopy(TRIGGERS)
    for cname, conn in sorted((catalog.get("connectors") or {}).items()):
        for tname, trig in sorted((conn.get("triggers") or {}).items()):
            config = _narrow(copy.deepcopy(trig.get("config") or {"type": "object"}))
            if not config.get("properties"):
                config = {"type": "object", "properties": {}, "additionalProperties": False}
            props: dict[str, Any] = {
                "type": {"type": "string", "enum": ["app"]},
                "connector": {"type": "string", "enum": [cname]},
                "trigger": {"type": "string", "enum": [tname]},
                "config": config,
            }
            required = ["type", "connector", "trigger", "config"]
            if conn.get("credentials") is not None:
                props["credential"] = _credential_schema(cname, list(credentials))
                required.append("credential")
            if trig.get("kind") == "polling":
                props["interval"] = {
                    "type": "integer",
                    "minimum": MIN_POLL_INTERVAL,
                    "description": "Seconds between polls (default 300); only when the user "
                    "asks how often",
                }
            desc = f"Started by {conn.get('title', cname)}: {trig.get('title', tname)}"
            desc += " (polling)" if trig.get("kind") == "polling" else " (instant)"
            if trig.get("description"):
                desc += f". {trig['description']}"
            sample = _sample_text(trig.get("sample"))
            if sample:
                desc += f" Each item is trigger.*, for example {sample}"
            out.append(
                {
                    "type": "object",
                    "description": desc[:1000],
                    "additionalProperties": False,
                    "required": required,
                    "properties": props,
                }
            )
    return out


#: a value the model may give where the kernel takes anything (a narrower answer stays valid)
_SCALAR: list[dict[str, Any]] = [
    {"type": "string"},
    {"type": "number"},
    {"type": "boolean"},
    {"type": "null"},
]
#: what each construct does, for the model
CONSTRUCTS = {
    "branch": "Runs the steps of the first path whose if holds, else the default steps. Output: "
    "{path, name, output}.",
    "parallel": "Runs every path's steps at once (up to concurrency). Output: the list of each "
    "path's last output.",
    "for_each": "Runs steps once per element of items (a template such as {{ trigger.orders }}); "
    "their templates see item (the element) and index. Output: the list of each item's last "
    "output. Steps inside refer to each other by id like any step.",
    "wait": "Waits seconds, until a time, or for someone's approval before going on.",
    "pipeline": "Runs another pipeline of the user's (by id) and waits for its output.",
    "stop": "Ends the run early with status succeeded or failed.",
}


def _free(s: Any) -> bool:
    """Whether ``s`` allows any value (no type, enum, const, anyOf or reference)."""
    if s is True:
        return True
    return isinstance(s, Mapping) and not ({"type", "enum", "const", "anyOf", "oneOf", "$ref"} & set(s))


def _narrow(s: Any) -> Any:
    """The kernel's schema ``s`` with its free-form parts narrowed for the model: a free value
    becomes a scalar, a string-or-array a string; an object that takes any keys is left out
    (where optional). A narrower answer is still a valid document."""
    if _free(s):
        desc = {"description": s["description"]} if isinstance(s, Mapping) and "description" in s else {}
        return {**desc, "anyOf": copy.deepcopy(_SCALAR)}
    if not isinstance(s, Mapping):
        return s
    out = {k: v for k, v in s.items() if k not in ("default", "allOf", "if", "then")}
    types = out.get("type")
    tlist = types if isinstance(types, list) else [types]
    if "array" in tlist and "items" not in out and "string" in tlist:
        out["type"] = "string"
    if isinstance(out.get("anyOf"), list):
        out["anyOf"] = [_narrow(b) for b in out["anyOf"]]
    if isinstance(out.get("items"), Mapping):
        out["items"] = _narrow(out["items"])
    props = out.get("properties")
    if isinstance(props, Mapping):
        required = set(out.get("required") or ())
        kept = {}
        for name, sub in props.items():
            if (
                isinstance(sub, Mapping)
                and sub.get("type") == "object"
                and not sub.get("properties")
                and name not in required
            ):
                continue  # any keys at all: left to the kernel's own schema
            kept[name] = _narrow(sub)
        out["properties"] = kept
    return out


def _common() -> dict[str, Any]:
    """The fields every step may have (id, name, if, on_error), from the kernel's schema."""
    props = PIPELINE_SCHEMA["$defs"]["step"]["properties"]
    return {k: _narrow(copy.deepcopy(v)) for k, v in props.items() if k != "type"}


def construct_schemas(
    catalog: Mapping[str, Any] | None = None, credentials: list[Mapping[str, Any]] = ()
) -> list[dict[str, Any]]:
    """One step schema per construct of the kernel's document (branch, parallel, for_each,
    wait, pipeline, stop, and agent when ``catalog`` has a connector that drives agents: see
    :func:`agent_schemas`), their nested steps referring to ``#/$defs/steps``."""
    out = []
    for block in PIPELINE_SCHEMA["$defs"]["step"]["allOf"]:
        kind = ((block.get("if") or {}).get("properties") or {}).get("type", {}).get("const")
        if kind is None or kind == "action":
            continue
        if kind == "agent":
            out += agent_schemas(catalog or {}, credentials, block["then"])
            continue
        then = block["then"]
        own = {k: v for k, v in then["properties"].items() if v is not True}
        props = {
            **_common(),
            "type": {"type": "string", "enum": [kind]},
            **_narrow({"type": "object", "properties": copy.deepcopy(own),
                       "required": then.get("required", [])})["properties"],
        }  # fmt: skip
        out.append(
            {
                "type": "object",
                "description": f"A {kind} step. {CONSTRUCTS.get(kind, '')}".strip(),
                "additionalProperties": False,
                "required": ["id", "type", *[r for r in then.get("required", []) if r != "id"]],
                "properties": props,
            }
        )
    return out


#: what the agent construct's fields mean, for the model (the kernel's own descriptions are
#: terse)
AGENT_FIELDS = {
    "model": "The model that drives the agent (a model name the server offers)",
    "system": "Optional instructions for the agent (a template)",
    "goal": "The task in plain words (a template: {{ trigger.x }} and earlier steps' outputs "
    "may fill it in)",
    "max_iterations": "Model turns allowed (default 10); only when the user asks",
    "max_tokens": "Tokens allowed over all turns (default 100000); only when the user asks",
    "timeout": "Seconds the agent may work (default 300); only when the user asks",
}


def _bare(s: Any) -> Any:
    """``s`` without its annotations (descriptions, titles, examples), sub-schemas included:
    a tool's fixed fields repeat the action's payload schema, described once in its step."""
    if isinstance(s, list):
        return [_bare(x) for x in s]
    if not isinstance(s, Mapping):
        return s
    out = {}
    for k, v in s.items():
        if k in ("description", "title", "examples", "$comment"):
            continue
        if k in ("properties", "$defs", "patternProperties") and isinstance(v, Mapping):
            out[k] = {n: _bare(sub) for n, sub in v.items()}
        elif k in ("items", "additionalProperties", "anyOf", "oneOf", "allOf", "not"):
            out[k] = _bare(v)
        else:
            out[k] = v
    return out


def _tool_schemas(
    catalog: Mapping[str, Any], credentials: list[Mapping[str, Any]]
) -> list[dict[str, Any]]:
    """One tool choice per offered action: connector and action as one-value enums, the
    credential the author binds, the payload fields the author fixes (the model neither sees
    nor sets them; every one optional), a name, a description and the approval switch."""
    conns = catalog.get("connectors") or {}
    out = []
    for cname, aname, action in offered_actions(catalog):
        conn = conns[cname]
        props: dict[str, Any] = {
            "connector": {"type": "string", "enum": [cname]},
            "action": {"type": "string", "enum": [aname]},
        }
        required = ["connector", "action"]
        if conn.get("credentials") is not None:
            needed = _needs_credential(conn)
            props["credential"] = _credential_schema(
                cname, list(credentials), optional=not needed
            )
            if needed:
                required.append("credential")
        payload = _bare(_narrow(copy.deepcopy(action.get("payload") or {})))
        fields = payload.get("properties") if isinstance(payload, Mapping) else None
        if fields:
            props["payload"] = {
                "type": "object",
                "description": "Fields fixed by the pipeline (ids, channels, spreadsheet ids...); "
                "the agent fills in the rest. Leave out what the agent should choose.",
                "additionalProperties": False,
                "properties": fields,
            }
        props["approval"] = {
            "type": "boolean",
            "description": "true: a person approves each call first; false: never ask; leave "
            "it out for the agent's approval setting"
            + (" (this action writes upstream)" if action.get("writes") is not False else ""),
        }
        desc = f"Tool {conn.get('title', cname)}: {action.get('title', aname)}"
        desc += " (writes upstream)" if action.get("writes") is not False else " (reads only)"
        out.append(
            {
                "type": "object",
                "description": desc[:300],
                "additionalProperties": False,
                "required": required,
                "properties": props,
            }
        )
    return out


def agent_schemas(
    catalog: Mapping[str, Any], credentials: list[Mapping[str, Any]], then: Mapping[str, Any]
) -> list[dict[str, Any]]:
    """The agent construct, one choice per installed connector that drives agents (its
    description names an ``agent`` turn action); none when no such connector is installed.
    ``then`` is the kernel's own schema of the construct: limits and approval come from it,
    the connector, credential and tools from the catalog."""
    conns = catalog.get("connectors") or {}
    drivers = sorted(n for n, c in conns.items() if c.get("agent"))
    if not drivers:
        return []
    common = _common()
    own = {k: copy.deepcopy(v) for k, v in then["properties"].items() if v is not True}
    keep = ("model", "system", "goal", "approval", "max_iterations", "max_tokens", "timeout")
    fields = _narrow({"type": "object", "properties": {k: own[k] for k in keep if k in own}})
    for key, text in AGENT_FIELDS.items():
        if key in fields["properties"]:
            fields["properties"][key]["description"] = text
    tools = {
        "type": "array",
        "minItems": 1,
        "maxItems": own["tools"].get("maxItems", 32),
        "description": "The connector actions the agent may call, each with the credential "
        "the pipeline binds (the agent never sees credentials)",
        "items": {"anyOf": _tool_schemas(catalog, credentials)},
    }
    out = []
    for cname in drivers:
        conn = conns[cname]
        props: dict[str, Any] = {
            **{k: copy.deepcopy(common[k]) for k in ("id", "name", "if", "on_error")},
            "type": {"type": "string", "enum": ["agent"]},
            "connector": {"type": "string", "enum": [cname]},
        }
        required = ["id", "type", "connector", "model", "goal", "tools"]
        if conn.get("credentials") is not None:
            needed = _needs_credential(conn)
            props["credential"] = _credential_schema(
                cname, list(credentials), optional=not needed
            )
            if needed:
                required.append("credential")
        props.update(copy.deepcopy(fields["properties"]))
        props["tools"] = tools
        out.append(
            {
                "type": "object",
                "description": f"An agent step driven by {conn.get('title', cname)}: the model "
                "works toward the goal by calling the tools (each call runs as a step of its "
                "own; calls of writing actions wait for a person's approval unless approval is "
                "none). Output: {answer, turns, tool_calls, usage, trace}.",
                "additionalProperties": False,
                "required": required,
                "properties": props,
            }
        )
    return out


def offered_actions(catalog: Mapping[str, Any]) -> list[tuple[str, str, Mapping[str, Any]]]:
    """``(connector, action, description)`` of every action a plan may use as a step or an
    agent's tool, sorted; hidden actions (an agent's turn action) are never offered."""
    return [
        (cname, aname, action)
        for cname, conn in sorted((catalog.get("connectors") or {}).items())
        for aname, action in sorted((conn.get("actions") or {}).items())
        if not action.get("hidden")
    ]


def _needs_credential(conn: Mapping[str, Any]) -> bool:
    """Whether a step of ``conn`` must name a credential (false when the connector takes none,
    or lets a step omit it: levqor-openai falls back to the operator's key)."""
    if conn.get("credentials") is None:
        return False
    return conn.get("credentials_required", True) is not False


def step_schemas(
    catalog: Mapping[str, Any], credentials: list[Mapping[str, Any]] = ()
) -> list[dict[str, Any]]:
    """One step schema per installed action (connector and action as one-value enums), with
    the fields every step may have (name, if, on_error). Hidden actions are left out."""
    out = []
    common = _common()
    conns = catalog.get("connectors") or {}
    for cname, aname, action in offered_actions(catalog):
        conn = conns[cname]
        props: dict[str, Any] = {
            "id": {
                "type": "string",
                "pattern": STEP_ID,
                "description": "Unique step id (lower case); later steps read this step's "
                "output as steps.<id>.output",
            },
            "connector": {"type": "string", "enum": [cname]},
            "action": {"type": "string", "enum": [aname]},
            "payload": copy.deepcopy(action.get("payload") or {"type": "object"}),
        }
        required = ["id", "connector", "action", "payload"]
        if conn.get("credentials") is not None:
            needed = _needs_credential(conn)
            props["credential"] = _credential_schema(
                cname, list(credentials), optional=not needed
            )
            if needed:
                required.append("credential")
        props.update({k: copy.deepcopy(common[k]) for k in ("name", "if", "on_error")})
        desc = f"{conn.get('title', cname)}: {action.get('title', aname)}"
        if action.get("description"):
            desc += f". {action['description']}"
        out.append(
            {
                "type": "object",
                "description": desc[:1000],
                "additionalProperties": False,
                "required": required,
                "properties": props,
            }
        )
    return out


def plan_schema(
    catalog: Mapping[str, Any], credentials: list[Mapping[str, Any]] = ()
) -> dict[str, Any]:
    """The JSON Schema of the planner's whole answer: a step is one of the installed actions
    or one of the kernel's constructs, whose steps nest (``$defs``)."""
    steps = step_schemas(catalog, credentials) + construct_schemas(catalog, credentials)
    return {
        "type": "object",
        "additionalProperties": False,
        "required": ["explanation", "pipeline"],
        "properties": {
            "explanation": {
                "type": "string",
                "description": "Two or three sentences for the user: what the pipeline does and "
                "what they still have to set up (credentials, spreadsheet ids...).",
            },
            "pipeline": {
                "type": "object",
                "additionalProperties": False,
                "required": ["levqor", "name", "trigger", "steps"],
                "properties": {
                    "levqor": {"type": "integer", "enum": [1]},
                    "name": {"type": "string", "description": "Short pipeline name"},
                    "description": {
                        "type": "string",
                        "description": "What the pipeline does, in a sentence (an AI client "
                        "calling it as a tool reads this)",
                    },
                    "trigger": {"anyOf": trigger_schemas(catalog, credentials)},
                    "input": copy.deepcopy(INPUT_FIELDS),
                    "steps": {"$ref": "#/$defs/steps"},
                    "on_failure": {
                        "$ref": "#/$defs/steps",
                        "description": "Steps that run when the run fails (error in scope)",
                    },
                },
            },
        },
        "$defs": {
            "step": {"anyOf": steps},
            "steps": {
                "type": "array",
                "minItems": 1,
                "maxItems": MAX_STEPS,
                "items": {"$ref": "#/$defs/step"},
            },
            "condition": _narrow(copy.deepcopy(PIPELINE_SCHEMA["$defs"]["condition"])),
        },
    }


# ------------------------------------------------------------------------ the input schema
#: how the model declares what a run starts with; :func:`expand_input` turns it into the
#: document's ``input`` JSON Schema (a free-form schema cannot be asked for in strict mode)
INPUT_FIELDS: dict[str, Any] = {
    "type": "object",
    "description": "Only for a manual or webhook pipeline meant to be called with known fields "
    "(by an AI client over MCP, by an API caller): the fields a run starts with, read as "
    "trigger.<name>. Becomes the pipeline's input schema, checked when a run starts.",
    "additionalProperties": False,
    "required": ["fields"],
    "properties": {
        "fields": {
            "type": "array",
            "minItems": 1,
            "maxItems": 30,
            "items": {
                "type": "object",
                "additionalProperties": False,
                "required": ["name", "type", "description", "required"],
                "properties": {
                    "name": {"type": "string", "pattern": r"^[A-Za-z_][A-Za-z0-9_]{0,63}$"},
                    "type": {
                        "type": "string",
                        "enum": ["string", "number", "integer", "boolean", "array", "object"],
                    },
                    "description": {"type": "string"},
                    "required": {"type": "boolean"},
                    "enum": {
                        "type": "array",
                        "items": {"type": "string"},
                        "description": "The allowed values of a string field, if it has a fixed "
                        "set",
                    },
                },
            },
        }
    },
}


def expand_input(answer: Any) -> list[dict[str, Any]]:
    """Replace the planned pipeline's ``input`` fields (:data:`INPUT_FIELDS`) by the JSON
    Schema they declare, in place. A JSON Schema given as it is (JSON mode) stays. Returns the
    problems of fields that do not fit, with pointers relative to the pipeline."""
    pipeline = answer.get("pipeline") if isinstance(answer, dict) else None
    if not isinstance(pipeline, dict) or "input" not in pipeline:
        return []
    declared = pipeline["input"]
    if declared is None:
        del pipeline["input"]
        return []
    if not isinstance(declared, dict) or "fields" not in declared or "properties" in declared:
        return []  # a JSON Schema itself: the kernel checks it
    errors = sorted(
        Draft202012Validator(INPUT_FIELDS).iter_errors(declared), key=lambda e: list(e.path)
    )
    if errors:
        return [
            {"pointer": "/input" + "".join(f"/{p}" for p in e.absolute_path), "message": e.message}
            for e in errors[:10]
        ]
    names = [f["name"] for f in declared["fields"]]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        return [{"pointer": "/input/fields", "message": f"fields named twice: {', '.join(twice)}"}]
    props: dict[str, Any] = {}
    for f in declared["fields"]:
        prop: dict[str, Any] = {"type": f["type"]}
        if f.get("description"):
            prop["description"] = f["description"]
        if f.get("enum") and f["type"] == "string":
            prop["enum"] = list(dict.fromkeys(f["enum"]))
        props[f["name"]] = prop
    schema: dict[str, Any] = {"type": "object", "properties": props}
    required = [f["name"] for f in declared["fields"] if f.get("required")]
    if required:
        schema["required"] = required
    pipeline["input"] = schema
    return []


def strip_plan_nulls(answer: Any, catalog: Mapping[str, Any]) -> Any:
    """:func:`strip_nulls` on every step of a strict-mode answer, nested ones too: optional
    step fields given as null are dropped, and each action's payload along its schema."""
    try:
        pipeline = answer["pipeline"]
        steps = pipeline["steps"]
    except (KeyError, TypeError):
        return answer
    if not isinstance(steps, list):
        return answer
    if isinstance(pipeline, dict):
        for key in ("on_failure", "description", "input"):
            if key in pipeline and pipeline[key] is None:
                del pipeline[key]
        declared = pipeline.get("input")
        fields = declared.get("fields") if isinstance(declared, dict) else None
        for f in fields if isinstance(fields, list) else ():
            if isinstance(f, dict):
                for k in [k for k, v in f.items() if v is None]:
                    del f[k]
    conns = catalog.get("connectors") or {}
    trig = pipeline.get("trigger") if isinstance(pipeline, dict) else None
    if isinstance(trig, dict):
        for k in [k for k, v in trig.items() if v is None]:
            del trig[k]
        triggers = (conns.get(trig.get("connector")) or {}).get("triggers") or {}
        found = triggers.get(trig.get("trigger"))
        if found is not None and isinstance(trig.get("config"), dict):
            trig["config"] = strip_nulls(trig["config"], found.get("config"))
    for step in [*steps, *(pipeline.get("on_failure") or [])]:
        _strip_step(step, conns)
    return answer


def _strip_step(step: Any, conns: Mapping[str, Any]) -> None:
    if not isinstance(step, dict):
        return
    for k in [k for k, v in step.items() if v is None]:
        del step[k]
    for k in ("approval",):
        if isinstance(step.get(k), dict):
            step[k] = {n: v for n, v in step[k].items() if v is not None}
    if step.get("type") == "agent":
        for tool in step.get("tools") or []:
            _strip_tool(tool, conns)
        return
    action = (conns.get(step.get("connector")) or {}).get("actions", {}).get(step.get("action"))
    if action is not None and isinstance(step.get("payload"), dict):
        step["payload"] = strip_nulls(step["payload"], action.get("payload"))
    nested = [step.get("steps"), step.get("default"), step.get("on_error")]
    for p in step.get("paths") or []:
        if isinstance(p, dict):
            for k in [k for k, v in p.items() if v is None]:
                del p[k]
            nested.append(p.get("steps"))
    for block in nested:
        if isinstance(block, list):
            for s in block:
                _strip_step(s, conns)


def _strip_tool(tool: Any, conns: Mapping[str, Any]) -> None:
    """An agent tool's null fields dropped, and its fixed payload's along the action's schema
    (a payload left empty is dropped: the agent fills in every field)."""
    if not isinstance(tool, dict):
        return
    for k in [k for k, v in tool.items() if v is None]:
        del tool[k]
    action = (conns.get(tool.get("connector")) or {}).get("actions", {}).get(tool.get("action"))
    if isinstance(tool.get("payload"), dict):
        if action is not None:
            tool["payload"] = strip_nulls(tool["payload"], action.get("payload"))
        if not tool["payload"]:
            del tool["payload"]
