"""A workflow's ledger timeline, read in SQLAlchemy Core on a blocking connection: what
`opsflow case show` prints. Reading a case so imports neither the ORM (the models' 22 tables)
nor the async engine, about 0.15 s of the command's start. `LEDGER` names the columns it
reads of `store.models.LedgerEntry`'s table; tests/test_ledger_read.py keeps them alike."""

from __future__ import annotations

from datetime import datetime
from typing import Any, NamedTuple

from sqlalchemy import JSON, BigInteger, String, column, select, table
from sqlalchemy.engine import URL

from store.blocking import create_sync_engine
from store.types import UtcDateTime

LEDGER = table(
    "ledger_entries",
    column("id", BigInteger()),
    column("workflow_id", String()),
    column("step", String()),
    column("detail", JSON()),
    column("at", UtcDateTime()),
    column("written_at", UtcDateTime()),
)


class Step(NamedTuple):
    at: datetime
    written_at: datetime
    step: str
    detail: dict[str, Any]


def timeline(url: URL, workflow_id: str) -> list[Step]:
    """The workflow's ledger rows, in the order they happened."""
    engine = create_sync_engine(url)
    try:
        with engine.connect() as connection:
            rows = connection.execute(
                select(LEDGER.c.at, LEDGER.c.written_at, LEDGER.c.step, LEDGER.c.detail)
                .where(LEDGER.c.workflow_id == workflow_id)
                .order_by(LEDGER.c.at, LEDGER.c.id)
            )
            return [Step(*row) for row in rows]
    finally:
        engine.dispose()
