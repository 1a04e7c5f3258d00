"""Benchmark: events through the intake (HTTP, signed, inbox, relay, signal-with-start of
`customer-<id>`) to opsflow's Recovery workflows, against a client signalling-with-start a
hand-written recovery workflow directly (bench/baseline_recovery.py, naive and tuned).

Same run, same in-memory dev server, same app database (SQLite). The intake runs as
`opsflow intake` in its own process (uvicorn on 127.0.0.1); each side has a worker of its
own running the workflows the events start, at lower CPU priority on every side
(`background_worker`). The intake's senders use a lean keep-alive HTTP/1.1 client
(`KeepAliveSender`), so the sender's own CPU does not crowd the 2 cores either.

- burst: N events (default 5,000) as fast as C concurrent senders go (default 32); events/s
  counts until the last event is signalled (for the intake: none is left waiting in the
  inbox), and acceptance latency is each request's answer (202: durably in the inbox). The
  worker's CPU counts from the first event until it has handled them all (its CPU settles).
  The goals (issue 21) compare the intake side with the tuned plain side.
- the intake's own cost: a client sending exactly what the router sends (the start input
  with the deployed rule sets, the envelope and the rule sets' digest) straight to the same
  Recovery workflows; throughput direct / intake (goal <= 1.5).
- paced: R events/s (default 100) for S seconds (default 20), open loop; acceptance latency.

    .venv/bin/python -m bench.intake [--events 5000] [--concurrency 32] [--rate 100]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import os
import secrets
import socket
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import func, select
from sqlalchemy.engine import make_url
from temporalio.client import Client
from temporalio.service import RPCError

from bench.harness import (
    BASELINES,
    Measured,
    Stopwatch,
    WorkerProcess,
    in_memory_dev_server,
    percentile,
    print_goals,
    process_cpu_seconds,
    python_module,
    settled,
    wait_for_poller,
)
from bench.recovery import Sessions, prepare_database, worker_env
from client.recovery import recovery_rules, recovery_signal_args
from definitions.events import EventEnvelope
from intake import inbox
from intake.signatures import standard_signature
from store.db import create_engine, session_factory
from store.models import InboxEvent
from workflows.recovery_model import RecoveryInput, customer_workflow_id

SOURCE = "bench"
CUSTOMERS = 1000


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def event_document(n: int, run: str) -> dict[str, Any]:
    customer = f"C-{n % CUSTOMERS + 1:04d}"
    kind, data = (
        ("contact.received", {"channel": "phone"})
        if n % 2
        else ("sentiment.scored", {"score": 0.2})
    )
    return {
        "specversion": "1.0",
        "id": f"{run}-{n}",
        "source": SOURCE,
        "type": kind,
        "subject": customer,
        "time": datetime.now(UTC).isoformat(),
        "datacontenttype": "application/json",
        "data": {"customer_id": customer, **data},
    }


def signed(secret: str, body: bytes) -> dict[str, str]:
    message_id = f"msg_{uuid.uuid4().hex}"
    stamp = int(time.time())
    return {
        "content-type": "application/cloudevents+json",
        "webhook-id": message_id,
        "webhook-timestamp": str(stamp),
        "webhook-signature": standard_signature(secret, message_id, stamp, body),
    }


def background_worker(
    env: dict[str, str], queue: str, baseline: Sequence[str] | None = None
) -> WorkerProcess:
    """An `opsflow worker`, or with `baseline` (its worker arguments) the plain recovery
    baseline's worker, at lower CPU priority (nice 10), on every side alike.

    In production the intake answers senders on a machine of its own; here it shares 2
    cores with the workers running the recovery workflows the events start, and acceptance
    latency would measure their CPU instead of the intake's work."""
    if baseline is None:
        command = [str(Path(sys.executable).parent / "opsflow"), "worker"]
    else:
        command = python_module("bench.baseline_recovery", "--task-queue", queue, *baseline)
    return WorkerProcess(["nice", "-n", "10", *command], {**env, "OPSFLOW_TASK_QUEUE": queue})


async def end_all(client: Client, ids: list[str], concurrency: int) -> None:
    """Terminate the customers' workflows a side left open: the next side starts workflows
    with the same ids (customer-<id>) on a task queue of its own."""
    gate = asyncio.Semaphore(concurrency)

    async def one(workflow_id: str) -> None:
        async with gate:
            with contextlib.suppress(RPCError):  # never started, or already ended
                await client.get_workflow_handle(workflow_id).terminate("benchmark side over")

    await asyncio.gather(*(one(i) for i in ids))


async def waiting_count(sessions: Sessions) -> int:
    async with sessions() as session:
        found = await session.scalar(
            select(func.count()).select_from(InboxEvent).where(InboxEvent.status.in_(inbox.WAITING))
        )
    return int(found or 0)


