"""Writers to one SQLite file take turns here before ``BEGIN IMMEDIATE``.

SQLite lets one writer in at a time. A writer that finds the lock taken is put to sleep by
SQLite's busy handler for 1, 2, 5, 10 ... up to 100 ms at a time, whether or not the lock is
freed in the meantime. Under load (gunicorn's web workers, their executor threads and any
``levqor worker`` on one database) those sleeps, not the work, set the latency: webhook
acceptances answered in 0.9 ms of CPU took 30 ms at the median and 0.8 s at p99
(docs/benchmarks.md).

The gate queues the writers instead:

- the threads of a process on a condition of the process;
- the processes on an exclusive ``flock`` of ``<database>-lock`` beside the database. The kernel
  releases it when its holder exits or dies.

A waiter goes in as soon as the writer before it is done. After ``timeout`` seconds (SQLite's
``busy_timeout``) it fails with the same error as a busy database: ``OperationalError``
"database is locked". The API answers that with 503 and ``Retry-After``.

Within a process, requests go first. Threads marked with :func:`background` (the embedded
executor's) wait while a request of their process waits, so a burst of webhooks is accepted
at once and its runs follow from the durable queue. A background writer that has waited
``STARVE_AFTER`` seconds goes next, so runs still progress under a constant stream of requests.

Writers that do not use the gate (the ``sqlite3`` shell, a health probe) are still
serialized by SQLite itself: the gate only decides the order among Levqor's writers. When
the lock file cannot be created (a read-only folder), processes fall back to SQLite's busy
handler and threads still queue on the process lock.
"""

from __future__ import annotations

import fcntl
import logging
import os
import sqlite3
import threading
import time
import weakref
from pathlib import Path

from sqlalchemy.exc import OperationalError

log = logging.getLogger("levqor.store")

TIMEOUT = 10.0  # seconds, the same as the engine's busy_timeout
STARVE_AFTER = 0.1  # seconds a background writer yields to requests before it goes next

_local = threading.local()


def background(flag: bool = True) -> None:
    """Mark this thread's writes as background work (or not, with ``False``): at the gate,
    requests of the same process go first."""
    _local.background = flag


class WriteGate:
    """Exclusive across the threads and the processes that use the same database file."""

    def __init__(
        self, database: str | Path, timeout: float = TIMEOUT, starve_after: float = STARVE_AFTER
    ) -> None:
        self.path = Path(f"{Path(database).resolve()}-lock")
        self.timeout = timeout
        self.starve_after = starve_after
        self._cond = threading.Condition(threading.Lock())
        self._held = False
        self._urgent = 0  # requests waiting for a turn
        self._starving = 0  # background writers that waited starve_after
        self._fd: int | None = None
        self._fd_failed = False

    def __repr__(self) -> str:
        return f"<WriteGate {self.path}>"

    def _file(self) -> int | None:
        if self._fd is None and not self._fd_failed:
            try:
                self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            except OSError as e:
                self._fd_failed = True
                log.warning(
                    "cannot open the write lock file %s (%s): writers from other processes "
                    "queue on SQLite's busy handler instead",
                    self.path,
                    e.strerror,
                )
        return self._fd

    def __enter__(self) -> WriteGate:
        deadline = time.monotonic() + self.timeout
        self._turn(not getattr(_local, "background", False), deadline)
        try:
            fd = self._file()
            if fd is not None:
                pause = 0.0001
                while True:
                    try:
                        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                        break
                    except BlockingIOError:
                        if time.monotonic() >= deadline:
                            raise _locked(self.timeout) from None
                        time.sleep(pause)
                        pause = min(pause * 2, 0.001)
        except BaseException:
            self._release()
            raise
        return self

    def _turn(self, urgent: bool, deadline: float) -> None:
        """This process's turn: requests first, then background writers, except that one which
        has waited ``starve_after`` goes before both."""
        since = time.monotonic()
        starving = False
        with self._cond:
            if urgent:
                self._urgent += 1
            try:
                while True:
                    if not self._held and (
                        starving
                        or (urgent and self._starving == 0)
                        or (not urgent and self._urgent == 0 and self._starving == 0)
                    ):
                        break
                    now = time.monotonic()
                    if now >= deadline:
                        self._cond.notify_all()  # waiters that deferred to this one re-check
                        raise _locked(self.timeout)
                    if not urgent and not starving and now - since >= self.starve_after:
                        starving = True
                        self._starving += 1
                        continue
                    wake = (
                        deadline if urgent or starving else min(deadline, since + self.starve_after)
                    )
                    self._cond.wait(wake - now)
            finally:
                if urgent:
                    self._urgent -= 1
                if starving:
                    self._starving -= 1
            self._held = True

    def _release(self) -> None:
        with self._cond:
            self._held = False
            self._cond.notify_all()

    def __exit__(self, *exc: object) -> None:
        try:
            if self._fd is not None:
                fcntl.flock(self._fd, fcntl.LOCK_UN)
        finally:
            self._release()

    def __del__(self) -> None:
        if self._fd is not None:
            try:
                os.close(self._fd)
            except OSError:
                pass

    def after_fork(self) -> None:
        """In a child process: a fresh lock (another thread may have held the parent's) and a
        file descriptor of its own (a shared one would share the parent's ``flock``)."""
        self._cond = threading.Condition(threading.Lock())
        self._held = False
        self._urgent = 0
        self._starving = 0
        if self._fd is not None:
            try:
                os.close(self._fd)
            except OSError:
                pass
        self._fd = None
        self._fd_failed = False


def _locked(timeout: float) -> OperationalError:
    return OperationalError(
        "BEGIN IMMEDIATE",
        None,
        sqlite3.OperationalError(f"database is locked (no write turn within {timeout:g} s)"),
    )


# Held by the Stores that use them: a gate (and its file descriptor) goes with the last one.
_gates: weakref.WeakValueDictionary[Path, WriteGate] = weakref.WeakValueDictionary()
_gates_lock = threading.Lock()


def gate_for(database: str | Path) -> WriteGate:
    """The process's gate of a database file: the Stores on one file share it."""
    key = Path(database).resolve()
    with _gates_lock:
        gate = _gates.get(key)
        if gate is None:
            gate = _gates[key] = WriteGate(key)
        return gate


def _after_fork_in_child() -> None:
    global _gates_lock
    _gates_lock = threading.Lock()
    for gate in list(_gates.values()):
        gate.after_fork()


os.register_at_fork(after_in_child=_after_fork_in_child)
