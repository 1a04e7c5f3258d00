"""Benchmark: roll a change out to 25% of a 100,000-customer sandbox and roll it back, with
opsflow's rollout workflow and with a hand-written plain Temporal workflow that calls the same
activities with the same batch sizes (bench/baseline_rollout.py), served naive (the SDK's
default sandbox) and tuned (every module passed through), in the same run.

All run on the same in-memory dev server, each with a worker process of its own and its
own copy of the same seeded app database (SQLite). Two phases (5%, then 25%); during the 25%
bake the rollout is aborted, which reverts each phase's own customers (last phase first)
and sends each exposed customer one notice. Printed: cohort selection time (in process, and
the `crm.select_cohort` activity), customers reverted and notified per second (over the
`changes.revert` and `rollout.notify_phase_customers` activities' own durations, from the
histories), wall times, worker CPU and peak RSS, and the ratios against both baselines
(customers rolled back per second from the abort; the goals judged against the tuned one).

    .venv/bin/python -m bench.rollout [--customers 100000] [--percent 25]
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import sys
import tempfile
import time
import uuid
from collections import defaultdict
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy.engine import make_url
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client, WorkflowHandle

from activities.adapters.sandbox import SandboxCrm
from activities.models import CohortSpec
from bench.harness import (
    BASELINES,
    Goal,
    Measured,
    Stopwatch,
    WorkerProcess,
    WorkerUsage,
    baseline_worker,
    in_memory_dev_server,
    print_goals,
    wait_for_poller,
)
from client.rollouts import command_rollout, rollout_state, start_rollout
from definitions.loader import content_hash
from definitions.models import PinnedDefinition, definition_adapter
from store.db import create_engine, session_factory
from store.migrate import upgrade
from store.seed import seed_sandbox
from workflows.rollout_model import ChangeRequest, Reason

FLAG = "bench-flag"
PILOT = 5.0
TIMED = ("crm.select_cohort", "changes.apply", "changes.revert", "rollout.notify_phase_customers")


def plan(percent: float) -> PinnedDefinition:
    document = {
        "apiVersion": "opsflow/v1",
        "kind": "rollout",
        "metadata": {"name": "bench-rollout", "owner": "bench"},
        "spec": {
            "change": {"key": FLAG, "value": "on"},
            "impact": {"risk": "standard"},
            "approvals": {"group": "bench", "required": 1, "timeout": "4h"},
            "windows": "24x7",
            "analysis": {"interval": "1s", "min_samples": 1},
            "phases": [
                {"name": "pilot", "cohort": {"percent": PILOT}, "bake": "1s", "checks": []},
                {"name": "quarter", "cohort": {"percent": percent}, "bake": "1h", "checks": []},
            ],
            "rollback": {"notify": {"channel": "email", "template": "change-rolled-back"}},
        },
    }
    return PinnedDefinition(
        name="bench-rollout",
        version=1,
        content_hash=content_hash(document),
        kind="rollout",
        definition=definition_adapter.validate_python(document),
    )


@dataclass
class Result(Measured):
    """The unit is a customer rolled back: `units` customers reverted in `seconds` from the
    abort to rolled back; the worker's CPU counts the whole rollout (apply, bake, rollback)."""

    total_seconds: float = 0.0
    notified: int = 0
    activity_seconds: dict[str, float] = field(default_factory=dict)
    activity_calls: dict[str, int] = field(default_factory=dict)

    @classmethod
    def of(
        cls,
        name: str,
        timings: tuple[float, float],
        counts: tuple[int, int],
        usage: WorkerUsage,
        activities: tuple[dict[str, float], dict[str, int]],
    ) -> Result:
        """From the whole run's and the rollback's seconds, (reverted, notified), the
        worker's usage and the activities' (seconds, calls)."""
        (whole, rollback), (reverted, notified) = timings, counts
        return cls(
            name,
            reverted,
            rollback,
            usage.cpu_seconds,
            usage.peak_rss_mib,
            whole,
            notified,
            *activities,
        )

    @property
    def reverted(self) -> int:
        return self.units

    def activity_rate(self, count: int, activity: str) -> float:
        spent = self.activity_seconds.get(activity, 0.0)
        return count / spent if spent else float("nan")

    @property
    def reverted_per_second(self) -> float:
        return self.activity_rate(self.reverted, "changes.revert")

    @property
    def notified_per_second(self) -> float:
        return self.activity_rate(self.notified, "rollout.notify_phase_customers")


