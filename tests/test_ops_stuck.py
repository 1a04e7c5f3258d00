"""`opsflow stuck` (issue 18, item 1) on the dev server, with the real worker assembly: it
finds an activity retrying against a dead vendor port (with the vendor's error), a failed
workflow, an approval past its time and a pending inbox event, each with its Temporal UI
link; and on a healthy stack it finds nothing.

Each test has its own task queue and app database; `stuck` looks only at its queue, so the
runs other tests leave on the session's dev server do not count."""

from __future__ import annotations

import asyncio
import socket
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from temporalio.client import WorkflowFailureError
from temporalio.testing import WorkflowEnvironment

from activities.deps import ActivityDeps
from activities.settings import AdapterSettings
from client.cases import open_case
from client.settings import Settings
from store.models import InboxEvent, SandboxNotification
from tests.cli_support import CommandLine
from tests.conftest import AppDb
from tests.definition_support import pinned
from tests.escalation_support import case, policy_document
from tests.rollout_support import add_customers, change, plan_document
from worker.assembly import build_worker
from workflows.rollout import RolloutWorkflow
from workflows.rollout_model import rollout_workflow_id
from workflows.rollout_pinned import RolloutInput

SQLITE = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)


def dead_port() -> int:
    """A port nothing listens on: bound, never listened to, then closed."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


@asynccontextmanager
async def opsflow_worker(
    env: WorkflowEnvironment, db: AppDb, adapters: AdapterSettings | None = None
) -> AsyncIterator[str]:
    queue = f"ops-stuck-{uuid.uuid4()}"
    settings = Settings(task_queue=queue)
    deps = ActivityDeps(sessions=db.sessions, adapter_settings=adapters or AdapterSettings())
    async with build_worker(env.client, settings, deps):
        yield queue


async def eventually(check: Callable[[], Awaitable[Any]], within: float = 90.0) -> Any:
    """Poll `check` until it returns something truthy (generous: the machine is shared)."""
    deadline = time.monotonic() + within
    while True:
        result = await check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"never happened; last result {result!r}")
        await asyncio.sleep(0.5)


def short_sla_policy() -> dict[str, Any]:
    """P1 warns after 1 s on slack; the first level comes much later."""
    return policy_document(
        slas=[{"priority": "p1", "first_response": "10s", "resolution": "4h"}],
        warn_at=[10],
    )


def failing_level_policy() -> dict[str, Any]:
    """P1's first level, after 1 s, assigns the case's ticket, which is not in the sandbox."""
    return policy_document(
        levels=[
            {"after": "1s", "name": "tier 2", "actions": [{"type": "assign", "queue": "tier-2"}]}
        ]
    )


def quick_approval_plan() -> dict[str, Any]:
    plan = plan_document()
    plan["metadata"]["name"] = "quick-approval"
    plan["spec"]["approvals"].update(timeout="1s", channel="email")
    return plan


@SQLITE
async def test_stuck_finds_what_needs_a_person(
    dev_env: WorkflowEnvironment, app_db: AppDb, tmp_path: Path
) -> None:
    port = dead_port()
    adapters = AdapterSettings(
        chat_backend="slack",
        slack_webhook_url=f"http://127.0.0.1:{port}/services/T0/B0/x",  # type: ignore[arg-type]
    )
    await add_customers(app_db)
    async with opsflow_worker(dev_env, app_db, adapters) as queue:
        client = dev_env.client
        now = datetime.now(UTC)
        # 1. a case whose SLA warning goes to a Slack webhook on a dead port
        retrying = f"T-{uuid.uuid4().hex[:8]}"
        await open_case(client, queue, case(retrying, now), pinned(short_sla_policy()))
        # 2. a case that fails at once: its policy has no SLA for p3
        failing = f"T-{uuid.uuid4().hex[:8]}"
        await open_case(client, queue, case(failing, now, "p3"), pinned(policy_document(
            slas=[{"priority": "p1", "first_response": "1h", "resolution": "4h"}]
        )))  # fmt: skip
        with pytest.raises(WorkflowFailureError):
            await client.get_workflow_handle(f"case-{failing}").result()
        # 3. a rollout whose approval timed out (1 s) with nobody approving
        change_id = f"CHG-{uuid.uuid4().hex[:8]}"
        rollout = await client.start_workflow(
            RolloutWorkflow.run,
            RolloutInput(change=change(change_id), plan=pinned(quick_approval_plan())),
            id=rollout_workflow_id(change_id),
            task_queue=queue,
        )
        # 5. a case whose level assigns a ticket the ticketing system does not have: it
        #    flags itself OpsState=stuck until a person acts
        flagged = f"T-{uuid.uuid4().hex[:8]}"
        await open_case(client, queue, case(flagged, now), pinned(failing_level_policy()))
        # 4. an inbox event waiting for Temporal for ten minutes
        async with app_db.sessions() as session, session.begin():
            event = InboxEvent(
                source="crm",
                event_id=f"evt-{uuid.uuid4().hex[:8]}",
                type="survey.responded",
                subject="C-0017",
                data={"customer_id": "C-0017", "score": 1, "scale": 5},
                status="pending",
                outcome="Temporal unreachable: connection refused",
                attempts=0,
                received_at=now - timedelta(minutes=10),
            )
            session.add(event)
        async with app_db.sessions() as session:
            event_id = (await session.get(InboxEvent, event.id) or event).id

        cli = CommandLine.against(dev_env, app_db.url, queue, tmp_path)
        wanted = {
            (f"case-{retrying}", "activity retrying"),
            (f"case-{failing}", "workflow failed"),
            (rollout.id, "approval overdue"),
            (f"inbox event {event_id}", "event pending"),
            (f"case-{flagged}", "needs a person"),
        }

        async def report() -> dict[str, Any] | None:
            found = (await cli.ok("stuck", "--json", "--older-than", "0s")).json()
            seen = {(r["subject"], r["reason"]) for r in found["runs"]}
            return found if wanted <= seen else None

        found = await eventually(report)
        rows = {(r["subject"], r["reason"]): r for r in found["runs"]}
        activity = rows[(f"case-{retrying}", "activity retrying")]
        assert activity["kind"] == "escalation"
        assert activity["detail"].startswith("notify.send attempt ")
        assert "Connect" in activity["detail"] or "connect" in activity["detail"]
        assert activity["url"].endswith(f"/namespaces/default/workflows/case-{retrying}")
        failed = rows[(f"case-{failing}", "workflow failed")]
        assert "no SLA for p3" in failed["detail"]
        approval = rows[(rollout.id, "approval overdue")]
        assert "approval of start" in approval["detail"] and "approvers paged" in approval["detail"]
        inbox = rows[(f"inbox event {event_id}", "event pending")]
        assert (
            inbox["kind"] == "inbox" and "survey.responded from crm for C-0017" in inbox["detail"]
        )
        assert found["partial"] == []
        person = rows[(f"case-{flagged}", "needs a person")]
        assert "needs a person: level-1-cycle-" in person["detail"]
        assert "does not exist" in person["detail"]

        # --kind narrows; --older-than hides what is not yet overdue that long.
        only_inbox = (await cli.ok("stuck", "--json", "--kind", "inbox")).json()
        assert [r["reason"] for r in only_inbox["runs"]] == ["event pending"]
        later = (await cli.ok("stuck", "--json", "--kind", "inbox", "--older-than", "1h")).json()
        assert later["runs"] == []
        # The table: one line per run, the reason and the link.
        table = (await cli.ok("stuck", "--kind", "rollout", "--older-than", "0s")).stdout
        assert "approval overdue" in table and rollout.id in table
        assert f"/namespaces/default/workflows/{rollout.id}" in table
        refusal = await cli.refused("stuck", "--kind", "cases")
        assert "--kind 'cases' is not one of escalation, rollout" in refusal
        await rollout.terminate(reason="test over")
        await client.get_workflow_handle(f"case-{retrying}").terminate(reason="test over")
        await client.get_workflow_handle(f"case-{flagged}").terminate(reason="test over")


@SQLITE
async def test_stuck_finds_nothing_on_a_healthy_stack(
    dev_env: WorkflowEnvironment, app_db: AppDb, tmp_path: Path
) -> None:
    await add_customers(app_db)
    async with opsflow_worker(dev_env, app_db) as queue:
        client = dev_env.client
        now = datetime.now(UTC)
        ticket = f"T-{uuid.uuid4().hex[:8]}"
        await open_case(client, queue, case(ticket, now), pinned(short_sla_policy()))
        change_id = f"CHG-{uuid.uuid4().hex[:8]}"
        rollout = await client.start_workflow(
            RolloutWorkflow.run,
            RolloutInput(change=change(change_id), plan=pinned(plan_document())),
            id=rollout_workflow_id(change_id),
            task_queue=queue,
        )

        async def waiting_for_approval() -> bool:
            state = await rollout.query(RolloutWorkflow.state)
            return state.state == "awaiting_approval"

        await eventually(waiting_for_approval)
        handle = client.get_workflow_handle(f"case-{ticket}")

        async def warned() -> bool:  # the same SLA warning that fails in the test above
            async with app_db.sessions() as session:
                sent = await session.scalar(
                    select(SandboxNotification.id).where(
                        SandboxNotification.template == "sla-warning",
                        SandboxNotification.idempotency_key.contains(ticket),
                    )
                )
            return sent is not None

        await eventually(warned)
        cli = CommandLine.against(dev_env, app_db.url, queue, tmp_path)
        found = (await cli.ok("stuck", "--json", "--older-than", "0s")).json()
        assert found == {"count": 0, "runs": [], "partial": []}
        assert "nothing stuck" in (await cli.ok("stuck")).stdout
        await rollout.terminate(reason="test over")
        await handle.terminate(reason="test over")
