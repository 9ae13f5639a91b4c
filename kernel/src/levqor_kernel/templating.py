"""Step payload templating in Jinja2's immutable sandbox.

Only strings written in the pipeline document are templates. Trigger data and step outputs
are *data*: they are passed in as variables and never parsed as template source, so
nothing a webhook caller sends is ever evaluated.

A string that is exactly one expression (``"{{ trigger.amount }}"``) renders to the native
value (a number stays a number, a list a list); any other string renders to a string.

Bounds: a rendered string has at most MAX_OUTPUT characters (checked while it is produced, so
nested loops cannot fill memory first), and one :func:`render` of a step's payload at most
MAX_WORK loop iterations plus calls (nested loops and recursive macros cannot hold a worker's
CPU). Operators that multiply sizes are checked before they allocate.
"""

from __future__ import annotations

import operator
import re
import string
import threading
from collections.abc import Iterable, Iterator, Mapping
from functools import lru_cache
from typing import Any

from jinja2 import StrictUndefined, TemplateSyntaxError, Undefined, nodes
from jinja2.exceptions import SecurityError, UndefinedError
from jinja2.exceptions import TemplateError as JinjaTemplateError
from jinja2.runtime import LoopContext
from jinja2.sandbox import ImmutableSandboxedEnvironment

from .errors import TemplateError

MAX_OUTPUT = 1_000_000  # characters a single rendered string may have
MAX_RANGE = 10_000
MAX_POWER = 1_000_000
MAX_WORK = 200_000  # loop iterations plus calls in one render() of a step's payload
_SINGLE = re.compile(r"^\s*\{\{(?P<expr>(?:(?!\{\{|\}\}).)*)\}\}\s*$", re.S)


def is_template(value: Any) -> bool:
    return isinstance(value, str) and ("{{" in value or "{%" in value or "{#" in value)


def _safe_range(*args: int) -> range:
    r = range(*args)
    if len(r) > MAX_RANGE:
        raise SecurityError(f"range too big (at most {MAX_RANGE} items)")
    return r


_budget = threading.local()
_budget.left = None


class _Metered:
    """One work budget for everything rendered inside (the outermost ``with`` sets it)."""

    __slots__ = ("outer",)

    def __enter__(self) -> None:
        self.outer = getattr(_budget, "left", None) is None
        if self.outer:
            _budget.left = MAX_WORK

    def __exit__(self, *exc: object) -> None:
        if self.outer:
            _budget.left = None


def _too_much_work() -> SecurityError:
    return SecurityError(
        f"template does too much work (more than {MAX_WORK} loop iterations and calls)"
    )


def _spend() -> None:
    left = getattr(_budget, "left", None)
    if left is None:
        return
    if left <= 0:
        raise _too_much_work()
    _budget.left = left - 1


def _metered_iter(iterable: Iterable[Any]) -> Iterator[Any]:
    """What every ``{% for %}`` loops over: the items, each paid for from the budget."""
    budget = _budget
    for item in iterable:
        left = getattr(budget, "left", None)
        if left is not None:
            if left <= 0:
                raise _too_much_work()
            budget.left = left - 1
        yield item


def _size(v: Any) -> int:
    try:
        return len(v)
    except TypeError:
        return 1


# printf-style conversion specs: %[(key)][flags][width][.precision]
_PRINTF_SPEC = re.compile(r"%(?:\([^)]*\))?[-#0 +]*(\*|\d+)?(?:\.(\*|\d+))?")
_PADDING_METHODS = frozenset({"center", "ljust", "rjust", "zfill", "expandtabs"})


def _too_big(n: Any) -> bool:
    return isinstance(n, int) and not isinstance(n, bool) and abs(n) > MAX_OUTPUT


