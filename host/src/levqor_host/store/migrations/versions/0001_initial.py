"""Initial schema: every table of the Levqor store.

Revision ID: 0001
Revises:
Create Date: 2025-01-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

ID = 64


def _ts(name: str, nullable: bool = True) -> sa.Column:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def _json(name: str, nullable: bool = True) -> sa.Column:
    return sa.Column(name, sa.JSON(), nullable=nullable)


def _user_fk(table: str, column: str = "user_id") -> sa.ForeignKeyConstraint:
    return sa.ForeignKeyConstraint(
        [column], ["users.id"], name=f"fk_{table}_{column}_users", ondelete="CASCADE"
    )


def upgrade() -> None:
    op.create_table(
        "users",
        sa.Column("id", sa.String(ID), nullable=False),
        sa.Column("email", sa.String(320), nullable=False),
        sa.Column("name", sa.String(200), nullable=True),
        sa.Column("plan", sa.String(40), nullable=False),
        sa.Column("is_admin", sa.Boolean(), nullable=False),
        sa.Column("referral_code", sa.String(32), nullable=False),
        _ts("created_at", nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_users"),
        sa.UniqueConstraint("email", name="uq_users_email"),
        sa.UniqueConstraint("referral_code", name="uq_users_referral_code"),
    )

    op.create_table(
        "api_keys",
        sa.Column("id", sa.String(ID), nullable=False),
        sa.Column("user_id", sa.String(ID), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("prefix", sa.String(16), nullable=False),
        sa.Column("key_hash", sa.String(64), nullable=False),
        _json("scopes", nullable=False),
        _ts("created_at", nullable=False),
        _ts("last_used_at"),
        _ts("revoked_at"),
        sa.PrimaryKeyConstraint("id", name="pk_api_keys"),
        _user_fk("api_keys"),
        sa.UniqueConstraint("prefix", name="uq_api_keys_prefix"),
    )
    op.create_index("ix_api_keys_user_id", "api_keys", ["user_id"])

    op.create_table(
        "pipelines",
        sa.Column("id", sa.String(ID), nullable=False),
        sa.Column("user_id", sa.String(ID), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("current_version", sa.Integer(), nullable=False),
        sa.Column("webhook_token", sa.String(64), nullable=False),
        sa.Column("webhook_secret_enc", sa.Text(), nullable=True),
        _ts("archived_at"),
        _ts("created_at", nullable=False),
        _ts("updated_at", nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_pipelines"),
        _user_fk("pipelines"),
        sa.UniqueConstraint("webhook_token", name="uq_pipelines_webhook_token"),
    )
    op.create_index("ix_pipelines_user_id_created_at", "pipelines", ["user_id", "created_at"])

    op.create_table(
        "pipeline_versions",
        sa.Column("pipeline_id", sa.String(ID), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        _json("doc", nullable=False),
        _ts("created_at", nullable=False),
        sa.PrimaryKeyConstraint("pipeline_id", "version", name="pk_pipeline_versions"),
        sa.ForeignKeyConstraint(
            ["pipeline_id"],
            ["pipelines.id"],
            name="fk_pipeline_versions_pipeline_id_pipelines",
            ondelete="CASCADE",
        ),
    )

    op.create_table(
        "credentials",
        sa.Column("id", sa.String(ID), nullable=False),
        sa.Column("user_id", sa.String(ID), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("connector", sa.String(100), nullable=False),
        sa.Column("value_enc", sa.Text(), nullable=False),
        _ts("created_at", nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_credentials"),
        _user_fk("credentials"),
        sa.UniqueConstraint("user_id", "name", name="uq_credentials_user_id_name"),
    )

    op.create_table(
        "runs",
        sa.Column("id", sa.String(ID), nullable=False),
        sa.Column("user_id", sa.String(ID), nullable=False),
        sa.Column("pipeline_id", sa.String(ID), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("trigger", sa.String(16), nullable=False),
        _json("input"),
        sa.Column("idempotency_key", sa.String(200), nullable=True),
        sa.Column("retry_of", sa.String(ID), nullable=True),
        _json("error"),
        sa.Column("lease_owner", sa.String(200), nullable=True),
        _ts("lease_expires_at"),
        sa.Column("claims", sa.Integer(), nullable=False),
        sa.Column("cancel_requested", sa.Boolean(), nullable=False),
        _ts("created_at", nullable=False),
        _ts("started_at"),
        _ts("finished_at"),
        sa.PrimaryKeyConstraint("id", name="pk_runs"),
        _user_fk("runs"),
        sa.ForeignKeyConstraint(
            ["pipeline_id"],
            ["pipelines.id"],
            name="fk_runs_pipeline_id_pipelines",
            ondelete="CASCADE",
        ),
        sa.UniqueConstraint("user_id", "idempotency_key", name="uq_runs_user_id_idempotency_key"),
    )
    op.create_index(
        "ix_runs_status_lease_created", "runs", ["status", "lease_expires_at", "created_at"]
    )
    op.create_index("ix_runs_user_id_created_at", "runs", ["user_id", "created_at"])

    op.create_table(
        "run_steps",
        sa.Column("run_id", sa.String(ID), nullable=False),
        sa.Column("step_id", sa.String(100), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("connector", sa.String(100), nullable=False),
        sa.Column("action", sa.String(100), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        _json("input"),
        _json("output"),
        _json("error"),
        _ts("started_at"),
        _ts("finished_at"),
        sa.PrimaryKeyConstraint("run_id", "step_id", name="pk_run_steps"),
        sa.ForeignKeyConstraint(
            ["run_id"], ["runs.id"], name="fk_run_steps_run_id_runs", ondelete="CASCADE"
        ),
    )

    op.create_table(
        "webhook_deliveries",
        sa.Column("pipeline_id", sa.String(ID), nullable=False),
        sa.Column("delivery_id", sa.String(200), nullable=False),
        _ts("created_at", nullable=False),
        sa.PrimaryKeyConstraint("pipeline_id", "delivery_id", name="pk_webhook_deliveries"),
        sa.ForeignKeyConstraint(
            ["pipeline_id"],
            ["pipelines.id"],
            name="fk_webhook_deliveries_pipeline_id_pipelines",
            ondelete="CASCADE",
        ),
    )

    op.create_table(
        "locks",
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("owner", sa.String(200), nullable=False),
        _ts("acquired_at", nullable=False),
        _ts("expires_at", nullable=False),
        sa.PrimaryKeyConstraint("name", name="pk_locks"),
    )

    op.create_table(
        "meta",
        sa.Column("key", sa.String(200), nullable=False),
        sa.Column("value", sa.Text(), nullable=True),
        _ts("updated_at", nullable=False),
        sa.PrimaryKeyConstraint("key", name="pk_meta"),
    )

    op.create_table(
        "credit_ledger",
        sa.Column("id", sa.String(ID), nullable=False),
        sa.Column("user_id", sa.String(ID), nullable=False),
        sa.Column("delta", sa.Integer(), nullable=False),
        sa.Column("reason", sa.String(100), nullable=False),
        sa.Column("run_id", sa.String(ID), nullable=True),
        sa.Column("external_id", sa.String(200), nullable=True),
        _ts("created_at", nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_credit_ledger"),
        _user_fk("credit_ledger"),
        sa.UniqueConstraint("external_id", name="uq_credit_ledger_external_id"),
    )
    op.create_index(
        "ix_credit_ledger_user_id_created_at", "credit_ledger", ["user_id", "created_at"]
    )

    op.create_table(
        "usage_daily",
        sa.Column("user_id", sa.String(ID), nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("jobs", sa.Integer(), nullable=False),
        sa.Column("steps", sa.Integer(), nullable=False),
        sa.Column("credits", sa.Integer(), nullable=False),
        sa.Column("cost_saving_minutes", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("user_id", "day", name="pk_usage_daily"),
        _user_fk("usage_daily"),
    )

    op.create_table(
        "referrals",
        sa.Column("id", sa.String(ID), nullable=False),
        sa.Column("referrer_id", sa.String(ID), nullable=False),
        sa.Column("referred_user_id", sa.String(ID), nullable=False),
        sa.Column("code", sa.String(32), nullable=False),
        _ts("rewarded_at"),
        _ts("created_at", nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_referrals"),
        _user_fk("referrals", "referrer_id"),
        _user_fk("referrals", "referred_user_id"),
        sa.UniqueConstraint("referred_user_id", name="uq_referrals_referred_user_id"),
    )
    op.create_index("ix_referrals_referrer_id", "referrals", ["referrer_id"])

    op.create_table(
        "events",
        sa.Column("id", sa.String(ID), nullable=False),
        sa.Column("user_id", sa.String(ID), nullable=True),
        sa.Column("type", sa.String(100), nullable=False),
        sa.Column("email_hash", sa.String(64), nullable=True),
        _json("props"),
        _ts("created_at", nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_events"),
    )
    op.create_index("ix_events_type_created_at", "events", ["type", "created_at"])


def downgrade() -> None:
    op.drop_index("ix_events_type_created_at", table_name="events")
    op.drop_table("events")
    op.drop_index("ix_referrals_referrer_id", table_name="referrals")
    op.drop_table("referrals")
    op.drop_table("usage_daily")
    op.drop_index("ix_credit_ledger_user_id_created_at", table_name="credit_ledger")
    op.drop_table("credit_ledger")
    op.drop_table("meta")
    op.drop_table("locks")
    op.drop_table("webhook_deliveries")
    op.drop_table("run_steps")
    op.drop_index("ix_runs_user_id_created_at", table_name="runs")
    op.drop_index("ix_runs_status_lease_created", table_name="runs")
    op.drop_table("runs")
    op.drop_table("credentials")
    op.drop_table("pipeline_versions")
    op.drop_index("ix_pipelines_user_id_created_at", table_name="pipelines")
    op.drop_table("pipelines")
    op.drop_index("ix_api_keys_user_id", table_name="api_keys")
    op.drop_table("api_keys")
    op.drop_table("users")
