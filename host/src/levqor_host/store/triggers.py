"""App triggers: one row per enabled pipeline with an ``app`` trigger, and the ids it has seen.

A polling trigger is *due* when ``next_poll_at`` has passed. :meth:`Triggers.claim_due` moves a
due trigger's ``next_poll_at`` forward by a lease in one conditional UPDATE, so of two pollers
that look at once (two scheduler leaders for a moment during a hand-over) exactly one gets it;
the poll's outcome then sets the real next time (:meth:`record_success`, :meth:`record_failure`).
A poller that dies mid-poll leaves the trigger due again when the lease ends.

``trigger_seen`` holds the item ids (and ``delivery:<id>`` for instant deliveries) a trigger has
seen, the newest ``seen_max`` kept. Outcomes are written only while the row still has the spec
the poll was made for (``spec_hash``): a pipeline saved with another trigger mid-poll wins.
"""

from __future__ import annotations

import random
from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, delete, func, select, update

from levqor_host.store.db import Database, new_id, retry_on_disconnect, utcnow
from levqor_host.store.rows import RowMapper, TriggerRow
from levqor_host.store.tables import trigger_seen, triggers

__all__ = ["BACKOFF_CAP", "Triggers", "backoff_seconds", "route_matches"]

_trigger_row = RowMapper(TriggerRow)
#: the longest backoff after failed polls, unless the interval itself is longer (seconds)
BACKOFF_CAP = 3600
#: the longest a Retry-After is honoured (seconds)
RETRY_AFTER_CAP = 86400
_CHUNK = 500  # ids per IN (...) list


def backoff_seconds(interval: int, failures: int, retry_after: float | None = None) -> float:
    """How long to wait after the ``failures``-th failed poll in a row: the upstream's
    Retry-After when it gave one (never sooner than the interval, at most a day), otherwise the
    interval doubled per failure, capped at an hour (or the interval when that is longer)."""
    interval = max(1, int(interval))
    if retry_after is not None and retry_after > 0:
        return float(min(max(retry_after, interval), max(RETRY_AFTER_CAP, interval)))
    return float(min(interval * 2 ** min(failures, 20), max(BACKOFF_CAP, interval)))


def jitter(interval: int) -> float:
    """A random delay added to each next poll (up to a tenth of the interval, 15 s at most), so
    triggers saved together do not stay due together."""
    return random.uniform(0, min(max(1, interval) * 0.1, 15.0))


def route_matches(route: dict[str, Any] | None, item_route: dict[str, Any] | None) -> bool:
    """Whether an item routed ``item_route`` belongs to a registration whose route is
    ``route``: every key and value of ``route`` is in ``item_route``."""
    if not route:
        return False
    if not isinstance(item_route, dict):
        return False
    return all(k in item_route and item_route[k] == v for k, v in route.items())


