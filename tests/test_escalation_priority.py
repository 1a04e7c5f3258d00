"""Priority changes on the shipped support policy (one policy, four priorities): the clocks
take the new priority's targets, calendar and levels, and keep the time already spent
(a retroactive start, as ServiceNow does), whether a person or a level changes it."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from temporalio.testing import WorkflowEnvironment

from client.cases import CaseCommandRefused, command_case
from definitions.loader import load_paths
from definitions.models import PinnedDefinition
from tests.conftest import AppDb
from tests.definition_support import pinned
from tests.escalation_support import (
    about,
    about_at,
    add_ticket,
    case,
    escalation_worker,
    eventually,
    ledger_entries,
    new_ticket_id,
    next_weekday_at,
    settled,
    skip_to,
)
from workflows.escalation import (
    EscalationInput,
    EscalationWorkflow,
    Resolve,
    SetPriority,
    case_workflow_id,
)

pytestmark = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
CATALOG = Path(__file__).resolve().parent.parent / "definitions" / "catalog" / "escalation"


def support() -> PinnedDefinition:
    [loaded] = [d for d in load_paths([CATALOG]).definitions if d.name == "support"]
    return pinned(loaded.source.data)


async def test_p3_to_p1_takes_the_p1_targets_and_keeps_the_time_spent(
    workflow_env: WorkflowEnvironment, app_db: AppDb
) -> None:
    ticket = new_ticket_id()
    await add_ticket(app_db, ticket)
    monday = next_weekday_at(await workflow_env.get_current_time(), 0, 9, 0)
    async with escalation_worker(workflow_env, app_db) as queue:
        await skip_to(workflow_env, monday)
        handle = await workflow_env.client.start_workflow(
            EscalationWorkflow.run,
            EscalationInput(case=case(ticket, monday, priority="p3"), policy=support()),
            id=case_workflow_id(ticket),
            task_queue=queue,
        )
        await skip_to(workflow_env, monday + timedelta(hours=1))
        changed = await handle.execute_update(
            EscalationWorkflow.set_priority, SetPriority(priority="p1", by="ana")
        )
        moment = monday + timedelta(hours=1)
        resolution = changed.clocks["resolution"]
        assert changed.case.priority == "p1"
        assert (changed.clocks["first_response"].budget, resolution.budget) == (
            timedelta(minutes=15),
            timedelta(hours=4),
        )
        assert resolution.spent_before == about(timedelta(hours=1))  # the hour spent counts
        # The rest runs on P1's 24x7 calendar: 3 hours from the change, not business hours.
        state = await settled(handle)
        assert state.clocks["resolution"].due == about_at(moment + timedelta(hours=3))

        # P1's levels that were already due fire at once; its first response is late. Their
        # actions run beside the clock: the assignment lands a moment after the level fires.
        async def caught_up() -> bool:
            state = await handle.query(EscalationWorkflow.state)
            return state.levels_fired == 2 and state.queue == "tier-2"

        await eventually(caught_up, "p1's two overdue levels fired and assigned tier-2")
        state = await settled(handle)
        assert state.queue == "tier-2"
        assert state.clocks["first_response"].breached_at is not None
        [entry] = [e for e in await ledger_entries(app_db, handle.id) if "priority" in e.step]
        assert entry.detail == {"from": "p3", "to": "p1", "by": "ana"}
        await handle.execute_update(EscalationWorkflow.resolve, Resolve(by="ana"))
        await handle.result()


async def test_a_levels_set_priority_recomputes_the_clocks_too(
    workflow_env: WorkflowEnvironment, app_db: AppDb
) -> None:
    ticket = new_ticket_id()
    await add_ticket(app_db, ticket)
    monday = next_weekday_at(await workflow_env.get_current_time(), 0, 9, 0)
    async with escalation_worker(workflow_env, app_db) as queue:
        await skip_to(workflow_env, monday)
        handle = await workflow_env.client.start_workflow(
            EscalationWorkflow.run,
            EscalationInput(case=case(ticket, monday, priority="p2"), policy=support()),
            id=case_workflow_id(ticket),
            task_queue=queue,
        )
        # P2's level 2 (3 business hours) assigns tier 2 and raises the priority to p1.
        await skip_to(workflow_env, monday + timedelta(hours=3, minutes=1))
        state = await settled(handle)
        assert state.case.priority == "p1" and state.queue == "tier-2"
        resolution = state.clocks["resolution"]
        assert resolution.budget == timedelta(hours=4)
        assert resolution.spent_before == about(timedelta(hours=3))
        assert resolution.due == about_at(monday + timedelta(hours=4))
        with pytest.raises(CaseCommandRefused) as refused:
            await command_case(
                workflow_env.client, ticket, "set_priority", SetPriority(priority="p7")
            )
        assert "unknown priority 'p7'" in str(refused.value)
        await handle.execute_update(EscalationWorkflow.resolve, Resolve(by="ana"))
        await handle.result()
