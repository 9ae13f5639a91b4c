"""Credentials: a user's secrets for connectors, by name, stored encrypted by the vault.

An OAuth2 credential ("Connect") also carries, in plain columns, what may be shown and what
the refresh needs without decrypting: ``auth`` (``oauth2``), ``account``, ``expires_at`` and
``status`` (``broken`` once the provider refused its refresh token). :meth:`Credentials.locked`
holds one credential's row for a refresh: ``SELECT ... FOR UPDATE`` on PostgreSQL, the write
transaction (``BEGIN IMMEDIATE``) on SQLite, so concurrent workers and hosts refresh once.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import delete, select, update
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError

from levqor_host.store.db import Conflict, Database, new_id, retry_on_disconnect, utcnow
from levqor_host.store.rows import CredentialRow, RowMapper
from levqor_host.store.tables import credentials
from levqor_host.store.users import require_user

__all__ = ["BROKEN", "Credentials", "LockedCredential"]

BROKEN = "broken"

_credential_row = RowMapper(CredentialRow)
_LISTED = (
    credentials.c.id,
    credentials.c.name,
    credentials.c.connector,
    credentials.c.created_at,
    credentials.c.auth,
    credentials.c.account,
    credentials.c.status,
    credentials.c.expires_at,
)


def _expiry(values: dict) -> datetime | None:
    exp = values.get("expires_at")
    if isinstance(exp, (int, float)) and not isinstance(exp, bool):
        try:
            return datetime.fromtimestamp(exp, UTC)
        except (OverflowError, OSError, ValueError):
            return None
    return None


def _oauth_columns(values: dict) -> dict[str, Any]:
    """The plain columns of an OAuth2 credential's values."""
    account = values.get("account")
    return {
        "auth": "oauth2",
        "account": str(account)[:200] if account else None,
        "expires_at": _expiry(values),
        "status": None,
        "updated_at": utcnow(),
    }


@dataclass
class LockedCredential:
    """One credential's row, held until the ``with`` block of :meth:`Credentials.locked` ends."""

    id: str
    user_id: str
    name: str
    connector: str
    values: dict
    status: str | None
    _conn: Connection
    _db: Database

    def save(self, values: dict) -> None:
        """Replace the values (refreshed tokens) inside the lock; the status is cleared."""
        self._conn.execute(
            update(credentials)
            .where(credentials.c.id == self.id)
            .values(value_enc=self._db.vault.encrypt(values), **_oauth_columns(values))
        )
        self.values, self.status = values, None

    def mark_broken(self) -> None:
        """Status ``broken``: only connecting the account again helps."""
        self._conn.execute(
            update(credentials)
            .where(credentials.c.id == self.id)
            .values(status=BROKEN, updated_at=utcnow())
        )
        self.status = BROKEN


