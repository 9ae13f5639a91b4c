"""Shared fixtures for the end-to-end tests."""

from __future__ import annotations

import atexit
import json
import os
import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PYTHON = sys.executable


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (for servers started as subprocesses)."""
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def wait_until_serving(
    base: str, proc: Any = None, log: Path | None = None, timeout: float = 120.0
) -> None:
    """Wait until ``base + "/health"`` answers 200: the one start-up wait of every test that runs
    ``levqor serve`` (or gunicorn) as a subprocess.

    A refused connection or a slow answer (a busy machine) means "not yet"; the process ``proc``
    exiting, or ``timeout`` seconds passing, fails with the server's ``log``.
    """
    import time

    import requests as _requests

    deadline = time.monotonic() + timeout
    while True:
        try:
            if _requests.get(base + "/health", timeout=5).status_code == 200:
                return
        except _requests.RequestException:
            pass
        died = proc is not None and proc.poll() is not None
        if died or time.monotonic() > deadline:
            told = log.read_text()[-4000:] if log is not None and log.exists() else ""
            raise AssertionError(f"{base} {'exited' if died else 'did not answer /health'}:\n{told}")
        time.sleep(0.2)


def require_services() -> bool:
    return os.environ.get("LEVQOR_REQUIRE_SERVICES") == "1"


def extract_files(markdown: str) -> dict[str, str]:
    """Code blocks written as ```lang file=path ... ``` in a markdown page, by path."""
    out: dict[str, str] = {}
    for m in re.finditer(r"^```[\w-]* file=(\S+)\n(.*?)^```\s*$", markdown, re.S | re.M):
        out[m.group(1)] = m.group(2)
    return out


@pytest.fixture
def root() -> Path:
    return ROOT


# ---------------------------------------------------------------- live Levqor servers
import threading  # noqa: E402
from typing import Any  # noqa: E402

import requests  # noqa: E402


class LiveServer:
    """A Levqor app served over real HTTP on 127.0.0.1 (werkzeug, threaded) for one test."""

    def __init__(self, app: Any) -> None:
        from werkzeug.serving import make_server

        self.app = app
        self.state = app.extensions["levqor"]
        self._srv = make_server("127.0.0.1", 0, app, threaded=True)
        self.port = self._srv.server_port
        self.url = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self._srv.serve_forever, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._srv.shutdown()
        self._srv.server_close()
        stop_app(self.app)

    def client(self, key: str | None = None) -> Client:
        return Client(self.url, key)

    def user_with_key(
        self, email: str, scopes: list[str] | None = None, **kw: Any
    ) -> tuple[dict, str]:
        store = self.state.store
        user = store.users.create(email, **kw)
        key, _ = store.api_keys.create(
            user["id"],
            name="test",
            scopes=scopes
            or [
                "pipelines:read",
                "pipelines:write",
                "runs:execute",
                "credentials:write",
                "billing",
            ],
        )
        return user, key


class Client(requests.Session):
    """requests.Session with the base URL and the API key filled in."""

    def __init__(self, base: str, key: str | None = None) -> None:
        super().__init__()
        self.base = base
        if key:
            self.headers["Authorization"] = f"Bearer {key}"

    def request(self, method, url, *args, **kwargs):  # type: ignore[override]
        if url.startswith("/"):
            url = self.base + url
        kwargs.setdefault("timeout", 30)
        return super().request(method, url, *args, **kwargs)


def make_app(
    tmp_path,
    *,
    env: dict | None = None,
    plugins: list | None = None,
    start_workers: bool = True,
    start_scheduler: bool = False,
    **overrides: Any,
):
    """A Levqor app on its own data folder (SQLite unless DATABASE_URL is given).

    ``overrides`` are :meth:`Config.from_env`'s: a section with a mapping of its fields
    (``executor={"workers": 2}``) or a top-level field."""

    from levqor_host.app import create_app
    from levqor_host.config import Config

    base_env = clean_env()
    # rate limits off unless a test turns them on (most tests make many requests quickly)
    full_env = {
        **base_env,
        "LEVQOR_SSRF_ALLOW": "127.0.0.1",
        "LEVQOR_CACHE_DIR": "",
        "LEVQOR_RATE_LIMITS": "off",
        **(env or {}),
    }
    if on_postgres() and "DATABASE_URL" not in full_env and "database" not in overrides:
        full_env["DATABASE_URL"] = _postgres_for(tmp_path)  # the suite on PostgreSQL (issue 10)
    celery = (
        on_celery()
        and start_workers
        and "LEVQOR_EXECUTOR" not in full_env
        and "kind" not in overrides.get("executor", {})
    )
    if celery:  # the suite on Celery (issue 10): a queue per tmp_path, an in-process worker
        full_env.update(
            LEVQOR_EXECUTOR="celery",
            LEVQOR_BROKER_URL=_checked_broker(),
            LEVQOR_CELERY_QUEUE=_queue_for(tmp_path),
        )
        full_env.setdefault("LEVQOR_CELERY_SWEEP_INTERVAL", "0.5")
        full_env.setdefault("LEVQOR_CELERY_REQUEUE_AFTER", "2")
    executor = {"poll_interval": 0.05, **overrides.pop("executor", {})}
    cfg = Config.from_env(full_env, data_dir=tmp_path / "data", executor=executor, **overrides)
    app = create_app(
        cfg, start_workers=start_workers, start_scheduler=start_scheduler, plugins=plugins
    )
    if celery:
        try:
            _TestCeleryWorker(app, str(tmp_path))
        except BaseException:
            stop_app(app)
            raise
    return app


def stop_app(app: Any) -> None:
    """Stop what :func:`make_app` started: the scheduler, the embedded executor or the
    in-process Celery worker (``LEVQOR_TEST_EXECUTOR=celery``), then close the runner and the
    store. :meth:`LiveServer.stop` calls it; tests that build an app without a LiveServer may."""
    st = app.extensions["levqor"]
    if st.scheduler is not None:
        st.scheduler.stop()
    if st.executor is not None:
        st.executor.stop(2.0)
    worker = _CELERY_WORKERS.pop(id(st), None)
    if worker is not None:
        worker.stop(2.0)
    if st.dispatcher is not None:
        st.dispatcher.close()
    st.runner.close()
    st.store.close()


# ---------------------------------------------------------------- the suite's backends (issue 10)
def on_postgres() -> bool:
    """``LEVQOR_TEST_ON_POSTGRES=1`` (or a server URL): apps get a fresh PostgreSQL database."""
    return bool(os.environ.get("LEVQOR_TEST_ON_POSTGRES"))


def on_celery() -> bool:
    """``LEVQOR_TEST_EXECUTOR=celery``: apps that start workers run their runs on Celery."""
    return os.environ.get("LEVQOR_TEST_EXECUTOR", "embedded") == "celery"


def clean_env(**extra: str) -> dict[str, str]:
    """This interpreter's environment without any ``LEVQOR_*`` variable or ``DATABASE_URL`` (a
    Levqor app or subprocess of a test sees only what the test gives it), plus ``extra``."""
    env = {
        k: v for k, v in os.environ.items() if not k.startswith("LEVQOR_") and k != "DATABASE_URL"
    }
    env.update(extra)
    return env


def backend_env(tmp_path) -> dict[str, str]:
    """The environment a Levqor subprocess (the CLI, ``levqor worker``) of this test needs to use
    the database that ``make_app(tmp_path)`` uses: ``DATABASE_URL`` on PostgreSQL, nothing on
    SQLite (the data folder holds the database). The executor is not passed: a CLI ``levqor
    worker`` stays on the embedded executor in every mode."""
    return {"DATABASE_URL": _postgres_for(tmp_path)} if on_postgres() else {}


def skip_unless_sqlite(reason: str) -> pytest.MarkDecorator:
    """A decorator: the test is about SQLite itself; on PostgreSQL (``LEVQOR_TEST_ON_POSTGRES``)
    it is skipped, saying why."""
    return pytest.mark.skipif(
        on_postgres(), reason=f"{reason}: not applicable on PostgreSQL (LEVQOR_TEST_ON_POSTGRES)"
    )


def skip_under_celery(reason: str) -> pytest.MarkDecorator:
    """A decorator: the test is about the embedded executor in the web process; with
    ``LEVQOR_TEST_EXECUTOR=celery`` it is skipped, saying why."""
    return pytest.mark.skipif(
        on_celery(), reason=f"{reason}: not applicable with LEVQOR_TEST_EXECUTOR=celery"
    )


def drop_postgres_database(url: str) -> None:
    """Drop a test's PostgreSQL database under its running app (a test of what health says when
    the database is gone); connections to it are terminated."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    u = make_url(url)
    admin = create_engine(u.set(database="postgres"), isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{u.database}" WITH (FORCE)'))
    finally:
        admin.dispose()


def _services_unavailable(message: str) -> None:
    if require_services():
        pytest.fail(message)
    pytest.skip(message)


_PG_DATABASES: dict[str, str] = {}  # tmp_path -> URL of its database
_PG_ADMIN: list = []  # the engine on the server URL (AUTOCOMMIT), made on first use


def _pg_admin() -> Any:
    import os

    from sqlalchemy import create_engine

    if not _PG_ADMIN:
        server = os.environ["LEVQOR_TEST_ON_POSTGRES"]
        if server == "1":
            server = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
        _PG_ADMIN.append(
            create_engine(server, isolation_level="AUTOCOMMIT", connect_args={"connect_timeout": 3})
        )
        atexit.register(_drop_all_databases)
    return _PG_ADMIN[0]


def _postgres_for(tmp_path) -> str:
    """``LEVQOR_TEST_ON_POSTGRES=1`` (or a server URL): every app a test builds without its own
    database gets a fresh PostgreSQL database, one per ``tmp_path`` (two apps of one test share
    it, as two processes would), dropped after the test (:func:`release_after_test`) or when
    the test session ends."""
    import hashlib
    import os

    from sqlalchemy import text
    from sqlalchemy.exc import OperationalError

    key = str(tmp_path)
    if key in _PG_DATABASES:
        return _PG_DATABASES[key]
    admin = _pg_admin()
    name = "levqor_suite_" + hashlib.sha256(f"{os.getpid()}:{key}".encode()).hexdigest()[:12]
    try:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    except OperationalError:
        _services_unavailable(
            f"LEVQOR_TEST_ON_POSTGRES: PostgreSQL not reachable at {admin.url.host}:"
            f"{admin.url.port}: start it (service postgresql start)"
        )
    _PG_DATABASES[key] = admin.url.set(database=name).render_as_string(hide_password=False)
    return _PG_DATABASES[key]


def _drop_databases(keys: list[str]) -> None:
    from sqlalchemy import text
    from sqlalchemy.engine import make_url

    if not keys or not _PG_ADMIN:
        return
    with _PG_ADMIN[0].connect() as conn:
        for key in keys:
            url = _PG_DATABASES.pop(key, None)
            if url is None:
                continue
            try:
                conn.execute(
                    text(f'DROP DATABASE IF EXISTS "{make_url(url).database}" WITH (FORCE)')
                )
            except Exception as e:  # noqa: BLE001 - one that cannot go keeps no other
                print(f"could not drop {make_url(url).database}: {e}", file=sys.stderr)


def _drop_all_databases() -> None:
    _stop_leftover_workers()  # they use the databases
    _drop_databases(list(_PG_DATABASES))
    if _PG_ADMIN:
        _PG_ADMIN[0].dispose()


def release_test_path(tmp_path) -> None:
    """What the apps under ``tmp_path`` left behind once their test is over: stop the Celery
    workers a test did not stop, drop the PostgreSQL databases."""
    base = str(tmp_path)

    def inside(key: str) -> bool:
        return key == base or key.startswith(base + os.sep)

    for sid, worker in list(_CELERY_WORKERS.items()):
        if inside(worker.key) and _CELERY_WORKERS.pop(sid, None) is not None:
            worker.stop(0.5)
    _drop_databases([k for k in list(_PG_DATABASES) if inside(k)])


@pytest.fixture(autouse=True)
def release_after_test(request) -> Any:
    """Autouse where a conftest imports it (tests/, host/tests/): after each test that has a
    ``tmp_path``, :func:`release_test_path` of it. Dropping the databases test by test, not all
    at exit, matters under pytest-xdist: a worker process is killed 10 s after its session ends,
    too soon to drop a few dozen databases."""
    yield
    tmp = getattr(request.node, "funcargs", {}).get("tmp_path")
    if tmp is not None and (_PG_DATABASES or _CELERY_WORKERS):
        release_test_path(tmp)


# ---------------------------------------------------------------- the suite on Celery (issue 10)
_CELERY_WORKERS: dict[int, _TestCeleryWorker] = {}
_QUEUES: dict[str, str] = {}  # tmp_path -> queue name
_QUEUE_USERS: dict[str, int] = {}  # queue name -> apps with a worker on it (keys dropped at 0)
_QUEUES_LOCK = threading.Lock()
DEFAULT_TEST_BROKER = "redis://127.0.0.1:6379/14"  # a spare Redis database for the suite


def _broker_url() -> str:
    return os.environ.get("LEVQOR_TEST_BROKER_URL") or DEFAULT_TEST_BROKER


def _checked_broker() -> str:
    """The broker URL, after checking that Redis answers (skip, or fail when services are
    required, with what to start)."""
    import redis

    url = _broker_url()
    client = redis.Redis.from_url(url, socket_connect_timeout=2, socket_timeout=5)
    try:
        client.ping()
    except redis.exceptions.RedisError:
        _services_unavailable(
            f"LEVQOR_TEST_EXECUTOR=celery: Redis not reachable at {url} "
            "(redis-server --daemonize yes, or set LEVQOR_TEST_BROKER_URL)"
        )
    finally:
        client.close()
    return url


def _queue_for(tmp_path) -> str:
    """One Celery queue per ``tmp_path``: two apps of one test (two hosts) share it, as they
    share the PostgreSQL database; parallel test processes never do."""
    import hashlib

    key = str(tmp_path)
    with _QUEUES_LOCK:
        if key not in _QUEUES:
            digest = hashlib.sha256(f"{os.getpid()}:{key}".encode()).hexdigest()[:12]
            _QUEUES[key] = f"levqor-test-{digest}"
        return _QUEUES[key]


def _drop_queues(*queues: str) -> None:
    """Remove what test queues left in Redis: the lists (and kombu's priority lists), the
    bindings, and unacked messages of these queues (a worker stopped with a run in flight)."""
    import redis

    if not queues:
        return
    client = redis.Redis.from_url(_broker_url(), socket_connect_timeout=2, socket_timeout=5)
    try:
        for queue in queues:  # the exchange of a queue is named like it
            client.delete(
                queue,
                *(f"{queue}\x06\x16{p}" for p in (3, 6, 9)),
                f"_kombu.binding.{queue}",
                f"_kombu.binding_permanent.{queue}",
            )
            client.zrem("_kombu.binding_deadlines", queue)
        stale = []
        for tag, raw in client.hscan_iter("unacked"):
            try:
                _message, _exchange, routing_key = json.loads(raw)
            except (ValueError, TypeError):
                continue
            if routing_key in queues:
                stale.append(tag)
        if stale:
            client.hdel("unacked", *stale)
            client.zrem("unacked_index", *stale)
    except redis.exceptions.RedisError:
        pass  # Redis went away: nothing to clean there
    finally:
        client.close()


def _threads_pool() -> type:
    """Celery's ``threads`` pool whose threads see this worker's Celery app as the current app.
    Celery resolves a task by name in ``current_app`` (process-wide unless set per thread);
    ``levqor worker`` is one app per process, but this test process runs several workers at
    once (a module's server and a test's own), each of its own app and Services."""
    from concurrent.futures import ThreadPoolExecutor

    from celery.concurrency.thread import TaskPool

    class AppThreadPool(TaskPool):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.executor.shutdown(wait=False)
            self.executor = ThreadPoolExecutor(
                max_workers=self.limit, initializer=self.app.set_current
            )

    return AppThreadPool


class _TestCeleryWorker:
    """An in-process Celery worker (thread pool) bound to one app's Services, wired exactly
    as ``levqor worker --executor celery`` wires it (celery_executor.WorkerRuntime: the
    ``levqor.run`` task, CeleryWorker, LeaseSweeper): test-only connectors registered with
    ``make_app(plugins=...)`` are reachable, which a worker process could not load."""

    def __init__(self, app: Any, key: str) -> None:
        from celery.worker import WorkController
        from levqor_host.workers.celery import WorkerRuntime

        st = app.extensions["levqor"]
        cfg = st.config
        self.key = key
        self.queue = cfg.executor.celery_queue
        self.runtime = WorkerRuntime(st)
        celery = self.runtime.celery
        # Two settings of the test worker only, neither about how runs are handled: Celery's
        # remote control (pidbox) is unused by Levqor and, off, leaves no keys in Redis; a
        # BRPOP of 0.1 s instead of 1 s, as a worker's stop waits for the BRPOP in flight.
        celery.conf.worker_enable_remote_control = False
        celery.conf.broker_transport_options = {
            **celery.conf.broker_transport_options,
            "polling_interval": 0.1,  # the redis transport's BRPOP timeout
        }
        ready = threading.Event()
        self.controller = WorkController(
            app=celery,
            hostname=f"levqor-test-{self.queue[-12:]}-{id(st):x}@localhost",
            pool=_threads_pool(),
            concurrency=cfg.executor.workers,
            queues=[self.queue],
            loglevel=cfg.observability.log_level,
            ready_callback=lambda *_a: ready.set(),
            without_heartbeat=True,
            without_mingle=True,
            without_gossip=True,
        )
        self._thread = threading.Thread(
            target=self.controller.start, name="levqor-test-celery", daemon=True
        )
        # from here on stop() undoes it all (stop_app() calls it when this raises)
        with _QUEUES_LOCK:
            _QUEUE_USERS[self.queue] = _QUEUE_USERS.get(self.queue, 0) + 1
        _CELERY_WORKERS[id(st)] = self
        self.runtime.start()  # the lease heartbeat and the sweep, as run_worker() does
        self._thread.start()
        if not ready.wait(30):
            raise RuntimeError(f"the in-process Celery worker did not start on {cfg.executor.broker_url}")

    def stop(self, grace: float) -> None:
        """Stop taking runs; ask the worker thread for Celery's warm shutdown (raised inside its
        own event loop, so that other workers of this process go on); wait about ``grace``
        seconds for the runs in flight (as ``stop_app`` does for embedded threads; a run still
        going is left to finish in its daemon thread); stop the sweep; drop the queue's keys
        once no app uses it."""
        from celery.exceptions import WorkerShutdown

        self.runtime.begin_shutdown()

        def shutdown() -> None:
            raise WorkerShutdown(0)

        if self._thread.is_alive():
            hub = getattr(self.controller, "hub", None)
            if hub is not None:  # the redis transport runs on the worker's event loop
                hub.call_soon(shutdown)
            else:
                self.controller.stop()
            self._thread.join(grace + 1.0)  # + closing the broker connection
        self.runtime.stop(0)
        with _QUEUES_LOCK:
            _QUEUE_USERS[self.queue] -= 1
            last = _QUEUE_USERS[self.queue] == 0
            if last:
                del _QUEUE_USERS[self.queue]
        if last:
            _drop_queues(self.queue)


def _stop_leftover_workers() -> None:
    """At exit (and before the PostgreSQL databases are dropped): workers of apps that no test
    stopped (module-scoped servers whose module never tore them down)."""
    while _CELERY_WORKERS:
        _, worker = _CELERY_WORKERS.popitem()
        worker.stop(0.5)


atexit.register(_stop_leftover_workers)


# ---------------------------------------------------------------- the `levqor` command in a subprocess
import contextlib  # noqa: E402
import subprocess  # noqa: E402
from collections.abc import Iterator  # noqa: E402


def levqor(
    data: Path, *args: str, check: bool = True, env: dict | None = None
) -> subprocess.CompletedProcess:
    """`levqor ARGS` in a subprocess on the data folder ``data`` (and the database of
    ``make_app(data.parent)``: PostgreSQL when the suite runs on it); raises with its output
    when it fails, unless ``check`` is false."""
    base = clean_env()
    # the database of make_app(data.parent) (PostgreSQL when the suite runs on it)
    full = {
        **base,
        "LEVQOR_DATA_DIR": str(data),
        "LEVQOR_SCHEDULER": "off",
        "LEVQOR_POLL_INTERVAL": "0.05",
        **backend_env(data.parent),
        **(env or {}),
    }
    r = subprocess.run(
        [sys.executable, "-m", "levqor_host.cli", *args],
        env=full,
        capture_output=True,
        text=True,
        timeout=120,
    )
    if check and r.returncode != 0:
        raise AssertionError(
            f"levqor {' '.join(args)} failed ({r.returncode}):\n{r.stdout}\n{r.stderr}"
        )
    return r


def serve_env(data: Path, **extra: str) -> dict[str, str]:
    """The environment of a `levqor serve` subprocess on ``data`` (and its test's database)."""
    return {
        **clean_env(),
        "LEVQOR_DATA_DIR": str(data),
        "LEVQOR_SCHEDULER": "off",
        "LEVQOR_RATE_LIMITS": "off",
        "LEVQOR_POLL_INTERVAL": "0.05",
        "PYTHONUNBUFFERED": "1",
        **backend_env(data.parent),
        **extra,
    }


@contextlib.contextmanager
def serving(data: Path, port: int, env: dict[str, str]) -> Iterator[subprocess.Popen]:
    """`levqor serve --port PORT` on ``data``, up (``/health`` answers) for the block."""
    log = (data.parent / f"serve-{port}.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "levqor_host.cli", "serve", "--port", str(port)],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        wait_until_serving(f"http://127.0.0.1:{port}", proc, Path(log.name))
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
        log.close()
