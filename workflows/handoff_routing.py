"""Where a handoff waits: the route, its queue (open, staffed, not too long a wait), the
overflow, and the offers to agents while it waits; decisions of the handoff's core
(workflows/handoff_core.py), pure like it: no Temporal, no I/O, no clock.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from activities.handoff_contracts import QueueInfo, Reservation
from definitions.calendar import BusinessCalendar
from definitions.conditions import Activation, ConditionError, evaluate
from definitions.models import HandoffSpec, Route
from workflows.handoff_core import TICKET_PRIORITY, LedgerEntry, Move
from workflows.handoff_hours import format_local, minutes, queue_calendar
from workflows.handoff_model import HandoffState, Offer
from workflows.handoff_packet import conversation_context, customer_context

# --- the route and its queue ------------------------------------------------------------


def choose_route(routes: list[Route], state: HandoffState) -> tuple[Route | None, list[str]]:
    """The first route whose tiers, languages and condition all hold, and the routes skipped
    on the way because their condition could not be evaluated."""
    customer = customer_context(state.profile, state.customer_id or "")
    activation = Activation({"conversation": conversation_context(state), "customer": customer})
    unreadable: list[str] = []
    for route in routes:
        if route.tiers and customer["tier"] not in route.tiers:
            continue
        if route.languages and customer["language"] not in route.languages:
            continue
        try:
            if evaluate(route.when, activation):
                return route, unreadable
        except ConditionError:
            unreadable.append(route.name)
    return None, unreadable


def current_route(state: HandoffState, spec: HandoffSpec) -> Route | None:
    return next((r for r in spec.routes if r.name == state.route), None)


def languages(state: HandoffState) -> list[str]:
    """The languages an agent must speak: the customer's."""
    return [state.profile.language] if state.profile else []


def route_skills(state: HandoffState, route: Route | None) -> list[str] | None:
    """The skills to ask of an agent; None: the (overflow) queue's own."""
    if route is None or state.overflowed:
        return None
    optional = [] if state.relaxed else list(route.optional_skills)
    return list(route.skills) + optional


def queue_full(info: QueueInfo, spec: HandoffSpec) -> str | None:
    """Why the route's queue takes no one more (max_queue_depth), if it is full."""
    limit = spec.max_queue_depth
    if limit is not None and info.depth >= limit:
        return f"{info.depth} waiting in {info.id}"
    return None


def use_queue(state: HandoffState, info: QueueInfo) -> BusinessCalendar:
    """Wait in `info`'s queue from now on; returns its calendar."""
    state.queue, state.queue_name, state.queue_depth = info.id, info.name, info.depth
    state.queue_skills = list(info.skills)
    state.estimated_wait_seconds = info.estimated_wait_seconds
    state.routing = info.routing
    return queue_calendar(info.timezone, info.hours)


def queue_refusal(
    info: QueueInfo, calendar: BusinessCalendar, spec: HandoffSpec, now: datetime
) -> str | None:
    """Why the conversation cannot wait in this queue now (closed, no one, too long), if so."""
    if not calendar.is_open(now):
        opens = format_local(calendar.next_open(now), calendar, True)
        return f"queue {info.id} is closed until {opens} {calendar.timezone}"
    if info.routing == "vendor":
        return None  # the vendor's staffing is not ours to see: its hours decide
    if info.estimated_wait_seconds is None:
        return f"no agent in {info.id} can take the conversation"
    if timedelta(seconds=info.estimated_wait_seconds) > spec.max_wait:
        return f"the estimated wait in {info.id} is {minutes(info.estimated_wait_seconds)} minutes"
    return None


def overflow(state: HandoffState, spec: HandoffSpec, why: str) -> LedgerEntry | None:
    """Move on to the overflow queue, once; None when there is none or it was used."""
    if state.overflowed or not spec.overflow_queue:
        return None
    state.overflowed = True
    detail = {"from": state.queue or state.route, "to": spec.overflow_queue, "why": why}
    return LedgerEntry("overflow", detail)


def ticket_subject(state: HandoffState) -> str:
    return f"Chat handoff: {state.topic or state.trigger.kind if state.trigger else 'chat'}"[:500]


def queued(state: HandoffState, spec: HandoffSpec, now: datetime) -> Move:
    """Wait in the chosen queue from `now`, for at most the definition's `max_wait`."""
    state.queued_at, state.queue_deadline = now, now + spec.max_wait
    detail = {
        "queue": state.queue,
        "route": state.route,
        "estimated_wait_seconds": state.estimated_wait_seconds,
        "ticket": state.ticket_id,
    }
    return Move("queued", f"waiting in {state.queue}", detail)


