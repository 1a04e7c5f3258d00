"""Client-side rollout operations: start once per change, refusals as one readable line."""

from __future__ import annotations

import pytest
from temporalio.testing import WorkflowEnvironment

from client.rollouts import (
    RolloutCommandRefused,
    command_rollout,
    rollout_state,
    start_rollout,
)
from tests.conftest import AppDb
from tests.definition_support import pinned
from tests.rollout_support import change, new_change_id, plan_document, rollout_worker, settled
from workflows.rollout_model import Decision, Reason

pytestmark = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)


async def test_start_once_and_refusals_say_why(
    workflow_env: WorkflowEnvironment, app_db: AppDb
) -> None:
    change_id = new_change_id()
    plan = pinned(plan_document())
    client = workflow_env.client
    async with rollout_worker(workflow_env, app_db) as queue:
        first = await start_rollout(client, queue, change(change_id), plan)
        again = await start_rollout(client, queue, change(change_id), plan)
        assert first.started and not again.started
        assert again.handle.id == f"rollout-{change_id}"
        await settled(first.handle, lambda s: s.state == "awaiting_approval")
        with pytest.raises(RolloutCommandRefused, match="ana owns change"):
            await command_rollout(client, change_id, "approve", Decision(approver="ana"))
        with pytest.raises(RolloutCommandRefused, match="not paused or held"):
            await command_rollout(client, change_id, "resume")
        with pytest.raises(RolloutCommandRefused, match="only an aborted"):
            await command_rollout(client, change_id, "retry")
        paused = await command_rollout(client, change_id, "pause", Reason(reason="freeze"))
        assert paused.paused
        status = await rollout_state(client, change_id)
        assert status.paused and status.approvals == []
        with pytest.raises(RolloutCommandRefused, match="no running rollout"):
            await command_rollout(client, "CHG-nope", "resume")
        await first.handle.terminate("test over")
