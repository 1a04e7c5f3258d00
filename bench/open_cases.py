"""Benchmark: many open escalation cases waiting for days on one worker, opsflow against the
tuned hand-written plain workflow (bench/baseline_escalation.py, every module passed
through) at the same count, in the same run.

Each side opens N cases (default 10,000) on a worker process of its own, on the same
in-memory dev server and app database. A case's first level falls due after a day, so once
a case has opened (its `opened` ledger row) and set its first timer it only waits. Printed:

- start rate: cases per second from the first start until every case has opened;
- the worker while idle: once every case has opened and the worker's CPU has settled, its
  RSS and CPU sampled for a minute (`--idle-seconds`), and its peak RSS;
- per case, from the histories of a sample of cases (`--sample`): history events and the
  actions Temporal Cloud bills (starts, timers, activities, signals and updates, search
  attribute upserts; markers, e.g. patches and side effects, shown apart).

The goal (issue 21): the idle worker's RSS <= 1.3x the plain worker's.

    .venv/bin/python -m bench.open_cases [--cases 10000] [--idle-seconds 60] [--sample 50]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client

from bench.harness import (
    BASELINES,
    JUDGED_BASELINE,
    Goal,
    Stopwatch,
    WorkerProcess,
    baseline_worker,
    in_memory_dev_server,
    settled,
    wait_for_poller,
)
from definitions.loader import content_hash
from definitions.models import PinnedDefinition, definition_adapter
from store.db import create_engine, session_factory
from store.migrate import upgrade
from store.models import LedgerEntry
from store.seed import seed_sandbox
from workflows.escalation import CaseInfo, EscalationWorkflow
from workflows.escalation import EscalationInput as OpenCase

CONCURRENCY = 64
"""Starts in flight at once."""
DAY_SECONDS = 86_400
Sessions = async_sessionmaker[AsyncSession]

POLICY = {
    "apiVersion": "opsflow/v1",
    "kind": "escalation",
    "metadata": {"name": "bench-open-cases", "owner": "bench"},
    "spec": {
        "priorities": ["p1"],
        "calendar": "24x7",
        "slas": [{"priority": "p1", "first_response": "3d", "resolution": "7d"}],
        "levels": [
            {
                "after": f"{n}d",
                "actions": [
                    {
                        "type": "notify",
                        "channel": "email",
                        "to": ["queue:support"],
                        "template": "case-escalated",
                    }
                ],
            }
            for n in (1, 2, 3)
        ],
    },
}

BILLED: dict[str, tuple[int, ...]] = {
    "starts": (EventType.EVENT_TYPE_WORKFLOW_EXECUTION_STARTED,),
    "timers": (EventType.EVENT_TYPE_TIMER_STARTED,),
    "activities": (EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED,),
    "signals/updates": (
        EventType.EVENT_TYPE_WORKFLOW_EXECUTION_SIGNALED,
        EventType.EVENT_TYPE_WORKFLOW_EXECUTION_UPDATE_ACCEPTED,
    ),
    "upserts": (
        EventType.EVENT_TYPE_UPSERT_WORKFLOW_SEARCH_ATTRIBUTES,
        EventType.EVENT_TYPE_WORKFLOW_PROPERTIES_MODIFIED,
    ),
}
"""The history events of the actions Temporal Cloud bills, by the issue's kinds."""
MARKERS = EventType.EVENT_TYPE_MARKER_RECORDED


@dataclass
class Side:
    name: str
    cases: int
    start_seconds: float = 0.0
    idle_seconds: float = 0.0
    idle_cpu_seconds: float = 0.0
    idle_rss_mib: list[float] = field(default_factory=list)
    peak_rss_mib: float = 0.0
    sampled: int = 0
    events: int = 0
    actions: Counter[str] = field(default_factory=Counter)

    @property
    def starts_per_second(self) -> float:
        return self.cases / self.start_seconds

    @property
    def rss_mib(self) -> float:
        """The idle worker's RSS: the median of the samples."""
        return statistics.median(self.idle_rss_mib) if self.idle_rss_mib else float("nan")

    @property
    def idle_cpu_percent(self) -> float:
        return self.idle_cpu_seconds * 100 / self.idle_seconds if self.idle_seconds else 0.0

    def per_case(self, count: int) -> float:
        return count / self.sampled if self.sampled else float("nan")

    @property
    def billed_per_case(self) -> float:
        return self.per_case(sum(self.actions[kind] for kind in BILLED))


