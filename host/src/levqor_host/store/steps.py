"""The step rows of runs: one per step of a run, written as the runner reports transitions."""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, bindparam, case, func, select, update

from levqor_host.store.db import Database, retry_on_disconnect, utcnow
from levqor_host.store.rows import RowMapper, StepRow
from levqor_host.store.step_paths import parse_path
from levqor_host.store.tables import run_steps

__all__ = [
    "FINAL_STEP_STATUSES",
    "ITEM_STATUS_ORDER",
    "STEP_STATUSES",
    "Steps",
    "end_running_steps",
    "step_row",
]

#: ``waiting``: a wait, approval or sub-pipeline step that suspended its run
STEP_STATUSES = frozenset({"running", "waiting", "succeeded", "failed", "skipped", "cancelled"})
FINAL_STEP_STATUSES = ("succeeded", "failed", "skipped", "cancelled")



def row_usage(m: Any) -> dict[str, Any] | None:
    """The token usage a step row records (``{model, input_tokens, output_tokens,
    total_tokens}``), None for a step that is not metered."""
    if m.get("model") is None:
        return None
    i, o = int(m.get("input_tokens") or 0), int(m.get("output_tokens") or 0)
    return {"model": m["model"], "input_tokens": i, "output_tokens": o, "total_tokens": i + o}


step_row = RowMapper(StepRow, usage=row_usage)

#: the steps of run ``run_id``, by position
SQL_STEPS = (
    select(run_steps)
    .where(run_steps.c.run_id == bindparam("run_id"))
    .order_by(run_steps.c.position, run_steps.c.step_id)
)
#: the steps of run ``run_id`` outside any loop item (each loop's items are read by pages)
_SQL_OUTSIDE_LOOPS = SQL_STEPS.where(run_steps.c.loop_path.is_(None))


_SQL_LOOP_ROW = select(run_steps.c.action).where(
    run_steps.c.run_id == bindparam("run_id"), run_steps.c.step_id == bindparam("loop")
)
#: an item's status is its most pressing step's, in this order (a failed step the loop went on
#: after still marks its item failed)
ITEM_STATUS_ORDER = ("running", "waiting", "failed", "cancelled", "succeeded", "skipped")
_RANK = {status: len(ITEM_STATUS_ORDER) - i for i, status in enumerate(ITEM_STATUS_ORDER)}
_STATUS_OF_RANK = {rank: status for status, rank in _RANK.items()}
_SQL_RANK = case(_RANK, value=run_steps.c.status, else_=0)
_SQL_SUCCEEDED_OUTPUTS = select(run_steps.c.step_id, run_steps.c.output).where(
    run_steps.c.run_id == bindparam("run_id"), run_steps.c.status == "succeeded"
)


def _upsert(db: Database) -> Any:
    stmt = db.insert(run_steps)
    ex = stmt.excluded
    return stmt.on_conflict_do_update(
        index_elements=[run_steps.c.run_id, run_steps.c.step_id],
        set_={
            "position": ex.position,
            "connector": ex.connector,
            "action": ex.action,
            "status": ex.status,
            "attempts": ex.attempts,
            "input": func.coalesce(ex.input, run_steps.c.input),
            "output": ex.output,
            "error": ex.error,
            "started_at": func.coalesce(ex.started_at, run_steps.c.started_at),
            "finished_at": ex.finished_at,
            "model": ex.model,
            "input_tokens": ex.input_tokens,
            "output_tokens": ex.output_tokens,
        },
    )


def end_running_steps(conn: Connection, run_id: str, status: str, error: Any) -> None:
    """Steps of ``run_id`` left ``running`` (or ``waiting``) end with the run: ``cancelled``
    when it was cancelled, ``failed`` otherwise, with ``error`` (inside the caller's
    transaction)."""
    conn.execute(
        update(run_steps)
        .where(run_steps.c.run_id == run_id, run_steps.c.status.in_(("running", "waiting")))
        .values(
            status="cancelled" if status == "cancelled" else "failed",
            error=error,
            finished_at=utcnow(),
        )
    )


