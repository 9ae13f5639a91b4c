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


class Models:
    """A metered model connector with an agent turn action and a dynamic model list."""

    @hookimpl
    def describe_schema(self):
        from levqor_kernel.ai import AGENT_TURN_OUTPUT, AGENT_TURN_PAYLOAD, USAGE_SCHEMA

        return [
            {
                "name": "llm",
                "title": "LLM",
                "description": "d",
                "agent": {"action": "turn"},
                "rates": {"small": {"input": 100, "output": 400}, "*": {"input": 1000, "output": 1000}},
                "actions": {
                    "chat": {
                        "title": "Chat",
                        "payload": {"type": "object", "properties": {"model": {"type": "string"}}},
                        "output": {"type": "object", "properties": {"usage": USAGE_SCHEMA}},
                        "example": {"model": "small"},
                        "usage": "tokens",
                        "writes": False,
                        "options": ["model"],
                    },
                    "turn": {
                        "title": "Agent turn",
                        "payload": AGENT_TURN_PAYLOAD,
                        "output": AGENT_TURN_OUTPUT,
                        "example": {"model": "small", "messages": [{"role": "user", "content": "hi"}]},
                        "usage": "tokens",
                        "hidden": True,
                    },
                },
            }
        ]

    @hookimpl
    def load_options(self, connector, action, field, payload, credentials, context):
        if field != "model":
            return None
        return [{"value": "small", "label": "Small"}, {"value": "large", "label": "Large"}]


def test_hook_load_options():
    pm = make_plugin_manager(entry_points=False, plugins=[("m", Models())])
    info = pm.catalog.get("llm")
    assert info.agent_action == "turn" and info.actions["turn"].hidden
    assert info.actions["chat"].metered and info.actions["chat"].options == ["model"]
    opts = pm.call_owner(
        "load_options", "llm", connector="llm", action="chat", field="model", payload={},
        credentials=None, context=make_context(),
    )
    assert [o["value"] for o in opts] == ["small", "large"]
    assert pm.call_owner(
        "load_options", "llm", connector="llm", action="chat", field="other", payload={},
        credentials=None, context=make_context(),
    ) is None


def test_metered_and_agent_descriptions_are_checked():
    from levqor_kernel.catalog import check_description

    desc = Models().describe_schema()[0]
    assert check_description(desc) == []
    bad = {**desc, "agent": {"action": "chat_nope"}}
    assert any("agent action 'chat_nope'" in p for p in check_description(bad))
    unmetered = {**desc, "actions": {**desc["actions"], "turn": {**desc["actions"]["turn"], "usage": None}}}
    unmetered["actions"]["turn"].pop("usage")
    assert any("must be metered" in p for p in check_description(unmetered))
    no_usage = {**desc, "actions": {**desc["actions"], "chat": {**desc["actions"]["chat"], "output": {"type": "object"}}}}
    assert any("must have usage" in p for p in check_description(no_usage))
    bad_opt = {**desc, "actions": {**desc["actions"], "chat": {**desc["actions"]["chat"], "options": ["nope"]}}}
    assert any("options field 'nope'" in p for p in check_description(bad_opt))


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


class Ticker:
    """A connector with a polling trigger, an instant trigger and an OAuth2 variant."""

    def __init__(self):
        self.upstream = [{"n": 1}, {"n": 2}]
        self.registered: dict[str, dict] = {}

    @hookimpl
    def describe_schema(self):
        from levqor_kernel.oauth import OAUTH2_CREDENTIALS

        item = {"type": "object", "properties": {"n": {"type": "integer"}}}
        return [
            {
                "name": "ticker",
                "title": "Ticker",
                "description": "numbers",
                "credentials": {
                    "anyOf": [
                        {"type": "object", "required": ["key"], "properties": {"key": {"type": "string"}}},
                        OAUTH2_CREDENTIALS,
                    ]
                },
                "oauth2": {
                    "authorization_url": "https://ticker.example/authorize",
                    "token_url": "https://ticker.example/token",
                    "scopes": ["read"],
                    "account": "/account/name",
                },
                "triggers": {
                    "new_number": {
                        "title": "New number",
                        "kind": "polling",
                        "config": {"type": "object", "properties": {"above": {"type": "integer"}}},
                        "output": item,
                        "sample": {"n": 7},
                    },
                    "pushed": {
                        "title": "Pushed number",
                        "kind": "instant",
                        "config": {"type": "object"},
                        "output": item,
                        "sample": {"n": 8},
                    },
                },
                "actions": {
                    "a": {"title": "A", "payload": {"type": "object"}, "output": {"type": "object"}, "example": {}}
                },
            }
        ]

    @hookimpl
    def poll_trigger(self, connector, trigger, config, credentials, state, context):
        from levqor_kernel import Poll, TriggerItem

        above = (state or {}).get("last", 0)
        items = [TriggerItem(id=str(r["n"]), data=r) for r in self.upstream if r["n"] > above]
        last = max([above] + [r["n"] for r in self.upstream])
        return Poll(items=items, state={"last": last})

    @hookimpl
    def register_trigger(self, connector, trigger, config, credentials, webhook_url, secret, context):
        self.registered[webhook_url] = {"secret": secret}
        return {"hook_id": webhook_url}

    @hookimpl
    def unregister_trigger(self, connector, trigger, config, credentials, registration, context):
        del self.registered[registration["hook_id"]]

    @hookimpl
    def receive_delivery(self, connector, trigger, config, delivery, registration, context):
        from levqor_kernel import DeliveryResult, SignatureError, TriggerItem

        if delivery.header("X-Secret") != delivery.secret:
            raise SignatureError()
        body = delivery.json()
        if "challenge" in body:
            return DeliveryResult(response=(200, {"challenge": body["challenge"]}, {}))
        return DeliveryResult(items=[TriggerItem(id=str(n), data={"n": n}) for n in body["numbers"]])

    @hookimpl
    def oauth_credentials(self, connector, token, context):
        return {"account": token["account"]["name"]}


