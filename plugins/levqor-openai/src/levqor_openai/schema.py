"""The planner's answer schema, built from the installed catalog, and OpenAI's strict subset.

:func:`plan_schema` composes one JSON Schema for the model's answer
``{"explanation": str, "pipeline": {...}}``: the trigger is manual, webhook, schedule or one of
the installed connectors' app triggers (:func:`trigger_schemas`), and
each step is an ``anyOf`` of one branch per installed action whose ``connector`` and ``action``
are one-value enums and whose ``payload`` is that action's payload schema from its plugin. A
plan can therefore never name a connector or an action that is not installed.

:func:`strictify` rewrites that schema towards OpenAI's Structured Outputs subset (every object
closed, every property required, optional ones made nullable, unsupported keywords dropped).
Dropping a keyword such as ``maxLength`` only widens what the model may answer; the answer is
validated against the real schemas afterwards, so nothing invalid gets through.
:func:`strict_problems` is the checker that decides whether the result fits the subset; when
it does not (a free-form object such as ``core.transform``'s ``value``), the planner falls back
to JSON mode with the schema in the prompt. The subset follows OpenAI's "Supported schemas"
documentation (https://platform.openai.com/docs/guides/structured-outputs#supported-schemas,
summarised at https://jsonschemaprofiles.unitvectorylabs.com/schemas/openai).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

from jsonschema import Draft202012Validator
from levqor_kernel.pipeline import PIPELINE_SCHEMA

STEP_ID = r"^[a-z][a-z0-9_]{0,39}$"
MAX_STEPS = 20

#: keywords OpenAI's strict mode accepts (anything else makes the request fail)
STRICT_KEYWORDS = frozenset(
    {
        "type",
        "properties",
        "required",
        "additionalProperties",
        "items",
        "enum",
        "const",
        "anyOf",
        "$ref",
        "$defs",
        "description",
        "title",
        # strings
        "pattern",
        "format",
        # numbers
        "multipleOf",
        "maximum",
        "exclusiveMaximum",
        "minimum",
        "exclusiveMinimum",
        # arrays
        "minItems",
        "maxItems",
    }
)
STRICT_TYPES = frozenset({"string", "number", "integer", "boolean", "object", "array", "null"})
STRICT_FORMATS = frozenset(
    {"date-time", "time", "date", "duration", "email", "hostname", "ipv4", "ipv6", "uuid"}
)
#: documented limits of a strict schema
MAX_PROPERTIES = 5000
MAX_DEPTH = 10
MAX_ENUM_VALUES = 1000
MAX_STRING_BUDGET = 120_000
#: annotation keywords dropped by strictify (they carry no constraint)
_ANNOTATIONS = (
    "default",
    "examples",
    "readOnly",
    "writeOnly",
    "deprecated",
    "$comment",
    "$schema",
    "$id",
    "title",
)
#: constraints strict mode does not support; dropping them only widens the schema
_RELAXABLE = (
    "minLength",
    "maxLength",
    "minProperties",
    "maxProperties",
    "uniqueItems",
    "contentEncoding",
    "contentMediaType",
)


class NotStrictable(Exception):
    """The schema cannot be expressed in the strict subset without changing its meaning."""


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


def _credential_schema(connector: str, credentials: list[Mapping[str, Any]]) -> dict[str, Any]:
    names = sorted({str(c["name"]) for c in credentials if c.get("connector") == connector})
    if names:
        return {
            "type": "string",
            "description": f"Name of one of the user's {connector} credentials: "
            + ", ".join(names),
            "enum": names,
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


def construct_schemas() -> list[dict[str, Any]]:
    """One step schema per construct of the kernel's document (branch, parallel, for_each,
    wait, pipeline, stop), their nested steps referring to ``#/$defs/steps``."""
    out = []
    for block in PIPELINE_SCHEMA["$defs"]["step"]["allOf"]:
        kind = ((block.get("if") or {}).get("properties") or {}).get("type", {}).get("const")
        if kind is None or kind == "action":
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


def step_schemas(
    catalog: Mapping[str, Any], credentials: list[Mapping[str, Any]] = ()
) -> list[dict[str, Any]]:
    """One step schema per installed action (connector and action as one-value enums), with
    the fields every step may have (name, if, on_error)."""
    out = []
    common = _common()
    for cname, conn in sorted((catalog.get("connectors") or {}).items()):
        for aname, action in sorted((conn.get("actions") or {}).items()):
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
                props["credential"] = _credential_schema(cname, list(credentials))
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
    steps = step_schemas(catalog, credentials) + construct_schemas()
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
                    "trigger": {"anyOf": trigger_schemas(catalog, credentials)},
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


