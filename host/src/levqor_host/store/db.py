"""The database under every repository: engine, transactions, migrations.

SQLite (default, WAL) or PostgreSQL (``postgresql+psycopg://``). Repositories (``users.py``,
``pipelines.py``, ``runs.py``, ...) run each public method in one short transaction of their own
from :meth:`Database.write` or :meth:`Database.read`, and return plain dicts (never Row
objects, see ``rows.py``); datetimes in those dicts are ISO 8601 strings in UTC.

Writes on SQLite open the transaction with ``BEGIN IMMEDIATE`` so that the write lock is taken
up front (no deadlock-prone lock upgrades). Concurrent writers of a database file queue on a
gate first (``write_gate.py``): each goes in as soon as the one before it commits, instead of
sleeping in SQLite's busy handler.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
import uuid
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar

from sqlalchemy import Connection, Engine, Table, create_engine, event, func, select, text
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import DBAPIError
from sqlalchemy.pool import StaticPool

from levqor_host.store.write_gate import gate_for

if TYPE_CHECKING:
    from alembic.config import Config

    from levqor_host.security.vault import Vault

__all__ = [
    "MIGRATIONS_DIR",
    "Conflict",
    "Database",
    "NotFound",
    "StoreError",
    "alembic_config",
    "make_engine",
    "new_id",
    "normalize_url",
    "retry_on_disconnect",
    "script_heads",
    "utcnow",
]

MIGRATIONS_DIR = Path(__file__).with_name("migrations")
# pg_advisory_xact_lock key of migrations (stable across processes).
_PG_LOCK_MIGRATE = zlib.crc32(b"levqor:migrate")

_P = ParamSpec("_P")
_T = TypeVar("_T")


class StoreError(Exception):
    """Base class of store errors."""


class Conflict(StoreError):
    """A unique value (email, credential name, ...) is already taken."""


class NotFound(StoreError, LookupError):
    """A referenced row does not exist or belongs to another user."""


def utcnow() -> datetime:
    """The current time, in UTC."""
    return datetime.now(UTC)


def new_id(prefix: str) -> str:
    """A new random row id, ``<prefix>_<32 hex digits>``."""
    return f"{prefix}_{uuid.uuid4().hex}"


# --------------------------------------------------------------------------- engine


def normalize_url(url: str) -> str:
    """Use psycopg 3 for PostgreSQL URLs (``postgres://`` and ``postgresql://`` included)."""
    if url.startswith("postgres://"):
        url = "postgresql://" + url[len("postgres://") :]
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url[len("postgresql://") :]
    return url


def _is_memory_sqlite(url: URL) -> bool:
    db = url.database
    return not db or db == ":memory:" or url.query.get("mode") == "memory"


def make_engine(url: str) -> Engine:
    """An engine set up for Levqor.

    SQLite: WAL, ``busy_timeout`` 10 s, foreign keys on, ``synchronous=NORMAL``; transactions are
    begun by SQLAlchemy (driver autocommit off), ``BEGIN IMMEDIATE`` when the connection has the
    ``levqor_write`` execution option (see :meth:`Database.write`). The database file's folder is
    created. An in-memory database uses a single shared connection.
    PostgreSQL: psycopg 3, ``pool_pre_ping``.
    """
    u = make_url(normalize_url(url))
    if u.get_backend_name() != "sqlite":
        return create_engine(u, pool_pre_ping=True, pool_size=10, max_overflow=20)

    memory = _is_memory_sqlite(u)
    if memory:
        engine = create_engine(u, poolclass=StaticPool, connect_args={"check_same_thread": False})
    else:
        Path(u.database).expanduser().resolve().parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(
            u,
            pool_size=8,
            max_overflow=32,
            connect_args={"check_same_thread": False, "timeout": 10},
        )

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn, _record):
        # Let SQLAlchemy's "begin" event below emit BEGIN instead of pysqlite's implicit one.
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        try:
            if not memory:
                cur.execute("PRAGMA journal_mode=WAL")
                cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA busy_timeout=10000")
            cur.execute("PRAGMA foreign_keys=ON")
        finally:
            cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn):
        if conn.get_execution_options().get("levqor_write"):
            conn.exec_driver_sql("BEGIN IMMEDIATE")
        else:
            conn.exec_driver_sql("BEGIN")

    return engine


def retry_on_disconnect(fn: Callable[_P, _T]) -> Callable[_P, _T]:
    """Run ``fn`` again (twice at most) when the database connection died under it (a server
    restart, ``pg_terminate_backend``, a fail-over): the pool has dropped the dead connection and
    the next attempt gets a fresh one. Only on methods that are safe to repeat (reads, upserts,
    updates conditional on the lease). See docs/scaling.md."""

    @functools.wraps(fn)
    def wrapper(*args: _P.args, **kwargs: _P.kwargs) -> _T:
        for attempt in range(3):
            try:
                return fn(*args, **kwargs)
            except DBAPIError as e:
                if not e.connection_invalidated or attempt == 2:
                    raise
                logging.getLogger("levqor.store").warning(
                    "database connection lost in %s; retrying on a new one", fn.__name__
                )
                time.sleep(0.05 * (attempt + 1))
        raise AssertionError("unreachable")

    return wrapper