async def _until(check: Callable[[], Awaitable[bool]], seconds: float = 600) -> None:
    deadline = time.monotonic() + seconds
    while not await check():
        if time.monotonic() > deadline:
            raise RuntimeError("the rollout never reached the last phase's bake")
        await asyncio.sleep(0.1)


async def _activity_times(
    handle: WorkflowHandle[Any, Any],
) -> tuple[dict[str, float], dict[str, int]]:
    """Seconds from scheduled to completed, summed per activity type, and calls per type."""
    scheduled: dict[int, tuple[str, float]] = {}
    seconds: dict[str, float] = defaultdict(float)
    calls: dict[str, int] = defaultdict(int)
    async for event in handle.fetch_history_events():
        at = event.event_time.ToDatetime().timestamp()
        if event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
            name = event.activity_task_scheduled_event_attributes.activity_type.name
            scheduled[event.event_id] = (name, at)
        elif event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_COMPLETED:
            name, began = scheduled[
                event.activity_task_completed_event_attributes.scheduled_event_id
            ]
            seconds[name] += at - began
            calls[name] += 1
    return dict(seconds), dict(calls)


async def run_opsflow(client: Client, env: dict[str, str], percent: float) -> Result:
    queue = f"bench-opsflow-{uuid.uuid4().hex[:6]}"
    opsflow = str(Path(sys.executable).parent / "opsflow")
    worker = WorkerProcess([opsflow, "worker"], {**env, "OPSFLOW_TASK_QUEUE": queue})
    try:
        return await _drive_opsflow(client, queue, worker, percent)
    finally:
        if worker.process.poll() is None:
            worker.process.kill()


async def _drive_opsflow(
    client: Client, queue: str, worker: WorkerProcess, percent: float
) -> Result:
    await wait_for_poller(client, queue)
    change_id = f"BENCH-{uuid.uuid4().hex[:6]}"
    watch = Stopwatch()
    started = await start_rollout(
        client,
        queue,
        ChangeRequest(change_id=change_id, owner="bench", reason="benchmark"),
        plan(percent),
    )

    async def quarter_baking() -> bool:
        status = await rollout_state(client, change_id)
        return status.stage == "quarter" and status.state == "baking"

    await _until(quarter_baking)
    rollback = Stopwatch()
    await command_rollout(client, change_id, "abort", Reason(reason="benchmark"))

    async def rolled_back() -> bool:
        return (await rollout_state(client, change_id)).state == "rolled_back"

    await _until(rolled_back)
    timings = (watch.seconds, rollback.seconds)
    status = await rollout_state(client, change_id)
    await started.handle.terminate("benchmark over")  # it would wait 7 days for a retry
    counts = (status.customers_reverted, status.customers_notified)
    usage = worker.stop()
    return Result.of("opsflow", timings, counts, usage, await _activity_times(started.handle))


async def run_baseline(
    client: Client, env: dict[str, str], percent: float, name: str, worker_args: Sequence[str]
) -> Result:
    queue = f"bench-plain-{uuid.uuid4().hex[:6]}"
    worker = baseline_worker("bench.baseline_rollout", queue, env, worker_args)
    try:
        return await _drive_baseline(client, queue, worker, percent, name)
    finally:
        if worker.process.poll() is None:
            worker.process.kill()


async def _drive_baseline(
    client: Client, queue: str, worker: WorkerProcess, percent: float, name: str
) -> Result:
    await wait_for_poller(client, queue)
    change_id = f"PLAIN-{uuid.uuid4().hex[:6]}"
    watch = Stopwatch()
    handle: WorkflowHandle[Any, Any] = await client.start_workflow(
        "PlainRollout",
        [change_id, FLAG, f"{PILOT}:1", f"{percent}:3600"],
        id=f"plain-rollout-{change_id}",
        task_queue=queue,
    )

    async def quarter_baking() -> bool:
        applied: int = await handle.query("phases_applied", result_type=int)
        return applied == 2

    await _until(quarter_baking)
    rollback = Stopwatch()
    await handle.execute_update("abort")
    reverted, notified = await handle.result()
    timings = (watch.seconds, rollback.seconds)
    usage = worker.stop()
    return Result.of(name, timings, (reverted, notified), usage, await _activity_times(handle))


