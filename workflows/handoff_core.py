"""The handoff's decision core: given the state, the definition and the moment, what happens
next (which phase, which queue, which agent to look for, when to look again, what a command is
refused with, how the case closes) returned as data for workflows/handoff.py to carry out.

Pure: no Temporal, no I/O, no clock (every function takes `now`), so it is tested without a
server (tests/test_handoff_core.py). A function may update the state it is given (the workflow
holds the one copy); the effects (activities, timers, upserts, ledger entries) it leaves to the
workflow, as the data it returns. Topics of their own: reading the conversation
(handoff_triggers), the context packet (handoff_packet), business hours (handoff_hours).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from temporalio.common import SearchAttributeUpdate

from activities import search_attributes as sa
from definitions.calendar import BusinessCalendar
from definitions.common import Action, ScheduleCallbackAction
from definitions.events import (
    BotHandoffRequested,
    BotTurn,
    EventData,
    EventEnvelope,
    TicketUpdated,
    parse_event_data,
)
from definitions.models import HandoffSpec, PinnedDefinition
from workflows.escalation_model import CaseInfo
from workflows.handoff_hours import callback_context, format_local, minutes
from workflows.handoff_model import (
    FINAL_PHASES,
    HandoffPhase,
    HandoffState,
    Offer,
    Transition,
    Trigger,
    Turn,
)
from workflows.handoff_packet import customer_context
from workflows.handoff_triggers import detect_trigger, keep_turn, observe_turn

WAITING: frozenset[str] = frozenset({"requested", "queued", "offered"})
"""The phases in which the customer waits for a person (the handoff wait metric)."""
SEEN_EVENTS_KEPT = 500
TICKET_PRIORITY = "p2"
"""The priority of a handoff's ticket, and its place among priorities in line."""


@dataclass(frozen=True)
class Move:
    """A change of phase: the workflow makes it, then writes it to the ledger with `detail`."""

    phase: HandoffPhase
    why: str
    detail: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class LedgerEntry:
    step: str
    detail: dict[str, Any]


@dataclass(frozen=True)
class Decision:
    """What an event or an answer leads to; `note` is for the log (it decides nothing)."""

    move: Move | None = None
    ledger: LedgerEntry | None = None
    note: str | None = None


# --- phases ---------------------------------------------------------------------------------


def change_phase(state: HandoffState, phase: HandoffPhase, why: str, now: datetime) -> float | None:
    """Enter `phase` (from a phase that has not ended). Returns the seconds the customer
    waited when this change ends the wait, else None."""
    waited = None
    if state.state in WAITING and phase not in WAITING and state.requested_at is not None:
        waited = (now - state.requested_at).total_seconds()
    state.state = phase
    state.transitions += 1
    state.history.append(Transition(state=phase, at=now, why=why))
    if phase in FINAL_PHASES:
        state.ended_at, state.end_reason = now, why
    return waited


def next_deadline(state: HandoffState) -> datetime | None:
    """The pending offer's expiry, else the queue's maximum wait (OpsDueAt)."""
    offer = state.current_offer
    if offer is not None:
        return offer.expires_at
    return state.queue_deadline if state.state in WAITING else None


def search_attributes(state: HandoffState) -> list[SearchAttributeUpdate[Any]]:
    """What the Temporal UI finds the conversation by (OpsDueAt aside: it is patched in)."""
    s = state
    pairs: list[SearchAttributeUpdate[Any]] = [
        sa.OPS_KIND.value_set("handoff"),
        sa.OPS_STATE.value_set(s.state),
        sa.OPS_DEFINITION.value_set(s.definition),
    ]
    if s.customer_id:
        pairs.append(sa.OPS_CUSTOMER_ID.value_set(s.customer_id))
    if s.queue:
        pairs.append(sa.OPS_QUEUE.value_set(s.queue))
    if s.agent:
        pairs.append(sa.OPS_OWNER.value_set(s.agent))
    if s.ticket_id:  # the vendor's ticket events find the conversation by its ticket
        pairs.append(sa.OPS_CASE_ID.value_set(s.ticket_id))
    return pairs


def waited_seconds(state: HandoffState, now: datetime) -> float:
    if state.requested_at is None:
        return 0.0
    return (now - state.requested_at).total_seconds()


