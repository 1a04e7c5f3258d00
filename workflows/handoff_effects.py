"""The handoff's effects: the activities, patches and upserts the workflow issues for a plan.

The core (handoff_core and its topics) decides; these functions carry a decision out, in the
order the workflow always issued its commands (a run in flight replays against that order).
They take what they need (the state, the pinned handoff spec, the escalation policy) and run
inside the workflow: `temporalio.workflow` is theirs to call, unlike the core's. Each name is
unique across workflows/ so tests/test_workflow_fingerprints.py follows the calls into them.
"""

from __future__ import annotations

from typing import Any, Literal

from temporalio import workflow
from temporalio.exceptions import ActivityError

from activities import search_attributes as sa
from workflows.actions import ActionTarget, call, ledger, run_actions
from workflows.releases import has_change

with workflow.unsafe.imports_passed_through():
    from activities.customer_contracts import CustomerProfile
    from activities.handoff_contracts import (
        AgentReleased,
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
        TicketBrief,
    )
    from activities.models import (
        AddComment,
        CommentAdded,
        CreateTicket,
        GetCustomer,
        MessageSent,
        SendMessage,
        Ticket,
        UpdateTicket,
    )
    from definitions.models import HandoffSpec
    from workflows import handoff_core as core
    from workflows import handoff_routing as routing
    from workflows.escalation_model import CaseInfo
    from workflows.handoff_hours import schedule_callback
    from workflows.handoff_model import HandoffState
    from workflows.handoff_packet import build_packet

TICKET_SEARCHABLE_PATCH = "handoff-ticket-searchable"
"""Upsert OpsCaseId as soon as the ticket exists, not at the `queued` transition."""
CASE_ACKNOWLEDGED_PATCH = "handoff-case-acknowledged"
"""The agent's accept acknowledges the handoff's case: its first response, by that agent."""
CASE_CLOSED_PATCH = "handoff-case-closed"
"""The conversation's ending resolves its case, with the outcome when it was not resolved."""
DUE_AT_PATCH = "handoff-due-at"
"""OpsDueAt carries the pending offer's expiry or the queue's maximum wait."""


def handoff_key(step: str) -> str:
    """The idempotency key of one step of this run's conversation."""
    return f"{workflow.info().workflow_id}/{step}"


def handoff_target(
    s: HandoffState, spec: HandoffSpec, extra: dict[str, Any] | None = None
) -> ActionTarget:
    """Whom the ledger entries and the definition's actions are about."""
    return ActionTarget(
        kind="handoff",
        customer_id=s.customer_id or s.conversation_id,
        ticket_id=s.ticket_id,
        assignee=s.agent,
        account_manager=s.profile.account_manager if s.profile else None,
        definition=s.definition,
        template_context=core.template_context(s, spec, extra),
    )


def upsert_handoff_attributes(s: HandoffState) -> None:
    pairs = core.search_attributes(s)
    due = core.next_deadline(s)
    if due is not None and has_change(DUE_AT_PATCH):
        # kept once nothing is due (see OPS_DUE_AT)
        pairs.append(sa.OPS_DUE_AT.value_set(due))
    workflow.upsert_search_attributes(pairs)


async def load_customer_profile(s: HandoffState) -> None:
    """The CRM profile, once per conversation (a tier trigger and the routing read it)."""
    if s.profile_loaded or s.customer_id is None:
        return
    s.profile_loaded = True
    try:
        s.profile = await call(
            "crm.get_customer", GetCustomer(customer_id=s.customer_id), CustomerProfile
        )
    except ActivityError as exc:
        workflow.logger.warning("no CRM profile for the conversation: %s", exc.cause)


async def fetch_queue_info(s: HandoffState, queue: str, skills: list[str] | None) -> QueueInfo:
    info: QueueInfo = await call(
        "presence.queue_info",
        QueueRequest(
            queue=queue,
            skills=skills,
            languages=routing.languages(s),
            exclude_conversation=s.conversation_id,
        ),
        QueueInfo,
    )
    return info


async def gather_handoff_context(s: HandoffState, spec: HandoffSpec) -> None:
    """The context packet, with the customer's other open tickets when they can be read."""
    assert s.trigger is not None
    tickets: list[TicketBrief] = []
    if s.customer_id:
        try:
            tickets = await call(
                "presence.open_tickets",
                OpenTickets(customer_id=s.customer_id, exclude_tag="handoff"),
                list[TicketBrief],
            )
        except ActivityError as exc:
            workflow.logger.warning("open tickets unavailable: %s", exc.cause)
    s.context = build_packet(s, s.trigger, tickets, list(spec.context))


