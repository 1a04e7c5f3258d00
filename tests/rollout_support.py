"""Shared set-up for rollout tests: plans, a worker with the real activities on the sandbox
backends (with a few hundred customers), and sandbox queries."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from sqlalchemy import func, select
from temporalio.client import WorkflowHandle
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from activities.cohorts import place
from activities.deps import ActivityDeps
from definitions.models import PinnedDefinition
from store.models import (
    SandboxCrmNote,
    SandboxCustomer,
    SandboxFlagExposure,
    SandboxNotification,
)
from store.seed import customers
from tests.conftest import AppDb
from tests.helpers import assert_eventually
from worker.assembly import activity_functions
from workflows.rollout import RolloutWorkflow
from workflows.rollout_model import ChangeRequest, RolloutStatus, rollout_workflow_id
from workflows.rollout_pinned import RolloutInput
from workflows.sandbox import WORKFLOW_RUNNER

CUSTOMERS = 400
FLAG = "new-billing-flow"


def phase(name: str, percent: float, **extra: Any) -> dict[str, Any]:
    checks = extra.pop(
        "checks",
        [
            {"metric": "complaint_rate", "max": 0.05, "window": "4h"},
            {"metric": "csat", "min": 3.0, "window": "4h"},
        ],
    )
    bake = extra.pop("bake", "2h")
    return {"name": name, "cohort": {"percent": percent}, "bake": bake, "checks": checks, **extra}


def plan_document(**spec_overrides: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "change": {"key": FLAG, "value": "on"},
        "impact": {"risk": "normal", "journeys": ["billing"]},
        "approvals": {
            "group": "cx-change-board",
            "required": 1,
            "timeout": "4h",
            "members": ["lena", "marco", "owen"],
        },
        "windows": "24x7",
        "analysis": {"interval": "30m", "failure_limit": 0, "min_samples": 5},
        "phases": [
            phase("pilot", 5),
            phase("ten", 10),
            phase("half", 50),
            phase("everyone", 100),
        ],
        "rollback": {
            "notify": {"channel": "email", "template": "change-rolled-back"},
            "recovery": [
                {
                    "when": "customer.lifetime_value >= 60000.0",
                    "actions": [{"type": "create_ticket", "queue": "vip", "subject": "Check in"}],
                },
                {
                    "actions": [
                        {
                            "type": "crm_note",
                            "text": "Exposed to {{ change.id }} in {{ phase.name }}; rolled back.",
                        }
                    ]
                },
            ],
        },
        "deadline": "30d",
    }
    spec.update(spec_overrides)
    return {
        "apiVersion": "opsflow/v1",
        "kind": "rollout",
        "metadata": {"name": "test-plan", "owner": "billing-operations"},
        "spec": spec,
    }


def new_change_id() -> str:
    return f"CHG-{uuid.uuid4().hex[:8]}"


def change(change_id: str, owner: str = "ana") -> ChangeRequest:
    return ChangeRequest(change_id=change_id, owner=owner, reason="New dispute process")


async def add_customers(db: AppDb, count: int = CUSTOMERS) -> None:
    """The seed's 60 customers and more of the same kind, so cohorts have samples."""
    async with db.sessions() as session, session.begin():
        have = await session.scalar(select(func.count()).select_from(SandboxCustomer)) or 0
        session.add_all(customers(count)[have:])


@asynccontextmanager
async def rollout_worker(env: WorkflowEnvironment, db: AppDb) -> AsyncIterator[str]:
    queue = f"rollout-{uuid.uuid4()}"
    async with Worker(
        env.client,
        task_queue=queue,
        workflows=[RolloutWorkflow],
        workflow_runner=WORKFLOW_RUNNER,
        activities=activity_functions(ActivityDeps(sessions=db.sessions)),
    ):
        yield queue


async def start(
    env: WorkflowEnvironment, queue: str, plan: PinnedDefinition, change_id: str, owner: str = "ana"
) -> WorkflowHandle[RolloutWorkflow, RolloutStatus]:
    return await env.client.start_workflow(
        RolloutWorkflow.run,
        RolloutInput(change=change(change_id, owner), plan=plan),
        id=rollout_workflow_id(change_id),
        task_queue=queue,
    )


async def state(handle: WorkflowHandle[RolloutWorkflow, RolloutStatus]) -> RolloutStatus:
    return await handle.query(RolloutWorkflow.state)


async def exposed(db: AppDb, change_id: str) -> set[str]:
    async with db.sessions() as session:
        rows = await session.scalars(
            select(SandboxFlagExposure.customer_id).where(
                SandboxFlagExposure.change_id == change_id,
                SandboxFlagExposure.reverted_at.is_(None),
            )
        )
        return set(rows)


async def ever_exposed(db: AppDb, change_id: str) -> set[str]:
    async with db.sessions() as session:
        rows = await session.scalars(
            select(SandboxFlagExposure.customer_id).where(
                SandboxFlagExposure.change_id == change_id
            )
        )
        return set(rows)


async def rollback_notices(db: AppDb, change_id: str) -> list[str]:
    """Recipients of the change's rollback notices (email addresses), one per message."""
    async with db.sessions() as session:
        rows = await session.scalars(
            select(SandboxNotification.recipient).where(
                SandboxNotification.template == "change-rolled-back",
                SandboxNotification.idempotency_key.like(f"rollout-{change_id}/%"),
            )
        )
        return list(rows)


async def notes_about(db: AppDb, change_id: str) -> list[tuple[str, str]]:
    async with db.sessions() as session:
        rows = await session.execute(
            select(SandboxCrmNote.customer_id, SandboxCrmNote.body).where(
                SandboxCrmNote.body.like(f"%{change_id}%")
            )
        )
        return [(row[0], row[1]) for row in rows]


async def emails_of(db: AppDb, ids: set[str]) -> set[str]:
    async with db.sessions() as session:
        rows = await session.scalars(
            select(SandboxCustomer.email).where(SandboxCustomer.id.in_(ids))
        )
        return {email for email in rows if email}


async def settled(
    handle: WorkflowHandle[RolloutWorkflow, RolloutStatus],
    predicate: Callable[[RolloutStatus], bool],
    *,
    seconds: float = 30.0,
) -> RolloutStatus:
    """The rollout's state once `predicate` holds (activities take real time to finish);
    fails if it does not hold within `seconds`."""
    return await assert_eventually(
        lambda: state(handle), predicate, f"{handle.id} reaching the expected state", within=seconds
    )


async def revert_waves(db: AppDb, change_id: str) -> list[set[str]]:
    """The change's reverted customers grouped by their `reverted_at`, earliest wave first:
    one wave per `changes.revert` call."""
    async with db.sessions() as session:
        rows = await session.execute(
            select(SandboxFlagExposure.reverted_at, SandboxFlagExposure.customer_id)
            .where(
                SandboxFlagExposure.change_id == change_id,
                SandboxFlagExposure.reverted_at.is_not(None),
            )
            .order_by(SandboxFlagExposure.reverted_at)
        )
        waves: dict[Any, set[str]] = {}
        for at, customer_id in rows:
            waves.setdefault(at, set()).add(customer_id)
        return list(waves.values())


def own_members(change_id: str, members: set[str], percents: list[float]) -> list[set[str]]:
    """Each phase's own customers among `members`: in its percent, not in an earlier one."""
    own: list[set[str]] = []
    taken: set[str] = set()
    for percent in percents:
        inside = {c for c in members if place(c, change_id) < percent} - taken
        own.append(inside)
        taken |= inside
    return own
