"""Escalation cases that fire levels every few seconds, and the effects they must leave:
per case one email (level 1), one page (level 2), the assignment to tier-2 (level 3), one
CRM note for the breach, one ledger row per step, and a resolved run."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select
from temporalio.client import Client, WorkflowHandle

from store.models import LedgerEntry, SandboxCrmNote, SandboxNotification, SandboxTicket
from tests.chaos.support import Ledger, eventually
from tests.conftest import AppDb
from tests.definition_support import pinned
from tests.escalation_support import new_ticket_id
from workflows.escalation import (
    CaseInfo,
    CaseSummary,
    EscalationWorkflow,
    Resolve,
    case_workflow_id,
)
from workflows.escalation import EscalationInput as OpenCase

LEVEL_SECONDS = (3, 6, 9)
FIRST_RESPONSE_SECONDS = 7
STEPS = ("level-1-cycle-0", "level-2-cycle-0", "level-3-cycle-0", "breach-first_response")


def _notify(channel: str, to: str) -> dict[str, Any]:
    return {"type": "notify", "channel": channel, "to": [to], "template": "case-escalated"}


POLICY = pinned(
    {
        "apiVersion": "opsflow/v1",
        "kind": "escalation",
        "metadata": {"name": "chaos-levels", "owner": "chaos"},
        "spec": {
            "priorities": ["p1"],
            "calendar": "24x7",
            "slas": [
                {
                    "priority": "p1",
                    "first_response": f"{FIRST_RESPONSE_SECONDS}s",
                    "resolution": "1h",
                }
            ],
            "warn_at": [],
            "levels": [
                {"after": f"{LEVEL_SECONDS[0]}s", "actions": [_notify("email", "queue:support")]},
                {"after": f"{LEVEL_SECONDS[1]}s", "actions": [_notify("pager", "team:duty")]},
                {
                    "after": f"{LEVEL_SECONDS[2]}s",
                    "actions": [{"type": "assign", "queue": "tier-2"}],
                },
            ],
            "repeat": 0,
            "on_breach": [{"type": "crm_note", "text": "Case {{ case.id }} missed its target."}],
        },
    }
)


@dataclass
class Cases:
    tickets: list[str]
    last_opened: float
    """time.monotonic() when the last case was opened"""

    @property
    def expected_steps(self) -> set[str]:
        return {f"{case_workflow_id(t)}|{step}" for t in self.tickets for step in STEPS}

    @property
    def all_due_at(self) -> float:
        """time.monotonic() by which every case's every step has fallen due."""
        return self.last_opened + max(*LEVEL_SECONDS, FIRST_RESPONSE_SECONDS) + 1


async def open_cases(client: Client, db: AppDb, queue: str, count: int, over: float) -> Cases:
    """`count` P1 cases opened evenly over `over` seconds, so their levels keep falling due."""
    tickets = [new_ticket_id() for _ in range(count)]
    async with db.sessions() as session, session.begin():
        session.add_all(
            SandboxTicket(id=t, customer_id="C-0001", subject="Checkout down") for t in tickets
        )
    for n, ticket in enumerate(tickets):
        await client.start_workflow(
            EscalationWorkflow.run,
            OpenCase(
                case=CaseInfo(
                    ticket_id=ticket,
                    customer_id="C-0001",
                    priority="p1",
                    channel="email",
                    subject="Checkout down",
                    opened_at=datetime.now(UTC),
                ),
                policy=POLICY,
            ),
            id=case_workflow_id(ticket),
            task_queue=queue,
        )
        if n < count - 1:
            await asyncio.sleep(over / count)
    return Cases(tickets, time.monotonic())


async def steps_written(db: AppDb, cases: Cases) -> Counter[str]:
    """How often each of the cases' steps is in the ledger (workflow id | step)."""
    ids = [case_workflow_id(t) for t in cases.tickets]
    async with db.sessions() as session:
        rows = (
            await session.execute(
                select(LedgerEntry.workflow_id, LedgerEntry.step).where(
                    LedgerEntry.workflow_id.in_(ids)
                )
            )
        ).all()
    return Counter(f"{workflow_id}|{step}" for workflow_id, step in rows)


