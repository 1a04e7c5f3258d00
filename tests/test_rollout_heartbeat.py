"""The rollback notices' heartbeat details: typed, read back defensively, never overwritten by
the nested cohort scan, and a resumed attempt continues after the last recorded customer."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
from sqlalchemy import func, select
from temporalio.testing import ActivityEnvironment

from activities.deps import ActivityDeps
from activities.models import CohortSpec
from activities.rollback_notify import NotifyProgress, RollbackNotifyActivities
from activities.rollout_contracts import CustomerNoticeRequest, NotifyPhaseCustomers
from store.models import SandboxNotification
from tests.conftest import AppDb
from tests.rollout_support import add_customers

SQLITE = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)


def _request(change_id: str) -> NotifyPhaseCustomers:
    return NotifyPhaseCustomers(
        idempotency_key=f"rollout-{change_id}/a1/rollback/phase-1/customers",
        change_id=change_id,
        phase="pilot",
        # A condition makes the sandbox CRM scan heartbeat from inside the activity.
        cohort=CohortSpec(seed=change_id, percent=50, condition='customer.segment != "x"'),
        notice=CustomerNoticeRequest(template="change-rolled-back"),
        context={"change": {"id": change_id}, "phase": {"name": "pilot", "percent": 50}},
    )


def _env(details: list[Any], beats: list[Any]) -> ActivityEnvironment:
    env = ActivityEnvironment()
    env.info = dataclasses.replace(env.info, heartbeat_details=details, attempt=2)
    env.on_heartbeat = lambda *args: beats.append(args)
    return env


async def _notices(db: AppDb, change_id: str) -> int:
    async with db.sessions() as session:
        count = await session.scalar(
            select(func.count()).where(SandboxNotification.idempotency_key.like(f"%{change_id}%"))
        )
    return int(count or 0)


@SQLITE
@pytest.mark.parametrize(
    "stale", [["cohort scan at 120 members"], [[40, 40, 0, 0]], [{"kind": "other/1"}], [None]]
)
async def test_unreadable_details_start_from_the_first_customer(
    app_db: AppDb, stale: list[Any]
) -> None:
    await add_customers(app_db, 120)
    change_id = "CHG-hb1"
    beats: list[Any] = []
    activities = RollbackNotifyActivities(ActivityDeps(sessions=app_db.sessions))
    done = await _env(stale, beats).run(activities.notify_phase_customers, _request(change_id))
    assert done.customers > 20 and done.notified == done.customers
    assert await _notices(app_db, change_id) == done.customers
    # Every heartbeat, the cohort scan's included, carried the typed progress.
    assert beats and all(len(beat) == 1 for beat in beats)
    progress = [NotifyProgress.model_validate(beat[0]) for beat in beats]
    assert progress[-1].customers == done.customers and progress[-1].after is not None


@SQLITE
async def test_a_resumed_attempt_continues_after_the_last_recorded_customer(
    app_db: AppDb,
) -> None:
    await add_customers(app_db, 120)
    change_id = "CHG-hb2"
    activities = RollbackNotifyActivities(ActivityDeps(sessions=app_db.sessions))
    beats: list[Any] = []
    whole = await _env([], beats).run(activities.notify_phase_customers, _request(change_id))
    # The crashed attempt had recorded 10 customers: a new change id, so nothing is replayed
    # from the outbox, and only the customers after the 10th are notified now.
    recorded = [NotifyProgress.model_validate(beat[0]) for beat in beats]
    tenth = next(p for p in recorded if p.customers == 10)
    again = "CHG-hb3"
    resumed = await _env([tenth.model_dump(mode="json")], []).run(
        activities.notify_phase_customers,
        _request(again).model_copy(update={"cohort": _request(change_id).cohort}),
    )
    assert resumed.customers == whole.customers and resumed.notified == whole.notified
    assert await _notices(app_db, again) == whole.customers - 10
