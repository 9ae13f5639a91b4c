"""Click groups whose commands are imported when they are used.

``levqor --help`` lists every command with its help from a table, so listing them imports
none of the modules that define them; a command's module is imported when that command runs
(or its own ``--help`` is asked for).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

import click

if TYPE_CHECKING:
    from levqor_host.services import Services


class LazyGroup(click.Group):
    """A click group whose commands defined in other modules are imported when one is used.

    ``lazy_commands`` maps a command name to ``("module:attribute", help)``; ``help`` is what
    ``--help`` lists, so listing the commands imports none of them."""

    def __init__(
        self, *args: Any, lazy_commands: dict[str, tuple[str, str]] | None = None, **kw: Any
    ) -> None:
        super().__init__(*args, **kw)
        self.lazy_commands = dict(lazy_commands or {})

    def list_commands(self, ctx: click.Context | None) -> list[str]:
        return sorted({*self.commands, *self.lazy_commands})

    def get_command(self, ctx: click.Context | None, name: str) -> click.Command | None:
        if name not in self.commands and name in self.lazy_commands:
            module, _, attr = self.lazy_commands[name][0].partition(":")
            self.add_command(getattr(importlib.import_module(module), attr), name)
        return self.commands.get(name)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        names = [
            n
            for n in self.list_commands(ctx)
            if n not in self.commands or not self.commands[n].hidden
        ]
        if not names:
            return
        limit = formatter.width - 6 - max(len(n) for n in names)
        rows = []
        for n in names:  # a command not imported yet: a stand-in with its help
            cmd = self.commands.get(n) or click.Command(n, help=self.lazy_commands[n][1])
            rows.append((n, cmd.get_short_help_str(limit)))
        with formatter.section("Commands"):
            formatter.write_dl(rows)


class LevqorGroup(LazyGroup):
    """The ``levqor`` group: a name that is no built-in command loads the plugins' commands
    (host hook ``register_commands``) and is looked up again; plugins never shadow a built-in.

    Plugin commands reach the host's services with ``levqor_state()`` (the kernel's
    ``HostCommandGroup``)."""

    plugin_commands_loaded = False

    def get_command(self, ctx: click.Context | None, name: str) -> click.Command | None:
        cmd = super().get_command(ctx, name)
        if cmd is None and not self.plugin_commands_loaded:
            self.load_plugin_commands()
            cmd = self.commands.get(name)
        return cmd

    def load_plugin_commands(self) -> None:
        """Let plugins add commands (a broken plugin must not break the CLI: a warning)."""
        from levqor_host.cli.context import plugin_manager

        self.plugin_commands_loaded = True
        builtins = dict(self.commands)
        try:
            pm = plugin_manager(build_catalog=False)
            pm.hook.register_commands(cli=self)
        except Exception as e:  # noqa: BLE001
            click.echo(f"warning: plugin commands not loaded: {e}", err=True)
        for name in {*builtins, *self.lazy_commands}:
            if self.commands.get(name) is not builtins.get(name):
                click.echo(f"warning: a plugin's command {name!r} is ignored (built in)", err=True)
                if name in builtins:
                    self.commands[name] = builtins[name]
                else:
                    del self.commands[name]

    def levqor_state(self) -> Services:
        """The host's services for the environment's configuration (a web app is built)."""
        from levqor_host.cli.context import make_app, services

        return services(make_app())