def _ticker():
    t = Ticker()
    return t, make_plugin_manager(entry_points=False, plugins=[("ticker", t)])


def test_trigger_and_oauth_descriptions_reach_the_catalog():
    _t, pm = _ticker()
    info = pm.catalog.get("ticker")
    assert set(info.triggers) == {"new_number", "pushed"}
    assert pm.catalog.trigger("ticker", "new_number").kind == "polling"
    js = pm.catalog.to_json()["connectors"]["ticker"]
    assert js["triggers"]["pushed"]["webhook"] == "trigger"
    assert js["triggers"]["new_number"]["webhook"] is None
    assert js["oauth2"]["token_url"] == "https://ticker.example/token"


def test_hook_poll_trigger():
    from levqor_kernel.triggers import as_poll

    t, pm = _ticker()
    first = as_poll(pm.call_owner("poll_trigger", "ticker", connector="ticker", trigger="new_number",
                                  config={}, credentials=None, state=None, context=make_context()))
    assert [i.id for i in first.items] == ["1", "2"] and first.state == {"last": 2}
    t.upstream.append({"n": 3})
    nxt = as_poll(pm.call_owner("poll_trigger", "ticker", connector="ticker", trigger="new_number",
                                config={}, credentials=None, state=first.state, context=make_context()))
    assert [(i.id, i.data) for i in nxt.items] == [("3", {"n": 3})] and nxt.state == {"last": 3}


def test_hook_register_trigger():
    t, pm = _ticker()
    reg = pm.call_owner("register_trigger", "ticker", connector="ticker", trigger="pushed", config={},
                        credentials=None, webhook_url="https://h/hooks/t/1", secret="s3", context=make_context())
    assert reg == {"hook_id": "https://h/hooks/t/1"} and t.registered["https://h/hooks/t/1"] == {"secret": "s3"}


def test_hook_unregister_trigger():
    t, pm = _ticker()
    t.registered["u"] = {"secret": "s"}
    pm.call_owner("unregister_trigger", "ticker", connector="ticker", trigger="pushed", config={},
                  credentials=None, registration={"hook_id": "u"}, context=make_context())
    assert t.registered == {}


def test_hook_receive_delivery():
    import pytest
    from levqor_kernel import Delivery, SignatureError
    from levqor_kernel.triggers import as_delivery_result

    _t, pm = _ticker()

    def deliver(body: bytes, secret_header: str):
        d = Delivery(method="POST", headers={"x-secret": secret_header}, body=body, secret="s3")
        return as_delivery_result(pm.call_owner(
            "receive_delivery", "ticker", connector="ticker", trigger="pushed", config={},
            delivery=d, registration={}, context=make_context()))

    assert [i.id for i in deliver(b'{"numbers": [4, 5]}', "s3").items] == ["4", "5"]
    assert deliver(b'{"challenge": "abc"}', "s3").response == (200, {"challenge": "abc"}, {})
    with pytest.raises(SignatureError) as e:
        deliver(b'{"numbers": [4]}', "wrong")
    assert e.value.status == 401


def test_hook_oauth_credentials():
    _t, pm = _ticker()
    out = pm.call_owner("oauth_credentials", "ticker", connector="ticker",
                        token={"access_token": "x", "account": {"name": "Acme team"}}, context=make_context())
    assert out == {"account": "Acme team"}


def test_malformed_trigger_answers_fail_closed():
    import pytest
    from levqor_kernel.errors import PermanentError
    from levqor_kernel.triggers import as_delivery_result, as_poll

    for bad in ([], {"items": [{"id": "", "data": {}}], "state": {}}, {"items": [{"id": "1"}], "state": {}},
                {"items": [], "state": "x"}, {"items": [{"id": "x" * 201, "data": {}}], "state": {}}):
        with pytest.raises(PermanentError):
            as_poll(bad)
    assert as_poll({"items": [{"id": 5, "data": {}}], "state": {}}).items[0].id == "5"
    with pytest.raises(PermanentError):
        as_delivery_result({"items": [], "response": "ok"})


def test_trigger_and_oauth_descriptions_are_checked():
    from levqor_kernel.catalog import check_description

    t = Ticker()
    desc = t.describe_schema()[0]
    assert check_description(desc) == []
    bad = {**desc, "triggers": {"x": {**desc["triggers"]["new_number"], "sample": {"n": "seven"}}}}
    assert any("sample does not match" in p for p in check_description(bad))
    bad = {**desc, "triggers": {"x": {**desc["triggers"]["new_number"], "webhook": "connector"}}}
    assert any("instant triggers only" in p for p in check_description(bad))
    bad = {**desc, "credentials": {"type": "object", "required": ["key"], "additionalProperties": False,
                                   "properties": {"key": {"type": "string"}}}}
    assert any("OAuth2 credential" in p for p in check_description(bad))
