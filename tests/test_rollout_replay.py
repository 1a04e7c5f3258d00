"""Replay of recorded rollout histories: a change to the workflow code that would break
running rollouts fails here (guard it with `workflow.patched`).

Record again (after a deliberate, patched change) with
`OPSFLOW_RECORD_HISTORIES=1 .venv/bin/pytest tests/test_rollout_replay.py -k record`.
"""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path

import pytest
from temporalio.client import WorkflowHistory
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Replayer

from activities.adapters.sandbox import degrade
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
from workflows.sandbox import WORKFLOW_RUNNER

HISTORIES = Path(__file__).parent / "histories"
RECORDED = sorted(HISTORIES.glob("rollout-*.json"))


async def test_recorded_rollout_histories_replay() -> None:
    assert RECORDED, "no recorded rollout histories in tests/histories/"
    replayer = Replayer(
        workflows=[RolloutWorkflow],
        workflow_runner=WORKFLOW_RUNNER,
        data_converter=pydantic_data_converter,
    )
    for path in RECORDED:
        history = WorkflowHistory.from_json(path.stem, path.read_text())
        result = await replayer.replay_workflow(history, raise_on_replay_failure=False)
        assert result.replay_failure is None, f"{path.name}: {result.replay_failure}"


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
@pytest.mark.skipif(
    not os.environ.get("OPSFLOW_RECORD_HISTORIES"), reason="records histories on request only"
)
async def test_record_rollout_histories(workflow_env: WorkflowEnvironment, app_db: AppDb) -> None:
    await add_customers(app_db)
    async with rollout_worker(workflow_env, app_db) as queue:
        # Approvals, pause/resume, four phases to completion.
        completed = await start(workflow_env, queue, pinned(plan_document()), new_change_id())
        await settled(completed, lambda s: s.state == "awaiting_approval")
        await completed.execute_update(RolloutWorkflow.approve, Decision(approver="lena"))
        await workflow_env.sleep(timedelta(hours=1))
        await completed.execute_update(RolloutWorkflow.pause, Reason(reason="billing run"))
        await workflow_env.sleep(timedelta(hours=3))
        await completed.execute_update(RolloutWorkflow.resume)
        await workflow_env.sleep(timedelta(hours=9))
        assert (await completed.result()).state == "completed"

        # A failing check rolls back; abort and retry; a frozen phase accepted.
        plan = pinned(plan_document(impact={"risk": "standard"}))
        failed_id = new_change_id()
        failed = await start(workflow_env, queue, plan, failed_id)
        await workflow_env.sleep(timedelta(hours=2, minutes=10))
        await degrade(app_db.sessions, "complaint_rate", failed_id, 0.2)
        await workflow_env.sleep(timedelta(minutes=40))
        assert (await failed.result()).state == "rolled_back"

        retried = await start(workflow_env, queue, plan, new_change_id())
        await workflow_env.sleep(timedelta(hours=2, minutes=40))
        await retried.execute_update(RolloutWorkflow.abort, Reason(reason="wrong copy"))
        await settled(retried, lambda s: s.state == "rolled_back")
        await retried.execute_update(RolloutWorkflow.retry)
        await workflow_env.sleep(timedelta(hours=9))
        assert (await retried.result()).state == "completed"

        frozen_plan = pinned(
            plan_document(
                impact={"risk": "standard"},
                phases=[phase("pilot", 10, irreversible=True), phase("everyone", 100)],
            )
        )
        frozen_id = new_change_id()
        frozen = await start(workflow_env, queue, frozen_plan, frozen_id)
        await workflow_env.sleep(timedelta(minutes=10))
        await degrade(app_db.sessions, "csat", frozen_id, 2.0)
        await workflow_env.sleep(timedelta(minutes=30))
        await settled(frozen, lambda s: s.state == "frozen")
        await degrade(app_db.sessions, "csat", frozen_id, 4.4)  # fixed: roll forward
        await frozen.execute_update(RolloutWorkflow.promote)
        await workflow_env.sleep(timedelta(hours=3))
        assert (await frozen.result()).state == "completed"

    for name, handle in (
        ("completed", completed),
        ("rolled-back", failed),
        ("abort-retry", retried),
        ("frozen-forward", frozen),
    ):
        history = await handle.fetch_history()
        (HISTORIES / f"rollout-{name}.json").write_text(history.to_json())


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
@pytest.mark.skipif(
    not os.environ.get("OPSFLOW_RECORD_HISTORIES"), reason="records histories on request only"
)
async def test_record_phase_scoped_rollback_history(
    workflow_env: WorkflowEnvironment, app_db: AppDb
) -> None:
    """A rollback under the `phase-scoped-revert` patch (the older histories above were
    recorded before it, and keep replaying the whole-change revert)."""
    await add_customers(app_db)
    async with rollout_worker(workflow_env, app_db) as queue:
        plan = pinned(plan_document(impact={"risk": "standard"}))
        change_id = new_change_id()
        handle = await start(workflow_env, queue, plan, change_id)
        await workflow_env.sleep(timedelta(hours=4, minutes=10))
        await degrade(app_db.sessions, "complaint_rate", change_id, 0.2)
        await workflow_env.sleep(timedelta(minutes=40))
        assert (await handle.result()).state == "rolled_back"
    history = await handle.fetch_history()
    (HISTORIES / "rollout-rolled-back-phase-scoped.json").write_text(history.to_json())
