"""OpenAI's Structured Outputs subset of JSON Schema: rewriting a schema into it and checking it.

:func:`strictify` rewrites a schema towards the subset (every object closed, every property
required, optional ones made nullable, unsupported keywords dropped). Dropping a keyword such as
``maxLength`` only widens what the model may answer; answers are validated against the real
schemas afterwards, so nothing invalid gets through. :func:`strict_problems` decides whether the
result fits the subset; :func:`strip_nulls` removes the nulls strict mode forced into an answer.
The subset follows OpenAI's "Supported schemas" documentation
(https://platform.openai.com/docs/guides/structured-outputs#supported-schemas, summarised at
https://jsonschemaprofiles.unitvectorylabs.com/schemas/openai). Used by the planner
(:mod:`levqor_openai.schema`) and by the model actions that ask for structured answers.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from jsonschema import Draft202012Validator
from referencing import Registry
from referencing.exceptions import NoSuchResource

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
        return Draft202012Validator(schema, registry=LOCAL_REFS).is_valid(None)
    except Exception:  # noqa: BLE001 - an unusual schema: keep the value, validation decides
        return True


def _never_retrieve(uri: str) -> Any:
    raise NoSuchResource(ref=uri)


#: an answer's schema refers within itself only: a ``$ref`` to a URL is never fetched
LOCAL_REFS = Registry(retrieve=_never_retrieve)  # type: ignore[call-arg]


def remote_refs(schema: Any) -> list[str]:
    """The ``$ref`` and ``$dynamicRef`` values in ``schema`` that do not point within it."""
    if isinstance(schema, Mapping):
        found = [
            ref for key in ("$ref", "$dynamicRef")
            if isinstance(ref := schema.get(key), str) and not ref.startswith("#")
        ]  # fmt: skip
        return found + [r for v in schema.values() for r in remote_refs(v)]
    if isinstance(schema, list):
        return [r for v in schema for r in remote_refs(v)]
    return []
