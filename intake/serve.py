"""Running the intake: from settings, alone (`opsflow intake`) or inside `opsflow dev`."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import secrets
from collections.abc import Iterator
from pathlib import Path

import uvicorn
from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncEngine
from temporalio.client import Client
from temporalio.common import MetricMeter
from temporalio.runtime import Runtime

from activities.backends import Backends
from activities.settings import load_adapter_settings
from client.settings import Settings
from client.temporal import connect
from intake.app import Intake, create_app
from intake.metrics import IntakeMetrics
from intake.relay import Relay
from intake.router import Router, TemporalLink
from store.db import create_engine, session_factory

DEV_SOURCE = "dev"


def dev_secret(data_dir: Path) -> str:
    """The `dev` sender's secret: made once per data folder and kept there."""
    path = data_dir / "intake-dev-secret"
    if path.exists():
        return path.read_text().strip()
    secret = "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()
    data_dir.mkdir(parents=True, exist_ok=True)
    path.write_text(secret + "\n")
    path.chmod(0o600)
    return secret


def build_intake(
    settings: Settings,
    engine: AsyncEngine,
    *,
    client: Client | None = None,
    extra_sources: dict[str, str] | None = None,
    runtime: Runtime | None = None,
) -> Intake:
    """`runtime`: the metrics runtime (its meter records the intake's metrics, and a client
    the intake connects itself is built on it); None: metrics off."""
    sessions = session_factory(engine)
    link = TemporalLink(lambda: connect(settings, runtime=runtime), client)
    backends = Backends.from_settings(load_adapter_settings(), sessions)
    router = Router(link, sessions, settings.task_queue, backends.crm, ticketing=backends.ticketing)
    sources = {**settings.intake_sources, **(extra_sources or {})}
    metrics = IntakeMetrics(runtime.metric_meter if runtime else MetricMeter.noop)
    relay = Relay(sessions, router, metrics=metrics)
    return Intake(sessions=sessions, sources=sources, link=link, relay=relay, metrics=metrics)


class _QuietServer(uvicorn.Server):
    """uvicorn without its own signal handling: the caller's stop event rules."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def server(app: FastAPI, settings: Settings) -> uvicorn.Server:
    config = uvicorn.Config(
        app,
        host=settings.intake_host,
        port=settings.intake_port,
        log_level="warning",
        access_log=False,
        lifespan="on",
        limit_concurrency=1000,
        # Senders keep connections open between bursts; closing them after uvicorn's 5 s
        # default races a sender reusing one (its request then fails with a reset).
        timeout_keep_alive=75,
        timeout_graceful_shutdown=10,
    )
    return _QuietServer(config)


async def serve_until(srv: uvicorn.Server, stop: asyncio.Event) -> None:
    """Serve until `stop` is set, then shut down cleanly."""
    task = asyncio.create_task(srv.serve())
    stopper = asyncio.create_task(stop.wait())
    try:
        await asyncio.wait([task, stopper], return_when=asyncio.FIRST_COMPLETED)
    finally:
        srv.should_exit = True
        with contextlib.suppress(asyncio.CancelledError):
            await task
        stopper.cancel()


async def run_intake(
    settings: Settings,
    stop: asyncio.Event,
    *,
    client: Client | None = None,
    extra_sources: dict[str, str] | None = None,
    runtime: Runtime | None = None,
) -> None:
    engine = create_engine(settings.database)
    try:
        intake = build_intake(
            settings, engine, client=client, extra_sources=extra_sources, runtime=runtime
        )
        await serve_until(server(create_app(intake), settings), stop)
    finally:
        await engine.dispose()


def address(settings: Settings) -> str:
    return f"http://{settings.intake_host}:{settings.intake_port}"