class Credentials:
    """A user's credentials; their values leave the store only through :meth:`values` and
    :meth:`locked`."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def create(self, user_id: str, name: str, connector: str, values: dict) -> CredentialRow:
        """Store ``values`` encrypted; raises :class:`Conflict` when the user has ``name`` already."""
        row = {
            "id": new_id("cred"),
            "user_id": user_id,
            "name": name,
            "connector": connector,
            "value_enc": self.db.vault.encrypt(values),
            "created_at": utcnow(),
            "auth": None,
            "account": None,
            "status": None,
            "expires_at": None,
        }
        try:
            with self.db.write() as conn:
                require_user(conn, user_id)
                conn.execute(credentials.insert().values(**row))
        except IntegrityError as exc:
            raise Conflict(f"a credential named {name!r} already exists") from exc
        return _credential_row(row)

    def connect(self, user_id: str, name: str, connector: str, values: dict) -> CredentialRow:
        """Store a connected account's OAuth2 credential as ``name``: a new credential, or the
        same connector's credential of that name with its tokens replaced and its status
        cleared (connecting again). :class:`Conflict` when ``name`` is another connector's."""
        columns = _oauth_columns(values)
        enc = self.db.vault.encrypt(values)
        for _ in range(2):  # a concurrent first connect of the same name: the second updates
            with self.db.write() as conn:
                require_user(conn, user_id)
                found = conn.execute(
                    select(credentials.c.id, credentials.c.connector)
                    .where(credentials.c.user_id == user_id, credentials.c.name == name)
                    .with_for_update()
                ).first()
                if found is not None:
                    if found.connector != connector:
                        raise Conflict(
                            f"a credential named {name!r} exists for connector {found.connector!r}"
                        )
                    conn.execute(
                        update(credentials)
                        .where(credentials.c.id == found.id)
                        .values(value_enc=enc, **columns)
                    )
                    return self._get(conn, user_id, found.id)  # type: ignore[return-value]
                row = {
                    "id": new_id("cred"),
                    "user_id": user_id,
                    "name": name,
                    "connector": connector,
                    "value_enc": enc,
                    "created_at": utcnow(),
                    **columns,
                }
                try:
                    with conn.begin_nested():
                        conn.execute(credentials.insert().values(**row))
                except IntegrityError:
                    continue
                return self._get(conn, user_id, row["id"])  # type: ignore[return-value]
        raise Conflict(f"a credential named {name!r} already exists")

    def list(self, user_id: str) -> list[CredentialRow]:
        """The user's credentials by name (never the values)."""
        with self.db.read() as conn:
            rows = conn.execute(
                select(*_LISTED)
                .where(credentials.c.user_id == user_id)
                .order_by(credentials.c.name)
            ).all()
        return _credential_row.all(rows)

    @staticmethod
    def _get(conn: Connection, user_id: str, cred_id: str) -> CredentialRow | None:
        row = conn.execute(
            select(*_LISTED).where(credentials.c.id == cred_id, credentials.c.user_id == user_id)
        ).first()
        return _credential_row(row) if row else None

    def get(self, user_id: str, cred_id: str) -> CredentialRow | None:
        with self.db.read() as conn:
            return self._get(conn, user_id, cred_id)

    def by_name(self, user_id: str, name: str) -> CredentialRow | None:
        with self.db.read() as conn:
            row = conn.execute(
                select(*_LISTED).where(
                    credentials.c.user_id == user_id, credentials.c.name == name
                )
            ).first()
        return _credential_row(row) if row else None

    def delete(self, user_id: str, cred_id: str) -> bool:
        with self.db.write() as conn:
            res = conn.execute(
                delete(credentials).where(
                    credentials.c.id == cred_id, credentials.c.user_id == user_id
                )
            )
        return res.rowcount == 1

    @retry_on_disconnect
    def values(self, user_id: str, name: str) -> tuple[str, dict] | None:
        """``(connector, decrypted values)`` of the user's credential called ``name``."""
        with self.db.read() as conn:
            row = conn.execute(
                select(credentials.c.connector, credentials.c.value_enc).where(
                    credentials.c.user_id == user_id, credentials.c.name == name
                )
            ).first()
        if row is None:
            return None
        return row.connector, self.db.vault.decrypt(row.value_enc)

    @contextmanager
    def locked(self, user_id: str, name: str) -> Iterator[LockedCredential | None]:
        """Hold the user's credential ``name`` for a refresh (``None`` when there is none):
        read again under the lock, so a refresh another worker or host finished meanwhile is
        seen. What :meth:`LockedCredential.save` and ``mark_broken`` write commits when the
        block ends; an exception out of the block rolls it back."""
        with self.db.write() as conn:
            row = conn.execute(
                select(
                    credentials.c.id,
                    credentials.c.connector,
                    credentials.c.value_enc,
                    credentials.c.status,
                )
                .where(credentials.c.user_id == user_id, credentials.c.name == name)
                .with_for_update()
            ).first()
            if row is None:
                yield None
                return
            yield LockedCredential(
                row.id,
                user_id,
                name,
                row.connector,
                self.db.vault.decrypt(row.value_enc),
                row.status,
                conn,
                self.db,
            )
