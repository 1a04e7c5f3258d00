"""on-call: stored schedule overrides, and the round-robin counters and picks of escalation levels

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-07 13:10:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import store.types

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "oncall_overrides",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("schedule", sa.String(length=200), nullable=False),
        sa.Column("person", sa.String(length=320), nullable=False),
        sa.Column("starts_at", store.types.UtcDateTime(timezone=True), nullable=False),
        sa.Column("ends_at", store.types.UtcDateTime(timezone=True), nullable=False),
        sa.Column("created_by", sa.String(length=200), nullable=False),
        sa.Column("created_at", store.types.UtcDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_oncall_overrides")),
    )
    with op.batch_alter_table("oncall_overrides", schema=None) as batch_op:
        batch_op.create_index(
            "ix_oncall_overrides_schedule_ends_at", ["schedule", "ends_at"], unique=False
        )
    op.create_table(
        "round_robin_counters",
        sa.Column("definition", sa.String(length=200), nullable=False),
        sa.Column("level", sa.String(length=100), nullable=False),
        sa.Column("turns", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("definition", "level", name=op.f("pk_round_robin_counters")),
    )
    op.create_table(
        "round_robin_picks",
        sa.Column("idempotency_key", sa.String(length=400), nullable=False),
        sa.Column("target", sa.String(length=320), nullable=False),
        sa.Column("picked_at", store.types.UtcDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("idempotency_key", name=op.f("pk_round_robin_picks")),
    )


def downgrade() -> None:
    op.drop_table("round_robin_picks")
    op.drop_table("round_robin_counters")
    with op.batch_alter_table("oncall_overrides", schema=None) as batch_op:
        batch_op.drop_index("ix_oncall_overrides_schedule_ends_at")
    op.drop_table("oncall_overrides")
