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
from levqor_host.store import Conflict, NotFound, Store, _script_heads
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
    return store.create_user("alice@example.com", name="Alice")


@pytest.fixture
def bob(store: Store) -> dict:
    return store.create_user("bob@example.com")


@pytest.fixture
def pipeline(store: Store, alice: dict) -> dict:
    return store.create_pipeline(alice["id"], "Alice's pipeline", DOC)


def _runs(store: Store, user: dict, pipeline: dict, n: int) -> list[dict]:
    return [store.create_run(user["id"], pipeline["id"], 1, {"i": i})[0] for i in range(n)]


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
            sorted(_script_heads())
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
    a = store.create_user("Alice@Example.com", name="Alice", plan="pro", is_admin=True)
    assert a["id"].startswith("usr_")
    assert a["email"] == "alice@example.com"
    assert (a["name"], a["plan"], a["is_admin"]) == ("Alice", "pro", True)
    assert re.fullmatch(r"[A-Z0-9]{8}", a["referral_code"])
    _aware(a["created_at"])
    b = store.create_user("bob@example.com")
    assert (b["plan"], b["is_admin"], b["name"]) == ("free", False, None)
    assert b["referral_code"] != a["referral_code"]

    assert store.get_user(a["id"]) == a
    assert store.get_user_by_email("ALICE@example.com ") == a
    assert store.get_user("usr_nope") is None
    assert store.get_user_by_email("nobody@example.com") is None
    with pytest.raises(Conflict):
        store.create_user("alice@EXAMPLE.com")
    assert store.count_users() == 2
    assert [u["id"] for u in store.list_users()] == [a["id"], b["id"]]


# --------------------------------------------------------------------------- API keys


def test_api_key_plaintext_shown_once_and_only_hash_stored(store: Store, alice: dict):
    plaintext, key = store.create_api_key(alice["id"], name="ci", scopes=["runs:write"])
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

    listed = store.list_api_keys(alice["id"])
    assert [k["id"] for k in listed] == [key["id"]]
    assert "key_hash" not in listed[0]


def test_authenticate_key(store: Store, alice: dict, bob: dict):
    p1, k1 = store.create_api_key(alice["id"], name="one", scopes=["read"])
    p2, k2 = store.create_api_key(alice["id"], name="two", scopes=[])
    p3, k3 = store.create_api_key(bob["id"], name="bob", scopes=["admin"])

    # lookup by prefix: each plaintext finds its own key and user
    for plaintext, key, user in ((p1, k1, alice), (p2, k2, alice), (p3, k3, bob)):
        got = store.authenticate_key(plaintext)
        assert got is not None
        u, k = got
        assert (u["id"], u["email"]) == (user["id"], user["email"])
        assert k["id"] == key["id"]
        assert k["scopes"] == key["scopes"]
        assert k["last_used_at"] is not None

    prefix, secret = p1.split("_", 2)[1:]
    wrong_secret = secret[:-1] + ("A" if secret[-1] != "A" else "B")
    assert store.authenticate_key(f"lvq_{prefix}_{wrong_secret}") is None
    assert store.authenticate_key(f"lvq_{'0' * 8}_{secret}") is None
    for junk in ("", "lvq_", "lvq_abc_def", "Bearer x", p1 + "x", "xyz_" + p1[4:]):
        assert store.authenticate_key(junk) is None

    assert store.revoke_api_key(bob["id"], k1["id"]) is False  # not bob's key
    assert store.authenticate_key(p1) is not None
    assert store.revoke_api_key(alice["id"], k1["id"]) is True
    assert store.revoke_api_key(alice["id"], k1["id"]) is False  # already revoked
    assert store.authenticate_key(p1) is None
    assert store.authenticate_key(p2) is not None
    revoked = {k["id"]: k for k in store.list_api_keys(alice["id"])}[k1["id"]]
    assert revoked["revoked"] is True and revoked["revoked_at"]

    with pytest.raises(NotFound):
        store.create_api_key("usr_missing", name="x", scopes=[])


# --------------------------------------------------------------------------- pipelines


