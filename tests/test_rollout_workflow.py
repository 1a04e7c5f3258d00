"""The rollout workflow on the time-skipping server, with the real activities on the sandbox
backends (400 customers)."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest
from temporalio.client import WorkflowUpdateFailedError
from temporalio.testing import WorkflowEnvironment

from activities import search_attributes as sa
from activities.adapters.sandbox import degrade
from tests.conftest import AppDb
from tests.definition_support import pinned
from tests.escalation_support import ledger_entries, ledger_steps, skip_to
from tests.rollout_support import (
    add_customers,
    emails_of,
    ever_exposed,
    exposed,
    new_change_id,
    notes_about,
    own_members,
    phase,
    plan_document,
    revert_waves,
    rollback_notices,
    rollout_worker,
    settled,
    start,
    state,
)
from workflows.rollout import RolloutWorkflow
from workflows.rollout_model import Decision, Reason

pytestmark = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)


async def approve(handle: object, who: str = "lena") -> None:
    await handle.execute_update(RolloutWorkflow.approve, Decision(approver=who, reason="ok"))  # type: ignore[attr-defined]


async def test_four_phases_to_completion(workflow_env: WorkflowEnvironment, app_db: AppDb) -> None:
    await add_customers(app_db)
    change_id = new_change_id()
    plan = pinned(
        plan_document(
            approvals={
                "group": "cx-change-board",
                "required": 2,
                "timeout": "4h",
                "members": ["lena", "marco"],
            }
        )
    )
    async with rollout_worker(workflow_env, app_db) as queue:
        handle = await start(workflow_env, queue, plan, change_id)
        s = await settled(handle, lambda s: s.state != "assessing")
        assert s.state == "awaiting_approval" and s.approvals_needed == 2
        sizes = [p.cohort_size for p in s.phases]
        assert sizes == sorted(sizes) and sizes[-1] == 400 and 0 < sizes[0] < 60
        await approve(handle, "lena")
        assert (await state(handle)).state == "awaiting_approval"
        await approve(handle, "marco")
        s = await settled(handle, lambda s: s.state == "baking")
        assert s.state == "baking" and s.stage == "pilot"
        assert (
            await exposed(app_db, change_id) and len(await exposed(app_db, change_id)) == sizes[0]
        )
        described = await handle.describe()
        attrs = described.typed_search_attributes
        assert attrs.get(sa.OPS_KIND) == "rollout" and attrs.get(sa.OPS_OWNER) == "ana"
        assert attrs.get(sa.OPS_STATE) == "baking" and attrs.get(sa.OPS_STAGE) == "pilot"
        assert attrs.get(sa.OPS_DEFINITION) == "test-plan@1"

        await workflow_env.sleep(timedelta(hours=9))
        result = await handle.result()
    assert result.state == "completed" and result.finished
    assert [p.verdict for p in result.phases] == ["passed"] * 4
    assert [p.exposed_total for p in result.phases] == sizes
    # Two-hour bakes read every 30 minutes: four readings per check per phase.
    assert all(len(c.readings) == 4 for p in result.phases for c in p.checks)
    assert all(r.verdict == "pass" for p in result.phases for c in p.checks for r in c.readings)
    # Cumulative cohorts: everyone exposed at the end, nobody reverted.
    assert len(await exposed(app_db, change_id)) == 400
    steps = await ledger_steps(app_db, handle.id)
    # The approvers were asked (at once, concurrently with their first answer).
    assert "a1-approval-start-1" in steps
    asked = [s for s in steps if not s.startswith("a1-approval-")]
    assert asked[:2] == ["a1-impact", "a1-command-1-approve"]
    assert [s for s in steps if s.endswith("-applied")] == [
        f"a1-phase-{n}-applied" for n in (1, 2, 3, 4)
    ]
    assert steps[-1] == "a1-completed"


async def test_failing_check_rolls_back_in_reverse_and_notifies_each_customer_once(
    workflow_env: WorkflowEnvironment, app_db: AppDb
) -> None:
    await add_customers(app_db)
    change_id = new_change_id()
    plan = pinned(plan_document(impact={"risk": "standard"}))
    async with rollout_worker(workflow_env, app_db) as queue:
        handle = await start(workflow_env, queue, plan, change_id)
        # Phases pilot and ten pass (2h each); then complaints go bad during phase three.
        await workflow_env.sleep(timedelta(hours=4, minutes=10))
        s = await state(handle)
        assert s.stage == "half" and s.state == "baking"
        touched = await exposed(app_db, change_id)
        assert len(touched) == s.phases[2].exposed_total
        await degrade(app_db.sessions, "complaint_rate", change_id, 0.2)
        await workflow_env.sleep(timedelta(minutes=30))
        result = await handle.result()
    assert result.state == "rolled_back"
    assert result.ended_reason is not None and "complaint_rate failed in phase half" in (
        result.ended_reason
    )
    assert [p.reverted for p in result.phases] == [True, True, True, False]
    assert await exposed(app_db, change_id) == set()
    assert result.customers_reverted == len(touched)
    # Phase by phase: the first revert undid only phase three's own customers, then two's,
    # then one's (one reverted_at per revert call, in that order).
    pilot, ten, half = own_members(change_id, touched, [5, 10, 50])
    assert await revert_waves(app_db, change_id) == [half, ten, pilot]
    assert pilot and ten and half
    entries = await ledger_entries(app_db, handle.id)
    reverted = [e.detail["reverted"] for e in entries if e.step.startswith("a1-rollback-phase")]
    assert reverted == [len(half), len(ten), len(pilot)]
    # Every exposed customer told once, nobody else.
    notices = await rollback_notices(app_db, change_id)
    assert Counter(notices).most_common(1)[0][1] == 1
    assert set(notices) == await emails_of(app_db, touched)
    assert result.customers_notified == len(touched)
    assert sum(p.notified for p in result.phases) == len(touched)
    notes = await notes_about(app_db, change_id)
    assert sorted(customer for customer, _ in notes) == sorted(touched)
    assert any(f"Exposed to {change_id} in pilot" in body for _, body in notes)
    steps = await ledger_steps(app_db, handle.id)
    assert [s for s in steps if s.startswith("a1-rollback-phase")] == [
        "a1-rollback-phase-3",
        "a1-rollback-phase-2",
        "a1-rollback-phase-1",
    ]


async def test_inconclusive_holds_then_promote(
    workflow_env: WorkflowEnvironment, app_db: AppDb
) -> None:
    await add_customers(app_db)
    change_id = new_change_id()
    plan = pinned(
        plan_document(
            impact={"risk": "standard"},
            analysis={"interval": "30m", "min_samples": 1_000_000},
            phases=[phase("pilot", 10), phase("everyone", 100, checks=[])],
        )
    )
    async with rollout_worker(workflow_env, app_db) as queue:
        handle = await start(workflow_env, queue, plan, change_id)
        await workflow_env.sleep(timedelta(hours=3))
        s = await state(handle)
        assert s.state == "held" and s.hold_reason and "inconclusive" in s.hold_reason
        assert all(r.verdict == "inconclusive" for c in s.phases[0].checks for r in c.readings)
        described = await handle.describe()
        assert described.typed_search_attributes.get(sa.OPS_STATE) == "held"
        # Held for a day: nothing moves on by itself.
        await workflow_env.sleep(timedelta(days=1))
        assert (await state(handle)).state == "held"
        await handle.execute_update(RolloutWorkflow.promote)
        await workflow_env.sleep(timedelta(hours=3))
        result = await handle.result()
    assert result.state == "completed"
    assert [p.verdict for p in result.phases] == ["promoted", "passed"]
    steps = await ledger_steps(app_db, handle.id)
    assert any(step.startswith("a1-page-") for step in steps)


async def test_unknown_approver_and_owner_are_refused(
    workflow_env: WorkflowEnvironment, app_db: AppDb
) -> None:
    change_id = new_change_id()
    plan = pinned(plan_document())
    async with rollout_worker(workflow_env, app_db) as queue:
        handle = await start(workflow_env, queue, plan, change_id, owner="lena")
        before = await settled(handle, lambda s: s.state == "awaiting_approval")
        with pytest.raises(WorkflowUpdateFailedError) as unknown:
            await approve(handle, "mallory")
        assert "not in the approvers' group cx-change-board" in str(unknown.value.cause)
        with pytest.raises(WorkflowUpdateFailedError) as owner:
            await approve(handle, "lena")
        assert "owns change" in str(owner.value.cause)
        with pytest.raises(WorkflowUpdateFailedError):
            await handle.execute_update(RolloutWorkflow.promote)
        after = await state(handle)
        assert after == before and after.approvals == []
        await approve(handle, "marco")
        assert (await settled(handle, lambda s: s.state == "baking")).state == "baking"
        await handle.terminate("test over")


async def test_blackout_delays_a_phase(workflow_env: WorkflowEnvironment, app_db: AppDb) -> None:
    await add_customers(app_db)
    change_id = new_change_id()
    now = await workflow_env.get_current_time()
    # Start at 00:30 (UTC, the plan's windows are 24x7 UTC): the pilot bakes until 02:30;
    # the next two days are blacked out, so phase two waits for the third day.
    day = now.date() + timedelta(days=1)
    midnight = datetime(day.year, day.month, day.day, tzinfo=UTC)
    await skip_to(workflow_env, midnight + timedelta(minutes=30))
    blackout = {
        "start": (day + timedelta(days=1)).isoformat(),
        "end": (day + timedelta(days=2)).isoformat(),
        "reason": "Year-end billing run",
    }
    plan = pinned(
        plan_document(
            impact={"risk": "standard"},
            blackouts=[blackout],
            phases=[phase("pilot", 10, bake="1d"), phase("everyone", 100)],
        )
    )
    async with rollout_worker(workflow_env, app_db) as queue:
        handle = await start(workflow_env, queue, plan, change_id)
        await settled(handle, lambda s: s.state == "baking")
        reopens = midnight + timedelta(days=3)
        await skip_to(workflow_env, midnight + timedelta(days=1, hours=12))
        s = await settled(handle, lambda s: s.state == "waiting_window")
        assert s.state == "waiting_window" and s.stage == "everyone"
        assert s.next_window == reopens
        assert s.phases[1].applied_at is None
        await skip_to(workflow_env, reopens + timedelta(minutes=5))
        s = await settled(handle, lambda s: s.state == "baking")
        assert s.phases[1].applied_at is not None and s.phases[1].applied_at >= reopens
        await workflow_env.sleep(timedelta(hours=3))
        assert (await handle.result()).state == "completed"


async def test_pause_during_bake_trips_no_deadline(
    workflow_env: WorkflowEnvironment, app_db: AppDb
) -> None:
    await add_customers(app_db)
    change_id = new_change_id()
    plan = pinned(
        plan_document(
            impact={"risk": "standard"},
            deadline="5h",
            phases=[phase("pilot", 10), phase("everyone", 100)],
        )
    )
    async with rollout_worker(workflow_env, app_db) as queue:
        handle = await start(workflow_env, queue, plan, change_id)
        await workflow_env.sleep(timedelta(hours=1))
        await handle.execute_update(RolloutWorkflow.pause, Reason(reason="billing run"))
        s = await state(handle)
        assert s.paused and s.state == "baking"
        readings = s.phases[0].readings_taken
        assert (await handle.describe()).typed_search_attributes.get(sa.OPS_STATE) == "held"
        # Paused for two days: far past the 5h deadline, but paused time does not count.
        await workflow_env.sleep(timedelta(days=2))
        s = await state(handle)
        assert s.paused and s.rollback_reason is None
        assert s.phases[0].readings_taken == readings  # the bake stood still too
        await handle.execute_update(RolloutWorkflow.resume)
        await workflow_env.sleep(timedelta(hours=4))
        result = await handle.result()
    assert result.state == "completed"
    assert result.active.spent_before < timedelta(hours=5)


async def test_abort_then_retry_keeps_the_cohorts(
    workflow_env: WorkflowEnvironment, app_db: AppDb
) -> None:
    await add_customers(app_db)
    change_id = new_change_id()
    plan = pinned(plan_document(impact={"risk": "standard"}))
    async with rollout_worker(workflow_env, app_db) as queue:
        handle = await start(workflow_env, queue, plan, change_id)
        await workflow_env.sleep(timedelta(hours=2, minutes=40))
        first = await exposed(app_db, change_id)
        assert (await state(handle)).stage == "ten"
        await handle.execute_update(RolloutWorkflow.abort, Reason(reason="wrong copy"))
        await workflow_env.sleep(timedelta(minutes=1))
        s = await state(handle)
        assert s.state == "rolled_back" and not s.finished
        assert await exposed(app_db, change_id) == set()
        with pytest.raises(WorkflowUpdateFailedError):
            await handle.execute_update(RolloutWorkflow.abort, Reason(reason="again"))
        await handle.execute_update(RolloutWorkflow.retry)
        await workflow_env.sleep(timedelta(hours=2, minutes=40))
        s = await state(handle)
        assert s.attempt == 2 and s.stage == "ten"
        assert await exposed(app_db, change_id) == first
        await workflow_env.sleep(timedelta(hours=5))
        result = await handle.result()
    assert result.state == "completed"
    assert await ever_exposed(app_db, change_id) == await exposed(app_db, change_id)


async def test_irreversible_phase_freezes(workflow_env: WorkflowEnvironment, app_db: AppDb) -> None:
    await add_customers(app_db)
    change_id = new_change_id()
    plan = pinned(
        plan_document(
            impact={"risk": "standard"},
            phases=[phase("pilot", 10, irreversible=True), phase("everyone", 100)],
        )
    )
    async with rollout_worker(workflow_env, app_db) as queue:
        handle = await start(workflow_env, queue, plan, change_id)
        await workflow_env.sleep(timedelta(minutes=10))
        pilot = await exposed(app_db, change_id)
        await degrade(app_db.sessions, "csat", change_id, 2.0)
        await workflow_env.sleep(timedelta(minutes=30))
        s = await state(handle)
        assert s.state == "frozen" and s.frozen_reason and "irreversible" in s.frozen_reason
        assert await exposed(app_db, change_id) == pilot
        assert await rollback_notices(app_db, change_id) == []
        await handle.execute_update(RolloutWorkflow.abort, Reason(reason="accept as is"))
        result = await handle.result()
    assert result.state == "frozen" and result.ended_reason
    assert "accepted" in result.ended_reason
    assert await exposed(app_db, change_id) == pilot
