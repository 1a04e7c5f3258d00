"""The handoff workflow on the time-skipping server with the sandbox backends."""

from __future__ import annotations

from datetime import timedelta

import pytest
from temporalio.testing import WorkflowEnvironment

from client.handoffs import HandoffCommandRefused, command_handoff, handoff_request_event
from tests.conftest import AppDb
from tests.escalation_support import keep_history, ledger_steps, next_weekday_at, skip_to
from tests.handoff_support import (
    agent,
    fresh_env,
    handoff_worker,
    new_conversation,
    notifications,
    send,
    start,
    state,
    ticket,
    turn_event,
    wait_for,
    wait_until,
)
from tests.helpers import NEWEST_RELEASE, patches_taken
from workflows.escalation import CaseSummary
from workflows.escalation import EscalationStatus as CaseStatus
from workflows.handoff_model import Accept, CustomerLeft, Resolve, ReturnToBot

pytestmark = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)


async def _tuesday_morning(env: WorkflowEnvironment) -> None:
    await skip_to(env, next_weekday_at(await env.get_current_time(), 1, 10, 0))


async def test_customer_asks_full_context_bot_muted_once_and_case_counts_the_wait(
    app_db: AppDb,
) -> None:
    async with fresh_env() as env, handoff_worker(env, app_db) as queue:
        await _tuesday_morning(env)
        conversation = new_conversation()
        handle = await start(
            env,
            queue,
            turn_event(
                conversation,
                "HC-ES",
                "Mi factura está mal, quiero un reembolso",
                intent="billing",
                confidence=0.9,
                sentiment=0.1,
            ),
        )
        await send(
            env,
            queue,
            turn_event(
                conversation, "HC-ES", "Try our refund guide", speaker="bot", intent="faq:refunds"
            ),
        )
        asks = turn_event(
            conversation,
            "HC-ES",
            "Quiero hablar con una persona",
            intent="human_agent",
            confidence=0.8,
            sentiment=-0.3,
        )
        await send(env, queue, asks)
        await send(env, queue, asks)  # a re-delivered event counts once
        status = await wait_for(env, handle, "offered")
        assert status.trigger is not None and status.trigger.kind == "customer_asks"
        assert status.route == "billing" and status.queue == "billing"
        assert status.current_offer is not None
        assert status.current_offer.agent_id == "ana"  # billing + refunds + Spanish
        assert (await agent(app_db, "ana")).active_conversations == 1
        assert len([t for t in status.turns if t.intent == "human_agent"]) == 1

        # The context packet: a ticket comment with transcript, profile and what was tried.
        assert status.context is not None and status.ticket_id is not None
        row = await ticket(app_db, status.ticket_id)
        assert row.queue == "billing" and "handoff" in row.tags
        comment = row.comments[0].body
        assert not row.comments[0].public
        assert "Mi factura está mal" in comment and "Quiero hablar con una persona" in comment
        assert "Test HC-ES" in comment and "Europe/Madrid" in comment
        assert "What the bot tried: faq:refunds" in comment
        assert status.context.summary and "faq:refunds" in status.context.summary

        # One writer: the bot is told once; the customer is told in Spanish.
        muted = await notifications(app_db, channel="webhook", recipient=f"bot:{conversation}")
        assert [n.template for n in muted] == ["bot.stop_replying"]
        notice = await notifications(app_db, template="handoff-waiting")
        assert len(notice) == 1 and notice[0].language == "es"

        await env.sleep(timedelta(seconds=20))
        with pytest.raises(HandoffCommandRefused, match="offered to ana, not to claire"):
            await command_handoff(env.client, conversation, "accept", Accept(agent="claire"))
        accepted = await command_handoff(env.client, conversation, "accept", Accept(agent="ana"))
        assert accepted.state == "active" and accepted.agent == "ana"
        with pytest.raises(HandoffCommandRefused, match="already accepted by ana"):
            await command_handoff(env.client, conversation, "accept", Accept(agent="ana"))

        status = await wait_for(env, handle, "active")
        for _ in range(100):
            status = await state(handle)
            if status.case_acknowledged:  # the accept was the case's first response
                break
            await env.sleep(timedelta(milliseconds=50))
        assert status.case_workflow_id == f"case-{status.ticket_id}"
        case = env.client.get_workflow_handle(status.case_workflow_id)
        case_state = await case.query("state", result_type=CaseStatus)
        assert status.requested_at is not None
        assert case_state.case.opened_at == status.requested_at  # the wait counts
        first = case_state.clocks["first_response"]  # met by ana's accept, the wait counted
        assert case_state.acknowledged_by == "ana" and first.met_at is not None
        assert first.spent_before >= timedelta(seconds=20)
        assert (await ticket(app_db, status.ticket_id)).assignee == "ana"

        done = await command_handoff(env.client, conversation, "resolve", Resolve(by="ana"))
        assert done.state == "resolved"
        final = await handle.result()
        assert final.state == "resolved"
        assert (await agent(app_db, "ana")).active_conversations == 0
        steps = await ledger_steps(app_db, handle.id)
        states = [s.split("-", 2)[2] for s in steps if s.startswith("transition-")]
        assert states == ["bot", "requested", "queued", "offered", "active", "resolved"]
        assert "case-opened" in steps
        muted = await notifications(app_db, channel="webhook", recipient=f"bot:{conversation}")
        assert len(muted) == 1
        await keep_history(handle, "handoff-accepted-resolved")
        await keep_history(handle, "handoff-transcript-by-size")  # since that patch
        assert patches_taken(await handle.fetch_history()) == [NEWEST_RELEASE]
        # The conversation's case was acknowledged by ana at the accept and ends with it.
        summary = await env.client.get_workflow_handle(case.id, result_type=CaseSummary).result()
        assert summary.acknowledged_by == "ana" and summary.resolved_by == "ana"


