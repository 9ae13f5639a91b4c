"""Sign-in data: password hashes, sessions, one-time login links, external identities.

Each method is one short transaction. Session ids and login-link tokens are random 256-bit
values handed to the browser or printed once; only their SHA-256 hashes are stored, so a copy
of the database signs nobody in.
"""

from __future__ import annotations

import hashlib
import secrets
from datetime import timedelta

from sqlalchemy import delete, select, update

from levqor_host.store.db import Conflict, Database, utcnow
from levqor_host.store.rows import RowMapper, SessionRow, UserRow
from levqor_host.store.tables import (
    login_links,
    sessions,
    user_identities,
    user_passwords,
    users,
)
from levqor_host.store.users import Users

__all__ = ["SignIns"]

_session_row = RowMapper(SessionRow)


def _h(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


class SignIns:
    """How users sign in to the dashboard: passwords, sessions, login links, identities."""

    def __init__(self, db: Database, users: Users) -> None:
        self.db = db
        self.users = users

    # ---------------------------------------------------------------- passwords

    def set_password_hash(self, user_id: str, password_hash: str) -> None:
        """Store (or replace) the user's password hash and end every session of the user."""
        now = utcnow()
        stmt = self.db.insert(user_passwords).values(
            user_id=user_id, password_hash=password_hash, updated_at=now
        )
        stmt = stmt.on_conflict_do_update(
            index_elements=[user_passwords.c.user_id],
            set_={"password_hash": stmt.excluded.password_hash, "updated_at": now},
        )
        with self.db.write() as conn:
            conn.execute(stmt)
            conn.execute(delete(sessions).where(sessions.c.user_id == user_id))

    def get_password_hash(self, user_id: str) -> str | None:
        with self.db.read() as conn:
            return conn.execute(
                select(user_passwords.c.password_hash).where(user_passwords.c.user_id == user_id)
            ).scalar_one_or_none()

    # ---------------------------------------------------------------- sessions

    def create_session(self, user_id: str, ttl_seconds: int) -> tuple[str, SessionRow]:
        """A new session: ``(session id to put in the cookie, {"user_id", "csrf_token", ...})``."""
        sid = secrets.token_urlsafe(32)
        now = utcnow()
        row = {
            "id_hash": _h(sid),
            "user_id": user_id,
            "csrf_token": secrets.token_urlsafe(32),
            "created_at": now,
            "expires_at": now + timedelta(seconds=ttl_seconds),
        }
        with self.db.write() as conn:
            conn.execute(sessions.insert().values(**row))
            # opportunistic clean-up of this user's expired sessions
            conn.execute(
                delete(sessions).where(sessions.c.user_id == user_id, sessions.c.expires_at < now)
            )
        return sid, _session_row(row)

    def get_session(self, sid: str) -> tuple[UserRow, SessionRow] | None:
        """``(user, session)`` of a live session id, None when unknown or expired."""
        if not sid or len(sid) > 200:
            return None
        with self.db.read() as conn:
            row = conn.execute(
                select(sessions, users.c.email)
                .join(users, users.c.id == sessions.c.user_id)
                .where(sessions.c.id_hash == _h(sid), sessions.c.expires_at > utcnow())
            ).first()
        if row is None:
            return None
        user = self.users.get(row.user_id)
        if user is None:
            return None
        return user, _session_row(row)

    def delete_session(self, sid: str) -> bool:
        with self.db.write() as conn:
            res = conn.execute(delete(sessions).where(sessions.c.id_hash == _h(sid)))
        return res.rowcount == 1

    def delete_user_sessions(self, user_id: str) -> int:
        with self.db.write() as conn:
            res = conn.execute(delete(sessions).where(sessions.c.user_id == user_id))
        return res.rowcount

    # ---------------------------------------------------------------- login links

    def create_login_link(self, user_id: str, ttl_seconds: int) -> str:
        """A one-time login token (shown once); valid for ``ttl_seconds``."""
        token = secrets.token_urlsafe(32)
        now = utcnow()
        with self.db.write() as conn:
            conn.execute(
                login_links.insert().values(
                    token_hash=_h(token),
                    user_id=user_id,
                    created_at=now,
                    expires_at=now + timedelta(seconds=ttl_seconds),
                    used_at=None,
                )
            )
            conn.execute(delete(login_links).where(login_links.c.expires_at < now))
        return token

    def consume_login_link(self, token: str) -> str | None:
        """The user id of an unused, unexpired link, which is marked used (atomically); else None."""
        if not token or len(token) > 200:
            return None
        now = utcnow()
        th = _h(token)
        with self.db.write() as conn:
            res = conn.execute(
                update(login_links)
                .where(
                    login_links.c.token_hash == th,
                    login_links.c.used_at.is_(None),
                    login_links.c.expires_at > now,
                )
                .values(used_at=now)
            )
            if res.rowcount != 1:
                return None
            return conn.execute(
                select(login_links.c.user_id).where(login_links.c.token_hash == th)
            ).scalar_one()

    # ---------------------------------------------------------------- external identities

    def user_for_identity(self, provider: str, subject: str, email: str) -> UserRow:
        """The Levqor user of an external identity (a Supabase ``sub``), created on first sight.

        First sight links the identity to the user with that email (an operator may have created
        it with ``levqor users create``) or creates one; afterwards the subject alone decides, so a
        later change of email at the provider cannot move the identity to another Levqor user.
        """
        with self.db.read() as conn:
            uid = conn.execute(
                select(user_identities.c.user_id).where(
                    user_identities.c.provider == provider, user_identities.c.subject == subject
                )
            ).scalar_one_or_none()
        if uid is not None:
            user = self.users.get(uid)
            if user is not None:
                return user
        user = self.users.get_by_email(email)
        if user is None:
            try:
                user = self.users.create(email)
            except Conflict:  # a concurrent first request created it
                user = self.users.get_by_email(email)
                if user is None:
                    raise
        stmt = (
            self.db.insert(user_identities)
            .values(provider=provider, subject=subject, user_id=user["id"], created_at=utcnow())
            .on_conflict_do_nothing(
                index_elements=[user_identities.c.provider, user_identities.c.subject]
            )
        )
        with self.db.write() as conn:
            conn.execute(stmt)
            uid = conn.execute(
                select(user_identities.c.user_id).where(
                    user_identities.c.provider == provider, user_identities.c.subject == subject
                )
            ).scalar_one()
        return user if uid == user["id"] else (self.users.get(uid) or user)
