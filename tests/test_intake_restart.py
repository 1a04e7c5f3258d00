"""Issue 13 item 6: `opsflow intake` killed with connections open comes back at once on the
same port (its start-up probe binds as the server does, with SO_REUSEADDR), while a port
something really listens on is still refused with the one-line message; and its log lines
are JSON under OPSFLOW_LOG_FORMAT=json."""

from __future__ import annotations

import json
import socket
import subprocess
import time
from pathlib import Path

import httpx
import pytest
from sqlalchemy.engine import make_url

from definitions.errors import OpsflowError
from store.migrate import upgrade
from tests.devstack_support import OPSFLOW, free_port, opsflow_env
from tests.intake_support import SECRET
from worker.dev import ensure_port_free


def intake_env(folder: Path, port: int) -> dict[str, str]:
    env = opsflow_env(data_dir=folder)
    env.update(
        {
            "OPSFLOW_INTAKE_PORT": str(port),
            "OPSFLOW_INTAKE_SOURCES": json.dumps({"crm": SECRET}),
            "OPSFLOW_LOG_FORMAT": "json",
            # Temporal is not needed to accept events; nothing listens here
            "OPSFLOW_DEV_PORT": str(free_port()),
        }
    )
    return env


def start(folder: Path, port: int) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [OPSFLOW, "intake"],
        env=intake_env(folder, port),
        cwd=folder,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_until_up(process: subprocess.Popen[str], base: str, within: float = 60) -> None:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if process.poll() is not None:
            _out, err = process.communicate()
            raise AssertionError(f"the intake exited {process.returncode}: {err}")
        try:
            if httpx.get(f"{base}/healthz", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise AssertionError("the intake never answered /healthz")


def test_the_intake_restarts_at_once_after_a_crash(tmp_path: Path) -> None:
    upgrade(make_url(f"sqlite:///{tmp_path / 'opsflow.db'}"))
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    first = start(tmp_path, port)
    try:
        wait_until_up(first, base)
        # keep-alive connections the server side holds when it dies: after the crash they
        # linger (FIN_WAIT/TIME_WAIT) on the intake's port with nothing listening
        clients = [httpx.Client(base_url=base, timeout=5) for _ in range(3)]
        for client in clients:
            assert client.get("/healthz").status_code == 200
        first.kill()
        first.wait(timeout=30)
        for client in clients:
            client.close()
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()
    assert first.stdout is not None and first.stderr is not None
    first.stdout.close()
    first.stderr.close()

    second = start(tmp_path, port)
    try:
        wait_until_up(second, base)
    finally:
        second.terminate()
        _out, err = second.communicate(timeout=30)
    assert second.returncode == 0, err
    assert "already in use" not in err
    # every line it wrote to stderr is JSON (OPSFLOW_LOG_FORMAT=json)
    for line in err.splitlines():
        if line.strip():
            json.loads(line)


def test_a_port_something_listens_on_is_still_refused() -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        with pytest.raises(OpsflowError, match=f"port {port} on 127.0.0.1 .* already in use"):
            ensure_port_free("127.0.0.1", port, "event intake", "OPSFLOW_INTAKE_PORT")


def test_a_port_left_in_time_wait_is_free() -> None:
    """The kernel's view, without any process: the side that closes first keeps TIME_WAIT."""
    with socket.socket() as listener:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        client = socket.create_connection(("127.0.0.1", port))
        accepted, _ = listener.accept()
        accepted.close()  # the server closes first: its end goes to TIME_WAIT
        client.recv(1)
        client.close()
    ensure_port_free("127.0.0.1", port, "event intake", "OPSFLOW_INTAKE_PORT")
