"""Billing: external events applied once (processed_events) and billing accounts.

Revision ID: 0002
Revises: 0001
Create Date: 2025-01-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

ID = 64


def upgrade() -> None:
    op.create_table(
        "processed_events",
        sa.Column("key", sa.String(200), nullable=False),
        sa.Column("type", sa.String(100), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("key", name="pk_processed_events"),
    )
    op.create_table(
        "billing_accounts",
        sa.Column("user_id", sa.String(ID), nullable=False),
        sa.Column("provider", sa.String(40), nullable=False),
        sa.Column("customer_id", sa.String(200), nullable=True),
        sa.Column("subscription_id", sa.String(200), nullable=True),
        sa.Column("status", sa.String(40), nullable=True),
        sa.Column("plan_event_at", sa.Integer(), nullable=False),
        sa.Column("plan_event_rank", sa.Integer(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("user_id", name="pk_billing_accounts"),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name="fk_billing_accounts_user_id_users", ondelete="CASCADE"
        ),
        sa.UniqueConstraint("customer_id", name="uq_billing_accounts_customer_id"),
    )


def downgrade() -> None:
    op.drop_table("billing_accounts")
    op.drop_table("processed_events")
