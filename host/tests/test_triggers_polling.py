"""Polling app triggers end to end: real hosts (the poller behind the scheduler's leader lock),
the Feeds test connector talking HTTP to its local fake, runs on the embedded executor.

The first poll is a baseline, new items start one run each with the item's data as
``trigger``, the cursor advances, items the connector returns again start nothing, a 429 backs
off by its Retry-After, repeated failures show ``failing`` and email the owner once, and a
restarted host starts nothing twice.
"""

from __future__ import annotations

from datetime import datetime

import pytest
from feeds_fake import Feeds, FeedsUpstream
from levqor_kernel import hookimpl
from levqor_kernel.testing import FakeServer
from trigger_support import TriggerHosts, wait_for

pytestmark = [pytest.mark.backends, pytest.mark.workers]


def polling(list_name: str = "inbox", interval: int = 1, **kw) -> dict:
    return {"type": "app", "connector": "feeds", "trigger": "new_item", "credential": "feeds",
            "config": {"list": list_name}, "interval": interval, **kw}  # fmt: skip


@pytest.fixture
def upstream():
    with FeedsUpstream() as up:
        yield up


def hosts(tmp_path, upstream, **kw) -> TriggerHosts:
    env = {"LEVQOR_FEEDS_API_BASE": upstream.url, **kw.pop("env", {})}
    th = TriggerHosts(tmp_path, plugins=[Feeds()], env=env, **kw)
    th.add_credential("feeds", "feeds", {"key": upstream.key})
    return th


def test_first_poll_is_a_baseline_then_each_new_item_starts_one_run(tmp_path, upstream):
    upstream.add("inbox", "old one")
    upstream.add("inbox", "old two")
    with hosts(tmp_path, upstream) as th:
        pid = th.create_pipeline(polling())
        row = th.wait_baseline(pid)
        assert row["state"] == {"after": 2} and row["status"] == "active"
        th.wait_polls(pid, 1)
        assert th.runs(pid) == []  # what was upstream before starts nothing

        upstream.add("inbox", "new three")
        upstream.add("inbox", "new four")
        runs = th.wait_runs(pid, 2)
        assert [r["input"] for r in runs] == [{"id": 3, "text": "new three"}, {"id": 4, "text": "new four"}]
        assert [r["idempotency_key"] for r in runs] == [f"app:{pid}:3", f"app:{pid}:4"]
        assert all(r["status"] == "succeeded" for r in runs)
        # the cursor moved on: later polls ask only for newer items
        assert th.trigger_row(pid)["state"] == {"after": 4}
        assert upstream.server.requests[-1].query["after"] == ["4"]
        status = th.status(pid)
        assert status["kind"] == "polling" and status["failures"] == 0 and status["webhook_url"] is None


def test_items_seen_before_start_nothing_even_when_the_connector_returns_them_again(tmp_path, upstream):
    class Forgetful(Feeds):
        @hookimpl
        def poll_trigger(self, connector, trigger, config, credentials, state, context):
            poll = Feeds.poll_trigger(self, connector, trigger, config, credentials, None, context)
            return type(poll)(items=poll.items, state={"after": 0})

    upstream.add("inbox", "old")
    env = {"LEVQOR_FEEDS_API_BASE": upstream.url}
    with TriggerHosts(tmp_path, plugins=[Forgetful()], env=env) as th:
        th.add_credential("feeds", "feeds", {"key": upstream.key})
        pid = th.create_pipeline(polling())
        th.wait_baseline(pid)
        upstream.add("inbox", "new")
        runs = th.wait_runs(pid, 1, settle_polls=3)
        assert runs[0]["input"]["text"] == "new"


