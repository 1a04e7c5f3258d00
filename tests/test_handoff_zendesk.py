"""Handoffs with Zendesk as the ticketing backend (a local server speaking its API), on the
time-skipping server: the vendor routes. The conversation's ticket goes to the queue's
Zendesk group, the workflow waits for the `ticket.updated` event that shows an assignee
(what the intake relays), and no sandbox agent is ever offered; with no assignee in time it
moves to the overflow queue's group, then schedules a callback task with its due time."""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, timedelta
from typing import Any

import pytest
from temporalio.api.sdk.v1 import WorkflowMetadata
from temporalio.service import RPCError
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from activities.backends import Backends
from activities.deps import ActivityDeps
from client.handoffs import HandoffCommandRefused, command_handoff, handoff_request_event
from definitions.events import EventEnvelope
from tests.activities.conftest import VendorServer
from tests.conftest import AppDb
from tests.escalation_support import keep_history, ledger_steps, next_weekday_at, skip_to
from tests.handoff_support import (
    FakeZendesk,
    add_customers,
    agent,
    fresh_env,
    new_conversation,
    send,
    start,
    state,
    turn_event,
    wait_until,
)
from worker.assembly import activity_functions
from worker.cli_handoff import _status_line
from workflows.escalation import EscalationStatus as CaseStatus
from workflows.escalation import EscalationWorkflow
from workflows.handoff import HandoffWorkflow
from workflows.handoff_model import Accept, CustomerLeft, HandoffStatus, Resolve
from workflows.sandbox import WORKFLOW_RUNNER

pytestmark = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)

GROUPS = {360001: "Support", 360002: "Billing", 360003: "Tier 2", 360004: "Callbacks"}


@asynccontextmanager
async def zendesk_worker(
    env: WorkflowEnvironment, db: AppDb
) -> AsyncIterator[tuple[str, FakeZendesk, VendorServer]]:
    """A worker whose ticketing backend is Zendesk (the fake), everything else sandbox."""
    await add_customers(db)
    fake = FakeZendesk(GROUPS, page_size=3)
    with VendorServer(fake) as server:
        fake.base_url = server.url
        backends = dataclasses.replace(Backends.sandbox(db.sessions), ticketing=fake.adapter())
        queue = f"handoff-zd-{uuid.uuid4()}"
        async with Worker(
            env.client,
            task_queue=queue,
            workflows=[HandoffWorkflow, EscalationWorkflow],
            workflow_runner=WORKFLOW_RUNNER,
            activities=activity_functions(ActivityDeps(sessions=db.sessions, backends=backends)),
        ):
            yield queue, fake, server


def ticket_updated(ticket_id: str, **data: Any) -> EventEnvelope:
    """The intake's `ticket.updated` from Zendesk's webhook (assignee_changed)."""
    return EventEnvelope(
        id=str(uuid.uuid4()),
        source="zendesk",
        type="ticket.updated",
        subject=ticket_id,
        data={"ticket_id": ticket_id, **data},
    )


async def _billing_handoff(env: WorkflowEnvironment, queue: str) -> Any:
    conversation = new_conversation()
    handle = await start(
        env, queue, turn_event(conversation, "HC-EN", "my invoc", intent="billing")
    )
    await send(
        env, queue, handoff_request_event(conversation, "HC-EN", "asks", [], ["faq:invoices"])
    )
    return conversation, handle


def _puts(server: VendorServer, ticket: str, has: Callable[[dict[str, Any]], bool]) -> list[Any]:
    return [
        seen.json()["ticket"]
        for seen in server.seen
        if (seen.method, seen.path) == ("PUT", f"/api/v2/tickets/{ticket}.json")
        and has(seen.json()["ticket"])
    ]


