"""Token usage: what a metered step (a model call) used, and each day's tokens.

A step row of a metered action records the ``model`` it ran and its ``input_tokens`` and
``output_tokens`` (NULL for every other step); ``usage_daily`` adds the day's tokens, so the
usage charts show them with or without billing.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-04
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("run_steps", sa.Column("model", sa.String(200), nullable=True))
    op.add_column("run_steps", sa.Column("input_tokens", sa.BigInteger(), nullable=True))
    op.add_column("run_steps", sa.Column("output_tokens", sa.BigInteger(), nullable=True))
    for name in ("input_tokens", "output_tokens"):
        op.add_column(
            "usage_daily", sa.Column(name, sa.BigInteger(), nullable=False, server_default="0")
        )


def downgrade() -> None:
    with op.batch_alter_table("usage_daily") as batch:
        for name in ("output_tokens", "input_tokens"):
            batch.drop_column(name)
    with op.batch_alter_table("run_steps") as batch:
        for name in ("output_tokens", "input_tokens", "model"):
            batch.drop_column(name)
