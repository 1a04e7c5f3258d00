"""Benchmark: roll a change out to 25% of a 100,000-customer sandbox and roll it back, with
opsflow's rollout workflow and with a hand-written plain Temporal workflow that calls the same
activities with the same batch sizes (bench/baseline_rollout.py), in the same run.

Both run on the same in-memory dev server, each with a worker process of its own and its
own copy of the same seeded app database (SQLite). Two phases (5%, then 25%); during the 25%
bake the rollout is aborted, which reverts each phase's own customers (last phase first)
and sends each exposed customer one notice. Printed: cohort selection time (in process, and
the `crm.select_cohort` activity), customers reverted and notified per second (over the
`changes.revert` and `rollout.notify_phase_customers` activities' own durations, from the
histories), wall times, worker CPU and peak RSS, and the ratios.

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
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy.engine import make_url
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client, WorkflowHandle

from activities.adapters.sandbox import SandboxCrm
from activities.models import CohortSpec
from bench.harness import (
    Stopwatch,
    WorkerProcess,
    WorkerUsage,
    in_memory_dev_server,
    python_module,
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
class Result:
    name: str
    seconds: float
    rollback_seconds: float
    reverted: int
    notified: int
    usage: WorkerUsage
    activity_seconds: dict[str, float] = field(default_factory=dict)
    activity_calls: dict[str, int] = field(default_factory=dict)

    def per_second(self, count: int, activity: str) -> float:
        spent = self.activity_seconds.get(activity, 0.0)
        return count / spent if spent else float("nan")

    @property
    def reverted_per_second(self) -> float:
        return self.per_second(self.reverted, "changes.revert")

    @property
    def notified_per_second(self) -> float:
        return self.per_second(self.notified, "rollout.notify_phase_customers")


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
    rollback_seconds, seconds = rollback.seconds, watch.seconds
    status = await rollout_state(client, change_id)
    await started.handle.terminate("benchmark over")  # it would wait 7 days for a retry
    times, calls = await _activity_times(started.handle)
    return Result(
        "opsflow",
        seconds,
        rollback_seconds,
        status.customers_reverted,
        status.customers_notified,
        worker.stop(),
        times,
        calls,
    )


async def run_baseline(client: Client, env: dict[str, str], percent: float) -> Result:
    queue = f"bench-plain-{uuid.uuid4().hex[:6]}"
    worker = WorkerProcess(
        python_module("bench.baseline_rollout", "--task-queue", queue),
        {**env, "OPSFLOW_TASK_QUEUE": queue},
    )
    try:
        return await _drive_baseline(client, queue, worker, percent)
    finally:
        if worker.process.poll() is None:
            worker.process.kill()


async def _drive_baseline(
    client: Client, queue: str, worker: WorkerProcess, percent: float
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
    rollback_seconds, seconds = rollback.seconds, watch.seconds
    times, calls = await _activity_times(handle)
    return Result(
        "plain Temporal",
        seconds,
        rollback_seconds,
        reverted,
        notified,
        worker.stop(),
        times,
        calls,
    )


def report(baseline: Result, opsflow: Result, customers: int, percent: float) -> None:
    print(
        f"rollout benchmark: {customers} customers, phases {PILOT:g}% then {percent:g}%, "
        "abort during the last bake, in-memory dev server, 2 workers in their own processes"
    )
    header = (
        f"{'':16} {'wall s':>8} {'rollback s':>11} {'reverted':>9} {'reverted/s':>11}"
        f" {'notified':>9} {'notified/s':>11} {'select s':>9} {'CPU s':>7} {'peak RSS MiB':>13}"
    )
    print(header)
    for r in (baseline, opsflow):
        select = r.activity_seconds.get("crm.select_cohort", float("nan")) / max(
            r.activity_calls.get("crm.select_cohort", 1), 1
        )
        print(
            f"{r.name:16} {r.seconds:8.2f} {r.rollback_seconds:11.2f} {r.reverted:9d}"
            f" {r.reverted_per_second:11.0f} {r.notified:9d} {r.notified_per_second:11.0f}"
            f" {select:9.2f} {r.usage.cpu_seconds:7.2f} {r.usage.peak_rss_mib:13.1f}"
        )
    print(
        "activity seconds (opsflow / plain): "
        + ", ".join(
            f"{name} {opsflow.activity_seconds.get(name, 0):.2f}/"
            f"{baseline.activity_seconds.get(name, 0):.2f}"
            for name in TIMED
        )
    )
    print(
        f"rollback wall ratio (opsflow / plain): "
        f"{opsflow.rollback_seconds / baseline.rollback_seconds:.2f}"
    )
    print(
        f"notified/s ratio (plain / opsflow): "
        f"{baseline.notified_per_second / opsflow.notified_per_second:.2f}"
    )
    print(
        f"reverted/s ratio (plain / opsflow): "
        f"{baseline.reverted_per_second / opsflow.reverted_per_second:.2f}"
    )
    cpu = opsflow.usage.cpu_seconds / baseline.usage.cpu_seconds
    print(f"worker CPU ratio (opsflow / plain): {cpu:.2f}")


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
        for side in ("plain", "opsflow"):
            shutil.copyfile(f"{folder}/bench.db", f"{folder}/{side}.db")
            copies[side] = str(make_url(f"sqlite:///{folder}/{side}.db"))
        async with in_memory_dev_server() as server:
            address = server.client.service_client.config.target_host
            env = {
                "OPSFLOW_TEMPORAL_ADDRESS": address,
                "OPSFLOW_LOG_LEVEL": "warning",
                "OPSFLOW_DATA_DIR": folder,
            }
            baseline = await run_baseline(
                server.client, {**env, "OPSFLOW_DATABASE_URL": copies["plain"]}, args.percent
            )
            opsflow = await run_opsflow(
                server.client, {**env, "OPSFLOW_DATABASE_URL": copies["opsflow"]}, args.percent
            )
    report(baseline, opsflow, args.customers, args.percent)


if __name__ == "__main__":
    asyncio.run(main())
