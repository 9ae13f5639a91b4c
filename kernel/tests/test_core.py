"""The built-in core connector."""

from __future__ import annotations

import time

import pytest
from levqor_kernel.builtins import core
from levqor_kernel.context import make_context
from levqor_kernel.errors import StopRun
from levqor_kernel.testing import ConnectorContract


class TestCoreContract(ConnectorContract):
    plugin = core
    offline = True


@pytest.mark.parametrize(
    ("left", "op", "right", "expected"),
    [
        (5, "eq", 5, True),
        ("5", "eq", 5, True),
        ("a", "eq", "b", False),
        (True, "eq", 1, False),
        (1, "ne", 2, True),
        ("x", "ne", "x", False),
        (10, "gt", 9.5, True),
        ("10", "gt", "9", True),
        ("b", "gt", "a", True),
        (None, "gt", 1, False),
        (1, "lt", 2, True),
        ("abc", "lt", 1, False),
        ("hello world", "contains", "world", True),
        (["a", "b"], "contains", "b", True),
        ({"k": 1}, "contains", "k", True),
        (5, "contains", 5, False),
        ("x", "exists", None, True),
        ("", "exists", None, False),
        (None, "exists", None, False),
        ([], "exists", None, False),
    ],
)
def test_filter_operators(left, op, right, expected):
    assert core.evaluate({"left": left, "op": op, "right": right}) is expected


def test_filter_modes():
    ctx = make_context()
    any_payload = {
        "mode": "any",
        "conditions": [{"left": 1, "op": "eq", "right": 2}, {"left": 1, "op": "eq", "right": 1}],
    }
    assert core.run_task("core", "filter", any_payload, None, ctx) == {"passed": True}
    with pytest.raises(StopRun):
        core.run_task("core", "filter", {**any_payload, "mode": "all"}, None, ctx)


def test_filter_validate_payload_needs_a_right_value():
    problems = core.validate_payload("core", "filter", {"conditions": [{"left": 1, "op": "eq"}]})
    assert problems and "right-hand" in problems[0]
    assert (
        core.validate_payload("core", "filter", {"conditions": [{"left": 1, "op": "exists"}]}) == []
    )


def test_delay_is_capped_by_configuration_and_deadline():
    ctx = make_context(env={"LEVQOR_MAX_DELAY_SECONDS": "0.1"})
    t0 = time.monotonic()
    assert core.run_task("core", "delay", {"seconds": 30}, None, ctx) == {"waited": 0.1}
    assert time.monotonic() - t0 < 1
    ctx = make_context(timeout=0.3, env={})
    out = core.run_task("core", "delay", {"seconds": 30}, None, ctx)
    assert out["waited"] <= 0.3


def test_transform_returns_its_value():
    assert core.run_task("core", "transform", {"value": [1, {"a": 2}]}, None, make_context()) == {
        "value": [1, {"a": 2}]
    }
