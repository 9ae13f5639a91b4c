"""What backups and restores run against the database itself.

* a consistent copy: SQLite through its online backup API (one snapshot while runs keep being
  written), PostgreSQL with ``pg_dump -Fc`` of an exported snapshot whose row counts are taken
  in the same snapshot; each with the row count of every table and the Alembic revision;
* the checks of a copy (``PRAGMA integrity_check`` and row counts; ``pg_restore --list``);
* before a restore: whether a running Levqor uses the target (the scheduler lock, live run
  leases), which tables it holds, which revisions this version knows; then ``pg_restore`` and the
  migrations that bring an older copy to this version's schema.

Errors are :class:`MaintenanceError` with a message that says why (never a password).
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy.engine import make_url

from levqor_host.config import child_process_env


class MaintenanceError(Exception):
    """The database could not be copied, checked or restored (the message says why)."""


@dataclass(frozen=True)
class DatabaseCopy:
    """What a copy of the database holds: the row count of every table, the Alembic revision."""

    row_counts: dict[str, int]
    revision: str | None


def sqlite_file(url: str) -> Path:
    """The file of a SQLite database URL (an in-memory database has none)."""
    db = make_url(url).database
    if not db or db == ":memory:":
        raise MaintenanceError("an in-memory SQLite database cannot be backed up")
    return Path(db)


def libpq(url: str) -> tuple[str, dict[str, str]]:
    """(libpq URL without the password, env with PGPASSWORD) for pg_dump / pg_restore."""
    u = make_url(url)
    env = {}
    if u.password:
        env["PGPASSWORD"] = str(u.password)
    u = u.set(drivername="postgresql", password=None)
    return u.render_as_string(hide_password=False), env


def sqlite_counts(conn: sqlite3.Connection) -> dict[str, int]:
    """The row count of every table of a SQLite database."""
    names = [
        r[0]
        for r in conn.execute(
            "SELECT name FROM sqlite_master WHERE type='table' AND name NOT LIKE 'sqlite_%' "
            "ORDER BY name"
        )
    ]
    return {n: conn.execute(f'SELECT count(*) FROM "{n}"').fetchone()[0] for n in names}


def _integrity(conn: sqlite3.Connection) -> list[str]:
    return [r[0] for r in conn.execute("PRAGMA integrity_check").fetchall()]


def copy_sqlite(url: str, out: Path) -> DatabaseCopy:
    """Copy the SQLite database at ``url`` to ``out`` (one consistent snapshot), checked."""
    src_path = sqlite_file(url)
    if not src_path.exists():
        raise MaintenanceError(f"the database file {src_path} does not exist")
    out.parent.mkdir(parents=True)
    src = sqlite3.connect(f"file:{src_path}?mode=ro", uri=True, timeout=30)
    dst = sqlite3.connect(out)
    try:
        src.execute("PRAGMA busy_timeout = 30000")
        src.backup(dst)  # one step (pages=-1): a single consistent snapshot
    finally:
        src.close()
    try:
        dst.execute("PRAGMA journal_mode=DELETE")  # one self-contained file
        check = _integrity(dst)
        if check != ["ok"]:
            raise MaintenanceError(f"integrity_check of the copy failed: {check[:5]}")
        counts = sqlite_counts(dst)
        try:
            rev = dst.execute("SELECT version_num FROM alembic_version").fetchone()
        except sqlite3.DatabaseError:
            rev = None
    finally:
        dst.close()
    os.chmod(out, 0o600)
    return DatabaseCopy(counts, rev[0] if rev else None)


def check_sqlite_copy(path: Path) -> dict[str, int]:
    """Check a SQLite copy read-only; returns its row counts."""
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        check = _integrity(conn)
        if check != ["ok"]:
            raise MaintenanceError(f"integrity_check failed: {check[:3]}")
        return sqlite_counts(conn)
    except sqlite3.DatabaseError as e:
        raise MaintenanceError(f"the database copy is unreadable: {e}") from None
    finally:
        conn.close()


def dump_postgres(url: str, out: Path, pg_dump: str) -> DatabaseCopy:
    """``pg_dump -Fc`` of one exported snapshot, with the row counts of that snapshot."""
    import psycopg

    conninfo, pgenv = libpq(url)
    out.parent.mkdir(parents=True)
    with psycopg.connect(conninfo, password=pgenv.get("PGPASSWORD"), autocommit=True) as conn:
        conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        snapshot = conn.execute("SELECT pg_export_snapshot()").fetchone()[0]
        tables = [
            r[0]
            for r in conn.execute(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = "
                "current_schema() AND table_type = 'BASE TABLE' ORDER BY table_name"
            )
        ]
        counts = {t: conn.execute(f'SELECT count(*) FROM "{t}"').fetchone()[0] for t in tables}
        rev = None
        if "alembic_version" in tables:
            row = conn.execute("SELECT version_num FROM alembic_version").fetchone()
            rev = row[0] if row else None
        proc = subprocess.run(
            [pg_dump, "-Fc", "--no-owner", f"--snapshot={snapshot}", "-f", str(out)]
            + ["-d", conninfo],
            env=child_process_env(**pgenv),
            capture_output=True,
            text=True,
            timeout=3600,
        )
        conn.execute("COMMIT")
    if proc.returncode != 0:
        raise MaintenanceError(f"pg_dump failed: {proc.stderr.strip()[-500:]}")
    os.chmod(out, 0o600)
    return DatabaseCopy(counts, rev)


def check_postgres_dump(path: Path, pg_restore: str) -> None:
    """``pg_restore --list``: the dump can be read."""
    proc = subprocess.run(
        [pg_restore, "--list", str(path)], capture_output=True, text=True, timeout=600
    )
    if proc.returncode != 0:
        raise MaintenanceError(f"pg_restore cannot read the dump: {proc.stderr.strip()[-300:]}")


def restore_postgres(url: str, dump: Path, pg_restore: str) -> None:
    """Load a ``pg_dump -Fc`` file into the database at ``url`` in one transaction, replacing
    the tables it holds."""
    conninfo, pgenv = libpq(url)
    proc = subprocess.run(
        [pg_restore, "--clean", "--if-exists", "--no-owner", "--single-transaction"]
        + ["-d", conninfo, str(dump)],
        env=child_process_env(**pgenv),
        capture_output=True,
        text=True,
        timeout=3600,
    )
    if proc.returncode != 0:
        raise MaintenanceError(f"pg_restore failed: {proc.stderr.strip()[-500:]}")


def table_names(url: str) -> list[str]:
    """The tables of the database at ``url``."""
    from sqlalchemy import inspect

    from levqor_host.store import make_engine

    eng = make_engine(url)
    try:
        return inspect(eng).get_table_names()
    finally:
        eng.dispose()


def known_revisions() -> set[str]:
    """Every Alembic revision this version of Levqor knows."""
    from alembic.script import ScriptDirectory

    from levqor_host.store import alembic_config

    return {s.revision for s in ScriptDirectory.from_config(alembic_config()).walk_revisions()}


def _open(url: str):  # noqa: ANN202 - a Store, imported late (the store imports this module)
    from levqor_host.security.vault import Vault
    from levqor_host.store import Store

    # a throwaway key: nothing here reads a credential
    return Store(url, Vault([Vault.generate_key()]))


def in_use(url: str) -> str | None:
    """Why the database at ``url`` looks in use by a running Levqor, or None."""
    from sqlalchemy import func, select

    from levqor_host.store.tables import runs

    store = _open(url)
    try:
        try:
            holder = store.locks.holder("scheduler")
        except Exception:  # noqa: BLE001 - no locks table: not a Levqor database in use
            holder = None
        if holder is not None:
            return f"the scheduler lock is held by {holder['owner']} until {holder['expires_at']}"
        try:
            with store.read() as conn:
                n = conn.execute(
                    select(func.count())
                    .select_from(runs)
                    .where(runs.c.status == "running", runs.c.lease_expires_at > datetime.now(UTC))
                ).scalar_one()
        except Exception:  # noqa: BLE001
            n = 0
        if n:
            return f"{n} run(s) are being executed right now (their worker leases are live)"
        return None
    finally:
        store.close()


def upgrade(url: str) -> None:
    """Bring the database at ``url`` to this version's schema."""
    store = _open(url)
    try:
        store.upgrade()
    finally:
        store.close()
