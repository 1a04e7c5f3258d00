"""Running a worker as a process: until SIGINT or SIGTERM, then a graceful stop."""

from __future__ import annotations

import asyncio
import signal

import structlog
from temporalio.client import Client

from activities.deps import ActivityDeps
from activities.settings import load_adapter_settings
from client.settings import Settings
from store.db import create_engine, session_factory
from worker.assembly import build_worker

log = structlog.get_logger(__name__)


def stop_on_signals() -> asyncio.Event:
    """An event set by the first SIGINT or SIGTERM (Ctrl-C, `kill`, a supervisor)."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    return stop


async def run_worker(client: Client, settings: Settings, stop: asyncio.Event) -> None:
    engine = create_engine(settings.database)
    try:
        deps = ActivityDeps(
            sessions=session_factory(engine), adapter_settings=load_adapter_settings()
        )
        worker = build_worker(client, settings, deps)
        async with worker:
            log.info("worker started", task_queue=settings.task_queue, namespace=client.namespace)
            await stop.wait()
            log.info("worker stopping")
    finally:
        await engine.dispose()
