"""Benchmark: opsflow's handoff workflow against a hand-written plain Temporal workflow,
served naive (the SDK's default sandbox) and tuned (every module passed through).

All run in the same run, on the same in-memory dev server and app database, each in a
worker process of its own, with the same activity calls. N conversations ask for a person
at once (a `bot.handoff_requested` signal-with-start) and are handed to 50 bench agents of
capacity 1 in a 24/7 bench queue. Every side waits in line the same way, first come first
served: a released agent wakes the next conversation (signal `agent_free`), and each looks
again on its own every AGENT_FALLBACK in case a wake-up was lost. The driver is the same on
every side: send the request, wait for the offer, accept, resolve, wait for the end. The
driver learns of offers from the ledger row each side writes when it offers
(`transition-N-offered`, the agent in its detail), read for every waiting conversation at
once every OFFER_WATCH seconds, so the workers spend no time answering queries the benchmark
would otherwise count as the handoff's cost. Request-to-offer latency runs from the client's
send time to the offer's moment (the row's `at`), so it includes the wait for a free agent.

The bench definition (not the catalog's) has one route, no queue-depth limit and a 4 h
maximum wait: with 1,000 waiting and 50 slots the sandbox estimates about 2 h, which the
catalog's limits would turn into callbacks. No escalation policy: no case is opened on
accept (the baseline opens none either).

    .venv/bin/python -m bench.handoff [--conversations 1000] [--sides "plain (tuned),opsflow"]

--sides runs only the named sides (default: every one), e.g. to time one side alone.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import or_, select
from sqlalchemy.engine import URL, make_url
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio.client import Client, WorkflowHandle
from temporalio.common import SearchAttributePair, TypedSearchAttributes

from activities import search_attributes as sa
from bench.harness import (
    BASELINES,
    Measured,
    Stopwatch,
    WorkerProcess,
    baseline_worker,
    in_memory_dev_server,
    percentile,
    print_goals,
    wait_for_poller,
)
from client.handoffs import handoff_request_event, signal_with_start
from definitions.events import EventEnvelope, TranscriptLine
from definitions.loader import content_hash
from definitions.models import PinnedDefinition, definition_adapter
from store.db import create_engine, session_factory
from store.migrate import upgrade
from store.models import LedgerEntry, SandboxAgent, SandboxCustomer, SandboxQueue
from store.seed import seed_sandbox
from store.types import utcnow
from workflows.handoff import AGENT_FALLBACK, HandoffWorkflow
from workflows.handoff_model import Accept, HandoffInput, Resolve

AGENTS = 50
QUEUE = "bench-desk"
SKILL = "bench-handoff"
OFFER_TIMEOUT_SECONDS = 600
CONCURRENCY = 64
"""Client calls in flight at once (starts and updates)."""
OFFER_WATCH = 0.1
"""Seconds between two reads of the ledger for new offers."""

DEFINITION = {
    "apiVersion": "opsflow/v1",
    "kind": "handoff",
    "metadata": {"name": "bench-handoff", "owner": "bench"},
    "spec": {
        "triggers": {"customer_asks": True, "bot_requests": True},
        "context": [
            "transcript",
            "intents",
            "attempts",
            "profile",
            "open_tickets",
            "sentiment",
            "summary",
        ],
        "routes": [{"name": "bench", "queue": QUEUE, "skills": [SKILL]}],
        "offer_timeout": f"{OFFER_TIMEOUT_SECONDS}s",
        "max_offers": 3,
        "max_wait": "4h",
        "notice": {"channel": "chat", "template": "handoff-waiting"},
        "fallback": [{"type": "schedule_callback", "queue": QUEUE, "within": "4h"}],
        "escalation_policy": "bench-none",
    },
}


@dataclass
class Result(Measured):
    """The unit is a conversation handed off, from the request to its workflow's end."""

    offer_latencies_ms: list[float] = field(default_factory=list)


