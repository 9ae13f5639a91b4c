"""The size of a value, as the templating sandbox and the runner bound it.

A value's size is what it weighs as compact JSON in UTF-8: the bytes of its strings and their
quotes, the digits of its numbers, and the brackets, colons and commas of its lists and objects
(escapes are not counted). A list that holds one string a thousand times weighs a thousand
strings, as it will once it is serialized, although it takes little memory before that.

The walk stops as soon as the size passes ``stop_after``, so measuring a huge value costs no
more than measuring one of the limit's size.
"""

from __future__ import annotations

from collections.abc import ItemsView, KeysView, Mapping, ValuesView
from typing import Any, NamedTuple

#: the default bound of one rendered value and of one step output, in bytes (1 MiB)
DEFAULT_MAX_VALUE_BYTES = 1024 * 1024


_SEQUENCES = (list, tuple, set, frozenset, KeysView, ValuesView, ItemsView)


class Measure(NamedTuple):
    """``size`` in bytes (above the bound when the walk stopped early), ``depth`` of nesting
    seen, and how many values the walk ``visited``."""

    size: int
    depth: int
    visited: int


def text_bytes(s: str) -> int:
    """UTF-8 bytes of ``s`` (its length when it is ASCII, without encoding it)."""
    if s.isascii():
        return len(s)
    return len(s.encode("utf-8", "surrogatepass"))


def measure(value: Any, stop_after: int | None = None) -> Measure:
    """Size and depth of ``value`` as compact JSON (see the module docstring); stops once the
    size is above ``stop_after``. Objects that are not JSON count as a short string."""
    size = depth = visited = 0
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        v, d = stack.pop()
        visited += 1
        if d > depth:
            depth = d
        if isinstance(v, str):
            size += text_bytes(v) + 2
        elif v is None or isinstance(v, bool):
            size += 5
        elif isinstance(v, int):
            size += v.bit_length() * 30103 // 100000 + 1 + (v < 0)
        elif isinstance(v, float):
            size += len(repr(v))
        elif isinstance(v, (bytes, bytearray)):
            size += len(v) + 2
        elif isinstance(v, Mapping):
            size += 2 + 2 * len(v) - (len(v) > 0)  # braces, colons and commas
            if stop_after is not None and size > stop_after:
                break
            for k, item in v.items():
                stack.append((k, d + 1))
                stack.append((item, d + 1))
        elif isinstance(v, range):  # its numbers, without walking them
            widest = max(abs(v.start), abs(v.stop))
            size += 1 + max(len(v), 1) * (widest.bit_length() * 30103 // 100000 + 2)
        elif isinstance(v, _SEQUENCES):
            size += 1 + max(len(v), 1)  # brackets and commas
            if stop_after is not None and size > stop_after:
                break
            stack.extend((item, d + 1) for item in v)
        else:
            size += 16  # an iterator, a function, an undefined value: nothing to serialize yet
        if stop_after is not None and size > stop_after:
            break
    return Measure(size, depth, visited)


def json_size(value: Any, stop_after: int | None = None) -> int:
    """The size of ``value`` in bytes as compact JSON (see :func:`measure`)."""
    return measure(value, stop_after).size
