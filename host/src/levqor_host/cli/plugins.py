"""``levqor plugins``: what the plugin manager found."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import click

from levqor_host.cli.context import plugin_manager

if TYPE_CHECKING:
    from levqor_kernel.plugins import LevqorPluginManager


def commands_by_plugin(pm: LevqorPluginManager) -> dict[str, list[str]]:
    """The command names each plugin adds through ``register_commands``."""
    out: dict[str, list[str]] = {}
    for impl in pm.hook.register_commands.get_hookimpls():
        scratch = click.Group()
        try:
            impl.function(cli=scratch)
        except Exception as e:  # noqa: BLE001 - shown, not fatal
            out[impl.plugin_name] = [f"(failed: {e})"]
            continue
        out[impl.plugin_name] = sorted(scratch.commands)
    return out


@click.command()
@click.option("--json", "as_json", is_flag=True)
def plugins(as_json: bool) -> None:
    """Installed plugins: name, version, hooks, connectors, commands, and failures."""
    pm = plugin_manager()
    commands = commands_by_plugin(pm)
    infos = [{**p.to_dict(), "commands": commands.get(p.name, [])} for p in pm.plugin_infos()]
    failures = [f.to_dict() for f in pm.failures]
    if as_json:
        click.echo(json.dumps({"plugins": infos, "failures": failures}, indent=2))
        return
    for p in infos:
        click.echo(f"{p['name']:<12} {p['distribution'] or '-'} {p['version'] or '-'}")
        click.echo(f"    connectors: {', '.join(p['connectors']) or '-'}")
        if p["commands"]:
            click.echo(f"    commands: {', '.join('levqor ' + c for c in p['commands'])}")
        click.echo(f"    hooks: {', '.join(p['hooks'])}")
    for f in failures:
        click.echo(f"FAILED {f['name']} ({f['distribution'] or '?'}): {f['error']}")
