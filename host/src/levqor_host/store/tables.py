"""SQLAlchemy Core tables of the Levqor store.

The schema itself is created and changed only by the Alembic migrations in ``migrations/``;
this module mirrors it for queries. Every time is a timezone-aware UTC datetime (:class:`UTCDateTime`),
every id is text (``usr_``, ``key_``, ``pl_``, ``cred_``, ``run_`` + uuid4 hex, ...).
"""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    Date,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
    UniqueConstraint,
)
from sqlalchemy.types import TypeDecorator

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

metadata = MetaData(naming_convention=NAMING_CONVENTION)


class UTCDateTime(TypeDecorator):
    """``DateTime(timezone=True)`` that always hands back aware UTC datetimes.

    SQLite has no time zones: values are stored as naive UTC (so that text comparison orders
    them correctly) and come back with ``tzinfo=UTC``. Naive input is taken to be UTC.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value, dialect):
        if value is None:
            return None
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        value = value.astimezone(UTC)
        if dialect.name == "sqlite":
            return value.replace(tzinfo=None)
        return value

    def process_result_value(self, value, dialect):
        if value is None:
            return None
        if isinstance(value, str):  # raw text from a SQLite expression
            value = datetime.fromisoformat(value)
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


def JSONType() -> JSON:  # noqa: N802 - reads like a type
    """JSON where Python ``None`` is SQL NULL (not the JSON text ``null``)."""
    return JSON(none_as_null=True)


ID = 64  # length of id columns

users = Table(
    "users",
    metadata,
    Column("id", String(ID), primary_key=True),
    Column("email", String(320), nullable=False, unique=True),
    Column("name", String(200)),
    Column("plan", String(40), nullable=False, default="free"),
    Column("is_admin", Boolean, nullable=False, default=False),
    Column("referral_code", String(32), nullable=False, unique=True),
    Column("created_at", UTCDateTime, nullable=False),
)

api_keys = Table(
    "api_keys",
    metadata,
    Column("id", String(ID), primary_key=True),
    Column("user_id", String(ID), ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
    Column("name", String(200), nullable=False),
    Column("prefix", String(16), nullable=False, unique=True),
    Column("key_hash", String(64), nullable=False),
    Column("scopes", JSONType(), nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("last_used_at", UTCDateTime),
    Column("revoked_at", UTCDateTime),
    Index("ix_api_keys_user_id", "user_id"),
)

pipelines = Table(
    "pipelines",
    metadata,
    Column("id", String(ID), primary_key=True),
    Column("user_id", String(ID), ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
    Column("name", String(200), nullable=False),
    Column("current_version", Integer, nullable=False),
    Column("webhook_token", String(64), nullable=False, unique=True),
    Column("webhook_secret_enc", Text),
    Column("archived_at", UTCDateTime),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    # off: its schedule does not fire, its app trigger is neither polled nor registered
    Column("enabled", Boolean, nullable=False, server_default="1"),
    Index("ix_pipelines_user_id_created_at", "user_id", "created_at"),
)

pipeline_versions = Table(
    "pipeline_versions",
    metadata,
    Column(
        "pipeline_id", String(ID), ForeignKey("pipelines.id", ondelete="CASCADE"), nullable=False
    ),
    Column("version", Integer, nullable=False),
    Column("doc", JSONType(), nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    PrimaryKeyConstraint("pipeline_id", "version"),
)

credentials = Table(
    "credentials",
    metadata,
    Column("id", String(ID), primary_key=True),
    Column("user_id", String(ID), ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
    Column("name", String(200), nullable=False),
    Column("connector", String(100), nullable=False),
    Column("value_enc", Text, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    # OAuth2 credentials ("Connect"): auth = 'oauth2', the account name shown, when the access
    # token expires (refreshed before), status 'broken' once the refresh token is refused
    Column("auth", String(16)),
    Column("account", String(200)),
    Column("expires_at", UTCDateTime),
    Column("status", String(16)),
    Column("updated_at", UTCDateTime),
    UniqueConstraint("user_id", "name", name="uq_credentials_user_id_name"),
)

runs = Table(
    "runs",
    metadata,
    Column("id", String(ID), primary_key=True),
    Column("user_id", String(ID), ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
    Column(
        "pipeline_id", String(ID), ForeignKey("pipelines.id", ondelete="CASCADE"), nullable=False
    ),
    Column("version", Integer, nullable=False),
    Column("status", String(16), nullable=False),
    Column("trigger", String(16), nullable=False),
    Column("input", JSONType()),
    Column("idempotency_key", String(200)),
    Column("retry_of", String(ID)),
    Column("error", JSONType()),
    Column("lease_owner", String(200)),
    Column("lease_expires_at", UTCDateTime),
    Column("claims", Integer, nullable=False, default=0),
    # claims since a step last finished, and the finished steps the last claim found (see
    # Leases.claim_next): a run that keeps losing its worker without progress is abandoned
    Column("claims_since_progress", Integer, nullable=False, default=0, server_default="0"),
    Column("finished_steps", Integer, nullable=False, default=0, server_default="0"),
    Column("cancel_requested", Boolean, nullable=False, default=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("started_at", UTCDateTime),
    Column("finished_at", UTCDateTime),
    # set in the transaction that settles a final run (credits, usage, events): exactly once
    Column("settled_at", UTCDateTime),
    # what the run answered (a stop step's output, else its last top-level step's)
    Column("output", JSONType()),
    # a sub-pipeline's run: the run and the step path that started it
    Column("parent_run_id", String(ID)),
    Column("parent_step", String(400)),
    # a waiting run: what it waits for ({"kind", "step", ..., "nonce"}) and when a timer or an
    # approval's timeout resumes it (the sweep reads status = 'waiting' AND resume_at <= now)
    Column("wait", JSONType()),
    Column("resume_at", UTCDateTime),
    UniqueConstraint("user_id", "idempotency_key", name="uq_runs_user_id_idempotency_key"),
    Index("ix_runs_status_lease_created", "status", "lease_expires_at", "created_at"),
    Index("ix_runs_user_id_created_at", "user_id", "created_at"),
    Index("ix_runs_settled_finished", "settled_at", "finished_at"),
    Index("ix_runs_status_resume_at", "status", "resume_at"),
    Index("ix_runs_parent_run_id", "parent_run_id"),
)

run_steps = Table(
    "run_steps",
    metadata,
    Column("run_id", String(ID), ForeignKey("runs.id", ondelete="CASCADE"), nullable=False),
    Column("step_id", String(400), nullable=False),  # the step's path: each[17].send
    Column("position", Integer, nullable=False),
    Column("connector", String(100), nullable=False),
    Column("action", String(100), nullable=False),
    Column("status", String(16), nullable=False),
    Column("attempts", Integer, nullable=False, default=0),
    Column("input", JSONType()),
    Column("output", JSONType()),
    Column("error", JSONType()),
    Column("started_at", UTCDateTime),
    Column("finished_at", UTCDateTime),
    # the innermost loop item the step ran in, from its path (store/step_paths.py):
    # "outer[2].inner" and 5 for "outer[2].inner[5].send"; NULL outside any loop
    Column("loop_path", String(400)),
    Column("item_index", Integer),
    # a metered step's token usage (levqor_kernel.ai.usage_of); NULL for every other step
    Column("model", String(200)),
    Column("input_tokens", BigInteger),
    Column("output_tokens", BigInteger),
    PrimaryKeyConstraint("run_id", "step_id"),
    Index("ix_run_steps_loop", "run_id", "loop_path", "item_index"),
)

webhook_deliveries = Table(
    "webhook_deliveries",
    metadata,
    Column(
        "pipeline_id", String(ID), ForeignKey("pipelines.id", ondelete="CASCADE"), nullable=False
    ),
    Column("delivery_id", String(200), nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    PrimaryKeyConstraint("pipeline_id", "delivery_id"),
)

locks = Table(
    "locks",
    metadata,
    Column("name", String(200), primary_key=True),
    Column("owner", String(200), nullable=False),
    Column("acquired_at", UTCDateTime, nullable=False),
    Column("expires_at", UTCDateTime, nullable=False),
)

meta = Table(
    "meta",
    metadata,
    Column("key", String(200), primary_key=True),
    Column("value", Text),
    Column("updated_at", UTCDateTime, nullable=False),
)

credit_ledger = Table(
    "credit_ledger",
    metadata,
    Column("id", String(ID), primary_key=True),
    Column("user_id", String(ID), ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
    Column("delta", Integer, nullable=False),
    Column("reason", String(100), nullable=False),
    Column("run_id", String(ID)),
    Column("external_id", String(200), unique=True),
    Column("created_at", UTCDateTime, nullable=False),
    Index("ix_credit_ledger_user_id_created_at", "user_id", "created_at"),
)

usage_daily = Table(
    "usage_daily",
    metadata,
    Column("user_id", String(ID), ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
    Column("day", Date, nullable=False),
    Column("jobs", Integer, nullable=False, default=0),
    Column("steps", Integer, nullable=False, default=0),
    Column("credits", Integer, nullable=False, default=0),
    Column("cost_saving_minutes", Integer, nullable=False, default=0),
    Column("input_tokens", BigInteger, nullable=False, default=0, server_default="0"),
    Column("output_tokens", BigInteger, nullable=False, default=0, server_default="0"),
    PrimaryKeyConstraint("user_id", "day"),
)

referrals = Table(
    "referrals",
    metadata,
    Column("id", String(ID), primary_key=True),
    Column("referrer_id", String(ID), ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
    Column(
        "referred_user_id",
        String(ID),
        ForeignKey("users.id", ondelete="CASCADE"),
        nullable=False,
        unique=True,
    ),
    Column("code", String(32), nullable=False),
    Column("rewarded_at", UTCDateTime),
    Column("created_at", UTCDateTime, nullable=False),
    Index("ix_referrals_referrer_id", "referrer_id"),
)

events = Table(
    "events",
    metadata,
    Column("id", String(ID), primary_key=True),
    Column("user_id", String(ID)),
    Column("type", String(100), nullable=False),
    Column("email_hash", String(64)),
    Column("props", JSONType()),
    Column("created_at", UTCDateTime, nullable=False),
    Index("ix_events_type_created_at", "type", "created_at"),
)

# Issue 7 (billing): external events applied exactly once, and each user's billing account.
processed_events = Table(
    "processed_events",
    metadata,
    Column("key", String(200), primary_key=True),  # "stripe:evt_..."
    Column("type", String(100), nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
)

billing_accounts = Table(
    "billing_accounts",
    metadata,
    Column("user_id", String(ID), ForeignKey("users.id", ondelete="CASCADE"), primary_key=True),
    Column("provider", String(40), nullable=False),
    Column("customer_id", String(200), unique=True),
    Column("subscription_id", String(200)),
    Column("status", String(40)),
    # the (event created, rank) of the last plan change applied: older deliveries are ignored
    Column("plan_event_at", Integer, nullable=False, default=0),
    Column("plan_event_rank", Integer, nullable=False, default=0),
    Column("updated_at", UTCDateTime, nullable=False),
)

# Issue 4 (sign-in): host passwords, sessions, one-time login links, external identities.
# Secrets (session ids, link tokens) are stored as SHA-256 hashes only.
user_passwords = Table(
    "user_passwords",
    metadata,
    Column("user_id", String(ID), ForeignKey("users.id", ondelete="CASCADE"), primary_key=True),
    Column("password_hash", String(400), nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
)

sessions = Table(
    "sessions",
    metadata,
    Column("id_hash", String(64), primary_key=True),
    Column("user_id", String(ID), ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
    Column("csrf_token", String(64), nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("expires_at", UTCDateTime, nullable=False),
    Index("ix_sessions_user_id", "user_id"),
)

login_links = Table(
    "login_links",
    metadata,
    Column("token_hash", String(64), primary_key=True),
    Column("user_id", String(ID), ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("expires_at", UTCDateTime, nullable=False),
    Column("used_at", UTCDateTime),
)

user_identities = Table(
    "user_identities",
    metadata,
    Column("provider", String(40), nullable=False),
    Column("subject", String(200), nullable=False),
    Column("user_id", String(ID), ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    PrimaryKeyConstraint("provider", "subject"),
)

#: the first answer to a creating request sent with an ``Idempotency-Key`` (see
#: :mod:`levqor_host.store.idempotency`); ``status`` is NULL while that request is running
idempotency_keys = Table(
    "idempotency_keys",
    metadata,
    Column("user_id", String(ID), ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
    Column("idem_key", String(200), nullable=False),
    Column("fingerprint", String(64), nullable=False),
    Column("status", Integer),
    Column("body", Text),
    Column("location", String(500)),
    Column("created_at", UTCDateTime, nullable=False),
    PrimaryKeyConstraint("user_id", "idem_key"),
    Index("ix_idempotency_keys_created_at", "created_at"),
)

# An enabled pipeline's app trigger (one per pipeline): what it polls or is registered for,
# its state between polls, and how it is doing. Rows follow the pipeline's current version.
triggers = Table(
    "triggers",
    metadata,
    Column("id", String(ID), primary_key=True),
    Column(
        "pipeline_id", String(ID), ForeignKey("pipelines.id", ondelete="CASCADE"),
        nullable=False, unique=True,
    ),
    Column("user_id", String(ID), ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
    Column("connector", String(100), nullable=False),
    Column("trigger", String(100), nullable=False),
    Column("kind", String(16), nullable=False),  # polling | instant
    Column("credential", String(200)),  # the owner's credential name
    Column("config", JSONType(), nullable=False),
    Column("spec_hash", String(64), nullable=False),  # what it was built from; a change re-registers
    Column("interval", Integer),  # polling: seconds between polls
    Column("token", String(64), nullable=False, unique=True),  # instant: /hooks/triggers/<token>
    Column("secret_enc", Text),  # instant: the registration's secret, encrypted
    Column("registration", JSONType()),  # what register_trigger returned
    Column("route", JSONType()),  # connector-wide webhooks: the items this registration takes
    Column("state", JSONType()),  # polling: what poll_trigger returned last (None: never polled)
    Column("status", String(16), nullable=False),  # active | failing | paused
    Column("failures", Integer, nullable=False, server_default="0"),
    Column("last_error", JSONType()),
    Column("next_poll_at", UTCDateTime),
    Column("last_polled_at", UTCDateTime),
    Column("notified_at", UTCDateTime),  # the owner was emailed that it is failing
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    Index("ix_triggers_kind_next_poll_at", "kind", "next_poll_at"),
    Index("ix_triggers_connector", "connector"),
)

# The item ids (and delivery ids, prefixed "delivery:") a trigger has seen, newest kept.
trigger_seen = Table(
    "trigger_seen",
    metadata,
    Column(
        "trigger_id", String(ID), ForeignKey("triggers.id", ondelete="CASCADE"), nullable=False
    ),
    Column("item_id", String(220), nullable=False),
    Column("seen_at", UTCDateTime, nullable=False),
    PrimaryKeyConstraint("trigger_id", "item_id", name="pk_trigger_seen"),
    Index("ix_trigger_seen_trigger_id_seen_at", "trigger_id", "seen_at"),
)