async def file_handoff_ticket(s: HandoffState) -> None:
    """The ticket for the queue: created with the context packet as its first (internal)
    comment, or moved to the new queue; with vendor routing, given to the queue's group."""
    assert s.context is not None
    if s.ticket_id is None:
        ticket: Ticket = await call(
            "ticketing.create_ticket",
            CreateTicket(
                idempotency_key=handoff_key("ticket"),
                customer_id=s.customer_id or s.conversation_id,
                subject=routing.ticket_subject(s),
                priority=core.TICKET_PRIORITY,
                queue=s.queue,
                tags=["opsflow", "handoff", f"conversation:{s.conversation_id}"],
                channel="chat",
                stage="support",
            ),
            Ticket,
        )
        s.ticket_id = ticket.id
        if has_change(TICKET_SEARCHABLE_PATCH):
            upsert_handoff_attributes(s)  # the vendor's first ticket event can find it
        await call(
            "ticketing.add_comment",
            AddComment(
                idempotency_key=handoff_key("context-packet"),
                ticket_id=ticket.id,
                body=s.context.text,
                public=False,
            ),
            CommentAdded,
        )
    else:
        await update_handoff_ticket(s, "requeue", queue=s.queue)
    if s.routing == "vendor" and s.queue is not None and s.ticket_id is not None:
        assigned: GroupAssigned = await call(
            "presence.assign_group",
            AssignGroup(
                idempotency_key=handoff_key(f"group-{s.queue}"),
                ticket_id=s.ticket_id,
                queue=s.queue,
            ),
            GroupAssigned,
        )
        s.vendor_group = assigned.group


async def take_over_from_bot(s: HandoffState, spec: HandoffSpec) -> None:
    """The bot stops replying and the customer hears a person takes over (each once)."""
    if not s.bot_muted:
        await tell_bot(s, "stop_replying", "a person takes over")
        s.bot_muted = True
    if not s.customer_notified and s.customer_id:
        s.customer_notified = True
        try:
            await call(
                "notify.send",
                SendMessage(
                    idempotency_key=handoff_key("customer-notice"),
                    channel="chat",
                    recipient=f"customer:{s.customer_id}",
                    template=spec.notice.template,
                    context=handoff_target(s, spec).template_context,
                    severity="info",
                ),
                MessageSent,
            )
        except ActivityError as exc:
            workflow.logger.warning("the waiting notice failed: %s", exc.cause)


async def reserve_agent_for(s: HandoffState, search: routing.AgentSearch) -> Reservation:
    """Reserve the best free agent the search allows (or take a place in line)."""
    assert s.queue is not None
    reservation: Reservation = await call(
        "presence.reserve_agent",
        PickAgent(
            idempotency_key=handoff_key(search.step),
            conversation_id=s.conversation_id,
            queue=s.queue,
            skills=search.skills,
            languages=routing.languages(s),
            exclude=search.exclude,
            **search.line,
        ),
        Reservation,
    )
    return reservation


async def release_handoff_agent(agent: str, step: str) -> None:
    await call(
        "presence.release_agent",
        ReleaseAgent(idempotency_key=handoff_key(step), agent_id=agent),
        AgentReleased,
    )


async def assign_ticket_to_agent(s: HandoffState) -> None:
    """opsflow routing: the ticket goes to the agent who accepted (the vendor assigned it
    already otherwise)."""
    if s.routing == "opsflow":
        await update_handoff_ticket(s, "assign", assignee=s.agent, status="open")


async def acknowledge_and_record_case(
    s: HandoffState, spec: HandoffSpec, policy: str, case: CaseInfo
) -> None:
    """The case just opened: acknowledged by the agent who accepted, and in the ledger."""
    assert s.agent is not None and s.case_workflow_id is not None
    if has_change(CASE_ACKNOWLEDGED_PATCH):
        # At once, before the case's first pass can find a level or a clock due.
        done = await send_case_command(s, "acknowledge", s.agent)
        s.case_acknowledged = done.applied
    await ledger(
        handoff_target(s, spec),
        "case-opened",
        {"case": s.case_workflow_id, "policy": policy, "opened_at": case.opened_at.isoformat()},
    )


