"""Every event type routed to its workflow on the dev server, exactly once, and the relay
delivering in order once a stopped Temporal is back."""

from __future__ import annotations

import socket
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client, WorkflowExecutionStatus
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

from activities.search_attributes import ALL as SEARCH_ATTRIBUTES
from intake import inbox
from intake.app import Intake
from store.db import create_engine, session_factory
from store.migrate import upgrade
from store.models import InboxEvent, SandboxTicket
from store.registry import CATALOG_DIR, deploy_folder
from store.seed import seed_sandbox
from tests.conftest import AppDb
from tests.escalation_support import add_ticket, escalation_worker, ledger_steps, settled
from tests.intake_support import cloud_event, http, make_intake, post_event
from worker.binaries import temporal_cli
from workflows.escalation import EscalationStatus as CaseStatus

pytestmark = pytest.mark.devserver


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@pytest.fixture
async def sqlite_db(tmp_path: Path) -> AsyncIterator[AppDb]:
    url = make_url(f"sqlite:///{tmp_path / 'opsflow.db'}")
    upgrade(url)
    engine = create_engine(url)
    sessions = session_factory(engine)
    await seed_sandbox(sessions)
    await deploy_folder(sessions, CATALOG_DIR, deployed_by="test")
    try:
        yield AppDb(url, sessions)
    finally:
        await engine.dispose()


async def settle(intake: Intake) -> None:
    assert intake.relay is not None
    _settled, reachable = await intake.relay.drain_once()
    assert reachable


async def row(db: AppDb, event_id: str) -> InboxEvent:
    [found] = await inbox.find(db.sessions, event_id)
    return found


async def signalled_ids(client: Client, workflow_id: str) -> list[str]:
    """The event ids carried by each `event` signal in the workflow's history, in order."""
    history = await client.get_workflow_handle(workflow_id).fetch_history()
    ids = []
    for event in history.events:
        if event.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_SIGNALED:
            attrs = event.workflow_execution_signaled_event_attributes
            assert attrs.signal_name == "event"
            # the envelope first; recovery signals also carry the deployed rule sets' digest
            payload = pydantic_data_converter.payload_converter.from_payloads(
                list(attrs.input.payloads)[:1]
            )[0]
            ids.append(payload["id"])
    return ids


