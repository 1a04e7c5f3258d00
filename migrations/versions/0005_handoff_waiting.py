"""handoff waiting list: conversations waiting for a free agent, first come, first served

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-03 19:00:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import store.types

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "sandbox_waiting",
        sa.Column("conversation_id", sa.String(length=64), nullable=False),
        sa.Column("workflow_id", sa.String(length=200), nullable=False),
        sa.Column("queue", sa.String(length=64), nullable=False),
        sa.Column("priority", sa.String(length=10), nullable=False),
        sa.Column("skills", sa.JSON(), nullable=False),
        sa.Column("languages", sa.JSON(), nullable=False),
        sa.Column("exclude", sa.JSON(), nullable=False),
        sa.Column("since", store.types.UtcDateTime(timezone=True), nullable=False),
        sa.Column("seen_at", store.types.UtcDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("conversation_id", name=op.f("pk_sandbox_waiting")),
    )
    with op.batch_alter_table("sandbox_waiting", schema=None) as batch_op:
        batch_op.create_index(
            "ix_sandbox_waiting_order", ["priority", "since", "conversation_id"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("sandbox_waiting", schema=None) as batch_op:
        batch_op.drop_index("ix_sandbox_waiting_order")

    op.drop_table("sandbox_waiting")