def describe(state: HandoffState, now: datetime, calendar: BusinessCalendar | None) -> str:
    """One line: what the conversation waits for, and until when (the run's current details).
    Times are the queue's local times (`calendar`), UTC when no queue was chosen yet."""

    def local(moment: datetime) -> str:
        return moment.strftime("%H:%M UTC") if calendar is None else format_local(moment, calendar)

    s = state
    waiting = f"{s.queue_depth} waiting in {s.queue}" if s.queue else ""
    if s.state == "bot":
        count = len(s.turns) + s.turns_omitted
        turns = "1 turn" if count == 1 else f"{count} turns"
        return f"bot conversation, {turns}; no handoff trigger yet"
    if s.state == "requested":
        return f"handoff requested ({s.trigger.detail if s.trigger else 'no trigger'})"
    if s.state == "queued":
        until = f"; overflow or callback at {local(s.queue_deadline)}" if s.queue_deadline else ""
        relaxed = ", optional skills dropped" if s.relaxed else ""
        if s.routing == "vendor":
            group = f"group {s.vendor_group} ({s.queue})" if s.vendor_group else s.queue
            return f"in the vendor's {group}, waiting for an assignee{until}"
        return f"queued for an agent{relaxed}; {waiting}{until}"
    if s.state == "offered" and (offer := s.current_offer):
        ordinal = {1: "first", 2: "second", 3: "third"}.get(offer.number, f"#{offer.number}")
        traits = ", ".join(offer.skills[:2] + offer.languages[:1])
        return (
            f"offered to agent {offer.agent_id} ({traits}) until "
            f"{local(offer.expires_at)}, {ordinal} offer; {waiting}"
        )
    if s.state == "active":
        case = f"; case {s.case_workflow_id}" if s.case_workflow_id else ""
        return f"active with agent {s.agent} since {local(s.accepted_at or now)}{case}"
    if s.state == "callback_scheduled":
        return f"callback scheduled for {s.callback_local}"
    return f"{s.state}: {s.end_reason}"


def template_context(
    state: HandoffState, spec: HandoffSpec, extra: dict[str, Any] | None = None
) -> dict[str, Any]:
    """What the definition's templates see (notices, fallback actions)."""
    s = state
    conversation: dict[str, Any] = {"id": s.conversation_id, "topic": s.topic or ""}
    if s.callback_at is not None:
        timezone = s.profile.timezone if s.profile else "UTC"
        conversation["callback"] = callback_context(s.callback_at, timezone)
    wait = s.estimated_wait_seconds
    if wait is None and s.routing == "vendor":
        wait = int(spec.max_wait.total_seconds())  # the vendor's wait: at most this
    context: dict[str, Any] = {
        "conversation": conversation,
        "customer": customer_context(s.profile, s.customer_id or ""),
        "agent": {"id": s.agent or ""},
        "queue": {"id": s.queue or "", "name": s.queue_name or s.queue or ""},
        "wait": {"minutes": minutes(wait)},
    }
    context.update(extra or {})
    return context


# --- commands -------------------------------------------------------------------------------


def refusal_if_over(state: HandoffState | None) -> str | None:
    if state is None:
        return "the conversation has not started yet"
    if state.state in FINAL_PHASES:
        return f"conversation {state.conversation_id} has already ended ({state.state})"
    return None


def offer_refusal(state: HandoffState | None, agent: str) -> str | None:
    """Why `agent` may not answer (accept, decline) now; None: the offer is theirs."""
    if (over := refusal_if_over(state)) is not None or state is None:
        return over
    if state.state == "active":
        return f"already accepted by {state.agent}"
    offer = state.current_offer
    if state.routing == "vendor" and state.state == "queued":
        return f"the vendor routes this conversation: assign ticket {state.ticket_id} there"
    if state.state != "offered" or offer is None:
        return f"the conversation is {state.state}: no offer is open"
    if offer.agent_id != agent:
        return f"the conversation is offered to {offer.agent_id}, not to {agent}"
    return None


def return_to_bot_refusal(state: HandoffState | None) -> str | None:
    if (over := refusal_if_over(state)) is not None or state is None:
        return over
    return "the bot has the conversation already" if state.state == "bot" else None


def resolve_refusal(state: HandoffState | None) -> str | None:
    if (over := refusal_if_over(state)) is not None or state is None:
        return over
    if state.state != "active":
        return f"the conversation is {state.state}: only an active conversation can be resolved"
    return None


def accept(state: HandoffState, agent: str, now: datetime) -> Move:
    """The offered agent takes it (after `offer_refusal` said None)."""
    offer = state.current_offer
    assert offer is not None
    offer.outcome = "accepted"
    state.agent, state.accepted_at = agent, now
    detail = {"agent": agent, "waited_seconds": waited_seconds(state, now)}
    return Move("active", f"accepted by {agent}", detail)


