"""The runner: order, templating, retries with backoff, fail-closed, resume, cancel, timeouts."""

from __future__ import annotations

import threading
import time

import pytest
from levqor_kernel import hookimpl
from levqor_kernel.errors import PermanentError, RetryableError
from levqor_kernel.plugins import make_plugin_manager
from levqor_kernel.runner import ListRecorder, Runner, RunRequest, StepRecord

SECRET = "tok-SECRET-9f8e7d6c"


class Flaky:
    """A test connector whose behaviour each test scripts through ``self.script``."""

    def __init__(self) -> None:
        self.calls: list[dict] = []
        self.script: list = []

    @hookimpl
    def describe_schema(self):
        return [
            {
                "name": "flaky",
                "title": "Flaky",
                "description": "scripted",
                "credentials": {
                    "type": "object",
                    "required": ["token"],
                    "properties": {"token": {"type": "string"}},
                },
                "actions": {
                    "do": {
                        "title": "Do",
                        "payload": {"type": "object", "properties": {"n": {}, "text": {}}},
                        "output": {"type": "object", "properties": {"ok": {"type": "boolean"}}},
                        "example": {"n": 1},
                    }
                },
            }
        ]

    @hookimpl
    def run_task(self, connector, action, payload, credentials, context):
        self.calls.append(
            {
                "payload": payload,
                "credentials": credentials,
                "attempt": context.attempt,
                "key": context.idempotency_key,
            }
        )
        item = self.script.pop(0) if self.script else {"ok": True}
        if isinstance(item, BaseException):
            raise item
        if callable(item):
            return item(payload, credentials, context)
        return item


@pytest.fixture
def flaky():
    return Flaky()


@pytest.fixture
def pm(flaky):
    return make_plugin_manager(entry_points=False, plugins=[("flaky", flaky)])


def doc(*steps):
    return {"levqor": 1, "trigger": {"type": "manual"}, "steps": list(steps)}


def fstep(sid="s1", **kw):
    return {
        "id": sid,
        "connector": "flaky",
        "action": "do",
        "credential": "main",
        "payload": kw.pop("payload", {"n": 1}),
        **kw,
    }


def creds(name, connector):
    return {"token": SECRET} if name == "main" else None


def make_runner(pm, sleeps, rng=lambda: 1.0):
    return Runner(pm, sleep=sleeps.append, rng=rng, env={})


def test_steps_run_in_order_with_templates_from_trigger_and_earlier_steps(pm, flaky):
    d = doc(
        {
            "id": "t",
            "connector": "core",
            "action": "transform",
            "payload": {"value": {"who": "{{ trigger.name }}"}},
        },
        fstep("s1", payload={"text": "hi {{ steps.t.output.value.who }}", "n": "{{ trigger.n }}"}),
    )
    rec = ListRecorder()
    res = Runner(pm, env={}).run(
        RunRequest("run1", d, {"name": "Ann", "n": 3}), credentials=creds, recorder=rec
    )
    assert res.status == "succeeded"
    assert flaky.calls[0]["payload"] == {"text": "hi Ann", "n": 3}
    assert flaky.calls[0]["credentials"] == {"token": SECRET}
    kinds = [k for k, _ in rec.events]
    assert kinds == [
        "step_started",
        "step_finished",
        "step_started",
        "step_finished",
        "run_finished",
    ]


def test_retryable_errors_are_retried_with_full_jitter_exponential_backoff(pm, flaky):
    flaky.script = [
        RetryableError("503"),
        RetryableError("503"),
        RetryableError("503"),
        {"ok": True},
    ]
    sleeps: list[float] = []
    rec = ListRecorder()
    res = make_runner(pm, sleeps).run(
        RunRequest("r", doc(fstep(retry={"max_attempts": 5, "initial_delay": 2, "max_delay": 5}))),
        credentials=creds,
        recorder=rec,
    )
    assert res.status == "succeeded"
    assert [c["attempt"] for c in flaky.calls] == [1, 2, 3, 4]
    assert sleeps == [2, 4, 5]  # rng()=1.0 gives the ceiling: initial*2^(n-1), capped by max_delay
    assert len({c["key"] for c in flaky.calls}) == 1  # the idempotency key is stable across retries
    finished = [e for k, e in rec.events if k == "step_finished"][0]
    assert finished["attempts"] == 4


def test_jitter_is_random_within_the_ceiling(pm, flaky):
    flaky.script = [RetryableError("x"), {"ok": True}]
    sleeps: list[float] = []
    make_runner(pm, sleeps, rng=lambda: 0.25).run(
        RunRequest("r", doc(fstep(retry={"initial_delay": 8}))), credentials=creds
    )
    assert sleeps == [2.0]