def _check_printf(fmt: str, args: Any) -> None:
    """Refuse ``'%1000000000d' % x``-style padding bombs before Python allocates them."""
    star = False
    for m in _PRINTF_SPEC.finditer(fmt):
        for g in m.groups():
            if g == "*":
                star = True
            elif g and int(g) > MAX_OUTPUT:
                raise SecurityError("format width too large")
    if star:
        vals = args if isinstance(args, (tuple, list)) else (args,)
        if any(_too_big(v) for v in vals):
            raise SecurityError("format width too large")


def _check_format_spec(fmt: str, args: Any, kwargs: Any) -> None:
    """The same for ``str.format``: literal or nested widths in the format spec."""
    try:
        fields = list(string.Formatter().parse(fmt))
    except ValueError:
        return  # str.format raises the same error itself
    for _lit, _name, spec, _conv in fields:
        if not spec:
            continue
        if any(int(d) > MAX_OUTPUT for d in re.findall(r"\d+", spec)):
            raise SecurityError("format width too large")
        if "{" in spec and any(_too_big(v) for v in (*args, *dict(kwargs).values())):
            raise SecurityError("format width too large")


def _check_replace(s: Any, old: Any, new: Any) -> None:
    if isinstance(s, str) and isinstance(old, str) and isinstance(new, str):
        n = s.count(old) if old else len(s) + 1
        if len(s) + n * (len(new) - len(old)) > MAX_OUTPUT:
            raise SecurityError("replace result too large")


def _guard_filter(name: str, check: Any) -> Any:
    from functools import wraps

    from jinja2.filters import FILTERS

    original = FILTERS[name]

    @wraps(original)
    def guarded(*args: Any, **kwargs: Any) -> Any:
        check(*args, **kwargs)
        return original(*args, **kwargs)

    return guarded


def _chk_center(value: Any, width: Any = 80, *_a: Any, **_k: Any) -> None:
    if _too_big(width):
        raise SecurityError("width too large")


def _chk_indent(s: Any, width: Any = 4, *_a: Any, **_k: Any) -> None:
    w = len(width) if isinstance(width, str) else width
    if isinstance(w, int) and w * (str(s).count("\n") + 1) > MAX_OUTPUT:
        raise SecurityError("indent result too large")


def _chk_format(value: Any, *args: Any, **kwargs: Any) -> None:
    _check_printf(str(value), kwargs or args)


def _chk_replace(_eval_ctx: Any, s: Any, old: Any, new: Any, *_a: Any, **_k: Any) -> None:
    _check_replace(str(s), str(old), str(new))


def _chk_counts(value: Any, n: Any = 0, *_a: Any, **_k: Any) -> None:
    if _too_big(n):
        raise SecurityError("argument too large")


def _chk_slice(_eval_ctx: Any, value: Any, slices: Any = 0, *_a: Any, **_k: Any) -> None:
    _chk_counts(value, slices)


