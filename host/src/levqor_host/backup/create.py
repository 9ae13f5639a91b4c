"""Making archives: ``levqor backup`` and the scheduler's daily backup.

An archive holds

* ``manifest.json``: format ``levqor-backup`` v1, levqor version, creation time, dialect, the
  Alembic revision, the row count of every table, and the SHA-256 and size of every other file;
* ``db/levqor.db`` (SQLite) or ``db/levqor.pgdump`` (PostgreSQL), copied by
  :mod:`levqor_host.store.maintenance`;
* ``files/data/...`` (pipeline exports, jobs.jsonl), ``files/logs/...`` (error and support
  inboxes) and ``files/secret.key`` (the vault key, when it lives in the data folder and
  ``LEVQOR_BACKUP_INCLUDE_KEY`` is on).

Every archive is verified after it is written (checksums, integrity, row counts) before it
counts as a backup. Archives older than ``LEVQOR_BACKUP_RETENTION_DAYS`` are removed (the
newest one is always kept).
"""

from __future__ import annotations

import io
import json
import os
import shutil
import tarfile
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

from levqor_host import __version__
from levqor_host.backup.common import (
    FORMAT,
    FORMAT_VERSION,
    BackupError,
    archive_name,
    archive_time,
    backup_errors,
    list_backups,
    log,
    sha256,
    tool,
    write_status,
)
from levqor_host.backup.verify import verify_archive
from levqor_host.store import maintenance

if TYPE_CHECKING:
    from levqor_host.config import Config
    from levqor_host.metrics import Metrics
    from levqor_host.store import Store


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
    if cfg.backup.include_key and key.is_file() and not key.is_symlink():
        _copy_snapshot(key, stage / "files" / "secret.key")
        out.append("files/secret.key")
    return out


def _copy_database(store: Store, cfg: Config, stage: Path) -> tuple[str, maintenance.DatabaseCopy]:
    if store.dialect == "sqlite":
        name = "db/levqor.db"
        return name, maintenance.copy_sqlite(store.url, stage / name)
    if store.dialect == "postgresql":
        name = "db/levqor.pgdump"
        return name, maintenance.dump_postgres(store.url, stage / name, tool(cfg, cfg.backup.pg_dump))
    raise BackupError(f"backups of {store.dialect} databases are not supported")


def _write_tar(path: Path, stage: Path, manifest: dict, created: datetime) -> None:
    """The archive at ``path`` (mode 0600, synced): the manifest, then the listed files."""
    with open(path, "wb") as raw:
        os.chmod(path, 0o600)
        with tarfile.open(fileobj=raw, mode="w:gz") as tar:
            data = json.dumps(manifest, indent=2).encode()
            info = tarfile.TarInfo("manifest.json")
            info.size, info.mtime, info.mode = len(data), int(created.timestamp()), 0o600
            tar.addfile(info, io.BytesIO(data))
            for n in manifest["files"]:
                tar.add(stage / n, arcname=n, recursive=False)
        raw.flush()
        os.fsync(raw.fileno())


@backup_errors
def create_backup(store: Store, cfg: Config, *, dest_dir: Path | None = None) -> dict:
    """Write and verify one archive; returns ``{"path", "manifest", "seconds"}``."""
    t0 = time.monotonic()
    dest = Path(dest_dir) if dest_dir is not None else cfg.backups_dir
    dest.mkdir(parents=True, exist_ok=True)
    created = datetime.now(UTC)
    stage = Path(tempfile.mkdtemp(prefix=".stage-", dir=dest))
    try:
        db_name, copy = _copy_database(store, cfg, stage)
        names = [db_name, *_collect_files(cfg, stage)]
        manifest = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "levqor_version": __version__,
            "created_at": created.isoformat(),
            "dialect": store.dialect,
            "database": db_name,
            "alembic_revision": copy.revision,
            "row_counts": copy.row_counts,
            "files": {
                n: {"sha256": sha256(stage / n), "size": (stage / n).stat().st_size} for n in names
            },
        }
        name = archive_name(created)
        tmp = dest / f".{name}.tmp"
        _write_tar(tmp, stage, manifest, created)
        try:
            verify_archive(tmp, cfg=cfg)
        except BackupError as e:
            tmp.unlink(missing_ok=True)
            raise BackupError(f"the new archive failed verification: {e}") from None
        final = dest / name
        os.replace(tmp, final)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    return {"path": final, "manifest": manifest, "seconds": round(time.monotonic() - t0, 3)}


def prune(cfg: Config, *, now: datetime | None = None) -> list[Path]:
    """Remove archives older than the retention; the newest archive always stays."""
    archives = list_backups(cfg)
    cutoff = (now or datetime.now(UTC)) - timedelta(days=cfg.backup.retention_days)
    removed = []
    for p in archives[:-1]:
        if archive_time(p) < cutoff:
            p.unlink(missing_ok=True)
            removed.append(p)
    return removed


def _describe(e: Exception) -> str:
    return str(e) if isinstance(e, BackupError) else f"{type(e).__name__}: {e}"


def run_backup(
    store: Store, cfg: Config, *, dest_dir: Path | None = None, keep_old: bool = False
) -> dict[str, Any]:
    """One backup as the operator asks for it: an archive in ``dest_dir`` (default the backup
    folder), and there old archives pruned (unless ``keep_old``) and the outcome recorded for
    health. Returns what :func:`create_backup` returns, with ``removed``: the pruned archives.
    Raises what create_backup raises."""
    in_backup_folder = dest_dir is None
    try:
        res = create_backup(store, cfg, dest_dir=dest_dir)
    except Exception as e:
        if in_backup_folder:
            write_status(cfg, False, error=_describe(e))
        raise
    removed = prune(cfg) if in_backup_folder and not keep_old else []
    if in_backup_folder:
        write_status(cfg, True, path=res["path"].name)
    return {**res, "removed": removed}


def scheduled_backup(store: Store, cfg: Config, metrics: Metrics) -> dict | None:
    """The daily job: back up, prune, record the outcome for health; never raises."""
    try:
        res = run_backup(store, cfg)
    except Exception as e:  # noqa: BLE001 - recorded for health, logged, never raised
        metrics.backups.labels("failed").inc()
        log.error("backup failed: %s", _describe(e))
        return None
    metrics.backups.labels("succeeded").inc()
    log.info(
        "backup %s written in %ss (%d old removed)",
        res["path"].name,
        res["seconds"],
        len(res["removed"]),
    )
    return res
