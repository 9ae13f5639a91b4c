"""Notion page objects as plain values, and checks of the query filters and sorts users write.

Notion's property values are typed objects (``{"type": "select", "select": {"name": "Done"}}``);
a pipeline wants ``"Done"``. :func:`flatten_page` turns a page object (see
https://developers.notion.com/reference/page-property-values) into the plain values a run sees.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = [
    "MAX_COMPOUND_DEPTH",
    "flatten_page",
    "plain_value",
    "filter_problems",
    "sorts_problems",
    "compound_depth",
]

#: Notion lets compound filters (``and``/``or``) nest two levels deep.
MAX_COMPOUND_DEPTH = 2
_TIMESTAMPS = ("created_time", "last_edited_time")
_DATE_OPS = {
    "equals", "before", "after", "on_or_before", "on_or_after", "is_empty", "is_not_empty",
    "past_week", "past_month", "past_year", "next_week", "next_month", "next_year", "this_week",
}  # fmt: skip


def _text(items: Any) -> str:
    if not isinstance(items, list):
        return ""
    out = []
    for rt in items:
        if not isinstance(rt, Mapping):
            continue
        if isinstance(rt.get("plain_text"), str):
            out.append(rt["plain_text"])
        elif isinstance(rt.get("text"), Mapping) and isinstance(rt["text"].get("content"), str):
            out.append(rt["text"]["content"])
    return "".join(out)


def _name(obj: Any) -> Any:
    return obj.get("name") if isinstance(obj, Mapping) else None


def _user(obj: Any) -> Any:
    if not isinstance(obj, Mapping):
        return None
    return obj.get("name") or obj.get("id")


def _file_url(obj: Any) -> Any:
    if not isinstance(obj, Mapping):
        return None
    for key in ("file", "external"):
        if isinstance(obj.get(key), Mapping):
            return obj[key].get("url")
    return obj.get("name")


def plain_value(value: Any) -> Any:
    """The plain value of one property value: text for title/rich_text, the option name for
    select/status, a list of names for multi_select and people, the start of a date, a bool
    for checkbox, the number, url, email or phone as is; formulas and rollups by their result;
    ``None`` for an unknown or empty type."""
    if not isinstance(value, Mapping):
        return None
    kind = value.get("type")
    if not isinstance(kind, str):  # a request-style value: {"select": {...}}
        kind = next((k for k in value if k not in ("id", "type")), None)
        if kind is None:
            return None
    v = value.get(kind)
    if kind in ("title", "rich_text"):
        return _text(v)
    if kind in ("select", "status"):
        return _name(v)
    if kind == "multi_select":
        return [_name(o) for o in v or [] if _name(o) is not None]
    if kind == "date":
        return v.get("start") if isinstance(v, Mapping) else None
    if kind in ("people",):
        return [u for u in (_user(p) for p in v or []) if u is not None]
    if kind in ("created_by", "last_edited_by"):
        return _user(v)
    if kind == "relation":
        return [r.get("id") for r in v or [] if isinstance(r, Mapping)]
    if kind == "files":
        return [u for u in (_file_url(f) for f in v or []) if u is not None]
    if kind == "formula":
        if not isinstance(v, Mapping):
            return None
        inner = v.get(v.get("type")) if isinstance(v.get("type"), str) else None
        if v.get("type") == "date":
            return inner.get("start") if isinstance(inner, Mapping) else None
        return inner
    if kind == "rollup":
        if not isinstance(v, Mapping):
            return None
        rtype = v.get("type")
        if rtype == "array":
            return [plain_value(x) for x in v.get("array") or []]
        if rtype == "date":
            d = v.get("date")
            return d.get("start") if isinstance(d, Mapping) else None
        return v.get(rtype) if isinstance(rtype, str) else None
    if kind == "unique_id":
        if not isinstance(v, Mapping):
            return None
        prefix, number = v.get("prefix"), v.get("number")
        return f"{prefix}-{number}" if prefix else number
    if kind == "verification" and isinstance(v, Mapping):
        return v.get("state")
    if kind in (
        "number", "checkbox", "url", "email", "phone_number", "created_time", "last_edited_time",
    ):  # fmt: skip
        return v
    return None


def flatten_page(page: Mapping[str, Any]) -> dict[str, Any]:
    """A page object as plain data: id, url, timestamps, the title and every property's plain value."""
    props = page.get("properties") if isinstance(page.get("properties"), Mapping) else {}
    flat = {str(name): plain_value(v) for name, v in props.items()}
    title = next(
        (
            plain_value(v)
            for v in props.values()
            if isinstance(v, Mapping) and v.get("type") == "title"
        ),
        "",
    )
    parent = page.get("parent") if isinstance(page.get("parent"), Mapping) else {}
    return {
        "id": page.get("id"),
        "url": page.get("url"),
        "created_time": page.get("created_time"),
        "last_edited_time": page.get("last_edited_time"),
        "archived": bool(page.get("archived") or page.get("in_trash")),
        "database_id": parent.get("database_id"),
        "title": title,
        "properties": flat,
    }


