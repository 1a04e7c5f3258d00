"""`opsflow intake` killed (SIGKILL) in the middle of a burst of signed events, then the
Temporal server killed and kept down while events keep arriving. Senders retry what got no
answer, as a webhook sender does; every event accepted reaches its customer's workflow (an
`opsflow worker` runs them) in the order it was sent and is handled once, and while Temporal
is down the events wait as `pending`.

A signal can reach a workflow twice (the relay killed, or Temporal killed, between the
signal and the inbox row marked delivered): the workflow ignores the repeat by the event's
id (intake/router.py). The ledger counts the events each workflow handled; repeats in the
histories are reported apart."""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from typing import Any

import httpx
from sqlalchemy import func, select
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter

from store.models import InboxEvent
from store.registry import CATALOG_DIR, deploy_folder
from tests.chaos.support import (
    Ledger,
    Scenarios,
    Stage,
    TemporalServer,
    Workers,
    duplicate_notifications,
    eventually,
    start_intake,
)
from tests.conftest import AppDb
from tests.devstack_support import free_port
from tests.intake_support import cloud_event, encode, signed_headers
from workflows.recovery import RecoveryWorkflow

CUSTOMERS = [f"C-{n:04d}" for n in range(1, 21)]


class Senders:
    """One sender per customer, each sending its events one after the other (so the order
    per customer is defined) and retrying an event that got no answer, re-signed."""

    def __init__(self, base: str) -> None:
        self.base = base
        self.run = uuid.uuid4().hex[:6]
        self.sent: dict[str, list[str]] = {customer: [] for customer in CUSTOMERS}
        self.answers: Counter[int] = Counter()
        self.retries = 0

    async def send(self, http: httpx.AsyncClient, customer: str) -> None:
        number = len(self.sent[customer])
        event: dict[str, Any] = cloud_event(
            "contact.received",
            {"customer_id": customer, "channel": "phone"},
            id=f"{self.run}-{customer}-{number}",
        )
        body = encode(event)
        for _ in range(600):
            try:
                answer = await http.post(
                    f"{self.base}/v1/events/crm", content=body, headers=signed_headers(body)
                )
            except httpx.TransportError:
                answer = None
            if answer is not None and answer.status_code in (200, 202):
                self.answers[answer.status_code] += 1
                self.sent[customer].append(event["id"])
                return
            assert answer is None or answer.status_code >= 500, answer.text
            self.retries += 1
            await asyncio.sleep(0.2)
        raise AssertionError(f"event {event['id']} was never accepted")

    async def burst(self, http: httpx.AsyncClient, per_customer: int) -> None:
        async def one(customer: str) -> None:
            for _ in range(per_customer):
                await self.send(http, customer)

        await asyncio.gather(*(one(customer) for customer in CUSTOMERS))

    @property
    def accepted(self) -> int:
        return sum(len(ids) for ids in self.sent.values())


async def _statuses(db: AppDb) -> dict[str, int]:
    async with db.sessions() as session:
        rows = await session.execute(
            select(InboxEvent.status, func.count()).group_by(InboxEvent.status)
        )
        return {status: int(count) for status, count in rows.all()}