async def progress(db: AppDb, cases: Cases) -> int:
    """How many of the expected steps are written."""
    written = await steps_written(db, cases)
    return sum(1 for key in cases.expected_steps if written[key])


async def resolve_all_and_count(client: Client, db: AppDb, cases: Cases, ledger: Ledger) -> None:
    """Once every step is written: resolve each case, then count what the cases did."""
    total = len(cases.expected_steps)

    async def all_written() -> bool:
        return await progress(db, cases) == total

    try:
        await eventually(all_written, "every level and breach in the ledger", within=180)
        ledger.note(f"all {total} steps written")
    except AssertionError as exc:
        ledger.failures.append(str(exc))
    handles: list[WorkflowHandle[Any, CaseSummary]] = [
        client.get_workflow_handle(case_workflow_id(t), result_type=CaseSummary)
        for t in cases.tickets
    ]

    async def resolve(handle: WorkflowHandle[Any, CaseSummary]) -> CaseSummary | None:
        try:
            # Resolve once the case's actions are done: nothing may still be retrying.
            for _ in range(600):
                state = await handle.query(EscalationWorkflow.state)
                if not state.in_flight:
                    break
                await asyncio.sleep(0.2)
            await handle.execute_update(EscalationWorkflow.resolve, Resolve(by="chaos"))
            return await asyncio.wait_for(handle.result(), 120)
        except Exception as exc:
            ledger.failures.append(f"{handle.id}: {type(exc).__name__}: {exc}")
            return None

    summaries = await asyncio.gather(*(resolve(h) for h in handles))
    ledger.note(f"{sum(s is not None for s in summaries)}/{len(handles)} cases resolved")
    for handle, summary in zip(handles, summaries, strict=True):
        if summary is None:
            continue
        state = await handle.query(EscalationWorkflow.state)
        ledger.check(summary.resolved_by == "chaos", f"{handle.id} resolved by {summary}")
        ledger.check(len(state.visits) == len(LEVEL_SECONDS), f"{handle.id} visits {state.visits}")
        ledger.check(not state.failures, f"{handle.id} failed actions {state.failures}")
    await count_effects(db, cases, ledger)


async def count_effects(db: AppDb, cases: Cases, ledger: Ledger) -> None:
    ids = {case_workflow_id(t): t for t in cases.tickets}
    written = await steps_written(db, cases)
    ledger.effects(
        "ledger rows",
        sorted(cases.expected_steps),
        Counter({k: v for k, v in written.items() if k.split("|")[1] in STEPS}),
    )
    every_row = Counter(
        {k: v for k, v in written.items() if v > 1 and k.split("|")[1] not in STEPS}
    )
    ledger.check(not every_row, f"ledger steps written twice: {sorted(every_row)[:3]}")
    async with db.sessions() as session:
        notices = (
            await session.execute(
                select(SandboxNotification.channel, SandboxNotification.idempotency_key)
            )
        ).all()
        notes = (await session.scalars(select(SandboxCrmNote.body))).all()
        queues = dict(
            (
                await session.execute(
                    select(SandboxTicket.id, SandboxTicket.queue).where(
                        SandboxTicket.id.in_(cases.tickets)
                    )
                )
            ).all()
        )
    for channel, kind in (("email", "notifications"), ("pager", "pages")):
        # One message per case on this channel, whatever its key: a second key is a
        # second message as surely as a second row under one key.
        found = Counter(
            f"{key.split('/')[0]}|{channel}"
            for row_channel, key in notices
            if row_channel == channel and key and key.split("/")[0] in ids
        )
        ledger.effects(kind, [f"{wid}|{channel}" for wid in ids], found)
    found_notes = Counter(
        f"{case_workflow_id(t)}|breach-note"
        for body in notes
        for t in cases.tickets
        if f"Case {t} missed" in body
    )
    ledger.effects("CRM notes", [f"{wid}|breach-note" for wid in ids], found_notes)
    wrong_queue = sorted(t for t in cases.tickets if queues.get(t) != "tier-2")
    ledger.check(not wrong_queue, f"tickets not assigned to tier-2: {wrong_queue[:3]}")
    ledger.counts["tickets assigned"] = (
        f"{len(cases.tickets) - len(wrong_queue)}/{len(cases.tickets)}"
    )
