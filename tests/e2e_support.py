"""Shared fixtures for the end-to-end tests."""

from __future__ import annotations

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
        st = self.state
        if st.scheduler is not None:
            st.scheduler.stop()
        if st.executor is not None:
            st.executor.stop(2.0)
        st.runner.close()
        st.store.close()

    def client(self, key: str | None = None) -> Client:
        return Client(self.url, key)

    def user_with_key(self, email: str, scopes: list[str] | None = None, **kw: Any) -> tuple[dict, str]:
        store = self.state.store
        user = store.create_user(email, **kw)
        key, _ = store.create_api_key(
            user["id"], name="test", scopes=scopes or ["pipelines:read", "pipelines:write", "runs:execute",
                                                      "credentials:write", "billing"])
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


def make_app(tmp_path, *, env: dict | None = None, plugins: list | None = None, start_workers: bool = True,
             start_scheduler: bool = False, **overrides: Any):
    """A Levqor app on its own data folder (SQLite unless database_url is given)."""
    import os

    from levqor_host.app import create_app
    from levqor_host.config import Config

    base_env = {k: v for k, v in os.environ.items() if not k.startswith("LEVQOR_") and k != "DATABASE_URL"}
    # rate limits off unless a test turns them on (most tests make many requests quickly)
    full_env = {**base_env, "LEVQOR_SSRF_ALLOW": "127.0.0.1", "LEVQOR_CACHE_DIR": "",
                "LEVQOR_RATE_LIMITS": "off", **(env or {})}
    if os.environ.get("LEVQOR_TEST_ON_POSTGRES") and "DATABASE_URL" not in full_env and "database_url" not in overrides:
        full_env["DATABASE_URL"] = _postgres_for(tmp_path)  # the suite on PostgreSQL (issue 10)
    cfg = Config.from_env(full_env, data_dir=tmp_path / "data", poll_interval=0.05, **overrides)
    return create_app(cfg, start_workers=start_workers, start_scheduler=start_scheduler, plugins=plugins)


_PG_DATABASES: dict[str, str] = {}


def _postgres_for(tmp_path) -> str:
    """``LEVQOR_TEST_ON_POSTGRES=1`` (or a server URL): every app a test builds without its own
    database gets a fresh PostgreSQL database, one per ``tmp_path`` (two apps of one test share
    it, as two processes would), all dropped when the test session ends."""
    import atexit
    import hashlib
    import os

    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    key = str(tmp_path)
    if key in _PG_DATABASES:
        return _PG_DATABASES[key]
    server = os.environ["LEVQOR_TEST_ON_POSTGRES"]
    if server == "1":
        server = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
    name = "levqor_suite_" + hashlib.sha256(f"{os.getpid()}:{key}".encode()).hexdigest()[:12]
    admin = create_engine(server, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    if _PG_DATABASES:
        admin.dispose()
    else:
        def drop_all() -> None:
            with admin.connect() as conn:
                for db in _PG_DATABASES.values():
                    conn.execute(text(f'DROP DATABASE IF EXISTS "{make_url(db).database}" WITH (FORCE)'))
            admin.dispose()

        atexit.register(drop_all)
    _PG_DATABASES[key] = make_url(server).set(database=name).render_as_string(hide_password=False)
    return _PG_DATABASES[key]
