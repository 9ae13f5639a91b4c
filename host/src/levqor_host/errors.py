"""The host's errors and the checks of request data that raise them, free of Flask: domain
modules raise :class:`ApiError`; the web layer (``levqor_host.web.errors``) renders it."""

from __future__ import annotations

import json
import math
import re
from typing import Any

from levqor_kernel.host import HttpError


class ApiError(HttpError):
    """``{"error": {"code", "message", "details"}}`` with ``status``: the kernel's
    :class:`~levqor_kernel.host.HttpError` (which plugins raise), rendered the same way."""


#: The largest integer a URL segment or an integer body field may carry: what both databases
#: store (SQLite's INTEGER and PostgreSQL's BIGINT are signed 64-bit). Beyond it: 404 / 400.
MAX_INT = 2**63 - 1
#: The largest pipeline version: its columns are INTEGER, 32-bit on PostgreSQL.
MAX_VERSION = 2**31 - 1

_SURROGATE = re.compile("[\ud800-\udfff]")


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"number {text[:40]} is too large")
    return value


def _problem(value: Any, limit: int) -> str | None:
    """What makes a decoded document unacceptable, or None: nesting deeper than ``limit``, or
    an unpaired surrogate in a key or a string (iterative, no recursion)."""
    stack = [(value, 1)]
    while stack:
        v, d = stack.pop()
        if isinstance(v, str):
            if not v.isascii() and _SURROGATE.search(v):
                return "a string holds an unpaired UTF-16 surrogate"
        elif isinstance(v, (dict, list)):
            if d > limit:
                return f"JSON nested deeper than {limit} levels"
            if isinstance(v, dict):
                stack.extend((k, d) for k in v)
                stack.extend((x, d + 1) for x in v.values())
            else:
                stack.extend((x, d + 1) for x in v)
    return None


def parse_json(raw: bytes, max_depth: int) -> Any:
    """Decode a request body as I-JSON (RFC 7493), the one parser every route uses.

    Refused with a 400 ``invalid_json`` ApiError naming the problem: text that is not UTF-8 or
    not JSON, ``NaN``/``Infinity``/``-Infinity`` and numbers too large for a float, an unpaired
    surrogate escape (``"\\udcff"``) in a key or a string, nesting deeper than ``max_depth``
    arrays/objects (``LEVQOR_MAX_JSON_DEPTH``)."""
    try:
        value = json.loads(
            raw.decode("utf-8"), parse_constant=_refuse_constant, parse_float=_finite_float
        )
    except UnicodeDecodeError:
        raise ApiError(400, "invalid_json", "body is not UTF-8") from None
    except RecursionError:
        raise ApiError(400, "invalid_json", f"JSON nested deeper than {max_depth} levels") from None
    except ValueError as e:
        raise ApiError(400, "invalid_json", f"malformed JSON: {e}") from None
    problem = _problem(value, max_depth)
    if problem:
        raise ApiError(400, "invalid_json", problem)
    return value
