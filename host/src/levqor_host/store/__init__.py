"""The Levqor store: users, API keys, pipelines, credentials, runs and the rest, on SQLAlchemy Core.

SQLite (default, WAL) or PostgreSQL (``postgresql+psycopg://``). Every public method runs in one
short transaction of its own and returns plain dicts (never Row objects); datetimes in those dicts
are ISO 8601 strings in UTC (``2025-01-01T12:00:00.123456+00:00``).

Writes on SQLite go through :meth:`Store.write`, which opens the transaction with
``BEGIN IMMEDIATE`` so that the write lock is taken up front (no deadlock-prone lock upgrades).
Concurrent writers of a database file queue on a gate first (``write_gate.py``): each goes in as
soon as the one before it commits, instead of sleeping in SQLite's busy handler. On PostgreSQL,
claiming runs uses ``SELECT ... FOR UPDATE SKIP LOCKED`` so concurrent workers never take the
same run.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import json
import logging
import secrets
import threading
import time
import uuid
import zlib
from collections import OrderedDict
from collections.abc import Iterable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import (
    Connection,
    Engine,
    and_,
    bindparam,
    case,
    create_engine,
    delete,
    event,
    func,
    literal,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.pool import StaticPool

from levqor_host.security.vault import Vault, VaultKeyError
from levqor_host.store.events import EventsRepository
from levqor_host.store.ledger import LedgerRepository
from levqor_host.store.referrals import ReferralsRepository
from levqor_host.store.tables import (
    UTCDateTime,
    api_keys,
    credentials,
    locks,
    meta,
    pipeline_versions,
    pipelines,
    run_steps,
    runs,
    users,
    webhook_deliveries,
)
from levqor_host.store.write_gate import gate_for

__all__ = [
    "Conflict",
    "NotFound",
    "Store",
    "StoreError",
    "WebhookTarget",
    "make_engine",
    "normalize_url",
    "MIGRATIONS_DIR",
    "RUN_STATUSES",
    "FINAL_RUN_STATUSES",
]

MIGRATIONS_DIR = Path(__file__).with_name("migrations")

RUN_STATUSES = ("queued", "running", "succeeded", "failed", "cancelled")
FINAL_RUN_STATUSES = frozenset({"succeeded", "failed", "cancelled"})
RUN_TRIGGERS = frozenset({"manual", "webhook", "schedule", "retry"})
STEP_STATUSES = frozenset({"running", "succeeded", "failed", "skipped", "cancelled"})

API_KEY_PREFIX = "lvq"
VAULT_CANARY_KEY = "vault_canary"
VAULT_CANARY_VALUE = {"levqor": "vault-canary"}
# last_used_at of an API key is refreshed at most this often (avoids a write per request).
KEY_TOUCH_INTERVAL = timedelta(seconds=60)
_REFERRAL_ALPHABET = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"
# pg_advisory_xact_lock keys (stable across processes).
_PG_LOCK_MIGRATE = zlib.crc32(b"levqor:migrate")
_PG_LOCK_CLAIM = zlib.crc32(b"levqor:claim")
_SQL_CLAIM_LOCK = select(func.pg_advisory_xact_lock(_PG_LOCK_CLAIM))
_VERSION_CACHE_SIZE = 1024  # pipeline versions kept in memory per Store


@dataclass(frozen=True)
class WebhookTarget:
    """A webhook token's pipeline, its owner, its signing secret (None when unset) and the
    owner's credentials by name (name -> connector, never values)."""

    pipeline: dict
    user: dict
    secret: str | None = field(repr=False)
    credentials: dict[str, str]


class StoreError(Exception):
    """Base class of store errors."""


class Conflict(StoreError):
    """A unique value (email, credential name, ...) is already taken."""


class NotFound(StoreError, LookupError):
    """A referenced row does not exist or belongs to another user."""


# --------------------------------------------------------------------------- engine


def normalize_url(url: str) -> str:
    """Use psycopg 3 for PostgreSQL URLs (``postgres://`` and ``postgresql://`` included)."""
    if url.startswith("postgres://"):
        url = "postgresql://" + url[len("postgres://") :]
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url[len("postgresql://") :]
    return url


def _is_memory_sqlite(url) -> bool:
    db = url.database
    return not db or db == ":memory:" or url.query.get("mode") == "memory"


def make_engine(url: str) -> Engine:
    """An engine set up for Levqor.

    SQLite: WAL, ``busy_timeout`` 10 s, foreign keys on, ``synchronous=NORMAL``; transactions are
    begun by SQLAlchemy (driver autocommit off), ``BEGIN IMMEDIATE`` when the connection has the
    ``levqor_write`` execution option (see :meth:`Store.write`). The database file's folder is
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


def _retry_on_disconnect(fn):
    """Run ``fn`` again (twice at most) when the database connection died under it (a server
    restart, ``pg_terminate_backend``, a fail-over): the pool has dropped the dead connection and
    the next attempt gets a fresh one. Only on methods that are safe to repeat (reads, upserts,
    updates conditional on the lease). Added for issue 10 (docs/scaling.md)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
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


# --------------------------------------------------------------------------- helpers


def _now() -> datetime:
    return datetime.now(UTC)


def _new_id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex}"


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def _hash_key(plaintext: str) -> str:
    return hashlib.sha256(plaintext.encode("utf-8")).hexdigest()


def _referral_code() -> str:
    return "".join(secrets.choice(_REFERRAL_ALPHABET) for _ in range(8))


_USER_FIELDS = ("id", "email", "name", "plan", "is_admin", "referral_code", "created_at")


def _user_dict(row, prefix: str = "") -> dict:
    """A user from ``row``; ``prefix``: its columns are labelled ``<prefix><column>`` (joins)."""
    d = {f: getattr(row, prefix + f) for f in _USER_FIELDS}
    d["is_admin"] = bool(d["is_admin"])
    d["created_at"] = _iso(d["created_at"])
    return d


def _key_dict(row) -> dict:
    return {
        "id": row.id,
        "user_id": row.user_id,
        "name": row.name,
        "prefix": row.prefix,
        "scopes": list(row.scopes or []),
        "created_at": _iso(row.created_at),
        "last_used_at": _iso(row.last_used_at),
        "revoked_at": _iso(row.revoked_at),
        "revoked": row.revoked_at is not None,
    }


def _pipeline_dict(row) -> dict:
    return {
        "id": row.id,
        "user_id": row.user_id,
        "name": row.name,
        "version": row.current_version,
        "webhook_token": row.webhook_token,
        "has_webhook_secret": row.webhook_secret_enc is not None,
        "archived": row.archived_at is not None,
        "archived_at": _iso(row.archived_at),
        "created_at": _iso(row.created_at),
        "updated_at": _iso(row.updated_at),
        "doc": row.doc,
    }


def _version_dict(row) -> dict:
    return {
        "pipeline_id": row.pipeline_id,
        "version": row.version,
        "doc": row.doc,
        "created_at": _iso(row.created_at),
    }


def _credential_dict(row) -> dict:
    return {
        "id": row.id,
        "name": row.name,
        "connector": row.connector,
        "created_at": _iso(row.created_at),
    }


def _run_dict(row) -> dict:
    return {
        "id": row.id,
        "user_id": row.user_id,
        "pipeline_id": row.pipeline_id,
        "version": row.version,
        "status": row.status,
        "trigger": row.trigger,
        "input": row.input,
        "idempotency_key": row.idempotency_key,
        "retry_of": row.retry_of,
        "error": row.error,
        "lease_owner": row.lease_owner,
        "lease_expires_at": _iso(row.lease_expires_at),
        "claims": row.claims,
        "claims_since_progress": row.claims_since_progress,
        "finished_steps": row.finished_steps,
        "cancel_requested": bool(row.cancel_requested),
        "created_at": _iso(row.created_at),
        "started_at": _iso(row.started_at),
        "finished_at": _iso(row.finished_at),
    }


def _step_dict(row) -> dict:
    return {
        "step_id": row.step_id,
        "position": row.position,
        "connector": row.connector,
        "action": row.action,
        "status": row.status,
        "attempts": row.attempts,
        "input": row.input,
        "output": row.output,
        "error": row.error,
        "started_at": _iso(row.started_at),
        "finished_at": _iso(row.finished_at),
    }


