"""``levqor connector new|check``: the connector SDK's scaffold and contract check."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from levqor_host.scaffold import (
    TRIGGER_KINDS,
    ScaffoldError,
    check,
    default_parent,
    scaffold,
)


def _config() -> Any:
    from levqor_host.config import Config

    try:
        return Config.from_env()
    except ValueError as e:
        raise click.ClickException(str(e)) from None


@click.group("connector")
def connector() -> None:
    """Write and check connectors (the connector SDK)."""


@connector.command("new")
@click.argument("name")
@click.option(
    "--dir",
    "parent",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Folder to create levqor-NAME/ in (default: plugins/ inside a Levqor checkout, "
    "else the current folder).",
)
@click.option(
    "--author",
    default=lambda: _config().cli.author,
    show_default="Your Name",
)
@click.option(
    "--trigger",
    "triggers",
    type=click.Choice(TRIGGER_KINDS),
    multiple=True,
    help="Add a trigger of this kind (repeat for both), with a fake API and the trigger kit's tests.",
)
@click.option(
    "--oauth",
    is_flag=True,
    help="Add an OAuth2 credential variant (a Connect button) beside the API token.",
)
def connector_new(
    name: str, parent: Path | None, author: str, triggers: tuple[str, ...], oauth: bool
) -> None:
    """Create levqor-NAME/: a working connector with tests, ready for pip install -e."""
    where = parent if parent is not None else default_parent(Path.cwd())
    try:
        target = scaffold(name, where, author=author, triggers=triggers, oauth=oauth)
    except ScaffoldError as e:
        raise click.ClickException(str(e)) from None
    click.echo(f"created {target}")
    click.echo("next:")
    click.echo(f"  pip install -e {target}")
    click.echo(f"  pytest {target}")
    click.echo("  levqor plugins")
    click.echo(f"  levqor connector check {target}")


@connector.command("check")
@click.argument("target")
@click.option("--json", "as_json", is_flag=True)
@click.option("--no-tests", is_flag=True, help="For a folder: skip running its own contract tests.")
def connector_check(target: str, as_json: bool, no_tests: bool) -> None:
    """Run the contract kit against a connector folder or an installed distribution.

    A folder (with pyproject.toml) is imported from its src/ without installing it; its own
    ConnectorContract tests run too (pytest -k levqor_contract). Otherwise TARGET is the name
    of an installed distribution. Exits 1 when something must be fixed.
    """
    report = check(target, run_tests=not no_tests)
    if as_json:
        click.echo(json.dumps(report.to_dict(), indent=2))
    else:
        click.echo(f"{report.dist or target}: {len(report.checks)} checks")
        for n in report.notes:
            click.echo(f"  note: {n}")
        if report.ok:
            click.echo("  ok: nothing to fix")
        else:
            click.echo(f"  {len(report.problems)} to fix:")
            for p in report.problems:
                click.echo("  - " + p.replace("\n", "\n    "))
    if not report.ok:
        raise SystemExit(1)
