"""The chaos suite's sizes, fixtures and result table.

`pytest` (and `make test`) runs every scenario at its short size; `--chaos-size=full` (or
OPSFLOW_CHAOS_SIZE=full; `make chaos`) at the sizes of issue 22. Each scenario records its
ledger; the table of all of them is printed at the end of the run."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.chaos.support import LEDGERS, SIZES, Scenario, Scenarios, Sizes


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--chaos-size",
        choices=sorted(SIZES),
        default=os.environ.get("OPSFLOW_CHAOS_SIZE", "short"),
        help="size of the chaos scenarios (default: short, or OPSFLOW_CHAOS_SIZE)",
    )


def _size_name(config: pytest.Config) -> str:
    # The option exists only when pytest is pointed at tests/chaos (an initial conftest);
    # a plain `pytest` falls back to the environment.
    default = os.environ.get("OPSFLOW_CHAOS_SIZE", "short")
    return str(config.getoption("--chaos-size", default=default))


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    full = _size_name(config) == "full"
    for item in items:
        if here in Path(str(item.path)).parents:
            item.add_marker(pytest.mark.chaos)
            item.add_marker(pytest.mark.devserver)
            if full:  # the project's 300 s per test is for the short sizes
                item.add_marker(pytest.mark.timeout(900))


@pytest.fixture(scope="session")
def sizes(request: pytest.FixtureRequest) -> Sizes:
    return SIZES[_size_name(request.config)]


_SELECTED: list[Scenario] = []


def pytest_collection_finish(session: pytest.Session) -> None:
    """The scenarios of the selected tests: `test_X` plays the scenario `X` of its module."""
    here = Path(__file__).parent
    for item in session.items:
        if isinstance(item, pytest.Function) and here in Path(str(item.path)).parents:
            played = getattr(item.module, item.originalname.removeprefix("test_"), None)
            if played is not None and played not in _SELECTED:
                _SELECTED.append(played)


@pytest.fixture(scope="session")
async def scenarios(
    sizes: Sizes, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Scenarios]:
    runner = Scenarios(sizes, lambda name: tmp_path_factory.mktemp(name[:40]), _SELECTED)
    try:
        yield runner
    finally:
        await runner.close()


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
