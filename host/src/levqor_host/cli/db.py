"""``levqor db``: the database's schema."""

from __future__ import annotations

import click

from levqor_host.cli.context import load_config, new_store


@click.group()
def db() -> None:
    """Database commands."""


@db.command("upgrade")
def db_upgrade() -> None:
    """Apply the migrations (also done on every start)."""
    store = new_store(load_config())
    try:
        store.upgrade()
    finally:
        store.close()
    click.echo("database is at the latest revision")
