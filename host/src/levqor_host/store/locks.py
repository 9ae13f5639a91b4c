"""Named locks with a lease (the scheduler's leader lock) and the ``meta`` key-value table."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import case, delete, literal, or_, select, update

from levqor_host.store.db import Database, retry_on_disconnect, utcnow
from levqor_host.store.rows import LockRow, RowMapper
from levqor_host.store.tables import UTCDateTime, locks, meta

__all__ = ["Locks", "Meta"]

_lock_row = RowMapper(LockRow)


class Locks:
    """A lock is held by one owner until it releases it or its lease expires."""

    def __init__(self, db: Database) -> None:
        self.db = db

    @retry_on_disconnect
    def acquire(self, name: str, owner: str, ttl_seconds: float) -> bool:
        """Take the lock ``name`` for ``ttl_seconds``, renew it when ``owner`` holds it, or steal
        it when the holder's lease expired. False while someone else holds it."""
        now = utcnow()
        expires = now + timedelta(seconds=ttl_seconds)
        with self.db.write() as conn:
            res = conn.execute(
                update(locks)
                .where(locks.c.name == name, or_(locks.c.owner == owner, locks.c.expires_at < now))
                .values(
                    owner=owner,
                    expires_at=expires,
                    # keep acquired_at on renewal, reset it when taking over
                    acquired_at=case(
                        (locks.c.owner == owner, locks.c.acquired_at),
                        else_=literal(now, UTCDateTime),
                    ),
                )
            )
            if res.rowcount == 1:
                return True
            res = conn.execute(
                self.db.insert(locks)
                .values(name=name, owner=owner, acquired_at=now, expires_at=expires)
                .on_conflict_do_nothing(index_elements=[locks.c.name])
                .returning(locks.c.name)
            )
            return res.first() is not None

    def release(self, name: str, owner: str) -> bool:
        """Give the lock up (only its owner can); True if it was released."""
        with self.db.write() as conn:
            res = conn.execute(delete(locks).where(locks.c.name == name, locks.c.owner == owner))
        return res.rowcount == 1

    def holder(self, name: str) -> LockRow | None:
        """``{"name", "owner", "acquired_at", "expires_at"}`` of a lock currently held (not expired)."""
        with self.db.read() as conn:
            row = conn.execute(
                select(locks).where(locks.c.name == name, locks.c.expires_at >= utcnow())
            ).first()
        return _lock_row(row) if row is not None else None


class Meta:
    """Small named values of the deployment (``meta``: key -> text)."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def get(self, key: str) -> str | None:
        with self.db.read() as conn:
            return conn.execute(select(meta.c.value).where(meta.c.key == key)).scalar_one_or_none()

    def set(self, key: str, value: str | None) -> None:
        stmt = self.db.insert(meta).values(key=key, value=value, updated_at=utcnow())
        stmt = stmt.on_conflict_do_update(
            index_elements=[meta.c.key],
            set_={"value": stmt.excluded.value, "updated_at": stmt.excluded.updated_at},
        )
        with self.db.write() as conn:
            conn.execute(stmt)

    def setdefault(self, key: str, value: str) -> str:
        """The value of ``key``, set to ``value`` first when it has none (atomically)."""
        with self.db.write() as conn:
            conn.execute(
                self.db.insert(meta)
                .values(key=key, value=value, updated_at=utcnow())
                .on_conflict_do_nothing(index_elements=[meta.c.key])
            )
            return conn.execute(select(meta.c.value).where(meta.c.key == key)).scalar_one()