def report(baselines: Sequence[Result], opsflow: Result, customers: int, percent: float) -> None:
    print(
        f"rollout benchmark: {customers} customers, phases {PILOT:g}% then {percent:g}%, "
        "abort during the last bake, in-memory dev server, each worker in its own process"
    )
    header = (
        f"{'':16} {'wall s':>8} {'rollback s':>11} {'reverted':>9} {'reverted/s':>11}"
        f" {'notified':>9} {'notified/s':>11} {'select s':>9} {'CPU s':>7} {'peak RSS MiB':>13}"
    )
    print(header)
    for r in (*baselines, opsflow):
        select = r.activity_seconds.get("crm.select_cohort", float("nan")) / max(
            r.activity_calls.get("crm.select_cohort", 1), 1
        )
        print(
            f"{r.name:16} {r.total_seconds:8.2f} {r.seconds:11.2f} {r.reverted:9d}"
            f" {r.reverted_per_second:11.0f} {r.notified:9d} {r.notified_per_second:11.0f}"
            f" {select:9.2f} {r.cpu_seconds:7.2f} {r.peak_rss_mib:13.1f}"
        )
    for baseline in baselines:
        print(
            f"activity seconds (opsflow / {baseline.name}): "
            + ", ".join(
                f"{name} {opsflow.activity_seconds.get(name, 0):.2f}/"
                f"{baseline.activity_seconds.get(name, 0):.2f}"
                for name in TIMED
            )
        )
    print("throughput: customers rolled back per second, from the abort to rolled back")

    def activity_rates(opsflow: Result, baseline: Result) -> list[Goal]:
        # shown, not judged: the same activities do this work on both sides
        return [
            Goal("reverted/s", opsflow.reverted_per_second / baseline.reverted_per_second),
            Goal("notified/s", opsflow.notified_per_second / baseline.notified_per_second),
        ]

    print_goals(opsflow, baselines, "customer rolled back", activity_rates)


async def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--customers", type=int, default=100_000)
    parser.add_argument("--percent", type=float, default=25.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        url = make_url(f"sqlite:///{folder}/bench.db")
        upgrade(url)
        engine = create_engine(url)
        sessions = session_factory(engine)
        watch = Stopwatch()
        await seed_sandbox(sessions, customer_count=args.customers)
        print(f"seeded {args.customers} customers in {watch.seconds:.1f} s")
        watch = Stopwatch()
        members = await SandboxCrm(sessions).cohort_members(
            CohortSpec(seed="bench", percent=args.percent)
        )
        print(
            f"cohort selection in process: {len(members.customer_ids)} of {members.eligible} "
            f"customers ({args.percent:g}%) in {watch.seconds * 1000:.0f} ms"
        )
        await engine.dispose()
        # Each side gets its own copy of the seeded database: the second run must not pay
        # for the first one's rows (sandbox_notifications.idempotency_key has no index).
        copies = {}
        for number, side in enumerate([name for name, _ in BASELINES] + ["opsflow"]):
            shutil.copyfile(f"{folder}/bench.db", f"{folder}/side-{number}.db")
            copies[side] = str(make_url(f"sqlite:///{folder}/side-{number}.db"))
        async with in_memory_dev_server() as server:
            address = server.client.service_client.config.target_host
            env = {
                "OPSFLOW_TEMPORAL_ADDRESS": address,
                "OPSFLOW_LOG_LEVEL": "warning",
                "OPSFLOW_DATA_DIR": folder,
            }
            baselines = [
                await run_baseline(
                    server.client,
                    {**env, "OPSFLOW_DATABASE_URL": copies[name]},
                    args.percent,
                    name,
                    worker_args,
                )
                for name, worker_args in BASELINES
            ]
            opsflow = await run_opsflow(
                server.client, {**env, "OPSFLOW_DATABASE_URL": copies["opsflow"]}, args.percent
            )
    report(baselines, opsflow, args.customers, args.percent)


if __name__ == "__main__":
    asyncio.run(main())
