"""A case's actions that fail are not reported as done: the queue and assignee change only when
the assignment succeeded, and the failure shows in the state, the ledger and the answer."""

from __future__ import annotations

from datetime import timedelta

import pytest
from temporalio.testing import WorkflowEnvironment

from activities.adapters.sandbox import SandboxTicketing
from client.cases import CaseCommandRefused, command_case, open_case
from store.models import SandboxTicket
from tests.conftest import AppDb
from tests.definition_support import pinned
from tests.escalation_support import (
    case,
    escalation_worker,
    keep_history,
    ledger_entries,
    ledger_steps,
    new_ticket_id,
    policy_document,
    settled,
    start_case,
)
from workflows.escalation import (
    EscalationInput,
    EscalationWorkflow,
    Reassign,
    Resolve,
    SetStage,
    case_workflow_id,
)

pytestmark = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)


async def test_reassign_of_a_missing_ticket_fails_and_changes_nothing(
    workflow_env: WorkflowEnvironment, app_db: AppDb
) -> None:
    ticket = new_ticket_id()  # not in the sandbox ticketing backend
    async with escalation_worker(workflow_env, app_db) as queue:
        handle = await start_case(workflow_env, queue, ticket)
        await settled(handle)
        with pytest.raises(CaseCommandRefused) as failed:
            await command_case(
                workflow_env.client, ticket, "reassign", Reassign(queue="tier-2", by="ana")
            )
        message = str(failed.value)
        assert message.startswith(f"case {ticket}: reassign to queue tier-2 failed")
        assert f"ticket '{ticket}' does not exist" in message
        assert "unchanged" in message and "\n" not in message

        state = await settled(handle)
        assert state.queue is None and state.assignee is None
        [failure] = state.failures
        assert failure.step == "reassign"
        assert f"ticket '{ticket}' does not exist" in failure.error
        [entry] = [e for e in await ledger_entries(app_db, handle.id) if e.step == "reassign"]
        assert entry.detail["queue"] == "tier-2"
        assert entry.detail["failed"] == [f"assign: NotFound: ticket '{ticket}' does not exist"]

        await handle.execute_update(EscalationWorkflow.resolve, Resolve(by="ana"))
        await handle.result()
        await keep_history(handle, "escalation-reassign-missing-ticket")


async def test_a_level_assignment_that_fails_is_recorded_not_applied(
    workflow_env: WorkflowEnvironment, app_db: AppDb
) -> None:
    ticket = new_ticket_id()  # level 2 assigns tier-2: the ticket is missing
    async with escalation_worker(workflow_env, app_db) as queue:
        handle = await start_case(workflow_env, queue, ticket)
        await workflow_env.sleep(timedelta(minutes=25))
        state = await settled(handle)
        assert state.levels_fired == 2
        assert state.queue is None
        assert [f.step for f in state.failures] == ["level-2-cycle-0"]
        steps = await ledger_steps(app_db, handle.id)
        assert "level-2-cycle-0-failed" in steps
        assert steps.index("level-2-cycle-0") < steps.index("level-2-cycle-0-failed")
        await handle.execute_update(EscalationWorkflow.resolve, Resolve(by="ana"))
        await handle.result()


async def test_open_case_creates_the_sandbox_ticket_so_reassign_works(
    workflow_env: WorkflowEnvironment, app_db: AppDb
) -> None:
    ticket = new_ticket_id()
    ticketing = SandboxTicketing(app_db.sessions)
    async with escalation_worker(workflow_env, app_db) as queue:
        opened_at = await workflow_env.get_current_time()
        opened = await open_case(
            workflow_env.client,
            queue,
            case(ticket, opened_at),
            pinned(policy_document()),
            ticketing=ticketing,
        )
        assert opened.started
        await settled(opened.handle)
        status = await command_case(
            workflow_env.client, ticket, "reassign", Reassign(queue="tier-2", by="ana")
        )
        assert status.queue == "tier-2" and not status.failures
        assert (await ticketing.get_ticket(ticket)).queue == "tier-2"
        status = await command_case(
            workflow_env.client, ticket, "reassign", Reassign(agent="agent-ana", by="ana")
        )
        assert status.assignee == "agent-ana" and not status.failures
        async with app_db.sessions() as session:
            row = await session.get(SandboxTicket, ticket)
            assert row is not None and row.assignee == "agent-ana"
        await opened.handle.execute_update(EscalationWorkflow.resolve, Resolve(by="ana"))
        await opened.handle.result()
        await keep_history(opened.handle, "escalation-reassign-succeeds")


async def test_unknown_stage_and_targetless_reassign_are_refused_in_one_line(
    workflow_env: WorkflowEnvironment, app_db: AppDb
) -> None:
    ticket = new_ticket_id()
    async with escalation_worker(workflow_env, app_db) as queue:
        handle = await start_case(workflow_env, queue, ticket)
        before = (await settled(handle)).model_dump()
        with pytest.raises(CaseCommandRefused) as refused:
            await command_case(workflow_env.client, ticket, "set_stage", SetStage(stage="nonsense"))
        assert str(refused.value) == (
            f"case {ticket} refused: unknown stage 'nonsense' for policy test-policy@1: "
            "known stages: support, onboarding, active, renewal, at_risk, churned"
        )
        with pytest.raises(CaseCommandRefused) as refused:
            await command_case(workflow_env.client, ticket, "reassign", Reassign(by="ana"))
        assert str(refused.value) == f"case {ticket} refused: give exactly one of queue or agent"
        assert (await settled(handle)).model_dump() == before

        status = await command_case(
            workflow_env.client, ticket, "set_stage", SetStage(stage="renewal")
        )
        assert status.case.stage == "renewal"
        await handle.execute_update(EscalationWorkflow.resolve, Resolve(by="ana"))
        await handle.result()


async def test_a_policy_with_only_named_stages_knows_only_those(
    workflow_env: WorkflowEnvironment, app_db: AppDb
) -> None:
    ticket = new_ticket_id()
    slas = [
        {"priority": "p1", "stage": "support", "first_response": "1h", "resolution": "4h"},
        {"priority": "p1", "stage": "renewal", "first_response": "30m", "resolution": "2h"},
    ]
    policy = pinned(policy_document(priorities=["p1"], slas=slas))
    async with escalation_worker(workflow_env, app_db) as queue:
        opened_at = await workflow_env.get_current_time()
        handle = await workflow_env.client.start_workflow(
            EscalationWorkflow.run,
            EscalationInput(case=case(ticket, opened_at), policy=policy),
            id=case_workflow_id(ticket),
            task_queue=queue,
        )
        await settled(handle)
        with pytest.raises(CaseCommandRefused, match=r"known stages: support, renewal$"):
            await command_case(workflow_env.client, ticket, "set_stage", SetStage(stage="active"))
        await handle.execute_update(EscalationWorkflow.resolve, Resolve(by="ana"))
        await handle.result()
