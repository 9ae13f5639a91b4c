"""Step payload templating in Jinja2's immutable sandbox.

Only strings written in the pipeline document are templates. Trigger data and step outputs
are *data*: they are passed in as variables and never parsed as template source, so
nothing a webhook caller sends is ever evaluated.

A string that is exactly one expression (``"{{ trigger.amount }}"``) renders to the native
value (a number stays a number, a list a list); any other string renders to a string.

Bounds: every value a template builds, and the rendered payload as a whole, weighs at most
``max_bytes`` (:data:`MAX_VALUE_BYTES`, 1 MiB, unless the caller passes another limit), measured
as compact JSON by :func:`levqor_kernel.limits.measure` (so a list holding one long string a
thousand times weighs a thousand strings). The bound is enforced while rendering, before the
memory is taken: repetition (``*``), concatenation (``+``, ``~``), ``%`` and ``str.format``,
joins, padding, indentation, wrapping and serializing filters are measured from their operands
first; list, tuple and dict literals, filter and call results and every printed value are
measured as they are made; a sequence a filter produces lazily is measured item by item as it
is consumed. A refusal is a :class:`TemplateError` with ``code="too_large"`` naming the limit.
One :func:`render` of a step's payload also does at most MAX_WORK loop iterations plus calls
(nested loops and recursive macros cannot hold a worker's CPU); measuring large values counts
towards that work too.
"""

from __future__ import annotations

import operator
import re
import string
import threading
from collections.abc import Iterable, Iterator, Mapping
from functools import lru_cache, wraps
from typing import Any

from jinja2 import StrictUndefined, TemplateSyntaxError, Undefined, nodes
from jinja2.compiler import CodeGenerator, Frame
from jinja2.exceptions import SecurityError, UndefinedError
from jinja2.exceptions import TemplateError as JinjaTemplateError
from jinja2.filters import FILTERS
from jinja2.runtime import LoopContext, Macro
from jinja2.sandbox import ImmutableSandboxedEnvironment

from .errors import TemplateError
from .limits import DEFAULT_MAX_VALUE_BYTES, measure, text_bytes

#: the default bound of every rendered value, in bytes (callers pass ``max_bytes`` to change it)
MAX_VALUE_BYTES = DEFAULT_MAX_VALUE_BYTES
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
_budget.limit = None


class _Metered:
    """One work budget and one size limit for everything rendered inside (the outermost
    ``with`` sets them)."""

    __slots__ = ("limit", "outer")

    def __init__(self, limit: int | None = None) -> None:
        self.limit = limit

    def __enter__(self) -> None:
        self.outer = getattr(_budget, "left", None) is None
        if self.outer:
            _budget.left = MAX_WORK
            _budget.limit = self.limit or MAX_VALUE_BYTES

    def __exit__(self, *exc: object) -> None:
        if self.outer:
            _budget.left = None
            _budget.limit = None


def _limit() -> int:
    return getattr(_budget, "limit", None) or MAX_VALUE_BYTES


class _TooLarge(SecurityError):
    """A value would weigh more than the limit; ``what`` says which."""

    def __init__(self, what: str) -> None:
        self.what = what
        self.limit = _limit()
        super().__init__(f"{what} too large: over the limit of {self.limit} bytes")


