"""The ``levqor`` command."""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

import click

from . import __version__
from .config import Config

ALL_SCOPES = (
    "pipelines:read",
    "pipelines:write",
    "runs:execute",
    "credentials:write",
    "billing",
    "admin",
)


def _app(start_workers: bool = False, start_scheduler: bool = False, **overrides: Any):
    from .app import create_app

    return create_app(
        Config.from_env(**overrides), start_workers=start_workers, start_scheduler=start_scheduler
    )


def _state(app):
    return app.extensions["levqor"]


def _user(state, email: str | None) -> dict:
    store = state.store
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


def _bootstrap_admin(state) -> None:
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


@click.group()
@click.version_option(__version__, prog_name="levqor")
def main() -> None:
    """Levqor: self-hosted automation pipelines."""


# ------------------------------------------------------------------ serve / worker / scheduler
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
    """Start the API, the embedded workers and (behind a leader lock) the scheduler."""
    cfg = Config.from_env(base_url=os.environ.get("LEVQOR_BASE_URL") or f"http://{host}:{port}")
    os.environ.setdefault("LEVQOR_BASE_URL", cfg.base_url)
    from .app import create_app

    # migrate and bootstrap once, before any worker process starts
    setup = create_app(cfg, start_workers=False, start_scheduler=False)
    _bootstrap_admin(_state(setup))
    _state(setup).store.close()
    sched = cfg.scheduler in ("auto", "on")
    if not prod:
        app = create_app(cfg, start_workers=cfg.executor == "embedded", start_scheduler=sched)
        click.echo(
            f"levqor {__version__} serving on http://{host}:{port} (development server; use --prod for gunicorn)"
        )
        app.run(host=host, port=port, threaded=True, use_reloader=False)
        return
    from .wsgi import run_gunicorn

    run_gunicorn(host, port, scheduler=sched)


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
    if (executor_mode or Config.from_env().executor) == "celery":
        from .celery_executor import run_worker  # docs/scaling.md

        try:
            cfg = Config.from_env(executor="celery", **overrides)
        except ValueError as e:
            raise click.ClickException(str(e)) from None
        run_worker(cfg, pool=pool)
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
    from .security.vault import Vault
    from .store import Store

    cfg = Config.from_env()
    cfg.data_dir.mkdir(parents=True, exist_ok=True)
    store = Store(cfg.database_url, Vault.from_config(cfg.data_dir, cfg.secret_key))
    store.upgrade()
    click.echo("database is at the latest revision")


# ------------------------------------------------------------------ plugins
@main.command()
@click.option("--json", "as_json", is_flag=True)
def plugins(as_json: bool) -> None:
    """Installed plugins: name, version, hooks, connectors, and failures."""
    from levqor_kernel.plugins import make_plugin_manager

    from . import hookspecs as host_hookspecs

    pm = make_plugin_manager(extra_hookspecs=[host_hookspecs])
    infos = [p.to_dict() for p in pm.plugin_infos()]
    failures = [f.to_dict() for f in pm.failures]
    if as_json:
        click.echo(json.dumps({"plugins": infos, "failures": failures}, indent=2))
        return
    for p in infos:
        click.echo(f"{p['name']:<12} {p['distribution'] or '-'} {p['version'] or '-'}")
        click.echo(f"    connectors: {', '.join(p['connectors']) or '-'}")
        click.echo(f"    hooks: {', '.join(p['hooks'])}")
    for f in failures:
        click.echo(f"FAILED {f['name']} ({f['distribution'] or '?'}): {f['error']}")


# ------------------------------------------------------------------ users and keys
@main.group()
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
    from .analytics import ReferralError, record_signup

    st = _state(_app())
    if st.store.get_user_by_email(email):
        raise click.ClickException(f"a user with email {email} exists")
    u = st.store.create_user(email, name=name, is_admin=admin, plan=plan)
    utm = {"utm_source": utm_source, "utm_medium": utm_medium, "utm_campaign": utm_campaign}
    try:
        record_signup(st, u, ref=ref, utm=utm)
    except ReferralError as e:
        click.echo(f"warning: referral not recorded: {e.message}", err=True)
    click.echo(f"created user {u['id']} ({email})")
    if with_key:
        scopes = list(ALL_SCOPES) if admin else [s for s in ALL_SCOPES if s != "admin"]
        key, _ = st.store.create_api_key(u["id"], name="cli", scopes=scopes)
        click.echo(key)


