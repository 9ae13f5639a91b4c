"""What a run costs the database: the executor writes a fresh two-step run in three write
transactions (the claim is one more), a succeeded step is stored before the next step starts,
and the final status and the settlement are one transaction (issue 10: throughput); steps of
pure actions (core.transform) add no transaction of their own."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time

import pytest
from e2e_support import make_app
from levqor_host.workers.embedded import EmbeddedExecutor
from levqor_kernel import hookimpl
from sqlalchemy import event

# scripts/test-backends runs this file again on PostgreSQL
pytestmark = pytest.mark.backends

TWO_STEPS = {
    "levqor": 1,
    "trigger": {"type": "manual"},
    "steps": [
        {"id": "a", "connector": "core", "action": "transform", "payload": {"value": 1}},
        {"id": "b", "connector": "core", "action": "transform", "payload": {"value": 2}},
    ],
}
#: two steps of a connector with effects (each call reaches outside the run)
TWO_SENDS = {
    **TWO_STEPS,
    "steps": [
        {"id": "a", "connector": "send", "action": "go", "payload": {}},
        {"id": "b", "connector": "send", "action": "go", "payload": {}},
    ],
}


class Send:
    """A test connector whose calls have effects upstream (as far as the host knows)."""

    @hookimpl
    def describe_schema(self):
        action = {"title": "Go", "payload": {"type": "object"}, "output": {"type": "object"}}
        return [
            {
                "name": "send",
                "title": "Send",
                "description": "test connector",
                "cooperative": True,
                "actions": {"go": {**action, "example": {}}},
            }
        ]

    @hookimpl
    def run_task(self, connector, action, payload, credentials, context):
        return {"sent": True}


class WriteLog:
    """Observes the engine: the statements of every committed transaction that wrote."""

    def __init__(self, engine) -> None:
        self.transactions: list[list[str]] = []
        self._open: dict[int, list[str]] = {}
        self._lock = threading.Lock()
        event.listen(engine, "before_cursor_execute", self._statement)
        event.listen(engine, "commit", self._commit)
        event.listen(engine, "rollback", self._rollback)

    def _statement(self, conn, cursor, statement, params, context, executemany) -> None:
        word = statement.lstrip().split(None, 1)[0].upper()
        if word in ("INSERT", "UPDATE", "DELETE"):
            table = statement.split(None, 3)[1 if word == "UPDATE" else 2]  # INTO/FROM table
            with self._lock:
                self._open.setdefault(id(conn), []).append(f"{word} {table}")

    def _commit(self, conn) -> None:
        with self._lock:
            wrote = self._open.pop(id(conn), None)
            if wrote:
                self.transactions.append(wrote)

    def _rollback(self, conn) -> None:
        with self._lock:
            self._open.pop(id(conn), None)


def test_a_fresh_two_step_run_takes_three_write_transactions(tmp_path):
    app = make_app(
        tmp_path,
        start_workers=False,
        env={"LEVQOR_EXECUTOR": "embedded"},
        plugins=[("send", Send())],
    )
    st = app.extensions["levqor"]
    try:
        user = st.store.users.create("tx@example.com")
        p = st.store.pipelines.get(
            user["id"], st.store.pipelines.create(user["id"], "two", TWO_SENDS)["id"]
        )
        rid = st.runs.start(user, p, {})[0]["id"]
        ex = EmbeddedExecutor(st.runs, threads=0, worker_id="w")
        (run,) = st.store.leases.claim_next("w", lease_seconds=30, limit=1)
        log = WriteLog(st.store.engine)
        assert ex.execute(run) == "succeeded"
        txs = log.transactions
        # 1: step a "running"; 2: step a "succeeded" + step b "running" (a is stored before b
        # starts); 3: step b "succeeded" + the run final + its settlement, together
        assert len(txs) == 3, txs
        assert txs[0] == ["INSERT run_steps"]
        assert txs[1] == ["INSERT run_steps"]  # one executemany of both rows
        final = txs[2]
        assert final[0] == "INSERT run_steps" and "UPDATE runs" in final, final
        assert "INSERT usage_daily" in final and "INSERT events" in final, final
        done = st.store.runs.get(None, rid)
        assert done["status"] == "succeeded"
        assert [(s["step_id"], s["status"], s["attempts"]) for s in done["steps"]] == [
            ("a", "succeeded", 1),
            ("b", "succeeded", 1),
        ]
        with st.store.read() as conn:
            from levqor_host.store.tables import runs

            row = conn.execute(runs.select().where(runs.c.id == rid)).one()
        assert row.settled_at is not None and row.settled_at == row.finished_at
        lines = [json.loads(x) for x in st.config.jobs_log.read_text().splitlines()]
        assert [(x["run_id"], x["status"]) for x in lines] == [(rid, "succeeded")]
    finally:
        st.runner.close()
        st.store.close()


def test_a_run_of_pure_steps_is_written_with_its_end(tmp_path):
    """core.transform reaches nothing outside the run: no "running" rows, so a fresh run of two
    such steps is one write transaction (its steps, its end and its settlement)."""
    app = make_app(tmp_path, start_workers=False, env={"LEVQOR_EXECUTOR": "embedded"})
    st = app.extensions["levqor"]
    try:
        user = st.store.users.create("pure@example.com")
        p = st.store.pipelines.get(
            user["id"], st.store.pipelines.create(user["id"], "two", TWO_STEPS)["id"]
        )
        rid = st.runs.start(user, p, {})[0]["id"]
        (run,) = st.store.leases.claim_next("w", lease_seconds=30, limit=1)
        log = WriteLog(st.store.engine)
        assert EmbeddedExecutor(st.runs, threads=0, worker_id="w").execute(run) == "succeeded"
        assert len(log.transactions) == 1, log.transactions
        assert "UPDATE runs" in log.transactions[0]
        assert [s["status"] for s in st.store.runs.get(None, rid)["steps"]] == ["succeeded"] * 2
    finally:
        st.runner.close()
        st.store.close()


def test_a_run_whose_lease_was_taken_writes_its_steps_but_is_not_finished_or_settled(tmp_path):
    app = make_app(tmp_path, start_workers=False, env={"LEVQOR_EXECUTOR": "embedded"})
    st = app.extensions["levqor"]
    try:
        user = st.store.users.create("lease@example.com")
        p = st.store.pipelines.get(
            user["id"], st.store.pipelines.create(user["id"], "two", TWO_STEPS)["id"]
        )
        rid = st.runs.start(user, p, {})[0]["id"]
        (run,) = st.store.leases.claim_next("old", lease_seconds=30, limit=1)
        with st.store.write() as conn:  # another worker took the run over meanwhile
            from levqor_host.store.tables import runs

            conn.execute(runs.update().where(runs.c.id == rid).values(lease_owner="new"))
        ex = EmbeddedExecutor(st.runs, threads=0, worker_id="old")
        assert ex.execute(run) is None
        r = st.store.runs.get(None, rid)
        assert r["status"] == "running" and r["lease_owner"] == "new"
        assert [s["status"] for s in r["steps"]] == ["succeeded", "succeeded"]
        with st.store.read() as conn:
            row = conn.execute(runs.select().where(runs.c.id == rid)).one()
        assert row.settled_at is None
        assert not st.config.jobs_log.exists()
    finally:
        st.runner.close()
        st.store.close()


def test_a_pinned_store_checks_out_one_connection_and_still_nests(tmp_path):
    app = make_app(tmp_path, start_workers=False, env={"LEVQOR_EXECUTOR": "embedded"})
    st = app.extensions["levqor"]
    try:
        user = st.store.users.create("pin@example.com")
        checkouts: list[int] = []
        event.listen(st.store.engine, "checkout", lambda *a: checkouts.append(1))
        with st.store.pinned():
            for _ in range(5):
                assert st.store.users.get(user["id"])["email"] == "pin@example.com"
            with st.store.write() as conn:
                from levqor_host.store.tables import users

                conn.execute(users.update().where(users.c.id == user["id"]).values(name="P"))
                # a transaction inside a transaction takes a connection of its own
                assert st.store.users.get(user["id"])["id"] == user["id"]
        assert len(checkouts) == 2, checkouts
        assert st.store.users.get(user["id"])["name"] == "P"
    finally:
        st.store.close()


def test_a_webhook_delivery_is_one_read_and_one_write_on_one_connection(tmp_path):
    """Accepting a webhook: the lookups (pipeline, owner, secret, credential names) are one
    read transaction, the gate and the run row one write transaction, both on one pooled
    connection (issue 3: acceptances per second)."""
    app = make_app(tmp_path, start_workers=False, env={"LEVQOR_EXECUTOR": "embedded"})
    st = app.extensions["levqor"]
    try:
        user = st.store.users.create("hook@example.com")
        doc = {**TWO_STEPS, "trigger": {"type": "webhook"}}
        p = st.store.pipelines.create(user["id"], "hook", doc)
        st.store.pipelines.set_webhook_secret(user["id"], p["id"], "whsec-tx")
        client = app.test_client()
        body = json.dumps({"n": 1}).encode()

        def deliver():
            ts = str(int(time.time()))
            sig = hmac.new(b"whsec-tx", f"{ts}.".encode() + body, hashlib.sha256).hexdigest()
            return client.post(
                f"/hooks/{p['webhook_token']}",
                data=body,
                headers={
                    "Content-Type": "application/json",
                    "X-Levqor-Timestamp": ts,
                    "X-Levqor-Signature": f"sha256={sig}",
                },
            )

        assert deliver().status_code == 202  # warm the validation cache
        checkouts: list[int] = []
        begins: list[int] = []
        event.listen(st.store.engine, "checkout", lambda *a: checkouts.append(1))
        event.listen(st.store.engine, "begin", lambda conn: begins.append(1))
        log = WriteLog(st.store.engine)
        r = deliver()
        assert r.status_code == 202, r.get_json()
        assert len(begins) == 2, begins  # the lookups, then the gate and the run row
        assert len(checkouts) == 1, checkouts
        assert len(log.transactions) == 1 and "INSERT runs" in log.transactions[0]
        assert st.store.runs.get(user["id"], r.get_json()["run_id"])["status"] == "queued"
    finally:
        st.store.close()
