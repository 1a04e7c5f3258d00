"""The command line's read of the ledger (store/ledger_read.py) against the models' table: in
SQLAlchemy Core on SQLite and PostgreSQL, and with the standard library's sqlite3 from the
embedded default's file, the same timeline."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from definitions.errors import OpsflowError
from store.ledger_read import Step, ledger_table, timeline
from store.models import LedgerEntry
from tests.conftest import AppDb
from tests.escalation_support import ledger_row


def test_the_read_names_the_models_columns_with_their_types() -> None:
    model = LedgerEntry.__table__
    read_table = ledger_table()
    assert read_table.name == model.name
    for read in read_table.columns:
        assert read.name in model.columns, read.name
        declared = model.columns[read.name].type
        assert isinstance(declared, type(read.type)), read.name


async def test_a_workflows_timeline_in_the_order_it_happened(app_db: AppDb) -> None:
    start = datetime(2026, 12, 7, 9, 0, 0, 250_000, tzinfo=UTC)

    def row(workflow_id: str, step: str, at: datetime) -> LedgerEntry:
        detail = {"step": step, "n": 1, "who": "Zoë"}
        return ledger_row(
            workflow_id, step, at, detail=detail, written_at=at + timedelta(seconds=1)
        )

    async with app_db.sessions() as session, session.begin():
        session.add_all(
            [
                row("case-T-READ-1", "level-1", start + timedelta(minutes=10)),
                row("case-T-READ-1", "opened", start),
                row("case-T-READ-2", "opened", start),
            ]
        )

    steps = timeline(app_db.url, "case-T-READ-1")

    assert steps == [
        Step(
            start, start + timedelta(seconds=1), "opened", {"step": "opened", "n": 1, "who": "Zoë"}
        ),
        Step(
            start + timedelta(minutes=10),
            start + timedelta(minutes=10, seconds=1),
            "level-1",
            {"step": "level-1", "n": 1, "who": "Zoë"},
        ),
    ]
    assert all(s.at.tzinfo is UTC and s.written_at.tzinfo is UTC for s in steps)
    assert timeline(app_db.url, "case-T-NONE") == []
    if app_db.url.get_backend_name() == "sqlite":
        # The embedded default's file, read without SQLAlchemy: the same rows, values, types.
        assert app_db.url.database is not None
        embedded = Path(app_db.url.database)
        assert timeline(embedded, "case-T-READ-1") == steps
        assert timeline(embedded, "case-T-NONE") == []


def test_a_missing_embedded_database_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(OpsflowError, match=r"no app database at .*: run `opsflow migrate` first"):
        timeline(tmp_path / "opsflow.db", "case-T-1")
    assert not (tmp_path / "opsflow.db").exists()