@users.command("list")
def users_list() -> None:
    st = _state(_app())
    for u in st.store.list_users():
        click.echo(
            f"{u['id']}  {u['email']}  plan={u['plan']}{'  admin' if u.get('is_admin') else ''}"
        )


from .security.cli import add_user_commands  # noqa: E402

add_user_commands(users)  # users set-password, users login-link


@main.group()
def keys() -> None:
    """API keys and the credential vault key."""


@keys.command("create")
@click.option("--user", "email", default=None, help="Email (default: the first admin).")
@click.option("--name", default="cli")
@click.option("--scope", "scopes", multiple=True, type=click.Choice(ALL_SCOPES))
def keys_create(email: str | None, name: str, scopes: tuple[str, ...]) -> None:
    """Create an API key; it is printed once."""
    st = _state(_app())
    u = _user(st, email)
    chosen = list(scopes) or (
        [s for s in ALL_SCOPES if s != "admin"] + (["admin"] if u.get("is_admin") else [])
    )
    key, row = st.store.create_api_key(u["id"], name=name, scopes=chosen)
    click.echo(key)


@keys.command("list")
@click.option("--user", "email", default=None)
def keys_list(email: str | None) -> None:
    st = _state(_app())
    for k in st.store.list_api_keys(_user(st, email)["id"]):
        state = "revoked" if k.get("revoked_at") else "active"
        click.echo(
            f"{k['id']}  {k['prefix']}  {k['name']}  {state}  {','.join(k.get('scopes') or [])}"
        )


@keys.command("revoke")
@click.argument("key_id")
@click.option("--user", "email", default=None)
def keys_revoke(key_id: str, email: str | None) -> None:
    st = _state(_app())
    if not st.store.revoke_api_key(_user(st, email)["id"], key_id):
        raise click.ClickException("no such key")
    click.echo("revoked")


@keys.command("rotate")
def keys_rotate() -> None:
    """Re-encrypt every stored secret under a new vault key."""
    from cryptography.fernet import Fernet

    from .security.vault import Vault

    cfg = Config.from_env()
    from .store import Store

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
    st = _state(_app())
    for p in st.store.list_pipelines(_user(st, email)["id"]):
        click.echo(f"{p['id']}  v{p['version']}  {p['name']}")


@pipelines.command("import")
@click.argument(
    "files", nargs=-1, type=click.Path(exists=True, dir_okay=False, path_type=Path), required=True
)
@click.option("--user", "email", default=None)
def pipelines_import(files: tuple[Path, ...], email: str | None) -> None:
    """Import pipeline documents (a bare document, or an export with "doc")."""
    st = _state(_app())
    u = _user(st, email)
    for f in files:
        try:
            data = json.loads(f.read_text())
        except ValueError as e:
            raise click.ClickException(f"{f}: not JSON: {e}") from None
        doc = data.get("doc", data) if isinstance(data, dict) else data
        problems = [p for p in st.validate(u["id"], doc) if "does not exist" not in p["message"]]
        if problems:
            lines = "\n".join(f"  {p['pointer']}: {p['message']}" for p in problems)
            raise click.ClickException(f"{f}: invalid pipeline:\n{lines}")
        name = (data.get("name") if isinstance(data, dict) else None) or doc.get("name") or f.stem
        p = st.store.create_pipeline(u["id"], name, doc)
        st.export_pipeline(p)
        click.echo(f"{p['id']}  {name}")