def test_pipeline_versions_are_immutable(store: Store, alice: dict):
    p = store.create_pipeline(alice["id"], "First", _doc(1))
    assert p["id"].startswith("pl_")
    assert p["version"] == 1 and p["doc"] == _doc(1) and p["name"] == "First"
    assert p["archived"] is False and p["has_webhook_secret"] is False
    assert len(p["webhook_token"]) >= 32

    p2 = store.update_pipeline(alice["id"], p["id"], _doc(2), name="Renamed")
    assert p2["version"] == 2 and p2["doc"] == _doc(2) and p2["name"] == "Renamed"
    assert p2["webhook_token"] == p["webhook_token"]
    assert store.get_version(alice["id"], p["id"], 1)["doc"] == _doc(1)
    assert store.get_version(alice["id"], p["id"], 2)["doc"] == _doc(2)
    assert store.get_version(alice["id"], p["id"], 3) is None
    versions = store.list_versions(alice["id"], p["id"])
    assert [(v["version"], v["doc"]) for v in versions] == [(1, _doc(1)), (2, _doc(2))]
    got = store.get_pipeline(alice["id"], p["id"])
    assert got["version"] == 2 and got["doc"] == _doc(2)

    p3 = store.update_pipeline(alice["id"], p["id"], _doc(3))
    assert p3["version"] == 3 and p3["name"] == "Renamed"
    assert store.get_version(alice["id"], p["id"], 1)["doc"] == _doc(1)


def test_list_archive_and_webhook_lookup(store: Store, alice: dict):
    a = store.create_pipeline(alice["id"], "a", DOC)
    b = store.create_pipeline(alice["id"], "b", SCHEDULED_DOC)
    assert [p["id"] for p in store.list_pipelines(alice["id"])] == [b["id"], a["id"]]
    assert store.get_webhook_target(a["webhook_token"]).pipeline["id"] == a["id"]
    assert store.get_webhook_target("nope") is None
    assert [p["id"] for p in store.list_scheduled_pipelines()] == [b["id"]]

    assert store.archive_pipeline(alice["id"], a["id"]) is True
    assert store.archive_pipeline(alice["id"], a["id"]) is False
    assert [p["id"] for p in store.list_pipelines(alice["id"])] == [b["id"]]
    assert {p["id"] for p in store.list_pipelines(alice["id"], include_archived=True)} == {
        a["id"],
        b["id"],
    }
    assert store.get_pipeline(alice["id"], a["id"])["archived"] is True
    assert store.get_webhook_target(a["webhook_token"]) is None

    # a later version without a schedule trigger drops out of the scheduled list
    store.update_pipeline(alice["id"], b["id"], DOC)
    assert store.list_scheduled_pipelines() == []
    store.update_pipeline(alice["id"], b["id"], SCHEDULED_DOC)
    assert [p["version"] for p in store.list_scheduled_pipelines()] == [3]
    store.archive_pipeline(alice["id"], b["id"])
    assert store.list_scheduled_pipelines() == []


def test_webhook_target_is_pipeline_owner_secret_and_credential_names(
    store: Store, alice: dict, bob: dict
):
    a = store.create_pipeline(alice["id"], "a", DOC)
    store.create_credential(alice["id"], "ops slack", "slack", {"webhook_url": "https://x/y"})
    store.create_credential(bob["id"], "bob notion", "notion", {"token": "secret_bob"})
    got = store.get_webhook_target(a["webhook_token"])
    assert got.pipeline == store.get_pipeline(alice["id"], a["id"])
    assert got.user == store.get_user(alice["id"])
    assert got.secret is None
    assert got.credentials == {"ops slack": "slack"}  # names only, and only the owner's
    assert "https://x/y" not in repr(got)

    store.set_webhook_secret(alice["id"], a["id"], "whsec-target")
    got = store.get_webhook_target(a["webhook_token"])
    assert got.secret == "whsec-target" and got.pipeline["has_webhook_secret"] is True
    assert "whsec-target" not in repr(got)

    assert store.get_webhook_target("nope") is None
    store.archive_pipeline(alice["id"], a["id"])
    assert store.get_webhook_target(a["webhook_token"]) is None