class _Env(ImmutableSandboxedEnvironment):
    intercepted_binops = frozenset({"*", "**", "+", "%"})

    def _parse(self, source: str, name: str | None, filename: str | None) -> nodes.Template:
        tree = super()._parse(source, name, filename)
        for loop in tree.find_all(nodes.For):  # each loop iterates through _metered_iter
            loop.iter = nodes.Filter(
                loop.iter, "levqor_metered", [], [], None, None, lineno=loop.lineno
            )
        return tree

    def call(__self, __context: Any, __obj: Any, *args: Any, **kwargs: Any) -> Any:  # noqa: N805
        _spend()  # the sandbox routes every call here: macros (recursive ones too) included
        if isinstance(__obj, LoopContext) and args:  # loop(children) in a recursive loop
            args = (_metered_iter(args[0]), *args[1:])
        owner = getattr(__obj, "__self__", None)
        if isinstance(owner, str):
            name = getattr(__obj, "__name__", "")
            if name in _PADDING_METHODS and any(_too_big(a) for a in (*args, *kwargs.values())):
                raise SecurityError("width too large")
            if name == "replace" and len(args) >= 2:
                _check_replace(owner, args[0], args[1])
        return super().call(__context, __obj, *args, **kwargs)

    def wrap_str_format(self, value: Any) -> Any:
        wrapped = super().wrap_str_format(value)
        if wrapped is None:
            return None
        fmt = value.__self__
        is_map = value.__name__ == "format_map"

        def checked(*args: Any, **kwargs: Any) -> Any:
            if is_map and len(args) == 1 and isinstance(args[0], Mapping):
                _check_format_spec(fmt, (), args[0])
            else:
                _check_format_spec(fmt, args, kwargs)
            return wrapped(*args, **kwargs)

        return checked

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
        if operator_ == "%":
            if isinstance(left, str):
                _check_printf(left, right)
            return left % right
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
    # Filters whose size argument multiplies memory: check before they allocate.
    env.filters["center"] = _guard_filter("center", _chk_center)
    env.filters["indent"] = _guard_filter("indent", _chk_indent)
    env.filters["format"] = _guard_filter("format", _chk_format)
    env.filters["replace"] = _guard_filter("replace", _chk_replace)
    env.filters["batch"] = _guard_filter("batch", _chk_counts)
    env.filters["slice"] = _guard_filter("slice", _chk_slice)
    env.filters["levqor_metered"] = _metered_iter
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
    return set(_step_references(source))


@lru_cache(maxsize=4096)
def _step_references(source: str) -> frozenset[str]:
    tree = parse(source)
    refs: set[str] = set()
    for node in tree.find_all((nodes.Getattr, nodes.Getitem)):
        base = node.node
        if isinstance(base, nodes.Name) and base.name == "steps":
            if isinstance(node, nodes.Getattr):
                refs.add(node.attr)
            elif isinstance(node.arg, nodes.Const) and isinstance(node.arg.value, str):
                refs.add(node.arg.value)
    return frozenset(refs)


def root_names(source: str) -> set[str]:
    """Top-level variable names a template reads."""
    return set(_root_names(source))


@lru_cache(maxsize=4096)
def _root_names(source: str) -> frozenset[str]:
    from jinja2 import meta

    return frozenset(meta.find_undeclared_variables(parse(source)))


def render_string(source: str, scope: Mapping[str, Any]) -> Any:
    """Render one template string. Single-expression strings keep their native type."""
    try:
        m = _SINGLE.match(source)
        if m and "{%" not in source and "{#" not in source:
            with _Metered():
                value = _compile_expression(m.group("expr").strip())(**scope)
            if isinstance(value, str) and len(value) > MAX_OUTPUT:
                raise SecurityError("rendered value too large")
            if isinstance(value, Undefined):
                str(value)  # raises UndefinedError with the name of what is missing
            if callable(value):
                raise TemplateError("template refers to a method or function instead of a value") from None
            if value is not None and not isinstance(value, (str, int, float, bool, list, dict)):
                value = str(value)
            return value
        parts: list[str] = []
        size = 0
        with _Metered():
            for chunk in _compile_template(source).generate(**scope):
                size += len(chunk)
                if size > MAX_OUTPUT:
                    raise SecurityError("rendered value too large")
                parts.append(chunk)
        return "".join(parts)
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
    """Render every template string inside ``value`` (dicts and lists recursively), all of
    them on one work budget (MAX_WORK)."""
    with _Metered():
        return _render(value, scope)


def _render(value: Any, scope: Mapping[str, Any]) -> Any:
    if isinstance(value, str):
        return render_string(value, scope) if is_template(value) else value
    if isinstance(value, dict):
        return {k: _render(v, scope) for k, v in value.items()}
    if isinstance(value, list):
        return [_render(v, scope) for v in value]
    return value


def contains_template(value: Any) -> bool:
    if isinstance(value, str):
        return is_template(value)
    if isinstance(value, dict):
        return any(contains_template(v) for v in value.values())
    if isinstance(value, list):
        return any(contains_template(v) for v in value)
    return False