async def rejected_count(sessions: Sessions) -> int:
    async with sessions() as session:
        found = await session.scalar(
            select(func.count()).select_from(InboxEvent).where(InboxEvent.status == "rejected")
        )
    return int(found or 0)


async def drained(sessions: Sessions, limit: float = 900) -> None:
    """Wait until the relay has delivered every event in the inbox."""
    deadline = time.perf_counter() + limit
    while True:
        if not await waiting_count(sessions):
            return
        if time.perf_counter() > deadline:
            raise RuntimeError("the relay did not deliver every event in time")
        await asyncio.sleep(0.05)


@dataclass
class Result(Measured):
    """The unit is an event: `seconds` until every event was signalled to its customer's
    workflow; the worker's CPU from the first event until it had handled them all (its CPU
    settled), its peak RSS. `latencies_ms`: each request's answer (the intake's 202) or
    signal-with-start; `sender_cpu_seconds`: the CPU of whoever delivers the events to
    Temporal (the intake process, or this process as the direct client)."""

    accept_seconds: float = 0.0
    latencies_ms: list[float] = field(default_factory=list)
    sender_cpu_seconds: float = 0.0
    posting_cpu_seconds: float = 0.0
    """The HTTP sending client's CPU while posting (intake only)."""


class IntakeProcess:
    def __init__(self, env: dict[str, str], port: int, secret: str) -> None:
        opsflow = str(Path(sys.executable).parent / "opsflow")
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.worker = WorkerProcess(
            [opsflow, "intake"],
            {
                **env,
                "OPSFLOW_INTAKE_HOST": "127.0.0.1",
                "OPSFLOW_INTAKE_PORT": str(port),
                "OPSFLOW_INTAKE_SOURCES": json.dumps({SOURCE: secret}),
            },
        )

    async def ready(self, http: httpx.AsyncClient) -> None:
        for _ in range(300):
            try:
                if (await http.get(f"{self.url}/readyz")).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.1)
        raise RuntimeError("the intake did not become ready")


