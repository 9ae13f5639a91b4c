"""Pipelines, their immutable versions, webhook tokens and secrets, webhook deliveries."""

from __future__ import annotations

import secrets
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection, and_, bindparam, select, update

from levqor_host.store.db import Database, new_id, retry_on_disconnect, utcnow
from levqor_host.store.rows import PipelineRow, RowMapper, UserRow, VersionRow
from levqor_host.store.tables import (
    credentials,
    pipeline_versions,
    pipelines,
    users,
    webhook_deliveries,
)
from levqor_host.store.users import USER_COLUMNS, require_user, user_row

__all__ = ["Pipelines", "WebhookTarget"]

_VERSION_CACHE_SIZE = 1024  # pipeline versions kept in memory per store

_pipeline_row = RowMapper(
    PipelineRow,
    version="current_version",
    has_webhook_secret=lambda r: r["webhook_secret_enc"] is not None,
    archived=lambda r: r["archived_at"] is not None,
)
_version_row = RowMapper(VersionRow)


@dataclass(frozen=True)
class WebhookTarget:
    """A webhook token's pipeline, its owner, its signing secret (None when unset) and the
    owner's credentials by name (name -> connector, never values)."""

    pipeline: PipelineRow
    user: UserRow
    secret: str | None = field(repr=False)
    credentials: dict[str, str]


_PIPELINE_COLS = (pipelines, pipeline_versions.c.doc)
_PIPELINE_JOIN = pipelines.join(
    pipeline_versions,
    and_(
        pipeline_versions.c.pipeline_id == pipelines.c.id,
        pipeline_versions.c.version == pipelines.c.current_version,
    ),
)
# Statements on the hot paths (API requests, the executor) are built once with bind parameters:
# building a statement and its cache key costs more than running it on SQLite.
_B = bindparam
_SQL_PIPELINE = (
    select(*_PIPELINE_COLS).select_from(_PIPELINE_JOIN).where(pipelines.c.id == _B("pipeline_id"))
)
_SQL_PIPELINE_OF_USER = _SQL_PIPELINE.where(pipelines.c.user_id == _B("user_id"))
# A webhook delivery's lookups (Pipelines.webhook_target): the pipeline by token with its owner,
# then the owner's credential names.
_SQL_WEBHOOK_TARGET = (
    select(*_PIPELINE_COLS, *USER_COLUMNS)
    .select_from(_PIPELINE_JOIN.join(users, users.c.id == pipelines.c.user_id))
    .where(pipelines.c.webhook_token == _B("token"), pipelines.c.archived_at.is_(None))
)
_SQL_CREDENTIAL_NAMES = select(credentials.c.name, credentials.c.connector).where(
    credentials.c.user_id == _B("user_id")
)
#: one version of a user's pipeline (``pipeline_id``, ``version``, ``user_id``)
SQL_VERSION_OF_USER = (
    select(pipeline_versions)
    .select_from(
        pipeline_versions.join(pipelines, pipelines.c.id == pipeline_versions.c.pipeline_id)
    )
    .where(
        pipeline_versions.c.pipeline_id == _B("pipeline_id"),
        pipeline_versions.c.version == _B("version"),
        pipelines.c.user_id == _B("user_id"),
    )
)
#: the current version number of a user's pipeline (``pipeline_id``, ``user_id``)
SQL_CURRENT_VERSION_OF_USER = select(pipelines.c.current_version).where(
    pipelines.c.id == _B("pipeline_id"), pipelines.c.user_id == _B("user_id")
)