def _encode_cursor(created_at: datetime, run_id: str) -> str:
    raw = json.dumps([created_at.isoformat(), run_id], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")


def _decode_cursor(cursor: str) -> tuple[datetime, str]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        iso, run_id = json.loads(raw)
        created_at = datetime.fromisoformat(iso)
        if not isinstance(run_id, str) or created_at.tzinfo is None:
            raise ValueError
        run_id.encode("utf-8")  # an unpaired surrogate: UnicodeEncodeError, not storable text
    except (ValueError, TypeError, RecursionError) as exc:
        raise ValueError("invalid cursor") from exc
    return created_at, run_id


@functools.cache
def _script_heads() -> frozenset[str]:
    from alembic.script import ScriptDirectory

    return frozenset(ScriptDirectory.from_config(_alembic_config()).get_heads())


def _alembic_config():
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR).replace("%", "%%"))
    return cfg


_PIPELINE_COLS = (pipelines, pipeline_versions.c.doc)
_PIPELINE_JOIN = pipelines.join(
    pipeline_versions,
    and_(
        pipeline_versions.c.pipeline_id == pipelines.c.id,
        pipeline_versions.c.version == pipelines.c.current_version,
    ),
)

# Statements on the hot paths (API requests, the executor) are built once with bind parameters:
# building a statement and its cache key costs more than running it on SQLite.
_B = bindparam
_SQL_PIPELINE = (
    select(*_PIPELINE_COLS).select_from(_PIPELINE_JOIN).where(pipelines.c.id == _B("pipeline_id"))
)
# A webhook delivery's lookups (Store.get_webhook_target): the pipeline by token with its owner,
# then the owner's credential names.
_SQL_WEBHOOK_TARGET = (
    select(*_PIPELINE_COLS, *(users.c[f].label(f"u_{f}") for f in _USER_FIELDS))
    .select_from(_PIPELINE_JOIN.join(users, users.c.id == pipelines.c.user_id))
    .where(pipelines.c.webhook_token == _B("token"), pipelines.c.archived_at.is_(None))
)
_SQL_CREDENTIAL_NAMES = select(credentials.c.name, credentials.c.connector).where(
    credentials.c.user_id == _B("user_id")
)
_SQL_PIPELINE_OF_USER = _SQL_PIPELINE.where(pipelines.c.user_id == _B("user_id"))
_SQL_VERSION_OF_USER = (
    select(pipeline_versions)
    .select_from(
        pipeline_versions.join(pipelines, pipelines.c.id == pipeline_versions.c.pipeline_id)
    )
    .where(
        pipeline_versions.c.pipeline_id == _B("pipeline_id"),
        pipeline_versions.c.version == _B("version"),
        pipelines.c.user_id == _B("user_id"),
    )
)
_SQL_CURRENT_VERSION_OF_USER = select(pipelines.c.current_version).where(
    pipelines.c.id == _B("pipeline_id"), pipelines.c.user_id == _B("user_id")
)
_SQL_RUN_BY_IDEMPOTENCY_KEY = select(runs).where(
    runs.c.user_id == _B("user_id"), runs.c.idempotency_key == _B("key")
)
_SQL_INSERT_RUN = runs.insert()
_SQL_RUN = select(runs).where(runs.c.id == _B("run_id"))
_SQL_RUN_OF_USER = _SQL_RUN.where(runs.c.user_id == _B("user_id"))
_SQL_STEPS = (
    select(run_steps)
    .where(run_steps.c.run_id == _B("run_id"))
    .order_by(run_steps.c.position, run_steps.c.step_id)
)
_SQL_SUCCEEDED_OUTPUTS = select(run_steps.c.step_id, run_steps.c.output).where(
    run_steps.c.run_id == _B("run_id"), run_steps.c.status == "succeeded"
)
_SQL_CANCEL_STATE = select(runs.c.cancel_requested, runs.c.status).where(runs.c.id == _B("run_id"))
_OWNED_RUNNING = (runs.c.lease_owner == _B("worker_id"), runs.c.status == "running")
_SQL_FINISH = (
    update(runs)
    .where(runs.c.id == _B("run_id"), *_OWNED_RUNNING)
    .values(
        status=_B("new_status"),
        error=_B("new_error", type_=runs.c.error.type),
        finished_at=_B("now", type_=UTCDateTime),
        lease_expires_at=None,
    )
)
_SQL_FINISH_SETTLED = _SQL_FINISH.values(settled_at=_B("now", type_=UTCDateTime))
_SQL_RELEASE = (
    update(runs)
    .where(runs.c.id == _B("run_id"), *_OWNED_RUNNING)
    .values(
        status="queued",
        lease_owner=None,
        lease_expires_at=None,
        # a claim handed back on shutdown is not a lost worker
        claims_since_progress=case(
            (runs.c.claims_since_progress > 0, runs.c.claims_since_progress - 1), else_=0
        ),
    )
)
_CANCELLED_ERROR = {"type": "Cancelled", "message": "run cancelled", "retryable": False}
_FINAL_STEP_STATUSES = ("succeeded", "failed", "skipped", "cancelled")
_SQL_HEARTBEAT = (
    update(runs)
    .where(runs.c.id.in_(_B("run_ids", expanding=True)), *_OWNED_RUNNING)
    .values(lease_expires_at=_B("lease_until", type_=UTCDateTime))
    .returning(runs.c.id)
)
# progress since the last claim: more of the run's steps are final than that claim found
_STEPS_DONE = (
    select(func.count())
    .select_from(run_steps)
    .where(run_steps.c.run_id == runs.c.id, run_steps.c.status.in_(_FINAL_STEP_STATUSES))
    .scalar_subquery()
)
_PROGRESS_AT_CLAIM = {
    "claims_since_progress": case(
        (_STEPS_DONE > runs.c.finished_steps, 1), else_=runs.c.claims_since_progress + 1
    ),
    "finished_steps": _STEPS_DONE,
}
_SQL_CLAIM_ONE = (
    update(runs)
    .where(
        runs.c.id == _B("run_id"),
        or_(
            and_(runs.c.status == "queued", runs.c.lease_expires_at.is_(None)),
            and_(
                runs.c.status == "running",
                runs.c.lease_expires_at < _B("now", type_=UTCDateTime),
            ),
        ),
    )
    .values(
        status="running",
        lease_owner=_B("worker_id"),
        lease_expires_at=_B("lease_until", type_=UTCDateTime),
        claims=runs.c.claims + 1,
        **_PROGRESS_AT_CLAIM,
        started_at=func.coalesce(runs.c.started_at, _B("now", type_=UTCDateTime)),
    )
    .returning(*runs.c)
)
_OTHERS = runs.alias("others")
# the claim of one run, only while its user has fewer than :cap other runs holding a lease
_SQL_CLAIM_ONE_CAPPED = _SQL_CLAIM_ONE.where(
    select(func.count())
    .select_from(_OTHERS)
    .where(
        _OTHERS.c.user_id == runs.c.user_id,
        _OTHERS.c.status == "running",
        _OTHERS.c.lease_expires_at >= _B("now", type_=UTCDateTime),
        _OTHERS.c.id != runs.c.id,
    )
    .scalar_subquery()
    < _B("cap")
)
# the runs holding a lease of the user of run :run_id, other than that run
_SQL_RUNNING_OF_RUNS_USER = (
    select(func.count())
    .select_from(_OTHERS)
    .where(
        _OTHERS.c.user_id
        == select(runs.c.user_id).where(runs.c.id == _B("run_id")).scalar_subquery(),
        _OTHERS.c.status == "running",
        _OTHERS.c.lease_expires_at >= _B("now", type_=UTCDateTime),
        _OTHERS.c.id != _B("run_id"),
    )
)
_CLAIM_COLS = (runs.c.id, runs.c.user_id, runs.c.created_at)
_SQL_CLAIM_QUEUED = (
    select(*_CLAIM_COLS)
    .where(runs.c.status == "queued", runs.c.lease_expires_at.is_(None))
    .order_by(runs.c.created_at)
    .limit(_B("fetch"))
)
_SQL_CLAIM_EXPIRED = (
    select(*_CLAIM_COLS)
    .where(runs.c.status == "running", runs.c.lease_expires_at < _B("now", type_=UTCDateTime))
    .order_by(runs.c.created_at)
    .limit(_B("fetch"))
)
_SQL_CLAIM_QUEUED_PG = _SQL_CLAIM_QUEUED.with_for_update(skip_locked=True)
_SQL_CLAIM_EXPIRED_PG = _SQL_CLAIM_EXPIRED.with_for_update(skip_locked=True)
_SQL_CLAIM = (
    update(runs)
    .where(runs.c.id.in_(_B("run_ids", expanding=True)))
    .values(
        status="running",
        lease_owner=_B("worker_id"),
        lease_expires_at=_B("lease_until", type_=UTCDateTime),
        claims=runs.c.claims + 1,
        **_PROGRESS_AT_CLAIM,
        started_at=func.coalesce(runs.c.started_at, _B("now", type_=UTCDateTime)),
    )
    .returning(*runs.c)
)


