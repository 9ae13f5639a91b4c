"""App triggers and OAuth2 credentials.

A pipeline can be switched off (``enabled``). ``triggers`` holds an enabled pipeline's app
trigger: what it polls or is registered for upstream, the state between polls, its health;
``trigger_seen`` the bounded set of item and delivery ids it has seen. A credential made by
"Connect" records that it is OAuth2, the account's name, when its access token expires and
whether its refresh token was refused (``status`` ``broken``).

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-04
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column(
        "pipelines", sa.Column("enabled", sa.Boolean(), nullable=False, server_default=sa.true())
    )
    for col in (
        sa.Column("auth", sa.String(16), nullable=True),
        sa.Column("account", sa.String(200), nullable=True),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("status", sa.String(16), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=True),
    ):
        op.add_column("credentials", col)
    op.create_table(
        "triggers",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column(
            "pipeline_id", sa.String(64),
            sa.ForeignKey("pipelines.id", ondelete="CASCADE", name="fk_triggers_pipeline_id_pipelines"),
            nullable=False,
        ),
        sa.Column(
            "user_id", sa.String(64),
            sa.ForeignKey("users.id", ondelete="CASCADE", name="fk_triggers_user_id_users"),
            nullable=False,
        ),
        sa.Column("connector", sa.String(100), nullable=False),
        sa.Column("trigger", sa.String(100), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("credential", sa.String(200), nullable=True),
        sa.Column("config", sa.JSON(), nullable=False),
        sa.Column("spec_hash", sa.String(64), nullable=False),
        sa.Column("interval", sa.Integer(), nullable=True),
        sa.Column("token", sa.String(64), nullable=False),
        sa.Column("secret_enc", sa.Text(), nullable=True),
        sa.Column("registration", sa.JSON(), nullable=True),
        sa.Column("route", sa.JSON(), nullable=True),
        sa.Column("state", sa.JSON(), nullable=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("failures", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("last_error", sa.JSON(), nullable=True),
        sa.Column("next_poll_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_polled_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("notified_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("pipeline_id", name="uq_triggers_pipeline_id"),
        sa.UniqueConstraint("token", name="uq_triggers_token"),
    )
    op.create_index("ix_triggers_kind_next_poll_at", "triggers", ["kind", "next_poll_at"])
    op.create_index("ix_triggers_connector", "triggers", ["connector"])
    op.create_table(
        "trigger_seen",
        sa.Column(
            "trigger_id", sa.String(64),
            sa.ForeignKey("triggers.id", ondelete="CASCADE", name="fk_trigger_seen_trigger_id_triggers"),
            nullable=False,
        ),
        sa.Column("item_id", sa.String(220), nullable=False),
        sa.Column("seen_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("trigger_id", "item_id", name="pk_trigger_seen"),
    )
    op.create_index(
        "ix_trigger_seen_trigger_id_seen_at", "trigger_seen", ["trigger_id", "seen_at"]
    )


def downgrade() -> None:
    op.drop_index("ix_trigger_seen_trigger_id_seen_at", table_name="trigger_seen")
    op.drop_table("trigger_seen")
    op.drop_index("ix_triggers_connector", table_name="triggers")
    op.drop_index("ix_triggers_kind_next_poll_at", table_name="triggers")
    op.drop_table("triggers")
    with op.batch_alter_table("credentials") as batch:
        for name in ("updated_at", "status", "expires_at", "account", "auth"):
            batch.drop_column(name)
    with op.batch_alter_table("pipelines") as batch:
        batch.drop_column("enabled")
