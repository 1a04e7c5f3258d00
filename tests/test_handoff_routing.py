"""Handoff routing on the time-skipping server: offers that time out or are declined,
optional skills dropped, overflow by wait and by depth, callbacks after hours, abandon,
refused updates, and the bot's explicit request. Each test runs on a server of its own
(`fresh_env`): updates and long skips do not leak into the next test."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

import pytest
from temporalio.client import WorkflowHandle
from temporalio.testing import WorkflowEnvironment

from client.handoffs import HandoffCommandRefused, command_handoff, handoff_request_event
from definitions.events import TranscriptLine
from store.models import SandboxTicket
from tests.conftest import AppDb
from tests.escalation_support import keep_history, ledger_steps, next_weekday_at, skip_to
from tests.handoff_support import (
    agent,
    fresh_env,
    handoff_worker,
    local,
    new_conversation,
    send,
    set_agents,
    start,
    start_input,
    state,
    ticket,
    turn_event,
    wait_for,
    wait_until,
)
from workflows.handoff_model import (
    Accept,
    CustomerLeft,
    Decline,
    HandoffInput,
    HandoffStatus,
    Resolve,
    ReturnToBot,
)

pytestmark = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)

BILLING_WITH_REFUNDS = ("ana", "claire")  # billing + refunds + English
BILLING = ("ana", "bernd", "claire", "greta", "ines", "katrin")  # billing + English


async def _weekday(env: WorkflowEnvironment, weekday: int, hour: int) -> None:
    await skip_to(env, next_weekday_at(await env.get_current_time(), weekday, hour, 0))


async def _billing_handoff(
    env: WorkflowEnvironment,
    queue: str,
    customer: str = "HC-EN",
    start_with: HandoffInput | None = None,
) -> tuple[str, WorkflowHandle[Any, HandoffStatus]]:
    """A billing conversation whose bot asks for a person."""
    conversation = new_conversation()
    handle = await start(
        env, queue, turn_event(conversation, customer, "my invoice", intent="billing"), start_with
    )
    await send(env, queue, handoff_request_event(conversation, customer, "asks", []), start_with)
    return conversation, handle


async def _leave(env: WorkflowEnvironment, conversation: str, handle: Any) -> HandoffStatus:
    await command_handoff(env.client, conversation, "customer_left", CustomerLeft())
    final: HandoffStatus = await handle.result()
    return final


async def test_offer_timeout_reoffers_to_another_agent(app_db: AppDb) -> None:
    async with fresh_env() as env, handoff_worker(env, app_db) as queue:
        await _weekday(env, 1, 10)
        conversation, handle = await _billing_handoff(env, queue)
        first = await wait_for(env, handle, "offered")
        assert first.current_offer is not None and first.current_offer.number == 1
        first_agent = first.current_offer.agent_id
        assert first_agent in BILLING_WITH_REFUNDS
        await env.sleep(timedelta(seconds=46))  # offer_timeout is 45s
        second = await wait_until(
            handle, lambda s: s.current_offer is not None and s.current_offer.number == 2, "2nd"
        )
        assert second.offers[0].outcome == "timed_out"
        assert second.current_offer is not None
        assert second.current_offer.agent_id != first_agent
        assert second.current_offer.agent_id in BILLING_WITH_REFUNDS
        assert (await agent(app_db, first_agent)).active_conversations == 0
        states = [t.state for t in second.history]
        assert states[-3:] == ["offered", "queued", "offered"]
        assert (await _leave(env, conversation, handle)).state == "abandoned"
        await keep_history(handle, "handoff-offer-timeout-reoffer")


async def test_decline_reoffers_and_the_decliner_is_free_again(app_db: AppDb) -> None:
    async with fresh_env() as env, handoff_worker(env, app_db) as queue:
        await _weekday(env, 1, 10)
        conversation, handle = await _billing_handoff(env, queue)
        first = await wait_for(env, handle, "offered")
        assert first.current_offer is not None
        decliner = first.current_offer.agent_id
        declined = await command_handoff(
            env.client, conversation, "decline", Decline(agent=decliner, reason="on a call")
        )
        assert declined.state == "queued" and declined.offers[0].outcome == "declined"
        assert declined.offers[0].reason == "on a call"
        second = await wait_until(
            handle, lambda s: s.current_offer is not None and s.current_offer.number == 2, "2nd"
        )
        assert second.current_offer is not None and second.current_offer.agent_id != decliner
        assert (await agent(app_db, decliner)).active_conversations == 0
        taker = second.current_offer.agent_id
        accepted = await command_handoff(env.client, conversation, "accept", Accept(agent=taker))
        assert accepted.state == "active" and accepted.agent == taker
        await wait_until(handle, lambda s: s.case_acknowledged, "case opened, acknowledged")
        await command_handoff(env.client, conversation, "resolve", Resolve(by=taker))
        assert (await handle.result()).state == "resolved"
        assert (await agent(app_db, taker)).active_conversations == 0
        await keep_history(handle, "handoff-decline-accept")


async def test_optional_skills_are_dropped_after_the_relaxation_delay(app_db: AppDb) -> None:
    async with fresh_env() as env, handoff_worker(env, app_db) as queue:
        await _weekday(env, 1, 10)
        await set_agents(app_db, "busy", *BILLING_WITH_REFUNDS)
        conversation, handle = await _billing_handoff(env, queue)
        queued = await wait_for(env, handle, "queued")
        assert not queued.relaxed and not queued.offers
        await env.sleep(timedelta(seconds=90))  # relax_after is 2m: not yet
        assert not (await state(handle)).offers
        await env.sleep(timedelta(seconds=40))
        offered = await wait_for(env, handle, "offered")
        assert offered.relaxed and offered.queue == "billing"
        assert offered.current_offer is not None
        assert offered.current_offer.agent_id in ("bernd", "greta", "ines", "katrin")
        assert "relaxed" in await ledger_steps(app_db, handle.id)
        assert (await _leave(env, conversation, handle)).state == "abandoned"
        await keep_history(handle, "handoff-relaxed")


async def test_overflow_after_the_maximum_wait(app_db: AppDb) -> None:
    async with fresh_env() as env, handoff_worker(env, app_db) as queue:
        await _weekday(env, 1, 10)
        await set_agents(app_db, "busy", *BILLING)  # staffed, so the estimate is in range
        conversation, handle = await _billing_handoff(env, queue)
        queued = await wait_for(env, handle, "queued")
        assert queued.queue == "billing" and not queued.overflowed
        await env.sleep(timedelta(minutes=10, seconds=5))  # max_wait is 10m
        offered = await wait_for(env, handle, "offered")
        assert offered.overflowed and offered.queue == "tier-2"
        assert offered.current_offer is not None and offered.current_offer.agent_id == "jack"
        row = await ticket(app_db, offered.ticket_id or "")
        assert row.queue == "tier-2"
        assert "overflow" in await ledger_steps(app_db, handle.id)
        assert (await _leave(env, conversation, handle)).state == "abandoned"
        await keep_history(handle, "handoff-overflow-wait")


async def test_overflow_when_the_queue_is_too_deep(app_db: AppDb) -> None:
    async with fresh_env() as env, handoff_worker(env, app_db) as queue:
        await _weekday(env, 1, 10)
        async with app_db.sessions() as session, session.begin():
            for n in range(2):
                session.add(
                    SandboxTicket(
                        id=f"WAIT-{uuid.uuid4().hex[:8]}-{n}",
                        customer_id="HC-DE",
                        subject="waiting",
                        status="new",
                        queue="billing",
                        tags=["opsflow", "handoff", f"conversation:other-{n}"],
                    )
                )
        shallow = start_input(max_queue_depth=2)
        conversation, handle = await _billing_handoff(env, queue, start_with=shallow)
        offered = await wait_for(env, handle, "offered")
        assert offered.overflowed and offered.queue == "tier-2"
        assert offered.current_offer is not None
        assert offered.current_offer.agent_id in ("jack", "katrin")
        assert (await _leave(env, conversation, handle)).state == "abandoned"


async def test_after_hours_callback_inside_the_queue_hours_in_the_customer_timezone(
    app_db: AppDb,
) -> None:
    async with fresh_env() as env, handoff_worker(env, app_db) as queue:
        await _weekday(env, 5, 10)  # Saturday: billing and tier-2 are closed
        _, handle = await _billing_handoff(env, queue, customer="HC-NY")
        final = await handle.result()
        assert final.state == "callback_scheduled"
        assert final.end_reason and "closed" in final.end_reason
        assert final.callback_at is not None and final.callback_ticket_id is not None
        berlin = local(final.callback_at, "Europe/Berlin")
        new_york = local(final.callback_at, "America/New_York")
        assert berlin.weekday() == 0 and 8 <= berlin.hour < 18  # the callbacks queue's hours
        assert new_york.weekday() == 0 and (new_york.hour, new_york.minute) == (9, 0)
        assert final.callback_local and "America/New_York" in final.callback_local
        row = await ticket(app_db, final.callback_ticket_id)
        assert row.queue == "callbacks" and "callback" in row.tags and row.channel == "phone"
        description = row.comments[0].body  # the sandbox keeps the description as a comment
        assert description.startswith("Callback due") and "customer_asks" not in description
        assert "closed" in description and "my invoice" in description  # the context packet
        assert not final.offers
        await keep_history(handle, "handoff-after-hours-callback")


async def test_abandon_while_queued_and_no_offer_after(app_db: AppDb) -> None:
    async with fresh_env() as env, handoff_worker(env, app_db) as queue:
        await _weekday(env, 1, 10)
        await set_agents(app_db, "busy", *BILLING)
        conversation, handle = await _billing_handoff(env, queue)
        queued = await wait_for(env, handle, "queued")
        assert queued.ticket_id is not None
        left = await command_handoff(env.client, conversation, "customer_left", CustomerLeft())
        assert left.state == "abandoned"
        await set_agents(app_db, "available", *BILLING)
        final = await handle.result()
        await env.sleep(timedelta(minutes=5))
        assert final.state == "abandoned" and not final.offers
        for agent_id in BILLING:
            assert (await agent(app_db, agent_id)).active_conversations == 0
        row = await ticket(app_db, queued.ticket_id)
        assert row.status == "closed" and "abandoned" in row.tags
        steps = await ledger_steps(app_db, handle.id)
        assert not any(step.endswith("-offered") for step in steps)


async def _refused(
    env: WorkflowEnvironment,
    handle: Any,
    conversation: str,
    attempts: list[tuple[str, Any, str]],
) -> None:
    before = (await state(handle)).model_dump(mode="json")
    for update, argument, reason in attempts:
        with pytest.raises(HandoffCommandRefused, match=reason):
            await command_handoff(env.client, conversation, update, argument)
        assert (await state(handle)).model_dump(mode="json") == before, update


async def test_every_invalid_update_is_refused_and_changes_nothing(app_db: AppDb) -> None:
    async with fresh_env() as env, handoff_worker(env, app_db) as queue:
        await _weekday(env, 1, 10)
        conversation = new_conversation()
        handle = await start(env, queue, turn_event(conversation, "HC-EN", "hi", intent="billing"))
        await wait_until(handle, lambda s: len(s.turns) == 1, "one turn")
        await _refused(
            env,
            handle,
            conversation,
            [
                ("accept", Accept(agent="ana"), "no offer is open"),
                ("decline", Decline(agent="ana"), "no offer is open"),
                ("return_to_bot", ReturnToBot(), "bot has the conversation"),
                ("resolve", Resolve(), "only an active conversation"),
            ],
        )
        await send(env, queue, handoff_request_event(conversation, "HC-EN", "asks", []))
        offered = await wait_for(env, handle, "offered")
        assert offered.current_offer is not None
        offered_to = offered.current_offer.agent_id
        other = "claire" if offered_to == "ana" else "ana"
        await _refused(
            env,
            handle,
            conversation,
            [
                ("accept", Accept(agent=other), f"offered to {offered_to}, not to {other}"),
                ("decline", Decline(agent=other), f"offered to {offered_to}, not to {other}"),
                ("resolve", Resolve(), "only an active conversation"),
                ("escalate", None, "unknown command"),
            ],
        )
        await command_handoff(env.client, conversation, "accept", Accept(agent=offered_to))
        await wait_until(handle, lambda s: s.case_acknowledged, "case opened, acknowledged")
        await _refused(
            env,
            handle,
            conversation,
            [
                ("accept", Accept(agent=offered_to), f"already accepted by {offered_to}"),
                ("accept", Accept(agent=other), f"already accepted by {offered_to}"),
                ("decline", Decline(agent=offered_to), f"already accepted by {offered_to}"),
            ],
        )
        await command_handoff(env.client, conversation, "resolve", Resolve(by=offered_to))
        final = await handle.result()
        for update, argument in [
            ("accept", Accept(agent=offered_to)),
            ("resolve", Resolve()),
            ("customer_left", CustomerLeft()),
            ("return_to_bot", ReturnToBot()),
        ]:
            with pytest.raises(HandoffCommandRefused):
                await command_handoff(env.client, conversation, update, argument)
        assert (await state(handle)).model_dump(mode="json") == final.model_dump(mode="json")


async def test_explicit_bot_request_carries_transcript_and_attempts(app_db: AppDb) -> None:
    async with fresh_env() as env, handoff_worker(env, app_db) as queue:
        await _weekday(env, 1, 10)
        conversation = new_conversation()
        transcript = [
            TranscriptLine.model_validate(
                {"from": "customer", "text": "my refund never arrived", "at": None}
            ),
            TranscriptLine.model_validate(
                {"from": "bot", "text": "Here is our refund guide", "at": None}
            ),
        ]
        event = handoff_request_event(
            conversation, "HC-EN", "refund flow failed twice", transcript, ["flow:refund"]
        )
        handle = await start(env, queue, event)
        status = await wait_for(env, handle, "offered", "queued")
        assert status.trigger is not None and status.trigger.kind == "bot_requests"
        assert status.trigger.detail == "refund flow failed twice"
        assert [t.text for t in status.turns] == [line.text for line in transcript]
        assert status.attempts == ["flow:refund"]
        assert status.context is not None and "flow:refund" in status.context.text
        assert "my refund never arrived" in status.context.text
        assert (await _leave(env, conversation, handle)).state == "abandoned"
        await keep_history(handle, "handoff-bot-request")

        # With bot requests off, the request is recorded and the bot keeps the conversation.
        quiet = start_input(
            triggers={"customer_asks": True, "bot_requests": False, "tiers": ["vip"]}
        )
        other = new_conversation()
        ignored = await start(
            env,
            queue,
            handoff_request_event(other, "HC-EN", "please", transcript),
            quiet,
        )
        kept = await wait_until(ignored, lambda s: len(s.turns) == 2, "transcript kept")
        assert kept.state == "bot" and kept.trigger is None
        steps = await ledger_steps(app_db, ignored.id)
        assert any(s.startswith("ignored-request-") for s in steps)
        await command_handoff(env.client, other, "customer_left", CustomerLeft())
        assert (await ignored.result()).state == "returned_to_bot"
