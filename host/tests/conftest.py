"""Fixtures of the host tests: a migrated Store on SQLite (tmp_path) and on PostgreSQL.

PostgreSQL tests get a fresh database (``levqor_test_<random>``) created through an autocommit
connection to the server URL (``LEVQOR_TEST_PG_URL``, default the ``test`` database on
127.0.0.1:5432 as ``postgres``) and dropped afterwards. When the server is unreachable they
skip, or fail when ``LEVQOR_REQUIRE_SERVICES=1``.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable, Iterator

import pytest
from e2e_support import release_after_test  # noqa: F401 - autouse: a test's databases go after it
from levqor_host.security.vault import Vault
from levqor_host.store import Store, normalize_url
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError

DEFAULT_PG_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
PG_UNREACHABLE = (
    "PostgreSQL not reachable on 127.0.0.1:5432: start it (service postgresql start) "
    "or set LEVQOR_TEST_PG_URL"
)


def _pg_server_url() -> str:
    return normalize_url(os.environ.get("LEVQOR_TEST_PG_URL") or DEFAULT_PG_URL)


def _services_unavailable(message: str) -> None:
    if os.environ.get("LEVQOR_REQUIRE_SERVICES") == "1":
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture
def pg_database_url() -> Iterator[str]:
    """The URL of a fresh, empty PostgreSQL database, dropped after the test."""
    server = _pg_server_url()
    admin = create_engine(server, isolation_level="AUTOCOMMIT", connect_args={"connect_timeout": 3})
    name = f"levqor_test_{secrets.token_hex(6)}"
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    except OperationalError:  # the server cannot be reached
        admin.dispose()
        _services_unavailable(PG_UNREACHABLE)
    try:
        yield make_url(server).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture
def vault() -> Vault:
    return Vault([Vault.generate_key()])


@pytest.fixture
def make_store() -> Iterator[Callable[..., Store]]:
    """Open more Stores (closed after the test): ``make_store(url, vault)``."""
    opened: list[Store] = []

    def _make(url: str, vault: Vault) -> Store:
        s = Store(url, vault)
        opened.append(s)
        return s

    yield _make
    for s in opened:
        s.close()


BACKENDS = [
    pytest.param("sqlite", id="sqlite"),
    pytest.param("postgresql", id="postgresql", marks=pytest.mark.services),
]


def _open_store(request, tmp_path, vault: Vault) -> Store:
    # The database first, so that its teardown (DROP DATABASE) runs after the store is closed.
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'levqor.db'}"
    else:
        url = request.getfixturevalue("pg_database_url")
    return request.getfixturevalue("make_store")(url, vault)


@pytest.fixture(params=BACKENDS)
def fresh_store(request, tmp_path, vault) -> Store:
    """A Store on an empty, not yet migrated database (SQLite and PostgreSQL)."""
    return _open_store(request, tmp_path, vault)


@pytest.fixture(params=BACKENDS)
def store(request, tmp_path, vault) -> Store:
    """A migrated Store on SQLite (tmp_path) and on a fresh PostgreSQL database."""
    s = _open_store(request, tmp_path, vault)
    s.upgrade()
    return s