@pytest.mark.parametrize(
    ("kind", "customer", "turns"),
    [
        ("low_confidence", "HC-EN", [{"confidence": 0.3}, {"confidence": 0.4}]),
        ("negative_sentiment", "HC-EN", [{"sentiment": -0.8}]),
        ("topic", "HC-EN", [{"intent": "cancellation"}]),
        ("tier", "HC-VIP", [{}]),
    ],
)
async def test_each_trigger_from_the_definition(
    workflow_env: WorkflowEnvironment,
    app_db: AppDb,
    kind: str,
    customer: str,
    turns: list[dict[str, object]],
) -> None:
    env = workflow_env
    await _tuesday_morning(env)
    conversation = new_conversation()
    async with handoff_worker(env, app_db) as queue:
        first = 0.3 if kind == "low_confidence" else 0.9
        handle = await start(env, queue, turn_event(conversation, customer, "hi", confidence=first))
        if kind == "low_confidence":
            await send(env, queue, turn_event(conversation, customer, "??", confidence=0.9))
            status = await wait_until(handle, lambda s: len(s.turns) == 2, "two turns")
            assert status.low_confidence_streak == 0 and status.state == "bot"
        elif kind == "tier":
            turns = []  # the first turn of a VIP hands off already
        for extra in turns:
            await send(env, queue, turn_event(conversation, customer, "text", **extra))
        status = await wait_for(env, handle, "offered", "queued")
        assert status.trigger is not None and status.trigger.kind == kind
        await command_handoff(env.client, conversation, "customer_left", CustomerLeft())
        assert (await handle.result()).state == "abandoned"


async def test_no_trigger_keeps_the_bot(workflow_env: WorkflowEnvironment, app_db: AppDb) -> None:
    env = workflow_env
    conversation = new_conversation()
    async with handoff_worker(env, app_db) as queue:
        handle = await start(env, queue, turn_event(conversation, "HC-EN", "hi", confidence=0.3))
        await send(
            env,
            queue,
            turn_event(
                conversation,
                "HC-EN",
                "where is my parcel",
                intent="delivery",
                confidence=0.9,
                sentiment=0.2,
            ),
        )
        status = await wait_until(handle, lambda s: len(s.turns) == 2, "two turns")
        assert status.state == "bot" and status.trigger is None
        with pytest.raises(HandoffCommandRefused, match="bot has the conversation"):
            await command_handoff(env.client, conversation, "return_to_bot", ReturnToBot())
        with pytest.raises(HandoffCommandRefused, match="no offer is open"):
            await command_handoff(env.client, conversation, "accept", Accept(agent="ana"))
        await env.sleep(timedelta(hours=3))
        assert (await handle.result()).state == "returned_to_bot"
        await keep_history(handle, "handoff-bot-idle")


@pytest.mark.parametrize(
    ("customer", "topic", "queue", "agent_id"),
    [
        ("HC-VIP", "billing", "vip", "ines"),  # the tier route comes first
        ("HC-DE", "technical", "technical", "eva"),  # the German technical route
        ("HC-FR", "cancellation", "retention", "hugo"),  # skill, optional skill, French
    ],
)
async def test_routing_by_tier_language_and_skill(
    workflow_env: WorkflowEnvironment,
    app_db: AppDb,
    customer: str,
    topic: str,
    queue: str,
    agent_id: str,
) -> None:
    env = workflow_env
    await _tuesday_morning(env)
    conversation = new_conversation()
    async with handoff_worker(env, app_db) as task_queue:
        handle = await start(env, task_queue, turn_event(conversation, customer, "x", intent=topic))
        await send(env, task_queue, handoff_request_event(conversation, customer, "asks", []))
        status = await wait_for(env, handle, "offered")
        assert status.queue == queue
        assert status.current_offer is not None and status.current_offer.agent_id == agent_id
        await command_handoff(env.client, conversation, "customer_left", CustomerLeft())
        assert (await handle.result()).state == "abandoned"
        assert (await agent(app_db, agent_id)).active_conversations == 0
        await keep_history(handle, f"handoff-abandoned-offered-{queue}")
