"""Runs count the claims since their last progress, so a run that keeps losing its worker ends.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-04
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column(
        "runs",
        sa.Column("claims_since_progress", sa.Integer(), nullable=False, server_default="0"),
    )
    op.add_column(
        "runs", sa.Column("finished_steps", sa.Integer(), nullable=False, server_default="0")
    )


def downgrade() -> None:
    with op.batch_alter_table("runs") as batch:
        batch.drop_column("finished_steps")
        batch.drop_column("claims_since_progress")
