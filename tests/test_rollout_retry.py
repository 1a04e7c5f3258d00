"""Run it again (issue 15, item 3): a change rolled back automatically is retried as attempt 2
with the same cohorts and fresh approvals; `start` for a finished change says what to do."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select
from temporalio.testing import WorkflowEnvironment

from activities.adapters.sandbox import degrade
from client.rollouts import RolloutCommandRefused, retry_rollout, start_rollout
from store.models import RolloutExposure
from tests.conftest import AppDb
from tests.definition_support import pinned
from tests.escalation_support import ledger_steps
from tests.rollout_support import (
    add_customers,
    change,
    new_change_id,
    phase,
    plan_document,
    rollout_worker,
    settled,
)
from workflows.rollout import RolloutWorkflow
from workflows.rollout_model import Decision, rollout_workflow_id

pytestmark = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)


async def _exposed(db: AppDb, change_id: str, attempt: int) -> set[str]:
    async with db.sessions() as session:
        rows = await session.scalars(
            select(RolloutExposure.customer_id).where(
                RolloutExposure.change_id == change_id,
                RolloutExposure.attempt == attempt,
                RolloutExposure.phase == 1,
            )
        )
        return set(rows)


async def test_retry_after_an_automatic_rollback_is_attempt_two_with_fresh_approvals(
    workflow_env: WorkflowEnvironment, app_db: AppDb
) -> None:
    await add_customers(app_db)
    change_id = new_change_id()
    plan = pinned(plan_document(phases=[phase("pilot", 10), phase("everyone", 100)]))
    client = workflow_env.client
    async with rollout_worker(workflow_env, app_db) as queue:
        started = await start_rollout(client, queue, change(change_id), plan)
        handle = started.handle
        await settled(handle, lambda s: s.state == "awaiting_approval")
        await handle.execute_update(RolloutWorkflow.approve, Decision(approver="lena"))
        await settled(handle, lambda s: s.state == "baking")
        await degrade(app_db.sessions, "complaint_rate", change_id, 0.2)
        await workflow_env.sleep(timedelta(minutes=40))
        first = await handle.result()
        assert first.state == "rolled_back" and first.finished and first.attempt == 1

        with pytest.raises(RolloutCommandRefused, match=f"opsflow rollout retry {change_id}"):
            await start_rollout(client, queue, change(change_id), plan)

        retried = await retry_rollout(client, queue, change_id)
        assert retried.new_run and retried.status.attempt == 2
        again = client.get_workflow_handle_for(RolloutWorkflow.run, rollout_workflow_id(change_id))
        # Fresh approvals: attempt 1's approval does not start attempt 2.
        waiting = await settled(again, lambda s: s.state == "awaiting_approval")
        assert waiting.attempt == 2 and waiting.approvals == []
        await degrade(app_db.sessions, "complaint_rate", change_id, 0.01)  # fixed
        await again.execute_update(RolloutWorkflow.approve, Decision(approver="lena"))
        await workflow_env.sleep(timedelta(hours=5))
        second = await again.result()

        with pytest.raises(RolloutCommandRefused, match="complete"):
            await retry_rollout(client, queue, change_id)
        with pytest.raises(RolloutCommandRefused, match="new change id"):
            await start_rollout(client, queue, change(change_id), plan)

    assert second.state == "completed" and second.attempt == 2
    assert [a.attempt for a in second.approvals] == [2]
    # The same cohorts: attempt 2's pilot exposed exactly attempt 1's pilot customers.
    assert await _exposed(app_db, change_id, 2) == await _exposed(app_db, change_id, 1) != set()
    steps = await ledger_steps(app_db, handle.id)
    assert "a1-rolled-back" in steps and "a2-completed" in steps
    assert len(steps) == len(set(steps))
