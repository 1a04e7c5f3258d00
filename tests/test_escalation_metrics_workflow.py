"""Zendesk's SLA metrics on the workflow (time-skipping server, the sandbox's activities): a
scripted ticket conversation drives every clock through the case's updates, as the intake
sends them, and each is checked against Zendesk's definitions (support.zendesk.com,
"Defining and using SLA policies"; developer.zendesk.com, "Ticket metric event types
reference": requester wait time pauses while pending, agent work time while pending or
on-hold)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select
from temporalio.testing import WorkflowEnvironment

from store.models import SandboxCrmNote
from tests.conftest import AppDb
from tests.definition_support import pinned
from tests.escalation_support import (
    about,
    about_at,
    add_ticket,
    case,
    escalation_worker,
    keep_history,
    ledger_entries,
    new_ticket_id,
    policy_document,
    settled,
    skip_to,
)
from workflows.escalation import (
    AgentReply,
    EscalationInput,
    EscalationWorkflow,
    RequesterReply,
    Resolve,
    SetPriority,
    TicketStatus,
    case_workflow_id,
)

pytestmark = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)

METRICS_P2 = {
    "priority": "p2",
    "first_response": "1h",
    "next_reply": "2h",
    "periodic_update": "3h",
    "pausable_update": "3h",
    "requester_wait": "6h",
    "agent_work": "4h",
    "resolution": "1d",
}
METRICS_P1 = {"priority": "p1", "first_response": "30m", "next_reply": "1h", "resolution": "8h"}


def metrics_policy() -> object:
    return pinned(policy_document(slas=[METRICS_P1, METRICS_P2], priorities=["p1", "p2"]))


async def test_a_ticket_conversation_drives_every_metric(
    workflow_env: WorkflowEnvironment, app_db: AppDb
) -> None:
    """Zendesk's definitions, one conversation: the first public agent comment is the first
    reply; next reply runs from the oldest unanswered requester comment to the next public
    agent comment; periodic update is the time between public agent comments, pausable
    update the same paused while pending; requester wait time counts new, open and on-hold,
    agent work time new and open. A priority change re-budgets them keeping the time
    spent. Each breach is a ledger row with the policy's on_breach, once per target."""
    ticket = new_ticket_id()
    await add_ticket(app_db, ticket)
    policy = metrics_policy()
    async with escalation_worker(workflow_env, app_db) as queue:
        opened = await workflow_env.get_current_time()
        handle = await workflow_env.client.start_workflow(
            EscalationWorkflow.run,
            EscalationInput(case=case(ticket, opened, priority="p2"), policy=policy),  # type: ignore[arg-type]
            id=case_workflow_id(ticket),
            task_queue=queue,
        )
        state = await settled(handle)
        assert state.sla_metrics
        assert {name: c.status for name, c in state.clocks.items()} == {
            "first_response": "running",
            "next_reply": "waiting",
            "periodic_update": "waiting",
            "pausable_update": "waiting",
            "requester_wait": "running",
            "agent_work": "running",
            "resolution": "running",
        }

        async def at(minutes: int) -> None:
            await skip_to(workflow_env, opened + timedelta(minutes=minutes))

        await at(20)
        # An internal note is no reply; the first public one meets the first response.
        await handle.execute_update(
            EscalationWorkflow.agent_reply, AgentReply(by="ana", public=False)
        )
        replied = await handle.execute_update(EscalationWorkflow.agent_reply, AgentReply(by="ana"))
        assert replied.acknowledged_by == "ana"
        assert replied.clocks["first_response"].met_at == about_at(opened + timedelta(minutes=20))
        assert replied.clocks["periodic_update"].running_since is not None

        await at(30)
        await handle.execute_update(EscalationWorkflow.requester_reply, RequesterReply(by="C-0001"))
        await handle.execute_update(
            EscalationWorkflow.ticket_status, TicketStatus(status="open", by="zendesk")
        )
        await at(40)
        paused = await handle.execute_update(
            EscalationWorkflow.ticket_status, TicketStatus(status="pending", by="zendesk")
        )
        assert paused.state == "paused"
        shown = {name: c.status for name, c in (await settled(handle)).clocks.items()}
        # Pending: the case's clocks, pausable update, requester wait and agent work stop;
        # next reply and periodic update run on (Zendesk pauses neither).
        assert shown["pausable_update"] == shown["requester_wait"] == shown["agent_work"]
        assert shown["pausable_update"] == "paused"
        assert shown["next_reply"] == shown["periodic_update"] == "running"

        # Next reply breaches 2h after the requester's message, periodic update 3h after the
        # first public reply; pausable update, paused, does not.
        await at(30 + 120 + 1)
        await at(20 + 180 + 1)
        state = await settled(handle)
        assert state.clocks["next_reply"].breached_at == about_at(opened + timedelta(minutes=150))
        assert state.clocks["periodic_update"].breached_at == about_at(
            opened + timedelta(minutes=200)
        )
        assert state.clocks["pausable_update"].breached_at is None
        assert state.clocks["pausable_update"].spent_before == about(timedelta(minutes=20))
        assert state.clocks["requester_wait"].spent_before == about(timedelta(minutes=40))

        await at(240)
        await handle.execute_update(
            EscalationWorkflow.ticket_status, TicketStatus(status="open", by="zendesk")
        )
        # The answer meets the next reply (late) and starts the second update interval.
        await handle.execute_update(EscalationWorkflow.agent_reply, AgentReply(by="ana"))
        # A priority change: P1 measures the first response, next reply and resolution only.
        changed = await handle.execute_update(
            EscalationWorkflow.set_priority, SetPriority(priority="p1", by="lead")
        )
        assert set(changed.clocks) == {"first_response", "next_reply", "resolution"}
        await at(250)
        await handle.execute_update(EscalationWorkflow.requester_reply, RequesterReply(by="C-0001"))
        state = await settled(handle)
        next_reply = state.clocks["next_reply"]
        assert (next_reply.cycle, next_reply.budget) == (2, timedelta(hours=1))
        assert next_reply.due == about_at(opened + timedelta(minutes=250 + 60))
        await at(250 + 61)
        state = await settled(handle)
        assert state.clocks["next_reply"].breached_at is not None
        await handle.execute_update(EscalationWorkflow.resolve, Resolve(by="ana"))
        summary = await handle.result()
        await keep_history(handle, "escalation-sla-metrics")
    outcomes = {outcome.name: outcome for outcome in summary.slas}
    assert outcomes["first_response"].met and not outcomes["resolution"].breached
    entries = await ledger_entries(app_db, handle.id)
    steps = [entry.step for entry in entries]
    for breach in ("breach-next_reply-1", "breach-periodic_update-1", "breach-next_reply-2"):
        assert steps.count(breach) == 1, repr(steps)
    # The policy's on_breach (a CRM note) ran for each target that breached.
    async with app_db.sessions() as session:
        notes = list(
            await session.scalars(
                select(SandboxCrmNote.body).where(SandboxCrmNote.customer_id == "C-0001")
            )
        )
    assert notes.count(f"Case {ticket} missed its next_reply target.") == 2
    assert notes.count(f"Case {ticket} missed its periodic_update target.") == 1
    assert "warn-next_reply-1-50" in steps
    assert not any("pausable_update" in step for step in steps if step.startswith("breach"))
    assert {"agent-reply", "requester-reply"} <= set(steps)


async def test_a_case_opened_before_the_metrics_keeps_its_two_clocks(
    workflow_env: WorkflowEnvironment, app_db: AppDb
) -> None:
    """A policy with only first_response and resolution opens the same two clocks, and a
    public reply is the first response as before."""
    ticket = new_ticket_id()
    await add_ticket(app_db, ticket)
    policy = pinned(policy_document())
    async with escalation_worker(workflow_env, app_db) as queue:
        opened = await workflow_env.get_current_time()
        handle = await workflow_env.client.start_workflow(
            EscalationWorkflow.run,
            EscalationInput(case=case(ticket, opened, priority="p2"), policy=policy),
            id=case_workflow_id(ticket),
            task_queue=queue,
        )
        state = await settled(handle)
        assert list(state.clocks) == ["first_response", "resolution"]
        replied = await handle.execute_update(EscalationWorkflow.agent_reply, AgentReply(by="ana"))
        assert replied.acknowledged_by == "ana"
        await handle.execute_update(EscalationWorkflow.resolve, Resolve(by="ana"))
        await handle.result()
