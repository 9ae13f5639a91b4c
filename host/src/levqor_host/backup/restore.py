"""Restoring an archive: ``levqor restore``.

Restore refuses anything that is not a verified Levqor archive (:mod:`levqor_host.backup.verify`),
a database revision this version does not know, or a database of another dialect than the
target's; it never overwrites a database a running Levqor process is using, and moves replaced
files aside (``<data dir>/pre-restore-<UTC time>/``) instead of deleting them. The restored
database is then brought to this version's schema.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from levqor_host import __version__
from levqor_host.backup.common import BackupError, backup_errors, tool
from levqor_host.backup.verify import verify_archive
from levqor_host.store import maintenance

if TYPE_CHECKING:
    from levqor_host.config import Config


class _Aside:
    """Moves files that a restore replaces into one ``pre-restore-<time>`` folder, made on the
    first move."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        self.folder: Path | None = None

    def move(self, p: Path) -> None:
        if not p.exists():
            return
        if self.folder is None:
            self.folder = self.data_dir / f"pre-restore-{self.stamp}"
            self.folder.mkdir()
        shutil.move(str(p), str(self.folder / p.name))


def _target_dialect(cfg: Config, manifest: dict) -> str:
    rev = manifest.get("alembic_revision")
    if rev and rev not in maintenance.known_revisions():
        raise BackupError(
            f"the backup is at database revision {rev}, unknown to Levqor {__version__}: "
            "restore it with the Levqor version that made it (or newer)"
        )
    dialect = cfg.database.url.split(":", 1)[0].split("+", 1)[0]
    if dialect == "postgres":
        dialect = "postgresql"
    if dialect != manifest["dialect"]:
        raise BackupError(
            f"the backup holds a {manifest['dialect']} database but the target "
            f"(DATABASE_URL) is {dialect}"
        )
    return dialect


def _refuse_if_in_use(url: str) -> None:
    why = maintenance.in_use(url)
    if why:
        raise BackupError(f"the target database is in use ({why}): stop Levqor first")


def _restore_sqlite(cfg: Config, copy: Path, aside: _Aside, force: bool) -> None:
    target = maintenance.sqlite_file(cfg.database.url)
    if target.exists() and target.stat().st_size > 0:
        if not force:
            raise BackupError(
                f"{target} already exists: restore into an empty data folder, or pass "
                "--force to replace it (the current files are moved to pre-restore-*/)"
            )
        _refuse_if_in_use(cfg.database.url)
    for suffix in ("", "-wal", "-shm"):
        aside.move(target.with_name(target.name + suffix))
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.move(str(copy), str(target))


def _restore_postgres(cfg: Config, dump: Path, force: bool) -> None:
    if maintenance.table_names(cfg.database.url):
        if not force:
            raise BackupError(
                "the target PostgreSQL database is not empty: use an empty database, or "
                "pass --force to replace its Levqor tables"
            )
        _refuse_if_in_use(cfg.database.url)
    maintenance.restore_postgres(cfg.database.url, dump, tool(cfg, cfg.backup.pg_restore))


def _restore_files(stage: Path, data_dir: Path, aside: _Aside) -> bool:
    """data/, logs/ and the vault key from the archive into ``data_dir``; whether the key
    was in it."""
    for sub in ("data", "logs"):
        src = stage / "files" / sub
        if src.exists():
            aside.move(data_dir / sub)
            shutil.move(str(src), str(data_dir / sub))
    key = stage / "files" / "secret.key"
    if not key.exists():
        return False
    aside.move(data_dir / "secret.key")
    shutil.move(str(key), str(data_dir / "secret.key"))
    os.chmod(data_dir / "secret.key", 0o600)
    return True


@backup_errors
def restore_backup(archive: Path, cfg: Config, *, force: bool = False) -> dict:
    """Restore ``archive`` into ``cfg.data_dir`` and ``cfg.database.url``."""
    archive = Path(archive).resolve()
    data_dir = cfg.data_dir
    data_dir.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=".restore-", dir=data_dir))
    aside = _Aside(data_dir)
    try:
        manifest = verify_archive(archive, cfg=cfg, extract_to=stage)
        dialect = _target_dialect(cfg, manifest)
        if dialect == "sqlite":
            _restore_sqlite(cfg, stage / manifest["database"], aside, force)
        else:
            _restore_postgres(cfg, stage / manifest["database"], force)
        key_restored = _restore_files(stage, data_dir, aside)
        maintenance.upgrade(cfg.database.url)  # an older backup is brought to this schema
        return {
            "archive": str(archive),
            "data_dir": str(data_dir),
            "dialect": manifest["dialect"],
            "created_at": manifest.get("created_at"),
            "row_counts": manifest.get("row_counts"),
            "vault_key_restored": key_restored,
            "moved_aside": str(aside.folder) if aside.folder else None,
        }
    finally:
        shutil.rmtree(stage, ignore_errors=True)