def test_retry_after_is_honoured_and_capped_by_max_delay(pm, flaky):
    flaky.script = [
        RetryableError("429", retry_after=7),
        RetryableError("429", retry_after=900),
        {"ok": True},
    ]
    sleeps: list[float] = []
    res = make_runner(pm, sleeps).run(
        RunRequest("r", doc(fstep(retry={"max_delay": 60}))), credentials=creds
    )
    assert res.status == "succeeded"
    assert sleeps == [7, 60]


def test_default_policy_is_five_attempts_then_fail_and_later_steps_never_run(pm, flaky):
    flaky.script = [RetryableError("down")] * 5
    sleeps: list[float] = []
    rec = ListRecorder()
    res = make_runner(pm, sleeps).run(
        RunRequest("r", doc(fstep("a"), fstep("b"))), credentials=creds, recorder=rec
    )
    assert res.status == "failed"
    assert len(flaky.calls) == 5 and len(sleeps) == 4
    assert res.steps == {"a": "failed", "b": "skipped"}
    assert res.error["step"] == "a" and res.error["retryable"] is True
    assert max(sleeps) <= 300


def test_permanent_errors_are_not_retried(pm, flaky):
    flaky.script = [PermanentError("bad request", status=400)]
    sleeps: list[float] = []
    res = make_runner(pm, sleeps).run(RunRequest("r", doc(fstep())), credentials=creds)
    assert res.status == "failed" and len(flaky.calls) == 1 and sleeps == []
    assert res.error["status"] == 400


@pytest.mark.parametrize(
    "bad",
    [
        ValueError("surprise"),
        ["not", "a", "dict"],
        {"ok": {1, 2}},
        {"ok": "not-a-boolean"},
        None,
        "text",
    ],
    ids=["exception", "list", "not-json", "breaks-output-schema", "none", "string"],
)
def test_fail_closed_on_exceptions_and_malformed_results(pm, flaky, bad):
    flaky.script = [bad]
    res = make_runner(pm, []).run(RunRequest("r", doc(fstep("a"), fstep("b"))), credentials=creds)
    assert res.status == "failed"
    assert res.steps == {"a": "failed", "b": "skipped"}
    assert len(flaky.calls) == 1


def test_unknown_connector_fails_the_run_without_calling_anything(pm, flaky):
    d = doc({"id": "x", "connector": "ghost", "action": "do", "payload": {}}, fstep("b"))
    res = Runner(pm, env={}).run(RunRequest("r", d), credentials=creds)
    assert res.status == "failed" and res.error["code"] == "unknown_connector"
    assert flaky.calls == []


def test_missing_credentials_fail_before_the_connector_is_called(pm, flaky):
    res = Runner(pm, env={}).run(RunRequest("r", doc(fstep(credential="other"))), credentials=creds)
    assert res.status == "failed" and res.error["code"] == "missing_credential"
    assert flaky.calls == []


def test_payload_invalid_after_rendering_fails_closed(pm, flaky):
    d = doc(
        {
            "id": "f",
            "connector": "core",
            "action": "delay",
            "payload": {"seconds": "{{ trigger.s }}"},
        }
    )
    res = Runner(pm, env={}).run(RunRequest("r", d, {"s": "not a number"}))
    assert res.status == "failed" and res.error["code"] == "invalid_payload"


def test_secrets_are_redacted_from_errors_inputs_and_outputs(pm, flaky):
    flaky.script = [
        lambda p, c, ctx: {"ok": True, "echo": c["token"]},
        PermanentError(f"upstream said {SECRET}"),
    ]
    rec = ListRecorder()
    Runner(pm, env={}).run(
        RunRequest("r", doc(fstep("a", payload={"text": "x"}), fstep("b"))),
        credentials=creds,
        recorder=rec,
    )
    dumped = repr(rec.events)
    assert SECRET not in dumped
    assert "***" in dumped


def test_step_timeout_fails_slow_connectors(pm, flaky):
    gate = threading.Event()
    flaky.script = [lambda p, c, ctx: gate.wait(5) and {"ok": True}]
    t0 = time.monotonic()
    res = Runner(pm, env={}).run(
        RunRequest("r", doc(fstep(timeout=0.2, retry={"max_attempts": 1}))), credentials=creds
    )
    gate.set()
    assert res.status == "failed" and res.error["code"] == "timeout"
    assert time.monotonic() - t0 < 2


