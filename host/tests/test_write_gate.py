"""The SQLite write gate (levqor_host/store/write_gate.py): Levqor's writers to one database
file take turns across threads and processes, a waiter goes in when the holder is done, and a
turn that does not come within the timeout fails like a busy database."""

from __future__ import annotations

import fcntl
import multiprocessing
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from e2e_support import make_app, skip_unless_sqlite, stop_app
from levqor_host.security.vault import Vault
from levqor_host.store import Store
from levqor_host.store.write_gate import WriteGate, background, gate_for
from sqlalchemy import text
from sqlalchemy.exc import OperationalError

# scripts/test-backends runs this file again on PostgreSQL
pytestmark = pytest.mark.backends

HOLD = """
import fcntl, os, sys
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT, 0o600)
fcntl.flock(fd, fcntl.LOCK_EX)
print("held", flush=True)
sys.stdin.readline()  # until the test says so
"""


class Holder:
    """Another process holding the gate's lock file until released."""

    def __init__(self, path: Path) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", HOLD, str(path)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout.readline().strip() == "held"

    def release(self) -> None:
        if self.proc.poll() is None:
            self.proc.stdin.write("go\n")
            self.proc.stdin.flush()
            self.proc.wait(10)

    def __enter__(self) -> Holder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
        if self.proc.poll() is None:
            self.proc.kill()


def _store(tmp_path: Path) -> Store:
    store = Store(f"sqlite:///{tmp_path / 'levqor.db'}", Vault([Vault.generate_key()]))
    store.upgrade()
    return store


def test_a_write_waits_for_another_process_turn_then_goes_in(tmp_path):
    store = _store(tmp_path)
    try:
        gate = gate_for(tmp_path / "levqor.db")
        assert store._gate is gate and gate.path == (tmp_path / "levqor.db-lock").resolve()
        done = threading.Event()
        errors: list[BaseException] = []

        def write() -> None:
            try:
                with store.write() as conn:
                    conn.execute(text("CREATE TABLE IF NOT EXISTS t (n INTEGER)"))
                    conn.execute(text("INSERT INTO t VALUES (1)"))
                done.set()
            except BaseException as e:  # noqa: BLE001 - reported below
                errors.append(e)

        with Holder(gate.path) as holder:
            t = threading.Thread(target=write)
            t.start()
            # SQLite itself is free: without the gate the write would be in at once
            assert not done.wait(0.5), "the write went in while another process had the turn"
            holder.release()
            assert done.wait(5), errors
            t.join(5)
        assert not errors
        with store.read() as conn:
            assert conn.execute(text("SELECT count(*) FROM t")).scalar_one() == 1
    finally:
        store.close()


def test_a_turn_that_does_not_come_fails_like_a_busy_database(tmp_path):
    gate = WriteGate(tmp_path / "levqor.db", timeout=0.3)
    with Holder(gate.path):
        started = time.monotonic()
        with pytest.raises(OperationalError, match="database is locked"):
            with gate:
                pass
        assert time.monotonic() - started >= 0.3
    with gate:  # the holder is gone: the turn comes, and the thread lock was given back
        pass
    with gate:
        pass


def test_a_writer_that_gave_up_waiting_is_not_handed_the_turn(tmp_path):
    gate = WriteGate(tmp_path / "levqor.db", timeout=0.3)
    failed: list[BaseException] = []

    def impatient() -> None:
        try:
            with gate:
                pass
        except OperationalError as e:
            failed.append(e)

    with gate:
        for is_background in (False, True):
            t = threading.Thread(target=lambda b=is_background: (background(b), impatient()))
            t.start()
            t.join(5)
    assert len(failed) == 2 and all("database is locked" in str(e) for e in failed)
    done = threading.Event()

    def later() -> None:
        with gate:
            done.set()

    threading.Thread(target=later).start()
    assert done.wait(2), "the turn went to a writer that had left"


def test_without_a_lock_file_writes_still_work_and_it_is_said(tmp_path, caplog):
    (tmp_path / "levqor.db-lock").mkdir()  # the lock file cannot be opened
    store = _store(tmp_path)
    try:
        with caplog.at_level("WARNING", logger="levqor.store"):
            with store.write() as conn:
                conn.execute(text("CREATE TABLE t (n INTEGER)"))
        assert "cannot open the write lock file" in caplog.text
        assert "busy handler" in caplog.text
        threads = [
            threading.Thread(target=lambda: _insert(store)) for _ in range(4)
        ]  # threads still take turns without it
        for t in threads:
            t.start()
        for t in threads:
            t.join(10)
        with store.read() as conn:
            assert conn.execute(text("SELECT count(*) FROM t")).scalar_one() == 40
    finally:
        store.close()


def _insert(store: Store) -> None:
    for _ in range(10):
        with store.write() as conn:
            conn.execute(text("INSERT INTO t VALUES (1)"))