async def test_zendesk_group_routing_waits_for_the_assignee(app_db: AppDb) -> None:
    async with fresh_env() as env, zendesk_worker(env, app_db) as (queue, fake, server):
        await skip_to(env, next_weekday_at(await env.get_current_time(), 1, 10, 0))
        conversation, handle = await _billing_handoff(env, queue)
        queued = await wait_until(
            handle, lambda s: s.state == "queued" and s.vendor_group is not None, "queued"
        )
        assert queued.routing == "vendor" and queued.queue == "billing"
        assert queued.vendor_group == "360002" and queued.ticket_id is not None
        ticket = queued.ticket_id
        zd = fake.tickets[int(ticket)]
        assert zd["group_id"] == 360002 and zd.get("assignee_id") is None
        assert "queue_billing" in zd["tags"] and f"conversation:{conversation}" in zd["tags"]
        assert "my invoc" in zd["comments"][0]["body"]  # the context packet, internal
        assert zd["comments"][0]["public"] is False
        assert not queued.offers and (await agent(app_db, "ana")).active_conversations == 0
        assert "routed by the ticketing vendor (group 360002)" in _status_line(queued)
        metadata = await handle.query("__temporal_workflow_metadata", result_type=WorkflowMetadata)
        assert "in the vendor's group 360002 (billing), waiting for an assignee" in (
            metadata.current_details
        )

        # Zendesk routes, not opsflow: an accept through opsflow is refused with the reason.
        with pytest.raises(HandoffCommandRefused, match="the vendor routes this conversation"):
            await command_handoff(env.client, conversation, "accept", Accept(agent="ana"))
        # Another ticket's event, and an update without an assignee, change nothing.
        await handle.signal("event", ticket_updated("999", assignee="42"))
        await handle.signal("event", ticket_updated(ticket, status="open"))
        await env.sleep(timedelta(seconds=30))
        assert (await state(handle)).state == "queued"

        # The assignee Zendesk picked arrives as ticket.updated: the conversation is active.
        fake.assign(int(ticket), 90210)
        await handle.signal("event", ticket_updated(ticket, assignee="90210", status="open"))
        active = await wait_until(handle, lambda s: s.case_acknowledged, "case acknowledged")
        assert active.state == "active" and active.agent == "90210"
        assert active.offers[-1].outcome == "accepted" and active.offers[-1].agent_id == "90210"
        case = await env.client.get_workflow_handle(f"case-{ticket}").query(
            "state", result_type=CaseStatus
        )
        assert case.case.opened_at == active.requested_at  # the wait counts
        # opsflow did not assign it again (Zendesk did) and reserved no sandbox agent.
        assert not _puts(server, ticket, lambda t: "assignee_id" in t and t["assignee_id"])
        assert not _puts(server, ticket, lambda t: "assignee_email" in t)

        await command_handoff(env.client, conversation, "resolve", Resolve(by="90210"))
        final: HandoffStatus = await handle.result()
        assert final.state == "resolved"
        assert (await agent(app_db, "ana")).active_conversations == 0
        steps = await ledger_steps(app_db, handle.id)
        assert any(step.endswith("-active") for step in steps), steps
        await keep_history(handle, "handoff-zendesk-assigned")


async def test_zendesk_no_assignee_overflows_to_the_next_group_then_a_callback_task(
    app_db: AppDb,
) -> None:
    async with fresh_env() as env, zendesk_worker(env, app_db) as (queue, fake, server):
        await skip_to(env, next_weekday_at(await env.get_current_time(), 1, 10, 0))
        _, handle = await _billing_handoff(env, queue)
        queued = await wait_until(handle, lambda s: s.vendor_group == "360002", "in billing")
        ticket = queued.ticket_id
        assert ticket is not None
        await env.sleep(timedelta(minutes=10, seconds=5))  # max_wait without an assignee
        overflowed = await wait_until(handle, lambda s: s.vendor_group == "360003", "in tier-2")
        assert overflowed.overflowed and overflowed.queue == "tier-2"
        assert fake.tickets[int(ticket)]["group_id"] == 360003
        final: HandoffStatus = await handle.result()  # and no one in tier-2 either
        assert final.state == "callback_scheduled" and final.callback_ticket_id is not None
        assert final.callback_at is not None
        task = fake.tickets[int(final.callback_ticket_id)]
        assert task["type"] == "task" and "queue_callbacks" in task["tags"]
        due = final.callback_at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        assert task["due_at"] == due
        assert fake.group_reads == 2  # the groups were read once (two pages of three)
        creates = [s for s in server.seen if s.method == "POST"]
        assert len(creates) == 2  # the conversation's ticket and the callback task, once each
        await keep_history(handle, "handoff-zendesk-overflow-callback")


async def test_zendesk_customer_leaves_while_waiting_even_if_the_vendor_refuses_the_close(
    app_db: AppDb,
) -> None:
    async with fresh_env() as env, zendesk_worker(env, app_db) as (queue, fake, server):
        await skip_to(env, next_weekday_at(await env.get_current_time(), 1, 10, 0))
        conversation, handle = await _billing_handoff(env, queue)
        queued = await wait_until(handle, lambda s: s.vendor_group is not None, "in a group")
        assert queued.ticket_id is not None
        fake.refused_statuses.add("closed")
        await command_handoff(env.client, conversation, "customer_left", CustomerLeft())
        final: HandoffStatus = await handle.result()
        assert final.state == "abandoned" and final.agent is None
        # opsflow tried to close it (refused with a 422), and the run still ended cleanly.
        closes = _puts(server, queued.ticket_id, lambda t: t.get("status") == "closed")
        assert len(closes) == 1
        # An assignee arriving after the end is for no one: the workflow is gone.
        with pytest.raises(RPCError):
            await handle.signal("event", ticket_updated(queued.ticket_id, assignee="90210"))
