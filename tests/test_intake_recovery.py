"""Recovery events through the intake, for real: signed events over HTTP, the inbox, the relay
and the router's signal-with-start of `customer-<id>` with the deployed rule sets, on the dev
server with a worker running the Recovery workflow and the real activities (sandbox)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.engine import make_url
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from activities.adapters.sandbox import SandboxCrm
from activities.deps import ActivityDeps
from intake import inbox
from intake.app import Intake
from intake.relay import Relay
from intake.router import Router, TemporalLink, TtlCache
from store.db import create_engine, session_factory
from store.migrate import upgrade
from store.registry import CATALOG_DIR, deploy_folder
from store.seed import seed_sandbox
from tests.conftest import AppDb
from tests.intake_support import SOURCES, cloud_event, http, post_event, unreachable
from tests.recovery_support import sandbox_counts
from worker.assembly import activity_functions
from workflows.recovery import RecoveryWorkflow
from workflows.recovery_model import RecoveryInput, RecoveryStatus
from workflows.sandbox import WORKFLOW_RUNNER

pytestmark = pytest.mark.devserver


@pytest.fixture
async def catalog_db(tmp_path: Path) -> AsyncIterator[AppDb]:
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


@asynccontextmanager
async def recovery_intake(env: WorkflowEnvironment, db: AppDb) -> AsyncIterator[Intake]:
    """An intake whose router starts recovery workflows on a queue a real worker polls."""
    queue = f"intake-recovery-{uuid.uuid4().hex[:8]}"
    async with Worker(
        env.client,
        task_queue=queue,
        workflows=[RecoveryWorkflow],
        workflow_runner=WORKFLOW_RUNNER,
        activities=activity_functions(ActivityDeps(sessions=db.sessions)),
    ):
        link = TemporalLink(unreachable, env.client)
        router = Router(link, db.sessions, queue, SandboxCrm(db.sessions))
        relay = Relay(db.sessions, router, concurrency=8)
        yield Intake(db.sessions, dict(SOURCES), link, relay, run_relay=False)


async def settle(intake: Intake) -> None:
    assert intake.relay is not None
    _settled, reachable = await intake.relay.drain_once()
    assert reachable


async def eventually(check: Callable[[], Awaitable[bool]], seconds: float = 10) -> None:
    deadline = asyncio.get_running_loop().time() + seconds
    while not await check():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.1)


async def view(client: Client, customer: str) -> RecoveryStatus:
    handle = client.get_workflow_handle_for(RecoveryWorkflow.run, f"customer-{customer}")
    result: RecoveryStatus = await handle.query(RecoveryWorkflow.view)
    return result


async def handled(client: Client, customer: str, count: int) -> None:
    """Wait until the customer's workflow has taken `count` events and acted on them."""

    async def done() -> bool:
        shown = await view(client, customer)
        return shown.state.events_seen >= count and shown.ops_state != "acting"

    await eventually(done)


def customer_event(event_type: str, customer: str, **data: Any) -> dict[str, Any]:
    return cloud_event(event_type, {"customer_id": customer, **data}, subject=customer)


async def test_low_survey_through_the_intake_acts_once(
    dev_env: WorkflowEnvironment, catalog_db: AppDb
) -> None:
    customer = "C-0004"
    client = dev_env.client
    async with recovery_intake(dev_env, catalog_db) as intake, http(intake) as api:
        survey = customer_event("survey.responded", customer, score=1, ticket_id="T-77")
        assert (await post_event(api, survey)).status_code == 202
        await settle(intake)
        [row] = await inbox.find(catalog_db.sessions, survey["id"])
        assert (row.status, row.target) == ("delivered", f"customer-{customer}")
        await handled(client, customer, 1)
        counts = await sandbox_counts(catalog_db, customer, f"customer-{customer}")
        assert (counts["apologies"], counts["tickets"]) == (1, 1)
        shown = await view(client, customer)
        assert shown.state.tally["service-recovery/low-csat"] == {"fired": 1}
        [decision] = shown.state.decisions
        assert decision.ref.startswith("service-recovery@")

        # re-delivered by the sender: answered from the inbox, nothing signalled
        again = await post_event(api, survey)
        assert again.status_code == 200
        await settle(intake)
        # the relay crashed after signalling but before marking: signalled again, ignored
        redelivered = await intake.relay.router.deliver(inbox.envelope_of(row))  # type: ignore[union-attr]
        assert redelivered.status == "delivered"
        await asyncio.sleep(0.5)
        assert await sandbox_counts(catalog_db, customer, f"customer-{customer}") == counts
        shown = await view(client, customer)
        assert shown.state.events_seen == 1
        assert shown.state.tally["service-recovery/low-csat"] == {"fired": 1}


