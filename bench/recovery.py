"""Benchmark: opsflow's Recovery workflow under the catalog's rules against a hand-written
plain Temporal workflow that takes the same signals and calls the same activities, served
naive (the SDK's default sandbox) and tuned (every module passed through).

All run in the same run, on the same in-memory dev server and app database (SQLite), each
with a worker process of its own. C customers (default 1,000) get E events each (default
20), sent as the intake sends them: signal-with-start of the customer's workflow, each
customer's events in order, customers in parallel. Per customer: a CSAT of 1 (apology and a
recovery ticket, an episode opens), contacts and sentiment (two "three contacts in a week"
triggers, inhibited by the open episode), an SLA breach (CRM note; the apology is capped)
and a second low CSAT (the ladder: a callback ticket). The run ends when every customer's
callback ticket exists; every workflow stays open (episode, follow-up), so the worker's
peak RSS is read with all of them open.

    .venv/bin/python -m bench.recovery [--customers 1000] [--events 20]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio.client import Client

from bench.harness import (
    BASELINES,
    Measured,
    Stopwatch,
    WorkerProcess,
    baseline_worker,
    in_memory_dev_server,
    print_goals,
    wait_for_poller,
)
from client.recovery import recovery_rules, recovery_signal_args
from definitions.events import EventEnvelope
from store.db import create_engine, session_factory
from store.migrate import upgrade
from store.models import LedgerEntry, SandboxTicket
from store.registry import CATALOG_DIR, deploy_folder
from store.seed import seed_sandbox
from workflows.recovery_model import RecoveryInput, customer_workflow_id

CONCURRENCY = 64
Sessions = async_sessionmaker[AsyncSession]


def opsflow_worker(env: dict[str, str], queue: str) -> WorkerProcess:
    opsflow = str(Path(sys.executable).parent / "opsflow")
    return WorkerProcess([opsflow, "worker"], {**env, "OPSFLOW_TASK_QUEUE": queue})


async def prepare_database(folder: str, customers: int) -> str:
    """A migrated, seeded app database with the catalog deployed; returns its URL."""
    url = make_url(f"sqlite:///{folder}/bench.db")
    upgrade(url)
    engine = create_engine(url)
    sessions = session_factory(engine)
    await seed_sandbox(sessions, customer_count=max(customers, 60))
    await deploy_folder(sessions, CATALOG_DIR, deployed_by="bench")
    await engine.dispose()
    return str(url)


def worker_env(address: str, url: str, folder: str) -> dict[str, str]:
    return {
        "OPSFLOW_TEMPORAL_ADDRESS": address,
        "OPSFLOW_DATABASE_URL": url,
        "OPSFLOW_LOG_LEVEL": "warning",
        "OPSFLOW_DATA_DIR": folder,
    }


def customer_id(n: int) -> str:
    return f"C-{n + 1:04d}"


def customer_events(customer: str, count: int, run: str) -> list[EventEnvelope]:
    """`count` events (at least 4): survey 1, contacts and sentiment, SLA breach, survey 2."""
    ticket = f"T-{run}-{customer}"
    middle = max(count - 3, 0)
    kinds: list[tuple[str, dict[str, Any]]] = [
        ("survey.responded", {"score": 1, "ticket_id": ticket})
    ]
    for i in range(middle):
        if i % 3 == 0:
            kinds.append(("contact.received", {"channel": "phone", "ticket_id": ticket}))
        else:
            kinds.append(("sentiment.scored", {"score": 0.1}))
    kinds.append(
        (
            "sla.breached",
            {
                "ticket_id": ticket,
                "sla": "first_response",
                "priority": "p2",
                "stage": "support",
                "budget_seconds": 3600,
                "breached_at": datetime.now(UTC).isoformat(),
                "policy": "support-p2@1",
            },
        )
    )
    # About another contact: a second survey about the same ticket is recorded, not acted on.
    kinds.append(("survey.responded", {"score": 2, "ticket_id": f"{ticket}-2"}))
    now = datetime.now(UTC)
    return [
        EventEnvelope(
            id=f"{run}-{customer}-{i}",
            source="bench",
            type=kind,
            subject=customer,
            time=now,
            data={"customer_id": customer, **data},
        )
        for i, (kind, data) in enumerate(kinds)
    ]


async def callbacks(sessions: Sessions) -> int:
    async with sessions() as session:
        found = await session.scalar(
            select(func.count())
            .select_from(SandboxTicket)
            .where(SandboxTicket.queue == "callbacks")
        )
    return int(found or 0)


async def activity_rows(sessions: Sessions) -> tuple[int, int]:
    async with sessions() as session:
        ledger = await session.scalar(select(func.count()).select_from(LedgerEntry))
        tickets = await session.scalar(select(func.count()).select_from(SandboxTicket))
    return int(ledger or 0), int(tickets or 0)


@dataclass
class Result(Measured):
    """The unit is an event; the worker's CPU and peak RSS are read with every customer's
    workflow still open."""

    ledger_rows: int = 0
    tickets: int = 0


Send = Callable[[EventEnvelope], Awaitable[None]]


async def drive(
    sessions: Sessions, customers: int, per_customer: int, send: Send, name: str
) -> tuple[float, int]:
    """Send every customer's events (in order per customer), then wait for the last one's
    effect (a callback ticket per customer). Returns (seconds, events)."""
    run = uuid.uuid4().hex[:6]
    gate = asyncio.Semaphore(CONCURRENCY)
    before = await callbacks(sessions)
    plans = [customer_events(customer_id(n), per_customer, run) for n in range(customers)]
    total = sum(len(p) for p in plans)

    async def one(events: list[EventEnvelope]) -> None:
        async with gate:
            for event in events:
                await send(event)

    watch = Stopwatch()
    await asyncio.gather(*(one(p) for p in plans))
    sent = watch.seconds
    while await callbacks(sessions) - before < customers:
        await asyncio.sleep(0.2)
        if watch.seconds > sent + 600:
            raise RuntimeError(f"{name}: the workflows did not finish in 10 minutes")
    return watch.seconds, total


async def run_opsflow(
    client: Client, env: dict[str, str], sessions: Sessions, customers: int, per_customer: int
) -> Result:
    queue = f"bench-recovery-{uuid.uuid4().hex[:6]}"
    worker = opsflow_worker(env, queue)
    try:
        await wait_for_poller(client, queue)
        worker.mark()
        rules = await recovery_rules(sessions)
        start = RecoveryInput(rules=rules.rules)
        ledger0, tickets0 = await activity_rows(sessions)

        async def send(event: EventEnvelope) -> None:
            await client.start_workflow(
                "Recovery",
                start,
                id=customer_workflow_id(event.subject),
                task_queue=queue,
                start_signal="event",
                start_signal_args=recovery_signal_args(event, rules),
            )

        seconds, events = await drive(sessions, customers, per_customer, send, "opsflow")
        usage = worker.measure()
        ledger1, tickets1 = await activity_rows(sessions)
    except BaseException:
        worker.kill()
        raise
    worker.stop()
    return Result(
        "opsflow",
        events,
        seconds,
        usage.cpu_seconds,
        usage.peak_rss_mib,
        ledger1 - ledger0,
        tickets1 - tickets0,
    )


async def run_baseline(
    client: Client,
    env: dict[str, str],
    sessions: Sessions,
    customers: int,
    per_customer: int,
    baseline: tuple[str, Sequence[str]],
) -> Result:
    name, worker_args = baseline
    queue = f"bench-plain-recovery-{uuid.uuid4().hex[:6]}"
    worker = baseline_worker("bench.baseline_recovery", queue, env, worker_args)
    try:
        await wait_for_poller(client, queue)
        worker.mark()
        ledger0, tickets0 = await activity_rows(sessions)

        async def send(event: EventEnvelope) -> None:
            await client.start_workflow(
                "PlainRecovery",
                id=f"plain-{queue}-{event.subject}",
                task_queue=queue,
                start_signal="event",
                start_signal_args=[event],
            )

        seconds, events = await drive(sessions, customers, per_customer, send, name)
        usage = worker.measure()
        ledger1, tickets1 = await activity_rows(sessions)
    except BaseException:
        worker.kill()
        raise
    worker.stop()
    return Result(
        name,
        events,
        seconds,
        usage.cpu_seconds,
        usage.peak_rss_mib,
        ledger1 - ledger0,
        tickets1 - tickets0,
    )


def report(baselines: Sequence[Result], opsflow: Result) -> None:
    print(
        f"{'':16} {'events/s':>9} {'wall s':>8} {'CPU ms/event':>13} {'peak RSS MiB':>13}"
        f" {'ledger rows':>12} {'tickets':>8}"
    )
    for r in (*baselines, opsflow):
        print(
            f"{r.name:16} {r.per_second:9.1f} {r.seconds:8.2f} {r.cpu_ms_per_unit:13.2f}"
            f" {r.peak_rss_mib:13.1f} {r.ledger_rows:12d} {r.tickets:8d}"
        )
    print_goals(opsflow, baselines, "event")


async def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--customers", type=int, default=1000)
    parser.add_argument("--events", type=int, default=20, help="events per customer (>= 4)")
    args = parser.parse_args()
    per_customer = max(args.events, 4)
    with tempfile.TemporaryDirectory() as folder:
        url = await prepare_database(folder, args.customers)
        engine = create_engine(make_url(url))
        sessions = session_factory(engine)
        try:
            async with in_memory_dev_server() as server:
                address = server.client.service_client.config.target_host
                env = worker_env(address, url, folder)
                baselines = [
                    await run_baseline(
                        server.client, env, sessions, args.customers, per_customer, baseline
                    )
                    for baseline in BASELINES
                ]
                opsflow = await run_opsflow(
                    server.client, env, sessions, args.customers, per_customer
                )
        finally:
            await engine.dispose()
    print(
        f"recovery benchmark: {args.customers} customers x {per_customer} events, catalog "
        "rules, in-memory dev server, SQLite app database, each worker in its own process"
    )
    report(baselines, opsflow)


if __name__ == "__main__":
    asyncio.run(main())
