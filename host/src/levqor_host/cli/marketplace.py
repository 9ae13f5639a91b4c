"""``levqor marketplace build``: the connector marketplace as a static site."""

from __future__ import annotations

from pathlib import Path

import click

from levqor_host.cli.context import plugin_manager


@click.group("marketplace")
def marketplace() -> None:
    """The connector marketplace, generated from the installed plugins."""


@marketplace.command("build")
@click.argument("out", type=click.Path(file_okay=False, path_type=Path))
def marketplace_build(out: Path) -> None:
    """Write a static marketplace site for the installed plugins to OUT.

    index.json, index.html (searchable) and connectors/<name>.html, with local assets only.
    LEVQOR_PLUGINS / LEVQOR_DISABLE_PLUGINS choose the set of plugins, as for the server.
    """
    from levqor_host.marketplace import build_site, listing

    data = listing(plugin_manager())
    files = build_site(data, out)
    for f in data["failures"]:
        click.echo(
            f"skipped {f['name']} ({f['distribution'] or '?'}): {f['error']}  (see `levqor plugins`)",
            err=True,
        )
    click.echo(f"wrote {len(files)} files for {len(data['connectors'])} connectors to {out}")