def decline(state: HandoffState, agent: str, reason: str) -> Move:
    offer = state.current_offer
    assert offer is not None
    offer.outcome, offer.reason = "declined", reason
    return Move("queued", f"declined by {agent}: {reason}", {"agent": agent, "reason": reason})


def return_to_bot(state: HandoffState, by: str | None, reason: str) -> Move:
    if state.current_offer is not None:
        state.current_offer.outcome = "withdrawn"
    state.ended_by = by or state.agent or "agent"
    return Move("returned_to_bot", reason, {"by": state.ended_by})


def resolve(state: HandoffState, by: str | None) -> Move:
    state.ended_by = by or state.agent or "agent"
    return Move("resolved", f"resolved by {state.ended_by}", {"by": state.ended_by})


def customer_left(state: HandoffState, reason: str) -> Move:
    """With an agent: resolved; with the bot: back to the bot; waiting: abandoned."""
    if state.current_offer is not None:
        state.current_offer.outcome = "withdrawn"
    state.ended_by = "customer"
    phase: HandoffPhase = "abandoned"
    if state.state == "active":
        phase = "resolved"
    elif state.state == "bot":
        phase = "returned_to_bot"
    return Move(phase, reason, {"by": "customer"})


def active_expired(state: HandoffState, limit: timedelta) -> Move:
    """Nobody resolved the accepted conversation within `limit`."""
    state.ended_by = "opsflow"
    return Move("resolved", f"no resolve within {limit}")


# --- events ---------------------------------------------------------------------------------


def conversation_named(inbox: list[EventEnvelope]) -> str | None:
    """The conversation the first events name (the start signal's), if any."""
    for envelope in inbox:
        conversation = envelope.data.get("conversation_id")
        if isinstance(conversation, str) and conversation:
            return conversation
    return None


@dataclass(frozen=True)
class Received:
    """An intake event let in (`event`), or why not (`note`; None for a repeat)."""

    event: EventData | None = None
    note: str | None = None
    new_customer: bool = False


def receive(state: HandoffState, envelope: EventEnvelope) -> Received:
    """Let an event in once: not seen before, valid, for this conversation. The bot's events
    name the customer (the workflow then loads their profile, before reading the event)."""
    if envelope.key in state.seen_events:
        return Received()
    state.seen_events.append(envelope.key)
    del state.seen_events[:-SEEN_EVENTS_KEPT]
    try:
        event = parse_event_data(envelope.type, envelope.data)
    except (KeyError, ValueError) as exc:
        return Received(note=f"event {envelope.type} ignored: {str(exc)[:200]}")
    new_customer = False
    if isinstance(event, BotTurn | BotHandoffRequested):
        if event.conversation_id != state.conversation_id:
            return Received(note="event for another conversation ignored")
        if state.customer_id is None:
            state.customer_id = event.customer_id
            new_customer = True
    return Received(event=event, new_customer=new_customer)


def read_bot_event(
    state: HandoffState,
    event: BotTurn | BotHandoffRequested,
    spec: HandoffSpec,
    now: datetime,
    at: datetime | None = None,
    by_meaning: bool = True,
) -> Decision:
    """A turn or the bot's own request: the transcript grows, and a trigger (only while the
    bot has the conversation) requests a person. `at`: when the turn was said (else now)."""
    trigger: Trigger | None = None
    ledger = None
    if isinstance(event, BotTurn):
        turn = Turn(
            speaker=event.speaker,
            text=event.text,
            at=at or now,
            intent=event.intent,
            confidence=event.confidence,
            sentiment=event.sentiment,
        )
        observe_turn(state, turn, spec.triggers)
        if state.state == "bot":
            trigger = detect_trigger(state, turn, spec.triggers, now, by_meaning)
    else:
        known = {(t.speaker, t.text) for t in state.turns}
        for line in event.transcript:
            through = state.omitted_through
            if through is not None and line.at is not None and line.at <= through:
                continue  # a turn left out of the middle of a long transcript: not again
            if (line.from_, line.text) not in known:
                keep_turn(state, Turn(speaker=line.from_, text=line.text, at=line.at))
        for tried in event.tried:
            if tried not in state.attempts:
                state.attempts.append(tried)
        if state.state == "bot":
            if spec.triggers.bot_requests:
                trigger = Trigger(kind="bot_requests", detail=event.reason, at=now)
            else:
                step = f"ignored-request-{len(state.seen_events)}"
                ledger = LedgerEntry(step, {"reason": event.reason, "why": "bot_requests is off"})
    if trigger is None or state.state != "bot":
        return Decision(ledger=ledger)
    state.trigger, state.requested_at = trigger, now
    detail = {"trigger": trigger.model_dump(mode="json")}
    return Decision(move=Move("requested", trigger.detail, detail))


