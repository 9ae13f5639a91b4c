"""The Store on SQLite and PostgreSQL (see conftest.py for the ``store`` fixtures)."""

from __future__ import annotations

import hashlib
import re
import threading
import time
from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from levqor_host.store import Conflict, NotFound, Store, script_heads
from levqor_host.store import tables as t
from sqlalchemy import inspect, select, text, update

DOC = {
    "levqor": 1,
    "trigger": {"type": "manual"},
    "steps": [{"id": "a", "connector": "core", "action": "echo", "payload": {"x": 1}}],
}
SCHEDULED_DOC = {**DOC, "trigger": {"type": "schedule", "cron": "*/5 * * * *"}}


def _doc(n: int) -> dict:
    return {**DOC, "description": f"version {n}"}


@pytest.fixture
def alice(store: Store) -> dict:
    return store.users.create("alice@example.com", name="Alice")


@pytest.fixture
def bob(store: Store) -> dict:
    return store.users.create("bob@example.com")


@pytest.fixture
def pipeline(store: Store, alice: dict) -> dict:
    return store.pipelines.create(alice["id"], "Alice's pipeline", DOC)


def _runs(store: Store, user: dict, pipeline: dict, n: int) -> list[dict]:
    return [store.runs.create(user["id"], pipeline["id"], 1, {"i": i})[0] for i in range(n)]


def _aware(iso: str) -> datetime:
    dt = datetime.fromisoformat(iso)
    assert dt.utcoffset() == timedelta(0), iso
    return dt


# --------------------------------------------------------------------------- migrations


def test_migrations_apply_and_reapply(fresh_store: Store):
    s = fresh_store
    assert s.is_migrated() is False
    s.upgrade()
    assert s.is_migrated() is True
    names = set(inspect(s.engine).get_table_names())
    expected = {
        "users",
        "api_keys",
        "pipelines",
        "pipeline_versions",
        "credentials",
        "runs",
        "run_steps",
        "webhook_deliveries",
        "locks",
        "meta",
        "credit_ledger",
        "usage_daily",
        "referrals",
        "events",
        "alembic_version",
    }
    assert expected <= names
    run_indexes = {ix["name"]: ix["column_names"] for ix in inspect(s.engine).get_indexes("runs")}
    assert run_indexes["ix_runs_status_lease_created"] == [
        "status",
        "lease_expires_at",
        "created_at",
    ]
    assert run_indexes["ix_runs_user_id_created_at"] == ["user_id", "created_at"]

    s.upgrade()  # idempotent
    assert s.is_migrated() is True
    with s.engine.connect() as conn:
        # one head: the newest migration (0002 billing, 0003 auth, ...)
        assert conn.execute(text("SELECT version_num FROM alembic_version")).scalars().all() == (
            sorted(script_heads())
        )


def test_migrated_schema_matches_tables_module(store: Store):
    with store.engine.connect() as conn:
        ctx = MigrationContext.configure(conn, opts={"compare_type": True})
        diff = compare_metadata(ctx, t.metadata)
    assert diff == []


def test_ping_and_dialect(store: Store):
    store.ping()
    assert store.dialect in ("sqlite", "postgresql")
    if store.dialect == "sqlite":
        with store.engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
            assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
            assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == 10000


# --------------------------------------------------------------------------- users


def test_users(store: Store):
    a = store.users.create("Alice@Example.com", name="Alice", plan="pro", is_admin=True)
    assert a["id"].startswith("usr_")
    assert a["email"] == "alice@example.com"
    assert (a["name"], a["plan"], a["is_admin"]) == ("Alice", "pro", True)
    assert re.fullmatch(r"[A-Z0-9]{8}", a["referral_code"])
    _aware(a["created_at"])
    b = store.users.create("bob@example.com")
    assert (b["plan"], b["is_admin"], b["name"]) == ("free", False, None)
    assert b["referral_code"] != a["referral_code"]

    assert store.users.get(a["id"]) == a
    assert store.users.get_by_email("ALICE@example.com ") == a
    assert store.users.get("usr_nope") is None
    assert store.users.get_by_email("nobody@example.com") is None
    with pytest.raises(Conflict):
        store.users.create("alice@EXAMPLE.com")
    assert store.users.count() == 2
    assert [u["id"] for u in store.users.list()] == [a["id"], b["id"]]


# --------------------------------------------------------------------------- API keys