def test_webhook_secret_encrypted(store: Store, alice: dict, pipeline: dict):
    assert store.get_webhook_secret(pipeline["id"]) is None
    assert store.set_webhook_secret(alice["id"], pipeline["id"], "whsec-very-secret") is True
    assert store.get_pipeline(alice["id"], pipeline["id"])["has_webhook_secret"] is True
    assert store.get_webhook_secret(pipeline["id"]) == "whsec-very-secret"
    with store.engine.connect() as conn:
        raw = conn.execute(
            select(t.pipelines.c.webhook_secret_enc).where(t.pipelines.c.id == pipeline["id"])
        ).scalar_one()
    assert "whsec-very-secret" not in raw
    assert store.set_webhook_secret(alice["id"], pipeline["id"], None) is True
    assert store.get_webhook_secret(pipeline["id"]) is None
    assert store.get_pipeline(alice["id"], pipeline["id"])["has_webhook_secret"] is False


def test_other_users_ids_are_invisible(store: Store, alice: dict, bob: dict, pipeline: dict):
    pid = pipeline["id"]
    cred = store.create_credential(alice["id"], "slack", "slack", {"token": "xoxb-1"})
    run, _ = store.create_run(alice["id"], pid, 1, {})
    plaintext, key = store.create_api_key(alice["id"], name="k", scopes=[])
    store.record_step(
        run["id"], "a", position=0, connector="core", action="echo", status="succeeded", attempts=1
    )

    assert store.get_pipeline(bob["id"], pid) is None
    assert store.get_pipeline_any(pid)["user_id"] == alice["id"]  # for scheduler/workers
    assert store.get_pipeline_any("pl_unknown") is None
    assert store.update_pipeline(bob["id"], pid, _doc(9)) is None
    assert store.archive_pipeline(bob["id"], pid) is False
    assert store.list_versions(bob["id"], pid) is None
    assert store.get_version(bob["id"], pid, 1) is None
    assert store.set_webhook_secret(bob["id"], pid, "x") is False
    assert store.list_pipelines(bob["id"], include_archived=True) == []
    assert store.get_credential(bob["id"], cred["id"]) is None
    assert store.delete_credential(bob["id"], cred["id"]) is False
    assert store.get_credential_values(bob["id"], "slack") is None
    assert store.list_credentials(bob["id"]) == []
    assert store.get_run(bob["id"], run["id"]) is None
    assert store.list_runs(bob["id"]) == ([], None)
    assert store.list_runs(bob["id"], pipeline_id=pid) == ([], None)
    assert store.request_cancel(bob["id"], run["id"]) is None
    assert store.revoke_api_key(bob["id"], key["id"]) is False
    assert store.list_api_keys(bob["id"]) == []
    with pytest.raises(NotFound):
        store.create_run(bob["id"], pid, 1, {})
    bob_pl = store.create_pipeline(bob["id"], "bob's", DOC)
    bob_run, _ = store.create_run(bob["id"], bob_pl["id"], 1, {}, copy_steps_from=run["id"])
    assert store.get_run(bob["id"], bob_run["id"])["steps"] == []  # not copied from alice's run

    # nothing changed for alice
    assert store.get_pipeline(alice["id"], pid)["version"] == 1
    assert store.get_pipeline(alice["id"], pid)["archived"] is False
    assert store.get_credential(alice["id"], cred["id"])["name"] == "slack"
    assert store.get_run(alice["id"], run["id"])["status"] == "queued"
    assert store.get_run(None, run["id"])["id"] == run["id"]  # workers see every run
    assert store.authenticate_key(plaintext) is not None


# --------------------------------------------------------------------------- credentials