# --- waiting in the queue, offers -----------------------------------------------------------


@dataclass(frozen=True)
class QueueCheck:
    """A look at the queue while waiting."""

    relaxed: LedgerEntry | None
    """The optional skills were dropped just now (`relax_after` passed)."""
    over: str | None
    """Why the wait in this queue is over (too long, too many offers): overflow or callback."""
    relax_at: datetime | None
    """When the optional skills will be dropped, if that is still to come."""


def check_queue(
    state: HandoffState, spec: HandoffSpec, route: Route | None, now: datetime
) -> QueueCheck:
    s = state
    assert s.queued_at is not None and s.queue_deadline is not None
    relax_after = spec.relax_after
    relax_at = None
    relaxed = None
    if (
        s.routing == "opsflow"
        and not s.relaxed
        and not s.overflowed
        and relax_after is not None
        and route is not None
        and route.optional_skills
    ):
        relax_at = s.queued_at + relax_after
        if now >= relax_at:
            s.relaxed, relax_at = True, None
            relaxed = LedgerEntry("relaxed", {"dropped": list(route.optional_skills)})
    in_queue = [o for o in s.offers if o.queue == s.queue]
    over = None
    if len(in_queue) >= spec.max_offers:
        over = f"{len(in_queue)} offers in {s.queue} without an accept"
    elif now >= s.queue_deadline:
        over = f"no agent accepted within {spec.max_wait}"
    return QueueCheck(relaxed=relaxed, over=over, relax_at=relax_at)


def requeue(state: HandoffState, spec: HandoffSpec, now: datetime) -> None:
    """A new queue (the overflow) starts the wait again."""
    state.queued_at, state.queue_deadline = now, now + spec.max_wait


def next_look(state: HandoffState, check: QueueCheck, now: datetime, poll: timedelta) -> timedelta:
    """How long to wait before looking for an agent again (a free agent may wake it sooner)."""
    assert state.queue_deadline is not None
    wake = min(now + poll, state.queue_deadline)
    if check.relax_at is not None:
        wake = min(wake, check.relax_at)
    return max(wake - now, timedelta(seconds=1))


@dataclass(frozen=True)
class AgentSearch:
    """What to look for in the queue: the offer it would be, the skills, whom not to offer
    again, and the place in line (empty: take any free agent, no place in line)."""

    number: int
    step: str
    skills: list[str]
    exclude: list[str]
    line: dict[str, Any]


def agent_search(
    state: HandoffState, route: Route | None, first_come: bool, workflow_id: str
) -> AgentSearch:
    s = state
    number = len(s.offers) + 1
    skills = route_skills(s, route)
    if skills is None:
        skills = list(s.queue_skills)
    # Each search has its own key: the outbox would replay an earlier "no one is free".
    s.searches += 1
    line: dict[str, Any] = {}
    if first_come:  # in line since the request: an overflow keeps its place
        line = {
            "workflow_id": workflow_id,
            "waiting_since": s.requested_at or s.queued_at,
            "priority": TICKET_PRIORITY,
        }
    exclude = sorted({o.agent_id for o in s.offers})
    step = f"offer-{number}-search-{s.searches}"
    return AgentSearch(number=number, step=step, skills=skills, exclude=exclude, line=line)


def offer(
    state: HandoffState,
    reservation: Reservation,
    number: int,
    spec: HandoffSpec,
    now: datetime,
) -> tuple[Offer, Move]:
    """Offer the conversation to the reserved agent until `offer_timeout` passes."""
    assert state.queue is not None and reservation.agent_id is not None
    made = Offer(
        agent_id=reservation.agent_id,
        agent_name=reservation.name,
        skills=reservation.skills,
        languages=reservation.languages,
        queue=state.queue,
        number=number,
        offered_at=now,
        expires_at=now + spec.offer_timeout,
    )
    state.offers.append(made)
    detail = {"agent": made.agent_id, "offer": number, "expires_at": made.expires_at.isoformat()}
    return made, Move("offered", f"offered to {made.agent_id}", detail)


def offer_timed_out(offer: Offer) -> Move:
    offer.outcome, offer.reason = "timed_out", "no answer in time"
    return Move("queued", f"offer to {offer.agent_id} timed out", {"agent": offer.agent_id})