def test_api_key_plaintext_shown_once_and_only_hash_stored(store: Store, alice: dict):
    plaintext, key = store.api_keys.create(alice["id"], name="ci", scopes=["runs:write"])
    m = re.fullmatch(r"lvq_([0-9a-f]{8})_([A-Za-z0-9_-]{32,})", plaintext)
    assert m, plaintext
    assert key["prefix"] == m.group(1)
    assert key["scopes"] == ["runs:write"]
    assert key["revoked"] is False
    assert plaintext not in repr(key)

    with store.engine.connect() as conn:
        rows = conn.execute(select(t.api_keys)).mappings().all()
    assert len(rows) == 1
    row = dict(rows[0])
    assert row["key_hash"] == hashlib.sha256(plaintext.encode()).hexdigest()
    assert row["prefix"] == m.group(1)
    for value in row.values():
        assert m.group(2) not in str(value)
        assert plaintext not in str(value)

    listed = store.api_keys.list(alice["id"])
    assert [k["id"] for k in listed] == [key["id"]]
    assert "key_hash" not in listed[0]


def test_authenticate_key(store: Store, alice: dict, bob: dict):
    p1, k1 = store.api_keys.create(alice["id"], name="one", scopes=["read"])
    p2, k2 = store.api_keys.create(alice["id"], name="two", scopes=[])
    p3, k3 = store.api_keys.create(bob["id"], name="bob", scopes=["admin"])

    # lookup by prefix: each plaintext finds its own key and user
    for plaintext, key, user in ((p1, k1, alice), (p2, k2, alice), (p3, k3, bob)):
        got = store.api_keys.authenticate(plaintext)
        assert got is not None
        u, k = got
        assert (u["id"], u["email"]) == (user["id"], user["email"])
        assert k["id"] == key["id"]
        assert k["scopes"] == key["scopes"]
        assert k["last_used_at"] is not None

    prefix, secret = p1.split("_", 2)[1:]
    wrong_secret = secret[:-1] + ("A" if secret[-1] != "A" else "B")
    assert store.api_keys.authenticate(f"lvq_{prefix}_{wrong_secret}") is None
    assert store.api_keys.authenticate(f"lvq_{'0' * 8}_{secret}") is None
    for junk in ("", "lvq_", "lvq_abc_def", "Bearer x", p1 + "x", "xyz_" + p1[4:]):
        assert store.api_keys.authenticate(junk) is None

    assert store.api_keys.revoke(bob["id"], k1["id"]) is False  # not bob's key
    assert store.api_keys.authenticate(p1) is not None
    assert store.api_keys.revoke(alice["id"], k1["id"]) is True
    assert store.api_keys.revoke(alice["id"], k1["id"]) is False  # already revoked
    assert store.api_keys.authenticate(p1) is None
    assert store.api_keys.authenticate(p2) is not None
    revoked = {k["id"]: k for k in store.api_keys.list(alice["id"])}[k1["id"]]
    assert revoked["revoked"] is True and revoked["revoked_at"]

    with pytest.raises(NotFound):
        store.api_keys.create("usr_missing", name="x", scopes=[])


# --------------------------------------------------------------------------- pipelines


def test_pipeline_versions_are_immutable(store: Store, alice: dict):
    p = store.pipelines.create(alice["id"], "First", _doc(1))
    assert p["id"].startswith("pl_")
    assert p["version"] == 1 and p["doc"] == _doc(1) and p["name"] == "First"
    assert p["archived"] is False and p["has_webhook_secret"] is False
    assert len(p["webhook_token"]) >= 32

    p2 = store.pipelines.update(alice["id"], p["id"], _doc(2), name="Renamed")
    assert p2["version"] == 2 and p2["doc"] == _doc(2) and p2["name"] == "Renamed"
    assert p2["webhook_token"] == p["webhook_token"]
    assert store.pipelines.get_version(alice["id"], p["id"], 1)["doc"] == _doc(1)
    assert store.pipelines.get_version(alice["id"], p["id"], 2)["doc"] == _doc(2)
    assert store.pipelines.get_version(alice["id"], p["id"], 3) is None
    versions = store.pipelines.list_versions(alice["id"], p["id"])
    assert [(v["version"], v["doc"]) for v in versions] == [(1, _doc(1)), (2, _doc(2))]
    got = store.pipelines.get(alice["id"], p["id"])
    assert got["version"] == 2 and got["doc"] == _doc(2)

    p3 = store.pipelines.update(alice["id"], p["id"], _doc(3))
    assert p3["version"] == 3 and p3["name"] == "Renamed"
    assert store.pipelines.get_version(alice["id"], p["id"], 1)["doc"] == _doc(1)