async def send_case_command(
    s: HandoffState,
    command: Literal["acknowledge", "resolve"],
    by: str,
    outcome: str | None = None,
) -> CaseCommandDone:
    assert s.case_workflow_id is not None
    done: CaseCommandDone = await call(
        "handoff.case_command",
        CaseCommand(
            idempotency_key=handoff_key(f"case-{command}"),
            workflow_id=s.case_workflow_id,
            command=command,
            by=by,
            outcome=outcome,
        ),
        CaseCommandDone,
    )
    if not done.applied:
        workflow.logger.info("the case did not take %s: %s", command, done.detail)
    return done


async def close_handoff_case(s: HandoffState, spec: HandoffSpec) -> None:
    """Resolve the case the way the conversation ended: by who resolved it, or with the
    outcome (returned to the bot, abandoned) and the agent who had it."""
    if s.case_workflow_id is None or s.case_closed:
        return
    by, outcome = core.case_resolution(s)
    done = await send_case_command(s, "resolve", by, outcome)
    s.case_closed = True
    detail = {"case": s.case_workflow_id, "by": by, "outcome": outcome or "resolved"}
    if not done.applied:
        detail["not_applied"] = done.detail
    await ledger(handoff_target(s, spec), "case-closed", detail)


async def schedule_fallback(s: HandoffState, spec: HandoffSpec, why: str) -> None:
    """After hours, too long a wait, no one: a callback inside the queue's hours in the
    customer's timezone, the definition's other fallback actions, the ticket marked and the
    bot back (the workflow then moves to callback_scheduled)."""
    callbacks, others = core.fallback_actions(spec)
    for n, action in enumerate(callbacks):
        info = await fetch_queue_info(s, action.queue, [])
        callback = schedule_callback(s, info, action.within, why, workflow.now())
        ticket: Ticket = await call(
            "ticketing.create_ticket",
            CreateTicket(
                idempotency_key=handoff_key(f"callback-{n}"),
                customer_id=s.customer_id or s.conversation_id,
                subject=callback.subject,
                description=callback.description,
                priority=core.TICKET_PRIORITY,
                queue=action.queue,
                tags=["opsflow", "handoff", "callback", f"conversation:{s.conversation_id}"],
                channel="phone",
                stage="support",
                due_at=callback.slot,
            ),
            Ticket,
        )
        s.callback_ticket_id = ticket.id
    if others:
        outcome = await run_actions(others, handoff_target(s, spec), "fallback")
        if outcome.failed:
            workflow.logger.warning("fallback actions failed: %s", outcome.failed)
    if s.ticket_id:
        await update_handoff_ticket(s, "callback", add_tags=["callback"], status="pending")
    if s.bot_muted:
        await tell_bot(s, "resume", f"callback scheduled: {why}")


async def carry_out_ending(s: HandoffState, spec: HandoffSpec, end: core.Ending) -> None:
    """Undo what the conversation held, in the core's order, then resolve its case."""
    if end.leave_line:  # it stopped waiting without an agent: out of the line
        await call(
            "presence.leave_queue", LeaveQueue(conversation_id=s.conversation_id), type(None)
        )
        s.in_line = False
    if end.release_offered is not None:
        offer = end.release_offered
        await release_handoff_agent(offer.agent_id, f"release-{offer.number}")
    if end.release_active is not None:
        await release_handoff_agent(end.release_active, "release-active")
    if end.close_ticket:
        try:
            await update_handoff_ticket(s, "abandoned", status="closed", add_tags=["abandoned"])
        except ActivityError as exc:  # a vendor may refuse the status: the run still ends
            workflow.logger.warning("closing the abandoned ticket failed: %s", exc.cause)
    if end.resume_bot is not None:
        await tell_bot(s, "resume", end.resume_bot)
    if s.case_workflow_id and has_change(CASE_CLOSED_PATCH):
        await close_handoff_case(s, spec)


async def update_handoff_ticket(s: HandoffState, step: str, **changes: Any) -> None:
    if s.ticket_id is None:
        return
    s.commands += 1
    await call(
        "ticketing.update_ticket",
        UpdateTicket(
            idempotency_key=handoff_key(f"ticket-{s.commands}-{step}"),
            ticket_id=s.ticket_id,
            **changes,
        ),
        Ticket,
    )


async def tell_bot(
    s: HandoffState, action: Literal["stop_replying", "resume"], reason: str
) -> None:
    await call(
        "handoff.bot_action",
        BotAction(
            idempotency_key=handoff_key(f"bot-{action}"),
            conversation_id=s.conversation_id,
            customer_id=s.customer_id or s.conversation_id,
            action=action,
            reason=reason[:500],
        ),
        BotActionSent,
    )
