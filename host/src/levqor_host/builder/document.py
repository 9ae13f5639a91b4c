"""A pipeline document's steps, nested ones too, in document order (docs/pipelines.md).

Constructs hold steps: a branch's or parallel's ``paths[n].steps`` and a branch's
``default``, a for_each's ``steps``, any step's ``on_error`` fallback steps, and the
pipeline's ``on_failure`` steps. Step ids are unique across the whole document.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Placed", "find_step", "walk_steps", "writing_actions"]


@dataclass(frozen=True)
class Placed:
    """One step and where it is: ``path`` in the form of its run records, with ``[*]`` for a
    loop's item (``each[*].send``, ``route.paths[1].notify``); ``pointer``: its JSON pointer in
    the document; ``loops``: the ids of the for_each steps it is inside, outermost first."""

    step: Mapping[str, Any]
    path: str
    pointer: str
    loops: tuple[str, ...] = field(default=())

    @property
    def id(self) -> str:
        return str(self.step.get("id"))


def _steps(value: Any) -> list[Mapping[str, Any]]:
    return [s for s in value if isinstance(s, Mapping)] if isinstance(value, list) else []


def _walk(
    steps: Any, prefix: str, pointer: str, loops: tuple[str, ...]
) -> Iterator[Placed]:
    if not isinstance(steps, list):
        return
    for i, step in enumerate(steps):
        if not isinstance(step, Mapping) or not isinstance(step.get("id"), str):
            continue
        sid, ptr = step["id"], f"{pointer}/{i}"
        path = f"{prefix}{sid}"
        yield Placed(step, path, ptr, loops)
        kind = step.get("type")
        if kind in ("branch", "parallel"):
            paths = step.get("paths") if isinstance(step.get("paths"), list) else []
            for n, p in enumerate(paths):
                if isinstance(p, Mapping):
                    yield from _walk(
                        p.get("steps"), f"{path}.paths[{n}].", f"{ptr}/paths/{n}/steps", loops
                    )
            yield from _walk(step.get("default"), f"{path}.default.", f"{ptr}/default", loops)
        elif kind == "for_each":
            yield from _walk(step.get("steps"), f"{path}[*].", f"{ptr}/steps", (*loops, sid))
        elif kind == "wait":  # an approval's notify steps
            yield from _walk(step.get("notify"), f"{path}.notify.", f"{ptr}/notify", loops)
        yield from _walk(step.get("on_error"), f"{path}.on_error.", f"{ptr}/on_error", loops)


def walk_steps(doc: Any) -> list[Placed]:
    """Every step of ``doc`` in document order (a construct before its steps), then the
    pipeline's failure steps; what is not a step is passed over."""
    if not isinstance(doc, Mapping):
        return []
    return [
        *_walk(doc.get("steps"), "", "/steps", ()),
        *_walk(doc.get("on_failure"), "on_failure.", "/on_failure", ()),
    ]


def find_step(doc: Any, step_id: str) -> Placed | None:
    """The step ``step_id`` of ``doc`` wherever it is, None if there is none."""
    return next((p for p in walk_steps(doc) if p.id == step_id), None)


def writing_actions(catalog: Any, step: Mapping[str, Any]) -> list[str]:
    """The ``connector.action`` of each action in ``step`` (nested ones too, for a construct)
    that ``catalog`` (a kernel Catalog) marks as writing upstream (``writes``)."""
    out = set()
    for placed in walk_steps({"steps": [step]}):
        s = placed.step
        if s.get("type") not in (None, "action"):
            continue
        action = catalog.action(str(s.get("connector")), str(s.get("action")))
        if action is not None and action.writes:
            out.add(f"{s['connector']}.{s['action']}")
    return sorted(out)
