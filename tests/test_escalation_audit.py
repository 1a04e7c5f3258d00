"""The audit trail of a case says when each step fell due and when it was written: a case
that catches up (a worker was down, its opening event waited) stamps its warnings, levels
and breach at the moments they fell due, not at the moment they were handled."""

from __future__ import annotations

from datetime import timedelta

import pytest
from temporalio.testing import WorkflowEnvironment

from tests.conftest import AppDb
from tests.definition_support import pinned
from tests.escalation_support import (
    add_ticket,
    case,
    escalation_worker,
    eventually,
    ledger_entries,
    new_ticket_id,
    policy_document,
    settled,
)
from workflows.escalation import EscalationWorkflow, OpenCase, Resolve, case_workflow_id

pytestmark = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)


async def test_steps_caught_up_after_an_outage_are_stamped_when_due(
    workflow_env: WorkflowEnvironment, app_db: AppDb
) -> None:
    ticket = new_ticket_id()
    await add_ticket(app_db, ticket)
    # Opened two hours ago, as a ticket.created that waited out a worker outage would be:
    # the case's first run catches up on everything that fell due meanwhile.
    opened_at = await workflow_env.get_current_time() - timedelta(hours=2)
    async with escalation_worker(workflow_env, app_db) as queue:
        handle = await workflow_env.client.start_workflow(
            EscalationWorkflow.run,
            OpenCase(case=case(ticket, opened_at), policy=pinned(policy_document())),
            id=case_workflow_id(ticket),
            task_queue=queue,
        )
        state = await settled(handle)
        assert state.clocks["first_response"].status == "breached"

        async def caught_up() -> bool:
            steps = {e.step for e in await ledger_entries(app_db, handle.id)}
            return {"level-3-cycle-0", "breach-first_response"} <= steps

        await eventually(caught_up, "the levels and the breach in the ledger")
        due = {e.step: e.at for e in await ledger_entries(app_db, handle.id)}
        # p1: first response 1h, warning at 50 %, levels after 10, 20 and 30 minutes.
        assert due["warn-first_response-50"] == opened_at + timedelta(minutes=30)
        assert due["level-1-cycle-0"] == opened_at + timedelta(minutes=10)
        assert due["level-3-cycle-0"] == opened_at + timedelta(minutes=30)
        assert due["breach-first_response"] == opened_at + timedelta(hours=1)
        await handle.execute_update(EscalationWorkflow.resolve, Resolve(by="ana"))
        await handle.result()