class Pipelines:
    """Pipelines: a document saved as numbered, immutable versions; archived, never deleted."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self._versions: OrderedDict[tuple, VersionRow] = OrderedDict()
        self._versions_lock = threading.Lock()

    def create(self, user_id: str, name: str, doc: dict) -> PipelineRow:
        """Create a pipeline with version 1 of ``doc``. Raises :class:`NotFound` for an unknown user."""
        now = utcnow()
        pid = new_id("pl")
        with self.db.write() as conn:
            require_user(conn, user_id)
            conn.execute(
                pipelines.insert().values(
                    id=pid,
                    user_id=user_id,
                    name=name,
                    current_version=1,
                    webhook_token=secrets.token_urlsafe(24),
                    webhook_secret_enc=None,
                    archived_at=None,
                    created_at=now,
                    updated_at=now,
                )
            )
            conn.execute(
                pipeline_versions.insert().values(
                    pipeline_id=pid, version=1, doc=doc, created_at=now
                )
            )
            return self._get(conn, user_id, pid)

    @staticmethod
    def _get(conn: Connection, user_id: str | None, pipeline_id: str) -> PipelineRow | None:
        if user_id is None:
            row = conn.execute(_SQL_PIPELINE, {"pipeline_id": pipeline_id}).first()
        else:
            row = conn.execute(
                _SQL_PIPELINE_OF_USER, {"pipeline_id": pipeline_id, "user_id": user_id}
            ).first()
        return _pipeline_row(row) if row else None

    def update(
        self, user_id: str, pipeline_id: str, doc: dict, name: str | None = None
    ) -> PipelineRow | None:
        """Save ``doc`` as a new immutable version (and rename when ``name``); None if not the user's."""
        now = utcnow()
        values: dict[str, Any] = {
            "current_version": pipelines.c.current_version + 1,
            "updated_at": now,
        }
        if name is not None:
            values["name"] = name
        with self.db.write() as conn:
            version = conn.execute(
                update(pipelines)
                .where(pipelines.c.id == pipeline_id, pipelines.c.user_id == user_id)
                .values(**values)
                .returning(pipelines.c.current_version)
            ).scalar_one_or_none()
            if version is None:
                return None
            conn.execute(
                pipeline_versions.insert().values(
                    pipeline_id=pipeline_id, version=version, doc=doc, created_at=now
                )
            )
            return self._get(conn, user_id, pipeline_id)

    def get(self, user_id: str, pipeline_id: str) -> PipelineRow | None:
        """The pipeline with its current ``doc`` (archived ones too); None if not the user's."""
        with self.db.read() as conn:
            return self._get(conn, user_id, pipeline_id)

    @retry_on_disconnect
    def get_any(self, pipeline_id: str) -> PipelineRow | None:
        """The pipeline whoever owns it (archived ones too): for the scheduler and workers."""
        with self.db.read() as conn:
            return self._get(conn, None, pipeline_id)

    def list(self, user_id: str, include_archived: bool = False) -> list[PipelineRow]:
        """The user's pipelines with their current docs, newest first."""
        q = (
            select(*_PIPELINE_COLS)
            .select_from(_PIPELINE_JOIN)
            .where(pipelines.c.user_id == user_id)
            .order_by(pipelines.c.created_at.desc(), pipelines.c.id.desc())
        )
        if not include_archived:
            q = q.where(pipelines.c.archived_at.is_(None))
        with self.db.read() as conn:
            return _pipeline_row.all(conn.execute(q).all())

    def archive(self, user_id: str, pipeline_id: str) -> bool:
        """Archive (soft-delete) a pipeline; False if not the user's or already archived."""
        now = utcnow()
        with self.db.write() as conn:
            res = conn.execute(
                update(pipelines)
                .where(
                    pipelines.c.id == pipeline_id,
                    pipelines.c.user_id == user_id,
                    pipelines.c.archived_at.is_(None),
                )
                .values(archived_at=now, updated_at=now)
            )
        return res.rowcount == 1

    def set_enabled(self, user_id: str, pipeline_id: str, enabled: bool) -> PipelineRow | None:
        """Switch the user's pipeline on or off (its schedule fires and its app trigger is
        polled or registered only while on); the pipeline as it is now, None if not the user's."""
        with self.db.write() as conn:
            res = conn.execute(
                update(pipelines)
                .where(pipelines.c.id == pipeline_id, pipelines.c.user_id == user_id)
                .values(enabled=bool(enabled), updated_at=utcnow())
            )
            if res.rowcount != 1:
                return None
            return self._get(conn, user_id, pipeline_id)

    def list_versions(self, user_id: str, pipeline_id: str) -> list[VersionRow] | None:
        """Every version (with doc), oldest first; None if not the user's pipeline."""
        with self.db.read() as conn:
            owned = conn.execute(
                select(pipelines.c.id).where(
                    pipelines.c.id == pipeline_id, pipelines.c.user_id == user_id
                )
            ).first()
            if not owned:
                return None
            rows = conn.execute(
                select(pipeline_versions)
                .where(pipeline_versions.c.pipeline_id == pipeline_id)
                .order_by(pipeline_versions.c.version)
            ).all()
        return _version_row.all(rows)

    @retry_on_disconnect
    def get_version(self, user_id: str, pipeline_id: str, version: int) -> VersionRow | None:
        """One version of the user's pipeline; None if unknown or not the user's. Versions are
        immutable and never deleted, so the ones found are kept in a small in-process cache
        (every run reads its version); treat the returned ``doc`` as read-only."""
        key = (user_id, pipeline_id, version)
        with self._versions_lock:
            hit = self._versions.get(key)
            if hit is not None:
                self._versions.move_to_end(key)
                return VersionRow(**hit)
        params = {"pipeline_id": pipeline_id, "version": version, "user_id": user_id}
        with self.db.read() as conn:
            row = conn.execute(SQL_VERSION_OF_USER, params).first()
        if row is None:
            return None
        found = _version_row(row)
        with self._versions_lock:
            self._versions[key] = found
            while len(self._versions) > _VERSION_CACHE_SIZE:
                self._versions.popitem(last=False)
        return VersionRow(**found)

    @retry_on_disconnect
    def webhook_target(self, token: str) -> WebhookTarget | None:
        """What a webhook delivery to ``token`` needs, in one read transaction of two
        statements: the (not archived) pipeline with its current document, its owner, its
        decrypted signing secret and the owner's credential names. None for an unknown token."""
        with self.db.read() as conn:
            row = conn.execute(_SQL_WEBHOOK_TARGET, {"token": token}).first()
            if row is None:
                return None
            creds = conn.execute(_SQL_CREDENTIAL_NAMES, {"user_id": row.user_id}).all()
        enc = row.webhook_secret_enc
        return WebhookTarget(
            pipeline=_pipeline_row(row),
            user=user_row(row, "u_"),
            secret=self.db.vault.decrypt(enc) if enc is not None else None,
            credentials={c.name: c.connector for c in creds},
        )

    def set_webhook_secret(self, user_id: str, pipeline_id: str, secret: str | None) -> bool:
        """Set (encrypted) or clear the webhook signing secret; False if not the user's."""
        enc = self.db.vault.encrypt(secret) if secret is not None else None
        with self.db.write() as conn:
            res = conn.execute(
                update(pipelines)
                .where(pipelines.c.id == pipeline_id, pipelines.c.user_id == user_id)
                .values(webhook_secret_enc=enc, updated_at=utcnow())
            )
        return res.rowcount == 1

    def get_webhook_secret(self, pipeline_id: str) -> str | None:
        """The decrypted webhook secret, None when unset or the pipeline is unknown."""
        with self.db.read() as conn:
            enc = conn.execute(
                select(pipelines.c.webhook_secret_enc).where(pipelines.c.id == pipeline_id)
            ).scalar_one_or_none()
        return self.db.vault.decrypt(enc) if enc is not None else None

    @retry_on_disconnect
    def list_scheduled(self) -> list[PipelineRow]:
        """Every enabled, not archived pipeline whose current doc has a ``schedule`` trigger
        (all users)."""
        q = (
            select(*_PIPELINE_COLS)
            .select_from(_PIPELINE_JOIN)
            .where(pipelines.c.archived_at.is_(None), pipelines.c.enabled.is_(True))
            .order_by(pipelines.c.created_at, pipelines.c.id)
        )
        with self.db.read() as conn:
            rows = conn.execute(q).all()
        out = []
        for r in rows:
            trigger = r.doc.get("trigger") if isinstance(r.doc, dict) else None
            if isinstance(trigger, dict) and trigger.get("type") == "schedule":
                out.append(_pipeline_row(r))
        return out

    def record_delivery(self, pipeline_id: str, delivery_id: str) -> bool:
        """Remember a webhook delivery id; False when it was seen before (a replay)."""
        stmt = (
            self.db.insert(webhook_deliveries)
            .values(pipeline_id=pipeline_id, delivery_id=delivery_id, created_at=utcnow())
            .on_conflict_do_nothing(
                index_elements=[webhook_deliveries.c.pipeline_id, webhook_deliveries.c.delivery_id]
            )
            .returning(webhook_deliveries.c.delivery_id)
        )
        # RETURNING rather than rowcount: psycopg reports no rowcount for INSERT ... DO NOTHING
        with self.db.write() as conn:
            return conn.execute(stmt).first() is not None
