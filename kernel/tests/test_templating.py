"""Payload templating: native values, data never evaluated, sandbox escapes refused."""

from __future__ import annotations

import time

import pytest
from levqor_kernel.errors import TemplateError
from levqor_kernel.templating import (
    MAX_VALUE_BYTES,
    contains_template,
    is_template,
    parse,
    render,
    render_string,
    root_names,
    step_references,
)


@pytest.fixture
def scope():
    return {
        "trigger": {
            "amount": 42,
            "price": 9.5,
            "name": "Ada",
            "tags": ["a", "b"],
            "customer": {"email": "ada@example.com", "vip": True},
            "nothing": None,
        },
        "steps": {"fetch": {"status": 200, "items": [{"id": 1}, {"id": 2}]}},
        "run": {"id": "run-1"},
    }


# --------------------------------------------------------------------- native values


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("{{ trigger.amount }}", 42),
        ("  {{ trigger.amount }}  ", 42),
        ("{{trigger.price}}", 9.5),
        ("{{ trigger.customer.vip }}", True),
        ("{{ trigger.tags }}", ["a", "b"]),
        ("{{ trigger.customer }}", {"email": "ada@example.com", "vip": True}),
        ("{{ trigger.nothing }}", None),
        ("{{ trigger.amount * 2 }}", 84),
        ("{{ steps.fetch['items'][1].id }}", 2),
        ("{{ steps['fetch'].status }}", 200),
        ("{{ trigger.name }}", "Ada"),
        ("{{ trigger.tags | length }}", 2),
    ],
)
def test_single_expression_keeps_native_type(scope, source, expected):
    value = render_string(source, scope)
    assert value == expected
    assert type(value) is type(expected)


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("Amount: {{ trigger.amount }}", "Amount: 42"),
        ("{{ trigger.amount }}{{ trigger.amount }}", "4242"),
        ("{{ trigger.name }} <{{ trigger.customer.email }}>", "Ada <ada@example.com>"),
        ("{% if trigger.customer.vip %}VIP{% else %}-{% endif %}", "VIP"),
        ("{{ trigger.amount }}{# note #}", "42"),
        ("{% for t in trigger.tags %}{{ t }},{% endfor %}", "a,b,"),
        ("run {{ run.id }}", "run run-1"),
    ],
)
def test_mixed_strings_render_to_strings(scope, source, expected):
    assert render_string(source, scope) == expected


def test_render_walks_nested_dicts_and_lists(scope):
    payload = {
        "to": "{{ trigger.customer.email }}",
        "count": "{{ trigger.amount }}",
        "literal": "no template here",
        "number": 7,
        "flag": False,
        "nested": {
            "list": ["{{ trigger.tags[0] }}", 3, {"deep": "x{{ trigger.amount + 1 }}y"}],
            "none": None,
        },
    }
    out = render(payload, scope)
    assert out == {
        "to": "ada@example.com",
        "count": 42,
        "literal": "no template here",
        "number": 7,
        "flag": False,
        "nested": {"list": ["a", 3, {"deep": "x43y"}], "none": None},
    }
    # the input is not modified
    assert payload["to"] == "{{ trigger.customer.email }}"


def test_is_template_and_contains_template():
    assert (
        is_template("{{ x }}") and is_template("{% if 1 %}{% endif %}") and is_template("{# c #}")
    )
    assert not is_template("plain") and not is_template(5) and not is_template(None)
    assert contains_template({"a": [1, {"b": "{{ trigger.x }}"}]})
    assert not contains_template({"a": [1, {"b": "plain"}], "c": 3})


# --------------------------------------------------------------------- data is data


