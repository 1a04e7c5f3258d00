"""Issue 13, on the real thing: `opsflow intake` running as its own process while the
file-backed Temporal dev server under it is stopped and started again. Events signed and
accepted (202) while Temporal is down wait as `pending`, never `rejected`, and once it is
back every one reaches its workflow exactly once, in order per subject."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy.engine import make_url
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

from activities.search_attributes import ALL as SEARCH_ATTRIBUTES
from intake import inbox
from store.db import create_engine, session_factory
from store.migrate import upgrade
from store.registry import CATALOG_DIR, deploy_folder
from store.seed import seed_sandbox
from tests.devstack_support import OPSFLOW, free_port, opsflow_env
from tests.intake_support import SECRET, cloud_event, encode, signed_headers
from worker.binaries import temporal_cli

pytestmark = pytest.mark.devserver


async def eventually(check: Callable[[], Awaitable[bool]], what: str, within: float = 90) -> None:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if await check():
            return
        await asyncio.sleep(0.25)
    raise AssertionError(f"not within {within:g}s: {what}")


async def signalled_ids(client: Client, workflow_id: str) -> list[str]:
    """The event id of every `event` signal in the workflow's history, in order."""
    history = await client.get_workflow_handle(workflow_id).fetch_history()
    ids = []
    for event in history.events:
        if event.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_SIGNALED:
            attrs = event.workflow_execution_signaled_event_attributes
            payload = pydantic_data_converter.payload_converter.from_payloads(
                list(attrs.input.payloads)[:1]
            )[0]
            ids.append(payload["id"])
    return ids


class Temporal:
    """A file-backed dev server on a fixed port that can be stopped and started again."""

    def __init__(self, folder: Path) -> None:
        self.port = free_port()
        self.db_file = folder / "temporal.db"
        self.env: WorkflowEnvironment | None = None

    async def start(self) -> WorkflowEnvironment:
        self.env = await WorkflowEnvironment.start_local(
            dev_server_existing_path=str(temporal_cli()),
            search_attributes=SEARCH_ATTRIBUTES,
            data_converter=pydantic_data_converter,
            dev_server_log_level="error",
            port=self.port,
            dev_server_extra_args=["--db-filename", str(self.db_file)],
        )
        return self.env

    async def stop(self) -> None:
        if self.env is not None:
            await self.env.shutdown()
            self.env = None


@pytest.fixture
async def temporal(tmp_path: Path) -> AsyncIterator[Temporal]:
    server = Temporal(tmp_path)
    try:
        yield server
    finally:
        await server.stop()


def start_intake(folder: Path, temporal_port: int, intake_port: int) -> subprocess.Popen[str]:
    env = opsflow_env(data_dir=folder)
    env.update(
        {
            "OPSFLOW_DEV_PORT": str(temporal_port),
            "OPSFLOW_INTAKE_PORT": str(intake_port),
            "OPSFLOW_INTAKE_SOURCES": json.dumps({"crm": SECRET}),
            "OPSFLOW_LOG_FORMAT": "json",
        }
    )
    for name in ("TEMPORAL_ADDRESS", "TEMPORAL_PROFILE", "OPSFLOW_TEMPORAL_ADDRESS"):
        env.pop(name, None)
    return subprocess.Popen(
        [OPSFLOW, "intake"],
        env=env,
        cwd=folder,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


async def test_temporal_stopped_and_restarted_under_a_running_intake(
    tmp_path: Path, temporal: Temporal
) -> None:
    url = make_url(f"sqlite:///{tmp_path / 'opsflow.db'}")
    upgrade(url)
    engine = create_engine(url)
    sessions = session_factory(engine)
    await seed_sandbox(sessions)
    await deploy_folder(sessions, CATALOG_DIR, deployed_by="test")  # the recovery rule sets

    first = await temporal.start()
    intake_port = free_port()
    process = start_intake(tmp_path, temporal.port, intake_port)
    base = f"http://127.0.0.1:{intake_port}"
    customers = [f"C-00{n:02d}" for n in (11, 12, 13)]
    run = uuid.uuid4().hex[:6]
    sent: dict[str, list[str]] = {customer: [] for customer in customers}

    async def statuses() -> dict[str, str]:
        rows = await inbox.listing(sessions, limit=1000)
        return {r.event_id: r.status for r in rows}

    try:
        async with httpx.AsyncClient(base_url=base, timeout=30) as client:

            async def up() -> bool:
                try:
                    return (await client.get("/healthz")).status_code == 200
                except httpx.TransportError:
                    assert process.poll() is None, "the intake exited"
                    return False

            await eventually(up, "the intake answers /healthz")

            async def send(customer: str, n: int) -> None:
                event: dict[str, Any] = cloud_event(
                    "contact.received",
                    {"customer_id": customer, "channel": "phone"},
                    id=f"{run}-{customer}-{n}",
                )
                body = encode(event)
                answer = await client.post(
                    "/v1/events/crm", content=body, headers=signed_headers(body)
                )
                assert answer.status_code == 202, answer.text
                sent[customer].append(event["id"])

            for customer in customers:  # Temporal up: delivered as usual
                await send(customer, 0)

            async def all_delivered() -> bool:
                return set((await statuses()).values()) == {"delivered"}

            await eventually(all_delivered, "the first events are delivered")

            await temporal.stop()  # the relay is idle: nothing is in flight
            for n in range(1, 6):
                for customer in customers:
                    await send(customer, n)

            async def relay_found_it_down() -> bool:
                return "pending" in (await statuses()).values()

            await eventually(relay_found_it_down, "the relay finds Temporal down")
            # keep trying for a while: the outage uses up no attempts and rejects nothing
            await asyncio.sleep(3)
            while_down = await statuses()
            assert "rejected" not in while_down.values()
            assert sum(s == "delivered" for s in while_down.values()) == len(customers)
            waiting = await inbox.listing(sessions, inbox.WAITING)
            assert len(waiting) == 5 * len(customers)
            assert {r.attempts for r in waiting} == {0}
            assert any((r.outcome or "").startswith("waiting for Temporal") for r in waiting)

            second = await temporal.start()
            await eventually(all_delivered, "everything accepted is delivered", within=120)

            for customer in customers:
                ids = await signalled_ids(second.client, f"customer-{customer}")
                assert ids == sent[customer], customer  # once each, in the order sent
        assert first is not second
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            output, _ = process.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            output, _ = process.communicate()
        await engine.dispose()
    assert process.returncode == 0, output