def _size(v: Any, stop_after: int | None = None) -> int:
    """The size of ``v`` in bytes (see :func:`levqor_kernel.limits.measure`); the walk is paid
    for from the work budget."""
    if isinstance(v, str):
        return text_bytes(v)
    m = measure(v, _limit() if stop_after is None else stop_after)
    if m.visited > 64:
        _spend(m.visited // 64)
    return m.size


def _check_size(v: Any, what: str) -> Any:
    limit = getattr(_budget, "limit", None) or MAX_VALUE_BYTES
    if isinstance(v, str):
        if len(v) * 4 <= limit or text_bytes(v) <= limit:  # UTF-8: at most 4 bytes a character
            return v
        raise _TooLarge(what)
    if v is None or isinstance(v, (bool, int, float)) or _size(v) <= limit:
        return v
    raise _TooLarge(what)


def _counted(iterable: Iterable[Any], what: str, per_item: int = 0) -> Iterator[Any]:
    """The items of ``iterable``, refused once they (plus ``per_item`` each) weigh more than
    the limit in all: for sequences produced lazily and consumed by a join, a list, a sort."""
    limit = _limit()
    total = 0
    for item in iterable:
        total += _size(item, limit - total) + per_item
        if total > limit:
            raise _TooLarge(what)
        yield item


def _too_much_work() -> SecurityError:
    return SecurityError(
        f"template does too much work (more than {MAX_WORK} loop iterations and calls)"
    )


def _spend(n: int = 1) -> None:
    left = getattr(_budget, "left", None)
    if left is None:
        return
    if left <= 0:
        raise _too_much_work()
    _budget.left = left - n


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


# printf-style conversion specs: %[(key)][flags][width][.precision]
_PRINTF_SPEC = re.compile(r"%(?:\([^)]*\))?[-#0 +]*(\*|\d+)?(?:\.(\*|\d+))?")
_PADDING_METHODS = frozenset({"center", "ljust", "rjust", "zfill", "expandtabs"})


def _too_big(n: Any) -> bool:
    return isinstance(n, int) and not isinstance(n, bool) and abs(n) > _limit()


def _check_printf(fmt: str, args: Any) -> None:
    """Refuse ``'%1000000000d' % x``-style padding bombs and ``'%(a)s' * n % {'a': big}``
    before Python allocates them."""
    star = False
    specs = 0
    for m in _PRINTF_SPEC.finditer(fmt):
        if m.group(0) != "%":
            specs += 1
        for g in m.groups():
            if g == "*":
                star = True
            elif g and int(g) > _limit():
                raise SecurityError("format width too large")
    if star:
        vals = args if isinstance(args, (tuple, list)) else (args,)
        if any(_too_big(v) for v in vals):
            raise SecurityError("format width too large")
    # a mapping can be printed once per spec; positional arguments once each
    times = specs if isinstance(args, Mapping) else 1
    if text_bytes(fmt) + times * _size(args) > _limit():
        raise _TooLarge("formatted string")


def _check_format_spec(fmt: str, args: Any, kwargs: Any) -> None:
    """The same for ``str.format``: literal or nested widths in the format spec, and each field
    counted as the largest argument it could print."""
    try:
        fields = list(string.Formatter().parse(fmt))
    except ValueError:
        return  # str.format raises the same error itself
    values = (*args, *dict(kwargs).values())
    named = 0
    for _lit, name, spec, _conv in fields:
        if name is not None:
            named += 1
        if not spec:
            continue
        if any(int(d) > _limit() for d in re.findall(r"\d+", spec)):
            raise SecurityError("format width too large")
        if "{" in spec and any(_too_big(v) for v in values):
            raise SecurityError("format width too large")
    if named and values:
        widest = max(_size(v) for v in values)
        if text_bytes(fmt) + named * widest > _limit():
            raise _TooLarge("formatted string")


def _check_replace(s: Any, old: Any, new: Any) -> None:
    if (isinstance(s, str) and isinstance(old, str) and isinstance(new, str)) or (
        isinstance(s, bytes) and isinstance(old, bytes) and isinstance(new, bytes)
    ):
        n = s.count(old) if old else len(s) + 1
        if len(s) + n * (len(new) - len(old)) > _limit():
            raise _TooLarge("replace result")


def _guard_filter(name: str, check: Any = None) -> Any:
    """The built-in filter ``name``: ``check`` sees its arguments first; a result is measured
    (a lazy one item by item as it is consumed)."""
    original = FILTERS[name]
    what = f"result of the {name} filter"

    @wraps(original)
    def guarded(*args: Any, **kwargs: Any) -> Any:
        if check is not None:
            check(*args, **kwargs)
        result = original(*args, **kwargs)
        if isinstance(result, Iterator):
            return _counted(result, what)
        return _check_size(result, what)

    return guarded


def _chk_center(value: Any, width: Any = 80, *_a: Any, **_k: Any) -> None:
    if _too_big(width):
        raise _TooLarge("center width")


def _chk_indent(s: Any, width: Any = 4, *_a: Any, **_k: Any) -> None:
    w = len(width) if isinstance(width, str) else width
    text = str(s)
    if isinstance(w, int) and text_bytes(text) + w * (text.count("\n") + 1) > _limit():
        raise _TooLarge("indent result")


def _chk_wordwrap(
    _env: Any, s: Any, width: Any = 79, break_long_words: Any = True, wrapstring: Any = None,
    *_a: Any, **_k: Any,
) -> None:
    # a greedy wrap's two neighbouring lines hold more than ``width`` characters together
    text = str(s)
    wrap = "\n" if wrapstring is None else str(wrapstring)
    lines = 2 * len(text) // max(int(width) if isinstance(width, int) else 1, 1) + 2
    if text_bytes(text) + lines * text_bytes(wrap) > _limit():
        raise _TooLarge("wordwrap result")


def _chk_format(value: Any, *args: Any, **kwargs: Any) -> None:
    _check_printf(str(value), kwargs or args)


def _chk_replace(_eval_ctx: Any, s: Any, old: Any, new: Any, *_a: Any, **_k: Any) -> None:
    _check_replace(str(s), str(old), str(new))


def _chk_counts(value: Any, n: Any = 0, *_a: Any, **_k: Any) -> None:
    if _too_big(n):
        raise SecurityError("argument too large")


def _chk_slice(_eval_ctx: Any, value: Any, slices: Any = 0, *_a: Any, **_k: Any) -> None:
    _chk_counts(value, slices)


def _check_serialized(value: Any, indent: Any, what: str) -> None:
    """Serializing ``value`` with ``indent`` per level of nesting stays within the limit."""
    m = measure(value, _limit())
    if m.visited > 64:
        _spend(m.visited // 64)
    step = len(indent) if isinstance(indent, str) else indent if isinstance(indent, int) else 0
    # every value may start a line indented by its depth
    if m.size + m.visited * (1 + max(step, 0) * m.depth) > _limit():
        raise _TooLarge(what)


def _chk_tojson(_eval_ctx: Any, value: Any, indent: Any = None, *_a: Any, **_k: Any) -> None:
    _check_serialized(value, indent, "tojson result")


def _chk_pprint(value: Any, *_a: Any, **_k: Any) -> None:
    _check_serialized(value, 1, "pprint result")


def _chk_string(value: Any, *_a: Any, **_k: Any) -> None:
    _check_size(value, "string result")


def _join(eval_ctx: Any, value: Any, d: str = "", attribute: Any = None) -> Any:
    """``join``, its items and separators counted as the join consumes them."""
    sep = text_bytes(str(d))
    return FILTERS["join"](eval_ctx, _counted(value, "join result", sep), d, attribute)


def _sum(environment: Any, iterable: Any, attribute: Any = None, start: Any = 0) -> Any:
    """``sum``; lists are concatenated in one pass (``sum`` of lists copies quadratically)."""
    if isinstance(start, list):
        items = list(_counted(iterable, "sum result"))
        if attribute is None and all(isinstance(x, list) for x in items):
            out = list(start)
            for x in items:
                out.extend(x)
            return _check_size(out, "sum result")
        iterable = items
    return _check_size(FILTERS["sum"](environment, iterable, attribute, start), "sum result")


# the filters whose arguments can multiply sizes: checked before they allocate
_FILTER_CHECKS: dict[str, Any] = {
    "center": _chk_center,
    "indent": _chk_indent,
    "wordwrap": _chk_wordwrap,
    "format": _chk_format,
    "replace": _chk_replace,
    "batch": _chk_counts,
    "slice": _chk_slice,
    "tojson": _chk_tojson,
    "pprint": _chk_pprint,
    "string": _chk_string,
}


def _concat(values: tuple[Any, ...]) -> str:
    """``a ~ b ~ c``: measured before it is joined."""
    limit = _limit()
    total = 0
    for v in values:
        total += _size(v, limit - total)
        if total > limit:
            raise _TooLarge("concatenation (~) result")
    return "".join(map(str, values))


def _concat_buffer(parts: Iterable[str]) -> str:
    """The output of a block, macro or ``{% set %}`` capture, joined only within the limit."""
    limit = getattr(_budget, "limit", None) or MAX_VALUE_BYTES
    if type(parts) is list and sum(map(len, parts)) * 4 <= limit:
        return "".join(parts)
    out: list[str] = []
    total = 0
    for p in parts:
        total += text_bytes(p)
        if total > limit:
            raise _TooLarge("rendered block")
        out.append(p)
    return "".join(out)


def _finalize(value: Any) -> Any:
    """Every ``{{ value }}`` printed into text: measured before it becomes a string."""
    return _check_size(value, "printed value")


class _CodeGenerator(CodeGenerator):
    """Compiles ``~`` and list, tuple and dict literals to measured forms."""

    def visit_Concat(self, node: nodes.Concat, frame: Frame) -> None:
        self.write("environment.levqor_concat((")
        for arg in node.nodes:
            self.visit(arg, frame)
            self.write(", ")
        self.write("))")

    def _sized(self, visit: Any, node: nodes.Expr, frame: Frame) -> None:
        self.write("environment.levqor_sized(")
        visit(node, frame)
        self.write(")")

    def visit_List(self, node: nodes.List, frame: Frame) -> None:
        self._sized(super().visit_List, node, frame)

    def visit_Dict(self, node: nodes.Dict, frame: Frame) -> None:
        self._sized(super().visit_Dict, node, frame)

    def visit_Tuple(self, node: nodes.Tuple, frame: Frame) -> None:
        if node.ctx == "store":  # an assignment target: {% for a, b in ... %}
            super().visit_Tuple(node, frame)
        else:
            self._sized(super().visit_Tuple, node, frame)


class _Env(ImmutableSandboxedEnvironment):
    intercepted_binops = frozenset({"*", "**", "+", "%"})
    code_generator_class = _CodeGenerator
    concat = staticmethod(_concat_buffer)

    @staticmethod
    def levqor_concat(values: tuple[Any, ...]) -> str:
        return _concat(values)

    @staticmethod
    def levqor_sized(value: Any) -> Any:
        return _check_size(value, type(value).__name__)

    def getattr(self, obj: Any, attribute: str) -> Any:
        """``a.b`` on a JSON object reads its key ``b`` first: ``trigger.items`` is the field
        named items, not the dict method (JSON data has no attributes of its own)."""
        if isinstance(obj, dict) and isinstance(attribute, str) and attribute in obj:
            return obj[attribute]
        return super().getattr(obj, attribute)

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
        if isinstance(owner, (str, bytes)):
            name = getattr(__obj, "__name__", "")
            if name in _PADDING_METHODS and any(_too_big(a) for a in (*args, *kwargs.values())):
                raise _TooLarge(f"{name} width")
            if name == "replace" and len(args) >= 2:
                _check_replace(owner, args[0], args[1])
            if name == "join" and len(args) == 1:
                args = (_counted(args[0], "join result", len(owner)),)
            if name == "translate" and args and isinstance(args[0], Mapping):
                widest = max((_size(v) for v in args[0].values()), default=1)
                if len(owner) * max(widest, 1) > _limit():
                    raise _TooLarge("translate result")
        result = super().call(__context, __obj, *args, **kwargs)
        if isinstance(__obj, Macro):  # its output was measured as it was joined
            return result
        if isinstance(result, Iterator):
            return _counted(result, "result of a call")
        return _check_size(result, "result of a call")

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
                if isinstance(seq, (str, bytes, list, tuple)) and isinstance(n, int) and n > 0:
                    one = _size(seq, _limit() // n + 2)
                    if isinstance(seq, (list, tuple)) and seq:  # n copies in one pair of brackets
                        one -= 1
                    if one * n > _limit():
                        raise _TooLarge("repetition (*) result")
            result = left * right
            if isinstance(result, int) and result.bit_length() > 4096:
                raise SecurityError("number too large")
            return result
        if operator_ == "%":
            if isinstance(left, str):
                _check_printf(left, right)
            return left % right
        if operator_ == "+":
            if isinstance(left, (str, bytes, list, tuple)) and isinstance(
                right, (str, bytes, list, tuple)
            ):
                if _size(left) + _size(right) > _limit():
                    raise _TooLarge("concatenation (+) result")
            return operator.add(left, right)
        return super().call_binop(context, operator_, left, right)


def _make_env() -> _Env:
    env = _Env(
        undefined=StrictUndefined, autoescape=False, trim_blocks=False, finalize=_finalize
    )
    # No helper globals: cycler, joiner, lipsum and namespace are classic escape gadgets.
    env.globals.clear()
    env.globals["range"] = _safe_range
    # Every built-in filter's result is measured; those whose arguments multiply sizes are
    # checked before they allocate.
    for name in list(env.filters):
        env.filters[name] = _guard_filter(name, _FILTER_CHECKS.get(name))
    env.filters["join"] = wraps(FILTERS["join"])(_join)
    env.filters["sum"] = wraps(FILTERS["sum"])(_sum)
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


def render_string(source: str, scope: Mapping[str, Any], *, max_bytes: int | None = None) -> Any:
    """Render one template string. Single-expression strings keep their native type.

    The value, and everything built on the way to it, weighs at most ``max_bytes`` (default
    :data:`MAX_VALUE_BYTES`; inside :func:`render`, the limit given to it)."""
    try:
        m = _SINGLE.match(source)
        if m and "{%" not in source and "{#" not in source:
            with _Metered(max_bytes):
                value = _compile_expression(m.group("expr").strip())(**scope)
                if isinstance(value, Undefined):
                    str(value)  # raises UndefinedError with the name of what is missing
                if callable(value):
                    raise TemplateError(
                        "template refers to a method or function instead of a value"
                    ) from None
                _check_size(value, "rendered value")
                if value is not None and not isinstance(value, (str, int, float, bool, list, dict)):
                    value = str(value)
            return value
        parts: list[str] = []
        size = 0
        with _Metered(max_bytes):
            limit = _limit()
            for chunk in _compile_template(source).generate(**scope):
                size += text_bytes(chunk)
                if size > limit:
                    raise _TooLarge("rendered value")
                parts.append(chunk)
        return "".join(parts)
    except _TooLarge as e:
        raise _too_large_error(e) from None
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


def _too_large_error(e: _TooLarge) -> TemplateError:
    return TemplateError(
        f"template result too large: {e.what} over the limit of {e.limit} bytes",
        code="too_large",
    )


def render(value: Any, scope: Mapping[str, Any], *, max_bytes: int | None = None) -> Any:
    """Render every template string inside ``value`` (dicts and lists recursively), all of
    them on one work budget (MAX_WORK) and within one size limit: ``max_bytes`` (default
    :data:`MAX_VALUE_BYTES`) bounds each value built and the rendered whole."""
    with _Metered(max_bytes):
        out = _render(value, scope)
        try:
            return _check_size(out, "rendered payload")
        except _TooLarge as e:
            raise _too_large_error(e) from None


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
