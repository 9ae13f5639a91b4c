"""Hooks the host offers plugins (beside the kernel's). Documented in docs/connectors.md."""

from __future__ import annotations

from typing import Any

from levqor_kernel import hookspec


@hookspec
def register_blueprints(app: Any, state: Any) -> None:
    """Add Flask blueprints (routes) to the host app.

    Called once per app by ``create_app`` after the built-in blueprints, with the app and its
    ``LevqorState``. Subsystem plugins (billing) add their API routes here. Every route
    declares its access with :mod:`levqor_kernel.access` (``requires(scope)``, ``signed_in()``,
    ``session_only()``, ``public(reason)``), which the host enforces before the view runs; an
    undeclared route is closed. ``state.authenticate(scope)`` hands the view the signed-in
    user dict, and ``state.json_body()`` reads a JSON body with the host's one parser
    (400/413/415 rendered the same way).

    .. versionadded:: 0.1
    """


@hookspec
def register_commands(cli: Any) -> None:
    """Add click commands to the ``levqor`` command group.

    Called once, when ``levqor`` is asked for a command that is not built in (``levqor --help``
    loads no plugin; ``levqor plugins`` lists each plugin's commands); a command with a built-in's
    name is ignored. A command reaches the app state (store, ledger, config) with
    ``click.get_current_context().find_root().command.levqor_state()``.

    .. versionadded:: 0.1
    """
