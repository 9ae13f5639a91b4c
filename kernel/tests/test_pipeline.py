"""The pipeline document: its JSON Schema and whole-pipeline validation."""

from __future__ import annotations

import copy

import pytest
from jsonschema import Draft202012Validator
from levqor_kernel import hookimpl
from levqor_kernel.errors import PipelineInvalid, Problem
from levqor_kernel.pipeline import (
    MAX_STEPS,
    PIPELINE_SCHEMA,
    assert_valid,
    check_cron,
    retry_policy,
    validate_pipeline,
)
from levqor_kernel.plugins import make_plugin_manager


class MailPlugin:
    """A small connector that needs a credential."""

    @hookimpl
    def describe_schema(self):
        return [
            {
                "name": "mail",
                "title": "Mail",
                "description": "Sends mail",
                "credentials": {
                    "type": "object",
                    "required": ["api_key"],
                    "properties": {"api_key": {"type": "string"}},
                },
                "actions": {
                    "send": {
                        "title": "Send",
                        "payload": {
                            "type": "object",
                            "required": ["to", "subject"],
                            "additionalProperties": False,
                            "properties": {
                                "to": {"type": "string", "minLength": 3},
                                "subject": {"type": "string"},
                                "count": {"type": "integer", "minimum": 1},
                                "tags": {"type": "array", "items": {"type": "string"}},
                            },
                        },
                        "output": {"type": "object"},
                        "example": {"to": "a@b.c", "subject": "hi"},
                    }
                },
            }
        ]

    @hookimpl
    def run_task(self, connector, action, payload, credentials, context):
        return {"sent": True}


@pytest.fixture(scope="module")
def catalog():
    pm = make_plugin_manager(
        entry_points=False, plugins=[("x", MailPlugin())], schema_cache_dir=None
    )
    assert not pm.failures, pm.failures
    assert "mail" in pm.catalog and "core" in pm.catalog
    return pm.catalog


def mail_step(sid="send", **kw):
    step = {
        "id": sid,
        "connector": "mail",
        "action": "send",
        "credential": "work",
        "payload": {"to": "a@example.com", "subject": "Hello"},
    }
    step.update(kw)
    return step


def doc(*steps, trigger=None, **extra):
    d = {
        "levqor": 1,
        "name": "test",
        "trigger": trigger or {"type": "manual"},
        "steps": list(steps) or [mail_step()],
    }
    d.update(extra)
    return d


CREDS = {"work": "mail", "gh": "github"}


def pointers(problems):
    return {(p.pointer, p.step) for p in problems}


# --------------------------------------------------------------------- schema

_V = Draft202012Validator(PIPELINE_SCHEMA)


def test_schema_itself_is_valid():
    Draft202012Validator.check_schema(PIPELINE_SCHEMA)


@pytest.mark.parametrize(
    "trigger",
    [
        {"type": "manual"},
        {"type": "webhook"},
        {"type": "webhook", "wait": True, "wait_seconds": 10, "require_signature": True},
        {"type": "schedule", "cron": "*/5 * * * *"},
        {"type": "schedule", "cron": "0 9 * * 1-5", "timezone": "Europe/London"},
        {"type": "schedule", "cron": "@daily", "timezone": "UTC", "input": {"a": 1}},
    ],
)
def test_schema_accepts_good_documents(trigger, catalog):
    d = doc(
        mail_step(retry={"max_attempts": 3, "initial_delay": 0.5, "max_delay": 10}, timeout=60),
        trigger=trigger,
        description="d",
        notify_on_failure=True,
    )
    assert list(_V.iter_errors(d)) == []
    assert validate_pipeline(d, catalog, credentials=CREDS) == []
    assert_valid(d, catalog, credentials=CREDS)


