"""The triggers repository on SQLite and PostgreSQL: a due trigger is claimed by one of many
claimers at once, outcomes move the next poll (backoff, Retry-After, failing), seen ids are
bounded, a changed spec starts over, credentials pause and resume."""

from __future__ import annotations

import threading
from datetime import datetime

import pytest
from levqor_host.store.triggers import BACKOFF_CAP, backoff_seconds, route_matches


def spec(**kw):
    out = {"connector": "feeds", "trigger": "new_item", "kind": "polling", "credential": "c",
           "config": {"list": "a"}, "spec_hash": "h1", "interval": 60}  # fmt: skip
    out.update(kw)
    return out


@pytest.fixture
def owner(store):
    user = store.users.create("t@example.com")
    doc = {"levqor": 1, "trigger": {"type": "manual"}, "steps": []}
    p = store.pipelines.create(user["id"], "p", doc)
    return user, p


def test_a_due_trigger_is_claimed_by_exactly_one_of_many_claimers(store, owner, make_store, vault):
    user, p = owner
    store.triggers.save(p["id"], user["id"], **spec())
    stores = [store, make_store(store.url, store.vault)]
    barrier = threading.Barrier(8)
    got: list[list] = []
    lock = threading.Lock()

    def claim(s):
        barrier.wait()
        rows = s.triggers.claim_due(limit=10, lease_seconds=300)
        with lock:
            got.append(rows)

    threads = [threading.Thread(target=claim, args=(stores[i % 2],)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    claimed = [r for rows in got if rows for r in rows]
    assert len(got) == 8 and len(claimed) == 1
    assert claimed[0]["pipeline_id"] == p["id"]
    assert store.triggers.claim_due() == []  # leased: not due again until the lease ends
    row = store.triggers.get_by_pipeline(p["id"])
    assert (datetime.fromisoformat(row["next_poll_at"]) - datetime.fromisoformat(claimed[0]["next_poll_at"])).total_seconds() >= 299


def test_outcomes_set_the_next_poll(store, owner):
    user, p = owner
    t = store.triggers.save(p["id"], user["id"], **spec())
    assert store.triggers.record_success(t["id"], "h1", {"after": 3}, 60)
    row = store.triggers.get(t["id"])
    gap = (datetime.fromisoformat(row["next_poll_at"]) - datetime.fromisoformat(row["last_polled_at"])).total_seconds()
    assert row["state"] == {"after": 3} and 60 <= gap <= 66  # the interval plus jitter
    assert not store.triggers.record_success(t["id"], "other-spec", {"after": 9}, 60)

    err = {"type": "RetryableError", "message": "429"}
    row = store.triggers.record_failure(t["id"], "h1", err, 60, fail_after=3, retry_after=900)
    gap = (datetime.fromisoformat(row["next_poll_at"]) - datetime.fromisoformat(row["last_polled_at"])).total_seconds()
    assert row["failures"] == 1 and row["status"] == "active" and 899 <= gap <= 901
    row = store.triggers.record_failure(t["id"], "h1", err, 60, fail_after=3)
    assert row["failures"] == 2 and row["status"] == "active"
    row = store.triggers.record_failure(t["id"], "h1", err, 60, fail_after=3)
    assert row["failures"] == 3 and row["status"] == "failing" and row["last_error"] == err
    assert store.triggers.claim_notice(t["id"]) and not store.triggers.claim_notice(t["id"])
    assert store.triggers.record_success(t["id"], "h1", {"after": 4}, 60)
    row = store.triggers.get(t["id"])
    assert (row["status"], row["failures"], row["notified_at"], row["last_error"]) == ("active", 0, None, None)
    assert store.triggers.record_failure(t["id"], "other-spec", err, 60, fail_after=3) is None


def test_backoff_doubles_up_to_an_hour_and_honours_retry_after():
    assert [backoff_seconds(60, n) for n in (1, 2, 3, 5, 6, 30)] == [120, 240, 480, 1920, BACKOFF_CAP, BACKOFF_CAP]
    assert backoff_seconds(7200, 3) == 7200  # an interval longer than the cap is kept
    assert backoff_seconds(60, 1, retry_after=5) == 60  # never sooner than the interval
    assert backoff_seconds(60, 1, retry_after=600) == 600
    assert backoff_seconds(60, 1, retry_after=10**9) == 86400


def test_seen_ids_are_bounded_to_the_newest(store, owner):
    user, p = owner
    t = store.triggers.save(p["id"], user["id"], **spec())
    store.triggers.seen_max = 100
    for start in (0, 60, 120):
        store.triggers.add_seen(t["id"], [f"i{n}" for n in range(start, start + 60)])
    ids = [f"i{n}" for n in range(180)]
    assert store.triggers.seen(t["id"], ids) == {f"i{n}" for n in range(80, 180)}
    assert store.triggers.claim_seen(t["id"], "delivery:1")
    assert not store.triggers.claim_seen(t["id"], "delivery:1")
    store.triggers.forget_seen(t["id"], "delivery:1")
    assert store.triggers.claim_seen(t["id"], "delivery:1")


def test_a_new_spec_starts_over_and_the_same_spec_keeps_its_state(store, owner):
    user, p = owner
    t = store.triggers.save(p["id"], user["id"], **spec())
    store.triggers.record_success(t["id"], "h1", {"after": 5}, 60)
    store.triggers.add_seen(t["id"], ["5"])
    same = store.triggers.save(p["id"], user["id"], **spec(interval=120))
    assert same["id"] == t["id"] and same["state"] == {"after": 5} and same["interval"] == 120
    assert store.triggers.seen(t["id"], ["5"]) == {"5"}
    new = store.triggers.save(p["id"], user["id"], **spec(spec_hash="h2", config={"list": "b"}))
    assert new["id"] == t["id"] and new["state"] is None and new["config"] == {"list": "b"}
    assert store.triggers.seen(t["id"], ["5"]) == set()
    assert store.triggers.delete(p["id"])["id"] == t["id"]
    assert store.triggers.get_by_pipeline(p["id"]) is None and store.triggers.delete(p["id"]) is None


def test_a_credential_pauses_and_resumes_its_triggers(store, owner):
    user, p = owner
    t = store.triggers.save(p["id"], user["id"], **spec())
    store.triggers.record_success(t["id"], "h1", {"after": 1}, 60)
    assert store.triggers.pause_for_credential(user["id"], "c", "the refresh token was refused") == 1
    row = store.triggers.get(t["id"])
    assert row["status"] == "paused" and row["last_error"]["type"] == "CredentialError"
    assert store.triggers.claim_due() == [] and store.triggers.paused_for(user["id"], "c")[0]["id"] == t["id"]
    assert store.triggers.resume_for_credential(user["id"], "other") == 0
    assert store.triggers.resume_for_credential(user["id"], "c") == 1
    assert [r["id"] for r in store.triggers.claim_due()] == [t["id"]]  # due at once
    # a paused trigger resumes when its pipeline is saved again (same spec)
    store.triggers.pause_for_credential(user["id"], "c", "x")
    assert store.triggers.save(p["id"], user["id"], **spec())["status"] == "active"


def test_instant_rows_are_found_by_token_and_routed_by_connector(store, owner):
    user, p = owner
    t = store.triggers.save(
        p["id"], user["id"],
        **spec(kind="instant", interval=None, trigger="routed"),
        token="tok-1", secret="s3cret", registration={"webhook_id": "w1"}, route={"channel": "a"},
    )  # fmt: skip
    assert store.triggers.get_by_token("tok-1")["id"] == t["id"] and store.triggers.get_by_token("x") is None
    assert store.triggers.secret(t["id"]) == "s3cret"
    assert "s3cret" not in str(store.triggers.get(t["id"]))
    assert [r["id"] for r in store.triggers.by_connector("feeds", {"channel": "a", "team": "T"})] == [t["id"]]
    assert store.triggers.by_connector("feeds", {"channel": "b"}) == []
    assert store.triggers.claim_due() == []  # instant triggers are never polled


def test_routes_match_when_the_item_carries_every_key_of_the_registration():
    assert route_matches({"channel": "a"}, {"channel": "a", "team": "t"})
    assert route_matches({"channel": "a", "team": "t"}, {"channel": "a", "team": "t"})
    assert not route_matches({"channel": "a", "team": "t"}, {"channel": "a"})
    assert not route_matches({"channel": "a"}, {"channel": "b"})
    assert not route_matches({"channel": "a"}, None)
    assert not route_matches(None, {"channel": "a"}) and not route_matches({}, {"channel": "a"})


def test_a_switched_off_pipeline_is_not_scheduled(store, owner):
    user, _p = owner
    doc = {"levqor": 1, "trigger": {"type": "schedule", "cron": "* * * * *"}, "steps": []}
    sched = store.pipelines.create(user["id"], "s", doc)
    assert [p["id"] for p in store.pipelines.list_scheduled()] == [sched["id"]]
    off = store.pipelines.set_enabled(user["id"], sched["id"], False)
    assert off["enabled"] is False and store.pipelines.list_scheduled() == []
    assert store.pipelines.set_enabled(user["id"], sched["id"], True)["enabled"] is True
    assert store.pipelines.set_enabled("someone-else", sched["id"], False) is None
