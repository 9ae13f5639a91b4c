"""Step payload templating in Jinja2's immutable sandbox.

Only strings written in the pipeline document are templates. Trigger data and step outputs
are *data*: they are passed in as variables and never parsed as template source, so
nothing a webhook caller sends is ever evaluated.

A string that is exactly one expression (``"{{ trigger.amount }}"``) renders to the native
value (a number stays a number, a list a list); any other string renders to a string.
"""

from __future__ import annotations

import operator
import re
from collections.abc import Mapping
from functools import lru_cache
from typing import Any

from jinja2 import StrictUndefined, TemplateSyntaxError, nodes
from jinja2.exceptions import SecurityError, UndefinedError
from jinja2.exceptions import TemplateError as JinjaTemplateError
from jinja2.sandbox import ImmutableSandboxedEnvironment

from .errors import TemplateError

MAX_OUTPUT = 1_000_000  # characters a single rendered string may have
MAX_RANGE = 10_000
MAX_POWER = 1_000_000
_SINGLE = re.compile(r"^\s*\{\{(?P<expr>(?:(?!\{\{|\}\}).)*)\}\}\s*$", re.S)


def is_template(value: Any) -> bool:
    return isinstance(value, str) and ("{{" in value or "{%" in value or "{#" in value)


def _safe_range(*args: int) -> range:
    r = range(*args)
    if len(r) > MAX_RANGE:
        raise SecurityError(f"range too big (at most {MAX_RANGE} items)")
    return r


def _size(v: Any) -> int:
    try:
        return len(v)
    except TypeError:
        return 1


class _Env(ImmutableSandboxedEnvironment):
    intercepted_binops = frozenset({"*", "**", "+"})

    def call_binop(self, context: Any, operator_: str, left: Any, right: Any) -> Any:
        if operator_ == "**":
            if (
                isinstance(left, (int, float))
                and isinstance(right, (int, float))
                and abs(right) > 64
                and abs(left) > 1
            ):
                raise SecurityError("exponent too large")
            result = left**right
            if isinstance(result, int) and result.bit_length() > 4096:
                raise SecurityError("number too large")
            return result
        if operator_ == "*":
            for seq, n in ((left, right), (right, left)):
                if isinstance(seq, (str, list, tuple)) and isinstance(n, int):
                    if _size(seq) * max(n, 0) > MAX_OUTPUT:
                        raise SecurityError("repetition result too large")
            result = left * right
            if isinstance(result, int) and result.bit_length() > 4096:
                raise SecurityError("number too large")
            return result
        if operator_ == "+":
            if isinstance(left, (str, list, tuple)) and _size(left) + _size(right) > MAX_OUTPUT:
                raise SecurityError("concatenation result too large")
            return operator.add(left, right)
        return super().call_binop(context, operator_, left, right)


def _make_env() -> _Env:
    env = _Env(undefined=StrictUndefined, autoescape=False, trim_blocks=False)
    # No helper globals: cycler, joiner, lipsum and namespace are classic escape gadgets.
    env.globals.clear()
    env.globals["range"] = _safe_range
    return env


_ENV = _make_env()


@lru_cache(maxsize=4096)
def _compile_template(source: str) -> Any:
    return _ENV.from_string(source)


@lru_cache(maxsize=4096)
def _compile_expression(expr: str) -> Any:
    return _ENV.compile_expression(expr, undefined_to_none=False)


def parse(source: str) -> nodes.Template:
    """Parse a template string; raises TemplateError on bad syntax."""
    try:
        return _ENV.parse(source)
    except TemplateSyntaxError as e:
        raise TemplateError(f"template syntax error: {e.message}") from None


def step_references(source: str) -> set[str]:
    """Names of steps a template reads (``steps.<id>`` or ``steps['<id>']``)."""
    tree = parse(source)
    refs: set[str] = set()
    for node in tree.find_all((nodes.Getattr, nodes.Getitem)):
        base = node.node
        if isinstance(base, nodes.Name) and base.name == "steps":
            if isinstance(node, nodes.Getattr):
                refs.add(node.attr)
            elif isinstance(node.arg, nodes.Const) and isinstance(node.arg.value, str):
                refs.add(node.arg.value)
    return refs


def root_names(source: str) -> set[str]:
    """Top-level variable names a template reads."""
    from jinja2 import meta

    return set(meta.find_undeclared_variables(parse(source)))


def render_string(source: str, scope: Mapping[str, Any]) -> Any:
    """Render one template string. Single-expression strings keep their native type."""
    try:
        m = _SINGLE.match(source)
        if m and "{%" not in source and "{#" not in source:
            value = _compile_expression(m.group("expr").strip())(**scope)
            if isinstance(value, str) and len(value) > MAX_OUTPUT:
                raise SecurityError("rendered value too large")
            if value is not None and not isinstance(value, (str, int, float, bool, list, dict)):
                value = str(value)
            return value
        out = _compile_template(source).render(**scope)
        if len(out) > MAX_OUTPUT:
            raise SecurityError("rendered value too large")
        return out
    except SecurityError as e:
        raise TemplateError(f"template refused by the sandbox: {e}") from None
    except UndefinedError as e:
        raise TemplateError(
            f"template refers to something that does not exist: {e.message}"
        ) from None
    except TemplateSyntaxError as e:
        raise TemplateError(f"template syntax error: {e.message}") from None
    except JinjaTemplateError as e:
        raise TemplateError(f"template error: {e}") from None
    except (OverflowError, MemoryError, RecursionError) as e:
        raise TemplateError(f"template too expensive: {type(e).__name__}") from None
    except (TypeError, ValueError, ZeroDivisionError, AttributeError, KeyError, IndexError) as e:
        raise TemplateError(f"template failed: {type(e).__name__}: {e}") from None


def render(value: Any, scope: Mapping[str, Any]) -> Any:
    """Render every template string inside ``value`` (dicts and lists recursively)."""
    if isinstance(value, str):
        return render_string(value, scope) if is_template(value) else value
    if isinstance(value, dict):
        return {k: render(v, scope) for k, v in value.items()}
    if isinstance(value, list):
        return [render(v, scope) for v in value]
    return value


def contains_template(value: Any) -> bool:
    if isinstance(value, str):
        return is_template(value)
    if isinstance(value, dict):
        return any(contains_template(v) for v in value.values())
    if isinstance(value, list):
        return any(contains_template(v) for v in value)
    return False
