"""What the commands share: the configuration, the web app and its services, the store alone,
a user by email, the plugin manager.

Each helper imports what it builds when it is called, so importing this module costs nothing.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import click

if TYPE_CHECKING:
    from flask import Flask
    from levqor_kernel.plugins import LevqorPluginManager

    from levqor_host.config import Config
    from levqor_host.services import Services
    from levqor_host.store import Store


def load_config(**overrides: Any) -> Config:
    """The configuration from the environment; a bad setting is a clear error, not a trace."""
    from levqor_host.config import Config

    try:
        return Config.from_env(**overrides)
    except ValueError as e:
        raise click.ClickException(str(e)) from None


def make_app(
    start_workers: bool = False,
    start_scheduler: bool = False,
    cfg: Config | None = None,
    **overrides: Any,
) -> Flask:
    """The web app for ``cfg``, else the environment's configuration (``overrides`` replace
    settings); its workers and scheduler start only when asked."""
    from levqor_host.app import create_app

    return create_app(
        cfg or load_config(**overrides),
        start_workers=start_workers,
        start_scheduler=start_scheduler,
    )


def services(app: Flask) -> Services:
    """The service object ``app`` was built with."""
    return app.extensions["levqor"]


def new_store(cfg: Config) -> Store:
    """The store of ``cfg`` with its vault (the data folder made if missing), neither migrated
    nor checked: what ``levqor db upgrade`` and the vault and backup commands start from."""
    from levqor_host.security.vault import Vault
    from levqor_host.store import Store

    cfg.data_dir.mkdir(parents=True, exist_ok=True)
    return Store(cfg.database.url, Vault.from_config(cfg.data_dir, cfg.security.secret_key))


@contextlib.contextmanager
def open_store(cfg: Config | None = None) -> Iterator[Store]:
    """The store alone (migrated, its vault key checked), for commands that need no plugins
    and no web app; closed when the block ends."""
    store = new_store(cfg or load_config())
    try:
        store.upgrade()
        store.vault_keys.check()
        yield store
    finally:
        store.close()


def find_user(store: Store, email: str | None) -> dict:
    """The user with ``email``, or the first admin when no email is given."""
    if email:
        u = store.users.get_by_email(email)
        if u is None:
            raise click.ClickException(
                f"no user with email {email} (create it: levqor users create)"
            )
        return u
    admins = [u for u in store.users.list() if u.get("is_admin")]
    if not admins:
        raise click.ClickException(
            "no admin user yet: run `levqor serve` once or `levqor users create --admin`"
        )
    return admins[0]


def plugin_manager(build_catalog: bool = True) -> LevqorPluginManager:
    """A plugin manager over the installed plugins with the host's hooks (``build_catalog``
    False skips reading the connectors' descriptions)."""
    from levqor_kernel.plugins import make_plugin_manager

    from levqor_host import hookspecs as host_hookspecs

    return make_plugin_manager(
        extra_hookspecs=[host_hookspecs],
        build_catalog=build_catalog,
        **load_config().plugins.manager_options(),
    )


def problem_lines(problems: list[dict]) -> str:
    """Each problem on its own indented line (``  /pointer: message``), for error messages."""
    return "".join(f"\n  {p.get('pointer') or '/'}: {p.get('message')}" for p in problems)
