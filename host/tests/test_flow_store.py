"""The store's side of flow control on SQLite and PostgreSQL: migration 0008 (paths as step
ids, waiting runs, outputs, parents), suspending a run, resuming it exactly once."""

from __future__ import annotations

from alembic import command
from levqor_host.store import Store, alembic_config
from sqlalchemy import inspect, text

DOC = {
    "levqor": 1,
    "trigger": {"type": "manual"},
    "steps": [{"id": "a", "connector": "core", "action": "echo", "payload": {"x": 1}}],
}


def _migrate(store: Store, revision: str, *, down: bool = False) -> None:
    cfg = alembic_config()
    with store.write() as conn:
        cfg.attributes["connection"] = conn
        (command.downgrade if down else command.upgrade)(cfg, revision)


def test_migration_0008_upgrades_a_0007_database(fresh_store: Store):
    s = fresh_store
    _migrate(s, "0007")
    with s.write() as conn:
        conn.execute(
            text(
                "INSERT INTO users (id, email, plan, is_admin, referral_code, created_at) "
                "VALUES ('usr_1', 'a@example.com', 'free', false, 'ABCDEFGH', CURRENT_TIMESTAMP)"
            )
        )
        conn.execute(
            text(
                "INSERT INTO pipelines (id, user_id, name, current_version, webhook_token, "
                "created_at, updated_at) VALUES ('pl_1', 'usr_1', 'p', 1, 'tok', "
                "CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)"
            )
        )
        conn.execute(
            text(
                "INSERT INTO runs (id, user_id, pipeline_id, version, status, trigger, claims, "
                "cancel_requested, created_at) VALUES ('run_1', 'usr_1', 'pl_1', 1, 'succeeded', "
                "'manual', 1, false, CURRENT_TIMESTAMP)"
            )
        )
        conn.execute(
            text(
                "INSERT INTO run_steps (run_id, step_id, position, connector, action, status, "
                "attempts) VALUES ('run_1', 'a', 0, 'core', 'echo', 'succeeded', 1)"
            )
        )
    s.upgrade()
    assert s.is_migrated()
    cols = {c["name"]: c for c in inspect(s.engine).get_columns("runs")}
    assert {"output", "parent_run_id", "parent_step", "wait", "resume_at"} <= set(cols)
    step_id = {c["name"]: c for c in inspect(s.engine).get_columns("run_steps")}["step_id"]
    assert step_id["type"].length == 400
    indexes = {ix["name"]: ix["column_names"] for ix in inspect(s.engine).get_indexes("runs")}
    assert indexes["ix_runs_status_resume_at"] == ["status", "resume_at"]
    run = s.runs.get(None, "run_1")
    assert run["status"] == "succeeded" and run["steps"][0]["step_id"] == "a"
    assert (run["output"], run["parent_run_id"], run["wait"], run["resume_at"]) == (
        None, None, None, None,
    )
    long_path = ".".join(f"loop{i}[{i * 1000}]" for i in range(20)) + ".send"
    assert 100 < len(long_path) <= 400
    s.steps.record(
        "run_1", long_path, position=1, connector="core", action="echo", status="waiting",
        attempts=1,
    )
    assert s.runs.get(None, "run_1")["steps"][1]["step_id"] == long_path
    # down and up again (a short path only: the old column is 100 wide)
    with s.write() as conn:
        conn.execute(text("DELETE FROM run_steps WHERE step_id <> 'a'"))
    _migrate(s, "0007", down=True)
    assert "wait" not in {c["name"] for c in inspect(s.engine).get_columns("runs")}
    s.upgrade()
    assert s.is_migrated()


def _waiting_run(store: Store, *, resume_in: float | None = None, parent: str | None = None):
    """A run claimed by worker "w", with a succeeded step and a waiting one, suspended."""
    from datetime import timedelta

    from levqor_host.store.db import utcnow

    u = store.users.get_by_email("w@example.com") or store.users.create("w@example.com")
    p = store.pipelines.create(u["id"], "p", DOC)
    run, _ = store.runs.create(u["id"], p["id"], 1, {}, parent_run_id=parent, parent_step="call")
    claimed = store.leases.claim("w", run["id"], lease_seconds=30)
    assert claimed is not None
    rows = [
        store.steps.row(run["id"], "a", position=0, connector="core", action="echo",
                        status="succeeded", attempts=1, output={"x": 1}),
        store.steps.row(run["id"], "each[0].ok", position=1, connector="flow", action="wait",
                        status="waiting", attempts=1, input={"kind": "approval"}),
    ]
    wait = {"kind": "approval", "step": "each[0].ok", "nonce": "n1"}
    resume_at = utcnow() + timedelta(seconds=resume_in) if resume_in is not None else None
    with store.write() as conn:
        store.steps.record_many_in(conn, rows)
        assert store.waits.suspend_in(conn, run["id"], "w", wait, resume_at)
    return u, store.runs.get(None, run["id"])


