"""activity failures: the worker's index of retrying and failed activities (`opsflow stuck`)

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-04 10:00:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import store.types

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "activity_failures",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("workflow_id", sa.String(length=300), nullable=False),
        sa.Column("run_id", sa.String(length=64), nullable=False),
        sa.Column("activity_id", sa.String(length=200), nullable=False),
        sa.Column("activity_type", sa.String(length=200), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("error", sa.Text(), nullable=False),
        sa.Column("failed_at", store.types.UtcDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_activity_failures")),
        sa.UniqueConstraint(
            "workflow_id", "run_id", "activity_id", name="uq_activity_failures_activity"
        ),
    )
    with op.batch_alter_table("activity_failures", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_activity_failures_status"), ["status"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("activity_failures", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_activity_failures_status"))

    op.drop_table("activity_failures")