def test_credentials_encrypted_at_rest_and_never_listed(store: Store, alice: dict):
    values = {"token": "xoxb-super-secret-token", "team": "T123"}
    c = store.create_credential(alice["id"], "my slack", "slack", values)
    assert c["id"].startswith("cred_")
    assert set(c) == {"id", "name", "connector", "created_at"}

    with store.engine.connect() as conn:
        raw = conn.execute(select(t.credentials)).mappings().one()
    for v in raw.values():
        assert "xoxb-super-secret-token" not in str(v)
        assert "T123" not in str(v)
    assert store.vault.decrypt(raw["value_enc"]) == values

    listed = store.list_credentials(alice["id"])
    assert listed == [c]
    assert "xoxb" not in repr(listed)
    assert store.get_credential(alice["id"], c["id"]) == c
    assert store.get_credential_values(alice["id"], "my slack") == ("slack", values)
    assert store.get_credential_values(alice["id"], "other") is None

    with pytest.raises(Conflict):
        store.create_credential(alice["id"], "my slack", "slack", {"token": "x"})
    other = store.create_credential(alice["id"], "another", "notion", {"token": "n"})
    assert [x["name"] for x in store.list_credentials(alice["id"])] == ["another", "my slack"]

    assert store.delete_credential(alice["id"], c["id"]) is True
    assert store.delete_credential(alice["id"], c["id"]) is False
    assert store.get_credential(alice["id"], c["id"]) is None
    assert store.list_credentials(alice["id"]) == [other]


# --------------------------------------------------------------------------- runs