# Per side: start(event) -> handle; accept(handle, agent); resolve(handle).
Start = Callable[[EventEnvelope], Awaitable[WorkflowHandle[Any, Any]]]
Accepting = Callable[[WorkflowHandle[Any, Any], str], Awaitable[None]]
Resolving = Callable[[WorkflowHandle[Any, Any]], Awaitable[None]]


async def prepare_database(url: URL) -> list[str]:
    """Migrate and seed; add the bench queue and its agents. Returns customer ids."""
    upgrade(url)
    engine = create_engine(url)
    try:
        sessions = session_factory(engine)
        await seed_sandbox(sessions)
        async with sessions() as session, session.begin():
            customers = list(await session.scalars(select(SandboxCustomer)))
            languages = sorted({c.language for c in customers})
            session.add(
                SandboxQueue(
                    id=QUEUE,
                    name="Bench desk",
                    skills=[SKILL],
                    languages=languages,
                    timezone="UTC",
                    hours="24x7",
                )
            )
            now = utcnow()
            for n in range(1, AGENTS + 1):
                session.add(
                    SandboxAgent(
                        id=f"bench-{n:02d}",
                        name=f"Bench Agent {n}",
                        email=f"bench-{n:02d}@example.com",
                        team="bench",
                        skills=[SKILL],
                        languages=languages,
                        status="available",
                        capacity=1,
                        active_conversations=0,
                        status_since=now,
                    )
                )
        return sorted(c.id for c in customers)
    finally:
        await engine.dispose()


def request_event(conversation: str, customer: str) -> EventEnvelope:
    transcript = [
        TranscriptLine.model_validate({"from": "customer", "text": "My invoice is wrong"}),
        TranscriptLine.model_validate({"from": "bot", "text": "Here is our billing guide"}),
        TranscriptLine.model_validate({"from": "customer", "text": "I want to talk to a person"}),
    ]
    return handoff_request_event(
        conversation, customer, "customer asked for a person", transcript, ["faq:billing"]
    )


ENDED_UNOFFERED = ("-callback_scheduled", "-abandoned", "-returned_to_bot")
"""Ledger steps of a conversation that ended without a person: the benchmark stops there."""