def test_a_429_backs_off_by_its_retry_after_then_polling_resumes(tmp_path, upstream):
    with hosts(tmp_path, upstream) as th:
        pid = th.create_pipeline(polling())
        th.wait_baseline(pid)
        upstream.rate_limit("inbox", retry_after=4)
        failed = wait_for(lambda: (t := th.trigger_row(pid))["failures"] == 1 and t, what="the 429")
        assert failed["last_error"]["status"] == 429 and failed["last_error"]["type"] == "RetryableError"
        assert failed["status"] == "active"  # one failure is not "failing"
        gap = datetime.fromisoformat(failed["next_poll_at"]) - datetime.fromisoformat(failed["last_polled_at"])
        assert gap.total_seconds() >= 4  # Retry-After, not the 1 s interval
        upstream.add("inbox", "after the pause")
        runs = th.wait_runs(pid, 1)
        assert runs[0]["input"]["text"] == "after the pause"
        assert th.trigger_row(pid)["failures"] == 0 and th.trigger_row(pid)["last_error"] is None


@pytest.fixture
def resend():
    """Resend's send-email endpoint (https://resend.com/docs/api-reference/emails/send-email):
    ``POST /emails`` answering ``{"id": ...}``."""
    with FakeServer() as srv:
        srv.route("POST", "/emails", lambda req: {"id": f"em_{len(srv.requests)}"})
        yield srv


def test_repeated_failures_show_failing_and_email_the_owner_once(tmp_path, upstream, resend):
    env = {"RESEND_API_KEY": "re_test", "LEVQOR_RESEND_API_BASE": resend.url,
           "LEVQOR_TRIGGER_FAIL_AFTER": "2"}  # fmt: skip
    with hosts(tmp_path, upstream, env=env) as th:
        pid = th.create_pipeline(polling())
        th.wait_baseline(pid)
        good_key, upstream.key = upstream.key, "rotated"  # the stored key stops working (401)
        row = wait_for(lambda: (t := th.trigger_row(pid))["status"] == "failing" and t, what="failing")
        assert row["failures"] == 2 and row["last_error"]["status"] == 401
        def notices():  # the owner's welcome email is sent too
            return [r for r in resend.requests_to("/emails") if "failing" in r.json()["subject"]]

        emails = wait_for(notices, what="the email")
        th.wait_polls(pid, 1)  # a third failure (backed off): no second email
        assert th.trigger_row(pid)["failures"] == 3
        assert len(notices()) == 1
        sent = emails[0].json()
        assert sent["to"] == [th.user["email"]] and "is failing" in sent["subject"]
        assert "feeds" in sent["text"] and "rotated" not in sent["text"]
        assert th.status(pid)["status"] == "failing"

        upstream.key = good_key  # fixed upstream: the next poll works and clears the state
        upstream.add("inbox", "recovered")
        th.wait_runs(pid, 1)
        row = th.trigger_row(pid)
        assert row["status"] == "active" and row["failures"] == 0 and row["notified_at"] is None


def test_a_restarted_host_starts_nothing_twice(tmp_path, upstream):
    with hosts(tmp_path, upstream) as th:
        pid = th.create_pipeline(polling())
        th.wait_baseline(pid)
        upstream.add("inbox", "one")
        th.wait_runs(pid, 1)
        th.restart()
        th.wait_polls(pid, 2)
        assert len(th.runs(pid)) == 1
        upstream.add("inbox", "two")
        runs = th.wait_runs(pid, 2)
        assert [r["input"]["text"] for r in runs] == ["one", "two"]


def test_disabling_stops_polling_and_enabling_again_takes_a_new_baseline(tmp_path, upstream):
    with hosts(tmp_path, upstream) as th:
        pid = th.create_pipeline(polling())
        th.wait_baseline(pid)
        th.disable(pid)
        assert th.trigger_row(pid) is None and th.status(pid) is None
        upstream.add("inbox", "while off")
        th.enable(pid)
        row = th.wait_baseline(pid)
        assert row["state"] == {"after": 1}
        th.wait_polls(pid, 1)
        assert th.runs(pid) == []  # the item that came while it was off starts nothing
        upstream.add("inbox", "on again")
        assert [r["input"]["text"] for r in th.wait_runs(pid, 1)] == ["on again"]