def test_create_run_and_idempotency_key(store: Store, alice: dict, bob: dict, pipeline: dict):
    r1, created = store.create_run(
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
    r2, created2 = store.create_run(alice["id"], pipeline["id"], 1, {"a": 2}, idempotency_key="k-1")
    assert created2 is False
    assert r2["id"] == r1["id"] and r2["input"] == {"a": 1}
    assert store.find_run_by_idempotency_key(alice["id"], "k-1")["id"] == r1["id"]
    assert store.find_run_by_idempotency_key(bob["id"], "k-1") is None
    assert store.find_run_by_idempotency_key(alice["id"], "k-unused") is None

    # another key, no key, and the same key for another user are all new runs
    r3, c3 = store.create_run(alice["id"], pipeline["id"], 1, {}, idempotency_key="k-2")
    r4, c4 = store.create_run(alice["id"], pipeline["id"], None, {})
    bob_pl = store.create_pipeline(bob["id"], "b", DOC)
    r5, c5 = store.create_run(bob["id"], bob_pl["id"], 1, {}, idempotency_key="k-1")
    assert (c3, c4, c5) == (True, True, True)
    assert len({r1["id"], r3["id"], r4["id"], r5["id"]}) == 4
    assert r4["version"] == 1  # None = current version

    with pytest.raises(NotFound):
        store.create_run(alice["id"], pipeline["id"], 7, {})
    with pytest.raises(ValueError):
        store.create_run(alice["id"], pipeline["id"], 1, {}, trigger="bogus")


def test_idempotency_key_under_concurrency(store: Store, alice: dict, pipeline: dict):
    results: list[tuple[dict, bool]] = []
    barrier = threading.Barrier(4)

    def go():
        barrier.wait()
        results.append(store.create_run(alice["id"], pipeline["id"], 1, {}, idempotency_key="same"))

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
                got = store.claim_runs(name, lease_seconds=60, limit=7)
                if got:
                    claimed[name].extend(r["id"] for r in got)
                    assert all(r["lease_owner"] == name for r in got)
                    assert all(r["status"] == "running" for r in got)
                elif store.queue_stats()["queued"] == 0:
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
    assert store.queue_stats()["running"] == 200


def test_claim_order_and_fields(store: Store, alice: dict, pipeline: dict):
    runs = _runs(store, alice, pipeline, 5)
    got = store.claim_runs("w", lease_seconds=30, limit=3)
    assert [r["id"] for r in got] == [r["id"] for r in runs[:3]]  # oldest first
    r = got[0]
    assert r["claims"] == 1 and r["lease_owner"] == "w"
    started, lease = _aware(r["started_at"]), _aware(r["lease_expires_at"])
    assert timedelta(seconds=29) < lease - started <= timedelta(seconds=31)
    assert store.claim_runs("w", lease_seconds=30, limit=0) == []
    assert [r["id"] for r in store.claim_runs("x", lease_seconds=30, limit=10)] == [
        r["id"] for r in runs[3:]
    ]
    assert store.claim_runs("y", lease_seconds=30, limit=10) == []


def test_expired_lease_is_reclaimed_and_old_owner_cannot_finish(
    store: Store, alice: dict, pipeline: dict
):
    (run,) = _runs(store, alice, pipeline, 1)
    # a lease long enough that a busy machine still makes the second claim within it
    (first,) = store.claim_runs("old", lease_seconds=3, limit=1)
    assert store.claim_runs("new", lease_seconds=30, limit=1) == []  # lease still valid
    time.sleep(3.2)
    (again,) = store.claim_runs("new", lease_seconds=30, limit=1)
    assert again["id"] == run["id"]
    assert again["lease_owner"] == "new"
    assert again["claims"] == 2
    assert again["started_at"] == first["started_at"]  # kept from the first claim

    assert store.heartbeat("old", [run["id"]], lease_seconds=30) == set()
    assert store.finish_run(run["id"], "old", "succeeded") is False
    assert store.release_run("old", run["id"]) is False
    assert store.get_run(None, run["id"])["status"] == "running"
    assert store.finish_run(run["id"], "new", "failed", {"message": "boom"}) is True
    done = store.get_run(alice["id"], run["id"])
    assert done["status"] == "failed" and done["error"] == {"message": "boom"}
    assert _aware(done["finished_at"]) >= _aware(done["started_at"])
    assert store.finish_run(run["id"], "new", "succeeded") is False  # already final
    with pytest.raises(ValueError):
        store.finish_run(run["id"], "new", "running")


def test_heartbeat_extends_lease(store: Store, alice: dict, pipeline: dict):
    r1, r2 = _runs(store, alice, pipeline, 2)
    claimed = store.claim_runs("w", lease_seconds=3, limit=1)  # the heartbeat comes within it
    assert [c["id"] for c in claimed] == [r1["id"]]
    before = _aware(store.get_run(None, r1["id"])["lease_expires_at"])
    assert store.heartbeat("w", [r1["id"], r2["id"], "run_unknown"], lease_seconds=30) == {r1["id"]}
    after = _aware(store.get_run(None, r1["id"])["lease_expires_at"])
    assert after - before > timedelta(seconds=25)
    assert store.heartbeat("other", [r1["id"]], lease_seconds=30) == set()
    assert store.heartbeat("w", [], lease_seconds=30) == set()
    time.sleep(3.2)  # past the original lease
    assert [c["id"] for c in store.claim_runs("thief", lease_seconds=30, limit=5)] == [r2["id"]]
    assert store.get_run(None, r1["id"])["lease_owner"] == "w"


def test_release_run_requeues(store: Store, alice: dict, pipeline: dict):
    (run,) = _runs(store, alice, pipeline, 1)
    store.claim_runs("w", lease_seconds=30, limit=1)
    assert store.release_run("other", run["id"]) is False
    assert store.release_run("w", run["id"]) is True
    r = store.get_run(None, run["id"])
    assert (r["status"], r["lease_owner"], r["lease_expires_at"]) == ("queued", None, None)
    (again,) = store.claim_runs("w2", lease_seconds=30, limit=1)
    assert again["id"] == run["id"] and again["claims"] == 2


def test_max_running_per_user(store: Store, alice: dict, bob: dict, pipeline: dict):
    bob_pl = store.create_pipeline(bob["id"], "b", DOC)
    a_runs = _runs(store, alice, pipeline, 4)
    b_runs = _runs(store, bob, bob_pl, 2)
    got = store.claim_runs("w", lease_seconds=30, limit=10, max_running_per_user=2)
    assert [r["id"] for r in got] == [r["id"] for r in a_runs[:2] + b_runs]
    assert store.claim_runs("w", lease_seconds=30, limit=10, max_running_per_user=2) == []
    store.finish_run(a_runs[0]["id"], "w", "succeeded")
    got = store.claim_runs("w", lease_seconds=30, limit=10, max_running_per_user=2)
    assert [r["id"] for r in got] == [a_runs[2]["id"]]


def test_record_step_upsert_and_succeeded_outputs(store: Store, alice: dict, pipeline: dict):
    (run,) = _runs(store, alice, pipeline, 1)
    t0 = datetime.now(UTC)
    store.record_step(
        run["id"], "second", position=1, connector="core", action="echo",
        status="running", attempts=1, input={"y": 2}, started_at=t0,
    )  # fmt: skip
    store.record_step(
        run["id"], "first", position=0, connector="core", action="echo",
        status="running", attempts=1, input={"x": 1}, started_at=t0,
    )  # fmt: skip
    store.record_step(
        run["id"], "first", position=0, connector="core", action="echo",
        status="succeeded", attempts=2, output={"ok": True}, finished_at=t0 + timedelta(seconds=1),
    )  # fmt: skip
    store.record_step(
        run["id"], "second", position=1, connector="core", action="echo",
        status="failed", attempts=3, error={"type": "PermanentError", "message": "no"},
    )  # fmt: skip

    steps = store.get_run(alice["id"], run["id"])["steps"]
    assert [s["step_id"] for s in steps] == ["first", "second"]
    first, second = steps
    assert first["status"] == "succeeded" and first["attempts"] == 2
    assert first["input"] == {"x": 1}  # kept from the first record
    assert first["output"] == {"ok": True}
    assert _aware(first["started_at"]) == t0
    assert _aware(first["finished_at"]) == t0 + timedelta(seconds=1)
    assert second["status"] == "failed" and second["error"]["message"] == "no"
    assert second["output"] is None
    assert store.succeeded_outputs(run["id"]) == {"first": {"ok": True}}
    with pytest.raises(ValueError):
        store.record_step(
            run["id"], "x", position=2, connector="c", action="a", status="weird", attempts=0
        )


def test_retry_copies_succeeded_steps(store: Store, alice: dict, pipeline: dict):
    (run,) = _runs(store, alice, pipeline, 1)
    for pos, (sid, status) in enumerate([("a", "succeeded"), ("b", "failed")]):
        store.record_step(
            run["id"], sid, position=pos, connector="core", action="echo",
            status=status, attempts=1, output={"sid": sid},
        )  # fmt: skip
    retry, created = store.create_run(
        alice["id"], pipeline["id"], 1, run["input"], trigger="retry",
        retry_of=run["id"], copy_steps_from=run["id"],
    )  # fmt: skip
    assert created and retry["retry_of"] == run["id"] and retry["trigger"] == "retry"
    got = store.get_run(alice["id"], retry["id"])
    assert [(s["step_id"], s["status"]) for s in got["steps"]] == [("a", "succeeded")]
    assert store.succeeded_outputs(retry["id"]) == {"a": {"sid": "a"}}
    assert len(store.get_run(alice["id"], run["id"])["steps"]) == 2


def test_list_runs_cursor_pagination(store: Store, alice: dict, bob: dict, pipeline: dict):
    other = store.create_pipeline(alice["id"], "other", DOC)
    mine = _runs(store, alice, pipeline, 23) + _runs(store, alice, other, 4)
    bob_pl = store.create_pipeline(bob["id"], "b", DOC)
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
        page, cursor = store.list_runs(alice["id"], limit=5, cursor=cursor)
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
        (_aware(r["created_at"]), r["id"]) for r in (store.get_run(alice["id"], i) for i in seen)
    ]
    assert keys == sorted(keys, reverse=True)  # newest first

    page, nxt = store.list_runs(alice["id"], pipeline_id=other["id"], limit=10)
    assert {r["id"] for r in page} == {r["id"] for r in mine[23:]} and nxt is None
    store.claim_runs("w", lease_seconds=30, limit=2)
    page, _ = store.list_runs(alice["id"], status="running")
    assert len(page) == 2 and all(r["status"] == "running" for r in page)
    with pytest.raises(ValueError):
        store.list_runs(alice["id"], cursor="not-a-cursor")


