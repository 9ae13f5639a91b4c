"""The one condition form shared by a step's ``if``, a branch path's ``if`` and ``core.filter``.

A condition is one of:

- ``true`` or ``false``;
- a string, usually a template such as ``"{{ trigger.total > 100 }}"``: its rendered value is
  tested for truth (:func:`truthy`);
- a comparison ``{"left": ..., "op": ..., "right": ...}`` (``op`` in :data:`OPS`; ``exists`` and
  ``not_exists`` take no ``right``), whose sides may be templates;
- ``{"all": [c, ...]}``, ``{"any": [c, ...]}`` or ``{"not": c}``.

Templates are rendered by the sandbox first (:func:`levqor_kernel.templating.render`); the
evaluation itself only compares values, so there is no second expression language.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .errors import PayloadError
from .templating import render

OPS = ("eq", "ne", "gt", "gte", "lt", "lte", "contains", "not_contains", "exists", "not_exists")
#: operators that take no right-hand value
UNARY = ("exists", "not_exists")
#: how deep all/any/not may nest
MAX_DEPTH = 10

#: strings that count as false (compared without case and surrounding blanks)
FALSE_STRINGS = frozenset({"", "false", "0", "no", "null", "none"})

COMPARISON_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["left", "op"],
    "additionalProperties": False,
    "properties": {
        "left": {"description": "The value to test, usually a template such as {{ trigger.amount }}"},
        "op": {"type": "string", "enum": list(OPS)},
        "right": {"description": "The value to compare with (not used by exists and not_exists)"},
    },
}

#: the JSON Schema of a condition (``$defs/condition`` refers to itself for all/any/not)
CONDITION_SCHEMA: dict[str, Any] = {
    "description": "true/false, a template string tested for truth, a comparison "
    "{left, op, right}, or {all: [...]}, {any: [...]}, {not: ...}",
    "anyOf": [
        {"type": "boolean"},
        {"type": "string", "maxLength": 2000},
        COMPARISON_SCHEMA,
        {
            "type": "object",
            "required": ["all"],
            "additionalProperties": False,
            "properties": {
                "all": {"type": "array", "minItems": 1, "maxItems": 50, "items": {"$ref": "#/$defs/condition"}}
            },
        },
        {
            "type": "object",
            "required": ["any"],
            "additionalProperties": False,
            "properties": {
                "any": {"type": "array", "minItems": 1, "maxItems": 50, "items": {"$ref": "#/$defs/condition"}}
            },
        },
        {
            "type": "object",
            "required": ["not"],
            "additionalProperties": False,
            "properties": {"not": {"$ref": "#/$defs/condition"}},
        },
    ],
}


def truthy(value: Any) -> bool:
    """Whether a rendered value counts as true: null, false, 0, empty strings, lists and
    objects, and the strings "false", "0", "no", "null" and "none" are false."""
    if value is None or isinstance(value, bool):
        return bool(value)
    if isinstance(value, (int, float)):
        return value != 0
    if isinstance(value, str):
        return value.strip().lower() not in FALSE_STRINGS
    if isinstance(value, (list, dict)):
        return len(value) > 0
    return True


def _num(v: Any) -> float | None:
    if isinstance(v, bool):
        return None
    if isinstance(v, (int, float)):
        return float(v)
    if isinstance(v, str):
        try:
            return float(v.strip())
        except ValueError:
            return None
    return None


def _present(v: Any) -> bool:
    return v is not None and v != "" and v != [] and v != {}


def _equal(left: Any, right: Any) -> bool:
    if isinstance(left, bool) or isinstance(right, bool):
        return isinstance(left, bool) and isinstance(right, bool) and left == right
    ln, rn = _num(left), _num(right)
    if ln is not None and rn is not None:
        return ln == rn
    return bool(left == right)


def _order(left: Any, right: Any, op: str) -> bool:
    ln, rn = _num(left), _num(right)
    if ln is None or rn is None:
        if isinstance(left, str) and isinstance(right, str):
            a, b = left, right
        else:
            return False  # incomparable values: the comparison is false
    else:
        a, b = ln, rn  # type: ignore[assignment]
    return {"gt": a > b, "gte": a >= b, "lt": a < b, "lte": a <= b}[op]


def _contains(left: Any, right: Any) -> bool:
    if isinstance(left, str):
        return isinstance(right, str) and right in left
    if isinstance(left, list):
        return right in left
    if isinstance(left, dict):
        return isinstance(right, str) and right in left
    return False


def compare(cond: Mapping[str, Any]) -> bool:
    """Evaluate one rendered comparison. Comparisons of incomparable values are false."""
    left, op, right = cond.get("left"), cond.get("op"), cond.get("right")
    if op == "exists":
        return _present(left)
    if op == "not_exists":
        return not _present(left)
    if op in ("eq", "ne"):
        same = _equal(left, right)
        return same if op == "eq" else not same
    if op in ("gt", "gte", "lt", "lte"):
        return _order(left, right, op)
    if op == "contains":
        return _contains(left, right)
    if op == "not_contains":
        return not _contains(left, right)
    raise PayloadError(f"unknown operator {op!r}", code="invalid_condition")


def holds(cond: Any, _depth: int = 0) -> bool:
    """Whether a rendered condition (no templates left in it) holds."""
    if _depth > MAX_DEPTH:
        raise PayloadError("condition nested too deeply", code="invalid_condition")
    if isinstance(cond, Mapping):
        if "all" in cond:
            return all(holds(c, _depth + 1) for c in cond["all"])
        if "any" in cond:
            return any(holds(c, _depth + 1) for c in cond["any"])
        if "not" in cond:
            return not holds(cond["not"], _depth + 1)
        if "op" in cond:
            return compare(cond)
    return truthy(cond)


def evaluate(cond: Any, scope: Mapping[str, Any], *, max_bytes: int | None = None) -> tuple[bool, Any]:
    """Render ``cond`` in ``scope`` (the sandbox) and evaluate it: (whether it holds, the
    rendered condition, which a skipped step records). Raises TemplateError."""
    rendered = render(cond, scope, max_bytes=max_bytes)
    return holds(rendered), rendered


def problems(cond: Any) -> list[tuple[str, str]]:
    """What a condition needs beyond its schema, as (JSON pointer inside it, message): a
    right-hand value for binary operators."""
    out: list[tuple[str, str]] = []

    def walk(c: Any, where: str) -> None:
        if isinstance(c, Mapping):
            for key in ("all", "any"):
                if isinstance(c.get(key), list):
                    for i, sub in enumerate(c[key]):
                        walk(sub, f"{where}/{key}/{i}")
            if "not" in c:
                walk(c["not"], f"{where}/not")
            if "op" in c and c.get("op") not in UNARY and "right" not in c:
                out.append((where, f"operator {c['op']!r} needs a right-hand value"))

    walk(cond, "")
    return out
