"""The field picker: what the trigger and each step give later steps, as template references.

Each source (the trigger, then every step in document order) gets one sample of its output.
The trigger's: the newest run's trigger data, else a schedule's input, else an app trigger's
sample item (or one made from its output schema). A step's: its pinned output, else its output
in one of the pipeline's last runs, else a sample made from its action's output schema (a
construct's from the shape of its output). The builder shows a Test trigger's items itself.
The sample
is flattened to ``{"ref": "{{ steps.x.output.a.b }}", "label", "sample"}`` entries the builder
offers to insert. A step inside a loop also sees the loop's ``item`` and ``index``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from levqor_kernel.pipeline import step_type

from levqor_host.builder.document import Placed, walk_steps, writing_actions

if TYPE_CHECKING:
    from levqor_kernel.catalog import Catalog

    from levqor_host.services import Services

__all__ = ["app_trigger_sample", "field_sources", "flatten", "schema_sample"]

#: how many of the pipeline's last runs are looked at for outputs
RECENT_RUNS = 5
MAX_DEPTH = 6
MAX_FIELDS = 200
MAX_SAMPLE_CHARS = 200
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
#: a key Jinja would read as a dict's method (``x.items``) is written as ``x['items']``
_METHODS = frozenset(dir(dict))
#: ``{{ trigger.a.b }}`` or ``{{ steps.x.output.a }}``: a reference the samples can follow
_REF = re.compile(r"^\{\{\s*((?:trigger|steps)(?:\.[A-Za-z_][A-Za-z0-9_]*)*)\s*\}\}$")


def _attr(base: str, key: str) -> str:
    if _NAME.match(key) and key not in _METHODS:
        return f"{base}.{key}"
    return f"{base}[{json.dumps(key)}]"


def _short(value: Any) -> Any:
    """A sample small enough to show: long text cut, a large object or list left out."""
    if isinstance(value, str) and len(value) > MAX_SAMPLE_CHARS:
        return value[:MAX_SAMPLE_CHARS] + "…"
    if isinstance(value, dict | list):
        text = json.dumps(value, default=str)
        return value if len(text) <= MAX_SAMPLE_CHARS else None
    return value


def flatten(expr: str, label: str, value: Any) -> list[dict[str, Any]]:
    """``value`` (what ``expr`` holds) as picker entries: the whole value first, then every
    key of its objects (a list by its first element), depth first, at most ``MAX_FIELDS``."""
    out: list[dict[str, Any]] = []

    def visit(e: str, lbl: str, v: Any, depth: int) -> None:
        if len(out) >= MAX_FIELDS:
            return
        out.append({"ref": "{{ " + e + " }}", "label": lbl, "sample": _short(v)})
        if depth >= MAX_DEPTH:
            return
        if isinstance(v, Mapping):
            for k, child in v.items():
                visit(_attr(e, str(k)), f"{lbl} › {k}", child, depth + 1)
        elif isinstance(v, list) and v:
            visit(f"{e}[0]", f"{lbl} › first", v[0], depth + 1)

    visit(expr, label, value, 0)
    return out


def schema_sample(schema: Any, depth: int = 0) -> Any:
    """A value shaped like JSON Schema ``schema`` says (its example, default or const when
    it has one)."""
    if not isinstance(schema, Mapping) or depth > MAX_DEPTH:
        return None
    for key in ("examples", "enum"):
        if isinstance(schema.get(key), list) and schema[key]:
            return schema[key][0]
    for key in ("default", "const"):
        if key in schema:
            return schema[key]
    for key in ("anyOf", "oneOf", "allOf"):
        if isinstance(schema.get(key), list) and schema[key]:
            return schema_sample(schema[key][0], depth + 1)
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), None)
    props = schema.get("properties")
    if kind == "object" or isinstance(props, Mapping):
        props = props if isinstance(props, Mapping) else {}
        return {k: schema_sample(v, depth + 1) for k, v in props.items()}
    if kind == "array":
        return [schema_sample(schema.get("items"), depth + 1)]
    if kind == "string":
        return "2026-01-01T00:00:00Z" if schema.get("format") == "date-time" else "text"
    return {"integer": 0, "number": 0, "boolean": False}.get(str(kind))


_WAIT_SAMPLES = {
    "time": {"waited": 3600, "until": "2026-01-01T00:00:00Z"},
    "approval": {"approved": True, "by": "someone@example.com", "at": "2026-01-01T00:00:00Z",
                 "comment": ""},  # fmt: skip
}


def _construct_sample(step: Mapping[str, Any], catalog: Catalog) -> Any:
    kind = step_type(step)
    paths = step.get("paths") if isinstance(step.get("paths"), list) else []
    if kind == "branch":
        first = paths[0] if paths and isinstance(paths[0], Mapping) else {}
        return {"path": 0, "name": first.get("name"), "output": None}
    if kind == "parallel":
        return [None for _ in paths]
    if kind == "for_each":
        body = [s for s in step.get("steps") or [] if isinstance(s, Mapping)]
        return [_step_sample(body[-1], catalog)] if body else []
    if kind == "wait":
        return _WAIT_SAMPLES["approval" if "approval" in step else "time"]
    if kind == "pipeline":
        return {"run_id": "run_…", "status": "succeeded", "output": {}}
    return None


def _step_sample(step: Mapping[str, Any], catalog: Catalog) -> Any:
    if step_type(step) != "action":
        return _construct_sample(step, catalog)
    action = catalog.action(str(step.get("connector")), str(step.get("action")))
    return schema_sample(action.output) if action is not None else None


def _follow(ref: Any, trigger: Any, outputs: Mapping[str, Any]) -> Any:
    """The sample a plain reference such as ``{{ trigger.orders }}`` points at, else None."""
    m = _REF.match(ref) if isinstance(ref, str) else None
    if m is None:
        return None
    names = m.group(1).split(".")
    value: Any = {"trigger": trigger, "steps": {k: {"output": v} for k, v in outputs.items()}}
    for name in names:
        if not isinstance(value, Mapping) or name not in value:
            return None
        value = value[name]
    return value


def _recent(state: Services, user_id: str, pipeline_id: str) -> tuple[Any, dict, dict]:
    """(the newest run's trigger data, ``{path: (output, run id)}`` from the last runs, the
    newest run's id as ``{"run_id": ...}`` when there is one)."""
    runs, _ = state.store.runs.list(user_id, pipeline_id=pipeline_id, limit=RECENT_RUNS)
    trigger: Any = runs[0]["input"] if runs else None
    found: dict[str, tuple[Any, str]] = {}
    for r in runs:
        for path, output in state.store.steps.sample_outputs(r["id"]).items():
            found.setdefault(path, (output, r["id"]))
    return trigger, found, {"run_id": runs[0]["id"]} if runs else {}


def app_trigger_sample(catalog: Catalog, trig_doc: Mapping[str, Any]) -> tuple[Any, str]:
    """(a sample item of an app trigger, where it comes from): the trigger's own sample
    (``sample``), else one made from its output schema (``schema``); ``(None, "none")`` for a
    trigger not installed."""
    info = catalog.trigger(str(trig_doc.get("connector")), str(trig_doc.get("trigger")))
    if info is None:
        return None, "none"
    if isinstance(info.sample, Mapping) and info.sample:
        return info.sample, "sample"
    made = schema_sample(info.output)
    return (made, "schema") if made is not None else (None, "none")


def field_sources(state: Services, user_id: str, pipeline_id: str, doc: Any) -> list[dict]:
    """The picker's sources of ``doc`` (a version of the user's pipeline): the trigger, then
    each step in document order with its ``path``, ``pointer``, where its sample comes from
    (``source``: pinned, run, schema or none) and its ``fields``."""
    catalog = state.pm.catalog
    trigger, found, newest = _recent(state, user_id, pipeline_id)
    trig_doc = doc.get("trigger") if isinstance(doc.get("trigger"), Mapping) else {}
    if trigger is None and isinstance(trig_doc.get("input"), Mapping):
        trigger, trig_source = trig_doc["input"], "schedule"
    elif trigger is None and trig_doc.get("type") == "app":
        trigger, trig_source = app_trigger_sample(catalog, trig_doc)
    else:
        trig_source = "run" if trigger is not None else "none"
    sources: list[dict] = [
        {
            "id": "trigger", "kind": "trigger", "path": None, "pointer": "/trigger",
            "source": trig_source, **(newest if trig_source == "run" else {}),
            "fields": flatten("trigger", "Trigger", trigger if trigger is not None else {}),
        }
    ]  # fmt: skip
    pinned = doc.get("pinned") if isinstance(doc.get("pinned"), Mapping) else {}
    outputs: dict[str, Any] = {}
    for placed in walk_steps(doc):
        entry = _source(placed, pinned, found, catalog)
        outputs[placed.id] = entry.pop("_sample")
        sources.append(entry)
        sources += _loop_sources(placed, trigger, outputs)
    return sources


def _source(
    placed: Placed, pinned: Mapping[str, Any], found: Mapping[str, Any], catalog: Catalog
) -> dict[str, Any]:
    step, sid = placed.step, placed.id
    recorded = found.get(placed.path.replace("[*]", "[0]"))
    extra: dict[str, Any] = {}
    if sid in pinned:
        sample, source = pinned[sid], "pinned"
    elif recorded is not None:
        (sample, run_id), source = recorded, "run"
        extra["run_id"] = run_id
    else:
        sample = _step_sample(step, catalog)
        source = "schema" if sample is not None else "none"
    label = str(step.get("name") or sid)
    return {
        "id": sid, "kind": "step", "path": placed.path, "pointer": placed.pointer,
        "connector": step.get("connector", "flow"),
        "action": step.get("action", step_type(step)), "loops": list(placed.loops),
        "source": source, **extra, "writes": bool(writing_actions(catalog, step)),
        "fields": flatten(f"steps.{sid}.output", label, sample), "_sample": sample,
    }  # fmt: skip


def _loop_sources(placed: Placed, trigger: Any, outputs: Mapping) -> list[dict]:
    """The ``item`` and ``index`` a loop's body sees (listed after the loop, before its body):
    the item's sample is the first of the items a plain ``items`` reference points at."""
    step = placed.step
    if step_type(step) != "for_each":
        return []
    items = _follow(step.get("items"), trigger, outputs)
    first = items[0] if isinstance(items, list) and items else None
    fields = flatten("item", f"{step.get('name') or placed.id} › item", first)
    fields.append({"ref": "{{ index }}", "label": f"{placed.id} › index", "sample": 0})
    return [
        {
            "id": f"{placed.id}.item", "kind": "item", "path": f"{placed.path}[*]",
            "pointer": f"{placed.pointer}/items", "loop": placed.id,
            "source": "items" if first is not None else "none", "fields": fields,
        }
    ]  # fmt: skip