def test_list_archive_and_webhook_lookup(store: Store, alice: dict):
    a = store.pipelines.create(alice["id"], "a", DOC)
    b = store.pipelines.create(alice["id"], "b", SCHEDULED_DOC)
    assert [p["id"] for p in store.pipelines.list(alice["id"])] == [b["id"], a["id"]]
    assert store.pipelines.webhook_target(a["webhook_token"]).pipeline["id"] == a["id"]
    assert store.pipelines.webhook_target("nope") is None
    assert [p["id"] for p in store.pipelines.list_scheduled()] == [b["id"]]

    assert store.pipelines.archive(alice["id"], a["id"]) is True
    assert store.pipelines.archive(alice["id"], a["id"]) is False
    assert [p["id"] for p in store.pipelines.list(alice["id"])] == [b["id"]]
    assert {p["id"] for p in store.pipelines.list(alice["id"], include_archived=True)} == {
        a["id"],
        b["id"],
    }
    assert store.pipelines.get(alice["id"], a["id"])["archived"] is True
    assert store.pipelines.webhook_target(a["webhook_token"]) is None

    # a later version without a schedule trigger drops out of the scheduled list
    store.pipelines.update(alice["id"], b["id"], DOC)
    assert store.pipelines.list_scheduled() == []
    store.pipelines.update(alice["id"], b["id"], SCHEDULED_DOC)
    assert [p["version"] for p in store.pipelines.list_scheduled()] == [3]
    store.pipelines.archive(alice["id"], b["id"])
    assert store.pipelines.list_scheduled() == []


def test_webhook_target_is_pipeline_owner_secret_and_credential_names(
    store: Store, alice: dict, bob: dict
):
    a = store.pipelines.create(alice["id"], "a", DOC)
    store.credentials.create(alice["id"], "ops slack", "slack", {"webhook_url": "https://x/y"})
    store.credentials.create(bob["id"], "bob notion", "notion", {"token": "secret_bob"})
    got = store.pipelines.webhook_target(a["webhook_token"])
    assert got.pipeline == store.pipelines.get(alice["id"], a["id"])
    assert got.user == store.users.get(alice["id"])
    assert got.secret is None
    assert got.credentials == {"ops slack": "slack"}  # names only, and only the owner's
    assert "https://x/y" not in repr(got)

    store.pipelines.set_webhook_secret(alice["id"], a["id"], "whsec-target")
    got = store.pipelines.webhook_target(a["webhook_token"])
    assert got.secret == "whsec-target" and got.pipeline["has_webhook_secret"] is True
    assert "whsec-target" not in repr(got)

    assert store.pipelines.webhook_target("nope") is None
    store.pipelines.archive(alice["id"], a["id"])
    assert store.pipelines.webhook_target(a["webhook_token"]) is None


def test_webhook_secret_encrypted(store: Store, alice: dict, pipeline: dict):
    assert store.pipelines.get_webhook_secret(pipeline["id"]) is None
    assert store.pipelines.set_webhook_secret(alice["id"], pipeline["id"], "whsec-very-secret") is True
    assert store.pipelines.get(alice["id"], pipeline["id"])["has_webhook_secret"] is True
    assert store.pipelines.get_webhook_secret(pipeline["id"]) == "whsec-very-secret"
    with store.engine.connect() as conn:
        raw = conn.execute(
            select(t.pipelines.c.webhook_secret_enc).where(t.pipelines.c.id == pipeline["id"])
        ).scalar_one()
    assert "whsec-very-secret" not in raw
    assert store.pipelines.set_webhook_secret(alice["id"], pipeline["id"], None) is True
    assert store.pipelines.get_webhook_secret(pipeline["id"]) is None
    assert store.pipelines.get(alice["id"], pipeline["id"])["has_webhook_secret"] is False


def test_other_users_ids_are_invisible(store: Store, alice: dict, bob: dict, pipeline: dict):
    pid = pipeline["id"]
    cred = store.credentials.create(alice["id"], "slack", "slack", {"token": "xoxb-1"})
    run, _ = store.runs.create(alice["id"], pid, 1, {})
    plaintext, key = store.api_keys.create(alice["id"], name="k", scopes=[])
    store.steps.record(
        run["id"], "a", position=0, connector="core", action="echo", status="succeeded", attempts=1
    )

    assert store.pipelines.get(bob["id"], pid) is None
    assert store.pipelines.get_any(pid)["user_id"] == alice["id"]  # for scheduler/workers
    assert store.pipelines.get_any("pl_unknown") is None
    assert store.pipelines.update(bob["id"], pid, _doc(9)) is None
    assert store.pipelines.archive(bob["id"], pid) is False
    assert store.pipelines.list_versions(bob["id"], pid) is None
    assert store.pipelines.get_version(bob["id"], pid, 1) is None
    assert store.pipelines.set_webhook_secret(bob["id"], pid, "x") is False
    assert store.pipelines.list(bob["id"], include_archived=True) == []
    assert store.credentials.get(bob["id"], cred["id"]) is None
    assert store.credentials.delete(bob["id"], cred["id"]) is False
    assert store.credentials.values(bob["id"], "slack") is None
    assert store.credentials.list(bob["id"]) == []
    assert store.runs.get(bob["id"], run["id"]) is None
    assert store.runs.list(bob["id"]) == ([], None)
    assert store.runs.list(bob["id"], pipeline_id=pid) == ([], None)
    assert store.runs.request_cancel(bob["id"], run["id"]) is None
    assert store.api_keys.revoke(bob["id"], key["id"]) is False
    assert store.api_keys.list(bob["id"]) == []
    with pytest.raises(NotFound):
        store.runs.create(bob["id"], pid, 1, {})
    bob_pl = store.pipelines.create(bob["id"], "bob's", DOC)
    bob_run, _ = store.runs.create(bob["id"], bob_pl["id"], 1, {}, copy_steps_from=run["id"])
    assert store.runs.get(bob["id"], bob_run["id"])["steps"] == []  # not copied from alice's run

    # nothing changed for alice
    assert store.pipelines.get(alice["id"], pid)["version"] == 1
    assert store.pipelines.get(alice["id"], pid)["archived"] is False
    assert store.credentials.get(alice["id"], cred["id"])["name"] == "slack"
    assert store.runs.get(alice["id"], run["id"])["status"] == "queued"
    assert store.runs.get(None, run["id"])["id"] == run["id"]  # workers see every run
    assert store.api_keys.authenticate(plaintext) is not None


