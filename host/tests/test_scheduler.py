"""Cron triggers fire once per deployment: a leader lock plus an idempotency key per minute."""

from __future__ import annotations

import time

import pytest
from e2e_support import make_app
from levqor_host.cron import next_fire_times
from levqor_host.workers.scheduler import SchedulerService

# scripts/test-backends runs this file again on PostgreSQL
pytestmark = pytest.mark.backends


def sched_doc(cron="*/5 * * * *", tz="Europe/London"):
    return {"levqor": 1, "trigger": {"type": "schedule", "cron": cron, "timezone": tz, "input": {"k": "v"}},
            "steps": [{"id": "t", "connector": "core", "action": "transform",
                       "payload": {"value": "{{ trigger.k }} at {{ trigger.scheduled_at }}"}}]}


def test_only_one_of_two_schedulers_leads_and_a_fire_starts_one_run(tmp_path):
    a = make_app(tmp_path, start_workers=False)
    b = make_app(tmp_path, start_workers=False)  # a second process on the same database
    sa, sb = a.extensions["levqor"], b.extensions["levqor"]
    user = sa.store.users.create("s@example.com")
    p = sa.store.pipelines.create(user["id"], "sched", sched_doc())
    one = SchedulerService(sa.runs, ttl=1.0, sync_interval=0.1)
    two = SchedulerService(sb.runs, ttl=1.0, sync_interval=0.1)
    one.start()
    two.start()
    try:
        deadline = time.monotonic() + 5
        while not (one.is_leader or two.is_leader) and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.3)
        assert one.is_leader != two.is_leader
        leader, follower = (one, two) if one.is_leader else (two, one)
        assert [j.id for j in leader.sched.get_jobs() if not j.id.startswith("levqor:")] == [p["id"]]
        assert leader.next_fire() is not None and follower.next_fire() is None
        # both try to fire the same minute: the follower refuses, and the key dedups anyway
        r1 = leader.fire(p["id"])
        assert follower.fire(p["id"]) is None
        follower.is_leader = True  # simulate a lock hand-over in the same minute
        r2 = follower.fire(p["id"])
        follower.is_leader = False
        assert r1["id"] == r2["id"]
        runs, _ = sa.store.runs.list(user["id"], pipeline_id=p["id"])
        assert len(runs) == 1 and runs[0]["trigger"] == "schedule"
        # the leader stops: the other takes over after the lock expires
        leader.stop()
        deadline = time.monotonic() + 5
        while not follower.is_leader and time.monotonic() < deadline:
            time.sleep(0.05)
        assert follower.is_leader
    finally:
        one.stop()
        two.stop()
        for s in (sa, sb):
            s.store.close()


def test_scheduler_follows_pipeline_changes(tmp_path):
    app = make_app(tmp_path, start_workers=False)
    st = app.extensions["levqor"]
    user = st.store.users.create("s@example.com")
    p = st.store.pipelines.create(user["id"], "sched", sched_doc())
    s = SchedulerService(st.runs, ttl=2.0, sync_interval=0.1)
    s.start()
    try:
        deadline = time.monotonic() + 5
        def pipeline_jobs():
            return [j.id for j in s.sched.get_jobs() if not j.id.startswith("levqor:")]

        while not pipeline_jobs() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert pipeline_jobs() == [p["id"]]
        st.store.pipelines.archive(user["id"], p["id"])
        deadline = time.monotonic() + 5
        while pipeline_jobs() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert pipeline_jobs() == []
    finally:
        s.stop()
        st.store.close()


def test_next_fire_times_respect_the_time_zone():
    times = next_fire_times("0 9 * * *", "America/New_York", 3)
    assert len(times) == 3
    assert all(t.endswith("-05:00") or t.endswith("-04:00") for t in times)
    assert all("T09:00:00" in t for t in times)