@pytest.mark.parametrize(
    "evil",
    [
        "{{ 7*7 }}",
        "{% for x in range(3) %}boom{% endfor %}",
        "{{ ''.__class__.__mro__[1].__subclasses__() }}",
        "{{ cycler.__init__.__globals__.os.popen('id').read() }}",
        "{# comment #}",
    ],
)
def test_trigger_data_is_never_evaluated(evil):
    scope = {"trigger": {"text": evil, "nested": {"list": [evil]}}, "steps": {}, "run": {}}
    assert render_string("{{ trigger.text }}", scope) == evil
    assert render_string("Got: {{ trigger.text }}!", scope) == f"Got: {evil}!"
    assert render_string("{{ trigger.nested.list[0] }}", scope) == evil
    assert render({"a": ["{{ trigger.text }}"]}, scope) == {"a": [evil]}
    # step outputs are data too
    scope2 = {"trigger": {}, "steps": {"s": {"out": evil}}, "run": {}}
    assert render_string("<{{ steps.s.out }}>", scope2) == f"<{evil}>"


def test_trigger_value_7x7_comes_out_verbatim():
    scope = {"trigger": {"v": "{{ 7*7 }}"}}
    assert render_string("{{ trigger.v }}", scope) == "{{ 7*7 }}"
    assert render_string("value={{ trigger.v }};", scope) == "value={{ 7*7 }};"
    assert "49" not in render_string("a {{ trigger.v }} b", scope)


# --------------------------------------------------------------------- StrictUndefined


@pytest.mark.parametrize(
    ("source", "needle"),
    [
        ("{{ trigger.missing }}", "missing"),
        ("Hi {{ trigger.missing }}", "missing"),
        ("{{ trigger.customer.phone }}", "phone"),
        ("{{ steps.nope.value }}", "nope"),
        ("{{ unknown_root }}", "unknown_root"),
        ("{{ trigger.missing | upper }}", "missing"),
    ],
)
def test_missing_fields_raise_a_clear_template_error(scope, source, needle):
    with pytest.raises(TemplateError) as ei:
        render_string(source, scope)
    msg = str(ei.value)
    assert "does not exist" in msg
    assert needle in msg
    assert ei.value.retryable is False


def test_syntax_error_at_render_is_a_template_error(scope):
    with pytest.raises(TemplateError, match="syntax"):
        render_string("{{ trigger.amount ", scope)
    with pytest.raises(TemplateError, match="syntax"):
        render_string("x {% if %} y", scope)


# --------------------------------------------------------------------- sandbox escapes

ESCAPES = [
    "''.__class__.__mro__",
    "''.__class__.__mro__[1].__subclasses__()",
    "cycler.__init__.__globals__",
    "joiner.__init__.__globals__",
    "lipsum.__globals__",
    "namespace.__init__.__globals__",
    "self.__init__.__globals__",
    "self._TemplateReference__context",
    "config.items()",
    "request.application",
    "().__class__.__bases__[0].__subclasses__()",
    "trigger.__class__",
    "trigger|attr('__globals__')",
    "range|attr('__globals__')",
    "range.__globals__",
    "trigger|attr('__class__')|attr('__mro__')",
    "range(10**9)|list",
    "range(10**9)",
    "'a' * 10**9",
    "10**9 * 'a'",
    "[1] * 10**9",
    "('a' * 1000) * 1000 * 1000",
    "10**(10**10)",
    "(2**64)**64",
    "2**4096 * 2**4096",
    '"{0.__class__}".format(trigger)',
    '"{0.__class__.__mro__}".format(trigger)',
    '"{0[__class__]}".format_map(trigger)',
    "'%s' % trigger.__class__",
    "'%s'|format(trigger.__class__)",
    "'%1000000000d' % 1",
    "'%*d' % (10**9, 1)",
    "'%1000000000d'|format(1)",
    "'{0:>1000000000}'.format(1)",
    "'{0:>{1}}'.format(1, 10**9)",
    "'a'|center(10**9)",
    "'a'.center(10**9)",
    "'a'.zfill(10**9)",
    "'a\\nb'|indent(10**9)",
    "('a' * 1000)|replace('a', 'a' * 10000)",
    "('a' * 1000).replace('a', 'a' * 10000)",
    "[1]|batch(10**9, 0)|list",
    "[1]|slice(10**9)|list",
    "trigger.items.__self__",
    "trigger.items.__self__.__class__",
    "trigger.update({'x': 1})",
    "trigger.tags.append(1)",
    "trigger.__init__",
    "trigger.tags.pop()",
]


