"""The sandbox presence backend: agents, their status and capacity, queues and their depth.

opsflow picks the agent itself here: matching skills (all required ones) and a language the
customer speaks, free capacity, the longest idle first. Reserving an agent (an offer) takes
one of their conversation slots inside the outbox's transaction, so a retried activity never
reserves twice; releasing gives it back and restarts their idle clock.

First come, first served: a conversation that finds no agent waits in line
(`sandbox_waiting`, by priority, then since when it waits). A free agent goes to the first
in line who can take them: a newcomer that finds a free agent someone ahead of it could
take leaves it to them; a released agent, or one who becomes available, goes to the first in
line they can take. Each answer names the workflows to wake (the activity signals them). A
place in line not renewed for STALE_WAITING (its workflow gone) no longer counts.
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import and_, delete, or_, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from activities.errors import invalid, not_found
from activities.handoff_contracts import (
    AgentReleased,
    AgentView,
    OpenTickets,
    PickAgent,
    QueueInfo,
    QueueRequest,
    ReleaseAgent,
    Reservation,
    TicketBrief,
)
from activities.outbox import Effect
from store.db import transaction
from store.models import SandboxAgent, SandboxQueue, SandboxTicket, SandboxWaiting
from store.types import utcnow

Sessions = async_sessionmaker[AsyncSession]

AVERAGE_HANDLE_SECONDS = 6 * 60
"""Sandbox estimate of how long one conversation keeps an agent slot."""
FIRST_OFFER_SECONDS = 60
"""The estimate when a matching agent is free now."""
STALE_WAITING = timedelta(minutes=5)
"""A place in line its conversation has not renewed for this long (it looks again at least
every minute) belongs to a workflow that is gone."""
LINE_BATCH = 64
"""Places in line read at a time, in order, until every free agent is spoken for."""
HANDOFF_TAG = "handoff"
CLOSED_TICKET = ("solved", "closed")


def queue_hours(text: str) -> str | dict[str, str]:
    """The seeded queue hours as BusinessCalendar hours: `weekdays-08-18` -> mon-fri 08-18."""
    if text == "24x7":
        return "24x7"
    days, _, span = text.partition("-")
    start, _, end = span.partition("-")
    keys = {"weekdays": "mon-fri", "everyday": "mon-sun", "saturdays": "sat"}
    if days not in keys or not (start.isdigit() and end.isdigit()):
        raise invalid(f"queue hours {text!r} are not like weekdays-08-18 or 24x7")
    return {keys[days]: f"{int(start):02d}:00-{int(end):02d}:00"}


def matches(agent: SandboxAgent, skills: Sequence[str], languages: Sequence[str]) -> bool:
    has = set(agent.skills)
    speaks = set(agent.languages)
    return set(skills) <= has and (not languages or bool(speaks & set(languages)))


def _view(row: SandboxAgent) -> AgentView:
    return AgentView(
        id=row.id,
        name=row.name,
        team=row.team,
        skills=list(row.skills),
        languages=list(row.languages),
        status=row.status,
        capacity=row.capacity,
        active_conversations=row.active_conversations,
        status_since=row.status_since,
    )


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _can_take(agent: SandboxAgent, waiting: SandboxWaiting) -> bool:
    return agent.id not in waiting.exclude and matches(agent, waiting.skills, waiting.languages)


def _ahead_of(place: SandboxWaiting) -> Any:
    """Places in line before `place`: a higher priority, or the same and waiting longer."""
    return or_(
        SandboxWaiting.priority < place.priority,
        and_(SandboxWaiting.priority == place.priority, SandboxWaiting.since < place.since),
        and_(
            SandboxWaiting.priority == place.priority,
            SandboxWaiting.since == place.since,
            SandboxWaiting.conversation_id < place.conversation_id,
        ),
    )


async def _line(session: AsyncSession, *where: Any) -> AsyncIterator[SandboxWaiting]:
    """The places in line (optionally only those matching `where`), first first, in batches;
    stale ones are dropped on the way."""
    stale_before = utcnow() - STALE_WAITING
    offset = 0
    while True:
        batch = list(
            await session.scalars(
                select(SandboxWaiting)
                .where(*where)
                .order_by(
                    SandboxWaiting.priority, SandboxWaiting.since, SandboxWaiting.conversation_id
                )
                .offset(offset)
                .limit(LINE_BATCH)
            )
        )
        for place in batch:
            if _aware(place.seen_at) < stale_before:
                await session.delete(place)
                continue
            yield place
        if len(batch) < LINE_BATCH:
            return
        offset += LINE_BATCH


async def first_in_line_for(session: AsyncSession, agent: SandboxAgent) -> list[str]:
    """The workflows of the first in line that `agent`'s free slots can take."""
    free = agent.capacity - agent.active_conversations
    if agent.status != "available" or free <= 0:
        return []
    woken: list[str] = []
    async for place in _line(session):
        if _can_take(agent, place):
            woken.append(place.workflow_id)
            if len(woken) >= free:
                break
    return woken