async def test_three_contacts_within_a_week_fire_once(
    dev_env: WorkflowEnvironment, catalog_db: AppDb
) -> None:
    customer = "C-0005"
    client = dev_env.client
    now = datetime.now(UTC)
    async with recovery_intake(dev_env, catalog_db) as intake, http(intake) as api:
        contacts = [
            customer_event("contact.received", customer, channel="phone")
            | {"time": (now - timedelta(days=days)).isoformat()}
            for days in (5, 3, 0)
        ]
        for sent, contact in enumerate(contacts, start=1):
            assert (await post_event(api, contact)).status_code == 202
            await settle(intake)
            await handled(client, customer, sent)
            tally = (await view(client, customer)).state.tally
            fired = tally.get("service-recovery/repeat-contacts", {})
            assert fired == ({"fired": 1} if sent == 3 else {})
        counts = await sandbox_counts(catalog_db, customer, f"customer-{customer}")
        assert counts["notes"] == 1  # the rule's CRM note, once

        # a fourth contact the same week: cooling down, recorded with the reason
        fourth = customer_event("contact.received", customer, channel="email")
        await post_event(api, fourth)
        await settle(intake)
        await handled(client, customer, 4)
        shown = await view(client, customer)
        assert shown.state.tally["service-recovery/repeat-contacts"] == {"fired": 1}
        assert await sandbox_counts(catalog_db, customer, f"customer-{customer}") == counts


async def test_rules_are_read_once_per_burst(catalog_db: AppDb) -> None:
    """A burst of events reads the deployed rules once; the cache refreshes after its TTL."""
    link = TemporalLink(unreachable)
    router = Router(link, catalog_db.sessions, "q", SandboxCrm(catalog_db.sessions))
    cache = router.start_inputs.recovery
    values = await asyncio.gather(*(cache.get() for _ in range(50)))
    assert cache.loads == 1
    assert all(v is values[0] for v in values)
    assert [p.name for p in values[0].rules.rules] == ["service-recovery"]
    # the start input travels converted once: the same bytes a per-event conversion makes
    [converted] = pydantic_data_converter.payload_converter.to_payloads(
        [RecoveryInput(rules=values[0].rules.rules)]
    )
    assert values[0].start_input.payload == converted

    now = [0.0]
    calls: list[int] = []

    async def load() -> int:
        calls.append(1)
        return len(calls)

    ticking: TtlCache[int] = TtlCache(load, ttl=3.0, clock=lambda: now[0])
    assert await ticking.get() == 1
    now[0] = 2.9
    assert await ticking.get() == 1
    now[0] = 3.0
    assert await ticking.get() == 2


async def test_no_rules_deployed_is_recorded_not_started(tmp_path: Path) -> None:
    url = make_url(f"sqlite:///{tmp_path / 'empty.db'}")
    upgrade(url)
    engine = create_engine(url)
    try:
        sessions = session_factory(engine)
        client = await Client.connect("127.0.0.1:1", lazy=True)
        router = Router(TemporalLink(unreachable, client), sessions, "q", SandboxCrm(sessions))
        from definitions.events import EventEnvelope

        envelope = EventEnvelope(
            id="e1",
            source="crm",
            type="survey.responded",
            subject="C-0001",
            data={"customer_id": "C-0001", "score": 1},
        )
        # nothing is sent to Temporal: no rule set decides on the event
        delivery = await router.deliver(envelope)
        assert delivery.status == "rejected"
        assert "no recovery rule set is deployed" in delivery.outcome
    finally:
        await engine.dispose()