# ------------------------------------------------------------------------ strict subset
def strictify(schema: Any) -> dict[str, Any]:
    """A copy of ``schema`` rewritten for strict mode (raises :class:`NotStrictable`).

    Objects are closed (``additionalProperties: false``), optional properties become required
    and nullable (strip the nulls afterwards with :func:`strip_nulls`), and keywords strict mode
    rejects are dropped when dropping them only widens the schema. A free-form value (no type,
    an open object without properties, ``patternProperties``, ``allOf``, ``if``/``then``...)
    cannot be expressed and raises.
    """
    return _strictify(schema, "#")


def _strictify(s: Any, where: str) -> dict[str, Any]:
    if s is True or s == {}:
        raise NotStrictable(f"{where}: any value is allowed (free-form)")
    if not isinstance(s, Mapping):
        raise NotStrictable(f"{where}: not a schema object")
    if "$ref" in s:  # a definition of the root's $defs, made strict there
        return {k: v for k, v in s.items() if k in ("$ref", "description")}
    out: dict[str, Any] = {}
    for k, v in s.items():
        if k in _ANNOTATIONS or k in _RELAXABLE:
            continue
        if k == "format" and v not in STRICT_FORMATS:
            continue  # an unknown format is only an annotation
        out[k] = v
    if "$defs" in out:
        out["$defs"] = {n: _strictify(d, f"{where}/$defs/{n}") for n, d in out["$defs"].items()}
    if "anyOf" in out:
        out["anyOf"] = _strict_choice(out["anyOf"], f"{where}/anyOf")
        return out
    if "oneOf" in out:  # exclusivity cannot be expressed: anyOf is wider, validation narrows
        out["anyOf"] = _strict_choice(out.pop("oneOf"), f"{where}/oneOf")
        return out
    if "enum" in out or "const" in out:
        return out
    types = out.get("type")
    if types is None:
        raise NotStrictable(f"{where}: no type")
    tlist = types if isinstance(types, list) else [types]
    if "object" in tlist:
        props = out.get("properties")
        if not props:
            raise NotStrictable(f"{where}: an object without declared properties (free-form)")
        if out.get("patternProperties"):
            raise NotStrictable(f"{where}: patternProperties")
        required = set(out.get("required") or ())
        new_props = {}
        for name, sub in props.items():
            ss = _strictify(sub, f"{where}/properties/{name}")
            if name not in required:
                ss = _nullable(ss)
            new_props[name] = ss
        out["properties"] = new_props
        out["required"] = list(new_props)
        out["additionalProperties"] = False
    if "array" in tlist:
        if "items" not in out:
            raise NotStrictable(f"{where}: an array without items (free-form)")
        out["items"] = _strictify(out["items"], f"{where}/items")
    return out


def _strict_choice(branches: list[Any], where: str) -> list[dict[str, Any]]:
    """The branches of an anyOf made strict. A map that takes any keys (beside a list of rows,
    say) is left out when another branch remains: the model may then answer only in the other
    forms, each still valid for the kernel. Any other branch strict mode cannot express raises."""
    kept = [(i, b) for i, b in enumerate(branches) if not _any_keys(b)] or list(enumerate(branches))
    return [_strictify(b, f"{where}/{i}") for i, b in kept]


def _any_keys(s: Any) -> bool:
    """Whether ``s`` is an object schema without declared properties (a free-form map)."""
    if not isinstance(s, Mapping) or s.get("properties") or "anyOf" in s or "oneOf" in s:
        return False
    t = s.get("type")
    return t == "object" or (isinstance(t, list) and t == ["object"])


def _nullable(s: dict[str, Any]) -> dict[str, Any]:
    if "anyOf" in s:
        if not any(b.get("type") == "null" for b in s["anyOf"]):
            s = {**s, "anyOf": [*s["anyOf"], {"type": "null"}]}
        return s
    if "enum" in s:
        if None not in s["enum"]:
            s = {**s, "enum": [*s["enum"], None]}
        t = s.get("type")
        if t is not None:
            tl = t if isinstance(t, list) else [t]
            if "null" not in tl:
                s["type"] = [*tl, "null"]
        return s
    if "const" in s or "$ref" in s:
        return {"anyOf": [s, {"type": "null"}]}
    t = s["type"]
    tl = t if isinstance(t, list) else [t]
    if "null" not in tl:
        s = {**s, "type": [*tl, "null"]}
    return s