def test_claims_since_progress_counts_lost_workers_only(store: Store, alice: dict, pipeline: dict):
    (run,) = _runs(store, alice, pipeline, 1)
    rid = run["id"]
    assert store.get_run(None, rid)["claims_since_progress"] == 0

    def claim_after_loss(worker: str) -> dict:
        # the previous worker is lost: its lease runs out, as when the executor stops beating
        time.sleep(0.25)
        (got,) = store.claim_runs(worker, lease_seconds=0.2, limit=1)
        return got

    (first,) = store.claim_runs("w1", lease_seconds=0.2, limit=1)
    assert first["claims_since_progress"] == 1
    # a step started is no progress; a retry of it neither
    store.record_steps([store.step_row(rid, "s1", position=0, connector="core",
                                       action="transform", status="running", attempts=1)])
    assert claim_after_loss("w2")["claims_since_progress"] == 2
    assert claim_after_loss("w3")["claims_since_progress"] == 3
    # a step reaching a final status is progress: the next claim counts from 1 again
    store.record_steps([store.step_row(rid, "s1", position=0, connector="core",
                                       action="transform", status="succeeded", attempts=1)])
    assert claim_after_loss("w4")["claims_since_progress"] == 1
    assert store.get_run(None, rid)["finished_steps"] == 1
    # a run handed back on shutdown did not lose its worker
    again = claim_after_loss("w5")
    assert again["claims_since_progress"] == 2
    assert store.release_run("w5", rid) is True
    assert store.get_run(None, rid)["claims_since_progress"] == 1
    assert store.claim_runs("w6", lease_seconds=30, limit=1)[0]["claims_since_progress"] == 2
    assert store.get_run(None, rid)["claims"] == 6