class Steps:
    """Step rows, inserted or updated by ``(run_id, step_id)``."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self._upsert = _upsert(db)

    def record(self, run_id: str, step_id: str, **fields: Any) -> None:
        """Insert or update a step row (``fields``: the keyword arguments of :meth:`row`).
        ``input`` and ``started_at`` given as None keep the stored values (so the final update
        need not repeat them); the rest is overwritten."""
        self.record_many([self.row(run_id, step_id, **fields)])

    @retry_on_disconnect
    def record_many(self, rows: list[dict[str, Any]]) -> None:
        """Insert or update several step rows in one write transaction (same columns and rules
        as :meth:`record`; see :meth:`row`)."""
        if rows:
            with self.db.write() as conn:
                self.record_many_in(conn, rows)

    def record_many_in(self, conn: Connection, rows: list[dict[str, Any]]) -> None:
        """:meth:`record_many` inside the caller's transaction."""
        for r in rows:
            if r["status"] not in STEP_STATUSES:
                raise ValueError(f"unknown step status {r['status']!r}")
        if rows:
            conn.execute(self._upsert, rows)

    @staticmethod
    def row(
        run_id: str,
        step_id: str,
        *,
        position: int,
        connector: str,
        action: str,
        status: str,
        attempts: int,
        input: Any = None,
        output: Any = None,
        error: Any = None,
        started_at: datetime | None = None,
        finished_at: datetime | None = None,
        usage: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        """The parameters of one step row for :meth:`record_many` (the loop item it ran in
        comes from its path; ``usage``: a metered step's tokens, levqor_kernel.ai.usage_of)."""
        where = parse_path(step_id)
        usage = usage or {}
        return {
            "run_id": run_id,
            "step_id": step_id,
            "position": position,
            "connector": connector,
            "action": action,
            "status": status,
            "attempts": attempts,
            "input": input,
            "output": output,
            "error": error,
            "started_at": started_at,
            "finished_at": finished_at,
            "loop_path": where.loop_path,
            "item_index": where.item_index,
            "model": usage.get("model"),
            "input_tokens": usage.get("input_tokens"),
            "output_tokens": usage.get("output_tokens"),
        }

    @retry_on_disconnect
    def usage(self, run_ids: list[str]) -> dict[str, dict[str, Any]]:
        """``{run_id: {input_tokens, output_tokens, total_tokens, by_model}}`` of the runs
        among ``run_ids`` with metered steps, summed in the database (every loop item's steps
        counted, never read)."""
        if not run_ids:
            return {}
        from levqor_kernel.ai import add_usage  # on use: the CLI's reads load no kernel

        q = (
            select(
                run_steps.c.run_id,
                run_steps.c.model,
                func.sum(run_steps.c.input_tokens),
                func.sum(run_steps.c.output_tokens),
            )
            .where(run_steps.c.run_id.in_(run_ids), run_steps.c.model.is_not(None))
            .group_by(run_steps.c.run_id, run_steps.c.model)
        )
        per_run: dict[str, list[dict[str, Any]]] = {}
        with self.db.read() as conn:
            for run_id, model, i, o in conn.execute(q).all():
                per_run.setdefault(run_id, []).append(
                    {"model": model, "input_tokens": int(i or 0), "output_tokens": int(o or 0)}
                )
        return {run_id: add_usage(usages) for run_id, usages in per_run.items()}

    @retry_on_disconnect
    def succeeded_outputs(self, run_id: str) -> dict[str, dict]:
        """``{step_id: output}`` of the run's succeeded steps."""
        with self.db.read() as conn:
            rows = conn.execute(_SQL_SUCCEEDED_OUTPUTS, {"run_id": run_id}).all()
        return {r.step_id: r.output for r in rows}

    @retry_on_disconnect
    def sample_outputs(self, run_id: str) -> dict[str, Any]:
        """``{path: output}`` of the run's succeeded steps outside loops and in the first item
        of every loop (nested loops too): one sample of each step's output, read loop by loop
        (a loop of 10,000 items costs one item's rows)."""
        out: dict[str, Any] = {}
        with self.db.read() as conn:
            rows = conn.execute(_SQL_OUTSIDE_LOOPS, {"run_id": run_id}).all()
            while rows:
                loops = []
                for r in rows:
                    if r.status == "succeeded":
                        out[r.step_id] = r.output
                    if r.connector == "flow" and r.action == "for_each":
                        loops.append(r.step_id)
                rows = conn.execute(_first_items(run_id, loops)).all() if loops else []
        return out

    # ------------------------------------------------------------------ the run's steps as a tree
    @retry_on_disconnect
    def tree(self, run_id: str, *, items_limit: int = 20) -> list[dict[str, Any]]:
        """The run's steps nested: the top-level steps in document order, each construct's
        steps under it (``children``, each with its ``scope``), and each loop's ``items``:
        ``{"total", "by_status", "page", "next"}`` with the first ``items_limit`` items
        (``{"index", "status", "steps"}``); loops inside an item have counts and ``page``
        None (read them with :meth:`items`). A loop of 10,000 items costs its counts and
        one page, never its 10,000 items' rows."""
        with self.db.read() as conn:
            top = step_row.all(conn.execute(_SQL_OUTSIDE_LOOPS, {"run_id": run_id}).all())
            roots, loops = _assemble(top, None)
            counts = _counts(conn, run_id, [n["step_id"] for n in loops])
            inner: list[dict[str, Any]] = []
            for node in loops:
                page, nxt = _page(conn, run_id, node["step_id"], None, items_limit)
                items, nested = _items(node["step_id"], page)
                node["items"] = {**counts[node["step_id"]], "page": items, "next": nxt}
                inner += nested
            _counts_only(conn, run_id, inner)
        return roots

    @retry_on_disconnect
    def items(
        self, run_id: str, loop: str, *, after: int | None = None, limit: int = 50
    ) -> dict[str, Any] | None:
        """A page of loop ``loop``'s items after item ``after``: ``{"loop", "total",
        "by_status", "items": [{"index", "status", "steps"}], "next"}`` (``next``: the cursor of
        the next page, None on the last); None when the run has no such loop."""
        with self.db.read() as conn:
            action = conn.execute(_SQL_LOOP_ROW, {"run_id": run_id, "loop": loop}).scalar()
            page, nxt = _page(conn, run_id, loop, after, limit)
            if action != "for_each" and not page:
                return None
            items, nested = _items(loop, page)
            _counts_only(conn, run_id, nested)
            return {
                "loop": loop,
                **_counts(conn, run_id, [loop])[loop],
                "items": items,
                "next": nxt,
            }


def _first_items(run_id: str, loops: list[str]) -> Any:
    """The rows of the first item (the lowest index) of each of ``loops``."""
    first = (
        select(run_steps.c.loop_path, func.min(run_steps.c.item_index).label("first"))
        .where(run_steps.c.run_id == run_id, run_steps.c.loop_path.in_(loops))
        .group_by(run_steps.c.loop_path)
        .subquery()
    )
    return (
        select(run_steps)
        .join(
            first,
            (first.c.loop_path == run_steps.c.loop_path)
            & (first.c.first == run_steps.c.item_index),
        )
        .where(run_steps.c.run_id == run_id)
        .order_by(run_steps.c.position, run_steps.c.step_id)
    )


def _is_loop(node: dict[str, Any]) -> bool:
    return node["connector"] == "flow" and node["action"] == "for_each"


def _assemble(rows: list[Any], item: str | None) -> tuple[list[dict], list[dict]]:
    """(the roots, the loops) of ``rows`` (in document order) nested by their paths; ``item``:
    the loop whose item the rows are in (its steps are roots)."""
    nodes: dict[str, dict[str, Any]] = {}
    roots: list[dict[str, Any]] = []
    loops: list[dict[str, Any]] = []
    # numbers in paths in numeric order: an agent's turns[10] after its turns[9]
    for row in sorted(rows, key=lambda r: (r["position"], _numeric(r["step_id"]))):
        where = parse_path(row["step_id"])
        node = {**row, "scope": where.scope}
        nodes[row["step_id"]] = node
        parent = nodes.get(where.parent) if where.parent and where.parent != item else None
        if parent is None:
            roots.append(node)
        else:
            parent.setdefault("children", []).append(node)
        if _is_loop(node):
            loops.append(node)
    return roots, loops


def _numeric(path: str) -> tuple:
    return tuple(int(p) if i % 2 else p for i, p in enumerate(re.split(r"(\d+)", path)))


def _counts(conn: Connection, run_id: str, loops: list[str]) -> dict[str, dict[str, Any]]:
    """``{loop: {"total": items, "by_status": {status: items}}}`` counted in the database."""
    out: dict[str, dict[str, Any]] = {loop: {"total": 0, "by_status": {}} for loop in loops}
    if not loops:
        return out
    per_item = (
        select(run_steps.c.loop_path, func.max(_SQL_RANK).label("rank"))
        .where(run_steps.c.run_id == run_id, run_steps.c.loop_path.in_(loops))
        .group_by(run_steps.c.loop_path, run_steps.c.item_index)
        .subquery()
    )
    q = select(per_item.c.loop_path, per_item.c.rank, func.count()).group_by(
        per_item.c.loop_path, per_item.c.rank
    )
    for loop, rank, n in conn.execute(q).all():
        status = _STATUS_OF_RANK.get(rank, "unknown")
        out[loop]["total"] += n
        out[loop]["by_status"][status] = n
    return out


def _page(
    conn: Connection, run_id: str, loop: str, after: int | None, limit: int
) -> tuple[list[Any], str | None]:
    """The rows of the first ``limit`` items of ``loop`` after item ``after`` (by index, then
    document order) and the cursor of the next page (None on the last)."""
    mine = (run_steps.c.run_id == run_id, run_steps.c.loop_path == loop)
    first = select(run_steps.c.item_index).distinct().where(*mine)
    if after is not None:
        first = first.where(run_steps.c.item_index > after)
    idx = conn.execute(first.order_by(run_steps.c.item_index).limit(limit + 1)).scalars().all()
    if not idx:
        return [], None
    more, idx = len(idx) > limit, idx[:limit]
    rows = conn.execute(
        select(run_steps)
        .where(*mine, run_steps.c.item_index.between(idx[0], idx[-1]))
        .order_by(run_steps.c.item_index, run_steps.c.position, run_steps.c.step_id)
    ).all()
    return rows, (str(idx[-1]) if more else None)


def _items(loop: str, rows: list[Any]) -> tuple[list[dict], list[dict]]:
    """(the items ``{"index", "status", "steps"}`` of a page's rows, the loops inside them)."""
    by_item: dict[int, list[Any]] = {}
    for row in rows:
        by_item.setdefault(row.item_index, []).append(step_row(row))
    items, nested = [], []
    for index, item_rows in by_item.items():
        steps, loops = _assemble(item_rows, loop)
        rank = max(_RANK.get(r["status"], 0) for r in item_rows)
        items.append(
            {"index": index, "status": _STATUS_OF_RANK.get(rank, "unknown"), "steps": steps}
        )
        nested += loops
    return items, nested


def _counts_only(conn: Connection, run_id: str, loops: list[dict[str, Any]]) -> None:
    """Give loops inside loop items their counts, without a page."""
    counts = _counts(conn, run_id, [n["step_id"] for n in loops])
    for node in loops:
        node["items"] = {**counts[node["step_id"]], "page": None, "next": None}
