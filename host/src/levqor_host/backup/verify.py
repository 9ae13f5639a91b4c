"""Verifying archives: every archive after it is written, and before any restore.

An archive passes when it is a gzip tar of plain files with safe names, its manifest is a
``levqor-backup`` manifest of a supported version listing a database, it holds exactly the files
the manifest lists with their SHA-256, and its database copy passes its checks (SQLite: integrity
and the manifest's row counts; PostgreSQL: ``pg_restore --list``, when the tool is installed).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tarfile
import tempfile
import zlib
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING

from levqor_host.backup.common import FORMAT, FORMAT_VERSION, BackupError
from levqor_host.store import maintenance

if TYPE_CHECKING:
    from levqor_host.config import Config


def _open_tar(path: Path) -> tarfile.TarFile:
    try:
        return tarfile.open(path, mode="r:gz")
    except (tarfile.TarError, OSError, EOFError) as e:
        raise BackupError(f"{path.name} is not a gzip tar archive: {e}") from None


def _safe_name(name: str) -> bool:
    p = PurePosixPath(name)
    return not p.is_absolute() and ".." not in p.parts and name == str(p)


def _members(tar: tarfile.TarFile, path: Path) -> dict[str, tarfile.TarInfo]:
    """The archive's entries by name: plain files with safe names, each once."""
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
    return by_name


def _manifest(tar: tarfile.TarFile, by_name: dict[str, tarfile.TarInfo], path: Path) -> dict:
    """The manifest, checked: format, version, a database, no file it does not list."""
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
    return manifest


def _extract_checked(
    tar: tarfile.TarFile, member: tarfile.TarInfo, out: Path, sha: str | None, path: Path
) -> None:
    """Extract one listed file to ``out`` (mode 0600) and check its SHA-256."""
    out.parent.mkdir(parents=True, exist_ok=True)
    h = hashlib.sha256()
    try:
        src = tar.extractfile(member)
        with open(out, "wb") as f:
            while chunk := src.read(1 << 20):  # type: ignore[union-attr]
                h.update(chunk)
                f.write(chunk)
    except (tarfile.TarError, OSError, EOFError, zlib.error) as e:
        raise BackupError(f"{path.name}: {member.name} cannot be read: {e}") from None
    os.chmod(out, 0o600)
    if h.hexdigest() != sha:
        raise BackupError(f"{path.name}: checksum mismatch for {member.name}")


def _check_database(manifest: dict, db: Path, path: Path, cfg: Config | None) -> None:
    dialect = manifest.get("dialect")
    try:
        if dialect == "sqlite":
            if maintenance.check_sqlite_copy(db) != manifest.get("row_counts"):
                raise BackupError(f"{path.name}: row counts differ from the manifest")
        elif dialect == "postgresql":
            pg_restore = shutil.which(
                cfg.backup.pg_restore if cfg else "pg_restore", path=(cfg.backup.path if cfg else None)
            )
            if pg_restore:
                maintenance.check_postgres_dump(db, pg_restore)
        else:
            raise BackupError(f"{path.name}: unknown dialect {dialect!r}")
    except maintenance.MaintenanceError as e:
        raise BackupError(f"{path.name}: {e}") from None


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
            by_name = _members(tar, path)
            manifest = _manifest(tar, by_name, path)
            for name, meta in manifest["files"].items():
                if not _safe_name(name) or name not in by_name:
                    raise BackupError(f"{path.name}: {name} is listed but missing")
                _extract_checked(tar, by_name[name], extract_to / name, meta.get("sha256"), path)
        _check_database(manifest, extract_to / manifest["database"], path, cfg)
        return manifest
    finally:
        if tmp_dir is not None:
            shutil.rmtree(tmp_dir, ignore_errors=True)
