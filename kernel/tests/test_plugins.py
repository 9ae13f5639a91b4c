"""Plugin discovery, allow/block lists, failures and conflicts, with real installed distributions."""

from __future__ import annotations

import pytest
from levqor_kernel import hookimpl
from levqor_kernel.errors import PluginConflictError
from levqor_kernel.plugins import DEFAULT_PLUGINS, make_plugin_manager

ONLY_TEST = ["lvqtest-alpha", "lvqtest-beta", "lvqtest-broken", "lvqtest-bad", "beta2"]


def test_entry_point_plugins_are_discovered_with_their_distribution(make_dist):
    make_dist("lvqtest-alpha", "alpha", "lvqtest_alpha", connector="alpha", version="1.2.3")
    pm = make_plugin_manager(allow=["lvqtest-alpha"])
    assert "alpha" in pm.catalog and "core" in pm.catalog
    info = pm.catalog.get("alpha")
    assert (info.dist, info.version, info.plugin_name) == ("lvqtest-alpha", "1.2.3", "alpha")
    assert info.actions["echo"].price == 2
    infos = {p.name: p for p in pm.plugin_infos()}
    assert infos["alpha"].hooks == ("describe_schema", "run_task")
    assert infos["core"].dist == "levqor-kernel"


def test_each_factory_call_builds_an_independent_manager(make_dist):
    make_dist("lvqtest-alpha", "alpha", "lvqtest_alpha", connector="alpha")
    a = make_plugin_manager(allow=["alpha"])
    b = make_plugin_manager(allow=["alpha"], block=["alpha"])
    assert a is not b
    assert "alpha" in a.catalog and "alpha" not in b.catalog


def test_allow_list_and_block_list(make_dist):
    make_dist("lvqtest-alpha", "alpha", "lvqtest_alpha", connector="alpha")
    make_dist("lvqtest-beta", "beta", "lvqtest_beta", connector="beta")
    both = make_plugin_manager(allow=["alpha", "lvqtest-beta"])
    assert {"alpha", "beta", "core"} <= set(both.catalog.connectors)
    only_alpha = make_plugin_manager(allow=["alpha"])
    assert "beta" not in only_alpha.catalog
    blocked = make_plugin_manager(
        allow=["alpha", "beta"], block=["lvqtest-beta", "core"]
    )
    assert set(blocked.catalog.connectors) == {"alpha"}
    assert set(DEFAULT_PLUGINS) == {"core"}


def test_plugin_that_fails_to_import_is_reported_and_skipped(make_dist):
    make_dist("lvqtest-alpha", "alpha", "lvqtest_alpha", connector="alpha")
    make_dist("lvqtest-broken", "broken", "lvqtest_broken", "import not_a_module_anywhere_xyz\n")
    pm = make_plugin_manager(allow=ONLY_TEST)
    assert "alpha" in pm.catalog
    [f] = [f for f in pm.failures if f.name == "broken"]
    assert f.dist == "lvqtest-broken"
    assert "not_a_module_anywhere_xyz" in f.error
    assert f.to_dict()["distribution"] == "lvqtest-broken"


def test_plugin_with_invalid_describe_schema_is_skipped(make_dist, connector_src):
    bad = connector_src.format(name="bad").replace(
        '"example": {"text": "hi"}', '"example": {"text": 5}'
    )
    make_dist("lvqtest-bad", "bad", "lvqtest_bad", bad)
    make_dist("lvqtest-alpha", "alpha", "lvqtest_alpha", connector="alpha")
    pm = make_plugin_manager(allow=ONLY_TEST)
    assert "bad" not in pm.catalog and "alpha" in pm.catalog
    [f] = [f for f in pm.failures if f.name == "bad"]
    assert "example does not match" in f.error
    assert pm.get_plugin("bad") is None  # unregistered: none of its hooks can run


def test_endpoint_field_must_name_a_credential_field():
    from levqor_kernel.catalog import check_description

    desc = {
        "name": "hook",
        "title": "Hook",
        "description": "d",
        "credentials": {"type": "object", "properties": {"url": {"type": "string"}}},
        "endpoint_field": "url",
        "actions": {"a": {"title": "A", "payload": {}, "output": {}, "example": {}}},
    }
    assert check_description(desc) == []
    assert check_description({**desc, "endpoint_field": "nope"}) == [
        "hook: endpoint_field 'nope' is not a property of the credentials schema"
    ]
    assert check_description({**desc, "credentials": None})


