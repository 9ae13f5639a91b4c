"""Store additions of issue 10 (SQLite and PostgreSQL): claiming one run by id (Celery), finding
runs a lost message stranded, and run retention."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta

import pytest
from e2e_support import make_app
from levqor_host.store.tables import run_steps, runs
from levqor_host.workers.scheduler import SchedulerService
from sqlalchemy import func, select, update

# scripts/test-backends runs this file again on PostgreSQL
pytestmark = pytest.mark.backends

DOC = {
    "levqor": 1,
    "trigger": {"type": "manual"},
    "steps": [{"id": "t", "connector": "core", "action": "transform", "payload": {"value": 1}}],
}


def setup(store):
    user = store.users.create("s@example.com")
    p = store.pipelines.create(user["id"], "p", DOC)
    return user, p


def test_claim_run_takes_a_queued_run_once(store):
    user, p = setup(store)
    run, _ = store.runs.create(user["id"], p["id"], None, {})
    got = store.leases.claim("w1", run["id"], lease_seconds=30)
    assert got["status"] == "running" and got["lease_owner"] == "w1" and got["claims"] == 1
    # a second delivery while the lease is live: nothing
    assert store.leases.claim("w2", run["id"], lease_seconds=30) is None
    assert store.runs.finish(run["id"], "w1", "succeeded")
    assert store.leases.claim("w2", run["id"], lease_seconds=30) is None  # final
    assert store.leases.claim("w2", "run_unknown", lease_seconds=30) is None


def test_claim_run_races_have_one_winner(store):
    user, p = setup(store)
    run, _ = store.runs.create(user["id"], p["id"], None, {})
    wins: list[str] = []
    barrier = threading.Barrier(8)

    def claim(i: int) -> None:
        barrier.wait()
        if store.leases.claim(f"w{i}", run["id"], lease_seconds=30) is not None:
            wins.append(f"w{i}")

    threads = [threading.Thread(target=claim, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(wins) == 1


def test_capped_claims_of_one_users_runs_racing_have_one_winner(store):
    """Eight deliveries of eight runs of one user, with a cap of one running run per user."""
    user, p = setup(store)
    ids = [store.runs.create(user["id"], p["id"], None, {})[0]["id"] for _ in range(8)]
    wins: list[str] = []
    barrier = threading.Barrier(8)

    def claim(rid: str) -> None:
        barrier.wait()
        if store.leases.claim("w", rid, lease_seconds=30, max_running_per_user=1) is not None:
            wins.append(rid)

    threads = [threading.Thread(target=claim, args=(rid,)) for rid in ids]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(wins) == 1
    first = store.runs.get(None, wins[0])
    assert store.runs.finish(wins[0], "w", "succeeded")
    after = store.leases.claim("w", next(r for r in ids if r != wins[0]), lease_seconds=30,
                            max_running_per_user=1)
    assert after is not None and after["started_at"] >= store.runs.get(None, first["id"])["finished_at"]


def test_claim_run_takes_over_an_expired_lease_and_respects_the_user_cap(store):
    user, p = setup(store)
    a, _ = store.runs.create(user["id"], p["id"], None, {})
    b, _ = store.runs.create(user["id"], p["id"], None, {})
    assert store.leases.claim("dead", a["id"], lease_seconds=0.2) is not None
    assert store.leases.claim("w2", b["id"], lease_seconds=30, max_running_per_user=1) is None  # cap
    time.sleep(0.4)
    # a's lease expired: it no longer counts, and it can be claimed again
    assert store.leases.claim("w2", b["id"], lease_seconds=30, max_running_per_user=1) is not None
    again = store.leases.claim("w3", a["id"], lease_seconds=30)
    assert again["lease_owner"] == "w3" and again["claims"] == 2
    assert not store.runs.finish(a["id"], "dead", "succeeded")  # the dead worker lost it


def test_runs_to_resend(store):
    user, p = setup(store)
    old, _ = store.runs.create(user["id"], p["id"], None, {})
    new, _ = store.runs.create(user["id"], p["id"], None, {})
    expired, _ = store.runs.create(user["id"], p["id"], None, {})
    store.leases.claim("dead", expired["id"], lease_seconds=0.1)
    with store.write() as conn:
        conn.execute(
            update(runs)
            .where(runs.c.id == old["id"])
            .values(created_at=datetime.now(UTC) - timedelta(minutes=5))
        )
    time.sleep(0.3)
    found = store.leases.stranded(queued_before=datetime.now(UTC) - timedelta(minutes=1))
    assert found == {"expired": [expired["id"]], "queued": [old["id"]]}
    assert store.leases.stranded(queued_before=None)["queued"] == []
    assert new["id"] not in found["queued"]


def age(store, run_id: str, days: float) -> None:
    t = datetime.now(UTC) - timedelta(days=days)
    with store.write() as conn:
        conn.execute(update(runs).where(runs.c.id == run_id).values(created_at=t, finished_at=t))


def test_prune_runs_deletes_only_old_finished_runs(store):
    user, p = setup(store)
    ids = []
    for status in ("succeeded", "failed", "cancelled", "queued", "running"):
        r, _ = store.runs.create(user["id"], p["id"], None, {})
        ids.append(r["id"])
        if status in ("succeeded", "failed", "cancelled", "running"):
            store.leases.claim("w", r["id"], lease_seconds=60)
            store.steps.record(
                r["id"],
                "t",
                position=0,
                connector="core",
                action="transform",
                status="succeeded",
                attempts=1,
            )
        if status in ("succeeded", "failed", "cancelled"):
            store.runs.finish(r["id"], "w", status)
        age(store, r["id"], 40)
    recent, _ = store.runs.create(user["id"], p["id"], None, {})
    store.leases.claim("w", recent["id"], lease_seconds=60)
    store.runs.finish(recent["id"], "w", "succeeded")
    assert store.runs.prune(datetime.now(UTC) - timedelta(days=30), batch=2) == 3
    left = {r["id"] for r in store.runs.list(user["id"], limit=100)[0]}
    assert left == {ids[3], ids[4], recent["id"]}  # unfinished and recent runs stay
    with store.read() as conn:
        orphans = conn.execute(
            select(func.count()).select_from(run_steps).where(run_steps.c.run_id.in_(ids[:3]))
        ).scalar_one()
    assert orphans == 0


def test_the_scheduler_leader_prunes_with_the_retention_setting(tmp_path):
    app = make_app(tmp_path, start_workers=False, database={"run_retention_days": 30})
    st = app.extensions["levqor"]
    user, p = setup(st.store)
    r, _ = st.store.runs.create(user["id"], p["id"], None, {})
    st.store.leases.claim("w", r["id"], lease_seconds=60)
    st.store.runs.finish(r["id"], "w", "succeeded")
    age(st.store, r["id"], 31)
    sched = SchedulerService(st.runs, ttl=1.0, sync_interval=0.1)
    sched.start()
    try:
        deadline = time.monotonic() + 5
        while not sched.is_leader and time.monotonic() < deadline:
            time.sleep(0.05)
        assert sched.sched.get_job(SchedulerService.PRUNE_JOB) is not None
        assert sched.prune_runs() == 1
        assert st.store.runs.get(None, r["id"]) is None
    finally:
        sched.stop()
        st.store.close()
    off = make_app(tmp_path / "off", start_workers=False)  # default 0: keep forever, no job
    s2 = SchedulerService(off.extensions["levqor"].runs, ttl=1.0, sync_interval=0.1)
    s2.start()
    try:
        deadline = time.monotonic() + 5
        while not s2.is_leader and time.monotonic() < deadline:
            time.sleep(0.05)
        assert s2.is_leader and s2.sched.get_job(SchedulerService.PRUNE_JOB) is None
        assert s2.prune_runs() is None
    finally:
        s2.stop()
        off.extensions["levqor"].store.close()