@pipelines.command("export")
@click.argument("pipeline_id")
@click.option("--user", "email", default=None)
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), default=None)
def pipelines_export(pipeline_id: str, email: str | None, output: Path | None) -> None:
    st = _state(_app())
    p = st.store.get_pipeline(_user(st, email)["id"], pipeline_id)
    if p is None:
        raise click.ClickException("no such pipeline")
    text = json.dumps({"name": p["name"], "doc": p["doc"]}, indent=2)
    if output:
        output.write_text(text + "\n")
    else:
        click.echo(text)


@main.command("run")
@click.argument("pipeline")
@click.option("--input", "input_json", default="{}", help="Trigger data as JSON.")
@click.option("--user", "email", default=None)
@click.option("--follow", is_flag=True, help="Run here and show each step as it happens.")
@click.option("--timeout", type=float, default=300.0)
def run_cmd(
    pipeline: str, input_json: str, email: str | None, follow: bool, timeout: float
) -> None:
    """Start a run of PIPELINE (an id or a name)."""
    from .errors import ApiError

    try:
        data = json.loads(input_json)
    except ValueError as e:
        raise click.ClickException(f"--input is not JSON: {e}") from None
    app = _app(start_workers=follow)
    st = _state(app)
    u = _user(st, email)
    p = st.store.get_pipeline(u["id"], pipeline)
    if p is None:
        matches = [x for x in st.store.list_pipelines(u["id"]) if x["name"] == pipeline]
        if len(matches) != 1:
            raise click.ClickException(f"no single pipeline with id or name {pipeline!r}")
        p = st.store.get_pipeline(u["id"], matches[0]["id"])
    try:
        run, _ = st.start_run(u, p, data, trigger="manual")
    except ApiError as e:
        detail = ""
        for prob in (e.details or {}).get("problems", []):
            detail += f"\n  {prob['pointer']}: {prob['message']}"
        raise click.ClickException(f"{e.message}{detail}") from None
    click.echo(f"run {run['id']} queued")
    if not follow:
        return
    seen: dict[str, tuple] = {}
    deadline = time.monotonic() + timeout
    final = None
    while time.monotonic() < deadline:
        r = st.store.get_run(u["id"], run["id"])
        for s in r.get("steps", []):
            sig = (s["status"], s["attempts"])
            if seen.get(s["step_id"]) != sig:
                seen[s["step_id"]] = sig
                extra = ""
                if s.get("error"):
                    extra = f"  {s['error'].get('message', '')}"
                click.echo(f"  {s['step_id']:<16} {s['status']:<10} attempt {s['attempts']}{extra}")
        if r["status"] in ("succeeded", "failed", "cancelled"):
            final = r
            break
        time.sleep(0.1)
    st.executor.stop(2.0)
    if final is None:
        raise click.ClickException("timed out waiting for the run")
    click.echo(f"run {final['id']} {final['status']}")
    if final["status"] != "succeeded":
        sys.exit(1)


from .planner import plan_command  # noqa: E402

main.add_command(plan_command)
from .backup import backup_command, restore_command  # noqa: E402

main.add_command(backup_command)
main.add_command(restore_command)

from .marketplace import marketplace_cli  # noqa: E402
from .scaffold.cli import connector_cli  # noqa: E402

main.add_command(connector_cli)  # levqor connector new|check
main.add_command(marketplace_cli)  # levqor marketplace build


# Plugin commands (register_commands) reach the app state through the group: main.levqor_state()
main.levqor_state = lambda: _state(_app())  # type: ignore[attr-defined]


def _plugin_commands() -> None:
    """Let plugins add commands (host hook ``register_commands``)."""
    try:
        from levqor_kernel.plugins import make_plugin_manager

        from . import hookspecs as host_hookspecs

        pm = make_plugin_manager(extra_hookspecs=[host_hookspecs])
        pm.hook.register_commands(cli=main)
    except Exception as e:  # noqa: BLE001 - a broken plugin must not break the CLI
        click.echo(f"warning: plugin commands not loaded: {e}", err=True)


_plugin_commands()

if __name__ == "__main__":  # pragma: no cover
    main()
