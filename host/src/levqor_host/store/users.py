"""Users and their API keys."""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from sqlalchemy import Connection, bindparam, func, select, update
from sqlalchemy.exc import IntegrityError

from levqor_host.store.db import Conflict, Database, NotFound, new_id, retry_on_disconnect, utcnow
from levqor_host.store.rows import ApiKeyRow, RowMapper, UserRow
from levqor_host.store.tables import api_keys, users

__all__ = [
    "API_KEY_PREFIX",
    "KEY_TOUCH_INTERVAL",
    "USER_COLUMNS",
    "ApiKeys",
    "Users",
    "require_user",
    "user_row",
]

API_KEY_PREFIX = "lvq"
# last_used_at of an API key is refreshed at most this often (avoids a write per request).
KEY_TOUCH_INTERVAL = timedelta(seconds=60)
_REFERRAL_ALPHABET = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"

user_row = RowMapper(UserRow)
_key_row = RowMapper(ApiKeyRow, revoked=lambda r: r["revoked_at"] is not None)
#: a user's columns labelled ``u_<column>``, to join a user to another table's row
USER_COLUMNS = tuple(users.c[f].label(f"u_{f}") for f in user_row.keys)


def _hash_key(plaintext: str) -> str:
    return hashlib.sha256(plaintext.encode("utf-8")).hexdigest()


def _referral_code() -> str:
    return "".join(secrets.choice(_REFERRAL_ALPHABET) for _ in range(8))


def require_user(conn: Connection, user_id: str) -> None:
    """Raise :class:`NotFound` when there is no user ``user_id`` (inside a transaction)."""
    if not conn.execute(select(users.c.id).where(users.c.id == user_id)).first():
        raise NotFound(f"no user {user_id!r}")


class Users:
    """The users of a deployment."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self._listeners: dict[str, list[Callable[[Any], Any]]] = {}

    def create(
        self, email: str, *, name: str | None = None, plan: str = "free", is_admin: bool = False
    ) -> UserRow:
        """Create a user (email is stored lower-cased); raises :class:`Conflict` if taken."""
        email = email.strip().lower()
        if not email:
            raise ValueError("email is required")
        for _ in range(5):
            values = {
                "id": new_id("usr"),
                "email": email,
                "name": name,
                "plan": plan,
                "is_admin": bool(is_admin),
                "referral_code": _referral_code(),
                "created_at": utcnow(),
            }
            try:
                with self.db.write() as conn:
                    if conn.execute(select(users.c.id).where(users.c.email == email)).first():
                        raise Conflict(f"a user with email {email!r} already exists")
                    conn.execute(users.insert().values(**values))
            except IntegrityError:
                continue  # referral code collision or a concurrent insert: check again
            user = user_row(values)
            self._emit("user_created", user)
            return user
        raise Conflict(f"could not create user {email!r}")

    def add_listener(self, event: str, fn: Callable[[Any], Any]) -> None:
        """Call ``fn(payload)`` after ``event`` committed (``user_created``: the user dict).
        A listener's exception is logged, never raised into the caller."""
        self._listeners.setdefault(event, []).append(fn)

    def _emit(self, event: str, payload: Any) -> None:
        for fn in self._listeners.get(event, ()):
            try:
                fn(payload)
            except Exception:  # noqa: BLE001 - a listener never breaks a write
                logging.getLogger("levqor.store").exception("%s listener failed", event)

    @retry_on_disconnect
    def get(self, user_id: str) -> UserRow | None:
        with self.db.read() as conn:
            row = conn.execute(select(users).where(users.c.id == user_id)).first()
        return user_row(row) if row else None

    def get_by_email(self, email: str) -> UserRow | None:
        with self.db.read() as conn:
            row = conn.execute(select(users).where(users.c.email == email.strip().lower())).first()
        return user_row(row) if row else None

    def count(self) -> int:
        with self.db.read() as conn:
            return conn.execute(select(func.count()).select_from(users)).scalar_one()

    def list(self) -> list[UserRow]:
        """Every user, oldest first."""
        with self.db.read() as conn:
            rows = conn.execute(select(users).order_by(users.c.created_at, users.c.id)).all()
        return user_row.all(rows)


