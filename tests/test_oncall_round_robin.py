"""The escalation workflow's side of issue 20's on-call levels, on the time-skipping server with
the real activities on the sandbox backends: a `round_robin: true` level sends each case's
notification to the next of its targets in turn (one page, not one per target; a retried
activity keeps its pick), and a level's notification to `oncall:<schedule>` goes to whoever was
on call when the level fell due, even when its activity runs after the rotation moved on (the
app database was out across the handoff)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from sqlalchemy import make_url, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio.api.enums.v1 import EventType
from temporalio.client import WorkflowHandle
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from activities.backends import Backends
from activities.deps import ActivityDeps
from store.db import create_engine, session_factory
from store.models import RoundRobinCounter, RoundRobinPick, SandboxNotification
from store.registry import deploy_folder
from tests.conftest import AppDb
from tests.definition_support import pinned
from tests.escalation_support import (
    FakePagerDuty,
    add_ticket,
    case,
    escalation_worker,
    eventually,
    keep_history,
    new_ticket_id,
    policy_document,
    settled,
    skip_to,
)
from worker.assembly import activity_functions
from workflows.escalation import (
    EscalationInput,
    EscalationWorkflow,
    Resolve,
    case_workflow_id,
)
from workflows.sandbox import WORKFLOW_RUNNER

pytestmark = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)

TARGETS = ["agent:ana", "agent:bernd", "agent:carla"]
CASES = 10
RETRIED_CASE = 3  # its page meets PagerDuty down and is retried
# Nothing listens on the discard port: every connection is refused at once.
UNREACHABLE_DATABASE = make_url("postgresql://postgres@127.0.0.1:9/opsflow")


def _level(after: str, to: list[str], *, round_robin: bool = False) -> dict[str, Any]:
    level: dict[str, Any] = {
        "after": after,
        "actions": [{"type": "notify", "channel": "pager", "to": to, "template": "case-escalated"}],
    }
    if round_robin:
        level["round_robin"] = True
    return level


def _policy(levels: list[dict[str, Any]]) -> dict[str, Any]:
    """P1 only, no warnings, first response long after the levels: only the levels act."""
    return policy_document(
        priorities=["p1"],
        slas=[{"priority": "p1", "first_response": "3h", "resolution": "4h"}],
        warn_at=[],
        on_warning=[],
        levels=levels,
        repeat=0,
    )


async def test_a_round_robin_level_pages_each_case_to_the_next_target_and_a_retry_to_the_same(
    workflow_env: WorkflowEnvironment, app_db: AppDb
) -> None:
    policy = pinned(_policy([_level("5m", TARGETS, round_robin=True)]))
    tickets: list[str] = []
    with FakePagerDuty() as pagerduty:
        async with escalation_worker(workflow_env, app_db, pagerduty=pagerduty) as queue:
            for n in range(CASES):
                ticket = new_ticket_id()
                tickets.append(ticket)
                await add_ticket(app_db, ticket)
                opened_at = await workflow_env.get_current_time()
                handle = await workflow_env.client.start_workflow(
                    EscalationWorkflow.run,
                    EscalationInput(case=case(ticket, opened_at), policy=policy),
                    id=case_workflow_id(ticket),
                    task_queue=queue,
                )
                pagerduty.down = n == RETRIED_CASE
                await workflow_env.sleep(timedelta(minutes=6))
                if n == RETRIED_CASE:

                    async def refused() -> bool:
                        return pagerduty.unavailable > 0

                    await eventually(refused, "the page refused by PagerDuty at least once")
                    pagerduty.down = False
                    await workflow_env.sleep(timedelta(minutes=2))  # past the retry's backoff

                async def paged(count: int = n + 1) -> bool:
                    return len(_triggers(pagerduty)) == count

                await eventually(paged, f"case {n} paged")
                state = await settled(handle)
                assert state.levels_fired == 1 and state.failures == []
                [alert] = state.alerts
                assert (alert.recipient, alert.status) == ("round-robin/p1/1", "triggered")
                await handle.execute_update(EscalationWorkflow.resolve, Resolve(by="ana"))
                await handle.result()
                if n == RETRIED_CASE:
                    await keep_history(handle, "escalation-round-robin")
    # One page per case (not one per target), each to the next target in turn; the alert is
    # the level's, resolved with its case.
    expected = [(TARGETS[n % len(TARGETS)], _alert(ticket)) for n, ticket in enumerate(tickets)]
    assert _triggers(pagerduty) == expected
    assert pagerduty.alerts == {_alert(ticket): "resolved" for ticket in tickets}
    assert pagerduty.unavailable > 0
    async with app_db.sessions() as session:
        picks = {p.idempotency_key: p.target for p in await session.scalars(select(RoundRobinPick))}
        counters = {
            (c.definition, c.level): c.turns
            for c in await session.scalars(select(RoundRobinCounter))
        }
    assert picks == {_pick_key(t): TARGETS[n % len(TARGETS)] for n, t in enumerate(tickets)}
    # The retried page took one turn: the counter moved once per case.
    assert counters == {("test-policy", "p1/1"): CASES}


async def test_a_level_at_a_handoff_pages_who_was_on_call_when_it_fell_due_not_when_it_ran(
    workflow_env: WorkflowEnvironment, app_db: AppDb, tmp_path: Path
) -> None:
    now = await workflow_env.get_current_time()
    # Hourly turns handing off on the minute the case opens: ana until +60m, then bernd, then
    # carla from +120m.
    start = now.astimezone(UTC).replace(second=0, microsecond=0)
    await _deploy_hourly_schedule(app_db, tmp_path, "night-desk", start, ["ana", "bernd", "carla"])
    # Level 1 falls due a minute before the handoff, level 2 at the handoff itself.
    policy = pinned(
        _policy([_level("59m", ["oncall:night-desk"]), _level("60m", ["oncall:night-desk"])])
    )
    ticket = new_ticket_id()
    await add_ticket(app_db, ticket)
    queue = f"escalation-{ticket}"
    async with _workflow_worker(workflow_env, queue):
        async with _activity_worker(workflow_env, app_db.sessions, queue):
            handle = await workflow_env.client.start_workflow(
                EscalationWorkflow.run,
                EscalationInput(case=case(ticket, start), policy=policy),
                id=case_workflow_id(ticket),
                task_queue=queue,
            )
            await settled(handle)
        # The app database is out across both levels and the next handoff: each level falls
        # due on time, and its ledger entry, then its page, wait for the database, in carla's
        # turn. (Not a stopped worker: the time-skipping server skips no time while a task
        # waits for a worker, only while a failed attempt waits for its retry.)
        back_at = start + timedelta(minutes=125)
        engine = create_engine(UNREACHABLE_DATABASE)
        try:
            async with _activity_worker(workflow_env, session_factory(engine), queue):
                await skip_to(workflow_env, back_at)
        finally:
            await engine.dispose()
        assert await _sent(app_db, ticket) == {}
        async with _activity_worker(workflow_env, app_db.sessions, queue):
            await workflow_env.sleep(timedelta(minutes=2))  # past the retries' backoff

            async def both_sent() -> bool:
                return len(await _sent(app_db, ticket)) == 2

            await eventually(both_sent, "both levels' pages sent")
            state = await settled(handle)
            await handle.execute_update(EscalationWorkflow.resolve, Resolve(by="ana"))
            await handle.result()
    assert [v.started_at - start for v in state.visits] == [
        timedelta(minutes=59),
        timedelta(minutes=60),
    ]
    assert state.failures == []
    assert await _sent(app_db, ticket) == {
        f"case-{ticket}/level-1-cycle-0/0/0": "agent:ana",
        f"case-{ticket}/level-2-cycle-0/0/0": "agent:bernd",
    }
    # Not a level that happened to run in time: both activities were scheduled in carla's turn.
    scheduled = await _notify_scheduled_at(handle)
    assert len(scheduled) == 2 and min(scheduled) >= back_at


def _triggers(pagerduty: FakePagerDuty) -> list[tuple[str, str]]:
    """(recipient, dedup_key) of each page (trigger) PagerDuty accepted, in order."""
    return [
        (event["payload"]["custom_details"]["recipient"], event["dedup_key"])
        for event in pagerduty.accepted
        if event["event_action"] == "trigger"
    ]


def _alert(ticket: str) -> str:
    return f"case-{ticket}/pager/round-robin/p1/1"


def _pick_key(ticket: str) -> str:
    return f"case-{ticket}/level-1-cycle-0/0/rr"


async def _deploy_hourly_schedule(
    db: AppDb, folder: Path, name: str, start: datetime, users: list[str]
) -> None:
    # Turns since long before (a whole number of rounds, so `start` is the first user's): the
    # server's clock has run ahead of the wall clock, and lint wants no gap from today on.
    since = start - timedelta(hours=len(users) * 24 * 90)
    schedule = {
        "apiVersion": "opsflow/v1",
        "kind": "schedule",
        "metadata": {"name": name, "owner": "support"},
        "spec": {
            "timezone": "UTC",
            "layers": [
                {
                    "name": "hourly",
                    "start": since.strftime("%Y-%m-%dT%H:%M"),
                    "turn": "1h",
                    "users": users,
                }
            ],
        },
    }
    (folder / f"{name}.yaml").write_text(yaml.safe_dump(schedule))
    await deploy_folder(db.sessions, folder)


@asynccontextmanager
async def _workflow_worker(env: WorkflowEnvironment, queue: str) -> AsyncIterator[None]:
    """The escalation workflow's worker on `queue`, without activities."""
    async with Worker(
        env.client,
        task_queue=queue,
        workflows=[EscalationWorkflow],
        workflow_runner=WORKFLOW_RUNNER,
    ):
        yield


