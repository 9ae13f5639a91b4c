"""Idempotency keys: the first answer to a creating request, kept for its retries.

Each method is one short transaction. A key belongs to one user.
:meth:`IdempotencyKeys.claim` takes the key for a request (or reports what is already there),
:meth:`~IdempotencyKeys.complete` keeps the answer, :meth:`~IdempotencyKeys.release` gives the
key back when the request did not succeed. Keys older than ``ttl`` are forgotten; a claim older than ``stale`` whose request never
finished (its process died) may be taken again.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import and_, delete, select, update
from sqlalchemy.exc import IntegrityError

from levqor_host.store.db import Database, utcnow
from levqor_host.store.tables import idempotency_keys as t

__all__ = ["Claim", "IdempotencyKeys"]


@dataclass(frozen=True)
class Claim:
    """``state``: ``new`` (this request runs), ``done`` (replay ``status``/``body``/``location``),
    ``running`` (the first request has not answered yet) or ``mismatch`` (the key was used for
    another request)."""

    state: str
    status: int | None = None
    body: str | None = None
    location: str | None = None


class IdempotencyKeys:
    """The idempotency keys of creating API requests."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def claim(
        self, user_id: str, key: str, fingerprint: str, *, ttl: timedelta, stale: timedelta
    ) -> Claim:
        now = utcnow()
        mine = and_(t.c.user_id == user_id, t.c.idem_key == key)
        try:
            with self.db.write() as conn:
                conn.execute(delete(t).where(t.c.created_at < now - ttl))
                conn.execute(
                    delete(t).where(mine, t.c.status.is_(None), t.c.created_at < now - stale)
                )
                row = conn.execute(select(t).where(mine)).first()
                if row is None:
                    conn.execute(
                        t.insert().values(
                            user_id=user_id, idem_key=key, fingerprint=fingerprint, created_at=now
                        )
                    )
                    return Claim("new")
        except IntegrityError:  # a concurrent request inserted it first
            with self.db.read() as conn:
                row = conn.execute(select(t).where(mine)).first()
            if row is None:
                return Claim("running")
        if row.fingerprint != fingerprint:
            return Claim("mismatch")
        if row.status is None:
            return Claim("running")
        return Claim("done", row.status, row.body, row.location)

    def complete(
        self, user_id: str, key: str, status: int, body: str, location: str | None
    ) -> None:
        with self.db.write() as conn:
            conn.execute(
                update(t)
                .where(t.c.user_id == user_id, t.c.idem_key == key)
                .values(status=status, body=body, location=location)
            )

    def release(self, user_id: str, key: str) -> None:
        with self.db.write() as conn:
            conn.execute(
                delete(t).where(t.c.user_id == user_id, t.c.idem_key == key, t.c.status.is_(None))
            )
