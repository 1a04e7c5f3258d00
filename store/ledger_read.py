"""A workflow's ledger timeline: what `opsflow case show` prints. The embedded default's
SQLite file is read with the standard library's sqlite3, any configured database in
SQLAlchemy Core on a blocking connection: reading a case so imports neither the ORM (the
models' 22 tables) nor the async engine, and on the embedded stack not SQLAlchemy at all
(about 0.1 s of the command's start). `ledger_table()` names the columns it reads of
`store.models.LedgerEntry`'s table; tests/test_ledger_read.py keeps the two reads and the
model alike."""

from __future__ import annotations

import functools
import json
import sqlite3
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from definitions.errors import OpsflowError

if TYPE_CHECKING:
    from sqlalchemy import TableClause
    from sqlalchemy.engine import URL


class Step(NamedTuple):
    at: datetime
    written_at: datetime
    step: str
    detail: dict[str, Any]


def timeline(database: Path | URL, workflow_id: str) -> list[Step]:
    """The workflow's ledger rows, in the order they happened; `database`: the embedded
    SQLite file, or a database URL."""
    if isinstance(database, Path):
        return _file_timeline(database, workflow_id)
    return _core_timeline(database, workflow_id)


_FILE_QUERY = (
    "SELECT at, written_at, step, detail FROM ledger_entries WHERE workflow_id = ? ORDER BY at, id"
)


def _file_timeline(path: Path, workflow_id: str) -> list[Step]:
    if not path.is_file():
        raise OpsflowError(f"no app database at {path}: run `opsflow migrate` first")
    # SQLite's own busy wait, as the engine's: a writer holds the file only briefly in WAL.
    connection = sqlite3.connect(path, timeout=10)
    try:
        rows = connection.execute(_FILE_QUERY, (workflow_id,)).fetchall()
    finally:
        connection.close()
    return [
        Step(_utc(at), _utc(written), step, json.loads(detail))
        for at, written, step, detail in rows
    ]


def _utc(stored: str) -> datetime:
    """A timestamp as SQLAlchemy stores it in SQLite (no offset: UTC, store.types)."""
    moment = datetime.fromisoformat(stored)
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


@functools.cache
def ledger_table() -> TableClause:
    """The ledger's columns this module reads, as a Core table clause."""
    from sqlalchemy import JSON, BigInteger, String, column, table

    from store.types import UtcDateTime

    return table(
        "ledger_entries",
        column("id", BigInteger()),
        column("workflow_id", String()),
        column("step", String()),
        column("detail", JSON()),
        column("at", UtcDateTime()),
        column("written_at", UtcDateTime()),
    )


def _core_timeline(url: URL, workflow_id: str) -> list[Step]:
    from sqlalchemy import select

    from store.blocking import create_sync_engine

    ledger = ledger_table()
    engine = create_sync_engine(url)
    try:
        with engine.connect() as connection:
            rows = connection.execute(
                select(ledger.c.at, ledger.c.written_at, ledger.c.step, ledger.c.detail)
                .where(ledger.c.workflow_id == workflow_id)
                .order_by(ledger.c.at, ledger.c.id)
            )
            return [Step(*row) for row in rows]
    finally:
        engine.dispose()