@pytest.mark.parametrize(
    ("mutate", "pointer"),
    [
        (lambda d: d.pop("levqor"), ""),
        (lambda d: d.update(levqor=2), "/levqor"),
        (lambda d: d.update(levqor="1"), "/levqor"),
        (lambda d: d.pop("trigger"), ""),
        (lambda d: d.pop("steps"), ""),
        (lambda d: d.update(steps=[]), "/steps"),
        (lambda d: d.update(extra=1), ""),
        (lambda d: d.update(trigger={"type": "email"}), "/trigger/type"),
        (lambda d: d.update(trigger={"type": "manual", "cron": "* * * * *"}), "/trigger"),
        (lambda d: d.update(trigger={"type": "schedule"}), "/trigger"),
        (lambda d: d.update(trigger={"type": "schedule", "cron": 5}), "/trigger/cron"),
        (
            lambda d: d.update(trigger={"type": "webhook", "wait_seconds": 31}),
            "/trigger/wait_seconds",
        ),
        (lambda d: d.update(trigger={"type": "webhook", "secret": "x"}), "/trigger"),
        (lambda d: d["steps"][0].update(id="Bad-Id"), "/steps/0/id"),
        (lambda d: d["steps"][0].update(id="1abc"), "/steps/0/id"),
        (lambda d: d["steps"][0].pop("payload"), "/steps/0"),
        (lambda d: d["steps"][0].update(payload=[]), "/steps/0/payload"),
        (lambda d: d["steps"][0].update(timeout=0), "/steps/0/timeout"),
        (lambda d: d["steps"][0].update(timeout=901), "/steps/0/timeout"),
        (lambda d: d["steps"][0].update(retry={"max_attempts": 0}), "/steps/0/retry/max_attempts"),
        (lambda d: d["steps"][0].update(retry={"jitter": True}), "/steps/0/retry"),
        (lambda d: d["steps"][0].update(credential=""), "/steps/0/credential"),
        (lambda d: d["steps"][0].update(script="rm -rf /"), "/steps/0"),
    ],
)
def test_schema_rejects_bad_documents(mutate, pointer, catalog):
    d = doc()
    mutate(d)
    assert list(_V.iter_errors(d)), "schema accepted a bad document"
    problems = validate_pipeline(d, catalog, credentials=CREDS)
    assert problems
    assert pointer in {p.pointer for p in problems}
    if pointer.startswith("/steps/0"):
        sid = d["steps"][0]["id"]  # the step's own id, even when the id itself is the problem
        assert all(p.step == sid for p in problems if p.pointer.startswith("/steps/0"))


def test_non_object_documents_are_refused(catalog):
    for bad in ([], "x", None, 3):
        problems = validate_pipeline(bad, catalog)
        assert problems == [Problem("", "pipeline must be a JSON object")]


def test_levqor_2_is_refused(catalog):
    problems = validate_pipeline(doc(levqor=2), catalog)
    assert [p.pointer for p in problems] == ["/levqor"]


def test_more_than_100_steps_refused(catalog):
    steps = [
        {"id": f"s{i}", "connector": "core", "action": "delay", "payload": {"seconds": 0}}
        for i in range(MAX_STEPS + 1)
    ]
    problems = validate_pipeline(doc(*steps), catalog)
    assert [p.pointer for p in problems] == ["/steps"]
    assert validate_pipeline(doc(*steps[:MAX_STEPS]), catalog) == []


# --------------------------------------------------------------------- whole-pipeline checks


def test_unknown_connector_and_action(catalog):
    d = doc(
        mail_step("a"),
        {"id": "b", "connector": "nope", "action": "send", "payload": {}},
        mail_step("c", action="fly"),
    )
    problems = validate_pipeline(d, catalog, credentials=CREDS)
    assert pointers(problems) == {("/steps/1/connector", "b"), ("/steps/2/action", "c")}
    by_ptr = {p.pointer: p.message for p in problems}
    assert (
        "'nope'" in by_ptr["/steps/1/connector"] and "not installed" in by_ptr["/steps/1/connector"]
    )
    assert "'fly'" in by_ptr["/steps/2/action"] and "send" in by_ptr["/steps/2/action"]


def test_missing_credential(catalog):
    step = mail_step()
    del step["credential"]
    problems = validate_pipeline(doc(step), catalog)
    assert [(p.pointer, p.step) for p in problems] == [("/steps/0/credential", "send")]
    assert "needs a credential" in problems[0].message
    # connectors without credentials need none
    core = {"id": "t", "connector": "core", "action": "transform", "payload": {"value": 1}}
    assert validate_pipeline(doc(core), catalog, credentials={}) == []


def test_credential_checks_against_the_owners_credentials(catalog):
    d = doc(mail_step("a", credential="gh"), mail_step("b", credential="ghost"), mail_step("c"))
    problems = validate_pipeline(d, catalog, credentials=CREDS)
    assert pointers(problems) == {("/steps/0/credential", "a"), ("/steps/1/credential", "b")}
    msgs = {p.step: p.message for p in problems}
    assert "'github'" in msgs["a"] and "'mail'" in msgs["a"]
    assert "does not exist" in msgs["b"]
    # without the owner's credential map only presence is checked
    assert validate_pipeline(d, catalog) == []


