"""The ``levqor`` command.

This module defines the command group and imports click and nothing heavy: each command imports
what it needs when it runs (Flask, SQLAlchemy, the plugins), so ``levqor --version`` and
``levqor --help`` start at once. Commands defined in other modules are imported when they are
used, and plugin commands (``register_commands``) when a name is not a built-in command.
"""

from __future__ import annotations

import contextlib
import errno
import importlib
import json
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from levqor_host import __version__

if TYPE_CHECKING:
    from flask import Flask

    from levqor_host.services import Services
    from levqor_host.store import Store

ALL_SCOPES = (
    "pipelines:read",
    "pipelines:write",
    "runs:execute",
    "credentials:write",
    "billing",
    "admin",
)


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
    (host hook ``register_commands``) and is looked up again; plugins never shadow a built-in."""

    plugin_commands_loaded = False

    def get_command(self, ctx: click.Context | None, name: str) -> click.Command | None:
        cmd = super().get_command(ctx, name)
        if cmd is None and not self.plugin_commands_loaded:
            self.load_plugin_commands()
            cmd = self.commands.get(name)
        return cmd

    def load_plugin_commands(self) -> None:
        """Let plugins add commands (a broken plugin must not break the CLI: a warning)."""
        self.plugin_commands_loaded = True
        builtins = dict(self.commands)
        try:
            pm = _plugin_manager(build_catalog=False)
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


def _plugin_manager(build_catalog: bool = True) -> Any:
    from levqor_kernel.plugins import make_plugin_manager

    from levqor_host import hookspecs as host_hookspecs

    return make_plugin_manager(extra_hookspecs=[host_hookspecs], build_catalog=build_catalog)


def _config(**overrides: Any) -> Any:
    """The configuration from the environment; a bad setting is a clear error, not a trace."""
    from levqor_host.config import Config

    try:
        return Config.from_env(**overrides)
    except ValueError as e:
        raise click.ClickException(str(e)) from None


def _app(start_workers: bool = False, start_scheduler: bool = False, **overrides: Any) -> Flask:
    from levqor_host.app import create_app

    return create_app(
        _config(**overrides), start_workers=start_workers, start_scheduler=start_scheduler
    )


def _state(app: Flask) -> Services:
    return app.extensions["levqor"]


@contextlib.contextmanager
def _store() -> Iterator[Store]:
    """The store alone (migrated, its vault key checked), for commands that need no plugins
    and no web app."""
    from levqor_host.security.vault import Vault
    from levqor_host.store import Store

    cfg = _config()
    cfg.data_dir.mkdir(parents=True, exist_ok=True)
    store = Store(cfg.database_url, Vault.from_config(cfg.data_dir, cfg.secret_key))
    try:
        store.upgrade()
        store.check_vault()
        yield store
    finally:
        store.close()


def _user(store: Store, email: str | None) -> dict:
    if email:
        u = store.get_user_by_email(email)
        if u is None:
            raise click.ClickException(f"no user with email {email}")
        return u
    admins = [u for u in store.list_users() if u.get("is_admin")]
    if not admins:
        raise click.ClickException(
            "no admin user yet: run `levqor serve` once or `levqor users create --admin`"
        )
    return admins[0]


def _bootstrap_admin(state: Services) -> None:
    """First start of an empty database: an admin user and a one-time key."""
    store = state.store
    if store.count_users() > 0:
        return
    email = os.environ.get("LEVQOR_ADMIN_EMAIL", "admin@localhost")
    user = store.create_user(email, name="Admin", is_admin=True, plan="business")
    key, _ = store.create_api_key(user["id"], name="first key", scopes=list(ALL_SCOPES))
    cfg = state.config
    click.echo("")
    click.echo("  Levqor is set up. An admin user was created: " + email)
    click.echo("  Your API key (shown once, store it now):")
    click.echo(f"    {key}")
    click.echo(
        f"  Dashboard and API: {cfg.base_url}   API docs: {cfg.base_url}/api/v1/openapi.json"
    )
    click.echo("")
    keyfile = cfg.data_dir / "first-key.txt"
    if os.environ.get("LEVQOR_WRITE_FIRST_KEY") == "1":
        keyfile.write_text(key + "\n")
        keyfile.chmod(0o600)


@click.group(
    cls=LevqorGroup,
    lazy_commands={
        "plan": (
            "levqor_host.planner.service:plan_command",
            "Plan a pipeline from a plain-words DESCRIPTION with the AI builder and store it.",
        ),
        "backup": (
            "levqor_host.backup.commands:backup_command",
            "Back up the database, data/ and logs/ into a verified tar.gz archive now.",
        ),
        "restore": (
            "levqor_host.backup.commands:restore_command",
            "Restore a `levqor backup` archive into a data folder (and DATABASE_URL).",
        ),
        "connector": (  # levqor connector new|check
            "levqor_host.scaffold.cli:connector_cli",
            "Write and check connectors (the connector SDK).",
        ),
        "marketplace": (  # levqor marketplace build
            "levqor_host.marketplace:marketplace_cli",
            "The connector marketplace, generated from the installed plugins.",
        ),
    },
    epilog="Plugins can add commands; `levqor plugins` lists them.",
)
@click.version_option(__version__, prog_name="levqor")
def main() -> None:
    """Levqor: self-hosted automation pipelines."""


# ------------------------------------------------------------------ serve / worker / scheduler
def _listen(host: str, port: int) -> Any:
    """A socket bound to ``host:port`` and listening, or a clear error (a port in use)."""
    import socket

    from werkzeug.serving import LISTEN_QUEUE, get_sockaddr, select_address_family

    family = select_address_family(host, port)
    try:
        return socket.create_server(
            get_sockaddr(host, port, family), family=family, backlog=LISTEN_QUEUE
        )
    except OSError as e:
        hint = (
            " (another `levqor serve`?); stop it or choose another --port"
            if (e.errno == errno.EADDRINUSE)
            else ""
        )
        raise click.ClickException(
            f"cannot listen on {host}:{port}: {e.strerror or e}{hint}"
        ) from None


@main.command()
@click.option(
    "--host", default=lambda: os.environ.get("LEVQOR_HOST", "127.0.0.1"), show_default="127.0.0.1"
)
@click.option(
    "--port",
    default=lambda: int(os.environ.get("LEVQOR_PORT", "8000")),
    type=int,
    show_default="8000",
)
@click.option(
    "--prod", is_flag=True, help="Serve with gunicorn (2 workers, 4 threads; GUNICORN_* override)."
)
def serve(host: str, port: int, prod: bool) -> None:
    """Start the API, the embedded workers and (behind a leader lock) the scheduler.

    The port is bound first: a server that cannot listen exits before it touches the database,
    claims a run or fires a trigger."""
    cfg = _config(base_url=os.environ.get("LEVQOR_BASE_URL") or f"http://{host}:{port}")
    os.environ.setdefault("LEVQOR_BASE_URL", cfg.base_url)
    sched = cfg.scheduler in ("auto", "on")
    if prod:
        from levqor_host.wsgi import bind_address, run_gunicorn

        address = bind_address(host, port)
        if address is not None:  # gunicorn binds in its master, before any worker loads the app
            _listen(*address).close()
        from levqor_host.app import create_app

        # migrate and bootstrap once, before any worker process starts
        setup = create_app(cfg, start_workers=False, start_scheduler=False)
        _bootstrap_admin(_state(setup))
        _state(setup).store.close()
        run_gunicorn(host, port, scheduler=sched)
        return
    from werkzeug.serving import make_server

    from levqor_host.app import create_app, start_background

    sock = _listen(host, port)
    app = create_app(cfg, start_workers=False, start_scheduler=False)
    server = make_server(host, port, app, threaded=True, fd=sock.fileno())
    sock.close()  # the server holds its own copy
    st = _state(app)
    _bootstrap_admin(st)
    start_background(app, workers=cfg.executor == "embedded", scheduler=sched)
    click.echo(
        f"levqor {__version__} serving on http://{host}:{port} (development server; use --prod for gunicorn)"
    )
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


@main.command()
@click.option("--threads", type=int, default=None, help="Worker threads (default LEVQOR_WORKERS).")
@click.option(
    "--executor",
    "executor_mode",
    type=click.Choice(["embedded", "celery"]),
    default=None,
    help="embedded (claims from the database) or celery (a Celery worker on LEVQOR_BROKER_URL); "
    "default LEVQOR_EXECUTOR.",
)
@click.option(
    "--pool",
    type=click.Choice(["threads", "prefork", "solo"]),
    default="threads",
    show_default=True,
    help="Celery pool (--executor celery); --threads is its concurrency.",
)
def worker(threads: int | None, executor_mode: str | None, pool: str) -> None:
    """Run queued runs (a separate process beside `levqor serve`)."""
    overrides = {"workers": threads} if threads else {}
    if (executor_mode or _config().executor) == "celery":
        from levqor_host.workers.celery import run_worker  # docs/scaling.md

        cfg = _config(executor="celery", **overrides)

        def build() -> Services:  # the services of a worker: no embedded threads, no scheduler
            from levqor_host.app import create_app

            return create_app(cfg, start_workers=False, start_scheduler=False).extensions["levqor"]

        run_worker(cfg, build, pool=pool, restart=True)
        return
    if executor_mode == "embedded":
        overrides["executor"] = "embedded"
    app = _app(start_workers=True, **overrides)
    st = _state(app)
    click.echo(f"levqor worker {st.executor.worker_id} with {st.executor.threads} threads")
    _wait_for_signal()
    click.echo("stopping: letting in-flight steps finish")
    st.executor.stop()


@main.command()
def scheduler() -> None:
    """Fire cron triggers (exactly one scheduler is active per deployment: a leader lock)."""
    app = _app(start_scheduler=True)
    click.echo("levqor scheduler started")
    _wait_for_signal()
    _state(app).scheduler.stop()


def _wait_for_signal() -> None:
    import signal
    import threading

    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *a: stop.set())
    while not stop.is_set():
        stop.wait(1)


# ------------------------------------------------------------------ db
@main.group()
def db() -> None:
    """Database commands."""


@db.command("upgrade")
def db_upgrade() -> None:
    """Apply the migrations (also done on every start)."""
    from levqor_host.security.vault import Vault
    from levqor_host.store import Store

    cfg = _config()
    cfg.data_dir.mkdir(parents=True, exist_ok=True)
    store = Store(cfg.database_url, Vault.from_config(cfg.data_dir, cfg.secret_key))
    store.upgrade()
    click.echo("database is at the latest revision")


# ------------------------------------------------------------------ plugins
def _commands_by_plugin(pm: Any) -> dict[str, list[str]]:
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


@main.command()
@click.option("--json", "as_json", is_flag=True)
def plugins(as_json: bool) -> None:
    """Installed plugins: name, version, hooks, connectors, commands, and failures."""
    pm = _plugin_manager()
    commands = _commands_by_plugin(pm)
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


# ------------------------------------------------------------------ users and keys
@main.group(
    cls=LazyGroup,
    lazy_commands={
        "set-password": (
            "levqor_host.security.cli:set_password",
            "Set EMAIL's dashboard password (hashed with scrypt; ends the user's sessions).",
        ),
        "login-link": (
            "levqor_host.security.cli:login_link",
            "Print a one-time dashboard login link for EMAIL (valid LEVQOR_LOGIN_LINK_TTL "
            "seconds).",
        ),
    },
)
def users() -> None:
    """Manage users."""


@users.command("create")
@click.argument("email")
@click.option("--name", default=None)
@click.option("--admin", is_flag=True)
@click.option("--plan", default="free", show_default=True)
@click.option("--with-key", is_flag=True, help="Also create an API key and print it once.")
@click.option("--ref", default=None, help="Referral code of the user who referred this one.")
@click.option("--utm-source", default=None)
@click.option("--utm-medium", default=None)
@click.option("--utm-campaign", default=None)
def users_create(
    email: str,
    name: str | None,
    admin: bool,
    plan: str,
    with_key: bool,
    ref: str | None,
    utm_source: str | None,
    utm_medium: str | None,
    utm_campaign: str | None,
) -> None:
    from levqor_host.growth.analytics import ReferralError, record_signup

    st = _state(_app())
    if st.store.get_user_by_email(email):
        raise click.ClickException(f"a user with email {email} exists")
    u = st.store.create_user(email, name=name, is_admin=admin, plan=plan)
    utm = {"utm_source": utm_source, "utm_medium": utm_medium, "utm_campaign": utm_campaign}
    try:
        record_signup(st.ledger, u, ref=ref, utm=utm)
    except ReferralError as e:
        click.echo(f"warning: referral not recorded: {e.message}", err=True)
    click.echo(f"created user {u['id']} ({email})")
    if with_key:
        scopes = list(ALL_SCOPES) if admin else [s for s in ALL_SCOPES if s != "admin"]
        key, _ = st.store.create_api_key(u["id"], name="cli", scopes=scopes)
        click.echo(key)


@users.command("list")
def users_list() -> None:
    with _store() as store:
        for u in store.list_users():
            admin = "  admin" if u.get("is_admin") else ""
            click.echo(f"{u['id']}  {u['email']}  plan={u['plan']}{admin}")


@main.group()
def keys() -> None:
    """API keys and the credential vault key."""


@keys.command("create")
@click.option("--user", "email", default=None, help="Email (default: the first admin).")
@click.option("--name", default="cli")
@click.option("--scope", "scopes", multiple=True, type=click.Choice(ALL_SCOPES))
def keys_create(email: str | None, name: str, scopes: tuple[str, ...]) -> None:
    """Create an API key; it is printed once."""
    with _store() as store:
        u = _user(store, email)
        chosen = list(scopes) or (
            [s for s in ALL_SCOPES if s != "admin"] + (["admin"] if u.get("is_admin") else [])
        )
        key, _ = store.create_api_key(u["id"], name=name, scopes=chosen)
    click.echo(key)


@keys.command("list")
@click.option("--user", "email", default=None)
def keys_list(email: str | None) -> None:
    with _store() as store:
        for k in store.list_api_keys(_user(store, email)["id"]):
            state = "revoked" if k.get("revoked_at") else "active"
            click.echo(
                f"{k['id']}  {k['prefix']}  {k['name']}  {state}  {','.join(k.get('scopes') or [])}"
            )


@keys.command("revoke")
@click.argument("key_id")
@click.option("--user", "email", default=None)
def keys_revoke(key_id: str, email: str | None) -> None:
    with _store() as store:
        if not store.revoke_api_key(_user(store, email)["id"], key_id):
            raise click.ClickException("no such key")
    click.echo("revoked")


@keys.command("rotate")
def keys_rotate() -> None:
    """Re-encrypt every stored secret under a new vault key."""
    from cryptography.fernet import Fernet

    from levqor_host.security.vault import Vault
    from levqor_host.store import Store

    cfg = _config()
    old = Vault.from_config(cfg.data_dir, cfg.secret_key)
    store = Store(cfg.database_url, old)
    store.upgrade()
    store.check_vault()
    new_key = Fernet.generate_key().decode()
    n = store.rotate_vault(Vault([new_key]))
    keyfile = cfg.data_dir / "secret.key"
    if cfg.secret_key:
        click.echo(
            f"re-encrypted {n} secrets. Set LEVQOR_SECRET_KEY to the new key before the next start:"
        )
        click.echo(new_key)
    else:
        tmp = keyfile.with_suffix(".tmp")
        tmp.write_text(new_key + "\n")
        tmp.chmod(0o600)
        os.replace(tmp, keyfile)
        click.echo(f"re-encrypted {n} secrets; the new key is in {keyfile}")


# ------------------------------------------------------------------ pipelines and runs
@main.group()
def pipelines() -> None:
    """List, import and export pipelines (JSON files)."""


@pipelines.command("list")
@click.option("--user", "email", default=None)
def pipelines_list(email: str | None) -> None:
    with _store() as store:
        for p in store.list_pipelines(_user(store, email)["id"]):
            click.echo(f"{p['id']}  v{p['version']}  {p['name']}")


def _read_pipeline_file(f: Path) -> tuple[dict, str, str | None]:
    """(document, name, id or None) of a file in any shape `pipelines import` takes."""
    try:
        data = json.loads(f.read_text())
    except OSError as e:
        raise click.ClickException(f"{f}: cannot read: {e.strerror or e}") from None
    except ValueError as e:
        raise click.ClickException(f"{f}: not JSON: {e}") from None
    name = file_id = None
    if isinstance(data, dict) and isinstance(data.get("pipeline"), dict):
        doc, name, file_id = data["pipeline"], data.get("name"), data.get("id")
    elif isinstance(data, dict) and isinstance(data.get("doc"), dict):
        doc, name, file_id = data["doc"], data.get("name"), data.get("id")
    elif isinstance(data, dict) and ("levqor" in data or "steps" in data):
        doc = data
    else:
        raise click.ClickException(
            f'{f}: not a pipeline document: expected a pipeline ({{"levqor": 1, ...}}), '
            '{"name": ..., "pipeline": {...}} or an export {"id", "name", "version", "doc"}'
        )
    name = name if name is not None else doc.get("name") or f.stem
    if not isinstance(name, str) or not name.strip() or len(name) > 200:
        raise click.ClickException(f"{f}: the name must be a string of 1-200 characters")
    return doc, name, file_id if isinstance(file_id, str) else None


def _ids(ps: list[dict]) -> str:
    return ", ".join(f"{p['id']} (v{p['version']})" for p in ps)


@pipelines.command("import")
@click.argument(
    "files", nargs=-1, type=click.Path(exists=True, dir_okay=False, path_type=Path), required=True
)
@click.option("--user", "email", default=None)
@click.option(
    "--update",
    is_flag=True,
    help="A file whose pipeline exists (same id, else same name) becomes its new version.",
)
@click.option(
    "--new",
    "as_new",
    is_flag=True,
    help="Import every file as a new pipeline, even when one with its id or name exists.",
)
def pipelines_import(
    files: tuple[Path, ...], email: str | None, update: bool, as_new: bool
) -> None:
    """Import pipeline files: a bare pipeline document, {"name": ..., "pipeline": {...}} (what
    the API takes) or an export ({"id", "name", "version", "doc"}: `levqor pipelines export`).

    A file whose pipeline exists already (by the id an export carries, else by name) is
    refused unless --update (save it as that pipeline's new version) or --new (import a copy).
    Every file is checked before any is written."""
    if update and as_new:
        raise click.UsageError("--update and --new exclude each other")
    st = _state(_app())
    u = _user(st.store, email)
    existing = st.store.list_pipelines(u["id"])
    plans: list[tuple[Path, dict, str, dict | None]] = []
    creating: dict[str, Path] = {}
    for f in files:
        doc, name, file_id = _read_pipeline_file(f)
        problems = [p for p in st.runs.validate(u["id"], doc) if "does not exist" not in p["message"]]
        if problems:
            lines = "\n".join(f"  {p['pointer']}: {p['message']}" for p in problems)
            raise click.ClickException(f"{f}: invalid pipeline:\n{lines}")
        target = None
        if not as_new:
            same = [p for p in existing if file_id and p["id"] == file_id]
            same = same or [p for p in existing if p["name"] == name]
            if len(same) > 1:
                raise click.ClickException(
                    f"{f}: several pipelines are named {name!r}: {_ids(same)}; import the "
                    "export of one (it carries its id), or use --new for another copy"
                )
            if same and not update:
                raise click.ClickException(
                    f"{f}: pipeline {name!r} exists as {_ids(same)}: use --update to save "
                    "this file as its new version, or --new to import a copy"
                )
            if not same and name in creating:
                raise click.ClickException(
                    f"{f}: {creating[name]} creates a pipeline named {name!r} too "
                    "(use --new to import both)"
                )
            target = same[0] if same else None
        if target is None:
            creating[name] = f
        plans.append((f, doc, name, target))
    for _f, doc, name, target in plans:
        if target is None:
            p, what = st.store.create_pipeline(u["id"], name, doc), "created"
        elif target["doc"] == doc and target["name"] == name:
            p, what = target, "unchanged"
        else:
            p, what = st.store.update_pipeline(u["id"], target["id"], doc, name=name), "updated"
        if what != "unchanged":
            st.export_pipeline(p)
        click.echo(f"{p['id']}  v{p['version']}  {name}  ({what})")


@pipelines.command("export")
@click.argument("pipeline_id")
@click.option("--user", "email", default=None)
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), default=None)
def pipelines_export(pipeline_id: str, email: str | None, output: Path | None) -> None:
    """Print (or write) a pipeline as {"id", "name", "version", "doc"}, the shape import takes."""
    with _store() as store:
        p = store.get_pipeline(_user(store, email)["id"], pipeline_id)
    if p is None:
        raise click.ClickException("no such pipeline")
    out = {"id": p["id"], "name": p["name"], "version": p["version"], "doc": p["doc"]}
    text = json.dumps(out, indent=2)
    if output:
        output.write_text(text + "\n")
    else:
        click.echo(text)


def _pipeline_by_id_or_name(store: Store, user_id: str, ref: str) -> dict:
    p = store.get_pipeline(user_id, ref)
    if p is not None:
        return p
    matches = [x for x in store.list_pipelines(user_id) if x["name"] == ref]
    if not matches:
        raise click.ClickException(f"no pipeline with id or name {ref!r}")
    if len(matches) > 1:
        raise click.ClickException(
            f"several pipelines are named {ref!r}: {_ids(matches)}; run one by its id"
        )
    return matches[0]


#: seconds a followed run may stay queued before `levqor run --follow` says it waits for a worker
QUEUED_HINT_AFTER = 5.0


def _follow(store: Store, user_id: str, run_id: str, timeout: float) -> None:
    """Print each step transition of the run until it is final (read from the database: the
    server's workers run it); exit 1 unless it succeeded."""
    seen: dict[str, tuple] = {}
    start = time.monotonic()
    hinted = False
    run: dict = {"status": "queued"}
    while time.monotonic() - start < timeout:
        run = store.get_run(user_id, run_id) or run
        for s in run.get("steps", []):
            sig = (s["status"], s["attempts"])
            if seen.get(s["step_id"]) != sig:
                seen[s["step_id"]] = sig
                extra = f"  {s['error'].get('message', '')}" if s.get("error") else ""
                click.echo(f"  {s['step_id']:<16} {s['status']:<10} attempt {s['attempts']}{extra}")
        if run["status"] in ("succeeded", "failed", "cancelled"):
            click.echo(f"run {run_id} {run['status']}")
            if run["status"] != "succeeded":
                sys.exit(1)
            return
        if (
            run["status"] == "queued"
            and not hinted
            and time.monotonic() - start > QUEUED_HINT_AFTER
        ):
            hinted = True
            click.echo(f"run {run_id} waits for a worker ({_NO_WORKER})", err=True)
        time.sleep(0.2)
    if run["status"] == "queued":
        raise click.ClickException(
            f"run {run_id} still queued after {timeout:g} s: no worker claimed it ({_NO_WORKER}); "
            "it stays queued"
        )
    raise click.ClickException(
        f"run {run_id} still {run['status']} after {timeout:g} s (it goes on)"
    )


_NO_WORKER = "is `levqor serve` or `levqor worker` running on this database?"


@main.command("run")
@click.argument("pipeline")
@click.option("--input", "input_json", default="{}", help="Trigger data as JSON.")
@click.option("--user", "email", default=None)
@click.option(
    "--follow",
    is_flag=True,
    help="Show each step as the server's workers run it; exit 1 unless the run succeeds.",
)
@click.option("--timeout", type=float, default=300.0, help="Seconds --follow waits.")
def run_cmd(
    pipeline: str, input_json: str, email: str | None, follow: bool, timeout: float
) -> None:
    """Queue a run of PIPELINE (an id or a name) for the executor (`levqor serve`'s embedded
    workers, `levqor worker` or Celery), as the API does."""
    try:
        data = json.loads(input_json)
    except ValueError as e:
        raise click.ClickException(f"--input is not JSON: {e}") from None
    from levqor_host.errors import ApiError

    st = _state(_app())
    u = _user(st.store, email)
    p = _pipeline_by_id_or_name(st.store, u["id"], pipeline)
    try:
        run, _ = st.runs.start(u, p, data, trigger="manual")
    except ApiError as e:
        detail = ""
        for prob in (e.details or {}).get("problems", []):
            detail += f"\n  {prob['pointer']}: {prob['message']}"
        raise click.ClickException(f"{e.message}{detail}") from None
    finally:
        if st.dispatcher is not None:
            st.dispatcher.close()
    click.echo(f"run {run['id']} queued")
    if follow:
        _follow(st.store, u["id"], run["id"], timeout)


# Plugin commands (register_commands) reach the app state through the group: main.levqor_state()
main.levqor_state = lambda: _state(_app())  # type: ignore[attr-defined]

if __name__ == "__main__":  # pragma: no cover
    main()
