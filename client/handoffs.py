"""Client-side operations on handoffs, shared by the command line, the intake and tests."""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio.client import Client, WorkflowHandle, WorkflowUpdateFailedError
from temporalio.common import SearchAttributePair, TypedSearchAttributes
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError, RPCStatusCode

from activities import search_attributes as sa
from client.updates import execute_update
from definitions.errors import OpsflowError
from definitions.events import BotHandoffRequested, EventEnvelope, TranscriptLine
from definitions.models import PinnedDefinition
from store.registry import get, latest, latest_of_kind
from workflows.handoff import HandoffWorkflow
from workflows.handoff_model import HandoffInput, HandoffStatus, handoff_workflow_id

Sessions = async_sessionmaker[AsyncSession]
COMMANDS = ("accept", "decline", "return_to_bot", "resolve", "customer_left")
_TICKET_ID = re.compile(r"^[\w.:@-]{1,64}$")
CLI_SOURCE = "opsflow-cli"


class HandoffCommandRefused(OpsflowError):
    """The conversation refused the command (or does not exist); the message says why."""


async def _pinned(sessions: Sessions, requested: str) -> PinnedDefinition:
    name, _, version = requested.partition("@")
    return await (get(sessions, name, int(version)) if version else latest(sessions, name))


async def handoff_start_input(
    sessions: Sessions, definition: str | None = None, conversation_id: str | None = None
) -> HandoffInput:
    """The start input of a `Handoff` run: the pinned handoff definition (`definition`,
    NAME or NAME@VERSION, default the first deployed handoff definition by name) and the
    pinned escalation policy it names."""
    if definition:
        pinned = await _pinned(sessions, definition)
    else:
        deployed = await latest_of_kind(sessions, "handoff")
        if not deployed:
            raise OpsflowError("no handoff definition is deployed; run `opsflow defs deploy`")
        pinned = deployed[0]
    if pinned.kind != "handoff":
        raise OpsflowError(f"{pinned.ref} is a {pinned.kind} definition, not a handoff")
    policy = await latest(sessions, pinned.handoff.escalation_policy)
    if policy.kind != "escalation":
        raise OpsflowError(f"{policy.ref} is a {policy.kind} definition, not an escalation")
    return HandoffInput(
        definition=pinned, escalation_policy=policy, conversation_id=conversation_id
    )


def handoff_request_event(
    conversation_id: str,
    customer_id: str,
    reason: str,
    transcript: list[TranscriptLine],
    tried: list[str] | None = None,
) -> EventEnvelope:
    data = BotHandoffRequested(
        conversation_id=conversation_id,
        customer_id=customer_id,
        reason=reason,
        transcript=transcript,
        tried=tried or [],
    )
    return EventEnvelope(
        id=str(uuid.uuid4()),
        source=CLI_SOURCE,
        type="bot.handoff_requested",
        subject=conversation_id,
        time=datetime.now(UTC),
        data=data.model_dump(mode="json", by_alias=True),
    )


async def signal_with_start(
    client: Client, task_queue: str, start: HandoffInput, event: EventEnvelope
) -> WorkflowHandle[HandoffWorkflow, HandoffStatus]:
    """What the intake does: signal-with-start of `event` on `handoff-<conversation>`."""
    conversation = str(event.data["conversation_id"])
    pairs: list[SearchAttributePair[Any]] = [
        SearchAttributePair(sa.OPS_KIND, "handoff"),
        SearchAttributePair(sa.OPS_STATE, "bot"),
        SearchAttributePair(sa.OPS_DEFINITION, start.definition.ref),
    ]
    customer = event.data.get("customer_id")
    if isinstance(customer, str):
        pairs.append(SearchAttributePair(sa.OPS_CUSTOMER_ID, customer))
    return await client.start_workflow(
        HandoffWorkflow.run,
        start,
        id=handoff_workflow_id(conversation),
        task_queue=task_queue,
        start_signal="event",
        start_signal_args=[event],
        search_attributes=TypedSearchAttributes(pairs),
        static_summary=f"handoff for {conversation} under {start.definition.ref}",
    )


async def command_handoff(
    client: Client, conversation_id: str, update: str, argument: BaseModel | None = None
) -> HandoffStatus:
    """Send the conversation's update; a refusal raises HandoffCommandRefused."""
    if update not in COMMANDS:
        raise HandoffCommandRefused(f"unknown command {update!r}")
    handle = client.get_workflow_handle(handoff_workflow_id(conversation_id))
    try:
        result = await execute_update(
            handle, update, args=[] if argument is None else [argument], result_type=HandoffStatus
        )
    except WorkflowUpdateFailedError as exc:
        cause = exc.cause
        reason = cause.message if isinstance(cause, ApplicationError) else str(cause or exc)
        raise HandoffCommandRefused(f"conversation {conversation_id} refused: {reason}") from None
    except RPCError as exc:
        if exc.status != RPCStatusCode.NOT_FOUND:
            raise
        raise HandoffCommandRefused(
            f"conversation {conversation_id} has no running handoff"
        ) from None
    return result


async def handoff_state(client: Client, conversation_id: str) -> HandoffStatus:
    handle = client.get_workflow_handle(handoff_workflow_id(conversation_id))
    try:
        state: HandoffStatus = await handle.query("state", result_type=HandoffStatus)
    except RPCError as exc:
        if exc.status == RPCStatusCode.NOT_FOUND:
            raise OpsflowError(f"there is no handoff for conversation {conversation_id}") from None
        raise
    return state


async def handoff_for_ticket(client: Client, ticket_id: str) -> str | None:
    """The running handoff whose conversation has ticket `ticket_id` (the workflow upserts
    OpsCaseId with its ticket), or None. Visibility lags a second or so behind the ticket's
    creation, which is far less than any vendor takes to assign it."""
    if not _TICKET_ID.match(ticket_id):
        return None
    query = f'OpsKind = "handoff" AND OpsCaseId = "{ticket_id}" AND ExecutionStatus = "Running"'
    async for execution in client.list_workflows(query, limit=1):
        return execution.id
    return None


async def deliver_ticket_event(client: Client, event: EventEnvelope) -> str | None:
    """Signal a vendor's `ticket.updated` to the handoff waiting on that ticket (with vendor
    routing, the assignee Zendesk picked ends the wait); the workflow id, or None when no
    running handoff has the ticket (the event is then the escalation case's)."""
    ticket = event.data.get("ticket_id")
    if event.type != "ticket.updated" or not isinstance(ticket, str):
        return None
    workflow_id = await handoff_for_ticket(client, ticket)
    if workflow_id is None:
        return None
    try:
        await client.get_workflow_handle(workflow_id).signal("event", event)
    except RPCError as exc:
        if exc.status != RPCStatusCode.NOT_FOUND:
            raise
        return None  # it ended between the lookup and the signal
    return workflow_id