# --------------------------------------------------------------------------- credentials


def test_credentials_encrypted_at_rest_and_never_listed(store: Store, alice: dict):
    values = {"token": "xoxb-super-secret-token", "team": "T123"}
    c = store.credentials.create(alice["id"], "my slack", "slack", values)
    assert c["id"].startswith("cred_")
    assert set(c) == {"id", "name", "connector", "created_at", "auth", "account", "status", "expires_at"}
    assert (c["auth"], c["account"], c["status"], c["expires_at"]) == (None, None, None, None)

    with store.engine.connect() as conn:
        raw = conn.execute(select(t.credentials)).mappings().one()
    for v in raw.values():
        assert "xoxb-super-secret-token" not in str(v)
        assert "T123" not in str(v)
    assert store.vault.decrypt(raw["value_enc"]) == values

    listed = store.credentials.list(alice["id"])
    assert listed == [c]
    assert "xoxb" not in repr(listed)
    assert store.credentials.get(alice["id"], c["id"]) == c
    assert store.credentials.values(alice["id"], "my slack") == ("slack", values)
    assert store.credentials.values(alice["id"], "other") is None

    with pytest.raises(Conflict):
        store.credentials.create(alice["id"], "my slack", "slack", {"token": "x"})
    other = store.credentials.create(alice["id"], "another", "notion", {"token": "n"})
    assert [x["name"] for x in store.credentials.list(alice["id"])] == ["another", "my slack"]

    assert store.credentials.delete(alice["id"], c["id"]) is True
    assert store.credentials.delete(alice["id"], c["id"]) is False
    assert store.credentials.get(alice["id"], c["id"]) is None
    assert store.credentials.list(alice["id"]) == [other]


# --------------------------------------------------------------------------- runs


def test_create_run_and_idempotency_key(store: Store, alice: dict, bob: dict, pipeline: dict):
    r1, created = store.runs.create(
        alice["id"], pipeline["id"], 1, {"a": 1}, trigger="webhook", idempotency_key="k-1"
    )
    assert created is True
    assert r1["id"].startswith("run_")
    assert (r1["status"], r1["trigger"], r1["input"], r1["claims"]) == (
        "queued",
        "webhook",
        {"a": 1},
        0,
    )
    r2, created2 = store.runs.create(alice["id"], pipeline["id"], 1, {"a": 2}, idempotency_key="k-1")
    assert created2 is False
    assert r2["id"] == r1["id"] and r2["input"] == {"a": 1}
    assert store.runs.find_by_idempotency_key(alice["id"], "k-1")["id"] == r1["id"]
    assert store.runs.find_by_idempotency_key(bob["id"], "k-1") is None
    assert store.runs.find_by_idempotency_key(alice["id"], "k-unused") is None

    # another key, no key, and the same key for another user are all new runs
    r3, c3 = store.runs.create(alice["id"], pipeline["id"], 1, {}, idempotency_key="k-2")
    r4, c4 = store.runs.create(alice["id"], pipeline["id"], None, {})
    bob_pl = store.pipelines.create(bob["id"], "b", DOC)
    r5, c5 = store.runs.create(bob["id"], bob_pl["id"], 1, {}, idempotency_key="k-1")
    assert (c3, c4, c5) == (True, True, True)
    assert len({r1["id"], r3["id"], r4["id"], r5["id"]}) == 4
    assert r4["version"] == 1  # None = current version

    with pytest.raises(NotFound):
        store.runs.create(alice["id"], pipeline["id"], 7, {})
    with pytest.raises(ValueError):
        store.runs.create(alice["id"], pipeline["id"], 1, {}, trigger="bogus")