def test_cancel_of_a_run_whose_lease_expired_is_at_once(store: Store, alice: dict, pipeline: dict):
    (run,) = _runs(store, alice, pipeline, 1)
    rid = run["id"]
    store.claim_runs("lost", lease_seconds=0.2, limit=1)
    store.record_steps([store.step_row(rid, "s1", position=0, connector="core",
                                       action="transform", status="running", attempts=1)])
    time.sleep(0.3)  # the worker is gone: nobody renews the lease
    c = store.request_cancel(alice["id"], rid)
    assert c["status"] == "cancelled" and c["finished_at"] and c["lease_owner"] is None
    assert [(s["step_id"], s["status"]) for s in c["steps"]] == [("s1", "cancelled")]
    assert store.claim_runs("w", lease_seconds=30, limit=5) == []
    assert store.heartbeat("lost", [rid], lease_seconds=30) == set()


def test_request_cancel(store: Store, alice: dict, pipeline: dict):
    queued, running, done = _runs(store, alice, pipeline, 3)
    claimed = store.claim_runs("w", lease_seconds=30, limit=2)
    assert [r["id"] for r in claimed] == [queued["id"], running["id"]]
    store.release_run("w", queued["id"])  # back to queued
    store.finish_run(running["id"], "w", "succeeded")
    running2 = store.claim_runs("w", lease_seconds=30, limit=1)[0]  # "queued" is running now
    assert running2["id"] == queued["id"]
    # layout: queued["id"] running, running["id"] succeeded, done["id"] queued
    c_queued = store.request_cancel(alice["id"], done["id"])
    assert c_queued["status"] == "cancelled" and c_queued["finished_at"]
    assert "steps" in c_queued
    assert store.is_cancel_requested(done["id"]) is True
    assert store.claim_runs("w2", lease_seconds=30, limit=5) == []  # cancelled is never claimed

    c_running = store.request_cancel(alice["id"], queued["id"])
    assert c_running["status"] == "running" and c_running["cancel_requested"] is True
    assert store.is_cancel_requested(queued["id"]) is True
    assert store.finish_run(queued["id"], "w", "cancelled") is True
    assert store.get_run(alice["id"], queued["id"])["status"] == "cancelled"

    c_done = store.request_cancel(alice["id"], running["id"])
    assert c_done["status"] == "succeeded" and c_done["cancel_requested"] is False
    assert store.is_cancel_requested(running["id"]) is False
    assert store.request_cancel(alice["id"], "run_unknown") is None
    assert store.is_cancel_requested("run_unknown") is False


