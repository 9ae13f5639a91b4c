"""One test per hookspec (test_hook_<name>); test_every_hook_is_tested_and_documented checks that."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

from levqor_kernel import hookimpl, hookspecs
from levqor_kernel.context import make_context
from levqor_kernel.plugins import make_plugin_manager

ROOT = Path(__file__).resolve().parents[2]


class Billing:
    def __init__(self):
        self.recorded = []

    @hookimpl
    def price_task(self, connector, action, payload, price):
        return price * 10 if connector == "core" and action == "transform" else None

    @hookimpl
    def gate_run(self, user, pipeline, price, ledger):
        if user.get("plan") == "free" and price > ledger["balance"]:
            return {"allow": False, "status": 402, "reason": "not enough credits", "retry_at": None}
        return None

    @hookimpl
    def record_run_cost(self, user, run, cost, ledger):
        self.recorded.append((user["id"], run["id"], cost))


class Planner:
    @hookimpl
    def plan_pipeline(self, prompt, catalog, credentials, options):
        step = {"id": "t", "connector": "core", "action": "transform", "payload": {"value": prompt}}
        return {
            "pipeline": {"levqor": 1, "trigger": {"type": "manual"}, "steps": [step]},
            "explanation": "one step",
        }


class Creds:
    @hookimpl
    def describe_schema(self):
        return [
            {
                "name": "acct",
                "title": "Acct",
                "description": "d",
                "credentials": {"type": "object", "properties": {"key": {"type": "string"}}},
                "actions": {
                    "a": {
                        "title": "A",
                        "payload": {"type": "object"},
                        "output": {"type": "object"},
                        "example": {},
                    }
                },
            }
        ]

    @hookimpl
    def check_credentials(self, connector, credentials, context):
        return {"ok": credentials.get("key") == "good"}

    @hookimpl
    def validate_payload(self, connector, action, payload):
        return ["x must be even"] if payload.get("x", 0) % 2 else []

    @hookimpl
    def validate_credentials(self, connector, credentials, env):
        prefix = env.get("ACCT_KEY_PREFIX", "k-")
        return {} if credentials.get("key", "").startswith(prefix) else {"key": "wrong prefix"}

    @hookimpl
    def run_task(self, connector, action, payload, credentials, context):
        return {"ran": True}


def test_hook_describe_schema():
    pm = make_plugin_manager(entry_points=False, plugins=[("c", Creds())])
    assert set(pm.catalog.connectors) == {"core", "acct"}
    assert pm.catalog.get("acct").plugin_name == "c"


def test_hook_validate_payload():
    pm = make_plugin_manager(entry_points=False, plugins=[("c", Creds())])
    assert pm.call_owner(
        "validate_payload", "acct", connector="acct", action="a", payload={"x": 3}
    ) == ["x must be even"]
    assert (
        pm.call_owner("validate_payload", "acct", connector="acct", action="a", payload={"x": 2})
        == []
    )


def test_hook_validate_credentials():
    pm = make_plugin_manager(entry_points=False, plugins=[("c", Creds())])

    def check(creds, env):
        return pm.call_owner(
            "validate_credentials", "acct", connector="acct", credentials=creds, env=env
        )

    assert check({"key": "k-1"}, {}) == {}
    assert check({"key": "x-1"}, {}) == {"key": "wrong prefix"}
    assert check({"key": "x-1"}, {"ACCT_KEY_PREFIX": "x-"}) == {}
    assert pm.owner_impl("validate_credentials", "core") is None


def test_hook_run_task():
    pm = make_plugin_manager(entry_points=False, plugins=[("c", Creds())])
    out = pm.call_owner(
        "run_task",
        "acct",
        connector="acct",
        action="a",
        payload={},
        credentials={"key": "k"},
        context=make_context(),
    )
    assert out == {"ran": True}


def test_hook_check_credentials():
    pm = make_plugin_manager(entry_points=False, plugins=[("c", Creds())])
    ctx = make_context()
    assert pm.call_owner(
        "check_credentials", "acct", connector="acct", credentials={"key": "good"}, context=ctx
    ) == {"ok": True}
    assert pm.owner_impl("check_credentials", "core") is None


def test_hook_price_task():
    pm = make_plugin_manager(entry_points=False, plugins=[("b", Billing())])
    assert pm.hook.price_task(connector="core", action="transform", payload={}, price=1) == 10
    assert pm.hook.price_task(connector="core", action="delay", payload={}, price=1) is None


def test_hook_gate_run():
    pm = make_plugin_manager(entry_points=False, plugins=[("b", Billing())])
    refused = pm.hook.gate_run(user={"plan": "free"}, pipeline={}, price=5, ledger={"balance": 1})
    assert refused["allow"] is False and refused["status"] == 402
    assert (
        pm.hook.gate_run(user={"plan": "free"}, pipeline={}, price=1, ledger={"balance": 1}) is None
    )


def test_hook_record_run_cost():
    b = Billing()
    pm = make_plugin_manager(entry_points=False, plugins=[("b", b)])
    pm.hook.record_run_cost(
        user={"id": "u1"}, run={"id": "r1", "status": "succeeded"}, cost=3, ledger=None
    )
    assert b.recorded == [("u1", "r1", 3)]


def test_hook_plan_pipeline():
    pm = make_plugin_manager(entry_points=False, plugins=[("p", Planner())])
    out = pm.hook.plan_pipeline(
        prompt="hello", catalog=pm.catalog.to_json(), credentials=[], options={}
    )
    from levqor_kernel.pipeline import validate_pipeline

    assert validate_pipeline(out["pipeline"], pm.catalog) == []


def test_every_hook_is_tested_and_documented():
    specs = [
        n for n, f in inspect.getmembers(hookspecs, inspect.isfunction) if hasattr(f, "levqor_spec")
    ]
    assert sorted(specs) == sorted(hookspecs.HOOK_NAMES)
    tested = set(re.findall(r"^def test_hook_(\w+)\(", Path(__file__).read_text(), re.M))
    docs = (ROOT / "docs" / "connectors.md").read_text()
    for name in specs:
        func = getattr(hookspecs, name)
        assert func.__doc__ and "versionadded" in func.__doc__, f"hookspec {name} has no docstring"
        assert name in tested, f"hookspec {name} has no test_hook_{name}"
        assert re.search(rf"^#+ .*`{name}`", docs, re.M), (
            f"hookspec {name} has no section in docs/connectors.md"
        )