# --------------------------------------------------------------------------- filters and sorts


def compound_depth(flt: Any) -> int:
    """How many compound levels a filter has (a single property filter: 0)."""
    if not isinstance(flt, Mapping):
        return 0
    for comp in ("and", "or"):
        if isinstance(flt.get(comp), list):
            return 1 + max((compound_depth(f) for f in flt[comp]), default=0)
    return 0


def filter_problems(flt: Any, where: str = "filter", depth: int = 0) -> list[str]:
    """Problems with a Notion filter object (https://developers.notion.com/reference/post-database-query-filter)."""
    if not isinstance(flt, Mapping):
        return [f"{where}: must be an object"]
    comps = [c for c in ("and", "or") if c in flt]
    if comps:
        if len(flt) != 1:
            return [f"{where}: a compound filter has exactly one key, and or or"]
        comp = comps[0]
        if depth >= MAX_COMPOUND_DEPTH:
            return [
                f"{where}: Notion nests compound filters (and/or) at most {MAX_COMPOUND_DEPTH} levels deep"
            ]
        subs = flt[comp]
        if not isinstance(subs, list) or not subs:
            return [f"{where}.{comp}: must be a non-empty array of filters"]
        out: list[str] = []
        for i, sub in enumerate(subs):
            out += filter_problems(sub, f"{where}.{comp}[{i}]", depth + 1)
        return out
    if "timestamp" in flt:
        ts = flt["timestamp"]
        if ts not in _TIMESTAMPS:
            return [f"{where}.timestamp: must be created_time or last_edited_time"]
        cond = flt.get(ts)
        if set(flt) != {"timestamp", ts} or not isinstance(cond, Mapping) or len(cond) != 1:
            return [
                f'{where}: a timestamp filter is {{"timestamp": "{ts}", "{ts}": {{<condition>: <value>}}}}'
            ]
        op = next(iter(cond))
        if op not in _DATE_OPS:
            return [f"{where}.{ts}: {op!r} is not a date condition"]
        return []
    prop = flt.get("property")
    if not isinstance(prop, str) or not prop:
        return [f"{where}: give a property (its name or id), a timestamp, or and/or"]
    kinds = [k for k in flt if k not in ("property", "type")]
    if len(kinds) != 1:
        return [
            f'{where}: a property filter has one type key, such as "select": {{"equals": "Done"}}'
        ]
    cond = flt[kinds[0]]
    if not isinstance(cond, Mapping) or len(cond) != 1:
        return [f"{where}.{kinds[0]}: must be an object with exactly one condition"]
    return []


def sorts_problems(sorts: Any, where: str = "sorts") -> list[str]:
    if not isinstance(sorts, list):
        return [f"{where}: must be an array"]
    out = []
    for i, s in enumerate(sorts):
        if not isinstance(s, Mapping) or s.get("direction") not in ("ascending", "descending"):
            out.append(f"{where}[{i}]: direction must be ascending or descending")
        elif ("timestamp" in s) == ("property" in s):
            out.append(f"{where}[{i}]: give either a property or a timestamp")
        elif "timestamp" in s and s["timestamp"] not in _TIMESTAMPS:
            out.append(f"{where}[{i}].timestamp: must be created_time or last_edited_time")
    return out