def test_idempotency_key_under_concurrency(store: Store, alice: dict, pipeline: dict):
    results: list[tuple[dict, bool]] = []
    barrier = threading.Barrier(4)

    def go():
        barrier.wait()
        results.append(store.runs.create(alice["id"], pipeline["id"], 1, {}, idempotency_key="same"))

    threads = [threading.Thread(target=go) for _ in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert len(results) == 4
    assert len({r["id"] for r, _ in results}) == 1
    assert sorted(c for _, c in results) == [False, False, False, True]


def test_claim_runs_concurrently_each_run_once(store: Store, alice: dict, pipeline: dict):
    ids = {r["id"] for r in _runs(store, alice, pipeline, 200)}
    claimed: dict[str, list[str]] = {f"w{i}": [] for i in range(4)}
    barrier = threading.Barrier(4)
    errors: list[BaseException] = []

    def worker(name: str):
        try:
            barrier.wait()
            while True:
                got = store.leases.claim_next(name, lease_seconds=60, limit=7)
                if got:
                    claimed[name].extend(r["id"] for r in got)
                    assert all(r["lease_owner"] == name for r in got)
                    assert all(r["status"] == "running" for r in got)
                elif store.runs.queue_stats()["queued"] == 0:
                    return
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(n,)) for n in claimed]
    for th in threads:
        th.start()
    for th in threads:
        th.join(timeout=120)
    assert not errors
    all_claimed = [rid for lst in claimed.values() for rid in lst]
    assert len(all_claimed) == 200
    assert set(all_claimed) == ids
    assert Counter(all_claimed).most_common(1)[0][1] == 1
    with store.engine.connect() as conn:
        rows = conn.execute(select(t.runs.c.id, t.runs.c.claims, t.runs.c.lease_owner)).all()
    assert all(r.claims == 1 for r in rows)
    owner_of = {rid: name for name, lst in claimed.items() for rid in lst}
    assert all(owner_of[r.id] == r.lease_owner for r in rows)
    assert store.runs.queue_stats()["running"] == 200


def test_claim_order_and_fields(store: Store, alice: dict, pipeline: dict):
    runs = _runs(store, alice, pipeline, 5)
    got = store.leases.claim_next("w", lease_seconds=30, limit=3)
    assert [r["id"] for r in got] == [r["id"] for r in runs[:3]]  # oldest first
    r = got[0]
    assert r["claims"] == 1 and r["lease_owner"] == "w"
    started, lease = _aware(r["started_at"]), _aware(r["lease_expires_at"])
    assert timedelta(seconds=29) < lease - started <= timedelta(seconds=31)
    assert store.leases.claim_next("w", lease_seconds=30, limit=0) == []
    assert [r["id"] for r in store.leases.claim_next("x", lease_seconds=30, limit=10)] == [
        r["id"] for r in runs[3:]
    ]
    assert store.leases.claim_next("y", lease_seconds=30, limit=10) == []


def test_expired_lease_is_reclaimed_and_old_owner_cannot_finish(
    store: Store, alice: dict, pipeline: dict
):
    (run,) = _runs(store, alice, pipeline, 1)
    # a lease long enough that a busy machine still makes the second claim within it
    (first,) = store.leases.claim_next("old", lease_seconds=3, limit=1)
    assert store.leases.claim_next("new", lease_seconds=30, limit=1) == []  # lease still valid
    time.sleep(3.2)
    (again,) = store.leases.claim_next("new", lease_seconds=30, limit=1)
    assert again["id"] == run["id"]
    assert again["lease_owner"] == "new"
    assert again["claims"] == 2
    assert again["started_at"] == first["started_at"]  # kept from the first claim

    assert store.leases.heartbeat("old", [run["id"]], lease_seconds=30) == set()
    assert store.runs.finish(run["id"], "old", "succeeded") is False
    assert store.leases.release("old", run["id"]) is False
    assert store.runs.get(None, run["id"])["status"] == "running"
    assert store.runs.finish(run["id"], "new", "failed", {"message": "boom"}) is True
    done = store.runs.get(alice["id"], run["id"])
    assert done["status"] == "failed" and done["error"] == {"message": "boom"}
    assert _aware(done["finished_at"]) >= _aware(done["started_at"])
    assert store.runs.finish(run["id"], "new", "succeeded") is False  # already final
    with pytest.raises(ValueError):
        store.runs.finish(run["id"], "new", "running")


def test_heartbeat_extends_lease(store: Store, alice: dict, pipeline: dict):
    r1, r2 = _runs(store, alice, pipeline, 2)
    claimed = store.leases.claim_next("w", lease_seconds=3, limit=1)  # the heartbeat comes within it
    assert [c["id"] for c in claimed] == [r1["id"]]
    before = _aware(store.runs.get(None, r1["id"])["lease_expires_at"])
    assert store.leases.heartbeat("w", [r1["id"], r2["id"], "run_unknown"], lease_seconds=30) == {r1["id"]}
    after = _aware(store.runs.get(None, r1["id"])["lease_expires_at"])
    assert after - before > timedelta(seconds=25)
    assert store.leases.heartbeat("other", [r1["id"]], lease_seconds=30) == set()
    assert store.leases.heartbeat("w", [], lease_seconds=30) == set()
    time.sleep(3.2)  # past the original lease
    assert [c["id"] for c in store.leases.claim_next("thief", lease_seconds=30, limit=5)] == [r2["id"]]
    assert store.runs.get(None, r1["id"])["lease_owner"] == "w"


