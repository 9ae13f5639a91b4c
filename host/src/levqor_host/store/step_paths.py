"""Where a step record sits in its run: what its path (``step_id``) says.

A record's path names its place in the document (docs/pipelines.md): ``send`` at the top,
``each[17].send`` in item 17 of loop ``each``, ``route.paths[1].notify`` in a branch path,
``route.default.notify`` in a branch's default path, ``send.on_error.alert`` in a step's
fallback steps, ``on_failure.alert`` in the pipeline's failure steps; nested:
``outer[2].inner[5].send``. A step segment carries an ``[index]`` exactly when the path goes
on inside that loop's item; after a step segment without one comes a scope
(``paths[n]``, ``default``, ``on_error``). An agent step's children: its model turns
``helper.turns[0]`` (scope ``turns``, under the agent), each turn's tool calls
``helper.turns[0].calls[1]`` (scope ``calls``, under the turn) and a call's approval
``helper.turns[0].calls[1].approval`` (scope ``approval``, under the call).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["StepPath", "parse_path"]

_STEP = re.compile(r"^([a-z][a-z0-9_]{0,39})(?:\[(\d{1,9})\])?$")
_SCOPE = re.compile(r"^(?:paths\[\d{1,9}\]|default|on_error)$")
_TURN = re.compile(r"^turns\[\d{1,9}\]$")
_CALL = re.compile(r"^calls\[\d{1,9}\]$")


@dataclass(frozen=True)
class StepPath:
    """What a path says. ``parent``: the path of the construct (or step, for fallback steps)
    the record belongs to, None at the top; ``scope``: where in the parent (``paths[1]``,
    ``default``, ``on_error``; ``on_failure`` for the pipeline's failure steps; None in a loop
    item or at the top); ``loop_path`` and ``item_index``: the innermost loop item the record
    is in (``outer[2].inner`` and 5 for ``outer[2].inner[5].send``), None outside any."""

    path: str
    parent: str | None = None
    scope: str | None = None
    loop_path: str | None = None
    item_index: int | None = None


def parse_path(path: str) -> StepPath:
    """The :class:`StepPath` of a record's path; a path that follows none of the forms above
    (an older record, a plain step id) is a top-level step."""
    segs = path.split(".")
    start, scope = 0, None
    if len(segs) > 1 and segs[0] == "on_failure" and not _SCOPE.match(segs[1]):
        start, scope = 1, "on_failure"
    parent = loop_path = item = None
    expect_step = True
    for j in range(start, len(segs)):
        seg, last = segs[j], j == len(segs) - 1
        prefix = ".".join(segs[:j])
        if expect_step:
            m = _STEP.match(seg)
            if m is None or (last and m.group(2) is not None):
                return StepPath(path)
            if last:
                break
            parent = f"{prefix}.{m.group(1)}" if prefix else m.group(1)
            if m.group(2) is not None:  # inside item n of this loop
                loop_path, item, scope = parent, int(m.group(2)), None
            else:
                expect_step = False
        else:
            if _TURN.match(seg):
                return _agent_child(path, segs, j, loop_path, item)
            if last or not _SCOPE.match(seg):
                return StepPath(path)
            scope, expect_step = seg, True
    return StepPath(path, parent, scope, loop_path, item)


def _agent_child(path: str, segs: list[str], j: int, loop_path: str | None, item: int | None) -> StepPath:
    """The record of an agent's child: ``segs[j]`` is ``turns[i]`` right after the agent's
    step segment."""
    rest = segs[j + 1 :]
    if not rest:
        parent, scope = ".".join(segs[:j]), "turns"
    elif len(rest) == 1 and _CALL.match(rest[0]):
        parent, scope = ".".join(segs[: j + 1]), "calls"
    elif len(rest) == 2 and _CALL.match(rest[0]) and rest[1] == "approval":
        parent, scope = ".".join(segs[: j + 2]), "approval"
    else:
        return StepPath(path)
    return StepPath(path, parent, scope, loop_path, item)
