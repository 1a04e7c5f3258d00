"""The command line's Core read of the ledger (store/ledger_read.py) against the models'
table, on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from store.ledger_read import LEDGER, Step, timeline
from store.models import LedgerEntry
from tests.conftest import AppDb
from tests.escalation_support import ledger_row


def test_the_read_names_the_models_columns_with_their_types() -> None:
    model = LedgerEntry.__table__
    assert LEDGER.name == model.name
    for read in LEDGER.columns:
        assert read.name in model.columns, read.name
        declared = model.columns[read.name].type
        assert isinstance(declared, type(read.type)), read.name


async def test_a_workflows_timeline_in_the_order_it_happened(app_db: AppDb) -> None:
    start = datetime(2026, 12, 7, 9, tzinfo=UTC)

    def row(workflow_id: str, step: str, at: datetime) -> LedgerEntry:
        detail = {"step": step, "n": 1}
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
        Step(start, start + timedelta(seconds=1), "opened", {"step": "opened", "n": 1}),
        Step(
            start + timedelta(minutes=10),
            start + timedelta(minutes=10, seconds=1),
            "level-1",
            {"step": "level-1", "n": 1},
        ),
    ]
    assert steps[0].at.tzinfo is not None
    assert timeline(app_db.url, "case-T-NONE") == []