def test_queue_stats(store: Store, alice: dict, pipeline: dict):
    assert store.queue_stats() == {"queued": 0, "running": 0, "oldest_queued_age_seconds": None}
    _runs(store, alice, pipeline, 3)
    time.sleep(0.05)
    store.claim_runs("w", lease_seconds=30, limit=1)
    stats = store.queue_stats()
    assert stats["queued"] == 2 and stats["running"] == 1
    assert 0.04 < stats["oldest_queued_age_seconds"] < 60


# --------------------------------------------------------------------------- deliveries, locks, meta


def test_record_delivery_dedup(store: Store, alice: dict, pipeline: dict):
    other = store.create_pipeline(alice["id"], "o", DOC)
    assert store.record_delivery(pipeline["id"], "evt_1") is True
    assert store.record_delivery(pipeline["id"], "evt_1") is False
    assert store.record_delivery(pipeline["id"], "evt_2") is True
    assert store.record_delivery(other["id"], "evt_1") is True  # per pipeline
    with store.engine.connect() as conn:
        assert conn.execute(select(t.webhook_deliveries)).all().__len__() == 3


def test_leader_lock(store: Store):
    assert store.lock_holder("scheduler") is None
    assert store.acquire_lock("scheduler", "a", 0.5) is True
    holder = store.lock_holder("scheduler")
    assert holder["owner"] == "a"
    assert store.acquire_lock("scheduler", "b", 10) is False  # refused while a holds it
    assert store.acquire_lock("other-lock", "b", 10) is True  # locks are independent

    time.sleep(0.2)
    assert store.acquire_lock("scheduler", "a", 0.5) is True  # renew by owner
    renewed = store.lock_holder("scheduler")
    assert renewed["acquired_at"] == holder["acquired_at"]
    assert _aware(renewed["expires_at"]) > _aware(holder["expires_at"])
    time.sleep(0.35)  # past the first TTL but within the renewed one
    assert store.acquire_lock("scheduler", "b", 10) is False

    time.sleep(0.3)  # renewed TTL expired
    assert store.lock_holder("scheduler") is None
    assert store.acquire_lock("scheduler", "b", 10) is True  # steal
    stolen = store.lock_holder("scheduler")
    assert stolen["owner"] == "b"
    assert _aware(stolen["acquired_at"]) > _aware(holder["acquired_at"])
    assert store.acquire_lock("scheduler", "a", 10) is False

    assert store.release_lock("scheduler", "a") is False
    assert store.release_lock("scheduler", "b") is True
    assert store.acquire_lock("scheduler", "a", 10) is True


def test_leader_lock_concurrent_acquire(store: Store):
    wins: list[str] = []
    barrier = threading.Barrier(4)

    def go(owner: str):
        barrier.wait()
        if store.acquire_lock("leader", owner, 30):
            wins.append(owner)

    threads = [threading.Thread(target=go, args=(f"o{i}",)) for i in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert len(wins) == 1
    assert store.lock_holder("leader")["owner"] == wins[0]


def test_meta(store: Store):
    assert store.get_meta("k") is None
    store.set_meta("k", "v1")
    assert store.get_meta("k") == "v1"
    store.set_meta("k", "v2")
    assert store.get_meta("k") == "v2"


def test_in_memory_sqlite(vault):
    s = Store("sqlite://", vault)
    try:
        s.upgrade()
        assert s.is_migrated()
        u = s.create_user("m@example.com")
        p = s.create_pipeline(u["id"], "p", DOC)
        s.create_run(u["id"], p["id"], 1, {})
        assert len(s.claim_runs("w", lease_seconds=5, limit=5)) == 1
    finally:
        s.close()
