"""Writers to one SQLite file take turns here before ``BEGIN IMMEDIATE``.

SQLite lets one writer in at a time. A writer that finds the lock taken is put to sleep by
SQLite's busy handler for 1, 2, 5, 10 ... up to 100 ms at a time, whether or not the lock is
freed in the meantime. Under load (gunicorn's web workers, their executor threads and any
``levqor worker`` on one database) those sleeps, not the work, set the latency: webhook
acceptances answered in 0.9 ms of CPU took 30 ms at the median and 0.8 s at p99
(docs/benchmarks.md).

The gate queues the writers instead:

- the threads of a process in queues of the process: a writer that is done hands the turn to
  the next one;
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
handler and the threads of each process still queue as above.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import sqlite3
import threading
import time
import weakref
from collections import deque
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


class _Waiter:
    __slots__ = ("event", "granted")

    def __init__(self) -> None:
        self.event = threading.Event()
        self.granted = False


class WriteGate:
    """Exclusive across the threads and the processes that use the same database file."""

    def __init__(
        self, database: str | Path, timeout: float = TIMEOUT, starve_after: float = STARVE_AFTER
    ) -> None:
        self.path = Path(f"{Path(database).resolve()}-lock")
        self.timeout = timeout
        self.starve_after = starve_after
        self._fd: int | None = None
        self._reset()

    def _reset(self) -> None:
        """No turn taken, nobody waiting, the lock file not open yet."""
        self._mutex = threading.Lock()
        self._held = False  # a writer of this process has the turn
        self._urgent: deque[_Waiter] = deque()  # requests waiting for a turn
        self._background: deque[_Waiter] = deque()  # background writers waiting
        self._starving: deque[_Waiter] = deque()  # background writers that waited starve_after
        self._close_file()
        self._fd_failed = False

    def _close_file(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            try:
                os.close(fd)
            except OSError:  # closed already
                pass

    def __repr__(self) -> str:
        return f"<WriteGate {self.path}>"

    def _file(self) -> int | None:
        if self._fd is None and not self._fd_failed:
            try:
                self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            except OSError as e:
                self._without_file("cannot open", e)
        return self._fd

    def _without_file(self, what: str, e: OSError) -> None:
        """Go on without the lock file (a read-only folder, a file system without ``flock``):
        other processes' writers then queue on SQLite's busy handler."""
        self._fd_failed = True
        self._close_file()
        log.warning(
            "%s the write lock file %s (%s): writers from other processes queue on SQLite's "
            "busy handler instead",
            what,
            self.path,
            e.strerror or e,
        )

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
                    except OSError as e:  # ENOLCK, EOPNOTSUPP: no flock on this file system
                        self._without_file("cannot lock", e)
                        break
        except BaseException:
            self._release()
            raise
        return self

    def _turn(self, urgent: bool, deadline: float) -> None:
        """This process's turn. A free gate is taken at once; otherwise the writer queues and
        the writer before it hands the turn over (no herd of woken threads racing for it):
        first to a background writer that has waited ``starve_after``, then to requests, then
        to background writers, each in the order they came."""
        with self._mutex:
            if not self._held:
                self._held = True
                return
            waiter = _Waiter()
            queue = self._urgent if urgent else self._background
            queue.append(waiter)
        since = time.monotonic()
        while True:
            now = time.monotonic()
            until = deadline if queue is not self._background else since + self.starve_after
            if waiter.event.wait(max(0.0, min(until, deadline) - now)):
                return  # handed over
            with self._mutex:
                if waiter.granted:
                    return
                now = time.monotonic()
                if now >= deadline:
                    queue.remove(waiter)
                    raise _locked(self.timeout)
                if queue is self._background and now - since >= self.starve_after:
                    self._background.remove(waiter)
                    queue = self._starving
                    queue.append(waiter)

    def _release(self) -> None:
        with self._mutex:
            for queue in (self._starving, self._urgent, self._background):
                if queue:
                    waiter = queue.popleft()
                    waiter.granted = True
                    waiter.event.set()  # the turn passes to it: the gate stays held
                    return
            self._held = False

    def __exit__(self, *exc: object) -> None:
        try:
            if self._fd is not None:
                fcntl.flock(self._fd, fcntl.LOCK_UN)
        finally:
            self._release()

    def __del__(self) -> None:
        with contextlib.suppress(Exception):  # at interpreter exit, os may be half torn down
            self._close_file()

    def after_fork(self) -> None:
        """In a child process: a fresh lock (another thread may have held the parent's) and a
        file descriptor of its own (a shared one would share the parent's ``flock``)."""
        self._reset()


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
