"""ledger: when each row was written, beside when its step happened or fell due

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-07 10:30:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import store.types

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("ledger_entries", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("written_at", store.types.UtcDateTime(timezone=True), nullable=True)
        )
    # Rows written before this revision were written when they happened, as far as we know.
    op.execute("UPDATE ledger_entries SET written_at = at")
    # A server default too: workers still on the previous code (a rolling deploy) insert
    # rows without the column, and those must not fail.
    with op.batch_alter_table("ledger_entries", schema=None) as batch_op:
        batch_op.alter_column(
            "written_at",
            existing_type=store.types.UtcDateTime(timezone=True),
            nullable=False,
            server_default=sa.func.now(),
        )


def downgrade() -> None:
    with op.batch_alter_table("ledger_entries", schema=None) as batch_op:
        batch_op.drop_column("written_at")