# --------------------------------------------------------------------------- migrations


def alembic_config() -> Config:
    """The Alembic configuration of Levqor's migrations (no ini file)."""
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR).replace("%", "%%"))
    return cfg


@functools.cache
def script_heads() -> frozenset[str]:
    """The head revisions of the migration scripts."""
    from alembic.script import ScriptDirectory

    return frozenset(ScriptDirectory.from_config(alembic_config()).get_heads())


# --------------------------------------------------------------------------- the database


class Database:
    """One database of a deployment: its engine and the transactions repositories run in.
    Thread-safe; one per app."""

    def __init__(self, url: str, vault: Vault) -> None:
        self.engine: Engine = make_engine(url)
        self.url: str = self.engine.url.render_as_string(hide_password=False)
        self.dialect: str = self.engine.dialect.name
        #: encrypts credentials and webhook secrets (replaced by ``VaultKeys.rotate``)
        self.vault = vault
        self.postgres: bool = self.dialect == "postgresql"
        sqlite = self.dialect == "sqlite"
        self._sqlite = sqlite
        # An in-memory SQLite database is one shared connection: serialize its transactions.
        self._serial = threading.RLock() if sqlite and _is_memory_sqlite(self.engine.url) else None
        # A file database's writers take turns on a gate before BEGIN IMMEDIATE (write_gate.py).
        self._gate = gate_for(self.engine.url.database) if sqlite and self._serial is None else None
        # Same pool; connections from it begin with BEGIN IMMEDIATE on SQLite.
        self._write_engine = (
            self.engine.execution_options(levqor_write=True) if sqlite else self.engine
        )
        self._local = threading.local()  # this thread's pinned connection (see pinned())

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.engine.url.render_as_string(hide_password=True)}>"

    # ------------------------------------------------------------------ transactions

    @contextmanager
    def write(self) -> Iterator[Connection]:
        """A write transaction (``BEGIN IMMEDIATE`` on SQLite, after this writer's turn at the
        write gate); commits on success."""
        with self._serial or nullcontext():
            pinned = self._pinned_free()
            if pinned is not None:
                if self._sqlite:
                    pinned.execution_options(levqor_write=True)
                with self._gate or nullcontext(), pinned.begin():
                    yield pinned
                return
            with self._write_engine.connect() as conn, self._gate or nullcontext(), conn.begin():
                yield conn

    @contextmanager
    def read(self) -> Iterator[Connection]:
        """A read-only transaction (a consistent snapshot on SQLite WAL)."""
        with self._serial or nullcontext():
            pinned = self._pinned_free()
            if pinned is not None:
                if self._sqlite:
                    pinned.execution_options(levqor_write=False)
                with pinned.begin():
                    yield pinned
                return
            with self.engine.connect() as conn, conn.begin():
                yield conn

    @contextmanager
    def pinned(self) -> Iterator[None]:
        """Within the block, this thread's transactions reuse one pooled connection: one
        checkout and one liveness ping for, say, a whole run instead of one per call. A
        transaction opened inside another one still takes a connection of its own. A
        connection that died is replaced on its next use (see :func:`retry_on_disconnect`)."""
        if getattr(self._local, "conn", None) is not None:
            yield
            return
        conn = self.engine.connect()
        self._local.conn = conn
        try:
            yield
        finally:
            self._local.conn = None
            conn.close()

    def _pinned_free(self) -> Connection | None:
        conn = getattr(self._local, "conn", None)
        if conn is None or conn.in_transaction():
            return None
        return conn

    def insert(self, table: Table) -> Any:
        """An INSERT of this dialect (with ``on_conflict_do_*`` and ``excluded``)."""
        return pg_insert(table) if self.postgres else sqlite_insert(table)

    # ------------------------------------------------------------------ lifecycle

    def upgrade(self) -> None:
        """Apply every pending Alembic migration (idempotent; safe against concurrent callers)."""
        from alembic import command

        cfg = alembic_config()
        with self.write() as conn:
            if self.postgres:
                conn.execute(select(func.pg_advisory_xact_lock(_PG_LOCK_MIGRATE)))
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, "head")

    def is_migrated(self) -> bool:
        """Whether the database is at the newest migration."""
        from alembic.runtime.migration import MigrationContext

        with self.engine.connect() as conn:
            current = frozenset(MigrationContext.configure(conn).get_current_heads())
            conn.rollback()
        return current == script_heads()

    def ping(self) -> None:
        """Raise when the database cannot be reached."""
        with self.engine.connect() as conn:
            conn.execute(text("SELECT 1")).scalar_one()
            conn.rollback()

    def close(self) -> None:
        """Close every pooled connection."""
        self.engine.dispose()
