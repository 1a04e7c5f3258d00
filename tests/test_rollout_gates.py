"""Rollout commands and gates on the time-skipping server: promote --full (needs an approver),
reject at the start and at an approval gate, and approval-timeout paging."""

from __future__ import annotations

from collections import Counter
from datetime import timedelta

import pytest
from sqlalchemy import select
from temporalio.client import WorkflowUpdateFailedError
from temporalio.testing import WorkflowEnvironment
from typer.testing import CliRunner

from client.rollouts import RolloutCommandRefused, command_rollout
from store.models import SandboxNotification
from tests.conftest import AppDb
from tests.definition_support import pinned
from tests.escalation_support import ledger_steps
from tests.rollout_support import (
    add_customers,
    exposed,
    new_change_id,
    phase,
    plan_document,
    rollback_notices,
    rollout_worker,
    settled,
    start,
    state,
)
from worker.cli import app
from workflows.rollout import RolloutWorkflow
from workflows.rollout_model import Decision

SQLITE = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)


async def _pages(db: AppDb, change_id: str) -> list[tuple[str, str]]:
    async with db.sessions() as session:
        rows = await session.execute(
            select(SandboxNotification.channel, SandboxNotification.recipient).where(
                SandboxNotification.template == "rollout-attention",
                SandboxNotification.idempotency_key.like(f"rollout-{change_id}/%"),
            )
        )
        return [(row[0], row[1]) for row in rows]


@SQLITE
async def test_promote_full_needs_an_approver_and_skips_to_everyone(
    workflow_env: WorkflowEnvironment, app_db: AppDb
) -> None:
    await add_customers(app_db)
    change_id = new_change_id()
    plan = pinned(plan_document(impact={"risk": "standard"}))
    client = workflow_env.client
    async with rollout_worker(workflow_env, app_db) as queue:
        handle = await start(workflow_env, queue, plan, change_id)
        before = await settled(handle, lambda s: s.state == "baking")
        assert before.stage == "pilot"
        with pytest.raises(RolloutCommandRefused, match="owns change"):
            await command_rollout(client, change_id, "promote_full", Decision(approver="ana"))
        with pytest.raises(RolloutCommandRefused, match="not in the approvers' group"):
            await command_rollout(client, change_id, "promote_full", Decision(approver="eve"))
        assert (await state(handle)).approvals == [] and (await state(handle)).stage == "pilot"
        promoted = await command_rollout(
            client, change_id, "promote_full", Decision(approver="lena", reason="urgent fix")
        )
        assert [(a.approver, a.stage) for a in promoted.approvals] == [("lena", "full")]
        s = await settled(handle, lambda s: s.stage == "everyone" and s.state == "baking")
        assert s.stage == "everyone" and s.state == "baking"
        assert len(await exposed(app_db, change_id)) == 400
        # The last phase cannot be skipped to again.
        with pytest.raises(WorkflowUpdateFailedError):
            await handle.execute_update(RolloutWorkflow.promote_full, Decision(approver="marco"))
        await workflow_env.sleep(timedelta(hours=3))
        result = await handle.result()
    assert result.state == "completed"
    assert [p.verdict for p in result.phases] == ["promoted", "skipped", "skipped", "passed"]
    assert [(a.approver, a.stage) for a in result.approvals] == [("lena", "full")]
    assert [p.applied_at is not None for p in result.phases] == [True, False, False, True]
    steps = await ledger_steps(app_db, handle.id)
    assert "a1-promote-full" in steps and "a1-phase-2-applied" not in steps


def test_cli_promote_full_without_an_approver_is_one_line() -> None:
    result = CliRunner().invoke(app, ["rollout", "promote", "CHG-1", "--full", "--by", "ana"])
    assert result.exit_code != 0
    assert "--full needs --approver" in result.output
    assert "Traceback" not in result.output


