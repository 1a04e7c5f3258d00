"""People in the loop are told (issue 15, item 2): every approval request notifies the
approvers at once on the plan's channel with what is asked, the cohort, the deadline and the
command that answers; a reminder comes before the timeout; approvals belong to one attempt."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select
from temporalio.testing import WorkflowEnvironment

from store.models import SandboxNotification
from tests.conftest import AppDb
from tests.definition_support import pinned
from tests.rollout_support import (
    add_customers,
    new_change_id,
    phase,
    plan_document,
    rollout_worker,
    settled,
    start,
)
from workflows.rollout import RolloutWorkflow
from workflows.rollout_model import Decision, Reason

pytestmark = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)


async def _asked(db: AppDb, change_id: str) -> list[SandboxNotification]:
    async with db.sessions() as session:
        rows = await session.scalars(
            select(SandboxNotification)
            .where(
                SandboxNotification.template == "rollout-approval",
                SandboxNotification.idempotency_key.like(f"rollout-{change_id}/%"),
            )
            .order_by(SandboxNotification.id)
        )
        return list(rows)


async def test_approvers_are_asked_at_once_and_reminded_before_the_timeout(
    workflow_env: WorkflowEnvironment, app_db: AppDb
) -> None:
    await add_customers(app_db)
    change_id = new_change_id()
    plan = pinned(
        plan_document(
            approvals={
                "group": "cx-change-board",
                "required": 2,
                "timeout": "4h",
                "members": ["lena", "marco"],
                "channel": "slack",
            },
            phases=[phase("pilot", 10, gate="approval"), phase("everyone", 100)],
        )
    )
    async with rollout_worker(workflow_env, app_db) as queue:
        handle = await start(workflow_env, queue, plan, change_id)
        await settled(handle, lambda s: s.state == "awaiting_approval" and s.approval_notices)
        [first] = await _asked(app_db, change_id)
        assert first.channel == "chat" and first.recipient == "group:cx-change-board"
        assert first.subject and "the start of the rollout" in first.subject
        assert f"opsflow rollout approve {change_id} --approver" in first.body
        assert "phase pilot, 10% of customers" in first.body and "0 of 2" in first.body
        assert "Answer by" in first.body and "UTC" in first.body

        await workflow_env.sleep(timedelta(hours=2, minutes=5))  # halfway: one reminder
        asked = await _asked(app_db, change_id)
        assert len(asked) == 2 and asked[1].subject and asked[1].subject.startswith("Reminder")
        await workflow_env.sleep(timedelta(hours=1))
        assert len(await _asked(app_db, change_id)) == 2

        await handle.execute_update(RolloutWorkflow.approve, Decision(approver="lena"))
        await handle.execute_update(RolloutWorkflow.approve, Decision(approver="marco"))
        await workflow_env.sleep(timedelta(hours=2, minutes=10))  # pilot baked: the gate
        s = await settled(handle, lambda s: s.approval_for == "pilot" and s.approval_notices)
        assert s.state == "awaiting_approval"
        gate = (await _asked(app_db, change_id))[-1]
        assert gate.subject and "the gate after phase pilot" in gate.subject
        assert "phase everyone, 100% of customers" in gate.body
        await handle.terminate("test over")


async def test_an_earlier_attempts_approvals_pass_none_of_the_next_ones_gates(
    workflow_env: WorkflowEnvironment, app_db: AppDb
) -> None:
    await add_customers(app_db)
    change_id = new_change_id()
    plan = pinned(
        plan_document(
            phases=[phase("pilot", 10, gate="approval"), phase("ten", 20), phase("all", 100)]
        )
    )
    lena = Decision(approver="lena")
    async with rollout_worker(workflow_env, app_db) as queue:
        handle = await start(workflow_env, queue, plan, change_id)
        await settled(handle, lambda s: s.state == "awaiting_approval")
        await handle.execute_update(RolloutWorkflow.approve, lena)
        await workflow_env.sleep(timedelta(hours=2, minutes=10))
        await settled(handle, lambda s: s.approval_for == "pilot")
        await handle.execute_update(RolloutWorkflow.approve, lena)  # attempt 1's gate
        await settled(handle, lambda s: s.stage == "ten" and s.state == "baking")
        await handle.execute_update(RolloutWorkflow.abort, Reason(reason="wrong copy"))
        await settled(handle, lambda s: s.state == "rolled_back")

        retried = await handle.execute_update(RolloutWorkflow.retry)
        assert retried.attempt == 2 and retried.state == "awaiting_approval"
        s = await settled(handle, lambda s: s.approval_notices > 0)
        assert s.approval_for == "start"
        await handle.execute_update(RolloutWorkflow.approve, lena)  # attempt 2's start
        await workflow_env.sleep(timedelta(hours=2, minutes=10))
        s = await settled(handle, lambda s: s.approval_for == "pilot")
        # Lena approved this gate in attempt 1: that does not pass attempt 2's gate.
        assert s.state == "awaiting_approval" and s.stage == "pilot"
        assert [(a.stage, a.attempt) for a in s.approvals if a.stage == "pilot"] == [("pilot", 1)]
        await handle.execute_update(RolloutWorkflow.approve, lena)
        s = await settled(handle, lambda s: s.stage == "ten")
        assert s.state in ("waiting_window", "applying", "baking")
        await handle.terminate("test over")
    asked = [n.subject or "" for n in await _asked(app_db, change_id)]
    assert sum("the start" in subject for subject in asked) == 2
    assert sum("the gate after phase pilot" in subject for subject in asked) == 2
