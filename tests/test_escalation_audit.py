"""The audit trail of a case says when each step fell due and when it was written: a case
that catches up (a worker was down, its opening event waited) stamps its warnings, levels
and breach at the moments they fell due, not at the moment they were handled."""

from __future__ import annotations

from datetime import timedelta

import pytest
from temporalio.testing import WorkflowEnvironment

from activities import search_attributes as sa
from tests.conftest import AppDb
from tests.definition_support import pinned
from tests.escalation_support import (
    about_at,
    add_ticket,
    case,
    current_details,
    escalation_worker,
    eventually,
    keep_history,
    ledger_entries,
    new_ticket_id,
    policy_document,
    settled,
)
from workflows.escalation import (
    Acknowledge,
    EscalationInput,
    EscalationWorkflow,
    Resolve,
    case_workflow_id,
)

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
            EscalationInput(case=case(ticket, opened_at), policy=pinned(policy_document())),
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

        # Resolve once the caught-up actions are done: the time-skipping test server refuses
        # a workflow task whose cancel races an activity's completion (ACTIVITY_UNKNOWN) and
        # the update then never completes.
        async def idle() -> bool:
            return not (await handle.query(EscalationWorkflow.state)).in_flight

        await eventually(idle, "the caught-up actions done")
        await handle.execute_update(EscalationWorkflow.resolve, Resolve(by="ana"))
        await handle.result()


async def test_a_case_whose_action_failed_reads_stuck_until_a_person_acts(
    workflow_env: WorkflowEnvironment, app_db: AppDb
) -> None:
    """OpsState=stuck (with the reason in the current details) while a failed action waits
    for a person; OpsDueAt is the next breach, so `OpsDueAt < "…"` finds what falls due."""
    ticket = new_ticket_id()  # not in the sandbox: level 2's assignment fails
    async with escalation_worker(workflow_env, app_db) as queue:
        opened_at = await workflow_env.get_current_time()
        handle = await workflow_env.client.start_workflow(
            EscalationWorkflow.run,
            EscalationInput(case=case(ticket, opened_at), policy=pinned(policy_document())),
            id=case_workflow_id(ticket),
            task_queue=queue,
        )
        state = await settled(handle)
        attributes = (await handle.describe()).typed_search_attributes
        assert attributes.get(sa.OPS_STATE) == "open"
        # p1: first response 1h, resolution 4h: the first response runs out first.
        assert attributes.get(sa.OPS_DUE_AT) == about_at(opened_at + timedelta(hours=1))

        await workflow_env.sleep(timedelta(minutes=25))

        async def flagged() -> bool:
            described = await handle.describe()
            return described.typed_search_attributes.get(sa.OPS_STATE) == sa.STUCK

        await eventually(flagged, "OpsState=stuck after the failed assignment")
        assert "needs a person: level-2-cycle-0 failed" in await current_details(handle)
        state = await settled(handle)
        assert state.attention is not None and "does not exist" in state.attention

        await handle.execute_update(EscalationWorkflow.acknowledge, Acknowledge(by="ana"))

        async def cleared() -> bool:
            described = await handle.describe()
            return described.typed_search_attributes.get(sa.OPS_STATE) == "acknowledged"

        await eventually(cleared, "the acknowledgement clears stuck")
        resolution_due = (await settled(handle)).clocks["resolution"].due
        attributes = (await handle.describe()).typed_search_attributes
        assert attributes.get(sa.OPS_DUE_AT) == about_at(resolution_due)
        await handle.execute_update(EscalationWorkflow.resolve, Resolve(by="ana"))
        await handle.result()
        await keep_history(handle, "escalation-stuck-due-at")