def test_duplicate_step_ids(catalog):
    d = doc(mail_step("a"), mail_step("b"), mail_step("a"))
    problems = validate_pipeline(d, catalog, credentials=CREDS)
    assert [(p.pointer, p.step) for p in problems] == [("/steps/2/id", "a")]
    assert "duplicate" in problems[0].message


def test_template_syntax_errors(catalog):
    d = doc(
        mail_step(payload={"to": "{{ trigger.email ", "subject": "ok", "tags": ["x", "{% if %}"]})
    )
    problems = validate_pipeline(d, catalog, credentials=CREDS)
    assert pointers(problems) == {
        ("/steps/0/payload/to", "send"),
        ("/steps/0/payload/tags/1", "send"),
    }
    assert all("syntax" in p.message for p in problems)


def test_references_to_later_unknown_and_self_steps(catalog):
    d = doc(
        mail_step("first", payload={"to": "{{ steps.second.to }}", "subject": "x"}),
        mail_step(
            "second", payload={"to": "{{ steps.first.to }}", "subject": "{{ steps['ghost'].x }}"}
        ),
        mail_step(
            "third", payload={"to": "{{ steps.third.to }}", "subject": "{{ steps.second.to }}"}
        ),
    )
    problems = validate_pipeline(d, catalog, credentials=CREDS)
    assert pointers(problems) == {
        ("/steps/0/payload/to", "first"),
        ("/steps/1/payload/subject", "second"),
        ("/steps/2/payload/to", "third"),
    }
    msgs = " ".join(p.message for p in problems)
    assert "'second'" in msgs and "'ghost'" in msgs and "'third'" in msgs
    assert "not an earlier step" in msgs


def test_unknown_root_names(catalog):
    d = doc(mail_step(payload={"to": "{{ env.SECRET }}", "subject": "{{ config }}{{ trigger.x }}"}))
    problems = validate_pipeline(d, catalog, credentials=CREDS)
    assert pointers(problems) == {
        ("/steps/0/payload/to", "send"),
        ("/steps/0/payload/subject", "send"),
    }
    msgs = {p.pointer: p.message for p in problems}
    assert "env" in msgs["/steps/0/payload/to"]
    assert "config" in msgs["/steps/0/payload/subject"]
    assert "trigger" in msgs["/steps/0/payload/subject"]  # the hint lists the allowed names


def test_payload_schema_violations_for_literal_values(catalog):
    d = doc(mail_step(payload={"to": 5, "subject": "s", "count": 0, "tags": ["a", 3], "bcc": "x"}))
    problems = validate_pipeline(d, catalog, credentials=CREDS)
    ptrs = {p.pointer for p in problems}
    assert {"/steps/0/payload/to", "/steps/0/payload/count", "/steps/0/payload/tags/1"} <= ptrs
    assert any("bcc" in p.message for p in problems)  # additionalProperties
    assert all(p.step == "send" for p in problems)


def test_missing_required_payload_field(catalog):
    d = doc(mail_step(payload={"to": "a@b.c"}))
    problems = validate_pipeline(d, catalog, credentials=CREDS)
    assert [(p.pointer, p.step) for p in problems] == [("/steps/0/payload", "send")]
    assert "subject" in problems[0].message


def test_template_strings_are_not_type_checked_statically(catalog):
    # "count" must be an integer >= 1, "to" at least 3 chars: templates are checked at run time
    d = doc(
        mail_step(payload={"to": "{{ trigger.e }}", "subject": "s", "count": "{{ trigger.n }}"})
    )
    assert validate_pipeline(d, catalog, credentials=CREDS) == []
    d = doc(mail_step(payload={"to": "{{x}}", "subject": "s", "tags": ["{{ trigger.t }}"]}))
    problems = validate_pipeline(d, catalog, credentials=CREDS)
    assert [p.pointer for p in problems] == ["/steps/0/payload/to"]  # unknown root x only
    assert "unknown name" in problems[0].message


@pytest.mark.parametrize(
    ("cron", "ok"),
    [
        ("* * * * *", True),
        ("*/15 0-6 1,15 * MON-FRI", True),
        ("0 0 L * ?", False),  # Quartz extensions are not cron
        ("@hourly", True),
        ("@yearly", True),
        ("* * * *", False),
        ("* * * * * *", False),
        ("", False),
        ("@sometimes", False),
        ("* * * * $(rm)", False),
        ("0 0 ; * *", False),
    ],
)
def test_check_cron(cron, ok):
    assert (check_cron(cron) is None) is ok