def test_the_deadline_reaches_the_connector(pm, flaky):
    seen = {}
    flaky.script = [lambda p, c, ctx: seen.update(left=ctx.remaining()) or {"ok": True}]
    Runner(pm, env={}).run(RunRequest("r", doc(fstep(timeout=7))), credentials=creds)
    assert 6 < seen["left"] <= 7


def test_resume_skips_finished_steps_and_reuses_their_outputs(pm, flaky):
    d = doc(fstep("a"), fstep("b", payload={"text": "{{ steps.a.output.v }}"}))
    res = Runner(pm, env={}).run(
        RunRequest("r", d, completed={"a": {"ok": True, "v": "from-before"}}), credentials=creds
    )
    assert res.status == "succeeded"
    assert len(flaky.calls) == 1 and flaky.calls[0]["payload"] == {"text": "from-before"}
    assert flaky.calls[0]["key"] == "r:b"


def test_the_result_records_the_steps_this_call_ran_in_order(pm, flaky):
    flaky.script = [RetryableError("x"), {"ok": True}, PermanentError("no")]
    d = doc(fstep("done"), fstep("a"), fstep("b"), fstep("c"))
    res = make_runner(pm, []).run(
        RunRequest("r", d, completed={"done": {"ok": True}}), credentials=creds
    )
    assert res.status == "failed"
    got = [(r.step_id, r.position, r.connector, r.action, r.status, r.attempts) for r in res.records]
    # "done" finished in an earlier call: the records hold only what this call did
    assert got == [
        ("a", 1, "flaky", "do", "succeeded", 2),
        ("b", 2, "flaky", "do", "failed", 1),
        ("c", 3, "flaky", "do", "skipped", 0),
    ]
    assert all(isinstance(r, StepRecord) for r in res.records)
    assert res.records[0].duration >= 0 and res.records[2].duration == 0.0
    assert res.steps == {"done": "succeeded", "a": "succeeded", "b": "failed", "c": "skipped"}


def test_cancel_between_steps(pm, flaky):
    cancel = threading.Event()
    flaky.script = [lambda p, c, ctx: cancel.set() or {"ok": True}]
    res = Runner(pm, env={}).run(
        RunRequest("r", doc(fstep("a"), fstep("b"))), credentials=creds, cancelled=cancel.is_set
    )
    assert res.status == "cancelled"
    assert res.steps == {"a": "succeeded", "b": "skipped"}


def test_cancel_during_backoff(pm, flaky):
    flaky.script = [RetryableError("x"), {"ok": True}]
    cancel = threading.Event()
    res = Runner(pm, env={}, sleep=lambda s: cancel.set()).run(
        RunRequest("r", doc(fstep())), credentials=creds, cancelled=cancel.is_set
    )
    assert res.status == "cancelled" and len(flaky.calls) == 1


def test_filter_stops_the_run_successfully(pm, flaky):
    d = doc(
        {
            "id": "f",
            "connector": "core",
            "action": "filter",
            "payload": {"conditions": [{"left": "{{ trigger.amount }}", "op": "gt", "right": 100}]},
        },
        fstep("after"),
    )
    res = Runner(pm, env={}).run(RunRequest("r", d, {"amount": 5}), credentials=creds)
    assert res.status == "succeeded" and res.steps == {"f": "succeeded", "after": "skipped"}
    assert flaky.calls == []
    res = Runner(pm, env={}).run(RunRequest("r", d, {"amount": 500}), credentials=creds)
    assert res.steps == {"f": "succeeded", "after": "succeeded"}


def test_sandbox_escape_in_a_payload_fails_the_step(pm, flaky):
    d = doc(
        {
            "id": "x",
            "connector": "core",
            "action": "transform",
            "payload": {"value": "{{ cycler.__init__.__globals__.os.popen('id').read() }}"},
        }
    )
    res = Runner(pm, env={}).run(RunRequest("r", d))
    assert res.status == "failed" and res.error["type"] == "TemplateError"


class Optional_:
    @hookimpl
    def describe_schema(self):
        return [{
            "name": "opt", "title": "Opt", "description": "optional credential", "credentials_required": False,
            "credentials": {"type": "object", "properties": {
                "token": {"type": "string", "writeOnly": True}, "account": {"type": "string"}}},
            "actions": {"go": {"title": "Go", "payload": {"type": "object"}, "output": {"type": "object"},
                               "example": {}}},
        }]

    @hookimpl
    def run_task(self, connector, action, payload, credentials, context):
        if credentials and credentials.get("fail"):
            raise PermanentError(f"account {credentials['account']} with token {credentials['token']} refused")
        return {"had": sorted(credentials or {})}


