"""The handoff and its escalation case are one story (issue 14, item 1), on the time-skipping
server: the agent's accept is the case's first response, by that agent; the conversation's
end resolves the case, with the outcome when it was not simply resolved. A chat handled in
time leaves no breach, no level and no warning behind, however long one waits afterwards."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from temporalio.client import Client
from temporalio.service import RPCError
from temporalio.testing import WorkflowEnvironment

from client.cases import command_case
from client.handoffs import command_handoff
from tests.conftest import AppDb
from tests.escalation_support import (
    keep_history,
    ledger_entries,
    ledger_steps,
    next_weekday_at,
    skip_to,
)
from tests.handoff_support import (
    fresh_env,
    handoff_worker,
    new_conversation,
    notifications,
    start,
    turn_event,
    wait_for,
    wait_until,
)
from workflows.escalation import CaseSummary
from workflows.escalation import EscalationStatus as CaseStatus
from workflows.escalation import Resolve as CaseResolve
from workflows.handoff_model import Accept, CustomerLeft, HandoffStatus, Resolve, ReturnToBot

pytestmark = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)

# What a case that escalated or breached would have sent; none may exist for a chat in time.
ESCALATION_TEMPLATES = ("sla-warning", "case-escalated", "sla-breached", "apology")


async def _accepted_by_ana(env: WorkflowEnvironment, queue: str) -> tuple[str, Any, HandoffStatus]:
    """A Spanish billing chat whose customer asks for a person, accepted by ana (billing,
    Spanish); returns once the case is open and acknowledged."""
    await skip_to(env, next_weekday_at(await env.get_current_time(), 1, 10, 0))
    conversation = new_conversation()
    handle = await start(
        env,
        queue,
        turn_event(conversation, "HC-ES", "Quiero hablar con una persona", intent="billing"),
    )
    offered = await wait_for(env, handle, "offered")
    assert offered.current_offer is not None and offered.current_offer.agent_id == "ana"
    await command_handoff(env.client, conversation, "accept", Accept(agent="ana"))
    status = await wait_until(handle, lambda s: s.case_acknowledged, "case acknowledged")
    return conversation, handle, status


async def _case(client: Client, workflow_id: str) -> CaseStatus:
    state: CaseStatus = await client.get_workflow_handle(workflow_id).query(
        "state", result_type=CaseStatus
    )
    return state


async def _no_escalation(db: AppDb, case_id: str, customer: str) -> None:
    steps = await ledger_steps(db, case_id)
    assert not [s for s in steps if s.startswith(("level-", "breach-", "warn-"))], steps
    sent = await notifications(db)
    assert not [n.template for n in sent if n.template in ESCALATION_TEMPLATES]
    assert not [
        n for n in sent if n.recipient == f"customer:{customer}" and "apology" in n.template
    ]


async def test_accepted_and_resolved_in_time_acknowledges_and_resolves_the_case(
    app_db: AppDb,
) -> None:
    async with fresh_env() as env, handoff_worker(env, app_db) as queue:
        conversation, handle, status = await _accepted_by_ana(env, queue)
        assert status.case_workflow_id == f"case-{status.ticket_id}"
        case = await _case(env.client, status.case_workflow_id)
        assert case.acknowledged_by == "ana" and case.state == "acknowledged"
        first = case.clocks["first_response"]
        assert first.met_at is not None and first.breached_at is None
        assert status.accepted_at is not None and first.met_at >= status.accepted_at

        await env.sleep(timedelta(minutes=4))  # the agent helps; well within every target
        done = await command_handoff(env.client, conversation, "resolve", Resolve())
        assert done.state == "resolved" and done.ended_by == "ana"  # the agent by default
        final = await handle.result()
        assert final.case_closed

        summary = await env.client.get_workflow_handle(
            status.case_workflow_id, result_type=CaseSummary
        ).result()
        assert summary.acknowledged_by == "ana" and summary.resolved_by == "ana"
        assert summary.time_at_level == {}
        assert all(o.met and not o.breached for o in summary.slas), summary.slas
        # Past the first-response target (2h at p2) and its warning: nothing is left to fire.
        await env.sleep(timedelta(hours=3))
        await _no_escalation(app_db, status.case_workflow_id, "HC-ES")
        with pytest.raises(RPCError):  # no breach was delivered, so no recovery run exists
            await env.client.get_workflow_handle("customer-HC-ES").describe()
        steps = await ledger_steps(app_db, status.case_workflow_id)
        assert [s for s in steps if s in {"acknowledge", "resolve"}] == ["acknowledge", "resolve"]
        assert "case-closed" in await ledger_steps(app_db, handle.id)
        await keep_history(handle, "handoff-case-acknowledged-resolved")
        await keep_history(
            env.client.get_workflow_handle(status.case_workflow_id), "escalation-handoff-case"
        )


@pytest.mark.parametrize(
    ("command", "argument", "by", "outcome"),
    [
        (
            "return_to_bot",
            ReturnToBot(reason="the bot can finish the address change"),
            "ana",
            "returned to bot: the bot can finish the address change",
        ),
        ("customer_left", CustomerLeft(), "ana", "customer left: customer left the chat"),
        ("resolve", Resolve(by="lena"), "lena", None),
    ],
)
async def test_the_conversations_end_closes_the_case_with_its_outcome(
    app_db: AppDb, command: str, argument: Any, by: str, outcome: str | None
) -> None:
    async with fresh_env() as env, handoff_worker(env, app_db) as queue:
        conversation, handle, status = await _accepted_by_ana(env, queue)
        assert status.case_workflow_id is not None
        await command_handoff(env.client, conversation, command, argument)
        await handle.result()
        summary = await env.client.get_workflow_handle(
            status.case_workflow_id, result_type=CaseSummary
        ).result()
        assert summary.acknowledged_by == "ana" and summary.resolved_by == by
        entries = await ledger_entries(app_db, status.case_workflow_id)
        resolved = [e for e in entries if e.step == "resolve"]
        assert len(resolved) == 1 and resolved[0].detail.get("outcome") == outcome
        await _no_escalation(app_db, status.case_workflow_id, "HC-ES")


async def test_a_case_resolved_by_hand_first_does_not_stop_the_conversation(
    app_db: AppDb,
) -> None:
    async with fresh_env() as env, handoff_worker(env, app_db) as queue:
        conversation, handle, status = await _accepted_by_ana(env, queue)
        assert status.ticket_id is not None and status.case_workflow_id is not None
        await command_case(env.client, status.ticket_id, "resolve", CaseResolve(by="lead"))
        await command_handoff(env.client, conversation, "resolve", Resolve())
        final = await handle.result()
        assert final.state == "resolved" and final.case_closed
        closed = [e for e in await ledger_entries(app_db, handle.id) if e.step == "case-closed"]
        assert len(closed) == 1 and "not_applied" in closed[0].detail
        summary = await env.client.get_workflow_handle(
            status.case_workflow_id, result_type=CaseSummary
        ).result()
        assert summary.resolved_by == "lead"
