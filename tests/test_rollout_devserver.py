"""A rollout on the dev server with `opsflow worker` processes: the worker is killed (SIGKILL)
mid-bake, another starts, and the rollout finishes with no duplicate effect."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import func, select
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment

from client.rollouts import rollout_state, start_rollout
from store.models import SandboxFlagExposure, SandboxNotification
from tests.conftest import AppDb
from tests.definition_support import pinned
from tests.devstack_support import OPSFLOW
from tests.escalation_support import ledger_steps
from tests.rollout_support import add_customers, new_change_id, phase, plan_document
from workflows.rollout_model import ChangeRequest, RolloutStatus

pytestmark = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)


class Workers:
    """`opsflow worker` processes on one task queue; all killed when the test ends."""

    def __init__(self, client: Client, db: AppDb, folder: Path) -> None:
        self.queue = f"rollout-dev-{uuid.uuid4().hex[:8]}"
        self.env = {
            **os.environ,
            "OPSFLOW_TEMPORAL_ADDRESS": client.service_client.config.target_host,
            "OPSFLOW_DATABASE_URL": db.url.render_as_string(hide_password=False),
            "OPSFLOW_TASK_QUEUE": self.queue,
            "OPSFLOW_DATA_DIR": str(folder),
            "OPSFLOW_LOG_LEVEL": "warning",
        }
        self.started: list[subprocess.Popen[bytes]] = []

    def start(self) -> subprocess.Popen[bytes]:
        process = subprocess.Popen(
            [OPSFLOW, "worker"], env=self.env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL
        )
        self.started.append(process)
        return process

    def close(self) -> None:
        for process in self.started:
            if process.poll() is None:
                process.kill()
                process.wait(30)


@pytest.fixture
def workers(dev_env: WorkflowEnvironment, app_db: AppDb, tmp_path: Path) -> Iterator[Workers]:
    pool = Workers(dev_env.client, app_db, tmp_path)
    yield pool
    pool.close()


async def _until(client: Client, change_id: str, ok: object, seconds: float) -> RolloutStatus:
    deadline = asyncio.get_running_loop().time() + seconds
    while True:
        try:
            status = await rollout_state(client, change_id)
            if ok(status):  # type: ignore[operator]
                return status
        except Exception:
            pass
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"rollout of {change_id} never got there")
        await asyncio.sleep(0.2)


async def test_worker_killed_mid_bake_restarts_and_completes_once(
    dev_env: WorkflowEnvironment, app_db: AppDb, workers: Workers
) -> None:
    await add_customers(app_db)
    client = dev_env.client
    change_id = new_change_id()
    checks = [{"metric": "csat", "min": 3.0, "window": "1h"}]
    plan = pinned(
        plan_document(
            impact={"risk": "standard"},
            analysis={"interval": "2s", "failure_limit": 0, "min_samples": 5},
            phases=[
                phase("pilot", 10, bake="8s", checks=checks),
                phase("everyone", 100, bake="2s", checks=checks),
            ],
        )
    )
    first = workers.start()
    started = await start_rollout(
        client, workers.queue, ChangeRequest(change_id=change_id, owner="ana", reason="t"), plan
    )
    baking = await _until(
        client, change_id, lambda s: s.state == "baking" and s.phases[0].readings_taken >= 1, 30
    )
    assert baking.stage == "pilot"
    first.send_signal(signal.SIGKILL)
    first.wait(30)
    await asyncio.sleep(1)
    workers.start()
    result = await asyncio.wait_for(started.handle.result(), 90)
    assert result.state == "completed"
    assert [p.verdict for p in result.phases] == ["passed", "passed"]
    assert result.phases[0].readings_taken == 4  # no reading lost, none taken twice

    async with app_db.sessions() as session:
        per_customer = Counter(
            (
                await session.scalars(
                    select(SandboxFlagExposure.customer_id).where(
                        SandboxFlagExposure.change_id == change_id
                    )
                )
            ).all()
        )
        reverted = await session.scalar(
            select(func.count()).where(
                SandboxFlagExposure.change_id == change_id,
                SandboxFlagExposure.reverted_at.is_not(None),
            )
        )
        notices = Counter(
            (
                await session.scalars(
                    select(SandboxNotification.recipient).where(
                        SandboxNotification.idempotency_key.like(f"rollout-{change_id}/%")
                    )
                )
            ).all()
        )
    assert len(per_customer) == 400 and set(per_customer.values()) == {1}
    assert reverted == 0
    assert all(count == 1 for count in notices.values())
    steps = await ledger_steps(app_db, started.handle.id)
    assert len(steps) == len(set(steps))
    assert [s for s in steps if s.endswith("-applied")] == [
        "a1-phase-1-applied",
        "a1-phase-2-applied",
    ]
    assert steps[-1] == "a1-completed"
