"""`opsflow dev` as a user runs it, for tests: a subprocess with its own ports and folder."""

from __future__ import annotations

import os
import queue
import random
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

OPSFLOW = str(Path(sys.executable).parent / "opsflow")


def free_port() -> int:
    """A free port below Linux's ephemeral range (32768-60999): a port the OS hands out to
    any process (the dev server's own listeners, outgoing sockets) could be taken between
    choosing it here and the stack binding it."""
    for _ in range(50):
        candidate = random.randint(20_000, 32_000)
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", candidate))
            except OSError:
                continue
            return candidate
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@dataclass
class DevStack:
    process: subprocess.Popen[str]
    output: queue.Queue[str]
    grpc: str
    ui: str
    intake: str

    def wait_for(self, text: str, within: float = 90.0) -> str:
        deadline = time.monotonic() + within
        seen = []
        while time.monotonic() < deadline:
            try:
                line = self.output.get(timeout=0.5)
            except queue.Empty:
                if self.process.poll() is not None:
                    break
                continue
            seen.append(line)
            if text in line:
                return line
        raise AssertionError(f"never printed {text!r}; output was:\n{''.join(seen)}")

    def stop(self) -> int:
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=30)


def start_dev(
    data_dir: Path, grpc_port: int, ui_port: int, intake_port: int | None = None
) -> DevStack:
    intake_port = intake_port or free_port()
    env = {
        **os.environ,
        "OPSFLOW_DATA_DIR": str(data_dir),
        "OPSFLOW_DEV_PORT": str(grpc_port),
        "OPSFLOW_DEV_UI_PORT": str(ui_port),
        "OPSFLOW_INTAKE_PORT": str(intake_port),
        "NO_COLOR": "1",
    }
    env.pop("OPSFLOW_DATABASE_URL", None)
    process = subprocess.Popen(
        [OPSFLOW, "dev"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=data_dir,
    )
    lines: queue.Queue[str] = queue.Queue()

    def pump() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            lines.put(line)

    threading.Thread(target=pump, daemon=True).start()
    return DevStack(
        process,
        lines,
        f"127.0.0.1:{grpc_port}",
        f"http://127.0.0.1:{ui_port}",
        f"http://127.0.0.1:{intake_port}",
    )


@pytest.fixture
def ports() -> tuple[int, int]:
    return free_port(), free_port()


@pytest.fixture
def stacks() -> Iterator[list[DevStack]]:
    started: list[DevStack] = []
    yield started
    for stack in started:
        if stack.process.poll() is None:
            stack.process.kill()
            stack.process.wait()


def opsflow_env(stack: DevStack | None = None, data_dir: Path | None = None) -> dict[str, str]:
    """The environment a user's shell would have to talk to `stack`."""
    env = {**os.environ, "NO_COLOR": "1", "COLUMNS": "200"}
    env.pop("OPSFLOW_DATABASE_URL", None)
    if stack is not None:
        env["OPSFLOW_DEV_PORT"] = stack.grpc.rsplit(":", 1)[1]
        env["OPSFLOW_DEV_UI_PORT"] = stack.ui.rsplit(":", 1)[1]
        env["OPSFLOW_INTAKE_PORT"] = stack.intake.rsplit(":", 1)[1]
    if data_dir is not None:
        env["OPSFLOW_DATA_DIR"] = str(data_dir)
    return env


def opsflow(*args: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [OPSFLOW, *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=120
    )


def succeeds(*args: str, env: dict[str, str], cwd: Path) -> str:
    """Run `opsflow ARGS` as a user would; it must succeed; returns its stdout."""
    result = opsflow(*args, env=env, cwd=cwd)
    assert result.returncode == 0, result.stderr
    return result.stdout


def refused(*args: str, env: dict[str, str], cwd: Path) -> str:
    """Run `opsflow ARGS`; it must fail with exit 1 and one readable line on stderr."""
    result = opsflow(*args, env=env, cwd=cwd)
    assert result.returncode == 1, result.stdout
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    return result.stderr
