"""Benchmark: how fast the command line answers (issue 21 item 6).

Runs, in rounds in the same run, `python -c pass` (the interpreter's own start-up),
`opsflow --version`, `opsflow --help` and every `opsflow X --help` (with --subcommands
also every `opsflow X Y --help`), each as a process of its own, and prints for each the
median wall time, the median ratio to `python -c pass` in the same round, the peak RSS
(getrusage of the waited child) and whether the median meets the goal (0.3 s).

It also times `opsflow case show TICKET` and `opsflow rollout status CHANGE` against their
goal (0.6 s) on a dev stack of its own: `opsflow dev` in a scratch folder on free ports,
where it opens a case (p2, support@1) and starts a rollout (new-billing-flow@1, waiting for
approval), each command's answer read live from its workflow; the stack is stopped at the
end. `--running` uses the configured stack instead (the first case and change listed, or
`--ticket` / `--change`) and says why it skipped a command that cannot answer there.

    .venv/bin/python -m bench.cli [--rounds 7] [--subcommands] [--root DIR] [--running]

--root DIR times the command line of another checkout (a copy of an older commit, say)
through the same interpreter, with DIR first on the import path.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
HELP_GOAL = 0.3
DATA_GOAL = 0.6

# What the console script does (see the `opsflow` script the install writes).
RUN_ENTRY = "import sys; sys.argv[0] = 'opsflow'; from worker.cli import entry; sys.exit(entry())"
LIST_COMMANDS = """
import json, typer
from worker.cli import app

def walk(group, path):
    found = []
    for name, command in getattr(group, "commands", {}).items():
        if not command.hidden:
            found.append([*path, name])
            if DEEP:
                found += walk(command, [*path, name])
    return found