async def _take_place(session: AsyncSession, request: PickAgent) -> SandboxWaiting:
    """The conversation's place in line, kept (its `since`) when it had one: a conversation
    whose offer was declined or overflowed waits on from where it was."""
    assert request.workflow_id is not None and request.waiting_since is not None
    place = await session.get(SandboxWaiting, request.conversation_id)
    if place is None:
        place = SandboxWaiting(conversation_id=request.conversation_id, since=request.waiting_since)
        session.add(place)
    place.workflow_id = request.workflow_id
    place.queue, place.priority = request.queue, request.priority
    place.skills, place.languages = list(request.skills), list(request.languages)
    place.exclude, place.seen_at = list(request.exclude), utcnow()
    await session.flush()
    return place


async def _reserve(session: AsyncSession, request: PickAgent) -> Reservation:
    now = utcnow()
    rows = await session.scalars(
        select(SandboxAgent)
        .where(SandboxAgent.status == "available")
        .where(SandboxAgent.active_conversations < SandboxAgent.capacity)
        .order_by(SandboxAgent.status_since, SandboxAgent.id)
        .with_for_update()
    )
    mine = [
        row
        for row in rows
        if row.id not in request.exclude and matches(row, request.skills, request.languages)
    ]
    woken: list[str] = []
    if request.workflow_id is not None and request.waiting_since is not None:
        place = await _take_place(session, request)
        # One entry per free slot, the longest idle first; those ahead claim theirs first.
        slots = [row for row in mine for _ in range(row.capacity - row.active_conversations)]
        if slots:
            async for ahead in _line(session, _ahead_of(place)):
                claimed = next((row for row in slots if _can_take(row, ahead)), None)
                if claimed is not None:
                    slots.remove(claimed)
                    woken.append(ahead.workflow_id)
                    if not slots:
                        break
        mine, spare = slots[:1], slots[1:]
        if mine:
            await session.delete(place)
        if spare:  # two agents freed for one wake-up: pass the others on down the line
            behind = and_(
                ~_ahead_of(place), SandboxWaiting.conversation_id != place.conversation_id
            )
            async for after in _line(session, behind):
                claimed = next((row for row in spare if _can_take(row, after)), None)
                if claimed is not None:
                    spare.remove(claimed)
                    woken.append(after.workflow_id)
                    if not spare:
                        break
    for row in mine:
        idle = int((now - _aware(row.status_since)).total_seconds())
        row.active_conversations += 1
        await session.flush()
        return Reservation(
            agent_id=row.id,
            name=row.name,
            skills=list(row.skills),
            languages=list(row.languages),
            idle_seconds=max(idle, 0),
            woken=woken,
        )
    await session.flush()
    return Reservation(agent_id=None, woken=woken)


async def _release(session: AsyncSession, request: ReleaseAgent) -> AgentReleased:
    row = await session.get(SandboxAgent, request.agent_id, with_for_update=True)
    if row is None:
        raise not_found(f"agent {request.agent_id!r}")
    row.active_conversations = max(row.active_conversations - 1, 0)
    row.status_since = utcnow()  # idle again from now: the longest idle goes first
    await session.flush()
    return AgentReleased(
        agent_id=row.id,
        active_conversations=row.active_conversations,
        woken=await first_in_line_for(session, row),
    )