def _step_upsert(insert_fn):
    stmt = insert_fn(run_steps)
    ex = stmt.excluded
    return stmt.on_conflict_do_update(
        index_elements=[run_steps.c.run_id, run_steps.c.step_id],
        set_={
            "position": ex.position,
            "connector": ex.connector,
            "action": ex.action,
            "status": ex.status,
            "attempts": ex.attempts,
            "input": func.coalesce(ex.input, run_steps.c.input),
            "output": ex.output,
            "error": ex.error,
            "started_at": func.coalesce(ex.started_at, run_steps.c.started_at),
            "finished_at": ex.finished_at,
        },
    )


_SQL_STEP_UPSERT = {"sqlite": _step_upsert(sqlite_insert), "postgresql": _step_upsert(pg_insert)}


# --------------------------------------------------------------------------- the store


class Store:
    """All persistent state of a Levqor deployment. Thread-safe; one per app."""

    def __init__(self, url: str, vault: Vault) -> None:
        self.engine: Engine = make_engine(url)
        self.url: str = self.engine.url.render_as_string(hide_password=False)
        self.dialect: str = self.engine.dialect.name
        self.vault = vault
        self._sqlite = self.dialect == "sqlite"
        self._pg = self.dialect == "postgresql"
        # An in-memory SQLite database is one shared connection: serialize its transactions.
        self._serial = (
            threading.RLock() if self._sqlite and _is_memory_sqlite(self.engine.url) else None
        )
        # A file database's writers take turns on a gate before BEGIN IMMEDIATE (write_gate.py).
        self._gate = (
            gate_for(self.engine.url.database) if self._sqlite and self._serial is None else None
        )
        # Same pool; connections from it begin with BEGIN IMMEDIATE on SQLite.
        self._write_engine = (
            self.engine.execution_options(levqor_write=True) if self._sqlite else self.engine
        )
        self._step_upsert = _SQL_STEP_UPSERT["postgresql" if self._pg else "sqlite"]
        self._versions: OrderedDict[tuple, dict] = OrderedDict()
        self._versions_lock = threading.Lock()
        self._local = threading.local()  # this thread's pinned connection (see pinned())
        self.events = EventsRepository(self)
        self.referrals = ReferralsRepository(self)
        self.ledger = LedgerRepository(self.dialect)  # the credit ledger's SQL

    def __repr__(self) -> str:
        return f"<Store {self.engine.url.render_as_string(hide_password=True)}>"

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
        connection that died is replaced on its next use (see ``_retry_on_disconnect``)."""
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

    def _insert(self, table):
        return pg_insert(table) if self._pg else sqlite_insert(table)

    # ------------------------------------------------------------------ lifecycle

    def upgrade(self) -> None:
        """Apply every pending Alembic migration (idempotent; safe against concurrent callers)."""
        from alembic import command

        cfg = _alembic_config()
        with self.write() as conn:
            if self._pg:
                conn.execute(select(func.pg_advisory_xact_lock(_PG_LOCK_MIGRATE)))
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, "head")

    def is_migrated(self) -> bool:
        """Whether the database is at the newest migration."""
        from alembic.runtime.migration import MigrationContext

        with self.engine.connect() as conn:
            current = frozenset(MigrationContext.configure(conn).get_current_heads())
            conn.rollback()
        return current == _script_heads()

    def ping(self) -> None:
        """Raise when the database cannot be reached."""
        with self.engine.connect() as conn:
            conn.execute(text("SELECT 1")).scalar_one()
            conn.rollback()

    def close(self) -> None:
        """Close every pooled connection."""
        self.engine.dispose()

    # ------------------------------------------------------------------ users

    def create_user(
        self, email: str, *, name: str | None = None, plan: str = "free", is_admin: bool = False
    ) -> dict:
        """Create a user (email is stored lower-cased); raises :class:`Conflict` if taken."""
        email = email.strip().lower()
        if not email:
            raise ValueError("email is required")
        for _ in range(5):
            values = {
                "id": _new_id("usr"),
                "email": email,
                "name": name,
                "plan": plan,
                "is_admin": bool(is_admin),
                "referral_code": _referral_code(),
                "created_at": _now(),
            }
            try:
                with self.write() as conn:
                    if conn.execute(select(users.c.id).where(users.c.email == email)).first():
                        raise Conflict(f"a user with email {email!r} already exists")
                    conn.execute(users.insert().values(**values))
            except IntegrityError:
                continue  # referral code collision or a concurrent insert: check again
            user = _user_dict(_Row(values))
            self._emit("user_created", user)
            return user
        raise Conflict(f"could not create user {email!r}")

    # ------------------------------------------------------------------ listeners

    def add_listener(self, event: str, fn: Any) -> None:
        """Call ``fn(payload)`` after ``event`` committed (``user_created``: the user dict).
        A listener's exception is logged, never raised into the caller."""
        self.__dict__.setdefault("_listeners", {}).setdefault(event, []).append(fn)

    def _emit(self, event: str, payload: Any) -> None:
        for fn in self.__dict__.get("_listeners", {}).get(event, ()):
            try:
                fn(payload)
            except Exception:  # noqa: BLE001 - a listener never breaks a write
                logging.getLogger("levqor.store").exception("%s listener failed", event)

    @_retry_on_disconnect
    def get_user(self, user_id: str) -> dict | None:
        with self.read() as conn:
            row = conn.execute(select(users).where(users.c.id == user_id)).first()
        return _user_dict(row) if row else None

    def get_user_by_email(self, email: str) -> dict | None:
        with self.read() as conn:
            row = conn.execute(select(users).where(users.c.email == email.strip().lower())).first()
        return _user_dict(row) if row else None

    def count_users(self) -> int:
        with self.read() as conn:
            return conn.execute(select(func.count()).select_from(users)).scalar_one()

    def list_users(self) -> list[dict]:
        """Every user, oldest first."""
        with self.read() as conn:
            rows = conn.execute(select(users).order_by(users.c.created_at, users.c.id)).all()
        return [_user_dict(r) for r in rows]

    # ------------------------------------------------------------------ API keys

    def create_api_key(self, user_id: str, *, name: str, scopes: list[str]) -> tuple[str, dict]:
        """Create a key; returns ``(plaintext, key)``. The plaintext is never stored or shown again.

        Format ``lvq_<8 hex chars prefix>_<43 url-safe chars>``; stored: the prefix and the
        SHA-256 of the whole plaintext. Raises :class:`NotFound` for an unknown user.
        """
        if not isinstance(scopes, list | tuple) or not all(isinstance(s, str) for s in scopes):
            raise ValueError("scopes must be a list of strings")
        for _ in range(5):
            prefix = secrets.token_hex(4)
            plaintext = f"{API_KEY_PREFIX}_{prefix}_{secrets.token_urlsafe(32)}"
            values = {
                "id": _new_id("key"),
                "user_id": user_id,
                "name": name,
                "prefix": prefix,
                "key_hash": _hash_key(plaintext),
                "scopes": list(scopes),
                "created_at": _now(),
                "last_used_at": None,
                "revoked_at": None,
            }
            try:
                with self.write() as conn:
                    if not conn.execute(select(users.c.id).where(users.c.id == user_id)).first():
                        raise NotFound(f"no user {user_id!r}")
                    conn.execute(api_keys.insert().values(**values))
            except IntegrityError:
                continue  # prefix collision
            return plaintext, _key_dict(_Row(values))
        raise Conflict("could not allocate a unique API key prefix")

    def authenticate_key(self, plaintext: str) -> tuple[dict, dict] | None:
        """``(user, key)`` for a valid, unrevoked key; None otherwise (constant-time hash check)."""
        if not isinstance(plaintext, str):
            return None
        parts = plaintext.strip().split("_", 2)
        if len(parts) != 3 or parts[0] != API_KEY_PREFIX or len(parts[1]) != 8 or not parts[2]:
            return None
        digest = _hash_key(plaintext.strip())
        q = (
            select(
                api_keys,
                users.c.email,
                users.c.name.label("user_name"),
                users.c.plan,
                users.c.is_admin,
                users.c.referral_code,
                users.c.created_at.label("user_created_at"),
            )
            .select_from(api_keys.join(users, users.c.id == api_keys.c.user_id))
            .where(api_keys.c.prefix == parts[1])
        )
        with self.read() as conn:
            row = conn.execute(q).first()
        if row is None or not hmac.compare_digest(row.key_hash, digest):
            return None
        if row.revoked_at is not None:
            return None
        key = _key_dict(row)
        now = _now()
        if row.last_used_at is None or now - row.last_used_at > KEY_TOUCH_INTERVAL:
            with self.write() as conn:
                conn.execute(
                    update(api_keys).where(api_keys.c.id == row.id).values(last_used_at=now)
                )
            key["last_used_at"] = _iso(now)
        user = {
            "id": row.user_id,
            "email": row.email,
            "name": row.user_name,
            "plan": row.plan,
            "is_admin": bool(row.is_admin),
            "referral_code": row.referral_code,
            "created_at": _iso(row.user_created_at),
        }
        return user, key

    def list_api_keys(self, user_id: str) -> list[dict]:
        """The user's keys (revoked ones included, flagged), oldest first; never a hash."""
        with self.read() as conn:
            rows = conn.execute(
                select(api_keys)
                .where(api_keys.c.user_id == user_id)
                .order_by(api_keys.c.created_at, api_keys.c.id)
            ).all()
        return [_key_dict(r) for r in rows]

    def revoke_api_key(self, user_id: str, key_id: str) -> bool:
        """Revoke one of the user's keys; False if unknown, another user's or already revoked."""
        with self.write() as conn:
            res = conn.execute(
                update(api_keys)
                .where(
                    api_keys.c.id == key_id,
                    api_keys.c.user_id == user_id,
                    api_keys.c.revoked_at.is_(None),
                )
                .values(revoked_at=_now())
            )
        return res.rowcount == 1

    # ------------------------------------------------------------------ pipelines

    def create_pipeline(self, user_id: str, name: str, doc: dict) -> dict:
        """Create a pipeline with version 1 of ``doc``. Raises :class:`NotFound` for an unknown user."""
        now = _now()
        pid = _new_id("pl")
        with self.write() as conn:
            if not conn.execute(select(users.c.id).where(users.c.id == user_id)).first():
                raise NotFound(f"no user {user_id!r}")
            conn.execute(
                pipelines.insert().values(
                    id=pid,
                    user_id=user_id,
                    name=name,
                    current_version=1,
                    webhook_token=secrets.token_urlsafe(24),
                    webhook_secret_enc=None,
                    archived_at=None,
                    created_at=now,
                    updated_at=now,
                )
            )
            conn.execute(
                pipeline_versions.insert().values(
                    pipeline_id=pid, version=1, doc=doc, created_at=now
                )
            )
            return self._pipeline(conn, user_id, pid)

    def _pipeline(self, conn: Connection, user_id: str | None, pipeline_id: str) -> dict | None:
        if user_id is None:
            row = conn.execute(_SQL_PIPELINE, {"pipeline_id": pipeline_id}).first()
        else:
            row = conn.execute(
                _SQL_PIPELINE_OF_USER, {"pipeline_id": pipeline_id, "user_id": user_id}
            ).first()
        return _pipeline_dict(row) if row else None

    def update_pipeline(
        self, user_id: str, pipeline_id: str, doc: dict, name: str | None = None
    ) -> dict | None:
        """Save ``doc`` as a new immutable version (and rename when ``name``); None if not the user's."""
        now = _now()
        values: dict[str, Any] = {
            "current_version": pipelines.c.current_version + 1,
            "updated_at": now,
        }
        if name is not None:
            values["name"] = name
        with self.write() as conn:
            version = conn.execute(
                update(pipelines)
                .where(pipelines.c.id == pipeline_id, pipelines.c.user_id == user_id)
                .values(**values)
                .returning(pipelines.c.current_version)
            ).scalar_one_or_none()
            if version is None:
                return None
            conn.execute(
                pipeline_versions.insert().values(
                    pipeline_id=pipeline_id, version=version, doc=doc, created_at=now
                )
            )
            return self._pipeline(conn, user_id, pipeline_id)

    def get_pipeline(self, user_id: str, pipeline_id: str) -> dict | None:
        """The pipeline with its current ``doc`` (archived ones too); None if not the user's."""
        with self.read() as conn:
            return self._pipeline(conn, user_id, pipeline_id)

    @_retry_on_disconnect
    def get_pipeline_any(self, pipeline_id: str) -> dict | None:
        """The pipeline whoever owns it (archived ones too): for the scheduler and workers."""
        with self.read() as conn:
            return self._pipeline(conn, None, pipeline_id)

    def list_pipelines(self, user_id: str, include_archived: bool = False) -> list[dict]:
        """The user's pipelines with their current docs, newest first."""
        q = (
            select(*_PIPELINE_COLS)
            .select_from(_PIPELINE_JOIN)
            .where(pipelines.c.user_id == user_id)
            .order_by(pipelines.c.created_at.desc(), pipelines.c.id.desc())
        )
        if not include_archived:
            q = q.where(pipelines.c.archived_at.is_(None))
        with self.read() as conn:
            return [_pipeline_dict(r) for r in conn.execute(q).all()]

    def archive_pipeline(self, user_id: str, pipeline_id: str) -> bool:
        """Archive (soft-delete) a pipeline; False if not the user's or already archived."""
        now = _now()
        with self.write() as conn:
            res = conn.execute(
                update(pipelines)
                .where(
                    pipelines.c.id == pipeline_id,
                    pipelines.c.user_id == user_id,
                    pipelines.c.archived_at.is_(None),
                )
                .values(archived_at=now, updated_at=now)
            )
        return res.rowcount == 1

    def list_versions(self, user_id: str, pipeline_id: str) -> list[dict] | None:
        """Every version (with doc), oldest first; None if not the user's pipeline."""
        with self.read() as conn:
            owned = conn.execute(
                select(pipelines.c.id).where(
                    pipelines.c.id == pipeline_id, pipelines.c.user_id == user_id
                )
            ).first()
            if not owned:
                return None
            rows = conn.execute(
                select(pipeline_versions)
                .where(pipeline_versions.c.pipeline_id == pipeline_id)
                .order_by(pipeline_versions.c.version)
            ).all()
        return [_version_dict(r) for r in rows]

    @_retry_on_disconnect
    def get_version(self, user_id: str, pipeline_id: str, version: int) -> dict | None:
        """One version of the user's pipeline; None if unknown or not the user's. Versions are
        immutable and never deleted, so the ones found are kept in a small in-process cache
        (every run reads its version); treat the returned ``doc`` as read-only."""
        key = (user_id, pipeline_id, version)
        with self._versions_lock:
            hit = self._versions.get(key)
            if hit is not None:
                self._versions.move_to_end(key)
                return dict(hit)
        params = {"pipeline_id": pipeline_id, "version": version, "user_id": user_id}
        with self.read() as conn:
            row = conn.execute(_SQL_VERSION_OF_USER, params).first()
        if row is None:
            return None
        found = _version_dict(row)
        with self._versions_lock:
            self._versions[key] = found
            while len(self._versions) > _VERSION_CACHE_SIZE:
                self._versions.popitem(last=False)
        return dict(found)

    @_retry_on_disconnect
    def get_webhook_target(self, token: str) -> WebhookTarget | None:
        """What a webhook delivery to ``token`` needs, in one read transaction of two
        statements: the (not archived) pipeline with its current document, its owner, its
        decrypted signing secret and the owner's credential names. None for an unknown token."""
        with self.read() as conn:
            row = conn.execute(_SQL_WEBHOOK_TARGET, {"token": token}).first()
            if row is None:
                return None
            creds = conn.execute(_SQL_CREDENTIAL_NAMES, {"user_id": row.user_id}).all()
        enc = row.webhook_secret_enc
        return WebhookTarget(
            pipeline=_pipeline_dict(row),
            user=_user_dict(row, "u_"),
            secret=self.vault.decrypt(enc) if enc is not None else None,
            credentials={c.name: c.connector for c in creds},
        )

    def set_webhook_secret(self, user_id: str, pipeline_id: str, secret: str | None) -> bool:
        """Set (encrypted) or clear the webhook signing secret; False if not the user's."""
        enc = self.vault.encrypt(secret) if secret is not None else None
        with self.write() as conn:
            res = conn.execute(
                update(pipelines)
                .where(pipelines.c.id == pipeline_id, pipelines.c.user_id == user_id)
                .values(webhook_secret_enc=enc, updated_at=_now())
            )
        return res.rowcount == 1

    def get_webhook_secret(self, pipeline_id: str) -> str | None:
        """The decrypted webhook secret, None when unset or the pipeline is unknown."""
        with self.read() as conn:
            enc = conn.execute(
                select(pipelines.c.webhook_secret_enc).where(pipelines.c.id == pipeline_id)
            ).scalar_one_or_none()
        return self.vault.decrypt(enc) if enc is not None else None

    @_retry_on_disconnect
    def list_scheduled_pipelines(self) -> list[dict]:
        """Every not-archived pipeline whose current doc has a ``schedule`` trigger (all users)."""
        q = (
            select(*_PIPELINE_COLS)
            .select_from(_PIPELINE_JOIN)
            .where(pipelines.c.archived_at.is_(None))
            .order_by(pipelines.c.created_at, pipelines.c.id)
        )
        with self.read() as conn:
            rows = conn.execute(q).all()
        out = []
        for r in rows:
            trigger = r.doc.get("trigger") if isinstance(r.doc, dict) else None
            if isinstance(trigger, dict) and trigger.get("type") == "schedule":
                out.append(_pipeline_dict(r))
        return out

    # ------------------------------------------------------------------ credentials

    def create_credential(self, user_id: str, name: str, connector: str, values: dict) -> dict:
        """Store ``values`` encrypted; raises :class:`Conflict` when the user has ``name`` already."""
        row = {
            "id": _new_id("cred"),
            "user_id": user_id,
            "name": name,
            "connector": connector,
            "value_enc": self.vault.encrypt(values),
            "created_at": _now(),
        }
        try:
            with self.write() as conn:
                if not conn.execute(select(users.c.id).where(users.c.id == user_id)).first():
                    raise NotFound(f"no user {user_id!r}")
                conn.execute(credentials.insert().values(**row))
        except IntegrityError as exc:
            raise Conflict(f"a credential named {name!r} already exists") from exc
        return _credential_dict(_Row(row))

    def list_credentials(self, user_id: str) -> list[dict]:
        """The user's credentials by name: id, name, connector, created_at (never the values)."""
        with self.read() as conn:
            rows = conn.execute(
                select(
                    credentials.c.id,
                    credentials.c.name,
                    credentials.c.connector,
                    credentials.c.created_at,
                )
                .where(credentials.c.user_id == user_id)
                .order_by(credentials.c.name)
            ).all()
        return [_credential_dict(r) for r in rows]

    def get_credential(self, user_id: str, cred_id: str) -> dict | None:
        with self.read() as conn:
            row = conn.execute(
                select(
                    credentials.c.id,
                    credentials.c.name,
                    credentials.c.connector,
                    credentials.c.created_at,
                ).where(credentials.c.id == cred_id, credentials.c.user_id == user_id)
            ).first()
        return _credential_dict(row) if row else None

    def delete_credential(self, user_id: str, cred_id: str) -> bool:
        with self.write() as conn:
            res = conn.execute(
                delete(credentials).where(
                    credentials.c.id == cred_id, credentials.c.user_id == user_id
                )
            )
        return res.rowcount == 1

    @_retry_on_disconnect
    def get_credential_values(self, user_id: str, name: str) -> tuple[str, dict] | None:
        """``(connector, decrypted values)`` of the user's credential called ``name``."""
        with self.read() as conn:
            row = conn.execute(
                select(credentials.c.connector, credentials.c.value_enc).where(
                    credentials.c.user_id == user_id, credentials.c.name == name
                )
            ).first()
        if row is None:
            return None
        return row.connector, self.vault.decrypt(row.value_enc)

    # ------------------------------------------------------------------ runs

    def create_run(
        self,
        user_id: str,
        pipeline_id: str,
        version: int | None,
        input: Any,
        *,
        trigger: str = "manual",
        idempotency_key: str | None = None,
        retry_of: str | None = None,
        copy_steps_from: str | None = None,
    ) -> tuple[dict, bool]:
        """Queue a run; ``(run, created)``.

        An idempotency key the user used before returns that run and False. ``version`` None
        means the pipeline's current version. ``copy_steps_from`` (one of the user's runs) copies
        its succeeded step rows, so a retry resumes after them. Raises :class:`NotFound` when the
        pipeline/version is not the user's. The returned dict has no ``steps``.
        """
        if trigger not in RUN_TRIGGERS:
            raise ValueError(f"unknown trigger {trigger!r}")
        try:
            return self._create_run(
                user_id,
                pipeline_id,
                version,
                input,
                trigger=trigger,
                idempotency_key=idempotency_key,
                retry_of=retry_of,
                copy_steps_from=copy_steps_from,
            )
        except IntegrityError:
            if idempotency_key is None:
                raise
            # A concurrent request with the same key won the race (PostgreSQL): return its run.
            existing = self.find_run_by_idempotency_key(user_id, idempotency_key)
            if existing is None:
                raise
            return existing, False

    def _create_run(
        self,
        user_id,
        pipeline_id,
        version,
        input,
        *,
        trigger,
        idempotency_key,
        retry_of,
        copy_steps_from,
    ) -> tuple[dict, bool]:
        with self.write() as conn:
            return self.create_run_in(
                conn,
                user_id,
                pipeline_id,
                version,
                input,
                trigger=trigger,
                idempotency_key=idempotency_key,
                retry_of=retry_of,
                copy_steps_from=copy_steps_from,
            )

    def create_run_in(
        self,
        conn: Connection,
        user_id: str,
        pipeline_id: str,
        version: int | None,
        input: Any,
        *,
        run_id: str | None = None,
        trigger: str = "manual",
        idempotency_key: str | None = None,
        retry_of: str | None = None,
        copy_steps_from: str | None = None,
    ) -> tuple[dict, bool]:
        """:meth:`create_run` inside a write transaction the caller holds (``conn`` from
        :meth:`write`), so that a billing gate, its credit reservation and the run row commit or
        roll back together. ``run_id`` lets the caller name the run before it exists (ledger
        lines refer to it). Same answers and errors as :meth:`create_run`."""
        if trigger not in RUN_TRIGGERS:
            raise ValueError(f"unknown trigger {trigger!r}")
        if idempotency_key is not None:
            row = conn.execute(
                _SQL_RUN_BY_IDEMPOTENCY_KEY, {"user_id": user_id, "key": idempotency_key}
            ).first()
            if row is not None:
                return _run_dict(row), False
        owner = {"pipeline_id": pipeline_id, "user_id": user_id}
        if version is None:
            version = conn.execute(_SQL_CURRENT_VERSION_OF_USER, owner).scalar_one_or_none()
            found = version is not None
        else:
            found = (
                conn.execute(_SQL_VERSION_OF_USER, {**owner, "version": version}).first()
                is not None
            )
        if not found:
            raise NotFound(f"no pipeline {pipeline_id!r} version {version!r} for this user")
        values = {
            "id": run_id or _new_id("run"),
            "user_id": user_id,
            "pipeline_id": pipeline_id,
            "version": version,
            "status": "queued",
            "trigger": trigger,
            "input": input,
            "idempotency_key": idempotency_key,
            "retry_of": retry_of,
            "error": None,
            "lease_owner": None,
            "lease_expires_at": None,
            "claims": 0,
            "claims_since_progress": 0,
            "finished_steps": 0,
            "cancel_requested": False,
            "created_at": _now(),
            "started_at": None,
            "finished_at": None,
        }
        conn.execute(_SQL_INSERT_RUN, values)
        if copy_steps_from is not None:
            cols = [c.name for c in run_steps.c]
            src = (
                select(
                    *[
                        literal(values["id"]).label("run_id") if c == "run_id" else run_steps.c[c]
                        for c in cols
                    ]
                )
                .select_from(run_steps.join(runs, runs.c.id == run_steps.c.run_id))
                .where(
                    run_steps.c.run_id == copy_steps_from,
                    runs.c.user_id == user_id,
                    run_steps.c.status == "succeeded",
                )
            )
            conn.execute(run_steps.insert().from_select(cols, src))
        return _run_dict(_Row(values)), True

    def find_run_by_idempotency_key(self, user_id: str, idempotency_key: str) -> dict | None:
        """The user's run created with ``idempotency_key`` (no ``steps``), None if there is none."""
        with self.read() as conn:
            row = conn.execute(
                _SQL_RUN_BY_IDEMPOTENCY_KEY, {"user_id": user_id, "key": idempotency_key}
            ).first()
        return _run_dict(row) if row else None

    @_retry_on_disconnect
    def claim_runs(
        self,
        worker_id: str,
        *,
        lease_seconds: float,
        limit: int,
        max_running_per_user: int | None = None,
    ) -> list[dict]:
        """Atomically take up to ``limit`` runs, oldest first: queued ones and running ones whose
        lease expired. Each becomes ``running`` with ``lease_owner=worker_id``, a lease of
        ``lease_seconds``, ``claims + 1``, ``claims_since_progress`` counted as below and
        ``started_at`` (kept if set). With ``max_running_per_user``, a user never has more running (leased)
        runs than that. Returns the claimed runs (no ``steps``), oldest first.

        Progress: a claim made progress when, by the next claim, more of the run's step rows
        have a final status (succeeded, failed, skipped, cancelled) than it found itself
        (``finished_steps``, counted by each claim). A claim after progress sets
        ``claims_since_progress`` to 1; a claim without adds one; a worker handing the run back
        on shutdown (:meth:`release_run`) takes its claim back. So when a claim returns a run
        with ``claims_since_progress = n + 1``, the run's last ``n`` claims ended without a step
        finishing and without being handed back: their workers were lost (killed, or hung until
        their lease expired) ``n`` times in a row. Counting at the claim keeps the cost off the
        writes of each step.
        """
        if limit <= 0:
            return []
        fetch = limit if max_running_per_user is None else limit * 4 + 16
        with self.write() as conn:
            # the time is read once the write lock is held: a run finished while this claim
            # waited for the lock never ends after the next one starts
            now = _now()
            params = {"now": now, "fetch": fetch}
            if self._pg:
                if max_running_per_user is not None:
                    # per-user counting needs the claimers to take turns
                    conn.execute(_SQL_CLAIM_LOCK)
                candidates = [
                    *conn.execute(_SQL_CLAIM_QUEUED_PG, params).all(),
                    *conn.execute(_SQL_CLAIM_EXPIRED_PG, params).all(),
                ]
            else:
                candidates = [
                    *conn.execute(_SQL_CLAIM_QUEUED, params).all(),
                    *conn.execute(_SQL_CLAIM_EXPIRED, params).all(),
                ]
            candidates.sort(key=lambda r: (r.created_at, r.id))
            if max_running_per_user is not None and candidates:
                running = dict(
                    conn.execute(
                        select(runs.c.user_id, func.count())
                        .where(
                            runs.c.status == "running",
                            runs.c.lease_expires_at >= now,
                            runs.c.user_id.in_({r.user_id for r in candidates}),
                        )
                        .group_by(runs.c.user_id)
                    ).all()
                )
                chosen = []
                for r in candidates:
                    if running.get(r.user_id, 0) < max_running_per_user:
                        running[r.user_id] = running.get(r.user_id, 0) + 1
                        chosen.append(r.id)
                        if len(chosen) == limit:
                            break
            else:
                chosen = [r.id for r in candidates[:limit]]
            if not chosen:
                return []
            if max_running_per_user is not None:
                # PostgreSQL: a run whose finish committed after ``now`` was read may have freed
                # its user's slot above; the claimed runs start after that finish, not before
                now = _now()
            rows = conn.execute(
                _SQL_CLAIM,
                {
                    "run_ids": chosen,
                    "worker_id": worker_id,
                    "lease_until": now + timedelta(seconds=lease_seconds),
                    "now": now,
                },
            ).all()
        rows.sort(key=lambda r: (r.created_at, r.id))
        return [_run_dict(r) for r in rows]

    @_retry_on_disconnect
    def heartbeat(
        self, worker_id: str, run_ids: Iterable[str], *, lease_seconds: float
    ) -> set[str]:
        """Extend the leases of the worker's runs; returns the ids it still owns."""
        ids = list(run_ids)
        if not ids:
            return set()
        params = {
            "run_ids": ids,
            "worker_id": worker_id,
            "lease_until": _now() + timedelta(seconds=lease_seconds),
        }
        with self.write() as conn:
            return set(conn.execute(_SQL_HEARTBEAT, params).scalars())

    @_retry_on_disconnect
    def release_run(self, worker_id: str, run_id: str) -> bool:
        """Put a run the worker owns back in the queue (graceful shutdown); False if not owned."""
        with self.write() as conn:
            res = conn.execute(_SQL_RELEASE, {"run_id": run_id, "worker_id": worker_id})
        return res.rowcount == 1

    # ------------------------------------------------------------------ runs by id (Celery)

    @_retry_on_disconnect
    def claim_run(
        self,
        worker_id: str,
        run_id: str,
        *,
        lease_seconds: float,
        max_running_per_user: int | None = None,
    ) -> dict | None:
        """Take the run ``run_id`` with a lease, as :meth:`claim_runs` would: when it is queued,
        or running with an expired lease (its worker died). None when it is final, cancelled,
        unknown, leased by a live worker, or when its user already has ``max_running_per_user``
        running runs. One conditional UPDATE, so two deliveries of one message never both win.
        """
        with self.write() as conn:
            now = _now()  # once the write lock is held (see claim_runs)
            params = {
                "run_id": run_id,
                "worker_id": worker_id,
                "lease_until": now + timedelta(seconds=lease_seconds),
                "now": now,
            }
            if max_running_per_user is None:
                row = conn.execute(_SQL_CLAIM_ONE, params).first()
            elif self._pg:
                # per-user counting needs the claimers to take turns; finishes are not among
                # them, so the count is one statement and the claim, timed after it, another:
                # a run whose finish the count saw never ends after this one starts (a finish
                # committed later only frees a slot, which the next claim will see)
                conn.execute(_SQL_CLAIM_LOCK)
                running = conn.execute(
                    _SQL_RUNNING_OF_RUNS_USER, {"run_id": run_id, "now": now}
                ).scalar_one()
                if running >= max_running_per_user:
                    return None
                now = _now()
                params["now"] = now
                params["lease_until"] = now + timedelta(seconds=lease_seconds)
                row = conn.execute(_SQL_CLAIM_ONE, params).first()
            else:  # SQLite: the write lock also holds finishes back, so one statement will do
                params["cap"] = max_running_per_user
                row = conn.execute(_SQL_CLAIM_ONE_CAPPED, params).first()
        return _run_dict(row) if row is not None else None

    @_retry_on_disconnect
    def runs_to_resend(
        self, *, queued_before: datetime | None, limit: int = 500
    ) -> dict[str, list[str]]:
        """Ids of runs a lost message may have stranded: ``expired`` (running, lease expired:
        the worker died) and, when ``queued_before`` is given, ``queued`` (queued since before
        it), oldest first, at most ``limit`` of each."""
        now = _now()
        with self.read() as conn:
            expired = conn.execute(
                select(runs.c.id)
                .where(runs.c.status == "running", runs.c.lease_expires_at < now)
                .order_by(runs.c.created_at)
                .limit(limit)
            ).scalars().all()
            queued: list[str] = []
            if queued_before is not None:
                queued = conn.execute(
                    select(runs.c.id)
                    .where(
                        runs.c.status == "queued",
                        runs.c.lease_expires_at.is_(None),
                        runs.c.created_at < queued_before,
                    )
                    .order_by(runs.c.created_at)
                    .limit(limit)
                ).scalars().all()
        return {"expired": list(expired), "queued": list(queued)}

    def prune_runs(self, older_than: datetime, *, batch: int = 2000) -> int:
        """Delete finished runs (succeeded, failed, cancelled) created and finished before
        ``older_than``, with their steps, in batches of ``batch`` (short transactions). Ledger
        lines stay (money is never deleted). Returns how many runs were deleted."""
        total = 0
        while True:
            with self.write() as conn:
                ids = conn.execute(
                    select(runs.c.id)
                    .where(
                        runs.c.status.in_(sorted(FINAL_RUN_STATUSES)),
                        runs.c.created_at < older_than,
                        runs.c.finished_at < older_than,
                    )
                    .limit(batch)
                ).scalars().all()
                if not ids:
                    return total
                conn.execute(delete(run_steps).where(run_steps.c.run_id.in_(ids)))
                conn.execute(delete(runs).where(runs.c.id.in_(ids)))
            total += len(ids)

    def record_step(
        self,
        run_id: str,
        step_id: str,
        *,
        position: int,
        connector: str,
        action: str,
        status: str,
        attempts: int,
        input: Any = None,
        output: Any = None,
        error: Any = None,
        started_at: datetime | None = None,
        finished_at: datetime | None = None,
    ) -> None:
        """Insert or update a step row. ``input`` and ``started_at`` given as None keep the
        stored values (so the final update need not repeat them); the rest is overwritten."""
        self.record_steps([
            self.step_row(
                run_id,
                step_id,
                position=position,
                connector=connector,
                action=action,
                status=status,
                attempts=attempts,
                input=input,
                output=output,
                error=error,
                started_at=started_at,
                finished_at=finished_at,
            )
        ])

    @_retry_on_disconnect
    def record_steps(self, rows: list[dict[str, Any]]) -> None:
        """Insert or update several step rows in one write transaction (same columns and rules
        as :meth:`record_step`; see :meth:`step_row`)."""
        if rows:
            with self.write() as conn:
                self.record_steps_in(conn, rows)

    def record_steps_in(self, conn: Connection, rows: list[dict[str, Any]]) -> None:
        """:meth:`record_steps` inside the caller's transaction."""
        for r in rows:
            if r["status"] not in STEP_STATUSES:
                raise ValueError(f"unknown step status {r['status']!r}")
        if rows:
            conn.execute(self._step_upsert, rows)

    @staticmethod
    def step_row(
        run_id: str,
        step_id: str,
        *,
        position: int,
        connector: str,
        action: str,
        status: str,
        attempts: int,
        input: Any = None,
        output: Any = None,
        error: Any = None,
        started_at: datetime | None = None,
        finished_at: datetime | None = None,
    ) -> dict[str, Any]:
        """The parameters of one step row for :meth:`record_steps`."""
        return {
            "run_id": run_id,
            "step_id": step_id,
            "position": position,
            "connector": connector,
            "action": action,
            "status": status,
            "attempts": attempts,
            "input": input,
            "output": output,
            "error": error,
            "started_at": started_at,
            "finished_at": finished_at,
        }

    @_retry_on_disconnect
    def succeeded_outputs(self, run_id: str) -> dict[str, dict]:
        """``{step_id: output}`` of the run's succeeded steps."""
        with self.read() as conn:
            rows = conn.execute(_SQL_SUCCEEDED_OUTPUTS, {"run_id": run_id}).all()
        return {r.step_id: r.output for r in rows}

    @_retry_on_disconnect
    def finish_run(
        self,
        run_id: str,
        worker_id: str,
        status: str,
        error: Any = None,
        *,
        end_running_steps: bool = False,
    ) -> bool:
        """Move a running run the worker still owns to a final status; False otherwise. With
        ``end_running_steps``, step rows left ``running`` by a lost worker take the same status
        (``cancelled`` stays, anything else is ``failed``) and ``error``."""
        if status not in FINAL_RUN_STATUSES:
            raise ValueError(f"not a final run status: {status!r}")
        with self.write() as conn:
            done = self.finish_run_in(conn, run_id, worker_id, status, error)
            if done and end_running_steps:
                self._end_running_steps(conn, run_id, status, error)
            return done

    @staticmethod
    def _end_running_steps(conn: Connection, run_id: str, status: str, error: Any) -> None:
        conn.execute(
            update(run_steps)
            .where(run_steps.c.run_id == run_id, run_steps.c.status == "running")
            .values(
                status="cancelled" if status == "cancelled" else "failed",
                error=error,
                finished_at=_now(),
            )
        )

    def finish_run_in(
        self,
        conn: Connection,
        run_id: str,
        worker_id: str,
        status: str,
        error: Any = None,
        *,
        settled: bool = False,
    ) -> bool:
        """:meth:`finish_run` inside the caller's transaction; ``settled`` also claims the run's
        settlement (``settled_at``) in the same statement."""
        if status not in FINAL_RUN_STATUSES:
            raise ValueError(f"not a final run status: {status!r}")
        now = _now()
        params = {
            "run_id": run_id,
            "worker_id": worker_id,
            "new_status": status,
            "new_error": error,
            "now": now,
        }
        return conn.execute(_SQL_FINISH_SETTLED if settled else _SQL_FINISH, params).rowcount == 1

    @_retry_on_disconnect
    def unsettled_runs(self, *, older_than: float, limit: int = 50) -> list[dict]:
        """Final runs whose settlement (credits, usage, events) never happened: the worker died
        between finishing the run and settling it, or the run was cancelled while queued."""
        cutoff = _now() - timedelta(seconds=older_than)
        q = (
            select(runs)
            .where(
                runs.c.settled_at.is_(None),
                runs.c.finished_at.is_not(None),
                runs.c.finished_at < cutoff,
                runs.c.status.in_(tuple(FINAL_RUN_STATUSES)),
            )
            .order_by(runs.c.finished_at)
            .limit(limit)
        )
        with self.read() as conn:
            return [_run_dict(r) for r in conn.execute(q).all()]

    def _get_run(self, conn: Connection, user_id: str | None, run_id: str) -> dict | None:
        if user_id is None:
            row = conn.execute(_SQL_RUN, {"run_id": run_id}).first()
        else:
            row = conn.execute(_SQL_RUN_OF_USER, {"run_id": run_id, "user_id": user_id}).first()
        if row is None:
            return None
        out = _run_dict(row)
        steps = conn.execute(_SQL_STEPS, {"run_id": run_id}).all()
        out["steps"] = [_step_dict(s) for s in steps]
        return out

    @_retry_on_disconnect
    def get_run(self, user_id: str | None, run_id: str) -> dict | None:
        """The run with its ``steps`` (by position); ``user_id`` None = any user (workers)."""
        with self.read() as conn:
            return self._get_run(conn, user_id, run_id)

    def list_runs(
        self,
        user_id: str,
        *,
        pipeline_id: str | None = None,
        status: str | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> tuple[list[dict], str | None]:
        """A page of the user's runs, newest first (no ``steps``), and the cursor of the next page
        (None on the last). Raises ValueError for a malformed cursor."""
        limit = max(1, int(limit))
        q = select(runs).where(runs.c.user_id == user_id)
        if pipeline_id is not None:
            q = q.where(runs.c.pipeline_id == pipeline_id)
        if status is not None:
            q = q.where(runs.c.status == status)
        if cursor:
            c_at, c_id = _decode_cursor(cursor)
            q = q.where(
                or_(
                    runs.c.created_at < c_at,
                    and_(runs.c.created_at == c_at, runs.c.id < c_id),
                )
            )
        q = q.order_by(runs.c.created_at.desc(), runs.c.id.desc()).limit(limit + 1)
        with self.read() as conn:
            rows = conn.execute(q).all()
        nxt = None
        if len(rows) > limit:
            rows = rows[:limit]
            nxt = _encode_cursor(rows[-1].created_at, rows[-1].id)
        return [_run_dict(r) for r in rows], nxt

    def request_cancel(self, user_id: str, run_id: str) -> dict | None:
        """Cancel the user's run: a queued run, and a running one whose lease expired (its
        worker was lost), are cancelled at once; a running one whose worker holds its lease gets
        ``cancel_requested`` (its worker stops before the next step, and a worker that claims it
        after a lost one ends it cancelled without running anything); a finished one is left as
        it is. Returns the run (with steps), None if not the user's."""
        now = _now()
        with self.write() as conn:
            res = conn.execute(
                update(runs)
                .where(
                    runs.c.id == run_id,
                    runs.c.user_id == user_id,
                    or_(
                        runs.c.status == "queued",
                        and_(runs.c.status == "running", runs.c.lease_expires_at < now),
                    ),
                )
                .values(
                    status="cancelled",
                    cancel_requested=True,
                    finished_at=now,
                    lease_owner=None,
                    lease_expires_at=None,
                )
            )
            if res.rowcount == 1:  # the step a lost worker was running ends with the run
                self._end_running_steps(conn, run_id, "cancelled", _CANCELLED_ERROR)
            else:
                conn.execute(
                    update(runs)
                    .where(
                        runs.c.id == run_id, runs.c.user_id == user_id, runs.c.status == "running"
                    )
                    .values(cancel_requested=True)
                )
            return self._get_run(conn, user_id, run_id)

    @_retry_on_disconnect
    def is_cancel_requested(self, run_id: str) -> bool:
        with self.read() as conn:
            row = conn.execute(_SQL_CANCEL_STATE, {"run_id": run_id}).first()
        return bool(row and (row.cancel_requested or row.status == "cancelled"))

    def queue_stats(self) -> dict:
        """``{"queued": n, "running": n, "oldest_queued_age_seconds": float | None}``."""
        with self.read() as conn:
            queued, oldest = conn.execute(
                select(func.count(), func.min(runs.c.created_at)).where(runs.c.status == "queued")
            ).one()
            running = conn.execute(
                select(func.count()).select_from(runs).where(runs.c.status == "running")
            ).scalar_one()
        age = max(0.0, (_now() - oldest).total_seconds()) if oldest is not None else None
        return {"queued": queued, "running": running, "oldest_queued_age_seconds": age}

    # ------------------------------------------------------------------ webhook deliveries

    def record_delivery(self, pipeline_id: str, delivery_id: str) -> bool:
        """Remember a webhook delivery id; False when it was seen before (a replay)."""
        stmt = (
            self._insert(webhook_deliveries)
            .values(pipeline_id=pipeline_id, delivery_id=delivery_id, created_at=_now())
            .on_conflict_do_nothing(
                index_elements=[webhook_deliveries.c.pipeline_id, webhook_deliveries.c.delivery_id]
            )
            .returning(webhook_deliveries.c.delivery_id)
        )
        # RETURNING rather than rowcount: psycopg reports no rowcount for INSERT ... DO NOTHING
        with self.write() as conn:
            return conn.execute(stmt).first() is not None

    # ------------------------------------------------------------------ leader lock

    @_retry_on_disconnect
    def acquire_lock(self, name: str, owner: str, ttl_seconds: float) -> bool:
        """Take the lock ``name`` for ``ttl_seconds``, renew it when ``owner`` holds it, or steal
        it when the holder's lease expired. False while someone else holds it."""
        now = _now()
        expires = now + timedelta(seconds=ttl_seconds)
        with self.write() as conn:
            res = conn.execute(
                update(locks)
                .where(locks.c.name == name, or_(locks.c.owner == owner, locks.c.expires_at < now))
                .values(
                    owner=owner,
                    expires_at=expires,
                    # keep acquired_at on renewal, reset it when taking over
                    acquired_at=case(
                        (locks.c.owner == owner, locks.c.acquired_at),
                        else_=literal(now, UTCDateTime),
                    ),
                )
            )
            if res.rowcount == 1:
                return True
            res = conn.execute(
                self._insert(locks)
                .values(name=name, owner=owner, acquired_at=now, expires_at=expires)
                .on_conflict_do_nothing(index_elements=[locks.c.name])
                .returning(locks.c.name)
            )
            return res.first() is not None

    def release_lock(self, name: str, owner: str) -> bool:
        """Give the lock up (only its owner can); True if it was released."""
        with self.write() as conn:
            res = conn.execute(delete(locks).where(locks.c.name == name, locks.c.owner == owner))
        return res.rowcount == 1

    def lock_holder(self, name: str) -> dict | None:
        """``{"name", "owner", "acquired_at", "expires_at"}`` of a lock currently held (not expired)."""
        with self.read() as conn:
            row = conn.execute(
                select(locks).where(locks.c.name == name, locks.c.expires_at >= _now())
            ).first()
        if row is None:
            return None
        return {
            "name": row.name,
            "owner": row.owner,
            "acquired_at": _iso(row.acquired_at),
            "expires_at": _iso(row.expires_at),
        }

    # ------------------------------------------------------------------ meta

    def get_meta(self, key: str) -> str | None:
        with self.read() as conn:
            return conn.execute(select(meta.c.value).where(meta.c.key == key)).scalar_one_or_none()

    def set_meta(self, key: str, value: str | None) -> None:
        stmt = self._insert(meta).values(key=key, value=value, updated_at=_now())
        stmt = stmt.on_conflict_do_update(
            index_elements=[meta.c.key],
            set_={"value": stmt.excluded.value, "updated_at": stmt.excluded.updated_at},
        )
        with self.write() as conn:
            conn.execute(stmt)

    # ------------------------------------------------------------------ vault

    def check_vault(self) -> None:
        """Verify the vault keys against the canary in ``meta`` (written on first use).

        Raises :class:`VaultKeyError` when the current keys cannot decrypt it, i.e. the host was
        started with a different ``LEVQOR_SECRET_KEY`` than the one the data was encrypted with.
        """
        token = self.get_meta(VAULT_CANARY_KEY)
        if token is None:
            with self.write() as conn:
                conn.execute(
                    self._insert(meta)
                    .values(
                        key=VAULT_CANARY_KEY,
                        value=self.vault.encrypt(VAULT_CANARY_VALUE),
                        updated_at=_now(),
                    )
                    .on_conflict_do_nothing(index_elements=[meta.c.key])
                )
                token = conn.execute(
                    select(meta.c.value).where(meta.c.key == VAULT_CANARY_KEY)
                ).scalar_one()
        try:
            value = self.vault.decrypt(token)
        except VaultKeyError as exc:
            raise VaultKeyError(
                "LEVQOR_SECRET_KEY cannot decrypt this database's secrets: it was encrypted "
                "with another key (list the old key after the new one, comma separated)"
            ) from exc
        if value != VAULT_CANARY_VALUE:
            raise VaultKeyError("the vault canary in this database is corrupt")

    def rotate_vault(self, new_vault: Vault) -> int:
        """Re-encrypt every secret (credentials, webhook secrets, the canary) with ``new_vault``'s
        newest key in one transaction, then use ``new_vault``. Returns how many were re-encrypted.
        Values are decrypted with the current vault (or ``new_vault`` if it holds the old keys);
        raises :class:`VaultKeyError`, changing nothing, when one cannot be decrypted."""

        def reencrypt(token: str) -> str:
            try:
                obj = self.vault.decrypt(token)
            except VaultKeyError:
                obj = new_vault.decrypt(token)
            return new_vault.encrypt(obj)

        count = 0
        with self.write() as conn:
            creds = conn.execute(select(credentials.c.id, credentials.c.value_enc)).all()
            if creds:
                conn.execute(
                    update(credentials)
                    .where(credentials.c.id == bindparam("_id"))
                    .values(value_enc=bindparam("_v")),
                    [{"_id": r.id, "_v": reencrypt(r.value_enc)} for r in creds],
                )
            pls = conn.execute(
                select(pipelines.c.id, pipelines.c.webhook_secret_enc).where(
                    pipelines.c.webhook_secret_enc.is_not(None)
                )
            ).all()
            if pls:
                conn.execute(
                    update(pipelines)
                    .where(pipelines.c.id == bindparam("_id"))
                    .values(webhook_secret_enc=bindparam("_v")),
                    [{"_id": r.id, "_v": reencrypt(r.webhook_secret_enc)} for r in pls],
                )
            canary = conn.execute(
                select(meta.c.value).where(meta.c.key == VAULT_CANARY_KEY)
            ).scalar_one_or_none()
            if canary is not None:
                conn.execute(
                    update(meta)
                    .where(meta.c.key == VAULT_CANARY_KEY)
                    .values(value=reencrypt(canary), updated_at=_now())
                )
                count += 1
            count += len(creds) + len(pls)
        self.vault = new_vault
        return count


class _Row:
    """Attribute access over a dict of just-inserted values (to reuse the row converters)."""

    __slots__ = ("_d",)

    def __init__(self, d: dict) -> None:
        self._d = d

    def __getattr__(self, name: str) -> Any:
        try:
            return self._d[name]
        except KeyError:
            raise AttributeError(name) from None