def test_release_run_requeues(store: Store, alice: dict, pipeline: dict):
    (run,) = _runs(store, alice, pipeline, 1)
    store.leases.claim_next("w", lease_seconds=30, limit=1)
    assert store.leases.release("other", run["id"]) is False
    assert store.leases.release("w", run["id"]) is True
    r = store.runs.get(None, run["id"])
    assert (r["status"], r["lease_owner"], r["lease_expires_at"]) == ("queued", None, None)
    (again,) = store.leases.claim_next("w2", lease_seconds=30, limit=1)
    assert again["id"] == run["id"] and again["claims"] == 2


def test_max_running_per_user(store: Store, alice: dict, bob: dict, pipeline: dict):
    bob_pl = store.pipelines.create(bob["id"], "b", DOC)
    a_runs = _runs(store, alice, pipeline, 4)
    b_runs = _runs(store, bob, bob_pl, 2)
    got = store.leases.claim_next("w", lease_seconds=30, limit=10, max_running_per_user=2)
    assert [r["id"] for r in got] == [r["id"] for r in a_runs[:2] + b_runs]
    assert store.leases.claim_next("w", lease_seconds=30, limit=10, max_running_per_user=2) == []
    store.runs.finish(a_runs[0]["id"], "w", "succeeded")
    got = store.leases.claim_next("w", lease_seconds=30, limit=10, max_running_per_user=2)
    assert [r["id"] for r in got] == [a_runs[2]["id"]]


def test_record_step_upsert_and_succeeded_outputs(store: Store, alice: dict, pipeline: dict):
    (run,) = _runs(store, alice, pipeline, 1)
    t0 = datetime.now(UTC)
    store.steps.record(
        run["id"], "second", position=1, connector="core", action="echo",
        status="running", attempts=1, input={"y": 2}, started_at=t0,
    )  # fmt: skip
    store.steps.record(
        run["id"], "first", position=0, connector="core", action="echo",
        status="running", attempts=1, input={"x": 1}, started_at=t0,
    )  # fmt: skip
    store.steps.record(
        run["id"], "first", position=0, connector="core", action="echo",
        status="succeeded", attempts=2, output={"ok": True}, finished_at=t0 + timedelta(seconds=1),
    )  # fmt: skip
    store.steps.record(
        run["id"], "second", position=1, connector="core", action="echo",
        status="failed", attempts=3, error={"type": "PermanentError", "message": "no"},
    )  # fmt: skip

    steps = store.runs.get(alice["id"], run["id"])["steps"]
    assert [s["step_id"] for s in steps] == ["first", "second"]
    first, second = steps
    assert first["status"] == "succeeded" and first["attempts"] == 2
    assert first["input"] == {"x": 1}  # kept from the first record
    assert first["output"] == {"ok": True}
    assert _aware(first["started_at"]) == t0
    assert _aware(first["finished_at"]) == t0 + timedelta(seconds=1)
    assert second["status"] == "failed" and second["error"]["message"] == "no"
    assert second["output"] is None
    assert store.steps.succeeded_outputs(run["id"]) == {"first": {"ok": True}}
    with pytest.raises(ValueError):
        store.steps.record(
            run["id"], "x", position=2, connector="c", action="a", status="weird", attempts=0
        )


def test_retry_copies_succeeded_steps(store: Store, alice: dict, pipeline: dict):
    (run,) = _runs(store, alice, pipeline, 1)
    for pos, (sid, status) in enumerate([("a", "succeeded"), ("b", "failed")]):
        store.steps.record(
            run["id"], sid, position=pos, connector="core", action="echo",
            status=status, attempts=1, output={"sid": sid},
        )  # fmt: skip
    retry, created = store.runs.create(
        alice["id"], pipeline["id"], 1, run["input"], trigger="retry",
        retry_of=run["id"], copy_steps_from=run["id"],
    )  # fmt: skip
    assert created and retry["retry_of"] == run["id"] and retry["trigger"] == "retry"
    got = store.runs.get(alice["id"], retry["id"])
    assert [(s["step_id"], s["status"]) for s in got["steps"]] == [("a", "succeeded")]
    assert store.steps.succeeded_outputs(retry["id"]) == {"a": {"sid": "a"}}
    assert len(store.runs.get(alice["id"], run["id"])["steps"]) == 2


