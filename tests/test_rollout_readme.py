"""The README's rollout, end to end on the time-skipping server: the shipped catalog plan on the
seeded sandbox (its 60 customers, nothing added), the real activities, the client functions
the command line uses. Started on a Saturday night, approved by two of the change board, a
CSAT degrade rolls it back within minutes."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from temporalio.api.operatorservice.v1 import AddSearchAttributesRequest
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

from activities.adapters.sandbox import degrade
from activities.search_attributes import ALL as SEARCH_ATTRIBUTES
from client.rollouts import command_rollout, rollout_state, start_rollout
from definitions.models import PinnedDefinition
from store.registry import CATALOG_DIR, deploy_folder, latest
from tests.conftest import AppDb
from tests.escalation_support import ledger_steps
from tests.rollout_support import exposed, rollback_notices, rollout_worker, settled
from worker.binaries import temporal_test_server
from worker.cli_rollout import approval_outcome, status_line
from workflows.rollout_model import ChangeRequest, Decision

pytestmark = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)

BERLIN = ZoneInfo("Europe/Berlin")


@pytest.fixture
async def workflow_env() -> AsyncIterator[WorkflowEnvironment]:
    """A time-skipping server of this test's own: it moves the clock to a Saturday night,
    which the session-wide server's other tests must not see."""
    env = await WorkflowEnvironment.start_time_skipping(
        test_server_existing_path=str(temporal_test_server()),
        data_converter=pydantic_data_converter,
    )
    async with env:
        await env.client.operator_service.add_search_attributes(
            AddSearchAttributesRequest(
                namespace=env.client.namespace,
                search_attributes={
                    key.name: int(key.indexed_value_type) for key in SEARCH_ATTRIBUTES
                },  # type: ignore[misc]
            )
        )
        yield env


async def _catalog_plan(db: AppDb) -> PinnedDefinition:
    await deploy_folder(db.sessions, CATALOG_DIR, deployed_by="test")
    return await latest(db.sessions, "new-billing-flow")


def _saturday_night(now: datetime, plan: PinnedDefinition) -> datetime:
    """The next Saturday 03:00 in Berlin (outside every window) that is not blacked out."""
    blackouts = {day for b in plan.rollout.blackouts for day in b.days()}
    local = now.astimezone(BERLIN)
    day = local.date() + timedelta(days=(5 - local.weekday()) % 7 or 7)
    while day in blackouts or day - timedelta(days=1) in blackouts:
        day += timedelta(days=7)
    return datetime(day.year, day.month, day.day, 3, 0, tzinfo=BERLIN).astimezone(UTC)


async def _skip_to(env: WorkflowEnvironment, moment: datetime) -> None:
    now = await env.get_current_time()
    if moment > now:
        await env.sleep(moment - now)


async def test_readme_rollout_rolls_back_after_a_csat_degrade(
    workflow_env: WorkflowEnvironment, app_db: AppDb
) -> None:
    plan = await _catalog_plan(app_db)
    client = workflow_env.client
    await _skip_to(workflow_env, _saturday_night(await workflow_env.get_current_time(), plan))
    readme = ChangeRequest(
        change_id="CHG-7", owner="maria", reason="Faster disputes", outside_windows=True
    )
    held_back = ChangeRequest(change_id="CHG-7-windows", owner="maria", reason="Faster disputes")
    async with rollout_worker(workflow_env, app_db) as queue:
        started = await start_rollout(client, queue, readme, plan)
        handle = started.handle
        s = await settled(handle, lambda s: s.state != "assessing")
        assert s.state == "awaiting_approval" and s.approvals_needed == 2
        assert s.phases[0].cohort_size > 0, "the pilot must reach seeded customers"

        # Starting again names the running run's plan and what it did not take.
        again = await start_rollout(
            client, queue, readme.model_copy(update={"owner": "someone-else"}), plan
        )
        assert not again.started and again.plan == plan.ref
        assert again.not_applied(readme.model_copy(update={"owner": "someone-else"})) == ["owner"]

        first = await command_rollout(
            client, "CHG-7", "approve", Decision(approver="lena.vogel", reason="ok")
        )
        line = await approval_outcome(client, "CHG-7", first, 2, "Europe/Berlin", wait=0)
        assert line == "approved the start (1 of 2); 1 more needed"
        second = await command_rollout(
            client, "CHG-7", "approve", Decision(approver="marco.rossi", reason="ok")
        )
        line = await approval_outcome(client, "CHG-7", second, 2, "Europe/Berlin", wait=15)
        assert line.startswith("approved the start (2 of 2); rollout of CHG-7: ")
        assert "awaiting_approval" not in line

        s = await settled(handle, lambda s: s.state == "baking")
        assert s.state == "baking" and s.stage == "pilot"
        baking = status_line(s, "Europe/Berlin")
        assert "bake left, ends" in baking and "Europe/Berlin" in baking, baking
        pilot = await exposed(app_db, "CHG-7")
        assert len(pilot) == s.phases[0].exposed_total and pilot

        # Healthy readings are conclusive: enough survey responses from a pilot of accounts.
        await workflow_env.sleep(timedelta(minutes=5))
        s = await rollout_state(client, "CHG-7")
        assert s.state == "baking"
        readings = [r for c in s.phases[0].checks for r in c.readings]
        assert readings and all(r.verdict == "pass" for r in readings), readings
        assert all(r.sample_size >= plan.rollout.analysis.min_samples for r in readings)

        await degrade(app_db.sessions, "csat", "CHG-7", 2.1)
        degraded_at = await workflow_env.get_current_time()
        await workflow_env.sleep(timedelta(minutes=5))
        result = await handle.result()

        # Without --outside-windows the same plan waits for the next window (Mon-Thu 09:00).
        waiting = await start_rollout(client, queue, held_back, plan)
        await settled(waiting.handle, lambda s: s.state == "awaiting_approval")
        for approver in ("lena.vogel", "marco.rossi"):
            await command_rollout(
                client, held_back.change_id, "approve", Decision(approver=approver)
            )
        w = await settled(waiting.handle, lambda s: s.state == "waiting_window")
        assert w.state == "waiting_window" and w.next_window is not None
        opens = w.next_window.astimezone(BERLIN)
        assert opens.weekday() in (0, 1, 2, 3) and (opens.hour, opens.minute) == (9, 0)
        text = status_line(w, "Europe/Berlin")
        assert f"the next change window opens {opens:%a %d %b} 09:00 Europe/Berlin" in text, text
        await waiting.handle.terminate("test over")

    assert result.state == "rolled_back", result.ended_reason
    assert result.ended_reason is not None
    assert "check csat failed in phase pilot" in result.ended_reason
    assert result.rolled_back_at is not None
    assert result.rolled_back_at - degraded_at <= timedelta(minutes=5)
    assert await exposed(app_db, "CHG-7") == set()
    assert len(await rollback_notices(app_db, "CHG-7")) == len(pilot)
    steps = await ledger_steps(app_db, handle.id)
    assert "a1-rolled-back" in steps
