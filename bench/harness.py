"""Shared benchmark machinery: an in-memory dev server, worker processes, CPU and RSS.

Every benchmark runs opsflow and a hand-written plain-Temporal baseline, naive and tuned
(`BASELINES`), in the same run, and prints opsflow's ratios against both, judging the issue's
goals against the tuned one (`print_goals`). Each side has its own worker process, so that
its CPU time and peak RSS are measured for that process alone (from /proc). The dev server
runs in memory (no --db-filename) so its SQLite fsyncs do not hide the engine's own cost.
"""

from __future__ import annotations

import asyncio
import math
import os
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

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


def process_cpu_seconds(pid: int) -> float:
    """utime + stime of a live process (start-up is excluded by taking a difference)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def process_status_mib(pid: int, field: str) -> float:
    """A memory figure of a live process from /proc (VmHWM: peak RSS, VmRSS: RSS now);
    getrusage of children would mix several workers."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    return float("nan")


class WorkerProcess:
    """A worker in a child process; `stop()` returns the CPU it used since `mark()` (so
    start-up and imports are not counted) and its peak RSS."""

    def __init__(self, command: Sequence[str], env: dict[str, str]) -> None:
        self.process = subprocess.Popen(
            list(command), env={**os.environ, **env}, cwd=ROOT, stdin=subprocess.DEVNULL
        )
        self._marked = 0.0

    @property
    def pid(self) -> int:
        return self.process.pid

    def cpu_seconds(self) -> float:
        return process_cpu_seconds(self.pid)

    def mark(self) -> None:
        """Start counting CPU from now (call once the worker polls)."""
        self._marked = self.cpu_seconds()

    def peak_rss_mib(self) -> float:
        return process_status_mib(self.pid, "VmHWM")

    def rss_mib(self) -> float:
        return process_status_mib(self.pid, "VmRSS")

    def measure(self) -> WorkerUsage:
        """CPU since `mark()` and peak RSS so far, of the live worker."""
        return WorkerUsage(self.cpu_seconds() - self._marked, self.peak_rss_mib())

    def stop(self) -> WorkerUsage:
        """Measure, then end the worker (SIGTERM); a worker already gone is not waited on."""
        usage = self.measure()
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            self.process.wait(timeout=60)
        return usage

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


async def settled(worker: WorkerProcess, quiet_seconds: float = 3.0, limit: float = 900) -> None:
    """Wait until `worker` has handled what it was sent: its CPU over `quiet_seconds` stays
    under 5 % of a core (a polling worker uses far less; one still working, far more)."""
    deadline = time.perf_counter() + limit
    while time.perf_counter() < deadline:
        before = worker.cpu_seconds()
        await asyncio.sleep(quiet_seconds)
        if worker.cpu_seconds() - before < 0.05 * quiet_seconds:
            return
    raise RuntimeError("the worker did not settle in time")


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
    from worker.log_context import LogContextInterceptor
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
            interceptors=[LogContextInterceptor()],  # as worker/assembly.py
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
JUDGED_BASELINE = "plain (tuned)"
"""The issue's goals are judged against the tuned baseline; the naive one is shown beside it."""


def baseline_worker(
    module: str, queue: str, env: dict[str, str], worker_args: Sequence[str]
) -> WorkerProcess:
    """A baseline's worker process (`serve_baseline` in `module`) on `queue`."""
    return WorkerProcess(
        python_module(module, "--task-queue", queue, *worker_args),
        {**env, "OPSFLOW_TASK_QUEUE": queue},
    )


@dataclass
class Measured:
    """What every benchmark measures of one side: `units` of work (cases, events,
    customers...) done in `seconds`, and its worker's CPU over that work and peak RSS."""

    name: str
    units: int
    seconds: float
    cpu_seconds: float
    peak_rss_mib: float

    @property
    def per_second(self) -> float:
        return self.units / self.seconds if self.seconds else float("nan")

    @property
    def cpu_ms_per_unit(self) -> float:
        return self.cpu_seconds * 1000 / self.units if self.units else float("nan")


M = TypeVar("M", bound=Measured)


@dataclass(frozen=True)
class Goal:
    """One figure of opsflow's against a baseline's and the bound the issue sets for it."""

    label: str
    value: float
    bound: float | None = None
    """None: a figure shown beside the goals, not one of them."""
    at_most: bool = True
    unit: str = ""
    """"" for a ratio; otherwise the figure is a difference in this unit (e.g. " ms")."""

    @property
    def met(self) -> bool:
        if self.bound is None:
            return True
        if math.isnan(self.value):
            return False
        return self.value <= self.bound if self.at_most else self.value >= self.bound

    def describe(self, *, judged: bool) -> str:
        if math.isnan(self.value):
            return f"{self.label} not measured"
        figure = f"{self.value:+.0f}{self.unit}" if self.unit else f"{self.value:.2f}"
        if not self.unit and float(figure) == self.bound and not self.met:
            figure = f"{self.value:.3f}"  # 0.948 is not 0.95: never show a miss as the bound
        if not judged or self.bound is None:
            return f"{self.label} {figure}"
        bound = f"{self.bound:+.0f}{self.unit}" if self.unit else f"{self.bound:g}"
        verdict = "met" if self.met else "missed"
        return f"{self.label} {figure} (goal {'<=' if self.at_most else '>='} {bound}): {verdict}"


def standard_goals(opsflow: Measured, baseline: Measured, unit: str) -> list[Goal]:
    """The three goals every benchmark shares (issue 21): opsflow / plain."""
    return [
        Goal("throughput", opsflow.per_second / baseline.per_second, 0.95, at_most=False),
        Goal(f"worker CPU per {unit}", opsflow.cpu_ms_per_unit / baseline.cpu_ms_per_unit, 1.15),
        Goal("peak RSS", opsflow.peak_rss_mib / baseline.peak_rss_mib, 1.3),
    ]


def print_goals(
    opsflow: M,
    baselines: Sequence[M],
    unit: str,
    extra: Callable[[M, M], list[Goal]] | None = None,
) -> bool:
    """Print opsflow's ratios against each baseline, judging the goals against the tuned
    one (`JUDGED_BASELINE`) with "met"/"missed"; `extra(opsflow, baseline)` adds a
    benchmark's own goals. Returns whether every judged goal was met."""
    all_met = True
    for baseline in baselines:
        goals = standard_goals(opsflow, baseline, unit)
        if extra is not None:
            goals += extra(opsflow, baseline)
        judged = baseline.name == JUDGED_BASELINE
        if judged:
            print(f"against {baseline.name} (the goals):")
            for goal in goals:
                print(f"  {goal.describe(judged=True)}")
            all_met = all(goal.met for goal in goals)
        else:
            print(
                f"against {baseline.name}: "
                + ", ".join(goal.describe(judged=False) for goal in goals)
            )
    return all_met
