"""Backups and restore: ``levqor backup``, ``levqor restore``, and the scheduler's daily backup.

An archive is ``<backups>/levqor-backup-<UTC time>.tar.gz`` (mode 0600) holding

* ``manifest.json``: format ``levqor-backup`` v1, levqor version, creation time, dialect, the
  Alembic revision, the row count of every table, and the SHA-256 and size of every other file;
* ``db/levqor.db`` (SQLite, copied with the online backup API: one consistent snapshot while
  runs keep being written, checked with ``PRAGMA integrity_check`` and the row counts) or
  ``db/levqor.pgdump`` (PostgreSQL, ``pg_dump -Fc`` of an exported snapshot whose row counts are
  taken in the same snapshot);
* ``files/data/...`` (pipeline exports, jobs.jsonl), ``files/logs/...`` (error and support
  inboxes) and ``files/secret.key`` (the vault key, when it lives in the data folder and
  ``LEVQOR_BACKUP_INCLUDE_KEY`` is on).

Every archive is verified after it is written (checksums, integrity, row counts) before it
counts as a backup. Archives older than ``LEVQOR_BACKUP_RETENTION_DAYS`` are removed (the
newest one is always kept). Restore refuses anything that is not such an archive, whose manifest
or checksums do not match, or whose database fails its checks; it never overwrites a database a
running Levqor process is using, and moves replaced files aside instead of deleting them.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import shutil
import sqlite3
import subprocess
import tarfile
import tempfile
import time
import uuid
import zlib
from datetime import UTC, datetime, timedelta
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

import click

from levqor_host import __version__

if TYPE_CHECKING:
    from levqor_host.config import Config
    from levqor_host.services import Services
    from levqor_host.store import Store

log = logging.getLogger("levqor.backup")

FORMAT = "levqor-backup"
FORMAT_VERSION = 1
PREFIX = "levqor-backup-"
SUFFIX = ".tar.gz"
STATUS_FILE = "last-run.json"


class BackupError(Exception):
    """A backup could not be made, or an archive is refused (the message says why)."""


# ---------------------------------------------------------------------------------- helpers
def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _sqlite_path(url: str) -> Path:
    from sqlalchemy.engine import make_url

    db = make_url(url).database
    if not db or db == ":memory:":
        raise BackupError("an in-memory SQLite database cannot be backed up")
    return Path(db)


def _libpq(url: str) -> tuple[str, dict[str, str]]:
    """(libpq URL without the password, env with PGPASSWORD) for pg_dump / pg_restore."""
    from sqlalchemy.engine import make_url

    u = make_url(url)
    env = {}
    if u.password:
        env["PGPASSWORD"] = str(u.password)
    u = u.set(drivername="postgresql", password=None)
    return u.render_as_string(hide_password=False), env


def _tool(cfg: Config, name: str) -> str:
    found = shutil.which(name, path=cfg.env.get("PATH"))
    if not found:
        raise BackupError(
            f"{name} not found on PATH: install the PostgreSQL client tools (the server's "
            f"major version or newer) or set LEVQOR_{Path(name).name.upper()} to its path"
        )
    return found


def _sqlite_counts(conn: sqlite3.Connection) -> dict[str, int]:
    names = [
        r[0]
        for r in conn.execute(
            "SELECT name FROM sqlite_master WHERE type='table' AND name NOT LIKE 'sqlite_%' "
            "ORDER BY name"
        )
    ]
    return {n: conn.execute(f'SELECT count(*) FROM "{n}"').fetchone()[0] for n in names}


def _copy_snapshot(src: Path, dst: Path) -> None:
    """Copy a file as it is now; a .jsonl file ends at its last complete line."""
    with open(src, "rb") as f:
        data = f.read()
    if src.suffix == ".jsonl" or ".jsonl." in src.name:
        cut = data.rfind(b"\n")
        data = data[: cut + 1] if cut >= 0 else b""
    dst.parent.mkdir(parents=True, exist_ok=True)
    dst.write_bytes(data)
    os.chmod(dst, 0o600)


def _collect_files(cfg: Config, stage: Path) -> list[str]:
    out: list[str] = []
    for sub in ("data", "logs"):
        root = cfg.data_dir / sub
        if not root.is_dir():
            continue
        for p in sorted(root.rglob("*")):
            if p.is_symlink() or not p.is_file() or p.name.startswith("."):
                continue
            rel = PurePosixPath("files", sub, *p.relative_to(root).parts)
            try:
                _copy_snapshot(p, stage / rel)
            except FileNotFoundError:  # removed while we walked (rotation)
                continue
            out.append(str(rel))
    key = cfg.data_dir / "secret.key"
    if cfg.backup_include_key and key.is_file() and not key.is_symlink():
        _copy_snapshot(key, stage / "files" / "secret.key")
        out.append("files/secret.key")
    return out


def _status_path(cfg: Config) -> Path:
    return cfg.backups_dir / STATUS_FILE


def _write_status(cfg: Config, status: dict) -> None:
    try:
        cfg.backups_dir.mkdir(parents=True, exist_ok=True)
        tmp = cfg.backups_dir / f".{STATUS_FILE}.{uuid.uuid4().hex[:6]}"
        tmp.write_text(json.dumps(status))
        os.replace(tmp, _status_path(cfg))
    except OSError:
        log.exception("could not record the backup status")


def list_backups(cfg: Config) -> list[Path]:
    d = cfg.backups_dir
    if not d.is_dir():
        return []
    return sorted(p for p in d.glob(f"{PREFIX}*{SUFFIX}") if p.is_file())


def _archive_time(p: Path) -> datetime:
    stamp = p.name[len(PREFIX) : -len(SUFFIX)].split("-")[0]
    try:
        return datetime.strptime(stamp, "%Y%m%dT%H%M%S%fZ").replace(tzinfo=UTC)
    except ValueError:
        return datetime.fromtimestamp(p.stat().st_mtime, UTC)


# ---------------------------------------------------------------------------------- backup
def _dump_sqlite(store: Store, stage: Path) -> tuple[str, dict[str, int], str | None]:
    src_path = _sqlite_path(store.url)
    if not src_path.exists():
        raise BackupError(f"the database file {src_path} does not exist")
    out = stage / "db" / "levqor.db"
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
        check = dst.execute("PRAGMA integrity_check").fetchall()
        if [r[0] for r in check] != ["ok"]:
            raise BackupError(f"integrity_check of the copy failed: {check[:5]}")
        counts = _sqlite_counts(dst)
        try:
            rev = dst.execute("SELECT version_num FROM alembic_version").fetchone()
        except sqlite3.DatabaseError:
            rev = None
    finally:
        dst.close()
    os.chmod(out, 0o600)
    return "db/levqor.db", counts, rev[0] if rev else None


def _dump_postgres(
    store: Store, cfg: Config, stage: Path
) -> tuple[str, dict[str, int], str | None]:
    import psycopg

    pg_dump = _tool(cfg, cfg.pg_dump)
    url, pgenv = _libpq(store.url)
    out = stage / "db" / "levqor.pgdump"
    out.parent.mkdir(parents=True)
    with psycopg.connect(url, password=pgenv.get("PGPASSWORD"), autocommit=True) as conn:
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
            [pg_dump, "-Fc", "--no-owner", f"--snapshot={snapshot}", "-f", str(out), "-d", url],
            env={**os.environ, **pgenv},
            capture_output=True,
            text=True,
            timeout=3600,
        )
        conn.execute("COMMIT")
    if proc.returncode != 0:
        raise BackupError(f"pg_dump failed: {proc.stderr.strip()[-500:]}")
    os.chmod(out, 0o600)
    return "db/levqor.pgdump", counts, rev


def create_backup(store: Store, cfg: Config, *, dest_dir: Path | None = None) -> dict:
    """Write and verify one archive; returns ``{"path", "manifest", "seconds"}``."""
    t0 = time.monotonic()
    dest = Path(dest_dir) if dest_dir is not None else cfg.backups_dir
    dest.mkdir(parents=True, exist_ok=True)
    created = datetime.now(UTC)
    stage = Path(tempfile.mkdtemp(prefix=".stage-", dir=dest))
    try:
        if store.dialect == "sqlite":
            db_name, counts, rev = _dump_sqlite(store, stage)
        elif store.dialect == "postgresql":
            db_name, counts, rev = _dump_postgres(store, cfg, stage)
        else:
            raise BackupError(f"backups of {store.dialect} databases are not supported")
        names = [db_name, *_collect_files(cfg, stage)]
        manifest = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "levqor_version": __version__,
            "created_at": created.isoformat(),
            "dialect": store.dialect,
            "database": db_name,
            "alembic_revision": rev,
            "row_counts": counts,
            "files": {
                n: {"sha256": _sha256(stage / n), "size": (stage / n).stat().st_size} for n in names
            },
        }
        name = f"{PREFIX}{created.strftime('%Y%m%dT%H%M%S%fZ')}-{uuid.uuid4().hex[:4]}{SUFFIX}"
        tmp = dest / f".{name}.tmp"
        with open(tmp, "wb") as raw:
            os.chmod(tmp, 0o600)
            with tarfile.open(fileobj=raw, mode="w:gz") as tar:
                data = json.dumps(manifest, indent=2).encode()
                info = tarfile.TarInfo("manifest.json")
                info.size, info.mtime, info.mode = len(data), int(created.timestamp()), 0o600
                tar.addfile(info, io.BytesIO(data))
                for n in names:
                    tar.add(stage / n, arcname=n, recursive=False)
            raw.flush()
            os.fsync(raw.fileno())
        final = dest / name
        try:
            verify_archive(tmp, cfg=cfg)
        except BackupError as e:
            tmp.unlink(missing_ok=True)
            raise BackupError(f"the new archive failed verification: {e}") from None
        os.replace(tmp, final)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    return {"path": final, "manifest": manifest, "seconds": round(time.monotonic() - t0, 3)}


def prune(cfg: Config, *, now: datetime | None = None) -> list[Path]:
    """Remove archives older than the retention; the newest archive always stays."""
    archives = list_backups(cfg)
    cutoff = (now or datetime.now(UTC)) - timedelta(days=cfg.backup_retention_days)
    removed = []
    for p in archives[:-1]:
        if _archive_time(p) < cutoff:
            p.unlink(missing_ok=True)
            removed.append(p)
    return removed


def scheduled_backup(state: Services) -> dict | None:
    """The daily job (and ``levqor backup``): back up, prune, record the outcome for health."""
    cfg = state.config
    try:
        res = create_backup(state.store, cfg)
    except Exception as e:  # noqa: BLE001 - recorded for health, logged, never raised
        msg = str(e) if isinstance(e, BackupError) else f"{type(e).__name__}: {e}"
        _write_status(cfg, {"ok": False, "ts": datetime.now(UTC).isoformat(), "error": msg})
        state.metrics.backups.labels("failed").inc()
        log.error("backup failed: %s", msg)
        return None
    removed = prune(cfg)
    _write_status(
        cfg,
        {"ok": True, "ts": datetime.now(UTC).isoformat(), "path": res["path"].name},
    )
    state.metrics.backups.labels("succeeded").inc()
    log.info(
        "backup %s written in %ss (%d old removed)", res["path"].name, res["seconds"], len(removed)
    )
    return res


def backup_status(cfg: Config, dialect: str, next_fire: str | None = None) -> dict:
    """The ``backup`` part of /api/v1/ops/health."""
    out: dict[str, Any] = {"ok": True, "enabled": cfg.backup_cron.lower() != "off"}
    if not out["enabled"]:
        out["note"] = "scheduled backups are off (LEVQOR_BACKUP_CRON=off)"
    out["cron"] = cfg.backup_cron
    if next_fire:
        out["next_fire"] = next_fire
    if dialect == "postgresql":
        try:
            _tool(cfg, cfg.pg_dump)
        except BackupError as e:
            out.update(ok=False, error=str(e))
            return out
    if out["enabled"]:
        probe = cfg.backups_dir / f".probe-{uuid.uuid4().hex[:6]}"
        try:
            cfg.backups_dir.mkdir(parents=True, exist_ok=True)
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as e:
            out.update(
                ok=False,
                error=f"the backup folder {cfg.backups_dir} is not writable: "
                f"{e.strerror or type(e).__name__}",
            )
            return out
    archives = list_backups(cfg)
    if archives:
        latest = archives[-1]
        age = (datetime.now(UTC) - _archive_time(latest)).total_seconds()
        out.update(latest=latest.name, age_seconds=round(age, 1), count=len(archives))
        if out["enabled"] and age > cfg.backup_max_age_hours * 3600:
            out.update(
                ok=False,
                error=f"the newest backup is {age / 3600:.1f} h old "
                f"(> LEVQOR_BACKUP_MAX_AGE_HOURS={cfg.backup_max_age_hours:g})",
            )
    else:
        out["latest"] = None
        out["note"] = "no backup yet"
    try:
        status = json.loads(_status_path(cfg).read_text())
    except (OSError, ValueError):
        status = None
    if status is not None:
        out["last_run"] = status
        if not status.get("ok"):
            out.update(ok=False, error=f"the last backup failed: {status.get('error')}")
    return out


# ---------------------------------------------------------------------------------- verify
def _open_tar(path: Path) -> tarfile.TarFile:
    try:
        return tarfile.open(path, mode="r:gz")
    except (tarfile.TarError, OSError, EOFError) as e:
        raise BackupError(f"{path.name} is not a gzip tar archive: {e}") from None


def _safe_name(name: str) -> bool:
    p = PurePosixPath(name)
    return not p.is_absolute() and ".." not in p.parts and name == str(p)


def verify_archive(
    path: Path, *, cfg: Config | None = None, extract_to: Path | None = None
) -> dict:
    """Check an archive completely; with ``extract_to``, leave its files there. Returns the
    manifest. Raises BackupError naming the first problem."""
    path = Path(path)
    if not path.is_file():
        raise BackupError(f"{path} does not exist")
    tmp_dir = None
    if extract_to is None:
        tmp_dir = tempfile.mkdtemp(prefix=".verify-", dir=path.parent)
        extract_to = Path(tmp_dir)
    try:
        with _open_tar(path) as tar:
            try:
                members = tar.getmembers()
            except (tarfile.TarError, OSError, EOFError) as e:
                raise BackupError(f"{path.name} is a damaged archive: {e}") from None
            by_name: dict[str, tarfile.TarInfo] = {}
            for m in members:
                if not m.isfile() or not _safe_name(m.name):
                    raise BackupError(f"{path.name} holds an unexpected entry {m.name!r}")
                if m.name in by_name:
                    raise BackupError(f"{path.name} holds {m.name!r} twice")
                by_name[m.name] = m
            if "manifest.json" not in by_name:
                raise BackupError(f"{path.name} has no manifest.json: not a Levqor backup")
            try:
                manifest = json.loads(tar.extractfile(by_name["manifest.json"]).read())  # type: ignore[union-attr]
            except (ValueError, tarfile.TarError, OSError, EOFError, AttributeError) as e:
                raise BackupError(f"{path.name}: unreadable manifest.json: {e}") from None
            if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
                raise BackupError(f"{path.name}: the manifest is not a {FORMAT} manifest")
            if manifest.get("format_version") != FORMAT_VERSION:
                raise BackupError(
                    f"{path.name}: backup format version {manifest.get('format_version')} "
                    f"is not supported (this Levqor reads {FORMAT_VERSION})"
                )
            files = manifest.get("files")
            if not isinstance(files, dict) or manifest.get("database") not in files:
                raise BackupError(f"{path.name}: the manifest lists no database")
            extra = set(by_name) - set(files) - {"manifest.json"}
            if extra:
                raise BackupError(
                    f"{path.name} holds files the manifest does not list: {sorted(extra)[:5]}"
                )
            for name, meta in files.items():
                if not _safe_name(name) or name not in by_name:
                    raise BackupError(f"{path.name}: {name} is listed but missing")
                out = extract_to / name
                out.parent.mkdir(parents=True, exist_ok=True)
                h = hashlib.sha256()
                try:
                    src = tar.extractfile(by_name[name])
                    with open(out, "wb") as f:
                        while chunk := src.read(1 << 20):  # type: ignore[union-attr]
                            h.update(chunk)
                            f.write(chunk)
                except (tarfile.TarError, OSError, EOFError, zlib.error) as e:
                    raise BackupError(f"{path.name}: {name} cannot be read: {e}") from None
                os.chmod(out, 0o600)
                if h.hexdigest() != meta.get("sha256"):
                    raise BackupError(f"{path.name}: checksum mismatch for {name}")
        db = extract_to / manifest["database"]
        if manifest.get("dialect") == "sqlite":
            conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
            try:
                check = [r[0] for r in conn.execute("PRAGMA integrity_check").fetchall()]
                if check != ["ok"]:
                    raise BackupError(f"{path.name}: integrity_check failed: {check[:3]}")
                counts = _sqlite_counts(conn)
            except sqlite3.DatabaseError as e:
                raise BackupError(f"{path.name}: the database copy is unreadable: {e}") from None
            finally:
                conn.close()
            if counts != manifest.get("row_counts"):
                raise BackupError(f"{path.name}: row counts differ from the manifest")
        elif manifest.get("dialect") == "postgresql":
            pg_restore = shutil.which(
                cfg.pg_restore if cfg else "pg_restore", path=(cfg.env.get("PATH") if cfg else None)
            )
            if pg_restore:
                proc = subprocess.run(
                    [pg_restore, "--list", str(db)], capture_output=True, text=True, timeout=600
                )
                if proc.returncode != 0:
                    raise BackupError(
                        f"{path.name}: pg_restore cannot read the dump: {proc.stderr.strip()[-300:]}"
                    )
        else:
            raise BackupError(f"{path.name}: unknown dialect {manifest.get('dialect')!r}")
        return manifest
    finally:
        if tmp_dir is not None:
            shutil.rmtree(tmp_dir, ignore_errors=True)


# ---------------------------------------------------------------------------------- restore
def _known_revisions() -> set[str]:
    from alembic.script import ScriptDirectory

    from levqor_host.store import _alembic_config

    return {s.revision for s in ScriptDirectory.from_config(_alembic_config()).walk_revisions()}


def _in_use(url: str) -> str | None:
    """Why the database at ``url`` looks in use by a running Levqor, or None."""
    from sqlalchemy import func, select

    from levqor_host.security.vault import Vault
    from levqor_host.store import Store
    from levqor_host.store.tables import runs

    store = Store(url, Vault([Vault.generate_key()]))
    try:
        try:
            holder = store.lock_holder("scheduler")
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


def restore_backup(archive: Path, cfg: Config, *, force: bool = False) -> dict:
    """Restore ``archive`` into ``cfg.data_dir`` and ``cfg.database_url``."""
    archive = Path(archive).resolve()
    data_dir = cfg.data_dir
    data_dir.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=".restore-", dir=data_dir))
    moved_aside: Path | None = None
    try:
        manifest = verify_archive(archive, cfg=cfg, extract_to=stage)
        rev = manifest.get("alembic_revision")
        if rev and rev not in _known_revisions():
            raise BackupError(
                f"the backup is at database revision {rev}, unknown to Levqor {__version__}: "
                "restore it with the Levqor version that made it (or newer)"
            )
        dialect = cfg.database_url.split(":", 1)[0].split("+", 1)[0]
        if dialect == "postgres":
            dialect = "postgresql"
        if dialect != manifest["dialect"]:
            raise BackupError(
                f"the backup holds a {manifest['dialect']} database but the target "
                f"(DATABASE_URL) is {dialect}"
            )
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")

        def aside(p: Path) -> None:
            nonlocal moved_aside
            if not p.exists():
                return
            if moved_aside is None:
                moved_aside = data_dir / f"pre-restore-{stamp}"
                moved_aside.mkdir()
            shutil.move(str(p), str(moved_aside / p.name))

        if dialect == "sqlite":
            target = _sqlite_path(cfg.database_url)
            if target.exists() and target.stat().st_size > 0:
                if not force:
                    raise BackupError(
                        f"{target} already exists: restore into an empty data folder, or pass "
                        "--force to replace it (the current files are moved to pre-restore-*/)"
                    )
                why = _in_use(cfg.database_url)
                if why:
                    raise BackupError(f"the target database is in use ({why}): stop Levqor first")
            for suffix in ("", "-wal", "-shm"):
                aside(target.with_name(target.name + suffix))
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(str(stage / manifest["database"]), str(target))
        else:
            from sqlalchemy import inspect

            from levqor_host.store import make_engine

            eng = make_engine(cfg.database_url)
            try:
                existing = inspect(eng).get_table_names()
            finally:
                eng.dispose()
            if existing:
                if not force:
                    raise BackupError(
                        "the target PostgreSQL database is not empty: use an empty database, or "
                        "pass --force to replace its Levqor tables"
                    )
                why = _in_use(cfg.database_url)
                if why:
                    raise BackupError(f"the target database is in use ({why}): stop Levqor first")
            pg_restore = _tool(cfg, cfg.pg_restore)
            url, pgenv = _libpq(cfg.database_url)
            proc = subprocess.run(
                [
                    pg_restore,
                    "--clean",
                    "--if-exists",
                    "--no-owner",
                    "--single-transaction",
                    "-d",
                    url,
                    str(stage / manifest["database"]),
                ],
                env={**os.environ, **pgenv},
                capture_output=True,
                text=True,
                timeout=3600,
            )
            if proc.returncode != 0:
                raise BackupError(f"pg_restore failed: {proc.stderr.strip()[-500:]}")
        for sub in ("data", "logs"):
            src = stage / "files" / sub
            if src.exists():
                aside(data_dir / sub)
                shutil.move(str(src), str(data_dir / sub))
        key = stage / "files" / "secret.key"
        key_restored = key.exists()
        if key_restored:
            aside(data_dir / "secret.key")
            shutil.move(str(key), str(data_dir / "secret.key"))
            os.chmod(data_dir / "secret.key", 0o600)
        # an older backup is brought to this version's schema
        from levqor_host.security.vault import Vault
        from levqor_host.store import Store

        store = Store(cfg.database_url, Vault([Vault.generate_key()]))
        try:
            store.upgrade()
        finally:
            store.close()
        return {
            "archive": str(archive),
            "data_dir": str(data_dir),
            "dialect": manifest["dialect"],
            "created_at": manifest.get("created_at"),
            "row_counts": manifest.get("row_counts"),
            "vault_key_restored": key_restored,
            "moved_aside": str(moved_aside) if moved_aside else None,
        }
    finally:
        shutil.rmtree(stage, ignore_errors=True)


# ---------------------------------------------------------------------------------- CLI
@click.command("backup")
@click.option(
    "--dest",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Folder for the archive (default LEVQOR_BACKUP_DIR or <data dir>/backups).",
)
@click.option("--no-prune", is_flag=True, help="Keep archives older than the retention.")
def backup_command(dest: Path | None, no_prune: bool) -> None:
    """Back up the database, data/ and logs/ into a verified tar.gz archive now."""
    from levqor_host.config import Config
    from levqor_host.security.vault import Vault
    from levqor_host.store import Store

    cfg = Config.from_env()
    cfg.data_dir.mkdir(parents=True, exist_ok=True)
    store = Store(cfg.database_url, Vault.from_config(cfg.data_dir, cfg.secret_key))
    try:
        res = create_backup(store, cfg, dest_dir=dest)
    except BackupError as e:
        if dest is None:
            _write_status(cfg, {"ok": False, "ts": datetime.now(UTC).isoformat(), "error": str(e)})
        raise click.ClickException(str(e)) from None
    finally:
        store.close()
    removed = [] if (no_prune or dest is not None) else prune(cfg)
    if dest is None:
        _write_status(
            cfg, {"ok": True, "ts": datetime.now(UTC).isoformat(), "path": res["path"].name}
        )
    m = res["manifest"]
    rows = sum(m["row_counts"].values())
    click.echo(
        f"backup {res['path']} ({res['path'].stat().st_size} bytes, {rows} rows, "
        f"{len(m['files'])} files, revision {m['alembic_revision']}) in {res['seconds']}s"
    )
    for p in removed:
        click.echo(f"removed {p.name} (older than {cfg.backup_retention_days} days)")


@click.command("restore")
@click.argument("archive", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Data folder to restore into (default LEVQOR_DATA_DIR).",
)
@click.option("--force", is_flag=True, help="Replace an existing database (moved aside first).")
def restore_command(archive: Path, data_dir: Path | None, force: bool) -> None:
    """Restore a `levqor backup` archive into a data folder (and DATABASE_URL)."""
    from levqor_host.config import Config

    env = dict(os.environ)
    if data_dir is not None:
        env["LEVQOR_DATA_DIR"] = str(data_dir)
    cfg = Config.from_env(env)
    try:
        res = restore_backup(archive, cfg, force=force)
    except BackupError as e:
        raise click.ClickException(f"restore refused: {e}") from None
    rows = sum((res["row_counts"] or {}).values())
    click.echo(
        f"restored {archive.name} (made {res['created_at']}, {rows} rows) into {res['data_dir']}"
    )
    if res["moved_aside"]:
        click.echo(f"the replaced files are in {res['moved_aside']}")
    if cfg.secret_key and (cfg.data_dir / "secret.key").exists():
        click.echo(
            "note: LEVQOR_SECRET_KEY is set and takes precedence over the restored secret.key"
        )