def test_optional_credentials_may_be_omitted_but_a_named_one_must_exist():
    from levqor_kernel.pipeline import validate_pipeline

    pm = make_plugin_manager(entry_points=False, plugins=[("opt", Optional_())])
    bare = doc({"id": "a", "connector": "opt", "action": "go", "payload": {}})
    assert validate_pipeline(bare, pm.catalog, credentials={}) == []
    res = Runner(pm, env={}).run(RunRequest("r", bare))
    assert res.status == "succeeded" and res.outputs["a"] == {"had": []}
    named = doc({"id": "a", "connector": "opt", "action": "go", "credential": "c", "payload": {}})
    assert [p.message for p in validate_pipeline(named, pm.catalog, credentials={})] == ["credential 'c' does not exist"]
    res = Runner(pm, env={}).run(RunRequest("r", named), credentials=lambda n, c: None)
    assert res.status == "failed" and res.error["code"] == "missing_credential"
    res = Runner(pm, env={}).run(RunRequest("r", named), credentials=lambda n, c: {"token": "tok-123456", "account": "acct-77"})
    assert res.outputs["a"] == {"had": ["account", "token"]}
    core_with_cred = doc({"id": "a", "connector": "core", "action": "transform", "credential": "x", "payload": {"value": 1}})
    assert "takes no credential" in validate_pipeline(core_with_cred, pm.catalog)[0].message


def test_only_write_only_credential_fields_are_redacted():
    pm = make_plugin_manager(entry_points=False, plugins=[("opt", Optional_())])
    named = doc({"id": "a", "connector": "opt", "action": "go", "credential": "c", "payload": {}})
    res = Runner(pm, env={}).run(RunRequest("r", named),
                                 credentials=lambda n, c: {"token": "tok-SECRET-99", "account": "acct-77", "fail": True})
    assert "acct-77" in res.error["message"] and "tok-SECRET-99" not in res.error["message"]


def test_an_output_over_the_size_limit_fails_the_step_permanently(pm, flaky):
    big = "a" * 900_000
    # one just over the limit; one string repeated: little memory, gigabytes once serialized
    for output in ({"ok": True, "s": "b" * (1024 * 1024)}, {"ok": True, "rows": [big] * 1000}):
        flaky.calls.clear()
        flaky.script = [output]
        rec = ListRecorder()
        res = Runner(pm, env={}).run(
            RunRequest("r", doc(fstep("s1"), fstep("s2"))), credentials=creds, recorder=rec
        )
        assert res.status == "failed"
        assert res.error["step"] == "s1"
        assert res.error["type"] == "TooLargeError" and res.error["code"] == "too_large"
        assert res.error["retryable"] is False
        assert "step 's1'" in res.error["message"]
        assert "limit of 1048576 bytes" in res.error["message"]
        assert len(flaky.calls) == 1  # not retried, and s2 never ran
        assert res.steps == {"s1": "failed", "s2": "skipped"}
    # the limit is the runner's setting
    flaky.script = [{"ok": True, "s": "b" * 500}]
    res = Runner(pm, env={}, max_value_bytes=400).run(
        RunRequest("r", doc(fstep("s1"))), credentials=creds
    )
    assert res.error["code"] == "too_large" and "limit of 400 bytes" in res.error["message"]
    flaky.script = [{"ok": True, "s": "b" * 300}]
    res = Runner(pm, env={}, max_value_bytes=400).run(
        RunRequest("r", doc(fstep("s1"))), credentials=creds
    )
    assert res.status == "succeeded"


def test_a_payload_over_the_size_limit_fails_the_step_before_the_connector_is_called(pm, flaky):
    d = doc(
        {
            "id": "poison",
            "connector": "core",
            "action": "transform",
            "payload": {"value": "{{ ['a'*999999]*1000 }}"},
        },
        fstep("s2"),
    )
    res = Runner(pm, env={}).run(RunRequest("r", d), credentials=creds)
    assert res.status == "failed"
    assert res.error["step"] == "poison" and res.error["code"] == "too_large"
    assert res.error["type"] == "TooLargeError" and res.error["retryable"] is False
    assert res.error["message"].startswith("step 'poison': template result too large")
    assert "limit of 1048576 bytes" in res.error["message"]
    assert flaky.calls == []
    # a smaller limit applies while rendering too
    d = doc(fstep("s1", payload={"text": "{{ 'x' * 300 }}"}))
    res = Runner(pm, env={}, max_value_bytes=200).run(RunRequest("r", d), credentials=creds)
    assert res.error["code"] == "too_large" and "limit of 200 bytes" in res.error["message"]
