"""The host's shape, checked: no import cycle, no file over 800 lines, no function over 80.

The one-way arrows between the host's rooms are import-linter contracts in the root
pyproject.toml (`lint-imports`, run by CI); this file checks what a contract cannot say.
Migrations are declarative tables of DDL and are left out of the function-length rule.
"""

from __future__ import annotations

import ast
from pathlib import Path

import grimp
import pytest

HOST_SRC = Path(__file__).resolve().parents[1] / "host" / "src" / "levqor_host"
MAX_FILE_LINES = 800
MAX_FUNCTION_LINES = 80
DECLARATIVE = ("store/migrations/",)


def _sources() -> list[Path]:
    return sorted(HOST_SRC.rglob("*.py"))


def _relative(path: Path) -> str:
    return path.relative_to(HOST_SRC).as_posix()


def _strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's algorithm, iterative: the groups of modules that import each other in a loop."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    groups: list[list[str]] = []
    counter = 0
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                group = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    group.append(member)
                    if member == node:
                        break
                if len(group) > 1:
                    groups.append(sorted(group))
    return groups


def test_the_host_has_no_import_cycle() -> None:
    """Every import counts, also those inside functions; only `if TYPE_CHECKING:` ones do not.
    The graph is built afresh (no cache), so it is the code as it is now.
    A package's `__init__` that re-exports its own modules is not a loop with them."""
    built = grimp.build_graph(
        "levqor_host", exclude_type_checking_imports=True, cache_dir=None
    )
    graph: dict[str, set[str]] = {}
    for module in built.modules:
        imported = built.find_modules_directly_imported_by(module)
        graph[module] = {
            other
            for other in imported
            if other.startswith("levqor_host") and not other.startswith(module + ".")
        }
    for module in graph:
        for other in graph[module]:
            graph.setdefault(other, set())
    cycles = _strongly_connected(graph)
    assert cycles == [], f"modules that import each other in a loop: {cycles}"


@pytest.mark.parametrize("path", _sources(), ids=_relative)
def test_no_host_file_is_over_800_lines(path: Path) -> None:
    lines = len(path.read_text(encoding="utf-8").splitlines())
    assert lines <= MAX_FILE_LINES, f"{_relative(path)} has {lines} lines: split it by concern"


def test_no_host_function_is_over_80_lines() -> None:
    long = []
    for path in _sources():
        if _relative(path).startswith(DECLARATIVE):
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                length = node.end_lineno - node.lineno + 1
                if length > MAX_FUNCTION_LINES:
                    long.append(f"{_relative(path)}:{node.lineno} {node.name} ({length} lines)")
    assert long == [], "functions over 80 lines: " + "; ".join(long)


def test_the_cycle_finder_finds_a_loop() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": set()}
    assert _strongly_connected(graph) == [["a", "b", "c"]]
