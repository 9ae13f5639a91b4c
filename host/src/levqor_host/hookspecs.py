"""Hooks the host offers plugins (beside the kernel's), all in this module. Documented in
docs/connectors.md. What plugins receive is typed in :mod:`levqor_kernel.host`."""

from __future__ import annotations

from typing import Any

from levqor_kernel import hookspec
from levqor_kernel.host import DashboardPage, Host


@hookspec
def register_blueprints(app: Any, state: Host) -> None:
    """Add Flask blueprints (routes) to the host app.

    Called once per app by ``create_app`` after the built-in blueprints, with the app and its
    ``Services``. Subsystem plugins (billing) add their API routes here. Every route
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
    ``click.get_current_context().find_root().command.levqor_state()`` (the group is a
    :class:`levqor_kernel.host.HostCommandGroup`).

    .. versionadded:: 0.1
    """


@hookspec
def register_dashboard_pages() -> list[DashboardPage]:
    """Add pages to the web dashboard, each with its navigation entry.

    Called once per app by ``create_app``, after ``register_blueprints``. Returns
    :class:`levqor_kernel.host.DashboardPage` declarations: a path, a template and an ES
    module the plugin's blueprint serves (``template_folder``, ``static_folder``), a title, a
    navigation label and its order. The host serves the page as an HTML shell under its
    navigation and strict Content-Security-Policy; a page whose path or name is taken is
    skipped with a warning. Without the plugin, the page and its entry are gone.

    .. versionadded:: 0.2
    """
