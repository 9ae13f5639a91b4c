"""What making, verifying and restoring archives share: the archive format and names, the
error, checksums, the PostgreSQL client tools, the list of archives and the last run's outcome.

An archive is ``<backups>/levqor-backup-<UTC time>-<4 hex>.tar.gz`` (mode 0600) holding
``manifest.json`` (format ``levqor-backup`` v1), the database copy and the data files.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import shutil
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, ParamSpec, TypeVar

from levqor_host.store.maintenance import MaintenanceError

if TYPE_CHECKING:
    from levqor_host.config import Config

log = logging.getLogger("levqor.backup")

FORMAT = "levqor-backup"
FORMAT_VERSION = 1
PREFIX = "levqor-backup-"
SUFFIX = ".tar.gz"
STATUS_FILE = "last-run.json"
STAMP = "%Y%m%dT%H%M%S%fZ"

P = ParamSpec("P")
R = TypeVar("R")


class BackupError(Exception):
    """A backup could not be made, or an archive is refused (the message says why)."""


def backup_errors(fn: Callable[P, R]) -> Callable[P, R]:
    """The database's own refusals (:class:`MaintenanceError`) leave ``fn`` as BackupError."""

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return fn(*args, **kwargs)
        except MaintenanceError as e:
            raise BackupError(str(e)) from None

    return wrapper


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def tool(cfg: Config, name: str) -> str:
    """The path of a PostgreSQL client tool (``pg_dump``, ``pg_restore``) on the PATH."""
    found = shutil.which(name, path=cfg.backup.path)
    if not found:
        raise BackupError(
            f"{name} not found on PATH: install the PostgreSQL client tools (the server's "
            f"major version or newer) or set LEVQOR_{Path(name).name.upper()} to its path"
        )
    return found


def list_backups(cfg: Config) -> list[Path]:
    """The archives in the backup folder, oldest first."""
    d = cfg.backups_dir
    if not d.is_dir():
        return []
    return sorted(p for p in d.glob(f"{PREFIX}*{SUFFIX}") if p.is_file())


def archive_name(created: datetime) -> str:
    return f"{PREFIX}{created.strftime(STAMP)}-{uuid.uuid4().hex[:4]}{SUFFIX}"


def archive_time(p: Path) -> datetime:
    """When an archive was made: from its name, else its file's modification time."""
    stamp = p.name[len(PREFIX) : -len(SUFFIX)].split("-")[0]
    try:
        return datetime.strptime(stamp, STAMP).replace(tzinfo=UTC)
    except ValueError:
        return datetime.fromtimestamp(p.stat().st_mtime, UTC)


def status_path(cfg: Config) -> Path:
    return cfg.backups_dir / STATUS_FILE


def write_status(cfg: Config, ok: bool, **details: str) -> None:
    """Record the outcome of the last backup for /api/v1/ops/health (``path`` or ``error``)."""
    status = {"ok": ok, "ts": datetime.now(UTC).isoformat(), **details}
    try:
        cfg.backups_dir.mkdir(parents=True, exist_ok=True)
        tmp = cfg.backups_dir / f".{STATUS_FILE}.{uuid.uuid4().hex[:6]}"
        tmp.write_text(json.dumps(status))
        os.replace(tmp, status_path(cfg))
    except OSError:
        log.exception("could not record the backup status")


def read_status(cfg: Config) -> dict | None:
    try:
        return json.loads(status_path(cfg).read_text())
    except (OSError, ValueError):
        return None