async def opened_count(sessions: Sessions, prefix: str) -> int:
    async with sessions() as session:
        found = await session.scalar(
            select(func.count())
            .select_from(LedgerEntry)
            .where(
                LedgerEntry.workflow_id.startswith(prefix, autoescape=True),
                LedgerEntry.step == "opened",
            )
        )
    return int(found or 0)


async def count_history(client: Client, side: Side, ids: list[str]) -> None:
    """History events and billed actions of the cases `ids`, added to `side`."""
    for workflow_id in ids:
        side.sampled += 1
        async for event in client.get_workflow_handle(workflow_id).fetch_history_events():
            side.events += 1
            for kind, types in BILLED.items():
                if event.event_type in types:
                    side.actions[kind] += 1
            if event.event_type == MARKERS:
                side.actions["markers"] += 1


Start = Callable[[int], Awaitable[Any]]


async def run_side(
    client: Client,
    sessions: Sessions,
    side: Side,
    worker: WorkerProcess,
    queue: str,
    prefix: str,
    start: Start,
    options: argparse.Namespace,
) -> Side:
    """Open `side.cases` cases with `start(n)` (workflow ids `prefix` + n), wait until all
    have opened and the worker settled, then watch the idle worker and read a sample."""
    try:
        await wait_for_poller(client, queue)
        gate = asyncio.Semaphore(CONCURRENCY)

        async def one(n: int) -> None:
            async with gate:
                await start(n)

        watch = Stopwatch()
        await asyncio.gather(*(one(n) for n in range(side.cases)))
        while await opened_count(sessions, prefix) < side.cases:
            if watch.seconds > options.limit:
                raise RuntimeError(f"{side.name}: not every case opened in {options.limit} s")
            await asyncio.sleep(0.5)
        side.start_seconds = watch.seconds
        await settled(worker)
        worker.mark()
        idle = Stopwatch()
        while idle.seconds < options.idle_seconds:
            side.idle_rss_mib.append(worker.rss_mib())
            await asyncio.sleep(1.0)
        side.idle_seconds = idle.seconds
        usage = worker.measure()
        side.idle_cpu_seconds, side.peak_rss_mib = usage.cpu_seconds, usage.peak_rss_mib
    except BaseException:
        worker.kill()
        raise
    worker.stop()
    step = max(side.cases // options.sample, 1)
    await count_history(client, side, [f"{prefix}{n}" for n in range(0, side.cases, step)])
    return side


async def run_opsflow(
    client: Client,
    env: dict[str, str],
    sessions: Sessions,
    options: argparse.Namespace,
) -> Side:
    queue = f"bench-open-{uuid.uuid4().hex[:6]}"
    opsflow = str(Path(sys.executable).parent / "opsflow")
    worker = WorkerProcess([opsflow, "worker"], {**env, "OPSFLOW_TASK_QUEUE": queue})
    policy = PinnedDefinition(
        name="bench-open-cases",
        version=1,
        content_hash=content_hash(POLICY),
        kind="escalation",
        definition=definition_adapter.validate_python(POLICY),
    )
    run_id = uuid.uuid4().hex[:6]
    prefix = f"case-O{run_id}-"

    async def start(n: int) -> Any:
        case = CaseInfo(
            ticket_id=f"O{run_id}-{n}",
            customer_id=f"C-{n % 50 + 1:04d}",
            priority="p1",
            opened_at=datetime.now(UTC),
        )
        return await client.start_workflow(
            EscalationWorkflow.run,
            OpenCase(case=case, policy=policy),
            id=f"{prefix}{n}",
            task_queue=queue,
        )

    side = Side("opsflow", options.cases)
    return await run_side(client, sessions, side, worker, queue, prefix, start, options)


async def run_plain(
    client: Client,
    env: dict[str, str],
    sessions: Sessions,
    options: argparse.Namespace,
) -> Side:
    name, worker_args = next(b for b in BASELINES if b[0] == JUDGED_BASELINE)
    queue = f"bench-plain-open-{uuid.uuid4().hex[:6]}"
    worker = baseline_worker("bench.baseline_escalation", queue, env, worker_args)
    prefix = f"plain-open-{uuid.uuid4().hex[:6]}-"

    async def start(n: int) -> Any:
        return await client.start_workflow(
            "PlainEscalation",
            [f"C-{n % 50 + 1:04d}", str(DAY_SECONDS)],
            id=f"{prefix}{n}",
            task_queue=queue,
        )

    side = Side(name, options.cases)
    return await run_side(client, sessions, side, worker, queue, prefix, start, options)


def report(plain: Side, opsflow: Side, options: argparse.Namespace) -> None:
    print(
        f"open cases benchmark: {options.cases} escalation cases waiting for days, one worker "
        f"per side, idle for {options.idle_seconds:.0f} s, histories of {opsflow.sampled} "
        "cases per side, in-memory dev server"
    )
    print(
        f"{'':16} {'starts/s':>9} {'idle RSS MiB':>13} {'peak RSS MiB':>13} {'idle CPU %':>11}"
        f" {'events/case':>12} {'actions/case':>13}"
    )
    for side in (plain, opsflow):
        print(
            f"{side.name:16} {side.starts_per_second:9.1f} {side.rss_mib:13.1f}"
            f" {side.peak_rss_mib:13.1f} {side.idle_cpu_percent:11.2f}"
            f" {side.per_case(side.events):12.1f} {side.billed_per_case:13.1f}"
        )
    kinds = [*BILLED, "markers"]
    print("billable actions per case (markers are not among them):")
    print(f"{'':16} " + " ".join(f"{kind:>16}" for kind in kinds))
    for side in (plain, opsflow):
        print(
            f"{side.name:16} "
            + " ".join(f"{side.per_case(side.actions[kind]):16.2f}" for kind in kinds)
        )
    shown = [
        Goal("start rate", opsflow.starts_per_second / plain.starts_per_second),
        Goal("peak RSS", opsflow.peak_rss_mib / plain.peak_rss_mib),
        Goal("history events per case", opsflow.events / plain.events),
        Goal("billable actions per case", opsflow.billed_per_case / plain.billed_per_case),
    ]
    rss = Goal("idle worker RSS", opsflow.rss_mib / plain.rss_mib, 1.3)
    print(f"against {plain.name}: " + ", ".join(g.describe(judged=False) for g in shown))
    print(f"the goal: {rss.describe(judged=True)}")


async def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--cases", type=int, default=10_000)
    parser.add_argument("--idle-seconds", type=float, default=60.0)
    parser.add_argument("--sample", type=int, default=50, help="cases whose history is read")
    parser.add_argument(
        "--limit", type=float, default=3600.0, help="seconds allowed for every case to open"
    )
    options = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        url = make_url(f"sqlite:///{folder}/bench.db")
        upgrade(url)
        engine = create_engine(url)
        sessions = session_factory(engine)
        await seed_sandbox(sessions)
        try:
            async with in_memory_dev_server() as server:
                address = server.client.service_client.config.target_host
                env = {
                    "OPSFLOW_TEMPORAL_ADDRESS": address,
                    "OPSFLOW_DATABASE_URL": str(url),
                    "OPSFLOW_LOG_LEVEL": "warning",
                    "OPSFLOW_DATA_DIR": folder,
                }
                plain = await run_plain(server.client, env, sessions, options)
                opsflow = await run_opsflow(server.client, env, sessions, options)
        finally:
            await engine.dispose()
    report(plain, opsflow, options)


if __name__ == "__main__":
    asyncio.run(main())
