"""Temporal's limits, met by continuing as new: a run refuses more than 2,000 updates
(`history.maxTotalUpdates`), suggests continuing as new at 4 Ki events and fails a
workflow task whose payloads pass 2 MB. opsflow's runs continue as new before any of these,
carrying their state whole, so nothing sent to them is refused or lost.

On the dev server (the real limits; the time-skipping server does not enforce them). The
sizes here are past each limit and quick; `OPSFLOW_CHAOS_SIZE=full` (set by `make limits`) runs
the sizes of the reliability issue: 5,000 ticket updates, a 2,000-turn transcript and 50,000
recovery events.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

import pytest
from temporalio.client import Client, WorkflowExecutionStatus
from temporalio.service import RPCError
from temporalio.testing import WorkflowEnvironment

from activities.adapters.sandbox import SandboxCrm
from activities.recovery_pacing import CHECK_EVERY, CustomerBusy, CustomerPacing
from client.cases import command_case
from intake import inbox
from intake.relay import Relay
from intake.router import Router, TemporalLink
from store.registry import CATALOG_DIR, deploy_folder
from tests.conftest import AppDb
from tests.definition_support import pinned
from tests.escalation_support import (
    add_ticket,
    case,
    escalation_worker,
    ledger_entries,
    new_ticket_id,
    policy_document,
)
from tests.handoff_support import handoff_worker, new_conversation, start, turn_event
from tests.helpers import assert_eventually
from tests.recovery_support import STARTED, recovery_worker, view
from tests.recovery_support import survey as survey_answer
from workflows.escalation import (
    EscalationInput,
    EscalationStatus,
    EscalationWorkflow,
    TicketStatus,
    case_workflow_id,
)
from workflows.handoff_model import HandoffStatus
from workflows.recovery_model import RecoveryStatus, customer_workflow_id

FULL = os.environ.get("OPSFLOW_CHAOS_SIZE") == "full"

pytestmark = [
    pytest.mark.devserver,
    pytest.mark.parametrize("database_url", ["sqlite"], indirect=True),
    pytest.mark.timeout(1_800 if FULL else 300),  # the full sizes take minutes
]

TICKET_UPDATES = 5_000 if FULL else 2_100
"""Past the 2,000 updates one run accepts."""
TRANSCRIPT_TURNS = 2_000 if FULL else 300
RECOVERY_EVENTS = 50_000 if FULL else 500
"""Full: past the 10,000 history events after which the customer's workflow continues as new.
Quick: a burst larger than one workflow task decides (tests/test_recovery_burst.py)."""
IN_FLIGHT = 8
"""Messages sent at once, as a busy intake does (the server admits 10 updates at a time per
workflow)."""

T = TypeVar("T")


async def _bounded(count: int, send: Callable[[int], Awaitable[T]]) -> list[T]:
    gate = asyncio.Semaphore(IN_FLIGHT)

    async def one(index: int) -> T:
        async with gate:
            return await send(index)

    return await asyncio.gather(*(one(i) for i in range(count)))


async def _runs(client: Client, workflow_id: str) -> list[WorkflowExecutionStatus | None]:
    """The statuses of every run of `workflow_id`, oldest first."""
    runs = [
        execution.status
        async for execution in client.list_workflows(f'WorkflowId = "{workflow_id}"')
    ]
    return list(reversed(runs))


async def test_a_case_takes_thousands_of_ticket_updates(
    dev_env: WorkflowEnvironment, app_db: AppDb
) -> None:
    """Every ticket status change is accepted and recorded once, across runs: the case
    continues as new before the server's 2,000-updates-per-run limit."""
    document = policy_document(
        slas=[{"priority": p, "first_response": "8h", "resolution": "3d"} for p in ("p1", "p2")],
        warn_at=[],
        on_warning=[],
        levels=[{"after": "6h", "actions": [{"type": "assign", "queue": "tier-2"}]}],
    )
    ticket = new_ticket_id()
    await add_ticket(app_db, ticket)
    async with escalation_worker(dev_env, app_db) as queue:
        handle = await dev_env.client.start_workflow(
            EscalationWorkflow.run,
            EscalationInput(
                case=case(ticket, await dev_env.get_current_time()), policy=pinned(document)
            ),
            id=case_workflow_id(ticket),
            task_queue=queue,
        )

        async def change(index: int) -> EscalationStatus:
            status = "pending" if index % 2 == 0 else "open"
            # The client path the intake and the CLI take (it sends again an update that a
            # run continuing as new aborted).
            return await command_case(
                dev_env.client, ticket, "ticket_status", TicketStatus(status=status, by="zendesk")
            )

        answers = await _bounded(TICKET_UPDATES, change)
        assert len(answers) == TICKET_UPDATES  # none refused

        state = await dev_env.client.get_workflow_handle(handle.id).query(EscalationWorkflow.state)
        runs = await _runs(dev_env.client, handle.id)
        assert len(runs) >= 2, runs  # continued as new, at least once
        assert runs[:-1] == [WorkflowExecutionStatus.CONTINUED_AS_NEW] * (len(runs) - 1)
        assert runs[-1] == WorkflowExecutionStatus.RUNNING
        assert state.case.ticket_id == ticket and state.state in ("open", "paused")
        # Each change that changed something is one command and one ledger row, whichever
        # run took it: nothing lost in the hand-over, nothing written twice.
        assert state.commands > 0

        async def recorded() -> list[str]:
            rows = await ledger_entries(app_db, handle.id)
            return [r.idempotency_key for r in rows if r.step in ("pause", "resume")]

        keys = await assert_eventually(
            recorded, lambda k: len(k) == state.commands, "one ledger row per command", within=120
        )
        assert len(set(keys)) == len(keys)
        await handle.terminate("test over")