class KeepAliveSender:
    """A lean HTTP/1.1 client over `size` keep-alive connections.

    Real senders run on machines of their own; here the sender shares the 2 cores with the
    intake, the worker and the server it measures, and httpx spends about 7 ms of CPU per
    request (the direct client 1.5 ms per signal-with-start). This one writes the request
    and reads the status line, headers and Content-Length body, nothing more."""

    def __init__(self, host: str, port: int, size: int) -> None:
        self.host, self.port = host, port
        self._idle: asyncio.Queue[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = (
            asyncio.Queue()
        )
        self._slots = asyncio.Semaphore(size)
        self._open: list[asyncio.StreamWriter] = []

    async def post(
        self, path: str, body: bytes, headers: dict[str, str]
    ) -> tuple[int, bytes, float]:
        """(status, body, seconds from sending on a free connection to the whole answer)."""
        async with self._slots:
            reused = not self._idle.empty()
            reader, writer = self._idle.get_nowait() if reused else await self._connect()
            watch = Stopwatch()
            head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
            request = (
                f"POST {path} HTTP/1.1\r\nhost: {self.host}\r\n{head}"
                f"content-length: {len(body)}\r\n\r\n".encode()
                + body
            )
            try:
                writer.write(request)
                status_line = await reader.readline()
            except ConnectionError:
                status_line = b""
            if not status_line and reused:
                # the server closed the connection while idle (uvicorn's keep-alive timeout)
                writer.close()
                reader, writer = await self._connect()
                watch = Stopwatch()
                writer.write(request)
                status_line = await reader.readline()
            status = int(status_line.split()[1])
            length, close = 0, False
            while (line := await reader.readline()) not in (b"\r\n", b""):
                name, _, value = line.decode("latin-1").partition(":")
                if name.lower() == "content-length":
                    length = int(value)
                elif name.lower() == "connection" and value.strip().lower() == "close":
                    close = True
            answer = await reader.readexactly(length)
            seconds = watch.seconds
            if close:
                writer.close()
            else:
                self._idle.put_nowait((reader, writer))
            return status, answer, seconds

    async def _connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        reader, writer = await asyncio.open_connection(self.host, self.port)
        self._open.append(writer)
        return reader, writer

    async def close(self) -> None:
        for writer in self._open:
            writer.close()


async def post_all(
    sender: KeepAliveSender,
    path: str,
    secret: str,
    documents: list[dict[str, Any]],
    rate: float | None = None,
) -> tuple[float, list[float]]:
    """Post every document; with `rate`, open loop at that many per second."""
    latencies: list[float] = []
    started = time.perf_counter()

    async def one(n: int, document: dict[str, Any]) -> None:
        if rate is not None:
            delay = started + n / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
        body = json.dumps(document).encode()
        status, answer, seconds = await sender.post(path, body, signed(secret, body))
        latencies.append(seconds * 1000)
        if status != 202:
            raise RuntimeError(f"the intake answered {status}: {answer[:300]!r}")

    await asyncio.gather(*(one(n, d) for n, d in enumerate(documents)))
    return time.perf_counter() - started, latencies


async def run_intake(
    client: Client,
    env: dict[str, str],
    sessions: Sessions,
    events: int,
    concurrency: int,
    rate: float,
    paced_seconds: float,
) -> tuple[Result, Result]:
    queue = f"bench-intake-{uuid.uuid4().hex[:6]}"
    worker = background_worker(env, queue)
    secret = "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()
    intake = IntakeProcess({**env, "OPSFLOW_TASK_QUEUE": queue}, free_port(), secret)
    sender = KeepAliveSender("127.0.0.1", intake.port, concurrency)
    path = f"/v1/events/{SOURCE}"
    try:
        async with httpx.AsyncClient(timeout=60) as http:
            await wait_for_poller(client, queue)
            await intake.ready(http)
            # warm up: the first requests pay for imports, connections and the rules cache
            warm = [event_document(n, f"w{uuid.uuid4().hex[:4]}") for n in range(50)]
            await post_all(sender, path, secret, warm)
            await drained(sessions)
            await settled(worker)
            intake.worker.mark()
            worker.mark()
            run = uuid.uuid4().hex[:6]
            documents = [event_document(n, run) for n in range(events)]
            watch = Stopwatch()
            sender_before = process_cpu_seconds(os.getpid())
            accept_seconds, latencies = await post_all(sender, path, secret, documents)
            posting_cpu = process_cpu_seconds(os.getpid()) - sender_before
            await drained(sessions)
            seconds = watch.seconds
            intake_cpu = intake.worker.measure().cpu_seconds
            await settled(worker)
            usage = worker.measure()
            burst = Result(
                "opsflow intake",
                events,
                seconds,
                usage.cpu_seconds,
                usage.peak_rss_mib,
                accept_seconds,
                latencies,
                intake_cpu,
                posting_cpu,
            )
            paced_count = int(rate * paced_seconds)
            run = uuid.uuid4().hex[:6]
            documents = [event_document(n, run) for n in range(paced_count)]
            watch = Stopwatch()
            accepted, paced_latencies = await post_all(sender, path, secret, documents, rate=rate)
            await drained(sessions)
            paced = Result(
                "intake paced", paced_count, watch.seconds, 0.0, 0.0, accepted, paced_latencies
            )
        rejected = await rejected_count(sessions)
        if rejected:
            raise RuntimeError(f"{rejected} events were rejected by the router")
    except BaseException:
        intake.worker.kill()
        worker.kill()
        raise
    finally:
        await sender.close()
    intake.worker.stop()
    worker.stop()
    return burst, paced


Send = Callable[[EventEnvelope], Awaitable[object]]


async def run_direct(
    client: Client,
    name: str,
    worker: WorkerProcess,
    queue: str,
    events: int,
    concurrency: int,
    send: Send,
) -> Result:
    """A client sending the events straight to Temporal (signal-with-start), as fast as
    `concurrency` senders go, to workflows a `worker` on `queue` runs."""
    try:
        await wait_for_poller(client, queue)
        gate = asyncio.Semaphore(concurrency)
        latencies: list[float] = []
        run = uuid.uuid4().hex[:6]
        envelopes = [
            EventEnvelope(
                id=d["id"],
                source=SOURCE,
                type=d["type"],
                subject=d["subject"],
                time=datetime.now(UTC),
                data=d["data"],
            )
            for d in (event_document(n, run) for n in range(events))
        ]
        worker.mark()
        cpu_before = process_cpu_seconds(os.getpid())

        async def one(event: EventEnvelope) -> None:
            async with gate:
                watch = Stopwatch()
                await send(event)
                latencies.append(watch.seconds * 1000)

        watch = Stopwatch()
        await asyncio.gather(*(one(e) for e in envelopes))
        seconds = watch.seconds
        sender_cpu = process_cpu_seconds(os.getpid()) - cpu_before
        await settled(worker)
        usage = worker.measure()
    except BaseException:
        worker.kill()
        raise
    worker.stop()
    return Result(
        name,
        events,
        seconds,
        usage.cpu_seconds,
        usage.peak_rss_mib,
        seconds,
        latencies,
        sender_cpu,
    )


async def run_direct_opsflow(
    client: Client, env: dict[str, str], sessions: Sessions, events: int, concurrency: int
) -> Result:
    """The intake's own cost: the same signal-with-starts as its router sends (the start
    input with the deployed rule sets, the envelope and the rule sets' digest), direct."""
    queue = f"bench-direct-{uuid.uuid4().hex[:6]}"
    worker = background_worker(env, queue)
    rules = await recovery_rules(sessions)
    start = RecoveryInput(rules=rules.rules)

    async def send(event: EventEnvelope) -> object:
        return await client.start_workflow(
            "Recovery",
            start,
            id=customer_workflow_id(event.data["customer_id"]),
            task_queue=queue,
            start_signal="event",
            start_signal_args=recovery_signal_args(event, rules),
        )

    return await run_direct(client, "opsflow direct", worker, queue, events, concurrency, send)


async def run_plain(
    client: Client,
    env: dict[str, str],
    events: int,
    concurrency: int,
    baseline: tuple[str, Sequence[str]],
) -> Result:
    """A plain-Temporal side: the client signals-with-start the hand-written recovery
    workflow (bench/baseline_recovery.py) directly, as a team without an intake would."""
    name, worker_args = baseline
    queue = f"bench-plain-{uuid.uuid4().hex[:6]}"
    worker = background_worker(env, queue, worker_args)

    async def send(event: EventEnvelope) -> object:
        return await client.start_workflow(
            "PlainRecovery",
            id=f"plain-{queue}-{event.subject}",
            task_queue=queue,
            start_signal="event",
            start_signal_args=[event],
        )

    return await run_direct(client, name, worker, queue, events, concurrency, send)


def report(
    baselines: Sequence[Result], direct: Result, burst: Result, paced: Result, rate: float
) -> None:
    print(
        f"{'':16} {'events/s':>9} {'wall s':>8} {'accept p50 ms':>14} {'accept p99 ms':>14}"
        f" {'worker CPU ms/event':>20} {'peak RSS MiB':>13} {'sender CPU ms/event':>20}"
    )
    for r in (*baselines, direct, burst):
        print(
            f"{r.name:16} {r.per_second:9.1f} {r.seconds:8.2f}"
            f" {percentile(r.latencies_ms, 50):14.1f} {percentile(r.latencies_ms, 99):14.1f}"
            f" {r.cpu_ms_per_unit:20.2f} {r.peak_rss_mib:13.1f}"
            f" {r.sender_cpu_seconds * 1000 / r.units:20.2f}"
        )
    print(
        f"  (intake: every request answered within {burst.accept_seconds:.2f} s, "
        f"{burst.units / burst.accept_seconds:.1f} events/s accepted; sender CPU: the intake "
        "process for the intake, the sending client for the direct clients)"
    )
    print(
        f"  (the HTTP sending client used {burst.posting_cpu_seconds * 1000 / burst.units:.2f}"
        " ms CPU per event while posting the burst; it shares the 2 cores with everything else)"
    )
    print(
        f"the intake's own cost, throughput ratio (opsflow direct / intake): "
        f"{direct.per_second / burst.per_second:.2f}  (goal <= 1.5)"
    )
    print_goals(burst, baselines, "event")
    print(
        f"paced at {rate:.0f} events/s ({paced.units} events): acceptance p50 "
        f"{percentile(paced.latencies_ms, 50):.1f} ms, p99 {percentile(paced.latencies_ms, 99):.1f}"
        f" ms (goal p99 <= 50 ms); all delivered after {paced.seconds:.2f} s"
    )


async def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--events", type=int, default=5000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--rate", type=float, default=100.0)
    parser.add_argument("--paced-seconds", type=float, default=20.0)
    args = parser.parse_args()
    customers = [customer_workflow_id(f"C-{n + 1:04d}") for n in range(CUSTOMERS)]
    with tempfile.TemporaryDirectory() as folder:
        url = await prepare_database(folder, CUSTOMERS)
        engine = create_engine(make_url(url))
        sessions = session_factory(engine)
        try:
            async with in_memory_dev_server() as server:
                address = server.client.service_client.config.target_host
                env = worker_env(address, url, folder)
                baselines = [
                    await run_plain(server.client, env, args.events, args.concurrency, baseline)
                    for baseline in BASELINES
                ]
                direct = await run_direct_opsflow(
                    server.client, env, sessions, args.events, args.concurrency
                )
                await end_all(server.client, customers, args.concurrency)
                burst, paced = await run_intake(
                    server.client,
                    env,
                    sessions,
                    args.events,
                    args.concurrency,
                    args.rate,
                    args.paced_seconds,
                )
        finally:
            await engine.dispose()
    print(
        f"intake benchmark: {args.events} events to {CUSTOMERS} customers' recovery workflows, "
        f"{args.concurrency} concurrent senders, in-memory dev server, SQLite inbox"
    )
    report(baselines, direct, burst, paced, args.rate)


if __name__ == "__main__":
    asyncio.run(main())