async def test_every_type_reaches_its_workflow_once(
    dev_env: WorkflowEnvironment, sqlite_db: AppDb
) -> None:
    client = dev_env.client
    async with escalation_worker(dev_env, sqlite_db) as queue:
        intake = make_intake(sqlite_db, client, queue)
        ticket = f"T-{uuid.uuid4().hex[:8]}"
        customer, conversation = "C-0002", f"CV-{uuid.uuid4().hex[:6]}"
        await add_ticket(sqlite_db, ticket, customer)
        created = cloud_event(
            "ticket.created",
            {"ticket_id": ticket, "customer_id": customer, "priority": "p2", "subject": "VAT"},
        )
        async with http(intake) as http_client:
            assert (await post_event(http_client, created)).status_code == 202
            await settle(intake)
            opened = await row(sqlite_db, created["id"])
            assert (opened.status, opened.target) == ("delivered", f"case-{ticket}")
            assert "case opened under support@" in (opened.outcome or "")
            handle = client.get_workflow_handle(f"case-{ticket}")

            async def state() -> CaseStatus:
                result: CaseStatus = await handle.query("state", result_type=CaseStatus)
                return result

            # re-delivery: 200, the original outcome, nothing new
            again = await post_event(http_client, created)
            assert again.status_code == 200
            assert again.json()["events"][0]["outcome"] == opened.outcome

            pause = cloud_event("ticket.updated", {"ticket_id": ticket, "status": "pending"})
            await post_event(http_client, pause)
            await settle(intake)
            assert (await row(sqlite_db, pause["id"])).status == "delivered"
            # settled: the pause is in the ledger too, not only in the state
            assert (await settled(handle)).state == "paused"
            steps = await ledger_steps(sqlite_db, f"case-{ticket}")
            assert steps[-1] == "pause"

            # the relay crashed after delivering but before marking: delivering again gets
            # the first answer back (same update id), the case acts once
            delivered_again = await intake.relay.router.deliver(  # type: ignore[union-attr]
                inbox.envelope_of(await row(sqlite_db, pause["id"]))
            )
            assert delivered_again.status == "delivered"
            assert await ledger_steps(sqlite_db, f"case-{ticket}") == steps

            # a different event with another waiting status: the policy's pause_statuses
            # (pending, on_hold) say it still waits, so nothing changes
            pause_twice = cloud_event("ticket.updated", {"ticket_id": ticket, "status": "on_hold"})
            await post_event(http_client, pause_twice)
            await settle(intake)
            still = await row(sqlite_db, pause_twice["id"])
            assert still.status == "delivered"
            assert (await settled(handle)).state == "paused"
            assert await ledger_steps(sqlite_db, f"case-{ticket}") == steps

            bad_agent = cloud_event("ticket.updated", {"ticket_id": ticket, "assignee": "A-0001"})
            await post_event(http_client, bad_agent)
            await settle(intake)
            bad_row = await row(sqlite_db, bad_agent["id"])
            assert bad_row.status == "rejected"
            assert "'A-0001' is not a valid assignee" in (bad_row.outcome or "")

            changes = cloud_event(
                "ticket.updated",
                {"ticket_id": ticket, "status": "open", "assignee": "ana"},
            )
            await post_event(http_client, changes)
            await settle(intake)
            changed = await row(sqlite_db, changes["id"])
            assert changed.outcome == "case updated: ticket_status, reassign"
            status = await state()
            assert (status.state, status.assignee) == ("open", "ana")
            # one support policy for every priority: the priority change is taken
            raised = cloud_event("ticket.updated", {"ticket_id": ticket, "priority": "p1"})
            await post_event(http_client, raised)
            await settle(intake)
            assert (await row(sqlite_db, raised["id"])).outcome == "case updated: set_priority"
            assert (await state()).case.priority == "p1"
            unknown = cloud_event("ticket.updated", {"ticket_id": ticket, "priority": "p1"})
            await post_event(http_client, unknown)
            await settle(intake)
            assert (await row(sqlite_db, unknown["id"])).outcome == (
                "set_priority refused: the case is already p1"
            )

            solved = cloud_event("ticket.solved", {"ticket_id": ticket, "solved_by": "agent:ana"})
            reopened = cloud_event("ticket.reopened", {"ticket_id": ticket})
            late = cloud_event("ticket.updated", {"ticket_id": ticket, "priority": "p3"})
            for event in (solved, reopened, late):
                await post_event(http_client, event)
            await settle(intake)
            assert (await row(sqlite_db, solved["id"])).status == "delivered"
            assert (await handle.result()) is not None
            reopen_row = await row(sqlite_db, reopened["id"])
            assert reopen_row.status == "rejected"
            assert "never reused" in (reopen_row.outcome or "")
            late_row = await row(sqlite_db, late["id"])
            # refused by the validator while the resolved case finishes its last writes, or
            # found closed once it has: either way the same reason
            assert late_row.status == "rejected"
            assert (late_row.outcome or "").endswith(f"case {ticket} is already resolved")

            recovery_events = [
                cloud_event("contact.received", {"customer_id": customer, "channel": "phone"}),
                cloud_event("survey.responded", {"customer_id": customer, "score": 1}),
                cloud_event("sentiment.scored", {"customer_id": customer, "score": -0.7}),
                cloud_event("journey.stage_changed", {"customer_id": customer, "to_stage": "risk"}),
                cloud_event(
                    "sla.breached",
                    {
                        "ticket_id": ticket,
                        "customer_id": customer,
                        "sla": "first_response",
                        "priority": "p2",
                        "stage": "support",
                        "budget_seconds": 60,
                        "breached_at": "2026-11-23T10:00:00Z",
                        "policy": "support@1",
                    },
                    subject=customer,
                ),
            ]
            handoff_events = [
                cloud_event(
                    "bot.turn",
                    {
                        "conversation_id": conversation,
                        "customer_id": customer,
                        "text": "human please",
                        "confidence": 0.2,
                    },
                ),
                cloud_event(
                    "bot.handoff_requested",
                    {
                        "conversation_id": conversation,
                        "customer_id": customer,
                        "reason": "customer asks",
                        "transcript": [{"from": "customer", "text": "human please"}],
                    },
                ),
            ]
            agent = cloud_event("agent.status_changed", {"agent_id": "A-0001", "status": "busy"})
            for event in (*recovery_events, *handoff_events, agent):
                assert (await post_event(http_client, event)).status_code == 202
            # a re-delivered signal event is answered from the inbox, not signalled twice
            assert (await post_event(http_client, recovery_events[1])).status_code == 200
            await settle(intake)

        assert await signalled_ids(client, f"customer-{customer}") == [
            e["id"] for e in recovery_events
        ]
        assert await signalled_ids(client, f"handoff-{conversation}") == [
            e["id"] for e in handoff_events
        ]
        described = await client.get_workflow_handle(f"customer-{customer}").describe()
        assert described.workflow_type == "Recovery"
        assert described.status == WorkflowExecutionStatus.RUNNING
        agent_row = await row(sqlite_db, agent["id"])
        assert (agent_row.status, agent_row.target) == ("delivered", None)
        for event in recovery_events:
            assert (await row(sqlite_db, event["id"])).target == f"customer-{customer}"