@pytest.mark.parametrize("expr", ESCAPES)
@pytest.mark.parametrize("shape", ["{{ %s }}", "pre {{ %s }} post"])
def test_sandbox_escapes_fail_with_template_error(expr, shape):
    tags = ["a"]
    trigger = {"x": 1, "tags": tags}
    scope = {"trigger": trigger, "steps": {}, "run": {}}
    t0 = time.monotonic()
    with pytest.raises(TemplateError) as ei:
        render_string(shape % expr, scope)
    assert time.monotonic() - t0 < 2, "refused only after doing the expensive work"
    assert ei.value.retryable is False
    # nothing was modified
    assert trigger == {"x": 1, "tags": ["a"]} and tags == ["a"]


def test_sandbox_message_names_the_refusal():
    with pytest.raises(TemplateError, match="sandbox"):
        render_string("{{ ''.__class__ }}", {})
    with pytest.raises(TemplateError, match="too large"):
        render_string("{{ 'a' * 10**9 }}", {})


def test_power_is_left_associative_and_bounded():
    # Jinja parses a**b**c as (a**b)**c, so 10**10**10 is 10**100: small and harmless.
    assert render_string("{{ 10**10**10 }}", {}) == 10**100
    # the Python-semantics reading, 10**(10**10), is refused without computing it
    with pytest.raises(TemplateError):
        render_string("{{ 10**(10**10) }}", {})
    with pytest.raises(TemplateError):
        render_string("{{ 2**64**64 }}", {})


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("{{ 'Order %d' % 1234567890 }}", "Order 1234567890"),
        ("{{ '%.2f|%05d' % (1.5, 3) }}", "1.50|00003"),
        ("{{ '%s-%d'|format('a', 3) }}", "a-3"),
        ("{{ 'id {} {:>3}'.format(1234567890, 'x') }}", "id 1234567890   x"),
        ("{{ 'a'|center(5) }}", "  a  "),
        ("{{ 'aXb'.replace('X', '-') }}", "a-b"),
        ("{{ 'aXb'|replace('X', '--') }}", "a--b"),
        ("{{ [1, 2, 3]|batch(2)|list }}", [[1, 2], [3]]),
        ("{{ [1, 2, 3]|slice(2)|list }}", [[1, 2], [3]]),
        ("{{ 'a\nb'|indent(2) }}", "a\n  b"),
        ("{{ range(3)|list }}", [0, 1, 2]),
        ("{{ 'ab' * 3 }}", "ababab"),
        ("{{ 2**10 }}", 1024),
        ("{{ 7 % 3 }}", 1),
        ("{{ 'a' + 'b' }}", "ab"),
    ],
)
def test_harmless_uses_of_guarded_operations_still_work(source, expected):
    assert render_string(source, {}) == expected


@pytest.mark.parametrize("expr", ESCAPES)
def test_escape_payload_in_trigger_data_comes_out_as_plain_text(expr):
    payloads = ["{{ " + expr + " }}", "{% set x = " + expr + " %}{{ x }}", expr]
    for text in payloads:
        scope = {"trigger": {"text": text}, "steps": {}, "run": {}}
        assert render_string("{{ trigger.text }}", scope) == text
        assert render_string("Message: {{ trigger.text }}", scope) == f"Message: {text}"
        assert render({"body": "{{ trigger.text }}"}, scope) == {"body": text}


def test_huge_trigger_value_is_refused_not_truncated():
    scope = {"trigger": {"big": "a" * (MAX_VALUE_BYTES + 1)}}
    with pytest.raises(TemplateError, match="too large"):
        render_string("{{ trigger.big }}", scope)
    with pytest.raises(TemplateError, match="too large"):
        render_string("x{{ trigger.big }}", scope)


def test_non_json_values_are_stringified(scope):
    out = render_string("{{ range(2) }}", scope)
    assert isinstance(out, str) and out == "range(0, 2)"