_SQL_KEY_BY_PREFIX = (
    select(api_keys, *USER_COLUMNS)
    .select_from(api_keys.join(users, users.c.id == api_keys.c.user_id))
    .where(api_keys.c.prefix == bindparam("prefix"))
)


class ApiKeys:
    """API keys: only a prefix and a hash of each is stored."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def create(self, user_id: str, *, name: str, scopes: list[str]) -> tuple[str, ApiKeyRow]:
        """Create a key; returns ``(plaintext, key)``. The plaintext is never stored or shown again.

        Format ``lvq_<8 hex chars prefix>_<43 url-safe chars>``; stored: the prefix and the
        SHA-256 of the whole plaintext. Raises :class:`NotFound` for an unknown user.
        """
        if not isinstance(scopes, list | tuple) or not all(isinstance(s, str) for s in scopes):
            raise ValueError("scopes must be a list of strings")
        for _ in range(5):
            prefix = secrets.token_hex(4)
            plaintext = f"{API_KEY_PREFIX}_{prefix}_{secrets.token_urlsafe(32)}"
            values = {
                "id": new_id("key"),
                "user_id": user_id,
                "name": name,
                "prefix": prefix,
                "key_hash": _hash_key(plaintext),
                "scopes": list(scopes),
                "created_at": utcnow(),
                "last_used_at": None,
                "revoked_at": None,
            }
            try:
                with self.db.write() as conn:
                    require_user(conn, user_id)
                    conn.execute(api_keys.insert().values(**values))
            except IntegrityError:
                continue  # prefix collision
            return plaintext, _key_row(values)
        raise Conflict("could not allocate a unique API key prefix")

    def authenticate(self, plaintext: str) -> tuple[UserRow, ApiKeyRow] | None:
        """``(user, key)`` for a valid, unrevoked key; None otherwise (constant-time hash check)."""
        if not isinstance(plaintext, str):
            return None
        parts = plaintext.strip().split("_", 2)
        if len(parts) != 3 or parts[0] != API_KEY_PREFIX or len(parts[1]) != 8 or not parts[2]:
            return None
        digest = _hash_key(plaintext.strip())
        with self.db.read() as conn:
            row = conn.execute(_SQL_KEY_BY_PREFIX, {"prefix": parts[1]}).first()
        if row is None or not hmac.compare_digest(row.key_hash, digest):
            return None
        if row.revoked_at is not None:
            return None
        key = _key_row(row)
        now = utcnow()
        if row.last_used_at is None or now - row.last_used_at > KEY_TOUCH_INTERVAL:
            with self.db.write() as conn:
                conn.execute(
                    update(api_keys).where(api_keys.c.id == row.id).values(last_used_at=now)
                )
            key["last_used_at"] = now.isoformat()
        return user_row(row, "u_"), key

    def list(self, user_id: str) -> list[ApiKeyRow]:
        """The user's keys (revoked ones included, flagged), oldest first; never a hash."""
        with self.db.read() as conn:
            rows = conn.execute(
                select(api_keys)
                .where(api_keys.c.user_id == user_id)
                .order_by(api_keys.c.created_at, api_keys.c.id)
            ).all()
        return _key_row.all(rows)

    def revoke(self, user_id: str, key_id: str) -> bool:
        """Revoke one of the user's keys; False if unknown, another user's or already revoked."""
        with self.db.write() as conn:
            res = conn.execute(
                update(api_keys)
                .where(
                    api_keys.c.id == key_id,
                    api_keys.c.user_id == user_id,
                    api_keys.c.revoked_at.is_(None),
                )
                .values(revoked_at=utcnow())
            )
        return res.rowcount == 1
