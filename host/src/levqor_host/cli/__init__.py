"""The ``levqor`` command.

This package's ``__init__`` defines the command group and imports click and nothing heavy. The
table below names every command, the module that defines it and its help: ``levqor --help``
lists them from the table, and a command's module is imported only when that command runs, so
``levqor --version`` and ``levqor --help`` start at once. Each command module imports what it
needs (Flask, SQLAlchemy, the plugins) inside its commands. Plugin commands
(``register_commands``) are loaded when a name is not a built-in command.

To add a command: write it in a module here (or a new one), add a row to :data:`COMMANDS`
with the first paragraph of its docstring as the help.
"""

from __future__ import annotations

import click

from levqor_host import __version__
from levqor_host.cli.group import LevqorGroup

#: name -> ("module:attribute", help listed by ``levqor --help``)
COMMANDS: dict[str, tuple[str, str]] = {
    "serve": (
        "levqor_host.cli.serve:serve",
        "Start the API, the embedded workers and (behind a leader lock) the scheduler.",
    ),
    "worker": (
        "levqor_host.cli.serve:worker",
        "Run queued runs (a separate process beside `levqor serve`).",
    ),
    "scheduler": (
        "levqor_host.cli.serve:scheduler",
        "Fire cron triggers (exactly one scheduler is active per deployment: a leader lock).",
    ),
    "db": ("levqor_host.cli.db:db", "Database commands."),
    "users": ("levqor_host.cli.users:users", "Manage users."),
    "keys": ("levqor_host.cli.keys:keys", "API keys and the credential vault key."),
    "pipelines": (
        "levqor_host.cli.pipelines:pipelines",
        "List, import and export pipelines (JSON files).",
    ),
    "run": (
        "levqor_host.cli.runs:run_cmd",
        "Queue a run of PIPELINE (an id or a name) for the executor (`levqor serve`'s embedded "
        "workers, `levqor worker` or Celery), as the API does.",
    ),
    "plan": (
        "levqor_host.cli.plan:plan_cmd",
        "Plan a pipeline from a plain-words DESCRIPTION with the AI builder and store it.",
    ),
    "backup": (
        "levqor_host.cli.backup:backup_cmd",
        "Back up the database, data/ and logs/ into a verified tar.gz archive now.",
    ),
    "restore": (
        "levqor_host.cli.backup:restore_cmd",
        "Restore a `levqor backup` archive into a data folder (and DATABASE_URL).",
    ),
    "plugins": (
        "levqor_host.cli.plugins:plugins",
        "Installed plugins: name, version, hooks, connectors, commands, and failures.",
    ),
    "marketplace": (
        "levqor_host.cli.marketplace:marketplace",
        "The connector marketplace, generated from the installed plugins.",
    ),
    "connector": (
        "levqor_host.cli.connector:connector",
        "Write and check connectors (the connector SDK).",
    ),
}


@click.group(
    cls=LevqorGroup,
    lazy_commands=COMMANDS,
    epilog="Plugins can add commands; `levqor plugins` lists them.",
)
@click.version_option(__version__, prog_name="levqor")
def main() -> None:
    """Levqor: self-hosted automation pipelines."""


__all__ = ["COMMANDS", "main"]
