"""`ledger.append_many`: a run's backlog of noted steps in one write, each step once per
idempotency key, sharing keys with `ledger.append` (a run that wrote some steps one by one
and the rest in a batch, or retried a batch, has each step exactly once)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import select
from temporalio.testing import ActivityEnvironment

from activities.deps import ActivityDeps
from activities.ledger import LedgerActivities
from activities.models import LedgerAppend, LedgerBatch
from store.models import LedgerEntry
from tests.activities.conftest import Sessions

OPENED = datetime(2026, 12, 7, 9, 0, tzinfo=UTC)


def _entry(number: int) -> LedgerAppend:
    return LedgerAppend(
        idempotency_key=f"case-T-1/command-{number}-pause/ledger",
        workflow_id="case-T-1",
        run_id="run-1",
        kind="escalation",
        subject="T-1",
        step="pause" if number % 2 else "resume",
        detail={"status": "pending" if number % 2 else "open"},
        at=OPENED + timedelta(minutes=number),
    )


async def test_a_batch_writes_each_step_once_and_keeps_their_moments(sessions: Sessions) -> None:
    ledger = LedgerActivities(ActivityDeps(sessions=sessions))
    env = ActivityEnvironment()
    single = await env.run(ledger.append, _entry(1))
    ids = await env.run(ledger.append_many, LedgerBatch(entries=[_entry(n) for n in range(1, 6)]))
    again = await env.run(ledger.append_many, LedgerBatch(entries=[_entry(n) for n in range(1, 6)]))

    assert ids == again and ids[0] == single and len(set(ids)) == 5
    async with sessions() as session:
        rows = (
            await session.scalars(
                select(LedgerEntry)
                .where(LedgerEntry.workflow_id == "case-T-1")
                .order_by(LedgerEntry.id)
            )
        ).all()
    assert [row.id for row in rows] == ids
    assert [row.step for row in rows] == ["pause", "resume", "pause", "resume", "pause"]
    assert [row.at.replace(tzinfo=UTC) for row in rows] == [
        OPENED + timedelta(minutes=n) for n in range(1, 6)
    ]
