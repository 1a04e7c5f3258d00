"""rollout exposures: the customers each phase of a change's attempt exposed

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-24 09:00:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import store.types

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "rollout_exposures",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("change_id", sa.String(length=64), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("phase", sa.Integer(), nullable=False),
        sa.Column("customer_id", sa.String(length=64), nullable=False),
        sa.Column("exposed_at", store.types.UtcDateTime(timezone=True), nullable=False),
        sa.Column("reverted_at", store.types.UtcDateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_rollout_exposures")),
        sa.UniqueConstraint(
            "change_id", "attempt", "customer_id", name="uq_rollout_exposures_member"
        ),
    )
    with op.batch_alter_table("rollout_exposures", schema=None) as batch_op:
        batch_op.create_index(
            "ix_rollout_exposures_phase",
            ["change_id", "attempt", "phase", "customer_id"],
            unique=False,
        )


def downgrade() -> None:
    with op.batch_alter_table("rollout_exposures", schema=None) as batch_op:
        batch_op.drop_index("ix_rollout_exposures_phase")

    op.drop_table("rollout_exposures")
