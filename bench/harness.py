"""Shared benchmark machinery: an in-memory dev server, worker processes, CPU and RSS.

Every benchmark runs opsflow and a hand-written plain-Temporal baseline in the same run,
each with its own worker process, so that the worker's CPU time and peak RSS are measured
for that process alone (getrusage of the waited child). The dev server runs in memory (no
--db-filename) so its SQLite fsyncs do not hide the engine's own cost.
"""

from __future__ import annotations

import asyncio
import os
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import WorkflowRunner

from activities.search_attributes import ALL as SEARCH_ATTRIBUTES
from worker.binaries import temporal_cli

ROOT = Path(__file__).resolve().parent.parent


@asynccontextmanager
async def in_memory_dev_server() -> AsyncIterator[WorkflowEnvironment]:
    env = await WorkflowEnvironment.start_local(
        dev_server_existing_path=str(temporal_cli()),
        search_attributes=SEARCH_ATTRIBUTES,
        data_converter=pydantic_data_converter,
        dev_server_log_level="error",
    )
    async with env:
        yield env


@dataclass
class WorkerUsage:
    cpu_seconds: float
    peak_rss_mib: float


class WorkerProcess:
    """A worker in a child process; `stop()` returns the CPU it used since `mark()` (so
    start-up and imports are not counted) and its peak RSS."""

    def __init__(self, command: Sequence[str], env: dict[str, str]) -> None:
        self.process = subprocess.Popen(
            list(command), env={**os.environ, **env}, cwd=ROOT, stdin=subprocess.DEVNULL
        )
        self._marked = 0.0

    def cpu_seconds(self) -> float:
        fields = Path(f"/proc/{self.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        ticks = int(fields[11]) + int(fields[12])  # utime + stime
        return ticks / os.sysconf("SC_CLK_TCK")

    def mark(self) -> None:
        """Start counting CPU from now (call once the worker polls)."""
        self._marked = self.cpu_seconds()

    def peak_rss_mib(self) -> float:
        """VmHWM of the live process (getrusage of children would mix several workers)."""
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
        return float("nan")

    def stop(self) -> WorkerUsage:
        peak = self.peak_rss_mib()
        cpu = self.cpu_seconds() - self._marked
        self.process.send_signal(signal.SIGTERM)
        self.process.wait(timeout=60)
        return WorkerUsage(cpu_seconds=cpu, peak_rss_mib=peak)

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


def python_module(module: str, *args: str) -> list[str]:
    return [sys.executable, "-m", module, *args]


def percentile(values: Sequence[float], pct: float) -> float:
    if not values:
        return float("nan")
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[int(pct) - 1]


class Stopwatch:
    def __init__(self) -> None:
        self.started = time.perf_counter()

    @property
    def seconds(self) -> float:
        return time.perf_counter() - self.started


async def serve_baseline(
    workflows: Sequence[type], *, workflow_runner: WorkflowRunner | None = None
) -> None:
    """A plain-Temporal baseline's worker process: `--task-queue Q`, opsflow's activities
    (the same calls as opsflow makes), settings from the environment, until SIGTERM.

    Two baselines: naive (`workflow_runner`, by default the SDK's default sandbox, which
    re-imports the workflow's modules for every run) and, with `--tuned`, the one an expert
    writes: the sandbox passing every module through (`with_passthrough_all_modules`), so
    nothing is imported again per run. Goals are judged against the tuned one."""
    import argparse

    from temporalio.worker import Worker
    from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner, SandboxRestrictions

    from activities.deps import ActivityDeps
    from client.logging import configure_logging
    from client.settings import load_settings
    from client.temporal import connect
    from store.db import create_engine, session_factory
    from worker.assembly import activity_functions
    from worker.runner import stop_on_signals

    parser = argparse.ArgumentParser()
    parser.add_argument("--task-queue", required=True)
    parser.add_argument("--tuned", action="store_true", help="pass every module through")
    args = parser.parse_args()
    if args.tuned:
        workflow_runner = SandboxedWorkflowRunner(
            restrictions=SandboxRestrictions.default.with_passthrough_all_modules()
        )
    settings = load_settings()
    configure_logging(settings.log_format, settings.log_level)  # as `opsflow worker` does
    stop = stop_on_signals()
    client = await connect(settings)
    engine = create_engine(settings.database)
    deps = ActivityDeps(sessions=session_factory(engine))
    options: dict[str, Any] = {"workflow_runner": workflow_runner} if workflow_runner else {}
    try:
        async with Worker(
            client,
            task_queue=args.task_queue,
            workflows=list(workflows),
            activities=activity_functions(deps),
            max_concurrent_activities=settings.max_concurrent_activities,
            **options,
        ):
            await stop.wait()
    finally:
        await engine.dispose()


async def wait_for_poller(client: Client, task_queue: str, within_seconds: float = 60) -> None:
    """Return once a worker polls `task_queue` for activities (so timing starts warm)."""
    from temporalio.api.enums.v1 import TaskQueueType
    from temporalio.api.taskqueue.v1 import TaskQueue
    from temporalio.api.workflowservice.v1 import DescribeTaskQueueRequest

    deadline = time.monotonic() + within_seconds
    while time.monotonic() < deadline:
        response = await client.workflow_service.describe_task_queue(
            DescribeTaskQueueRequest(
                namespace=client.namespace,
                task_queue=TaskQueue(name=task_queue),
                task_queue_type=TaskQueueType.TASK_QUEUE_TYPE_ACTIVITY,
            )
        )
        if response.pollers:
            return
        await asyncio.sleep(0.1)
    raise RuntimeError(f"no worker polled {task_queue}")


BASELINES = (("plain (naive)", ()), ("plain (tuned)", ("--tuned",)))
"""Each benchmark's two plain-Temporal baselines: the name shown and the worker's arguments."""
