"""Index sandbox notifications by idempotency key: every send looks its key up.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-23 14:17:30.459072
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("sandbox_notifications", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_sandbox_notifications_idempotency_key"),
            ["idempotency_key"],
            unique=False,
        )


def downgrade() -> None:
    with op.batch_alter_table("sandbox_notifications", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_sandbox_notifications_idempotency_key"))