def test_threads_of_one_process_take_turns(tmp_path):
    gate = WriteGate(tmp_path / "levqor.db", timeout=5)
    inside = 0
    most = 0
    lock = threading.Lock()

    def work() -> None:
        nonlocal inside, most
        for _ in range(50):
            with gate:
                with lock:
                    inside += 1
                    most = max(most, inside)
                time.sleep(0.0005)
                with lock:
                    inside -= 1

    threads = [threading.Thread(target=work) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert most == 1


def _wait_until(cond, what: str, timeout: float = 5) -> None:
    end = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < end, what
        time.sleep(0.005)


def test_a_request_goes_before_a_background_writer_that_came_first(tmp_path):
    gate = WriteGate(tmp_path / "levqor.db", timeout=10, starve_after=30)
    order: list[str] = []

    def writer(name: str, is_background: bool) -> None:
        background(is_background)
        with gate:
            order.append(name)

    with gate:  # held while both queue up: the background writer first
        runs = threading.Thread(target=writer, args=("executor", True))
        runs.start()
        time.sleep(0.2)
        request = threading.Thread(target=writer, args=("request", False))
        request.start()
        _wait_until(lambda: len(gate._urgent) == 1, "the request never queued")
    runs.join(5)
    request.join(5)
    assert order == ["request", "executor"]


def test_a_background_writer_still_gets_its_turn_under_a_stream_of_requests(tmp_path):
    gate = WriteGate(tmp_path / "levqor.db", timeout=10, starve_after=0.2)
    stop = threading.Event()
    requests_done = 0
    got_in: list[bool] = []

    def request_stream() -> None:  # always one request waiting while another holds the gate
        nonlocal requests_done
        while not stop.is_set():
            with gate:
                requests_done += 1
                time.sleep(0.002)

    def background_write() -> None:
        background()
        with gate:
            got_in.append(not stop.is_set())  # in while the requests still came

    stream = [threading.Thread(target=request_stream) for _ in range(3)]
    for t in stream:
        t.start()
    _wait_until(lambda: requests_done > 20, "the requests did not start")
    b = threading.Thread(target=background_write)
    b.start()
    b.join(8)
    stop.set()
    for t in stream:
        t.join(5)
    assert got_in == [True]


def _child_after_fork(path: str, to_parent, to_child) -> None:  # runs in the forked child
    gate = gate_for(path)
    gate.timeout = 0.3
    try:
        with gate:
            to_parent.put("in while the parent held it")
            return
    except OperationalError:
        to_parent.put("waited")
    to_child.get(timeout=10)  # the parent has let go
    gate.timeout = 5
    with gate:
        to_parent.put("in")


def test_a_forked_child_takes_turns_with_its_parent(tmp_path):
    """A child process gets a lock and a lock-file descriptor of its own: sharing the parent's
    descriptor would share its flock, and a thread lock copied while held would never open."""
    db = str(tmp_path / "levqor.db")
    gate = gate_for(db)
    ctx = multiprocessing.get_context("fork")
    to_parent, to_child = ctx.Queue(), ctx.Queue()
    held = threading.Event()
    release = threading.Event()

    def hold() -> None:  # another thread holds the gate while the process forks
        with gate:
            held.set()
            release.wait(10)

    t = threading.Thread(target=hold)
    t.start()
    assert held.wait(5)
    child = ctx.Process(target=_child_after_fork, args=(db, to_parent, to_child))
    child.start()
    try:
        assert to_parent.get(timeout=10) == "waited"
        release.set()
        t.join(5)
        to_child.put("go")
        assert to_parent.get(timeout=10) == "in"
    finally:
        release.set()
        child.join(10)
        if child.is_alive():
            child.kill()
    assert child.exitcode == 0


def test_processes_writing_one_database_lose_nothing(tmp_path):
    db = tmp_path / "levqor.db"
    store = _store(tmp_path)
    with store.write() as conn:
        conn.execute(text("CREATE TABLE counter (n INTEGER NOT NULL)"))
        conn.execute(text("INSERT INTO counter VALUES (0)"))
    store.close()
    code = f"""
import sys
from levqor_host.security.vault import Vault
from levqor_host.store import Store
from sqlalchemy import text
store = Store("sqlite:///{db}", Vault([Vault.generate_key()]))
for _ in range(200):
    with store.write() as conn:
        n = conn.execute(text("SELECT n FROM counter")).scalar_one()
        conn.execute(text("UPDATE counter SET n = :n"), {{"n": n + 1}})
store.close()
"""
    procs = [subprocess.Popen([sys.executable, "-c", code]) for _ in range(3)]
    assert [p.wait(120) for p in procs] == [0, 0, 0]
    store = _store(tmp_path)
    try:
        with store.read() as conn:
            assert conn.execute(text("SELECT n FROM counter")).scalar_one() == 600
    finally:
        store.close()
    assert os.path.exists(f"{db}-lock")
    fd = os.open(f"{db}-lock", os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # nobody holds it once they are done
    finally:
        os.close(fd)


@skip_unless_sqlite("the write gate is SQLite's")
def test_a_webhook_that_gets_no_write_turn_is_refused_503_and_writes_nothing(tmp_path):
    app = make_app(tmp_path, start_workers=False)
    st = app.extensions["levqor"]
    gate = gate_for(st.store.engine.url.database)
    try:
        user = st.store.users.create("gate@example.com")
        doc = {
            "levqor": 1,
            "trigger": {"type": "webhook"},
            "steps": [
                {"id": "a", "connector": "core", "action": "transform", "payload": {"value": 1}}
            ],
        }
        p = st.store.pipelines.create(user["id"], "gated", doc)
        assert st.store._gate is gate
        gate.timeout = 0.5  # the operator's 10 s, shortened for the test
        client = app.test_client()
        hook = f"/hooks/{p['webhook_token']}"
        with Holder(gate.path):  # another process has the turn and keeps it
            r = client.post(hook, json={"n": 1})
            assert r.status_code == 503, r.get_json()
            assert r.get_json()["error"]["code"] == "database_unavailable"
            assert r.headers["Retry-After"] == "1"
            assert st.store.runs.list(user["id"])[0] == []
        r = client.post(hook, json={"n": 2})
        assert r.status_code == 202, r.get_json()
        runs, _ = st.store.runs.list(user["id"])
        assert [st.store.runs.get(user["id"], run["id"])["input"] for run in runs] == [{"n": 2}]
    finally:
        gate.timeout = 10.0
        stop_app(app)
