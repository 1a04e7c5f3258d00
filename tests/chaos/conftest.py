"""The chaos suite's sizes, fixtures and result table.

`pytest` (and `make test`) runs every scenario at its short size; `--chaos-size=full` (or
OPSFLOW_CHAOS_SIZE=full; `make chaos`) at the sizes of issue 22. Each scenario records its
ledger; the table of all of them is printed at the end of the run."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from tests.chaos.support import LEDGERS, SIZES, Ledger, Processes, Sizes, TemporalServer


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--chaos-size",
        choices=sorted(SIZES),
        default=os.environ.get("OPSFLOW_CHAOS_SIZE", "short"),
        help="size of the chaos scenarios (default: short, or OPSFLOW_CHAOS_SIZE)",
    )


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.path)).parents:
            item.add_marker(pytest.mark.chaos)
            item.add_marker(pytest.mark.devserver)


@pytest.fixture(scope="session")
def sizes(request: pytest.FixtureRequest) -> Sizes:
    # The option exists only when pytest is pointed at tests/chaos (an initial conftest);
    # a plain `pytest` falls back to the environment.
    default = os.environ.get("OPSFLOW_CHAOS_SIZE", "short")
    return SIZES[str(request.config.getoption("--chaos-size", default=default))]


@pytest.fixture
def ledger(request: pytest.FixtureRequest, sizes: Sizes) -> Iterator[Ledger]:
    """The scenario's ledger, kept for the table at the end of the run."""
    name = request.node.originalname.removeprefix("test_").replace("_", " ")
    entry = Ledger(scenario=name, size=sizes.name)
    LEDGERS.append(entry)
    yield entry


@pytest.fixture
async def temporal(tmp_path: Path) -> AsyncIterator[TemporalServer]:
    server = TemporalServer(tmp_path)
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


@pytest.fixture
def processes(tmp_path: Path) -> Iterator[Processes]:
    started = Processes(tmp_path)
    try:
        yield started
    finally:
        started.close()


def _shortened(failures: list[str]) -> str:
    if not failures:
        return "none"
    first = failures[0] if len(failures[0]) <= 80 else failures[0][:77] + "..."
    return first + (f" (+{len(failures) - 1} more)" if len(failures) > 1 else "")


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not LEDGERS:
        return
    write = terminalreporter.write_line
    terminalreporter.section("chaos: effects expected and found")
    header = ("scenario", "size", "effects expected", "lost", "duplicated", "other failures", "s")
    rows = [
        (
            entry.scenario,
            entry.size,
            str(entry.expected),
            str(entry.lost),
            str(entry.duplicated),
            _shortened(entry.failures),
            f"{entry.seconds:.0f}",
        )
        for entry in LEDGERS
    ]
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    for row in [header, tuple("-" * w for w in widths), *rows]:
        write(" | ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)))
    for entry in LEDGERS:
        write(f"{entry.scenario}: " + ", ".join(f"{k} {v}" for k, v in entry.counts.items()))
        for line in [*entry.notes, *entry.failures]:
            write(f"  {line}")