class SandboxPresence:
    """Presence in the app database's sandbox tables (agents, queues, the line)."""

    name = "sandbox"
    in_app_database = True

    def __init__(self, sessions: Sessions) -> None:
        self._sessions = sessions

    async def list_agents(self) -> list[AgentView]:
        async with self._sessions() as session:
            rows = await session.scalars(select(SandboxAgent).order_by(SandboxAgent.id))
            return [_view(row) for row in rows]

    async def set_agent_status(self, agent_id: str, status: str) -> tuple[AgentView, list[str]]:
        """Set an agent's status; going offline keeps their conversations (they end normally).
        Also returns the workflows first in line the agent, now available, can take: wake them."""
        if status not in ("available", "busy", "offline"):
            raise invalid(f"unknown status {status!r}: use available, busy or offline")
        async with transaction(self._sessions) as session:
            row = await session.get(SandboxAgent, agent_id)
            if row is None:
                raise not_found(f"agent {agent_id!r}")
            if row.status != status:
                row.status, row.status_since = status, utcnow()
            await session.flush()
            return _view(row), await first_in_line_for(session, row)

    async def queue_info(self, request: QueueRequest) -> QueueInfo:
        async with self._sessions() as session:
            queue = await session.get(SandboxQueue, request.queue)
            if queue is None:
                raise not_found(f"queue {request.queue!r}")
            waiting = await session.scalars(
                select(SandboxTicket).where(
                    SandboxTicket.queue == request.queue,
                    SandboxTicket.assignee.is_(None),
                    SandboxTicket.status.not_in(CLOSED_TICKET),
                )
            )
            depth = sum(
                1
                for ticket in waiting
                if HANDOFF_TAG in ticket.tags
                and "callback" not in ticket.tags
                and (
                    request.exclude_conversation is None
                    or f"conversation:{request.exclude_conversation}" not in ticket.tags
                )
            )
            agents = list(await session.scalars(select(SandboxAgent)))
        skills = list(queue.skills) if request.skills is None else request.skills
        eligible = [a for a in agents if matches(a, skills, request.languages)]
        staffed = [a for a in eligible if a.status != "offline"]
        free = sum(
            max(a.capacity - a.active_conversations, 0) for a in eligible if a.status == "available"
        )
        if not staffed:
            estimate: int | None = None
        elif free > depth:
            estimate = FIRST_OFFER_SECONDS
        else:
            slots = max(sum(a.capacity for a in staffed), 1)
            estimate = AVERAGE_HANDLE_SECONDS * math.ceil((depth + 1 - free) / slots)
        return QueueInfo(
            id=queue.id,
            name=queue.name,
            timezone=queue.timezone,
            hours=queue_hours(queue.hours),
            skills=skills,
            depth=depth,
            staffed=len(staffed),
            free_slots=free,
            estimated_wait_seconds=estimate,
        )

    async def reserve_agent(self, effect: Effect, request: PickAgent) -> Reservation:
        assert effect.session is not None
        return await _reserve(effect.session, request)

    async def release_agent(self, effect: Effect, request: ReleaseAgent) -> AgentReleased:
        assert effect.session is not None
        return await _release(effect.session, request)

    async def leave_line(self, conversation_id: str) -> None:
        async with transaction(self._sessions) as session:
            await session.execute(
                delete(SandboxWaiting).where(SandboxWaiting.conversation_id == conversation_id)
            )

    async def open_tickets(self, request: OpenTickets) -> list[TicketBrief]:
        """The customer's open tickets (for the context packet), newest first."""
        async with self._sessions() as session:
            rows = await session.scalars(
                select(SandboxTicket)
                .where(
                    SandboxTicket.customer_id == request.customer_id,
                    SandboxTicket.status.not_in(CLOSED_TICKET),
                )
                .order_by(SandboxTicket.created_at.desc())
                .limit(20)
            )
            return [
                TicketBrief(id=r.id, subject=r.subject, status=r.status, priority=r.priority)
                for r in rows
                if request.exclude_tag is None or request.exclude_tag not in r.tags
            ]