def test_bad_cron_and_unknown_timezone(catalog):
    d = doc(trigger={"type": "schedule", "cron": "61 * * *", "timezone": "Mars/Olympus"})
    problems = validate_pipeline(d, catalog, credentials=CREDS)
    assert pointers(problems) == {("/trigger/cron", None), ("/trigger/timezone", None)}
    msgs = {p.pointer: p.message for p in problems}
    assert "5 fields" in msgs["/trigger/cron"]
    assert "Mars/Olympus" in msgs["/trigger/timezone"]


def test_an_out_of_range_day_of_week_is_a_problem_naming_the_field(catalog):
    d = doc(trigger={"type": "schedule", "cron": "0 9 * * 8", "timezone": "UTC"})
    problems = validate_pipeline(d, catalog, credentials=CREDS)
    assert [p.pointer for p in problems] == ["/trigger/cron"]
    assert problems[0].message.startswith("day-of-week: 8 is out of range")
    d = doc(trigger={"type": "schedule", "cron": "0 9 * * 7", "timezone": "UTC"})
    assert validate_pipeline(d, catalog, credentials=CREDS) == []  # 7 is Sunday


@pytest.mark.parametrize("tz", ["../../etc/passwd", "", "Not A Zone", "/etc/localtime"])
def test_weird_time_zones_are_problems_not_crashes(catalog, tz):
    d = doc(trigger={"type": "schedule", "cron": "* * * * *", "timezone": tz})
    problems = validate_pipeline(d, catalog)
    assert [p.pointer for p in problems] == ["/trigger/timezone"]


def test_every_problem_is_reported_at_once(catalog):
    d = doc(
        mail_step("a", credential="gh", payload={"to": "{{ steps.z.x }}", "subject": 1}),
        {"id": "b", "connector": "nope", "action": "x", "payload": {"v": "{{ bogus }}"}},
        mail_step("a"),
        trigger={"type": "schedule", "cron": "bad", "timezone": "Nowhere/Land"},
    )
    problems = validate_pipeline(d, catalog, credentials=CREDS)
    assert pointers(problems) == {
        ("/trigger/cron", None),
        ("/trigger/timezone", None),
        ("/steps/0/credential", "a"),
        ("/steps/0/payload/subject", "a"),
        ("/steps/0/payload/to", "a"),
        ("/steps/1/connector", "b"),
        ("/steps/1/payload/v", "b"),
        ("/steps/2/id", "a"),
    }
    with pytest.raises(PipelineInvalid) as ei:
        assert_valid(d, catalog, credentials=CREDS)
    assert ei.value.problems == problems
    assert "/trigger/cron" in str(ei.value) and "step 'b'" in str(ei.value)


def test_assert_valid_passes_a_valid_document_and_does_not_mutate_it(catalog):
    d = doc(
        mail_step("a"),
        {
            "id": "b",
            "connector": "core",
            "action": "transform",
            "payload": {"value": "{{ steps.a }}"},
        },
    )
    before = copy.deepcopy(d)
    assert assert_valid(d, catalog, credentials=CREDS) is None
    assert d == before


def test_problem_serialisation():
    p = Problem("/steps/0/id", "bad", "a")
    assert p.to_dict() == {"pointer": "/steps/0/id", "message": "bad", "step": "a"}
    assert Problem("", "x").to_dict() == {"pointer": "", "message": "x"}
    assert str(p) == "step 'a' /steps/0/id: bad"
    assert str(Problem("", "x")) == "/: x"


def test_pointer_escaping_of_payload_keys(catalog):
    d = doc(
        {
            "id": "t",
            "connector": "core",
            "action": "transform",
            "payload": {"value": {"a/b~c": "{{ nope }}"}},
        }
    )
    problems = validate_pipeline(d, catalog)
    assert [p.pointer for p in problems] == ["/steps/0/payload/value/a~1b~0c"]


def test_retry_policy_defaults_and_overrides():
    assert retry_policy({}) == {"max_attempts": 5, "initial_delay": 1.0, "max_delay": 300.0}
    assert retry_policy({"retry": {"max_attempts": 2}})["max_attempts"] == 2