async def test_a_case_from_an_event_has_its_ticket_in_the_sandbox(
    dev_env: WorkflowEnvironment, sqlite_db: AppDb
) -> None:
    """With the sandbox ticketing backend the ticket a `ticket.created` names exists there
    once its case is open, so the case's assign and update actions act on it."""
    ticket = f"T-{uuid.uuid4().hex[:8]}"
    async with escalation_worker(dev_env, sqlite_db) as queue:
        intake = make_intake(sqlite_db, dev_env.client, queue)
        created = cloud_event(
            "ticket.created",
            {"ticket_id": ticket, "customer_id": "C-0002", "priority": "p3", "subject": "Login"},
        )
        async with http(intake) as http_client:
            assert (await post_event(http_client, created)).status_code == 202
            await settle(intake)
        assert (await row(sqlite_db, created["id"])).status == "delivered"
        async with sqlite_db.sessions() as session:
            stored = await session.get(SandboxTicket, ticket)
        assert stored is not None
        assert (stored.customer_id, stored.subject) == ("C-0002", "Login")
        await dev_env.client.get_workflow_handle(f"case-{ticket}").terminate("test over")


async def test_stopped_temporal_then_delivered_in_order(sqlite_db: AppDb) -> None:
    port = free_port()

    async def start() -> WorkflowEnvironment:
        return await WorkflowEnvironment.start_local(
            dev_server_existing_path=str(temporal_cli()),
            search_attributes=SEARCH_ATTRIBUTES,
            data_converter=pydantic_data_converter,
            dev_server_log_level="error",
            port=port,
        )

    async def connect() -> Client:
        return await Client.connect(f"127.0.0.1:{port}", data_converter=pydantic_data_converter)

    first = await start()
    intake = make_intake(sqlite_db, await connect())
    intake.link._connect = connect  # reconnects to the same address once it is back
    customer = "C-0003"
    events = [
        cloud_event("survey.responded", {"customer_id": customer, "score": s}) for s in (5, 2, 1)
    ]
    async with http(intake) as client:
        assert (await post_event(client, events[0])).status_code == 202
        await settle(intake)
        await first.shutdown()
        for event in events[1:]:
            assert (await post_event(client, event)).status_code == 202
        assert intake.relay is not None
        assert await intake.relay.drain_once() == (0, False)
        backlog = await inbox.listing(sqlite_db.sessions, inbox.WAITING)
        assert [r.event_id for r in reversed(backlog)] == [e["id"] for e in events[1:]]
        assert [r.status for r in backlog] == ["accepted", "pending"]

        second = await start()
        try:
            await settle(intake)
            assert await inbox.listing(sqlite_db.sessions, inbox.WAITING) == []
            # the restarted (in-memory) server saw the two events the first one never got
            assert await signalled_ids(second.client, f"customer-{customer}") == [
                e["id"] for e in events[1:]
            ]
        finally:
            await second.shutdown()
