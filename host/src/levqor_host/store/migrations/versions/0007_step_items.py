"""Step records know the loop item they ran in, so a run's loop items are paged in SQL.

``run_steps.loop_path`` and ``run_steps.item_index``: the innermost loop item of the record's
path (``outer[2].inner`` and 5 for ``outer[2].inner[5].send``), NULL outside any loop; indexed
with the run. Records written before have plain step ids, outside any loop.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-04
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("run_steps", sa.Column("loop_path", sa.String(400), nullable=True))
    op.add_column("run_steps", sa.Column("item_index", sa.Integer(), nullable=True))
    op.create_index("ix_run_steps_loop", "run_steps", ["run_id", "loop_path", "item_index"])


def downgrade() -> None:
    op.drop_index("ix_run_steps_loop", table_name="run_steps")
    with op.batch_alter_table("run_steps") as batch:
        batch.drop_column("item_index")
        batch.drop_column("loop_path")