# --------------------------------------------------------------------- static analysis


def test_parse_accepts_good_and_rejects_bad_syntax():
    assert parse("Hello {{ trigger.name }}") is not None
    for bad in ("{{ trigger.name ", "{% for %}", "{{ }}", "{% if x %}no end"):
        with pytest.raises(TemplateError, match="syntax error"):
            parse(bad)


@pytest.mark.parametrize(
    ("source", "refs"),
    [
        ("{{ steps.fetch.status }}", {"fetch"}),
        ("{{ steps['fetch'].status }}", {"fetch"}),
        ("{{ steps.a.x }} and {{ steps['b'].y }}", {"a", "b"}),
        ("{% if steps.c.ok %}{{ steps.d }}{% endif %}", {"c", "d"}),
        ("{{ trigger.steps.fake }}", set()),
        ("{{ trigger.amount }}", set()),
        ("plain", set()),
    ],
)
def test_step_references(source, refs):
    assert step_references(source) == refs


@pytest.mark.parametrize(
    ("source", "roots"),
    [
        ("{{ trigger.a }} {{ steps.b.c }} {{ run.id }}", {"trigger", "steps", "run"}),
        ("{{ os.system }}", {"os"}),
        ("{% for t in trigger.tags %}{{ t }}{% endfor %}", {"trigger"}),
        ("{% set x = 1 %}{{ x }}", set()),
        ("{{ range(3)|list }}", set()),  # a global, not a variable
        ("no template", set()),
    ],
)
def test_root_names(source, roots):
    assert root_names(source) == roots


def test_static_helpers_raise_template_error_on_bad_syntax():
    with pytest.raises(TemplateError):
        step_references("{{ steps.a ")
    with pytest.raises(TemplateError):
        root_names("{% for %}")


def test_a_method_reference_is_an_error_not_a_memory_address(scope):
    with pytest.raises(TemplateError, match="method or function"):
        render_string("{{ trigger.keys }}", scope)


# --------------------------------------------------------------------- work and output bounds

CPU_BOMBS = [
    # nested loops with no output: 10^12 iterations
    "{% for a in range(10000) %}{% for b in range(10000) %}{% for c in range(10000) %}"
    "{% endfor %}{% endfor %}{% endfor %}",
    # the same over trigger data (within any body limit)
    "{% for a in trigger.rows %}{% for b in trigger.rows %}{% for c in trigger.rows %}"
    "{% endfor %}{% endfor %}{% endfor %}",
    # a macro calling itself twice per level: 2^40 calls
    "{% macro f(n) %}{% if n %}{{ f(n - 1) }}{{ f(n - 1) }}{% endif %}{% endmacro %}{{ f(40) }}",
    # a recursive loop over all of its data at each of three levels: 5000^3 items
    "{% for x in trigger.rows recursive %}{% if loop.depth < 3 %}{{ loop(trigger.rows) }}"
    "{% endif %}{% endfor %}",
]


@pytest.mark.parametrize("source", CPU_BOMBS)
def test_templates_that_would_hold_a_cpu_are_stopped(source):
    # stopped by the counted work budget (deterministic), long before the work is done: no
    # clock is asked, so a busy machine cannot make it flaky
    scope = {"trigger": {"rows": list(range(5000))}, "steps": {}, "run": {}}
    with pytest.raises(TemplateError, match="too much work") as ei:
        render_string(source, scope)
    assert ei.value.retryable is False


def test_nested_loops_cannot_fill_memory_before_the_size_check():
    source = "{% for a in range(10000) %}{% for b in range(10000) %}" + "x" * 100 + "{% endfor %}{% endfor %}"
    with pytest.raises(TemplateError, match="too large"):
        render_string(source, {})