class OfferWatch:
    """The first offer of each conversation, as its workflow records it in the ledger."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self._sessions = sessions
        self._read_up_to = 0
        self._offers: dict[str, tuple[str, datetime] | str] = {}
        self._waiting: dict[str, asyncio.Future[tuple[str, datetime]]] = {}

    async def offer(self, workflow_id: str) -> tuple[str, datetime]:
        """The agent offered and the offer's moment, once the workflow has offered; raises
        when the conversation ended without an offer (a side that fails must not hang)."""
        future = self._waiting.setdefault(workflow_id, asyncio.get_running_loop().create_future())
        self._settle(workflow_id)
        return await future

    def _settle(self, workflow_id: str) -> None:
        seen, waiting = self._offers.get(workflow_id), self._waiting.get(workflow_id)
        if seen is None or waiting is None or waiting.done():
            return
        if isinstance(seen, str):
            waiting.set_exception(RuntimeError(f"{workflow_id} ended {seen} before an offer"))
        else:
            waiting.set_result(seen)

    async def watch(self) -> None:
        """Read new offer (and early end) rows until cancelled (SQLite numbers rows in
        commit order)."""
        wanted = [LedgerEntry.step.endswith(end) for end in ("-offered", *ENDED_UNOFFERED)]
        while True:
            async with self._sessions() as session:
                rows = await session.execute(
                    select(LedgerEntry.id, LedgerEntry.workflow_id, LedgerEntry.step)
                    .add_columns(LedgerEntry.detail, LedgerEntry.at)
                    .where(LedgerEntry.id > self._read_up_to, or_(*wanted))
                    .order_by(LedgerEntry.id)
                )
                for row_id, workflow_id, step, detail, at in rows:
                    self._read_up_to = row_id
                    seen = (str(detail["agent"]), at) if step.endswith("-offered") else step
                    self._offers.setdefault(workflow_id, seen)
                    self._settle(workflow_id)
            await asyncio.sleep(OFFER_WATCH)


async def _drive(
    conversations: int,
    customers: list[str],
    offers: OfferWatch,
    start: Start,
    accept: Accepting,
    resolve: Resolving,
) -> tuple[float, list[float]]:
    """Request N handoffs at once; accept each offer, resolve, wait for the end."""
    gate = asyncio.Semaphore(CONCURRENCY)
    latencies: list[float] = []
    run_id = uuid.uuid4().hex[:6]

    async def one(n: int) -> None:
        event = request_event(f"BENCH-{run_id}-{n}", customers[n % len(customers)])
        async with gate:
            sent = datetime.now(UTC)
            handle = await start(event)
        agent, offered_at = await offers.offer(handle.id)
        latencies.append((offered_at - sent).total_seconds() * 1000)
        async with gate:
            await accept(handle, agent)
        async with gate:
            await resolve(handle)
        await handle.result()

    watching = asyncio.create_task(offers.watch())
    try:
        watch = Stopwatch()
        await asyncio.gather(*(one(n) for n in range(conversations)))
        return watch.seconds, latencies
    finally:
        watching.cancel()


async def _run(
    name: str,
    client: Client,
    worker: WorkerProcess,
    queue: str,
    conversations: int,
    customers: list[str],
    sessions: async_sessionmaker[AsyncSession],
    sides: tuple[Start, Accepting, Resolving],
) -> Result:
    try:
        await wait_for_poller(client, queue)
        worker.mark()
        offers = OfferWatch(sessions)
        seconds, latencies = await _drive(conversations, customers, offers, *sides)
    except BaseException:
        worker.kill()
        raise
    usage = worker.stop()
    return Result(name, conversations, seconds, usage.cpu_seconds, usage.peak_rss_mib, latencies)


async def run_opsflow(
    client: Client,
    env: dict[str, str],
    conversations: int,
    customers: list[str],
    sessions: async_sessionmaker[AsyncSession],
) -> Result:
    queue = f"bench-opsflow-{uuid.uuid4().hex[:6]}"
    definition = PinnedDefinition(
        name="bench-handoff",
        version=1,
        content_hash=content_hash(DEFINITION),
        kind="handoff",
        definition=definition_adapter.validate_python(DEFINITION),
    )
    start_input = HandoffInput(definition=definition, escalation_policy=None)

    async def start(event: EventEnvelope) -> WorkflowHandle[Any, Any]:
        return await signal_with_start(client, queue, start_input, event)

    async def accept(handle: WorkflowHandle[Any, Any], agent: str) -> None:
        await handle.execute_update(HandoffWorkflow.accept, Accept(agent=agent))

    async def resolve(handle: WorkflowHandle[Any, Any]) -> None:
        await handle.execute_update(HandoffWorkflow.resolve, Resolve(by="bench"))

    sides = (start, accept, resolve)
    opsflow = str(Path(sys.executable).parent / "opsflow")
    worker = WorkerProcess([opsflow, "worker"], {**env, "OPSFLOW_TASK_QUEUE": queue})
    return await _run("opsflow", client, worker, queue, conversations, customers, sessions, sides)


async def run_baseline(
    client: Client,
    env: dict[str, str],
    conversations: int,
    customers: list[str],
    sessions: async_sessionmaker[AsyncSession],
    baseline: tuple[str, Sequence[str]],
) -> Result:
    name, worker_args = baseline
    queue = f"bench-plain-{uuid.uuid4().hex[:6]}"
    args = {
        "queue": QUEUE,
        "skills": [SKILL],
        "fallback_seconds": AGENT_FALLBACK.total_seconds(),
        "offer_timeout_seconds": OFFER_TIMEOUT_SECONDS,
    }

    async def start(event: EventEnvelope) -> WorkflowHandle[Any, Any]:
        conversation = str(event.data["conversation_id"])
        pairs: list[SearchAttributePair[Any]] = [
            SearchAttributePair(sa.OPS_KIND, "plain-handoff"),
            SearchAttributePair(sa.OPS_STATE, "bot"),
            SearchAttributePair(sa.OPS_CUSTOMER_ID, str(event.data["customer_id"])),
        ]
        return await client.start_workflow(
            "PlainHandoff",
            args,
            id=f"plain-handoff-{conversation}",
            task_queue=queue,
            start_signal="event",
            start_signal_args=[event],
            search_attributes=TypedSearchAttributes(pairs),
        )

    async def accept(handle: WorkflowHandle[Any, Any], agent: str) -> None:
        await handle.execute_update("accept", agent)

    async def resolve(handle: WorkflowHandle[Any, Any]) -> None:
        await handle.execute_update("resolve")

    sides = (start, accept, resolve)
    worker = baseline_worker("bench.baseline_handoff", queue, env, worker_args)
    return await _run(name, client, worker, queue, conversations, customers, sessions, sides)


SIDES = (*(name for name, _ in BASELINES), "opsflow")


def report(results: Sequence[Result]) -> None:
    print(
        f"{'':16} {'handoffs/s':>10} {'wall s':>8} {'CPU ms/conv':>12} {'peak RSS MiB':>13}"
        f" {'offer p50 ms':>13} {'offer p99 ms':>13}"
    )
    for r in results:
        print(
            f"{r.name:16} {r.per_second:10.2f} {r.seconds:8.2f} {r.cpu_ms_per_unit:12.1f}"
            f" {r.peak_rss_mib:13.1f} {percentile(r.offer_latencies_ms, 50):13.1f}"
            f" {percentile(r.offer_latencies_ms, 99):13.1f}"
        )
    opsflow = [r for r in results if r.name == "opsflow"]
    baselines = [r for r in results if r.name != "opsflow"]
    if opsflow and baselines:
        print_goals(opsflow[0], baselines, "conversation")


def chosen_sides(text: str) -> list[str]:
    sides = [side.strip() for side in text.split(",") if side.strip()]
    unknown = [side for side in sides if side not in SIDES]
    if unknown or not sides:
        raise argparse.ArgumentTypeError(
            f"unknown side {', '.join(unknown) or '(none)'}: choose from {', '.join(SIDES)}"
        )
    return sides


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--conversations", type=int, default=1000)
    parser.add_argument(
        "--sides",
        type=chosen_sides,
        default=list(SIDES),
        help=f"comma-separated, from: {', '.join(SIDES)} (default: all)",
    )
    args = parser.parse_args()
    results: list[Result] = []
    with tempfile.TemporaryDirectory() as folder:
        url = make_url(f"sqlite:///{folder}/bench.db")
        customers = await prepare_database(url)
        async with in_memory_dev_server() as server:
            address = server.client.service_client.config.target_host
            env = {
                "OPSFLOW_TEMPORAL_ADDRESS": address,
                "OPSFLOW_DATABASE_URL": str(url),
                "OPSFLOW_LOG_LEVEL": "warning",
                "OPSFLOW_DATA_DIR": folder,
            }
            n = args.conversations
            engine = create_engine(url)
            sessions = session_factory(engine)
            try:
                for baseline in BASELINES:
                    if baseline[0] in args.sides:
                        result = await run_baseline(
                            server.client, env, n, customers, sessions, baseline
                        )
                        results.append(result)
                if "opsflow" in args.sides:
                    result = await run_opsflow(server.client, env, n, customers, sessions)
                    results.append(result)
            finally:
                await engine.dispose()
    print(
        f"handoff benchmark: {args.conversations} conversations, {AGENTS} bench agents of "
        "capacity 1; every side waits in line, woken by a release (and looks again every "
        f"{AGENT_FALLBACK.total_seconds():.0f} s); in-memory dev server, each worker in its "
        "own process"
    )
    report(results)


if __name__ == "__main__":
    asyncio.run(main())