def strict_problems(schema: Any) -> list[str]:
    """Why ``schema`` does not fit OpenAI's strict subset; an empty list when it does."""
    problems: list[str] = []
    counts = {"properties": 0, "enum": 0, "strings": 0}
    if not isinstance(schema, Mapping):
        return ["the schema must be an object"]
    if schema.get("type") != "object":
        problems.append("#: the root must be an object")
    if "anyOf" in schema:
        problems.append("#: the root must not be anyOf")
    _check(schema, "#", 1, problems, counts)
    if counts["properties"] > MAX_PROPERTIES:
        problems.append(f"more than {MAX_PROPERTIES} object properties ({counts['properties']})")
    if counts["enum"] > MAX_ENUM_VALUES:
        problems.append(f"more than {MAX_ENUM_VALUES} enum values ({counts['enum']})")
    if counts["strings"] > MAX_STRING_BUDGET:
        problems.append(
            f"property names and enum values add up to more than {MAX_STRING_BUDGET} characters"
        )
    return problems


def _check(s: Any, where: str, depth: int, problems: list[str], counts: dict[str, int]) -> None:
    if not isinstance(s, Mapping):
        problems.append(f"{where}: a schema must be an object, not {s!r}")
        return
    unknown = sorted(set(s) - STRICT_KEYWORDS)
    if unknown:
        problems.append(f"{where}: unsupported keyword(s) {', '.join(unknown)}")
    for key in ("$defs",):
        for name, sub in (s.get(key) or {}).items():
            _check(sub, f"{where}/{key}/{name}", depth, problems, counts)
    if "$ref" in s:
        return
    if "anyOf" in s:
        for i, b in enumerate(s["anyOf"]):
            _check(b, f"{where}/anyOf/{i}", depth, problems, counts)
        return
    if "enum" in s:
        counts["enum"] += len(s["enum"])
        counts["strings"] += sum(len(v) for v in s["enum"] if isinstance(v, str))
    if "const" in s and isinstance(s["const"], str):
        counts["strings"] += len(s["const"])
    t = s.get("type")
    if t is None:
        if "enum" not in s and "const" not in s:
            problems.append(f"{where}: no type")
        return
    tl = t if isinstance(t, list) else [t]
    bad = [x for x in tl if x not in STRICT_TYPES]
    if bad:
        problems.append(f"{where}: unsupported type(s) {bad}")
    if "format" in s and s["format"] not in STRICT_FORMATS:
        problems.append(f"{where}: unsupported format {s['format']!r}")
    if "object" in tl:
        if depth > MAX_DEPTH:
            problems.append(f"{where}: objects nest deeper than {MAX_DEPTH} levels")
        if s.get("additionalProperties") is not False:
            problems.append(f"{where}: additionalProperties must be false")
        props = s.get("properties")
        if not isinstance(props, Mapping) or not props:
            problems.append(f"{where}: an object needs declared properties")
            props = {}
        missing = sorted(set(props) - set(s.get("required") or ()))
        if missing:
            problems.append(f"{where}: every property must be required (not: {', '.join(missing)})")
        counts["properties"] += len(props)
        for name, sub in props.items():
            counts["strings"] += len(name)
            _check(sub, f"{where}/properties/{name}", depth + 1, problems, counts)
    if "array" in tl:
        if "items" not in s:
            problems.append(f"{where}: an array needs items")
        else:
            _check(s["items"], f"{where}/items", depth, problems, counts)


# ------------------------------------------------------------------------ answers
def strip_nulls(value: Any, schema: Any) -> Any:
    """Remove ``null`` properties that strict mode forced in where the real schema has none.

    Walks ``value`` along the original (non-strict) ``schema``: a property whose value is
    ``None`` and whose schema does not accept ``null`` is dropped (it was optional).
    """
    if not isinstance(schema, Mapping):
        return value
    if isinstance(value, dict):
        props = schema.get("properties") or {}
        out = {}
        for k, v in value.items():
            sub = props.get(k)
            if v is None and sub is not None and not _accepts_null(sub):
                continue
            out[k] = strip_nulls(v, sub) if sub is not None else v
        return out
    if isinstance(value, list) and isinstance(schema.get("items"), Mapping):
        return [strip_nulls(v, schema["items"]) for v in value]
    return value


def _accepts_null(schema: Any) -> bool:
    try:
        return Draft202012Validator(schema).is_valid(None)
    except Exception:  # noqa: BLE001 - an unusual schema: keep the value, validation decides
        return True


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
    if isinstance(pipeline, dict) and pipeline.get("on_failure", 0) is None:
        del pipeline["on_failure"]
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