def test_invalid_json_schema_in_a_description_is_rejected():
    class P:
        @hookimpl
        def describe_schema(self):
            return [
                {
                    "name": "p",
                    "title": "P",
                    "description": "d",
                    "actions": {
                        "a": {
                            "title": "A",
                            "payload": {"type": "nonsense"},
                            "output": {},
                            "example": {},
                        }
                    },
                }
            ]

    pm = make_plugin_manager(entry_points=False, plugins=[("p", P())])
    assert "p" not in pm.catalog
    assert "not a valid JSON Schema" in pm.failures[0].error


def test_plugin_raising_in_describe_schema_is_skipped():
    class P:
        @hookimpl
        def describe_schema(self):
            raise RuntimeError("boom")

    pm = make_plugin_manager(entry_points=False, plugins=[("p", P())])
    assert pm.failures[0].error == "describe_schema raised RuntimeError: boom"
    assert "core" in pm.catalog


def test_unknown_hook_implementation_is_reported():
    class P:
        @hookimpl
        def run_taks(self):  # a typo
            return {}

    pm = make_plugin_manager(entry_points=False, plugins=[("typo", P())])
    assert pm.failures[0].name == "typo" and "run_taks" in pm.failures[0].error


def test_two_plugins_claiming_one_connector_stop_start_up_naming_both(make_dist):
    make_dist("lvqtest-beta", "beta", "lvqtest_beta", connector="beta")
    make_dist("lvqtest-beta-fork", "beta2", "lvqtest_beta2", connector="beta")
    with pytest.raises(PluginConflictError) as e:
        make_plugin_manager(allow=ONLY_TEST)
    assert "lvqtest-beta" in str(e.value) and "lvqtest-beta-fork" in str(e.value)
    # blocking one of them resolves it
    pm = make_plugin_manager(allow=ONLY_TEST, block=["beta2"])
    assert pm.catalog.get("beta").dist == "lvqtest-beta"


def test_dispatch_goes_to_the_owner_only(make_dist):
    make_dist("lvqtest-alpha", "alpha", "lvqtest_alpha", connector="alpha")
    make_dist("lvqtest-beta", "beta", "lvqtest_beta", connector="beta")
    pm = make_plugin_manager(allow=["alpha", "beta"])
    from levqor_kernel.context import make_context

    out = pm.call_owner(
        "run_task",
        "beta",
        connector="beta",
        action="echo",
        payload={"text": "x"},
        credentials=None,
        context=make_context("r", "s"),
    )
    assert out == {"echo": "x", "by": "beta", "key": "r:s"}
    with pytest.raises(KeyError):
        pm.call_owner(
            "run_task",
            "nope",
            connector="nope",
            action="echo",
            payload={},
            credentials=None,
            context=make_context(),
        )


def test_kernel_version_requirement_is_enforced():
    class Old:
        @hookimpl
        def describe_schema(self):
            return [
                {
                    "name": "old",
                    "title": "Old",
                    "description": "d",
                    "kernel": ">=9",
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

    pm = make_plugin_manager(entry_points=False, plugins=[("old", Old())])
    assert "old" not in pm.catalog
    assert "requires levqor-kernel >=9" in pm.failures[0].error


def test_catalog_json_lists_everything_the_ui_needs():
    pm = make_plugin_manager(entry_points=False)
    data = pm.catalog.to_json()["connectors"]["core"]
    assert data["distribution"] == "levqor-kernel"
    assert set(data["actions"]) == {"transform", "filter", "delay"}
    a = data["actions"]["filter"]
    assert {"payload", "output", "example", "price", "title"} <= set(a)
    assert data["icon"].startswith("data:image/svg+xml")


def test_actions_say_whether_they_write_upstream():
    from levqor_kernel.catalog import check_description

    desc = {
        "name": "hook",
        "title": "Hook",
        "description": "d",
        "actions": {"a": {"title": "A", "payload": {}, "output": {}, "example": {}, "writes": True}},
    }
    assert check_description(desc) == []
    bad = {**desc, "actions": {"a": {**desc["actions"]["a"], "writes": "yes"}}}
    assert check_description(bad)
    pm = make_plugin_manager(entry_points=False)
    core = pm.catalog.to_json()["connectors"]["core"]["actions"]
    assert {name: a["writes"] for name, a in core.items()} == {
        "transform": False,
        "filter": False,
        "delay": False,
    }
