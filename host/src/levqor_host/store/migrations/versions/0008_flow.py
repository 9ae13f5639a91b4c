"""Flow control: runs that wait (a timer, an approval, a child run), their output, their parent.

``run_steps.step_id`` holds a step's path now (``each[17].send``), so it is wider. A run gains
its ``output`` (what a stop step or its last step answered), ``parent_run_id`` and
``parent_step`` (the run and step path that started it as a sub-pipeline), ``wait`` (what the
run waits for, with the nonce that makes its resume happen once) and ``resume_at`` (when a
timed wait, or an approval's timeout, resumes it; indexed with the status for the sweep).

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-04
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("run_steps") as batch:
        batch.alter_column(
            "step_id", existing_type=sa.String(100), type_=sa.String(400), existing_nullable=False
        )
    op.add_column("runs", sa.Column("output", sa.JSON(), nullable=True))
    op.add_column("runs", sa.Column("parent_run_id", sa.String(64), nullable=True))
    op.add_column("runs", sa.Column("parent_step", sa.String(400), nullable=True))
    op.add_column("runs", sa.Column("wait", sa.JSON(), nullable=True))
    op.add_column("runs", sa.Column("resume_at", sa.DateTime(timezone=True), nullable=True))
    op.create_index("ix_runs_status_resume_at", "runs", ["status", "resume_at"])
    op.create_index("ix_runs_parent_run_id", "runs", ["parent_run_id"])


def downgrade() -> None:
    op.drop_index("ix_runs_parent_run_id", table_name="runs")
    op.drop_index("ix_runs_status_resume_at", table_name="runs")
    with op.batch_alter_table("runs") as batch:
        for name in ("resume_at", "wait", "parent_step", "parent_run_id", "output"):
            batch.drop_column(name)
    with op.batch_alter_table("run_steps") as batch:
        batch.alter_column(
            "step_id", existing_type=sa.String(400), type_=sa.String(100), existing_nullable=False
        )
