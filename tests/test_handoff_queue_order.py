"""First come, first served (issue 14, item 6), on the time-skipping server: many
conversations, two agents. Within a priority the conversation that has waited longest gets
the next free agent, newcomers included, and it gets it when the agent frees up (a release
wakes it), not at its next look: the offer follows the release within the same moment of
workflow time, far below the one-minute fallback."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import func, select, update

from activities.adapters.sandbox_presence import SandboxPresence, first_in_line_for
from activities.presence import wake
from client.handoffs import command_handoff
from store.models import SandboxAgent, SandboxWaiting
from tests.conftest import AppDb
from tests.escalation_support import keep_history, next_weekday_at, skip_to
from tests.handoff_support import (
    fresh_env,
    handoff_worker,
    new_conversation,
    start,
    start_input,
    state,
    turn_event,
    wait_until,
)
from workflows.handoff import AGENT_FALLBACK
from workflows.handoff_model import Accept, CustomerLeft, HandoffInput, HandoffStatus, Resolve

pytestmark = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)

AGENTS = ("dev", "jack")  # English, no skills asked by general support: either takes anyone
FIRST, LATER = 8, 4
"""Conversations waiting before the first agent frees up, and newcomers while they are served."""


def _desk() -> HandoffInput:
    """General support only, long waits allowed: nobody overflows or is called back."""
    return start_input(
        routes=[{"name": "general", "queue": "support"}],
        max_wait="4h",
        max_queue_depth=None,
        overflow_queue=None,
        offer_timeout="10m",
    )


async def _only_agents(db: AppDb, *agent_ids: str) -> None:
    async with db.sessions() as session, session.begin():
        await session.execute(update(SandboxAgent).values(status="offline"))
        await session.execute(
            update(SandboxAgent)
            .where(SandboxAgent.id.in_(agent_ids))
            .values(status="available", capacity=1, active_conversations=0)
        )


async def _in_line(db: AppDb) -> int:
    async with db.sessions() as session:
        return int(await session.scalar(select(func.count()).select_from(SandboxWaiting)) or 0)


async def test_the_longest_waiting_gets_the_next_free_agent_when_it_frees_up(
    app_db: AppDb,
) -> None:
    async with fresh_env() as env, handoff_worker(env, app_db) as queue:
        await skip_to(env, next_weekday_at(await env.get_current_time(), 1, 10, 0))
        await _only_agents(app_db, *AGENTS)
        desk = _desk()
        arrivals: list[str] = []
        handles: dict[str, Any] = {}

        async def arrive() -> HandoffStatus:
            conversation = new_conversation()
            asks = turn_event(conversation, "HC-EN", "I want to talk to a human")
            handles[conversation] = await start(env, queue, asks, desk)
            arrivals.append(conversation)
            return await wait_until(
                handles[conversation], lambda s: s.state in ("queued", "offered"), "in line"
            )

        for _ in range(FIRST):
            await arrive()
            await env.sleep(timedelta(seconds=1))  # a distinct place in line for each
        assert await _in_line(app_db) == FIRST - len(AGENTS)

        served: list[str] = []
        waits_after_release: list[timedelta] = []
        released_at = None
        newcomers = LATER
        while len(served) < FIRST + LATER:
            offered = None
            for _ in range(400):
                states = [await state(handles[c]) for c in arrivals if c not in served]
                offered = next((s for s in states if s.state == "offered"), None)
                if offered is not None:
                    break
            assert offered is not None and offered.current_offer is not None
            if released_at is not None:
                waits_after_release.append(offered.current_offer.offered_at - released_at)
            conversation, agent = offered.conversation_id, offered.current_offer.agent_id
            served.append(conversation)
            if newcomers:  # one arrives just before the agent frees up: it waits its turn
                newcomers -= 1
                await arrive()
            await command_handoff(env.client, conversation, "accept", Accept(agent=agent))
            done = await command_handoff(env.client, conversation, "resolve", Resolve())
            assert done.ended_at is not None
            released_at = done.ended_at
            await handles[conversation].result()

        # Pairwise: nobody was served before someone who had waited longer.
        assert served == arrivals, (served, arrivals)
        # Woken by the release, not found by a later look.
        assert waits_after_release and max(waits_after_release) < AGENT_FALLBACK / 4, (
            waits_after_release
        )
        assert await _in_line(app_db) == 0
        await keep_history(handles[arrivals[2]], "handoff-first-come-woken")


async def test_an_agent_becoming_available_wakes_the_first_in_line(app_db: AppDb) -> None:
    async with fresh_env() as env, handoff_worker(env, app_db) as queue:
        await skip_to(env, next_weekday_at(await env.get_current_time(), 1, 10, 0))
        await _only_agents(app_db, "dev")
        await SandboxPresence(app_db.sessions).set_agent_status(
            "dev", "busy"
        )  # staffed, not free: they wait
        desk = _desk()
        conversations = []
        for _ in range(3):
            conversation = new_conversation()
            event = turn_event(conversation, "HC-EN", "agent please")
            handle = await start(env, queue, event, desk)
            await wait_until(handle, lambda s: s.in_line, "in line")
            conversations.append((conversation, handle))
            await env.sleep(timedelta(seconds=1))
        view, woken = await SandboxPresence(app_db.sessions).set_agent_status("dev", "available")
        assert view.status == "available"
        assert woken == [conversations[0][1].id]  # the first in line, and only one: capacity 1
        async with app_db.sessions() as session:
            row = await session.get(SandboxAgent, "dev")
            assert row is not None and await first_in_line_for(session, row) == woken
        # The one who left stops holding a place; the others keep theirs.
        left, left_handle = conversations[1]
        await command_handoff(env.client, left, "customer_left", CustomerLeft())
        assert (await left_handle.result()).state == "abandoned"
        assert await _in_line(app_db) == 2
        for conversation, handle in (conversations[0], conversations[2]):
            await command_handoff(env.client, conversation, "customer_left", CustomerLeft())
            await handle.result()
        assert await _in_line(app_db) == 0


async def test_one_wake_up_for_two_free_agents_is_passed_down_the_line(app_db: AppDb) -> None:
    async with fresh_env() as env, handoff_worker(env, app_db) as queue:
        await skip_to(env, next_weekday_at(await env.get_current_time(), 1, 10, 0))
        await _only_agents(app_db, *AGENTS)
        for agent_id in AGENTS:
            await SandboxPresence(app_db.sessions).set_agent_status(agent_id, "busy")
        desk = _desk()
        waiting = []
        for _ in range(2):
            conversation = new_conversation()
            handle = await start(env, queue, turn_event(conversation, "HC-EN", "human"), desk)
            await wait_until(handle, lambda s: s.in_line, "in line")
            waiting.append(handle)
            await env.sleep(timedelta(seconds=1))
        # Both agents free up at once, and only the first in line hears of it.
        async with app_db.sessions() as session, session.begin():
            await session.execute(
                update(SandboxAgent).where(SandboxAgent.id.in_(AGENTS)).values(status="available")
            )
        await wake(env.client, [waiting[0].id])
        first = await wait_until(waiting[0], lambda s: s.state == "offered", "offered")
        second = await wait_until(waiting[1], lambda s: s.state == "offered", "offered")
        assert first.current_offer is not None and second.current_offer is not None
        gap = second.current_offer.offered_at - first.current_offer.offered_at
        assert gap < AGENT_FALLBACK / 4, gap  # woken by the first, not by its own look
        for handle in waiting:
            await command_handoff(
                env.client, handle.id.removeprefix("handoff-"), "customer_left", CustomerLeft()
            )
            await handle.result()
