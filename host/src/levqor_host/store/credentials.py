"""Credentials: a user's secrets for connectors, by name, stored encrypted by the vault."""

from __future__ import annotations

from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError

from levqor_host.store.db import Conflict, Database, new_id, retry_on_disconnect, utcnow
from levqor_host.store.rows import CredentialRow, RowMapper
from levqor_host.store.tables import credentials
from levqor_host.store.users import require_user

__all__ = ["Credentials"]

_credential_row = RowMapper(CredentialRow)
_LISTED = (credentials.c.id, credentials.c.name, credentials.c.connector, credentials.c.created_at)


class Credentials:
    """A user's credentials; their values leave the store only through :meth:`values`."""

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
        }
        try:
            with self.db.write() as conn:
                require_user(conn, user_id)
                conn.execute(credentials.insert().values(**row))
        except IntegrityError as exc:
            raise Conflict(f"a credential named {name!r} already exists") from exc
        return _credential_row(row)

    def list(self, user_id: str) -> list[CredentialRow]:
        """The user's credentials by name: id, name, connector, created_at (never the values)."""
        with self.db.read() as conn:
            rows = conn.execute(
                select(*_LISTED)
                .where(credentials.c.user_id == user_id)
                .order_by(credentials.c.name)
            ).all()
        return _credential_row.all(rows)

    def get(self, user_id: str, cred_id: str) -> CredentialRow | None:
        with self.db.read() as conn:
            row = conn.execute(
                select(*_LISTED).where(
                    credentials.c.id == cred_id, credentials.c.user_id == user_id
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