def test_suspend_frees_the_lease_and_is_never_claimed(store: Store):
    u, run = _waiting_run(store)
    assert run["status"] == "waiting" and run["lease_owner"] is None
    assert run["wait"]["nonce"] == "n1"
    assert [s["status"] for s in run["steps"]] == ["succeeded", "waiting"]
    assert store.leases.claim_next("w2", lease_seconds=30, limit=5) == []
    assert store.leases.claim("w2", run["id"], lease_seconds=30) is None
    # a waiting run does not count against its user's running cap
    p = store.pipelines.create(u["id"], "q", DOC)
    other, _ = store.runs.create(u["id"], p["id"], 1, {})
    got = store.leases.claim_next("w2", lease_seconds=30, limit=5, max_running_per_user=1)
    assert [r["id"] for r in got] == [other["id"]]
    assert store.waits.count() == 1


def test_decide_wins_once_across_threads(store: Store):
    import threading

    _, run = _waiting_run(store)
    wins: list[int] = []
    barrier = threading.Barrier(4)

    def decide(i: int) -> None:
        barrier.wait()
        if store.waits.decide(run["id"], "n1", "each[0].ok", status="succeeded",
                              output={"approved": True, "by": i}):
            wins.append(i)

    threads = [threading.Thread(target=decide, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(wins) == 1
    after = store.runs.get(None, run["id"])
    assert after["status"] == "queued" and after["wait"] is None
    step = after["steps"][1]
    assert step["status"] == "succeeded" and step["output"] == {"approved": True, "by": wins[0]}
    assert step["finished_at"] is not None
    completed, decided = store.waits.resume_state(run["id"])
    assert completed == {"a": {"x": 1}, "each[0].ok": step["output"]}
    assert decided == {"each[0].ok": {"status": "succeeded", "output": step["output"],
                                      "error": None}}
    # a wrong nonce, or a run not waiting, changes nothing
    assert not store.waits.decide(run["id"], "n1", "each[0].ok", status="failed")
    assert store.leases.claim("w2", run["id"], lease_seconds=30) is not None


def test_decide_with_a_wrong_nonce_or_after_cancel_does_nothing(store: Store):
    u, run = _waiting_run(store)
    assert not store.waits.decide(run["id"], "other", "each[0].ok", status="succeeded")
    assert store.runs.get(None, run["id"])["status"] == "waiting"
    cancelled = store.runs.request_cancel(u["id"], run["id"])
    assert cancelled["status"] == "cancelled" and cancelled["wait"] is None
    assert cancelled["steps"][1]["status"] == "cancelled"
    assert not store.waits.decide(run["id"], "n1", "each[0].ok", status="succeeded")
    assert store.runs.get(None, run["id"])["status"] == "cancelled"


def test_due_waits_children_and_depth(store: Store):
    _, later = _waiting_run(store, resume_in=3600)
    _, due = _waiting_run(store, resume_in=-1, parent=later["id"])
    _, grandchild = _waiting_run(store, parent=due["id"])
    assert [r["id"] for r in store.waits.due()] == [due["id"]]
    assert store.waits.children(later["id"]) == [due["id"]]
    assert store.runs.get(None, due["id"])["parent_step"] == "call"
    assert store.waits.depth(later["id"], most=5) == 0
    assert store.waits.depth(grandchild["id"], most=5) == 2
    assert store.waits.depth(grandchild["id"], most=0) == 1
    assert store.waits.rewait(due["id"], "n1", {"kind": "pipeline", "nonce": "n1", "x": 1}, None)
    assert store.waits.due() == []
    assert store.runs.get(None, due["id"])["wait"]["x"] == 1


def test_queue_stats_count_waiting_and_overdue_runs(store: Store):
    _waiting_run(store, resume_in=3600)
    _waiting_run(store, resume_in=-120)  # its timer came two minutes ago: the sweep is late
    _waiting_run(store)  # an approval without a timeout: never overdue
    stats = store.runs.queue_stats()
    assert (stats["waiting"], stats["overdue_waits"], stats["running"]) == (3, 1, 0)


def test_wait_descriptors_and_their_resume_times():
    from datetime import UTC, datetime, timedelta

    from levqor_host.runs.flow import Flow

    now = datetime(2026, 12, 4, 12, 0, tzinfo=UTC)
    describe = Flow.descriptor
    desc, at = describe({"kind": "time", "step": "p", "seconds": 90}, now)
    assert at == now + timedelta(seconds=90) and desc["until"] == at.isoformat()
    assert len(desc["nonce"]) >= 20 and desc["since"] == now.isoformat()
    _, at = describe({"kind": "time", "until": "2026-12-05T00:00:00Z"}, now)
    assert at == datetime(2026, 12, 5, tzinfo=UTC)
    desc, at = describe({"kind": "approval", "approval": {"timeout": 60}}, now)
    assert at == now + timedelta(seconds=60) and desc["expires_at"] == at.isoformat()
    _, at = describe({"kind": "approval", "approval": {"message": "ok?"}}, now)
    assert at is None  # no timeout: waits until someone decides
    _, at = describe({"kind": "pipeline", "pipeline": "pl_x"}, now)
    assert at > now  # the sweep looks at the child now and then
    _, at = describe({"kind": "teleport"}, now)
    assert at == now  # unknown to this host: the sweep fails the step at once
    one, _ = describe({"kind": "time", "seconds": 9}, now)
    two, _ = describe({"kind": "time", "seconds": 9}, now)
    assert one["nonce"] != two["nonce"]