print(json.dumps(walk(typer.main.get_command(app), [])))
"""


@dataclass
class Timed:
    label: str
    argv: list[str]
    goal: float | None
    wall: list[float] = field(default_factory=list)
    peak_mib: list[float] = field(default_factory=list)
    ratio: list[float] = field(default_factory=list)
    codes: set[int] = field(default_factory=set)


def run_once(argv: Sequence[str], env: dict[str, str], cwd: Path) -> tuple[float, float, int]:
    """Wall seconds, peak RSS (MiB) and exit code of one run of `argv`."""
    started = time.perf_counter()
    process = subprocess.Popen(
        list(argv),
        env=env,
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    _, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - started
    process.returncode = os.waitstatus_to_exitcode(status)
    return wall, usage.ru_maxrss / 1024, process.returncode


def opsflow_argv(root: Path | None) -> list[str]:
    if root is None:
        return [str(Path(sys.executable).parent / "opsflow")]
    return [sys.executable, "-c", RUN_ENTRY]


def environment(root: Path | None) -> dict[str, str]:
    env = {**os.environ, "NO_COLOR": "1", "COLUMNS": "100"}
    if root is not None:
        env["PYTHONPATH"] = str(root)
    return env


def command_paths(root: Path | None, deep: bool) -> list[list[str]]:
    out = subprocess.run(
        [sys.executable, "-c", LIST_COMMANDS.replace("DEEP", str(deep))],
        env=environment(root),
        cwd=root or ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    paths: list[list[str]] = json.loads(out.stdout)
    return paths


def first_of(opsflow: list[str], env: dict[str, str], cwd: Path, args: list[str], key: str) -> str:
    """The `key` of the first row `opsflow ARGS --json` prints; raises with its error line."""
    out = subprocess.run(
        [*opsflow, *args, "--json"], env=env, cwd=cwd, capture_output=True, text=True, timeout=30
    )
    if out.returncode != 0:
        lines = out.stderr.strip().splitlines() or [f"exit {out.returncode}"]
        raise LookupError(lines[-1][:160])
    rows = json.loads(out.stdout)
    if not rows:
        raise LookupError(f"`opsflow {' '.join(args)}` lists nothing to show")
    return str(rows[0][key])


BENCH_TICKET = "T-CLI-1"
BENCH_CHANGE = "CHG-CLI-1"
STACK_START_LIMIT = 240.0
"""Seconds `opsflow dev` may take to come up (a first start on a busy machine is slow)."""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@contextmanager
def own_dev_stack(opsflow: list[str], env: dict[str, str]) -> Iterator[dict[str, str]]:
    """`opsflow dev` in a scratch folder on free ports with a case open and a rollout
    started; yields the environment its commands talk to it with. Stopped (SIGTERM, then
    killed) and its folder removed at the end."""
    folder = Path(tempfile.mkdtemp(prefix="opsflow-bench-cli-"))
    stack_env = {
        **env,
        "OPSFLOW_DATA_DIR": str(folder),
        "OPSFLOW_DEV_PORT": str(free_port()),
        "OPSFLOW_DEV_UI_PORT": str(free_port()),
        "OPSFLOW_INTAKE_PORT": str(free_port()),
        "OPSFLOW_LOG_FORMAT": "json",
    }
    for inherited in ("OPSFLOW_DATABASE_URL", "OPSFLOW_TEMPORAL_ADDRESS", "TEMPORAL_ADDRESS"):
        stack_env.pop(inherited, None)
    log_path = folder / "dev.log"
    with log_path.open("wb") as log:
        stack = subprocess.Popen(
            [*opsflow, "dev"],
            env=stack_env,
            cwd=folder,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + STACK_START_LIMIT
        while "Press Ctrl-C to stop" not in log_path.read_text(errors="replace"):
            if stack.poll() is not None or time.monotonic() > deadline:
                tail = log_path.read_text(errors="replace").strip().splitlines()[-5:]
                raise RuntimeError("opsflow dev did not come up:\n" + "\n".join(tail))
            time.sleep(0.5)
        open_case = "case open --customer C-0001 --priority p2 --by bench --ticket"
        start_rollout = "rollout start new-billing-flow --owner bench --reason bench --change"
        for args in ([*open_case.split(), BENCH_TICKET], [*start_rollout.split(), BENCH_CHANGE]):
            done = subprocess.run(
                [*opsflow, *args],
                env=stack_env,
                cwd=folder,
                capture_output=True,
                text=True,
                timeout=120,
            )
            if done.returncode != 0:
                raise RuntimeError(f"`opsflow {' '.join(args)}` failed: {done.stderr.strip()}")
        yield stack_env
    finally:
        stack.send_signal(signal.SIGTERM)
        try:
            stack.wait(timeout=30)
        except subprocess.TimeoutExpired:
            stack.kill()
            stack.wait()
        shutil.rmtree(folder, ignore_errors=True)


def data_commands(
    opsflow: list[str], env: dict[str, str], cwd: Path, ticket: str | None, change: str | None
) -> tuple[list[Timed], list[str]]:
    timed: list[Timed] = []
    notes: list[str] = []
    try:
        ticket = ticket or first_of(opsflow, env, cwd, ["case", "list"], "ticket")
        timed.append(Timed(f"case show {ticket}", [*opsflow, "case", "show", ticket], DATA_GOAL))
    except (LookupError, subprocess.TimeoutExpired, KeyError, ValueError) as exc:
        notes.append(f"case show skipped: no dev stack answered ({exc})")
    try:
        change = change or first_of(opsflow, env, cwd, ["rollout", "list"], "change")
        timed.append(
            Timed(f"rollout status {change}", [*opsflow, "rollout", "status", change], DATA_GOAL)
        )
    except (LookupError, subprocess.TimeoutExpired, KeyError, ValueError) as exc:
        notes.append(f"rollout status skipped: no dev stack answered ({exc})")
    return timed, notes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=7, help="counted rounds (after 1 warm-up)")
    parser.add_argument("--subcommands", action="store_true", help="also every X Y --help")
    parser.add_argument("--root", type=Path, help="time the command line of this checkout")
    parser.add_argument("--ticket", help="the case for `case show` (default: the first listed)")
    parser.add_argument("--change", help="the change for `rollout status` (default: first)")
    parser.add_argument(
        "--running", action="store_true", help="use the configured dev stack, start none"
    )
    args = parser.parse_args()

    root = args.root.resolve() if args.root else None
    opsflow = opsflow_argv(root)
    if args.running:
        measure(args, root, environment(root), opsflow, own_stack=False)
        return
    with own_dev_stack(opsflow, environment(root)) as stack_env:
        args.ticket, args.change = BENCH_TICKET, BENCH_CHANGE
        measure(args, root, stack_env, opsflow, own_stack=True)


def measure(
    args: argparse.Namespace,
    root: Path | None,
    env: dict[str, str],
    opsflow: list[str],
    *,
    own_stack: bool,
) -> None:
    """Time every command in rounds and print the table."""
    cwd = root or ROOT
    baseline = Timed("python -c pass", [sys.executable, "-c", "pass"], None)
    timed = [
        baseline,
        Timed("opsflow --version", [*opsflow, "--version"], HELP_GOAL),
        Timed("opsflow --help", [*opsflow, "--help"], HELP_GOAL),
    ]
    for path in command_paths(root, args.subcommands):
        label = f"opsflow {' '.join(path)} --help"
        timed.append(Timed(label, [*opsflow, *path, "--help"], HELP_GOAL))
    data, notes = data_commands(opsflow, env, cwd, args.ticket, args.change)
    timed += data

    load_before = os.getloadavg()
    for round_no in range(args.rounds + 1):
        walls: dict[str, float] = {}
        for entry in timed:
            wall, peak, code = run_once(entry.argv, env, cwd)
            if round_no == 0:
                continue  # warm-up: byte-code caches, page cache
            walls[entry.label] = wall
            entry.wall.append(wall)
            entry.peak_mib.append(peak)
            entry.codes.add(code)
        for entry in timed:
            if entry.label in walls:
                entry.ratio.append(walls[entry.label] / walls[baseline.label])
    load_after = os.getloadavg()

    print(
        f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {platform.node()}, {os.cpu_count()} CPUs, "
        f"Python {platform.python_version()}, {args.rounds} rounds after a warm-up, "
        f"load average {load_before[0]:.2f} before, {load_after[0]:.2f} after"
        + (f", command line of {root}" if root else "")
        + (", case show and rollout status on a dev stack of its own" if own_stack else "")
    )
    width = max(len(entry.label) for entry in timed)
    print(
        f"{'command':<{width}}  {'median s':>8}  {'min-max s':>11}  {'x python':>8}  "
        f"{'peak MiB':>8}  goal"
    )
    for entry in timed:
        median = statistics.median(entry.wall)
        spread = f"{min(entry.wall):.3f}-{max(entry.wall):.3f}"
        verdict = ""
        if entry.goal is not None:
            verdict = f"{'ok' if median <= entry.goal else 'OVER'} (<= {entry.goal} s)"
        if entry.codes - {0}:
            verdict += f" exit {sorted(entry.codes)}"
        print(
            f"{entry.label:<{width}}  {median:8.3f}  {spread:>11}  "
            f"{statistics.median(entry.ratio):8.1f}  {statistics.median(entry.peak_mib):8.1f}  "
            f"{verdict}"
        )
    helps = [e for e in timed if e.goal == HELP_GOAL]
    over = [e.label for e in helps if statistics.median(e.wall) > HELP_GOAL]
    worst = max(helps, key=lambda e: statistics.median(e.wall))
    print(
        f"{len(helps) - len(over)} of {len(helps)} help/version commands within {HELP_GOAL} s; "
        f"slowest {worst.label} ({statistics.median(worst.wall):.3f} s)"
    )
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        f"note: a child's peak counts from its fork of this process ({own:.1f} MiB): a figure "
        "near that is a floor, not the command's own"
    )
    for note in notes:
        print(f"note: {note}")


if __name__ == "__main__":
    main()