@asynccontextmanager
async def _activity_worker(
    env: WorkflowEnvironment, sessions: async_sessionmaker[AsyncSession], queue: str
) -> AsyncIterator[None]:
    """The real activities on the sandbox backends on `queue`, with the app database of
    `sessions`."""
    deps = ActivityDeps(sessions=sessions, backends=Backends.sandbox(sessions))
    async with Worker(env.client, task_queue=queue, activities=activity_functions(deps)):
        yield


async def _sent(db: AppDb, ticket: str) -> dict[str, str]:
    """The sandbox notifications of the case, by idempotency key: who each went to."""
    async with db.sessions() as session:
        rows = await session.scalars(
            select(SandboxNotification).where(
                SandboxNotification.idempotency_key.startswith(f"case-{ticket}/level-")
            )
        )
        return {row.idempotency_key or "": row.recipient for row in rows}


async def _notify_scheduled_at(handle: WorkflowHandle[Any, Any]) -> list[datetime]:
    """When each notify.send activity of the run was scheduled (the server's clock)."""
    history = await handle.fetch_history()
    return [
        event.event_time.ToDatetime(tzinfo=UTC)
        for event in history.events
        if event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED
        and event.activity_task_scheduled_event_attributes.activity_type.name == "notify.send"
    ]
