"""A rollback survives its notifier's crashes (issue 13): two `opsflow worker` processes on one
task queue on the dev server; the worker sending the rollback notices is killed (SIGKILL)
twice mid-notification; the rollback still completes, every exposed customer reverted and
notified exactly once."""

from __future__ import annotations

import asyncio
import os
import signal
from collections import Counter

import pytest
from sqlalchemy import func, select
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment

from client.rollouts import command_rollout, pending_activities, start_rollout
from store.models import SandboxFlagExposure, SandboxNotification
from tests.conftest import AppDb
from tests.definition_support import pinned
from tests.rollout_support import add_customers, new_change_id, phase, plan_document
from tests.test_rollout_devserver import Workers, _until, workers  # noqa: F401 (fixture)
from workflows.rollout_model import ChangeRequest, Reason

pytestmark = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)

CUSTOMERS = 1_500
NOTIFY = "rollout.notify_phase_customers"


async def _notices(db: AppDb, change_id: str) -> int:
    async with db.sessions() as session:
        count = await session.scalar(
            select(func.count()).where(
                SandboxNotification.template == "change-rolled-back",
                SandboxNotification.idempotency_key.like(f"rollout-{change_id}/%"),
            )
        )
    return int(count or 0)


async def _kill_notifier(
    client: Client, db: AppDb, pool: Workers, change_id: str, *, after: int, attempt: int
) -> int:
    """SIGKILL the worker running the notify activity once its `attempt` has sent more than
    `after` notices; returns how many were sent then."""
    pids = {process.pid: process for process in pool.started if process.poll() is None}
    deadline = asyncio.get_running_loop().time() + 60
    while asyncio.get_running_loop().time() < deadline:
        sent = await _notices(db, change_id)
        described = await client.get_workflow_handle(f"rollout-{change_id}").describe()
        for info in described.raw_description.pending_activities:
            pid = int(info.last_worker_identity.split("@")[0] or 0)
            running = info.activity_type.name == NOTIFY and info.attempt == attempt
            if running and pid in pids and after < sent < CUSTOMERS * 0.9:
                os.kill(pid, signal.SIGKILL)
                pids[pid].wait(30)
                return sent
        await asyncio.sleep(0.2)
    raise AssertionError(f"attempt {attempt} of the notices never got past {after} in time")


async def test_rollback_completes_once_when_its_notifier_is_killed_twice(
    dev_env: WorkflowEnvironment,
    app_db: AppDb,
    workers: Workers,  # noqa: F811
) -> None:
    await add_customers(app_db, CUSTOMERS)
    client = dev_env.client
    change_id = new_change_id()
    plan = pinned(
        plan_document(
            impact={"risk": "standard"},
            phases=[phase("everyone", 100, bake="1h", checks=[])],
            rollback={"notify": {"channel": "email", "template": "change-rolled-back"}},
        )
    )
    workers.start()
    workers.start()
    await start_rollout(
        client, workers.queue, ChangeRequest(change_id=change_id, owner="ana", reason="t"), plan
    )
    await _until(client, change_id, lambda s: s.state == "baking", 60)
    await command_rollout(client, change_id, "abort", Reason(reason="wrong copy"))

    first = await _kill_notifier(client, app_db, workers, change_id, after=0, attempt=1)
    workers.start()
    # Once the killed attempt's heartbeat times out, `rollout status` shows it retrying.
    deadline = asyncio.get_running_loop().time() + 60
    while not any(
        p.activity == NOTIFY and p.attempt == 2 and "eartbeat" in (p.last_failure or "")
        for p in await pending_activities(client, change_id)
    ):
        assert asyncio.get_running_loop().time() < deadline, "the retry never showed"
        await asyncio.sleep(0.2)
    second = await _kill_notifier(client, app_db, workers, change_id, after=first, attempt=2)
    workers.start()

    done = await _until(client, change_id, lambda s: s.state == "rolled_back", 80)
    assert first < second < CUSTOMERS
    assert done.customers_notified == CUSTOMERS and done.customers_reverted == CUSTOMERS
    assert not await pending_activities(client, change_id)

    async with app_db.sessions() as session:
        live = await session.scalar(
            select(func.count()).where(
                SandboxFlagExposure.change_id == change_id,
                SandboxFlagExposure.reverted_at.is_(None),
            )
        )
        recipients = Counter(
            (
                await session.scalars(
                    select(SandboxNotification.recipient).where(
                        SandboxNotification.template == "change-rolled-back",
                        SandboxNotification.idempotency_key.like(f"rollout-{change_id}/%"),
                    )
                )
            ).all()
        )
    assert live == 0
    assert len(recipients) == CUSTOMERS and set(recipients.values()) == {1}