async def test_a_long_conversation_keeps_its_whole_transcript(
    dev_env: WorkflowEnvironment, app_db: AppDb
) -> None:
    """Every bot turn stays in the transcript, in order, across runs (the context packet a
    human gets must never lose the start of the conversation)."""
    conversation = new_conversation()
    async with handoff_worker(dev_env, app_db) as queue:
        turns = [
            turn_event(conversation, "HC-EN", f"turn {i}: my invoice for March shows a line {i}")
            for i in range(TRANSCRIPT_TURNS)
        ]
        handle = await start(dev_env, queue, turns[0])
        for batch_start in range(1, TRANSCRIPT_TURNS, 50):
            await asyncio.gather(
                *(
                    handle.signal("event", envelope)
                    for envelope in turns[batch_start : batch_start + 50]
                )
            )

        async def transcript() -> Sequence[str]:
            status = await handle.query("state", result_type=HandoffStatus)
            return [turn.text for turn in status.turns]

        texts = await assert_eventually(
            transcript,
            lambda t: len(t) == TRANSCRIPT_TURNS,
            "every turn in the transcript",
            within=300,
        )
        assert sorted(texts, key=lambda t: int(t.split(":")[0].split()[1])) == [
            envelope.data["text"] for envelope in turns
        ]
        await handle.terminate("test over")


async def test_a_customer_takes_tens_of_thousands_of_events(
    dev_env: WorkflowEnvironment, app_db: AppDb
) -> None:
    """Every recovery event counts once, across the runs the customer's workflow goes
    through as it continues as new: the intake's relay holds the customer's next events while
    its workflow has a long backlog, so the run hands over in the pause and the server never
    refuses a signal."""
    await deploy_folder(app_db.sessions, CATALOG_DIR, deployed_by="test")
    customer = f"C-LIMITS-{new_ticket_id()}"
    queue = f"recovery-{uuid.uuid4()}"
    router = Router(
        TemporalLink(lambda: _same(dev_env.client)),
        app_db.sessions,
        queue,
        SandboxCrm(app_db.sessions),
    )
    pacing = CountingPacing()
    router.pacing = pacing
    relay = Relay(app_db.sessions, router, busy_backoff=0.5)
    for first in range(0, RECOVERY_EVENTS, 1_000):
        await inbox.record(
            app_db.sessions,
            [
                survey_answer(customer, 5, comment=f"answer {index}")
                for index in range(first, min(first + 1_000, RECOVERY_EVENTS))
            ],
        )
    workflow_id = customer_workflow_id(customer)
    STARTED.setdefault(queue, set()).add(workflow_id)
    stop = asyncio.Event()
    relaying = asyncio.create_task(relay.run(stop))
    try:
        # No worker yet: after CHECK_EVERY events the customer's workflow cannot say how
        # much it has to decide, so its next events wait in the inbox instead of piling up.
        await assert_eventually(
            lambda: _delivered(app_db),
            lambda count: count == CHECK_EVERY and pacing.holds > 0,
            f"{CHECK_EVERY} events delivered, the rest held",
            within=60,
        )
        async with recovery_worker(dev_env, app_db, queue):

            async def state() -> RecoveryStatus | None:
                try:
                    return await view(dev_env.client.get_workflow_handle(workflow_id))
                except RPCError:  # busy: ask again
                    return None

            seen = await assert_eventually(
                state,
                lambda v: v is not None and v.state.events_seen == RECOVERY_EVENTS,
                "every event counted",
                within=1_500 if FULL else 600,
            )
            # Before the worker's cleanup terminates what still runs: runs hand over
            # (continue as new) or end when nothing waits (the next event starts the
            # customer's next run, which recalls this one's state); none failed.
            runs = await _runs(dev_env.client, workflow_id)
    finally:
        stop.set()
        await relaying
    assert seen is not None and seen.state.customer_id == customer
    rows = await inbox.listing(app_db.sessions, limit=RECOVERY_EVENTS + 10)
    statuses = Counter(row.status for row in rows)
    assert statuses == {"delivered": RECOVERY_EVENTS}, statuses
    ended_well = {
        WorkflowExecutionStatus.RUNNING,
        WorkflowExecutionStatus.COMPLETED,
        WorkflowExecutionStatus.CONTINUED_AS_NEW,
    }
    assert set(runs) <= ended_well, Counter(runs)
    if FULL:  # past 10,000 signals
        assert len(runs) >= 2, runs


class CountingPacing(CustomerPacing):
    """The router's pacing, counting how often it held the customer's next event."""

    holds = 0

    async def before_sending(self, client: Client, workflow_id: str) -> None:
        try:
            await super().before_sending(client, workflow_id)
        except CustomerBusy:
            self.holds += 1
            raise


async def _same(client: Client) -> Client:
    return client


async def _delivered(db: AppDb) -> int:
    rows = await inbox.listing(db.sessions, statuses=["delivered"], limit=RECOVERY_EVENTS)
    return len(rows)
