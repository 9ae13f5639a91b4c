"""``levqor serve``, ``levqor worker`` and ``levqor scheduler``: the long-running processes."""

from __future__ import annotations

import errno
import socket
from typing import TYPE_CHECKING, Any

import click

from levqor_host import __version__
from levqor_host.cli.context import load_config, make_app, services

if TYPE_CHECKING:
    from levqor_host.services import Services


def bootstrap_admin(state: Services) -> None:
    """First start of an empty database: an admin user and a one-time key."""
    from levqor_host.security.scopes import SCOPES

    store = state.store
    if store.users.count() > 0:
        return
    cfg = state.config
    email = cfg.cli.admin_email
    user = store.users.create(email, name="Admin", is_admin=True, plan="business")
    key, _ = store.api_keys.create(user["id"], name="first key", scopes=list(SCOPES))
    click.echo("")
    click.echo("  Levqor is set up. An admin user was created: " + email)
    click.echo("  Your API key (shown once, store it now):")
    click.echo(f"    {key}")
    click.echo(
        f"  Dashboard and API: {cfg.base_url}   API docs: {cfg.base_url}/api/v1/openapi.json"
    )
    click.echo("")
    keyfile = cfg.data_dir / "first-key.txt"
    if cfg.cli.write_first_key:
        keyfile.write_text(key + "\n")
        keyfile.chmod(0o600)


def listen(host: str, port: int) -> socket.socket:
    """A socket bound to ``host:port`` and listening, or a clear error (a port in use)."""
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


@click.command()
@click.option("--host", default=lambda: load_config().web.host, show_default="127.0.0.1")
@click.option("--port", default=lambda: load_config().web.port, type=int, show_default="8000")
@click.option(
    "--prod", is_flag=True, help="Serve with gunicorn (2 workers, 4 threads; GUNICORN_* override)."
)
def serve(host: str, port: int, prod: bool) -> None:
    """Start the API, the embedded workers and (behind a leader lock) the scheduler.

    The port is bound first: a server that cannot listen exits before it touches the database,
    claims a run or fires a trigger."""
    cfg = load_config()
    if not cfg.base_url_given:  # links name the address this server listens on
        cfg = load_config(base_url=f"http://{host}:{port}")
    sched = cfg.executor.scheduler in ("auto", "on")
    if prod:
        from levqor_host.wsgi import bind_address, run_gunicorn

        address = bind_address(cfg.gunicorn, host, port)
        if address is not None:  # gunicorn binds in its master, before any worker loads the app
            listen(*address).close()
        from levqor_host.app import create_app

        # migrate and bootstrap once, before any worker process starts
        setup = services(create_app(cfg, start_workers=False, start_scheduler=False))
        bootstrap_admin(setup)
        setup.store.close()
        run_gunicorn(cfg, host, port, scheduler=sched)
        return
    from werkzeug.serving import make_server

    from levqor_host.app import create_app, start_background

    sock = listen(host, port)
    app = create_app(cfg, start_workers=False, start_scheduler=False)
    server = make_server(host, port, app, threaded=True, fd=sock.fileno())
    sock.close()  # the server holds its own copy
    bootstrap_admin(services(app))
    start_background(app, workers=cfg.executor.kind == "embedded", scheduler=sched)
    click.echo(
        f"levqor {__version__} serving on http://{host}:{port} (development server; use --prod for gunicorn)"
    )
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


@click.command()
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
    executor: dict[str, Any] = {"workers": threads} if threads else {}
    if (executor_mode or load_config().executor.kind) == "celery":
        from levqor_host.workers.celery import run_worker  # docs/scaling.md

        cfg = load_config(executor={**executor, "kind": "celery"})

        def build() -> Services:  # the services of a worker: no embedded threads, no scheduler
            return services(make_app(cfg=cfg))

        run_worker(cfg, build, pool=pool, restart=True)
        return
    if executor_mode == "embedded":
        executor["kind"] = "embedded"
    st = services(make_app(start_workers=True, executor=executor))
    click.echo(f"levqor worker {st.executor.worker_id} with {st.executor.threads} threads")
    wait_for_signal()
    click.echo("stopping: letting in-flight steps finish")
    st.executor.stop()


@click.command()
def scheduler() -> None:
    """Fire cron triggers (exactly one scheduler is active per deployment: a leader lock)."""
    st = services(make_app(start_scheduler=True))
    click.echo("levqor scheduler started")
    wait_for_signal()
    st.scheduler.stop()


def wait_for_signal() -> None:
    """Block until SIGTERM or SIGINT."""
    import signal
    import threading

    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *a: stop.set())
    while not stop.is_set():
        stop.wait(1)
