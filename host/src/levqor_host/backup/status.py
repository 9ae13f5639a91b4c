"""The ``backup`` part of ``/api/v1/ops/health``: scheduled backups on or off, the tools and the
folder they need, the newest archive and its age, and the outcome of the last backup."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from levqor_host.backup.common import BackupError, archive_time, list_backups, read_status, tool

if TYPE_CHECKING:
    from levqor_host.config import Config


def _folder_problem(cfg: Config) -> str | None:
    """Why an archive could not be written to the backup folder now, or None."""
    probe = cfg.backups_dir / f".probe-{uuid.uuid4().hex[:6]}"
    try:
        cfg.backups_dir.mkdir(parents=True, exist_ok=True)
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        return (
            f"the backup folder {cfg.backups_dir} is not writable: {e.strerror or type(e).__name__}"
        )
    return None


def _newest(cfg: Config, out: dict[str, Any]) -> None:
    archives = list_backups(cfg)
    if not archives:
        out["latest"] = None
        out["note"] = "no backup yet"
        return
    latest = archives[-1]
    age = (datetime.now(UTC) - archive_time(latest)).total_seconds()
    out.update(latest=latest.name, age_seconds=round(age, 1), count=len(archives))
    if out["enabled"] and age > cfg.backup.max_age_hours * 3600:
        out.update(
            ok=False,
            error=f"the newest backup is {age / 3600:.1f} h old "
            f"(> LEVQOR_BACKUP_MAX_AGE_HOURS={cfg.backup.max_age_hours:g})",
        )


def backup_status(cfg: Config, dialect: str, next_fire: str | None = None) -> dict:
    """The ``backup`` part of /api/v1/ops/health."""
    out: dict[str, Any] = {"ok": True, "enabled": cfg.backup.cron.lower() != "off"}
    if not out["enabled"]:
        out["note"] = "scheduled backups are off (LEVQOR_BACKUP_CRON=off)"
    out["cron"] = cfg.backup.cron
    if next_fire:
        out["next_fire"] = next_fire
    if dialect == "postgresql":
        try:
            tool(cfg, cfg.backup.pg_dump)
        except BackupError as e:
            out.update(ok=False, error=str(e))
            return out
    if out["enabled"]:
        problem = _folder_problem(cfg)
        if problem:
            out.update(ok=False, error=problem)
            return out
    _newest(cfg, out)
    status = read_status(cfg)
    if status is not None:
        out["last_run"] = status
        if not status.get("ok"):
            out.update(ok=False, error=f"the last backup failed: {status.get('error')}")
    return out