def test_one_payload_shares_one_work_budget():
    from levqor_kernel.templating import MAX_WORK

    scope = {"trigger": {"rows": list(range(MAX_WORK // 4))}}
    loop = "{% for x in trigger.rows %}{% endfor %}done"
    # each string alone is within the budget ...
    assert render({"a": loop, "b": loop}, scope) == {"a": "done", "b": "done"}
    # ... but a payload of eight of them is not
    with pytest.raises(TemplateError, match="too much work"):
        render({"items": [loop] * 8}, scope)
    # and the budget is fresh for the next payload
    assert render({"a": loop}, scope) == {"a": "done"}


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("{% for x in trigger.rows %}{{ x }},{% endfor %}", ",".join(map(str, range(5000))) + ","),
        (
            "{% for x in trigger.rows if x > 4997 %}{{ loop.index }}/{{ loop.length }} {% endfor %}",
            "1/2 2/2 ",
        ),
        ("{% for x in [] %}{{ x }}{% else %}none{% endfor %}", "none"),
        ("{% for k, v in {'a': 1}|dictsort %}{{ k }}={{ v }}{% endfor %}", "a=1"),
        (
            "{% for n in trigger.tree recursive %}{{ n.name }}({{ loop(n.kids) }}){% endfor %}",
            "a(b()c())",
        ),
    ],
)
def test_ordinary_loops_still_work(source, expected):
    scope = {
        "trigger": {
            "rows": list(range(5000)),
            "tree": [{"name": "a", "kids": [{"name": "b", "kids": []}, {"name": "c", "kids": []}]}],
        }
    }
    assert render_string(source, scope) == expected


# --------------------------------------------------------------------- the byte limit

# BIG is within the limit on its own, HALF a little over half of it: every poison builds on them
SIZES = {"BIG": "('a' * 999999)", "HALF": "('a' * 600000)"}

POISONS = {
    "list*int (the report)": "[BIG] * 1000",
    "int*list": "1000 * [BIG]",
    "string*int": "BIG * 2",
    "int*string": "2 * BIG",
    "list+list": "[BIG] + [BIG]",
    "string+string": "BIG + BIG",
    "tilde": "BIG ~ BIG",
    "tilde of a list": "[HALF, 1] ~ [HALF]",
    "join filter": "range(1000)|join('x' * 10000)",
    "join of a lazy map": "range(10000)|map('center', 1000)|join",
    "join method": "('x' * 10000).join(range(1000)|map('string'))",
    "lazy map to a list": "range(10000)|map('center', 1000)|list",
    "nested repetition": "[[['a' * 100000] * 10] * 10] * 10",
    "nested literal": "[[HALF], [HALF]]",
    "dict literal": "{'a': BIG, 'b': BIG}",
    "tuple literal": "(BIG, BIG)",
    "printf": "'%s%s' % (BIG, BIG)",
    "printf mapping": "('%(a)s' * 100) % {'a': 'a' * 20000}",
    "str.format": "'{0}{0}'.format(BIG)",
    "format filter": "'%s%s'|format(BIG, BIG)",
    "center filter": "'a'|center(2000000)",
    "indent filter": "('a\\n' * 200000)|indent(10)",
    "wordwrap filter": "('a ' * 200000)|wordwrap(1, wrapstring='x' * 1000)",
    "tojson with a wide indent": "([[1]] * 1000)|tojson(indent=1000)",
    "string of a long list": "[HALF]|string ~ [HALF]|string",
    "dict.fromkeys": "{}.fromkeys(range(10000), 'a' * 1000)",
    "bytes padding": "'a'.encode().center(10**9)",
    "translate": "('a' * 100000).translate({97: 'b' * 100})",
}

STATEMENT_POISONS = {
    "doubling by set": "{% set a = [HALF] %}{% set b = a + a %}{% set c = b + b %}{{ c|length }}",
    "set block": "{% set x %}{% for i in range(100) %}{{ 'a' * 100000 }}{% endfor %}{% endset %}"
    "{{ x|length }}",
    "macro": "{% macro m() %}{% for i in range(100) %}{{ 'a' * 100000 }}{% endfor %}{% endmacro %}"
    "{{ m()|length }}",
    "printed list": "x{{ [HALF] * 1 + [HALF] }}",
}


def _sized(source: str) -> str:
    for name, expr in SIZES.items():
        source = source.replace(name, expr)
    return source


def _refused_within_the_limit(source: str) -> TemplateError:
    import tracemalloc

    tracemalloc.start()
    try:
        with pytest.raises(TemplateError) as ei:
            render_string(_sized(source), {"trigger": {}, "steps": {}, "run": {}})
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    # refused before the memory was taken: a few values of the limit's size at most
    assert peak < 12 * MAX_VALUE_BYTES, f"{peak} bytes taken before the refusal"
    return ei.value


@pytest.mark.parametrize("expr", POISONS.values(), ids=list(POISONS))
def test_each_operation_that_grows_a_value_is_bounded_while_rendering(expr):
    for shape in ("{{ %s }}", "pre {{ %s }} post"):
        err = _refused_within_the_limit(shape % expr)
        assert err.code == "too_large", err.message
        assert f"limit of {MAX_VALUE_BYTES} bytes" in err.message
        assert err.retryable is False


@pytest.mark.parametrize("source", STATEMENT_POISONS.values(), ids=list(STATEMENT_POISONS))
def test_statements_that_grow_a_value_are_bounded_while_rendering(source):
    err = _refused_within_the_limit(source)
    assert err.code == "too_large", err.message


def test_the_limit_is_the_callers_and_covers_the_whole_payload():
    scope = {"trigger": {"s": "a" * 600}, "steps": {}, "run": {}}
    assert render_string("{{ trigger.s * 1 }}", scope, max_bytes=1000) == "a" * 600
    with pytest.raises(TemplateError, match="limit of 1000 bytes") as ei:
        render_string("{{ trigger.s * 2 }}", scope, max_bytes=1000)
    assert ei.value.code == "too_large"
    # each value fits, the payload they make does not
    assert render({"a": "{{ trigger.s }}"}, scope, max_bytes=1000) == {"a": "a" * 600}
    with pytest.raises(TemplateError, match="rendered payload over the limit") as ei:
        render({"a": "{{ trigger.s }}", "b": "{{ trigger.s }}"}, scope, max_bytes=1000)
    assert ei.value.code == "too_large"
    # the default is 1 MiB
    assert MAX_VALUE_BYTES == 1024 * 1024


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("{{ ['ab'] * 3 }}", ["ab", "ab", "ab"]),
        ("{{ 3 * [1] }}", [1, 1, 1]),
        ("{{ [1] + [2] }}", [1, 2]),
        ("{{ 'a' ~ 1 ~ [2] }}", "a1[2]"),
        ("{{ range(3)|join(', ') }}", "0, 1, 2"),
        ("{{ ', '.join(['a', 'b']) }}", "a, b"),
        ("{{ [[1], [2, 3]]|sum(start=[]) }}", [1, 2, 3]),
        ("{{ ([[1]] * 200000)|sum(start=[])|length }}", 200000),
        ("{{ [1, 2]|map('string')|list }}", ["1", "2"]),
        ("{{ {'a': [1, 2]}|tojson }}", '{"a": [1, 2]}'),
        ("{{ 'a b c'|wordwrap(1) }}", "a\nb\nc"),
        ("{{ ('a' * 500000)|length }}", 500000),
        ("{% set x %}{% for i in range(3) %}{{ i }}{% endfor %}{% endset %}{{ x }}", "012"),
    ],
)
def test_ordinary_uses_of_measured_operations_still_work(source, expected):
    assert render_string(source, {}) == expected


def test_a_field_named_like_a_dict_method_is_the_field():
    scope = {"trigger": {"items": [1, 2], "keys": "k", "values": {"a": 1}}}
    assert render_string("{{ trigger.items | length }}", scope) == 2
    assert render_string("{{ trigger.keys }}-{{ trigger.values.a }}", scope) == "k-1"
    with pytest.raises(TemplateError):  # without such a field, still the method, still refused
        render_string("{{ trigger.values.update }}", {"trigger": {"values": {}}})
