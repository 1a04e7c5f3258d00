"""The ticket's status reaches the case as it is, and the case's pinned policy decides:
`pause_statuses` pause, any other status resumes. An agent's public reply on the ticket is
the case's first response."""

from __future__ import annotations

from datetime import timedelta

import pytest
from temporalio.testing import WorkflowEnvironment

from activities.adapters.sandbox import SandboxCrm
from definitions.events import EventEnvelope
from intake.router import Router, TemporalLink
from tests.conftest import AppDb
from tests.definition_support import pinned
from tests.escalation_support import (
    add_ticket,
    case,
    escalation_worker,
    ledger_entries,
    new_ticket_id,
    policy_document,
    settled,
    start_case,
)
from workflows.escalation import (
    Acknowledge,
    AgentReply,
    EscalationInput,
    EscalationWorkflow,
    RequesterReply,
    Resolve,
    TicketStatus,
    case_workflow_id,
)

pytestmark = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)


def _updated(data: dict[str, object], n: int = 1) -> EventEnvelope:
    return EventEnvelope(
        id=f"e-{n}", source="zendesk", type="ticket.updated", subject="T-1", data=data
    )


def test_the_intake_sends_the_status_and_the_public_reply_as_they_are(app_db: AppDb) -> None:
    async def never() -> object:
        raise AssertionError("no Temporal needed")

    router = Router(TemporalLink(never), app_db.sessions, "q", SandboxCrm(app_db.sessions))  # type: ignore[arg-type]
    who = "zendesk event e-1"
    for status in ("pending", "on_hold", "open", "new"):
        [(name, command)] = router._commands(_updated({"ticket_id": "T-1", "status": status}))
        assert (name, command) == ("ticket_status", TicketStatus(status=status, by=who))
    [(name, command)] = router._commands(_updated({"ticket_id": "T-1", "status": "solved"}))
    assert (name, command) == ("resolve", Resolve(by=who))
    reply = router._commands(
        _updated({"ticket_id": "T-1", "public_reply_by": "ana", "status": "pending"})
    )
    assert reply == [
        ("agent_reply", AgentReply(by="ana", public=True)),
        ("ticket_status", TicketStatus(status="pending", by=who)),
    ]


def test_the_intake_maps_a_public_agent_comment_and_a_requester_comment(app_db: AppDb) -> None:
    """A requester's comment starts a next-reply target, an agent's public comment answers
    it: both reach the case as its commands, the requester's first."""

    async def never() -> object:
        raise AssertionError("no Temporal needed")

    router = Router(TemporalLink(never), app_db.sessions, "q", SandboxCrm(app_db.sessions))  # type: ignore[arg-type]
    [(name, command)] = router._commands(
        _updated({"ticket_id": "T-1", "requester_reply_by": "C-1"})
    )
    assert (name, command) == ("requester_reply", RequesterReply(by="C-1"))
    both = router._commands(
        _updated({"ticket_id": "T-1", "requester_reply_by": "C-1", "public_reply_by": "ana"})
    )
    assert [name for name, _ in both] == ["requester_reply", "agent_reply"]


async def test_pause_statuses_decide_which_statuses_pause(
    workflow_env: WorkflowEnvironment, app_db: AppDb
) -> None:
    ticket = new_ticket_id()
    await add_ticket(app_db, ticket)
    policy = pinned(policy_document(pause_statuses=["pending"]))
    async with escalation_worker(workflow_env, app_db) as queue:
        opened_at = await workflow_env.get_current_time()
        handle = await workflow_env.client.start_workflow(
            EscalationWorkflow.run,
            EscalationInput(case=case(ticket, opened_at), policy=policy),
            id=case_workflow_id(ticket),
            task_queue=queue,
        )

        async def status(value: str) -> str:
            state = await handle.execute_update(
                EscalationWorkflow.ticket_status, TicketStatus(status=value, by="zendesk")
            )
            return state.state

        # on_hold is not among this policy's pause statuses: the clocks keep running.
        assert await status("on_hold") == "open"
        assert await status("pending") == "paused"
        assert (await settled(handle)).pause_reason == "ticket pending"
        assert await status("pending") == "paused"  # still waiting: nothing new
        await workflow_env.sleep(timedelta(minutes=30))
        assert await status("on_hold") == "open"  # no longer waiting on the customer
        assert await status("open") == "open"
        state = await settled(handle)
        # The half hour while pending did not count; the seconds around it did.
        assert state.clocks["first_response"].spent_before < timedelta(minutes=1)
        detail = [
            (e.step, e.detail)
            for e in await ledger_entries(app_db, handle.id)
            if e.step in {"pause", "resume"}
        ]
        assert detail == [
            ("pause", {"status": "pending", "by": "zendesk", "reason": "ticket pending"}),
            ("resume", {"status": "on_hold", "by": "zendesk"}),
        ]
        await handle.execute_update(EscalationWorkflow.resolve, Resolve(by="ana"))
        await handle.result()


async def test_a_public_reply_is_the_first_response_and_only_the_first_counts(
    workflow_env: WorkflowEnvironment, app_db: AppDb
) -> None:
    ticket = new_ticket_id()
    await add_ticket(app_db, ticket)
    async with escalation_worker(workflow_env, app_db) as queue:
        handle = await start_case(workflow_env, queue, ticket)
        await workflow_env.sleep(timedelta(minutes=12))
        reply = Acknowledge(by="ana", first_response_only=True)
        state = await handle.execute_update(EscalationWorkflow.acknowledge, reply)
        assert (state.state, state.acknowledged_by) == ("acknowledged", "ana")
        assert state.clocks["first_response"].met_at is not None
        later = Acknowledge(by="bernd", first_response_only=True)
        assert (
            await handle.execute_update(EscalationWorkflow.acknowledge, later)
        ).acknowledged_by == "ana"
        await workflow_env.sleep(timedelta(hours=2))
        state = await settled(handle)
        assert state.levels_fired == 1 and state.clocks["first_response"].breached_at is None
        await handle.execute_update(EscalationWorkflow.resolve, Resolve(by="ana"))
        await handle.result()
    [entry] = [e for e in await ledger_entries(app_db, handle.id) if "acknowledge" in e.step]
    assert entry.detail == {"by": "ana", "as": "public reply"}
