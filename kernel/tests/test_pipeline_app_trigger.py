"""The ``app`` trigger of the pipeline document: its schema and what validation adds to it
(unknown connector or trigger, config against the trigger's config schema, credentials,
interval on polling triggers only)."""

from __future__ import annotations

import pytest
from levqor_kernel import hookimpl
from levqor_kernel.pipeline import validate_pipeline
from levqor_kernel.plugins import make_plugin_manager


class Feed:
    """A connector with a polling and an instant trigger, needing a credential."""

    @hookimpl
    def describe_schema(self):
        item = {"type": "object", "properties": {"n": {"type": "integer"}}}
        return [
            {
                "name": "feed",
                "title": "Feed",
                "description": "items",
                "credentials": {
                    "type": "object",
                    "required": ["key"],
                    "properties": {"key": {"type": "string"}},
                },
                "triggers": {
                    "new_item": {
                        "title": "New item",
                        "kind": "polling",
                        "config": {
                            "type": "object",
                            "required": ["list"],
                            "additionalProperties": False,
                            "properties": {
                                "list": {"type": "string", "minLength": 1},
                                "limit": {"type": "integer", "minimum": 1},
                            },
                        },
                        "output": item,
                        "sample": {"n": 1},
                    },
                    "pushed": {
                        "title": "Pushed",
                        "kind": "instant",
                        "config": {"type": "object"},
                        "output": item,
                        "sample": {"n": 2},
                    },
                },
                "actions": {
                    "a": {"title": "A", "payload": {"type": "object"}, "output": {"type": "object"}, "example": {}}
                },
            }
        ]


@pytest.fixture(scope="module")
def catalog():
    pm = make_plugin_manager(entry_points=False, plugins=[("feed", Feed())], schema_cache_dir=None)
    assert not pm.failures, pm.failures
    return pm.catalog


def doc(trigger: dict, value: str = "{{ trigger.n }}") -> dict:
    step = {"id": "t", "connector": "core", "action": "transform", "payload": {"value": value}}
    return {"levqor": 1, "trigger": trigger, "steps": [step]}


def app(**kw) -> dict:
    return {"type": "app", "connector": "feed", "trigger": "new_item", "credential": "mine",
            "config": {"list": "inbox"}, **kw}


CREDS = {"mine": "feed", "other": "core"}


@pytest.mark.parametrize(
    "trigger",
    [
        app(),
        app(interval=60),
        app(config={"list": "x", "limit": 3}, interval=3600),
        {"type": "app", "connector": "feed", "trigger": "pushed", "credential": "mine"},
    ],
)
def test_good_app_triggers_validate(trigger, catalog):
    assert validate_pipeline(doc(trigger), catalog, credentials=CREDS) == []
    # without the owner's credentials (an offline check), the credential is not looked up
    assert validate_pipeline(doc(trigger), catalog) == []


@pytest.mark.parametrize(
    ("trigger", "pointer", "words"),
    [
        ({"type": "app", "trigger": "new_item"}, "/trigger", "'connector' is a required property"),
        ({"type": "app", "connector": "feed"}, "/trigger", "'trigger' is a required property"),
        (app(extra=1), "/trigger", "Additional properties"),
        (app(interval=0), "/trigger/interval", "less than the minimum"),
        (app(interval=1.5), "/trigger/interval", "not of type 'integer'"),
        (app(config="x"), "/trigger/config", "not of type 'object'"),
        (app(credential=""), "/trigger/credential", "should be non-empty"),
        (app(cron="* * * * *"), "/trigger", "Additional properties"),
    ],
)
def test_schema_refuses_malformed_app_triggers(trigger, pointer, words, catalog):
    found = [(p.pointer, p.message) for p in validate_pipeline(doc(trigger), catalog)]
    assert any(ptr == pointer and words in msg for ptr, msg in found), found


@pytest.mark.parametrize(
    ("trigger", "pointer", "words"),
    [
        (app(connector="nope"), "/trigger/connector", "unknown connector 'nope'"),
        (app(trigger="gone"), "/trigger/trigger", "has no trigger 'gone' (has: new_item, pushed)"),
        (app(config={}), "/trigger/config", "'list' is a required property"),
        (app(config={"list": ""}), "/trigger/config/list", "should be non-empty"),
        (app(config={"list": "x", "limit": 0}), "/trigger/config/limit", "less than the minimum"),
        (app(config={"list": "x", "zip": 1}), "/trigger/config", "Additional properties"),
        (app(credential="nobody"), "/trigger/credential", "credential 'nobody' does not exist"),
        (app(credential="other"), "/trigger/credential", "is for 'core', not 'feed'"),
        ({k: v for k, v in app().items() if k != "credential"}, "/trigger/credential", "needs a credential"),
        ({"type": "app", "connector": "feed", "trigger": "pushed", "credential": "mine", "interval": 60},
         "/trigger/interval", "polling triggers only"),
        ({"type": "app", "connector": "core", "trigger": "x"}, "/trigger/trigger", "(has: none)"),
    ],
)
def test_validation_names_what_is_wrong_with_an_app_trigger(trigger, pointer, words, catalog):
    found = [(p.pointer, p.message) for p in validate_pipeline(doc(trigger), catalog, credentials=CREDS)]
    assert any(ptr == pointer and words in msg for ptr, msg in found), found
    assert all(p.step is None for p in validate_pipeline(doc(trigger), catalog, credentials=CREDS))


def test_config_defaults_to_an_empty_object(catalog):
    trig = {"type": "app", "connector": "feed", "trigger": "pushed", "credential": "mine"}
    assert validate_pipeline(doc(trig), catalog, credentials=CREDS) == []
    # a polling trigger whose schema requires a field is refused without config
    trig = {"type": "app", "connector": "feed", "trigger": "new_item", "credential": "mine"}
    found = [(p.pointer, p.message) for p in validate_pipeline(doc(trig), catalog, credentials=CREDS)]
    assert found == [("/trigger/config", "'list' is a required property")]


def test_templates_read_the_trigger_item(catalog):
    assert validate_pipeline(doc(app(), "{{ trigger.n }} {{ run.id }}"), catalog) == []
    found = validate_pipeline(doc(app(), "{{ item.n }}"), catalog)
    assert [p.pointer for p in found] == ["/steps/0/payload/value"]


def test_a_trigger_alone_is_validated_like_one_in_a_document(catalog):
    from levqor_kernel.pipeline import validate_app_trigger

    assert validate_app_trigger(app(), catalog, credentials=CREDS) == []
    assert [p.pointer for p in validate_app_trigger(app(interval="x"), catalog)] == ["/trigger/interval"]
    assert [p.pointer for p in validate_app_trigger(app(config={}), catalog)] == ["/trigger/config"]
    assert [p.pointer for p in validate_app_trigger([], catalog)] == ["/trigger"]