@SQLITE
async def test_reject_at_the_start_ends_it_and_at_a_gate_rolls_back(
    workflow_env: WorkflowEnvironment, app_db: AppDb
) -> None:
    await add_customers(app_db)
    async with rollout_worker(workflow_env, app_db) as queue:
        # At the start: nothing was applied, the rollout ends as rejected.
        first_id = new_change_id()
        first = await start(workflow_env, queue, pinned(plan_document()), first_id)
        await settled(first, lambda s: s.state == "awaiting_approval")
        with pytest.raises(WorkflowUpdateFailedError) as refused:
            await first.execute_update(RolloutWorkflow.reject, Decision(approver="ana"))
        assert "owns change" in str(refused.value.cause)
        await first.execute_update(
            RolloutWorkflow.reject, Decision(approver="marco", reason="no billing changes now")
        )
        ended = await first.result()
        assert ended.state == "rejected" and ended.ended_reason is not None
        assert "rejected by marco: no billing changes now" in ended.ended_reason
        assert await exposed(app_db, first_id) == set()

        # At the gate after the pilot: the pilot is rolled back and its customers told.
        change_id = new_change_id()
        plan = pinned(
            plan_document(
                impact={"risk": "standard"},
                phases=[phase("pilot", 10, gate="approval"), phase("everyone", 100)],
            )
        )
        handle = await start(workflow_env, queue, plan, change_id)
        with pytest.raises(WorkflowUpdateFailedError):  # nothing awaits approval yet
            await handle.execute_update(RolloutWorkflow.reject, Decision(approver="marco"))
        await workflow_env.sleep(timedelta(hours=2, minutes=5))
        s = await state(handle)
        assert s.state == "awaiting_approval" and s.approval_for == "pilot"
        pilot = await exposed(app_db, change_id)
        assert pilot
        await handle.execute_update(
            RolloutWorkflow.reject, Decision(approver="marco", reason="complaints in the pilot")
        )
        result = await handle.result()
    assert result.state == "rolled_back" and result.finished
    assert result.ended_reason == "rejected by marco: complaints in the pilot"
    assert [p.reverted for p in result.phases] == [True, False]
    assert await exposed(app_db, change_id) == set()
    notices = await rollback_notices(app_db, change_id)
    assert len(notices) == len(pilot) == result.customers_notified
    steps = await ledger_steps(app_db, handle.id)
    assert "a1-command-1-reject" in steps and "a1-rollback-phase-1" in steps


@SQLITE
async def test_approval_timeout_pages_the_approvers_and_the_owner_once(
    workflow_env: WorkflowEnvironment, app_db: AppDb
) -> None:
    change_id = new_change_id()
    plan = pinned(
        plan_document(
            approvals={
                "group": "cx-change-board",
                "required": 1,
                "timeout": "4h",
                "members": ["lena", "marco"],
                "channel": "slack",
            }
        )
    )
    async with rollout_worker(workflow_env, app_db) as queue:
        handle = await start(workflow_env, queue, plan, change_id)
        s = await settled(handle, lambda s: s.state == "awaiting_approval")
        await workflow_env.sleep(timedelta(hours=3, minutes=50))
        assert await _pages(app_db, change_id) == []
        await workflow_env.sleep(timedelta(minutes=20))
        s = await settled(handle, lambda s: s.approval_paged)
        assert s.approval_paged and s.pages == 1 and s.state == "awaiting_approval"
        # A day more without an approver: nobody is paged again.
        await workflow_env.sleep(timedelta(days=1))
        s = await state(handle)
        assert s.pages == 1 and s.state == "awaiting_approval"
        pages = await _pages(app_db, change_id)
        assert Counter(pages) == {("chat", "group:cx-change-board"): 1, ("pager", "owner:ana"): 1}
        await handle.execute_update(RolloutWorkflow.approve, Decision(approver="lena"))
        s = await settled(handle, lambda s: s.state == "baking")
        assert s.state == "baking" and s.pages == 1
        await handle.terminate("test over")
    steps = await ledger_steps(app_db, handle.id)
    assert steps.count("a1-page-1") == 1