def test_list_runs_cursor_pagination(store: Store, alice: dict, bob: dict, pipeline: dict):
    other = store.pipelines.create(alice["id"], "other", DOC)
    mine = _runs(store, alice, pipeline, 23) + _runs(store, alice, other, 4)
    bob_pl = store.pipelines.create(bob["id"], "b", DOC)
    _runs(store, bob, bob_pl, 3)
    # force ties on created_at so that the id tie-breaker is exercised
    tie = datetime(2030, 1, 1, tzinfo=UTC)
    with store.write() as conn:
        conn.execute(
            update(t.runs)
            .where(t.runs.c.id.in_([r["id"] for r in mine[5:12]]))
            .values(created_at=tie)
        )

    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        page, cursor = store.runs.list(alice["id"], limit=5, cursor=cursor)
        pages += 1
        assert len(page) <= 5
        seen.extend(r["id"] for r in page)
        assert all("steps" not in r for r in page)
        if cursor is None:
            break
    assert pages == 6
    assert len(seen) == len(set(seen)) == 27
    assert set(seen) == {r["id"] for r in mine}
    keys = [
        (_aware(r["created_at"]), r["id"]) for r in (store.runs.get(alice["id"], i) for i in seen)
    ]
    assert keys == sorted(keys, reverse=True)  # newest first

    page, nxt = store.runs.list(alice["id"], pipeline_id=other["id"], limit=10)
    assert {r["id"] for r in page} == {r["id"] for r in mine[23:]} and nxt is None
    store.leases.claim_next("w", lease_seconds=30, limit=2)
    page, _ = store.runs.list(alice["id"], status="running")
    assert len(page) == 2 and all(r["status"] == "running" for r in page)
    with pytest.raises(ValueError):
        store.runs.list(alice["id"], cursor="not-a-cursor")


def test_claims_since_progress_counts_lost_workers_only(store: Store, alice: dict, pipeline: dict):
    (run,) = _runs(store, alice, pipeline, 1)
    rid = run["id"]
    assert store.runs.get(None, rid)["claims_since_progress"] == 0

    def claim_after_loss(worker: str) -> dict:
        # the previous worker is lost: its lease runs out, as when the executor stops beating
        time.sleep(0.25)
        (got,) = store.leases.claim_next(worker, lease_seconds=0.2, limit=1)
        return got

    (first,) = store.leases.claim_next("w1", lease_seconds=0.2, limit=1)
    assert first["claims_since_progress"] == 1
    # a step started is no progress; a retry of it neither
    store.steps.record_many([store.steps.row(rid, "s1", position=0, connector="core",
                                       action="transform", status="running", attempts=1)])
    assert claim_after_loss("w2")["claims_since_progress"] == 2
    assert claim_after_loss("w3")["claims_since_progress"] == 3
    # a step reaching a final status is progress: the next claim counts from 1 again
    store.steps.record_many([store.steps.row(rid, "s1", position=0, connector="core",
                                       action="transform", status="succeeded", attempts=1)])
    assert claim_after_loss("w4")["claims_since_progress"] == 1
    assert store.runs.get(None, rid)["finished_steps"] == 1
    # a run handed back on shutdown did not lose its worker
    again = claim_after_loss("w5")
    assert again["claims_since_progress"] == 2
    assert store.leases.release("w5", rid) is True
    assert store.runs.get(None, rid)["claims_since_progress"] == 1
    assert store.leases.claim_next("w6", lease_seconds=30, limit=1)[0]["claims_since_progress"] == 2
    assert store.runs.get(None, rid)["claims"] == 6


def test_cancel_of_a_run_whose_lease_expired_is_at_once(store: Store, alice: dict, pipeline: dict):
    (run,) = _runs(store, alice, pipeline, 1)
    rid = run["id"]
    store.leases.claim_next("lost", lease_seconds=0.2, limit=1)
    store.steps.record_many([store.steps.row(rid, "s1", position=0, connector="core",
                                       action="transform", status="running", attempts=1)])
    time.sleep(0.3)  # the worker is gone: nobody renews the lease
    c = store.runs.request_cancel(alice["id"], rid)
    assert c["status"] == "cancelled" and c["finished_at"] and c["lease_owner"] is None
    assert [(s["step_id"], s["status"]) for s in c["steps"]] == [("s1", "cancelled")]
    assert store.leases.claim_next("w", lease_seconds=30, limit=5) == []
    assert store.leases.heartbeat("lost", [rid], lease_seconds=30) == set()


