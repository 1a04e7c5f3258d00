"""A rollout's search attributes say what it waits for: OpsDueAt is its next deadline (here
an approval's paging time) and OpsState=stuck marks a paged approval nobody answered.

A module of its own: it sleeps past the timeout on a time-skipping server, which must not
fire the timers other modules' runs left behind."""

from __future__ import annotations

from datetime import timedelta

import pytest
from temporalio.common import TypedSearchAttributes
from temporalio.testing import WorkflowEnvironment

from activities import search_attributes as sa
from tests.conftest import AppDb
from tests.definition_support import pinned
from tests.escalation_support import keep_history
from tests.helpers import assert_eventually
from tests.rollout_support import (
    add_customers,
    new_change_id,
    plan_document,
    rollout_worker,
    settled,
    start,
)
from workflows.rollout import RolloutWorkflow
from workflows.rollout_model import Decision

pytestmark = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)


async def test_an_approval_carries_its_deadline_and_reads_stuck_once_paged(
    workflow_env: WorkflowEnvironment, app_db: AppDb
) -> None:
    """OpsDueAt is the approval's paging time; past it, nobody having answered, the rollout
    reads OpsState=stuck until an approver acts."""
    await add_customers(app_db)
    change_id = new_change_id()
    plan = pinned(plan_document(approvals={"group": "cab", "required": 1, "timeout": "10m"}))
    async with rollout_worker(workflow_env, app_db) as queue:
        handle = await start(workflow_env, queue, plan, change_id)
        waiting = await settled(handle, lambda s: s.state == "awaiting_approval")
        assert waiting.approval_since is not None

        async def attributes() -> TypedSearchAttributes:
            return (await handle.describe()).typed_search_attributes

        due = waiting.approval_since + timedelta(minutes=10)
        shown = await assert_eventually(
            attributes, lambda a: a.get(sa.OPS_DUE_AT) is not None, "OpsDueAt set"
        )
        assert abs(shown.get(sa.OPS_DUE_AT) - due) < timedelta(seconds=1)  # type: ignore[operator]
        assert shown.get(sa.OPS_STATE) == "awaiting_approval"

        await workflow_env.sleep(timedelta(minutes=11))
        await assert_eventually(
            attributes, lambda a: a.get(sa.OPS_STATE) == sa.STUCK, "OpsState=stuck when paged"
        )
        await handle.execute_update(RolloutWorkflow.approve, Decision(approver="lena"))
        await assert_eventually(
            attributes, lambda a: a.get(sa.OPS_STATE) != sa.STUCK, "an approval clears stuck"
        )
        await keep_history(handle, "rollout-due-at-stuck")
        await handle.terminate(reason="test over")
