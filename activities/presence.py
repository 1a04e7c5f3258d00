"""The presence activities: queues, offers and agents through the presence port (the sandbox
backend in activities/adapters/sandbox_presence.py), and waking the conversations a freed
agent can take (signal `agent_free`).

With a vendor ticketing backend (Zendesk) the vendor picks the agent instead: `queue_info`
answers `routing="vendor"` (the queue's hours from the presence backend, no depth or
estimate: the vendor's staffing is not ours to see), and `assign_group` puts the
conversation's ticket in the queue's vendor group; the vendor's `ticket.updated` with an
assignee ends the wait.

Also the bot's webhook instruction (`stop_replying`, `resume`), sent once per key through
the outbox to the `webhook` notifier, and the handoff's commands to its escalation case
(a workflow cannot send another an update, so this activity does, with the worker's client).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from typing import Any, Protocol, runtime_checkable

from temporalio import activity
from temporalio.client import Client, WorkflowUpdateFailedError
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError, RPCStatusCode

from activities.deps import ActivityDeps
from activities.errors import invalid
from activities.escalation_contracts import Acknowledge
from activities.escalation_contracts import Resolve as ResolveCase
from activities.handoff_contracts import (
    AgentReleased,
    AgentView,
    AssignGroup,
    BotAction,
    BotActionSent,
    CaseCommand,
    CaseCommandDone,
    GroupAssigned,
    LeaveQueue,
    OpenTickets,
    PickAgent,
    QueueInfo,
    QueueRequest,
    ReleaseAgent,
    Reservation,
    SetAgentStatus,
    TicketBrief,
)
from activities.models import Ticket
from activities.outbox import Effect, Outbox
from activities.ports import OutgoingMessage, PresencePort
from activities.update_aborts import aborted_by_close

_log = logging.getLogger(__name__)

AGENT_FREE_SIGNAL = "agent_free"


@runtime_checkable
class GroupRouting(Protocol):
    """A ticketing backend whose vendor routes tickets to agents itself (Zendesk)."""

    name: str
    in_app_database: bool

    async def assign_group(self, effect: Effect, ticket_id: str, queue: str) -> Ticket: ...


async def wake(client: Client, workflow_ids: Sequence[str]) -> None:
    """Tell each workflow a free agent may be theirs (`agent_free`); one that has ended or
    cannot be reached now looks again on its own within a minute."""
    for workflow_id in dict.fromkeys(workflow_ids):
        try:
            await client.get_workflow_handle(workflow_id).signal(AGENT_FREE_SIGNAL)
        except RPCError as exc:
            if exc.status != RPCStatusCode.NOT_FOUND:
                log = activity.logger if activity.in_activity() else _log
                log.warning("agent_free to %s failed: %s", workflow_id, exc)


class PresenceActivities:
    def __init__(self, deps: ActivityDeps) -> None:
        self._deps = deps
        self._outbox = Outbox(deps.sessions)

    def all(self) -> list[Callable[..., Any]]:
        """Every activity of this module, for the worker's list."""
        return [
            self.queue_info,
            self.reserve_agent,
            self.release_agent,
            self.set_status,
            self.open_tickets,
            self.bot_action,
            self.assign_group,
            self.case_command,
            self.leave_queue,
        ]

    @property
    def _presence(self) -> PresencePort:
        return self._deps.resolved_backends.presence

    def _vendor(self) -> GroupRouting | None:
        ticketing = self._deps.resolved_backends.ticketing
        return ticketing if isinstance(ticketing, GroupRouting) else None

    @activity.defn(name="presence.queue_info")
    async def queue_info(self, request: QueueRequest) -> QueueInfo:
        """A queue's hours, waiting conversations, matching staff and estimated wait; with a
        vendor that routes (Zendesk), the hours only and `routing="vendor"`."""
        info = await self._presence.queue_info(request)
        vendor = self._vendor()
        if vendor is None:
            return info
        return info.model_copy(
            update={
                "routing": "vendor",
                "vendor": vendor.name,
                "depth": 0,
                "staffed": 0,
                "free_slots": 0,
                "estimated_wait_seconds": None,
            }
        )

    @activity.defn(name="presence.assign_group")
    async def assign_group(self, request: AssignGroup) -> GroupAssigned:
        """Put the ticket in the queue's vendor group, unassigned; the vendor routes it."""
        vendor = self._vendor()
        if vendor is None:
            raise invalid("the ticketing backend has no groups to route to: opsflow offers itself")

        async def act(effect: Effect) -> GroupAssigned:
            ticket = await vendor.assign_group(effect, request.ticket_id, request.queue)
            return GroupAssigned(
                ticket_id=ticket.id, group=ticket.queue or request.queue, backend=vendor.name
            )

        return await self._outbox.run(
            idempotency_key=request.idempotency_key,
            system="ticketing",
            operation="assign_group",
            backend=vendor,
            result_type=GroupAssigned,
            act=act,
        )

    @activity.defn(name="presence.reserve_agent")
    async def reserve_agent(self, request: PickAgent) -> Reservation:
        """Reserve the longest-idle available agent with the skills, a language and capacity."""

        presence = self._presence

        async def act(effect: Effect) -> Reservation:
            return await presence.reserve_agent(effect, request)

        reservation = await self._outbox.run(
            idempotency_key=request.idempotency_key,
            system="presence",
            operation="reserve_agent",
            backend=presence,
            result_type=Reservation,
            act=act,
        )
        await wake(activity.client(), reservation.woken)
        return reservation

    @activity.defn(name="presence.release_agent")
    async def release_agent(self, request: ReleaseAgent) -> AgentReleased:
        """Give a reserved conversation slot back (decline, timeout, end of conversation)."""

        presence = self._presence

        async def act(effect: Effect) -> AgentReleased:
            return await presence.release_agent(effect, request)

        released = await self._outbox.run(
            idempotency_key=request.idempotency_key,
            system="presence",
            operation="release_agent",
            backend=presence,
            result_type=AgentReleased,
            act=act,
        )
        await wake(activity.client(), released.woken)
        return released

    @activity.defn(name="presence.set_status")
    async def set_status(self, request: SetAgentStatus) -> AgentView:
        view, woken = await self._presence.set_agent_status(request.agent_id, request.status)
        await wake(activity.client(), woken)
        return view

    @activity.defn(name="presence.leave_queue")
    async def leave_queue(self, request: LeaveQueue) -> None:
        """Out of the line: the conversation stopped waiting without an agent."""
        await self._presence.leave_line(request.conversation_id)

    @activity.defn(name="presence.open_tickets")
    async def open_tickets(self, request: OpenTickets) -> list[TicketBrief]:
        """The customer's open tickets (for the context packet), newest first."""
        return await self._presence.open_tickets(request)

    @activity.defn(name="handoff.bot_action")
    async def bot_action(self, request: BotAction) -> BotActionSent:
        """Tell the bot (webhook `bot:<conversation>`) to stop replying or to resume; once."""
        notifier = self._deps.resolved_backends.notifiers.get("webhook")
        if notifier is None:
            raise invalid("no backend configured for channel 'webhook'")
        message = OutgoingMessage(
            channel="webhook",
            recipient=f"bot:{request.conversation_id}",
            subject=f"bot.{request.action}",
            body=json.dumps(
                {
                    "action": request.action,
                    "conversation_id": request.conversation_id,
                    "reason": request.reason,
                }
            ),
            language="en",
            template=f"bot.{request.action}",
            severity="info",
            customer_id=request.customer_id,
        )

        async def deliver(effect: Effect) -> BotActionSent:
            return BotActionSent(
                message_id=await notifier.send(effect, message), backend=notifier.name
            )

        return await self._outbox.run(
            idempotency_key=request.idempotency_key,
            system="notify",
            operation="bot_action",
            backend=notifier,
            result_type=BotActionSent,
            act=deliver,
        )

    @activity.defn(name="handoff.case_command")
    async def case_command(self, request: CaseCommand) -> CaseCommandDone:
        """Acknowledge or resolve the handoff's case through its own updates. The key is the
        update id: a retry after the case applied it gets the same answer, not a second
        command. A refusal (acknowledged or resolved already, by someone else) or a case that
        has ended is an answer, not an error: the conversation goes on."""
        argument: Acknowledge | ResolveCase = (
            Acknowledge(by=request.by)
            if request.command == "acknowledge"
            else ResolveCase(by=request.by, outcome=request.outcome)
        )
        handle = activity.client().get_workflow_handle(request.workflow_id)
        try:
            await handle.execute_update(request.command, argument, id=request.idempotency_key)
        except WorkflowUpdateFailedError as exc:
            cause = exc.cause
            reason = cause.message if isinstance(cause, ApplicationError) else str(cause or exc)
            return CaseCommandDone(applied=False, detail=reason[:500])
        except RPCError as exc:
            # A case continuing as new aborts the update before it ran: retried, it reaches
            # the new run (the same update id, so never applied twice).
            if exc.status != RPCStatusCode.NOT_FOUND or aborted_by_close(exc):
                raise
            return CaseCommandDone(applied=False, detail=f"{request.workflow_id} has ended")
        return CaseCommandDone(applied=True)
