"""``levqor backup`` and ``levqor restore``: options in, one call to the backup package, a
summary out."""

from __future__ import annotations

from pathlib import Path

import click

from levqor_host.cli.context import load_config, new_store


@click.command("backup")
@click.option(
    "--dest",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Folder for the archive (default LEVQOR_BACKUP_DIR or <data dir>/backups).",
)
@click.option("--no-prune", is_flag=True, help="Keep archives older than the retention.")
def backup_cmd(dest: Path | None, no_prune: bool) -> None:
    """Back up the database, data/ and logs/ into a verified tar.gz archive now."""
    from levqor_host.backup.common import BackupError
    from levqor_host.backup.create import run_backup

    cfg = load_config()
    store = new_store(cfg)
    try:
        res = run_backup(store, cfg, dest_dir=dest, keep_old=no_prune)
    except BackupError as e:
        raise click.ClickException(str(e)) from None
    finally:
        store.close()
    m = res["manifest"]
    rows = sum(m["row_counts"].values())
    click.echo(
        f"backup {res['path']} ({res['path'].stat().st_size} bytes, {rows} rows, "
        f"{len(m['files'])} files, revision {m['alembic_revision']}) in {res['seconds']}s"
    )
    for p in res["removed"]:
        click.echo(f"removed {p.name} (older than {cfg.backup.retention_days} days)")


@click.command("restore")
@click.argument("archive", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Data folder to restore into (default LEVQOR_DATA_DIR).",
)
@click.option("--force", is_flag=True, help="Replace an existing database (moved aside first).")
def restore_cmd(archive: Path, data_dir: Path | None, force: bool) -> None:
    """Restore a `levqor backup` archive into a data folder (and DATABASE_URL)."""
    from levqor_host.backup.common import BackupError
    from levqor_host.backup.restore import restore_backup
    from levqor_host.config import Config

    cfg = Config.from_env() if data_dir is None else Config.from_env(data_dir=data_dir.expanduser())
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
    if cfg.security.secret_key and (cfg.data_dir / "secret.key").exists():
        click.echo(
            "note: LEVQOR_SECRET_KEY is set and takes precedence over the restored secret.key"
        )
