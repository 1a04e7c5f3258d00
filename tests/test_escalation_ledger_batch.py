"""A case taking commands faster than one ledger write each: the backlog is written in one
call per pass of the main loop, every command once, and a run continues as new after
`max_updates` updates (the server refuses a run's 2,001st). The dev-server version at
thousands of updates is tests/test_limits.py."""

from __future__ import annotations

import asyncio

import pytest
from temporalio.service import RPCError
from temporalio.testing import WorkflowEnvironment

from tests.conftest import AppDb
from tests.definition_support import pinned
from tests.escalation_support import (
    add_ticket,
    answer_timed_out,
    case,
    escalation_worker,
    keep_history,
    ledger_entries,
    new_ticket_id,
    policy_document,
    settled,
)
from workflows.escalation import (
    EscalationInput,
    EscalationWorkflow,
    TicketStatus,
    case_workflow_id,
)

COMMANDS = 40


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_a_burst_of_commands_is_written_once_each_in_batches(
    workflow_env: WorkflowEnvironment, app_db: AppDb
) -> None:
    document = policy_document(warn_at=[], on_warning=[])
    ticket = new_ticket_id()
    await add_ticket(app_db, ticket)
    async with escalation_worker(workflow_env, app_db) as queue:
        opened_at = await workflow_env.get_current_time()
        handle = await workflow_env.client.start_workflow(
            EscalationWorkflow.run,
            # A small run, so the burst crosses a continue-as-new too.
            EscalationInput(case=case(ticket, opened_at), policy=pinned(document), max_updates=25),
            id=case_workflow_id(ticket),
            task_queue=queue,
        )
        first_run = handle.result_run_id

        async def command(i: int) -> None:
            # Sent again with the same id when its answer times out under load (it may
            # reach the run as it continues as new): the id makes it one command.
            status = TicketStatus(status="pending" if i % 2 == 0 else "open", by="zendesk")
            for attempt in range(3):
                try:
                    await workflow_env.client.get_workflow_handle(handle.id).execute_update(
                        EscalationWorkflow.ticket_status, status, id=f"{ticket}-{i}"
                    )
                    return
                except RPCError as exc:
                    if attempt == 2 or not answer_timed_out(exc):
                        raise

        await asyncio.gather(*(command(i) for i in range(COMMANDS)))
        latest = workflow_env.client.get_workflow_handle(handle.id)
        state = await settled(latest)
        assert (await latest.describe()).run_id != first_run  # continued as new
        rows = await ledger_entries(app_db, handle.id)
        steps = [r for r in rows if r.step in ("pause", "resume")]
        assert len(steps) == state.commands > 0
        assert len({r.idempotency_key for r in steps}) == len(steps)
        await keep_history(
            workflow_env.client.get_workflow_handle(handle.id, run_id=first_run),
            "escalation-ledger-batch",
        )
        await latest.terminate("test over")