def test_request_cancel(store: Store, alice: dict, pipeline: dict):
    queued, running, done = _runs(store, alice, pipeline, 3)
    claimed = store.leases.claim_next("w", lease_seconds=30, limit=2)
    assert [r["id"] for r in claimed] == [queued["id"], running["id"]]
    store.leases.release("w", queued["id"])  # back to queued
    store.runs.finish(running["id"], "w", "succeeded")
    running2 = store.leases.claim_next("w", lease_seconds=30, limit=1)[0]  # "queued" is running now
    assert running2["id"] == queued["id"]
    # layout: queued["id"] running, running["id"] succeeded, done["id"] queued
    c_queued = store.runs.request_cancel(alice["id"], done["id"])
    assert c_queued["status"] == "cancelled" and c_queued["finished_at"]
    assert "steps" in c_queued
    assert store.runs.is_cancel_requested(done["id"]) is True
    assert store.leases.claim_next("w2", lease_seconds=30, limit=5) == []  # cancelled is never claimed

    c_running = store.runs.request_cancel(alice["id"], queued["id"])
    assert c_running["status"] == "running" and c_running["cancel_requested"] is True
    assert store.runs.is_cancel_requested(queued["id"]) is True
    assert store.runs.finish(queued["id"], "w", "cancelled") is True
    assert store.runs.get(alice["id"], queued["id"])["status"] == "cancelled"

    c_done = store.runs.request_cancel(alice["id"], running["id"])
    assert c_done["status"] == "succeeded" and c_done["cancel_requested"] is False
    assert store.runs.is_cancel_requested(running["id"]) is False
    assert store.runs.request_cancel(alice["id"], "run_unknown") is None
    assert store.runs.is_cancel_requested("run_unknown") is False


def test_queue_stats(store: Store, alice: dict, pipeline: dict):
    assert store.runs.queue_stats() == {
        "queued": 0, "running": 0, "oldest_queued_age_seconds": None, "waiting": 0,
        "overdue_waits": 0,
    }
    _runs(store, alice, pipeline, 3)
    time.sleep(0.05)
    store.leases.claim_next("w", lease_seconds=30, limit=1)
    stats = store.runs.queue_stats()
    assert stats["queued"] == 2 and stats["running"] == 1
    assert 0.04 < stats["oldest_queued_age_seconds"] < 60


# --------------------------------------------------------------------------- deliveries, locks, meta


def test_record_delivery_dedup(store: Store, alice: dict, pipeline: dict):
    other = store.pipelines.create(alice["id"], "o", DOC)
    assert store.pipelines.record_delivery(pipeline["id"], "evt_1") is True
    assert store.pipelines.record_delivery(pipeline["id"], "evt_1") is False
    assert store.pipelines.record_delivery(pipeline["id"], "evt_2") is True
    assert store.pipelines.record_delivery(other["id"], "evt_1") is True  # per pipeline
    with store.engine.connect() as conn:
        assert conn.execute(select(t.webhook_deliveries)).all().__len__() == 3


def test_leader_lock(store: Store):
    assert store.locks.holder("scheduler") is None
    assert store.locks.acquire("scheduler", "a", 0.5) is True
    holder = store.locks.holder("scheduler")
    assert holder["owner"] == "a"
    assert store.locks.acquire("scheduler", "b", 10) is False  # refused while a holds it
    assert store.locks.acquire("other-lock", "b", 10) is True  # locks are independent

    time.sleep(0.2)
    assert store.locks.acquire("scheduler", "a", 0.5) is True  # renew by owner
    renewed = store.locks.holder("scheduler")
    assert renewed["acquired_at"] == holder["acquired_at"]
    assert _aware(renewed["expires_at"]) > _aware(holder["expires_at"])
    time.sleep(0.35)  # past the first TTL but within the renewed one
    assert store.locks.acquire("scheduler", "b", 10) is False

    time.sleep(0.3)  # renewed TTL expired
    assert store.locks.holder("scheduler") is None
    assert store.locks.acquire("scheduler", "b", 10) is True  # steal
    stolen = store.locks.holder("scheduler")
    assert stolen["owner"] == "b"
    assert _aware(stolen["acquired_at"]) > _aware(holder["acquired_at"])
    assert store.locks.acquire("scheduler", "a", 10) is False

    assert store.locks.release("scheduler", "a") is False
    assert store.locks.release("scheduler", "b") is True
    assert store.locks.acquire("scheduler", "a", 10) is True


def test_leader_lock_concurrent_acquire(store: Store):
    wins: list[str] = []
    barrier = threading.Barrier(4)

    def go(owner: str):
        barrier.wait()
        if store.locks.acquire("leader", owner, 30):
            wins.append(owner)

    threads = [threading.Thread(target=go, args=(f"o{i}",)) for i in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert len(wins) == 1
    assert store.locks.holder("leader")["owner"] == wins[0]


def test_meta(store: Store):
    assert store.meta.get("k") is None
    store.meta.set("k", "v1")
    assert store.meta.get("k") == "v1"
    store.meta.set("k", "v2")
    assert store.meta.get("k") == "v2"


def test_in_memory_sqlite(vault):
    s = Store("sqlite://", vault)
    try:
        s.upgrade()
        assert s.is_migrated()
        u = s.users.create("m@example.com")
        p = s.pipelines.create(u["id"], "p", DOC)
        s.runs.create(u["id"], p["id"], 1, {})
        assert len(s.leases.claim_next("w", lease_seconds=5, limit=5)) == 1
    finally:
        s.close()