def test_an_interval_below_the_minimum_is_refused_when_saving(tmp_path, upstream):
    with hosts(tmp_path, upstream, env={"LEVQOR_POLL_MIN_INTERVAL": "60"}) as th:
        doc = {"levqor": 1, "trigger": polling(interval=30),
               "steps": [{"id": "s", "connector": "core", "action": "transform", "payload": {"value": 1}}]}  # fmt: skip
        r = th.client.post("/api/v1/pipelines", json={"pipeline": doc})
        assert r.status_code == 400, r.text
        problems = r.json()["error"]["details"]["problems"]
        assert problems[0]["pointer"] == "/trigger/interval" and "60" in problems[0]["message"]
        assert th.client.get("/api/v1/pipelines").json()["items"] == []
        doc["trigger"]["interval"] = 60
        assert th.client.post("/api/v1/pipelines", json={"pipeline": doc}).status_code == 201


@pytest.mark.services
def test_two_hosts_sharing_postgresql_start_exactly_one_run_per_item(tmp_path, upstream):
    with hosts(tmp_path, upstream, hosts=2, postgres=True) as th:
        pid = th.create_pipeline(polling())
        th.wait_baseline(pid)
        for i in range(6):
            upstream.add("inbox", f"item {i}")
        runs = th.wait_runs(pid, 6, settle_polls=3)
        assert sorted(r["input"]["text"] for r in runs) == [f"item {i}" for i in range(6)]
        assert len({r["idempotency_key"] for r in runs}) == 6
        # the other host sees the same runs, and restarting both starts nothing again
        second = th.hosts[1].state.store.runs.list(th.user["id"], pipeline_id=pid)[0]
        assert len(second) == 6
        # only the scheduler leader's poller polled
        assert sorted(h.state.triggers.polled > 0 for h in th.hosts) == [False, True]
        th.restart()
        th.wait_polls(pid, 2)
        assert len(th.runs(pid)) == 6


def test_a_polling_trigger_waits_for_its_credential(tmp_path, upstream):
    upstream.add("inbox", "before")
    with TriggerHosts(tmp_path, plugins=[Feeds()], env={"LEVQOR_FEEDS_API_BASE": upstream.url}) as th:
        doc = {"levqor": 1, "trigger": polling(),
               "steps": [{"id": "s", "connector": "core", "action": "transform", "payload": {"value": 1}}]}  # fmt: skip
        r = th.client.post("/api/v1/pipelines", json={"pipeline": doc})
        assert r.status_code == 201 and r.json()["warnings"][0]["pointer"] == "/trigger/credential"
        pid = r.json()["id"]
        status = th.status(pid)
        assert status["status"] == "paused" and "'feeds' does not exist" in status["last_error"]["message"]
        assert upstream.polls("inbox") == 0
        th.add_credential("feeds", "feeds", {"key": upstream.key})
        assert th.wait_baseline(pid)["state"] == {"after": 1}  # resumed: a first check, then items
        upstream.add("inbox", "after")
        assert [r["input"]["text"] for r in th.wait_runs(pid, 1)] == ["after"]


class Gate:
    """A billing plugin that refuses every run while ``refuse`` is set (``gate_run``)."""

    refuse = False

    @hookimpl
    def gate_run(self, user, pipeline, price, ledger):
        return {"allow": False, "reason": "out of credits"} if self.refuse else None


def test_runs_the_billing_gate_refuses_start_at_a_later_poll(tmp_path, upstream):
    gate = Gate()
    env = {"LEVQOR_FEEDS_API_BASE": upstream.url}
    with TriggerHosts(tmp_path, plugins=[Feeds(), gate], env=env) as th:
        th.add_credential("feeds", "feeds", {"key": upstream.key})
        pid = th.create_pipeline(polling())
        th.wait_baseline(pid)
        gate.refuse = True
        upstream.add("inbox", "one")
        upstream.add("inbox", "two")
        th.wait_polls(pid, 2)
        row = th.trigger_row(pid)
        assert th.runs(pid) == [] and row["state"] == {"after": 0}  # the position did not move
        assert row["last_error"]["type"] == "RunRefused" and row["status"] == "active"
        gate.refuse = False
        assert [r["input"]["text"] for r in th.wait_runs(pid, 2)] == ["one", "two"]
        assert th.trigger_row(pid)["last_error"] is None
