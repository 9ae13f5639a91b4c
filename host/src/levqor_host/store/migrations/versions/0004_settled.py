"""Runs remember when they were settled, so a settlement lost to a crash is repaired once.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-25
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("runs", sa.Column("settled_at", sa.DateTime(timezone=True), nullable=True))
    op.create_index("ix_runs_settled_finished", "runs", ["settled_at", "finished_at"])
    # runs that were final before this revision were settled by the code of their time
    op.execute(
        "UPDATE runs SET settled_at = finished_at "
        "WHERE status IN ('succeeded', 'failed', 'cancelled') AND finished_at IS NOT NULL"
    )


def downgrade() -> None:
    op.drop_index("ix_runs_settled_finished", table_name="runs")
    with op.batch_alter_table("runs") as batch:
        batch.drop_column("settled_at")
