"""The Levqor store: all SQL of the host, in repositories per aggregate on one database.

SQLite (default, WAL) or PostgreSQL (``postgresql+psycopg://``), on SQLAlchemy Core, migrated by
Alembic. :class:`Store` is the :class:`~levqor_host.store.db.Database` (engine, transactions,
migrations) with its repositories::

    store.users         users                        users.py
    store.api_keys      API keys                     users.py
    store.auth          passwords, sessions, links   auth.py
    store.pipelines     pipelines and versions       pipelines.py
    store.credentials   encrypted credentials        credentials.py
    store.runs          runs                         runs.py
    store.steps         the step rows of runs        steps.py
    store.leases        claims and heartbeats        leases.py
    store.waits         waiting runs, their resume   waits.py
    store.locks         named locks with a lease     locks.py
    store.meta          deployment key-values        locks.py
    store.idempotency   idempotency keys             idempotency.py
    store.vault_keys    vault canary and rotation    vault_keys.py
    store.events        analytics events, usage      events.py
    store.referrals     referrals                    referrals.py
    store.ledger        the credit ledger's SQL      ledger.py
    store.triggers      app triggers, seen item ids  triggers.py

Every repository method runs in one short transaction of its own (``*_in`` methods: inside the
caller's, from :meth:`Store.write`) and returns plain dicts shaped by ``rows.py``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from levqor_host.store.auth import SignIns
from levqor_host.store.credentials import Credentials
from levqor_host.store.db import (
    MIGRATIONS_DIR,
    Conflict,
    Database,
    NotFound,
    StoreError,
    alembic_config,
    make_engine,
    normalize_url,
    script_heads,
)
from levqor_host.store.events import EventsRepository
from levqor_host.store.idempotency import IdempotencyKeys
from levqor_host.store.leases import Leases
from levqor_host.store.ledger import LedgerRepository
from levqor_host.store.locks import Locks, Meta
from levqor_host.store.pipelines import Pipelines, WebhookTarget
from levqor_host.store.referrals import ReferralsRepository
from levqor_host.store.runs import FINAL_RUN_STATUSES, RUN_STATUSES, Runs
from levqor_host.store.steps import Steps
from levqor_host.store.triggers import Triggers
from levqor_host.store.users import ApiKeys, Users
from levqor_host.store.vault_keys import VaultKeys
from levqor_host.store.waits import Waits

if TYPE_CHECKING:
    from levqor_host.security.vault import Vault

__all__ = [
    "FINAL_RUN_STATUSES",
    "MIGRATIONS_DIR",
    "RUN_STATUSES",
    "Conflict",
    "NotFound",
    "Store",
    "StoreError",
    "WebhookTarget",
    "alembic_config",
    "make_engine",
    "normalize_url",
    "script_heads",
]


class Store(Database):
    """All persistent state of a Levqor deployment: the database and its repositories.
    Thread-safe; one per app."""

    def __init__(self, url: str, vault: Vault) -> None:
        super().__init__(url, vault)
        self.users = Users(self)
        self.api_keys = ApiKeys(self)
        self.auth = SignIns(self, self.users)
        self.pipelines = Pipelines(self)
        self.credentials = Credentials(self)
        self.runs = Runs(self)
        self.steps = Steps(self)
        self.leases = Leases(self)
        self.waits = Waits(self)
        self.locks = Locks(self)
        self.meta = Meta(self)
        self.idempotency = IdempotencyKeys(self)
        self.vault_keys = VaultKeys(self, self.meta)
        self.events = EventsRepository(self)
        self.referrals = ReferralsRepository(self)
        self.ledger = LedgerRepository(self.dialect)  # the credit ledger's SQL
        self.triggers = Triggers(self)