async def intake_killed_in_a_burst_then_temporal_down(on: Stage) -> None:
    temporal, processes, app_db, sizes, ledger = (
        on.temporal,
        on.processes,
        on.db,
        on.sizes,
        on.ledger,
    )
    await deploy_folder(app_db.sessions, CATALOG_DIR, deployed_by="chaos")  # recovery rules
    port = free_port()
    senders = Senders(f"http://127.0.0.1:{port}")
    workers = Workers(processes, temporal, app_db.url)
    intake = start_intake(workers, port, "intake-1")
    worker = await workers.start_polling()
    async with httpx.AsyncClient(timeout=30) as http:

        async def up() -> bool:
            assert intake.poll() is None, "the intake exited"
            try:
                return (await http.get(f"{senders.base}/healthz")).status_code == 200
            except httpx.TransportError:
                return False

        await eventually(up, "the intake answers", within=60)

        # The burst; the intake is killed a third of the way in and started again.
        burst = asyncio.create_task(senders.burst(http, sizes.events // len(CUSTOMERS)))

        async def a_third_accepted() -> bool:
            assert not burst.done(), "the burst ended before the kill"
            return senders.accepted >= sizes.events // 3

        await eventually(a_third_accepted, "a third of the burst accepted", within=120)
        processes.kill(intake)
        ledger.note(f"intake killed with {senders.accepted}/{sizes.events} events answered")
        intake = start_intake(workers, port, "intake-2")
        await burst
        ledger.note(
            f"burst done: {senders.answers[202]} answered 202, {senders.answers[200]} 200 "
            f"(accepted before the kill, answer lost), {senders.retries} retries"
        )

        async def all_delivered() -> bool:
            statuses = await _statuses(app_db)
            return set(statuses) == {"delivered"} and statuses["delivered"] == senders.accepted

        await eventually(all_delivered, "the burst delivered", within=300)
        ledger.note("burst delivered")

        # Temporal down while events keep arriving: they wait as pending.
        await temporal.kill()
        ledger.note("Temporal killed")
        during = asyncio.create_task(_trickle(senders, http, sizes.temporal_down_seconds))

        async def some_pending() -> bool:
            return (await _statuses(app_db)).get("pending", 0) > 0

        await eventually(some_pending, "events wait as pending", within=60)
        await during
        while_down = await _statuses(app_db)
        ledger.note(f"after {sizes.temporal_down_seconds:g}s down: {while_down}")
        ledger.check("rejected" not in while_down, f"events rejected while down: {while_down}")
        await temporal.start()
        ledger.note("Temporal restarted")
        try:
            await eventually(all_delivered, "everything delivered after the outage", within=300)
        except AssertionError:
            ledger.failures.append(f"not all delivered: {await _statuses(app_db)}")
        ledger.note("all delivered")

    await _count(temporal, app_db, senders, ledger)
    ledger.check(intake.poll() is None, f"the intake exited ({intake.returncode})")
    ledger.check(worker.poll() is None, f"the worker exited ({worker.returncode})")


TRICKLE_ROUNDS = 5


async def _trickle(senders: Senders, http: httpx.AsyncClient, seconds: float) -> None:
    """An event for every customer, TRICKLE_ROUNDS times spread over `seconds`."""
    loop = asyncio.get_running_loop()
    for _ in range(TRICKLE_ROUNDS):
        started = loop.time()
        await asyncio.gather(*(senders.send(http, customer) for customer in CUSTOMERS))
        await asyncio.sleep(max(0.0, seconds / TRICKLE_ROUNDS - (loop.time() - started)))


async def _signalled_ids(client: Client, workflow_id: str) -> list[str]:
    """The event id of every `event` signal the workflow got, in order, across its runs (a
    customer's workflow continues as new): from the latest run back along the chain each
    run's start names (visibility lists a new run only some time later)."""
    runs: list[list[str]] = []
    run_id = ""
    while True:
        history = await client.get_workflow_handle(
            workflow_id, run_id=run_id or None
        ).fetch_history()
        ids = []
        for event in history.events:
            if event.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_SIGNALED:
                attributes = event.workflow_execution_signaled_event_attributes
                if attributes.signal_name != "event":
                    continue
                [envelope] = pydantic_data_converter.payload_converter.from_payloads(
                    list(attributes.input.payloads)[:1]
                )
                ids.append(envelope["id"])
        runs.append(ids)
        started = history.events[0].workflow_execution_started_event_attributes
        run_id = started.continued_execution_run_id
        if not run_id:
            return [event for ids in reversed(runs) for event in ids]


async def _count(temporal: TemporalServer, db: AppDb, senders: Senders, ledger: Ledger) -> None:
    client = temporal.client
    signals: Counter[str] = Counter()
    out_of_order = []
    for customer in CUSTOMERS:
        ids = await _signalled_ids(client, f"customer-{customer}")
        signals.update(ids)
        if list(dict.fromkeys(ids)) != senders.sent[customer]:
            out_of_order.append(customer)
    ledger.check(not out_of_order, f"events out of order for {out_of_order[:3]}")
    expected = [event for ids in senders.sent.values() for event in ids]
    missing = [event for event in expected if not signals[event]]
    ledger.check(not missing, f"{len(missing)} accepted events never signalled: {missing[:3]}")
    repeats = sorted(event for event, count in signals.items() if count > 1)
    ledger.counts["signals repeated in histories"] = str(len(repeats))
    if repeats:
        ledger.note(f"signalled twice (the workflow ignores the repeat): {repeats[:5]}")

    # What each customer's workflow handled: every event it was sent, once. `seen` holds
    # the keys it handled; `events_seen` counts every event it acted on, so a repeat it
    # failed to ignore shows as one more than the keys.
    handled: Counter[str] = Counter()

    async def all_handled() -> bool:
        handled.clear()
        for customer in CUSTOMERS:
            status = await client.get_workflow_handle(f"customer-{customer}").query(
                RecoveryWorkflow.view
            )
            state = status.state
            ids = [key.removeprefix("crm/") for key in state.seen]
            handled.update(ids)
            if ids:
                handled[ids[0]] += state.events_seen - len(ids)
        return all(handled[event] for event in expected)

    try:
        await eventually(all_handled, "every event handled by its workflow", within=300)
    except AssertionError as exc:
        ledger.failures.append(str(exc))
    ledger.effects("events handled", expected, handled)
    doubled = await duplicate_notifications(db)
    ledger.effects("notifications (by key)", list(doubled), doubled)


async def test_intake_killed_in_a_burst_then_temporal_down(
    scenarios: Scenarios,
) -> None:
    (await scenarios.play(intake_killed_in_a_burst_then_temporal_down)).assert_clean()