def vendor_assignment(state: HandoffState, event: TicketUpdated, now: datetime) -> Decision:
    """The vendor's `ticket.updated` for our ticket: an assignee ends the wait (vendor
    routing); anything else, or another ticket's event, changes nothing."""
    s = state
    if event.ticket_id != s.ticket_id or event.assignee is None:
        return Decision()
    if s.routing != "vendor" or s.state != "queued" or s.queue is None:
        return Decision(note="ticket.updated ignored: not waiting for the vendor")
    group = s.vendor_group or s.queue
    s.offers.append(
        Offer(
            agent_id=event.assignee,
            queue=s.queue,
            number=len(s.offers) + 1,
            offered_at=now,
            expires_at=now,
            outcome="accepted",
            reason=f"assigned in the vendor's group {group}",
        )
    )
    s.agent, s.accepted_at = event.assignee, now
    detail = {
        "agent": event.assignee,
        "group": s.vendor_group,
        "waited_seconds": waited_seconds(s, now),
    }
    move = Move("active", f"assigned to {event.assignee} in the vendor's group {group}", detail)
    return Decision(move=move)


# --- the case, callbacks, the end -----------------------------------------------------------


def case_to_open(state: HandoffState, policy: PinnedDefinition, now: datetime) -> CaseInfo:
    """The escalation case an accepted conversation opens, under `policy`."""
    assert state.ticket_id is not None
    priorities = policy.escalation.priorities
    priority = TICKET_PRIORITY if TICKET_PRIORITY in priorities else priorities[0]
    return CaseInfo(
        ticket_id=state.ticket_id,
        customer_id=state.customer_id or state.conversation_id,
        priority=priority,
        stage="support",
        channel="chat",
        subject=(f"Chat handoff: {state.topic}" if state.topic else "Chat handoff")[:500],
        opened_at=state.requested_at or now,
    )


def case_resolution(state: HandoffState) -> tuple[str, str | None]:
    """Who resolves the case, and the outcome when the conversation was not resolved (returned
    to the bot, abandoned, the customer left the agent's chat)."""
    s = state
    by = s.ended_by or s.agent or "opsflow"
    outcome = None
    if s.state != "resolved":
        outcome = f"{s.state.replace('_', ' ')}: {s.end_reason or ''}"
    elif by == "customer":  # the customer left the agent's chat: the agent had it
        outcome, by = f"customer left: {s.end_reason or ''}", s.agent or by
    elif by == "opsflow":
        outcome = s.end_reason
    if outcome is not None:
        outcome = outcome.rstrip(": ")[:200]
    return by, outcome


def fallback_actions(spec: HandoffSpec) -> tuple[list[ScheduleCallbackAction], list[Action]]:
    """The definition's fallback: the callbacks to schedule, and its other actions."""
    callbacks = [a for a in spec.fallback if isinstance(a, ScheduleCallbackAction)]
    others: list[Action] = [a for a in spec.fallback if not isinstance(a, ScheduleCallbackAction)]
    return callbacks, others


def callback_moved(state: HandoffState, why: str) -> Move:
    detail = {
        "callback_at": state.callback_at.isoformat() if state.callback_at else None,
        "callback_local": state.callback_local,
        "ticket": state.callback_ticket_id,
    }
    return Move("callback_scheduled", why, detail)


@dataclass(frozen=True)
class Ending:
    """What the end of a conversation undoes, in this order."""

    leave_line: bool
    release_offered: Offer | None
    """The offer left open (withdrawn now): its agent is released."""
    release_active: str | None
    """The agent who had it (opsflow routing): released."""
    close_ticket: bool
    """Abandoned: the ticket is closed."""
    resume_bot: str | None
    """Back to the bot after the bot was muted: it resumes, with this reason."""


def ending(state: HandoffState) -> Ending:
    s = state
    last = s.offers[-1] if s.offers else None
    if last is not None and last.outcome in ("pending", "withdrawn"):
        last.outcome = "withdrawn"
    else:
        last = None
    had_agent = s.state in ("resolved", "returned_to_bot") and s.agent and s.accepted_at
    return Ending(
        leave_line=s.in_line,
        release_offered=last,
        release_active=s.agent if had_agent and s.routing == "opsflow" else None,
        close_ticket=s.state == "abandoned" and bool(s.ticket_id),
        resume_bot=(s.end_reason or "returned to the bot")
        if s.state == "returned_to_bot" and s.bot_muted
        else None,
    )