class Triggers:
    """The ``triggers`` and ``trigger_seen`` tables. ``seen_max``: ids kept per trigger."""

    def __init__(self, db: Database, seen_max: int = 5000) -> None:
        self.db = db
        self.seen_max = seen_max

    # ------------------------------------------------------------------ the rows
    @retry_on_disconnect
    def get_by_pipeline(self, pipeline_id: str) -> TriggerRow | None:
        with self.db.read() as conn:
            row = conn.execute(select(triggers).where(triggers.c.pipeline_id == pipeline_id)).first()
        return _trigger_row(row) if row else None

    @retry_on_disconnect
    def get_by_token(self, token: str) -> TriggerRow | None:
        """The trigger an instant delivery to ``/hooks/triggers/<token>`` is for."""
        with self.db.read() as conn:
            row = conn.execute(select(triggers).where(triggers.c.token == token)).first()
        return _trigger_row(row) if row else None

    @retry_on_disconnect
    def get(self, trigger_id: str) -> TriggerRow | None:
        with self.db.read() as conn:
            row = conn.execute(select(triggers).where(triggers.c.id == trigger_id)).first()
        return _trigger_row(row) if row else None

    def secret(self, trigger_id: str) -> str | None:
        """The decrypted registration secret of an instant trigger (None when it has none)."""
        with self.db.read() as conn:
            enc = conn.execute(
                select(triggers.c.secret_enc).where(triggers.c.id == trigger_id)
            ).scalar_one_or_none()
        return self.db.vault.decrypt(enc) if enc is not None else None

    @retry_on_disconnect
    def by_connector(self, connector: str, item_route: dict[str, Any] | None = None) -> list[TriggerRow]:
        """The connector's instant triggers that are not paused; with ``item_route``, those whose
        registration route it contains (:func:`route_matches`)."""
        with self.db.read() as conn:
            rows = conn.execute(
                select(triggers)
                .where(
                    triggers.c.connector == connector,
                    triggers.c.kind == "instant",
                    triggers.c.status != "paused",
                )
                .order_by(triggers.c.created_at, triggers.c.id)
            ).all()
        found = _trigger_row.all(rows)
        if item_route is None:
            return found
        return [t for t in found if route_matches(t["route"], item_route)]

    def save(
        self,
        pipeline_id: str,
        user_id: str,
        *,
        connector: str,
        trigger: str,
        kind: str,
        credential: str | None,
        config: dict[str, Any],
        spec_hash: str,
        interval: int | None,
        token: str | None = None,
        secret: str | None = None,
        registration: dict[str, Any] | None = None,
        route: dict[str, Any] | None = None,
    ) -> TriggerRow:
        """Create or update the pipeline's trigger row from its spec.

        A new spec (``spec_hash`` differs, or no row yet) starts over: no state (the next poll
        is a baseline), no seen ids, no failures, status ``active``, due now; an instant
        trigger's ``token``, ``secret``, ``registration`` and ``route`` are replaced. The same
        spec keeps state and seen ids, takes a new interval, and resumes a paused trigger (its
        pipeline was saved again)."""
        now = utcnow()
        with self.db.write() as conn:
            old = conn.execute(
                select(triggers.c.id, triggers.c.spec_hash, triggers.c.status, triggers.c.interval)
                .where(triggers.c.pipeline_id == pipeline_id)
            ).first()
            fresh = {
                "connector": connector,
                "trigger": trigger,
                "kind": kind,
                "credential": credential,
                "config": config,
                "spec_hash": spec_hash,
                "interval": interval,
                "token": token or new_id("trg").split("_", 1)[1],
                "secret_enc": self.db.vault.encrypt(secret) if secret is not None else None,
                "registration": registration,
                "route": route,
                "state": None,
                "status": "active",
                "failures": 0,
                "last_error": None,
                "next_poll_at": now if kind == "polling" else None,
                "last_polled_at": None,
                "notified_at": None,
                "updated_at": now,
            }
            if old is None:
                tid = new_id("trg")
                conn.execute(
                    triggers.insert().values(
                        id=tid, pipeline_id=pipeline_id, user_id=user_id, created_at=now, **fresh
                    )
                )
            elif old.spec_hash != spec_hash:
                tid = old.id
                conn.execute(delete(trigger_seen).where(trigger_seen.c.trigger_id == tid))
                conn.execute(update(triggers).where(triggers.c.id == tid).values(**fresh))
            else:
                tid = old.id
                values: dict[str, Any] = {"interval": interval, "updated_at": now}
                if old.status == "paused":
                    values.update(status="active", failures=0, last_error=None, notified_at=None)
                    if kind == "polling":
                        values["next_poll_at"] = now
                elif kind == "polling" and interval != old.interval:
                    values["next_poll_at"] = now + timedelta(seconds=jitter(interval or 1))
                conn.execute(update(triggers).where(triggers.c.id == tid).values(**values))
            return self._get(conn, tid)

    @staticmethod
    def _get(conn: Connection, trigger_id: str) -> TriggerRow:
        return _trigger_row(conn.execute(select(triggers).where(triggers.c.id == trigger_id)).one())

    def delete(self, pipeline_id: str) -> TriggerRow | None:
        """Remove the pipeline's trigger (and its seen ids); the row it had, None when none."""
        with self.db.write() as conn:
            row = conn.execute(select(triggers).where(triggers.c.pipeline_id == pipeline_id)).first()
            if row is None:
                return None
            conn.execute(delete(trigger_seen).where(trigger_seen.c.trigger_id == row.id))
            conn.execute(delete(triggers).where(triggers.c.id == row.id))
        return _trigger_row(row)

    # ------------------------------------------------------------------ polling
    @retry_on_disconnect
    def next_due(self) -> datetime | None:
        """When the earliest polling trigger is due (None when there is none)."""
        with self.db.read() as conn:
            return conn.execute(
                select(func.min(triggers.c.next_poll_at)).where(
                    triggers.c.kind == "polling", triggers.c.status != "paused"
                )
            ).scalar_one_or_none()

    @retry_on_disconnect
    def claim_due(self, limit: int = 100, lease_seconds: float = 300.0) -> list[TriggerRow]:
        """Polling triggers whose time has come (oldest due first), each leased to the caller:
        its ``next_poll_at`` moves ``lease_seconds`` ahead in an UPDATE conditional on it still
        being due, so a trigger is claimed by one caller only, however many ask at once. The
        rows come back with ``due_at`` (when they were due) in ``next_poll_at``."""
        now = utcnow()
        with self.db.write() as conn:
            due = conn.execute(
                select(triggers.c.id, triggers.c.next_poll_at)
                .where(
                    triggers.c.kind == "polling",
                    triggers.c.status != "paused",
                    triggers.c.next_poll_at <= now,
                )
                .order_by(triggers.c.next_poll_at)
                .limit(limit)
            ).all()
            if not due:
                return []
            due_at = {r.id: r.next_poll_at for r in due}
            claimed = conn.execute(
                update(triggers)
                .where(triggers.c.id.in_(list(due_at)), triggers.c.next_poll_at <= now)
                .values(next_poll_at=now + timedelta(seconds=lease_seconds))
                .returning(*triggers.c)
            ).all()
        out = []
        for r in claimed:
            row = _trigger_row(r)
            row["next_poll_at"] = due_at[r.id].isoformat()  # type: ignore[typeddict-item]
            out.append(row)
        out.sort(key=lambda t: t["next_poll_at"] or "")
        return out

    def set_registration(
        self, trigger_id: str, registration: dict[str, Any] | None, route: dict[str, Any] | None
    ) -> bool:
        """Record what ``register_trigger`` returned for an existing row (registered again)."""
        with self.db.write() as conn:
            res = conn.execute(
                update(triggers)
                .where(triggers.c.id == trigger_id)
                .values(registration=registration, route=route, updated_at=utcnow())
            )
        return res.rowcount == 1

    def record_success(
        self,
        trigger_id: str,
        spec_hash: str,
        state: dict[str, Any] | None,
        interval: int,
        *,
        note: dict[str, Any] | None = None,
    ) -> bool:
        """A poll worked: its state is kept, failures are forgotten (a failing trigger is
        active again and may be emailed about again) and the next poll is an interval (plus
        jitter) away; ``note`` (a run refused by billing) shows as ``last_error``. False when
        the trigger's spec changed or it was removed meanwhile."""
        now = utcnow()
        with self.db.write() as conn:
            res = conn.execute(
                update(triggers)
                .where(triggers.c.id == trigger_id, triggers.c.spec_hash == spec_hash)
                .values(
                    state=state,
                    status="active",
                    failures=0,
                    last_error=note,
                    notified_at=None,
                    last_polled_at=now,
                    next_poll_at=now + timedelta(seconds=interval + jitter(interval)),
                    updated_at=now,
                )
            )
        return res.rowcount == 1

    def record_failure(
        self,
        trigger_id: str,
        spec_hash: str,
        error: dict[str, Any],
        interval: int,
        *,
        fail_after: int,
        retry_after: float | None = None,
    ) -> TriggerRow | None:
        """A poll failed: one more failure in a row, the error kept, the next poll backed off
        (:func:`backoff_seconds`), and status ``failing`` from the ``fail_after``-th failure
        on. The row as it is now; None when the spec changed or the trigger was removed."""
        now = utcnow()
        with self.db.write() as conn:
            row = conn.execute(
                select(triggers.c.failures, triggers.c.status).where(
                    triggers.c.id == trigger_id, triggers.c.spec_hash == spec_hash
                )
            ).first()
            if row is None:
                return None
            failures = int(row.failures) + 1
            status = row.status
            if status != "paused":
                status = "failing" if failures >= fail_after else "active"
            delay = backoff_seconds(interval, failures, retry_after)
            conn.execute(
                update(triggers)
                .where(triggers.c.id == trigger_id)
                .values(
                    failures=failures,
                    status=status,
                    last_error=error,
                    last_polled_at=now,
                    next_poll_at=now + timedelta(seconds=delay),
                    updated_at=now,
                )
            )
            return self._get(conn, trigger_id)

    def claim_notice(self, trigger_id: str) -> bool:
        """Note that the owner is being emailed about this failing trigger; False when they
        were already (once per failing spell, whichever host asks)."""
        now = utcnow()
        with self.db.write() as conn:
            res = conn.execute(
                update(triggers)
                .where(triggers.c.id == trigger_id, triggers.c.notified_at.is_(None))
                .values(notified_at=now, updated_at=now)
            )
        return res.rowcount == 1

    # ------------------------------------------------------------------ credentials
    def pause_for_credential(self, user_id: str, credential_name: str, reason: str) -> int:
        """Pause the user's triggers that use credential ``credential_name`` (its refresh token
        was refused): they are neither polled nor take deliveries until the credential is fixed
        (:meth:`resume_for_credential`) or their pipeline is saved again. How many were paused."""
        now = utcnow()
        with self.db.write() as conn:
            res = conn.execute(
                update(triggers)
                .where(
                    triggers.c.user_id == user_id,
                    triggers.c.credential == credential_name,
                    triggers.c.status != "paused",
                )
                .values(
                    status="paused",
                    last_error={"type": "CredentialError", "message": reason[:500]},
                    updated_at=now,
                )
            )
        return res.rowcount

    def paused_for(self, user_id: str, credential_name: str) -> list[TriggerRow]:
        """The user's triggers paused that use credential ``credential_name``."""
        with self.db.read() as conn:
            rows = conn.execute(
                select(triggers).where(
                    triggers.c.user_id == user_id,
                    triggers.c.credential == credential_name,
                    triggers.c.status == "paused",
                )
            ).all()
        return _trigger_row.all(rows)

    def resume_for_credential(self, user_id: str, credential_name: str) -> int:
        """Resume the user's triggers paused for credential ``credential_name`` (due now, no
        failures). How many were resumed."""
        now = utcnow()
        with self.db.write() as conn:
            res = conn.execute(
                update(triggers)
                .where(
                    triggers.c.user_id == user_id,
                    triggers.c.credential == credential_name,
                    triggers.c.status == "paused",
                )
                .values(
                    status="active",
                    failures=0,
                    last_error=None,
                    notified_at=None,
                    next_poll_at=now,
                    updated_at=now,
                )
            )
        return res.rowcount

    # ------------------------------------------------------------------ seen ids
    @retry_on_disconnect
    def seen(self, trigger_id: str, item_ids: Iterable[str]) -> set[str]:
        """Which of ``item_ids`` the trigger has seen."""
        ids = list(dict.fromkeys(item_ids))
        found: set[str] = set()
        with self.db.read() as conn:
            for i in range(0, len(ids), _CHUNK):
                found.update(
                    conn.execute(
                        select(trigger_seen.c.item_id).where(
                            trigger_seen.c.trigger_id == trigger_id,
                            trigger_seen.c.item_id.in_(ids[i : i + _CHUNK]),
                        )
                    ).scalars()
                )
        return found

    def add_seen(self, trigger_id: str, item_ids: Iterable[str]) -> None:
        """Remember ``item_ids`` (in order: the last is the newest), then forget all but the
        newest ``seen_max`` of the trigger."""
        ids = list(dict.fromkeys(item_ids))
        if not ids:
            return
        now = utcnow()
        with self.db.write() as conn:
            for i in range(0, len(ids), _CHUNK):
                rows = [
                    {"trigger_id": trigger_id, "item_id": x,
                     "seen_at": now + timedelta(microseconds=i + j)}
                    for j, x in enumerate(ids[i : i + _CHUNK])
                ]  # fmt: skip
                conn.execute(
                    self.db.insert(trigger_seen)
                    .values(rows)
                    .on_conflict_do_nothing(
                        index_elements=[trigger_seen.c.trigger_id, trigger_seen.c.item_id]
                    )
                )
            self._trim(conn, trigger_id)

    def _trim(self, conn: Connection, trigger_id: str) -> None:
        oldest_kept = (
            select(trigger_seen.c.seen_at)
            .where(trigger_seen.c.trigger_id == trigger_id)
            .order_by(trigger_seen.c.seen_at.desc())
            .limit(1)
            .offset(self.seen_max - 1)
            .scalar_subquery()
        )
        conn.execute(
            delete(trigger_seen).where(
                trigger_seen.c.trigger_id == trigger_id, trigger_seen.c.seen_at < oldest_kept
            )
        )

    def claim_seen(self, trigger_id: str, item_id: str) -> bool:
        """Remember one id unless it was seen: True for the one caller that added it (a
        delivery's id, claimed before its runs start, so a retried delivery starts nothing)."""
        with self.db.write() as conn:
            added = conn.execute(
                self.db.insert(trigger_seen)
                .values(trigger_id=trigger_id, item_id=item_id, seen_at=utcnow())
                .on_conflict_do_nothing(
                    index_elements=[trigger_seen.c.trigger_id, trigger_seen.c.item_id]
                )
                .returning(trigger_seen.c.item_id)
            ).first()
            if added is not None:
                self._trim(conn, trigger_id)
        return added is not None

    def forget_seen(self, trigger_id: str, item_id: str) -> None:
        """Forget one id (a delivery whose runs could not start may be retried)."""
        with self.db.write() as conn:
            conn.execute(
                delete(trigger_seen).where(
                    trigger_seen.c.trigger_id == trigger_id, trigger_seen.c.item_id == item_id
                )
            )
