"""`opsflow case show` lists every SLA clock a case is measured by, with the time spent, the
time left and when it runs out; `case reply` and `case requester-reply` drive them as the
ticketing system's comments would. In-process commands against the session's dev server."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from temporalio.testing import WorkflowEnvironment

from definitions.loader import load_file
from store.registry import deploy
from tests.cli_support import CommandLine
from tests.conftest import AppDb
from tests.escalation_support import escalation_worker, new_ticket_id

pytestmark = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)

METRICS_POLICY = """\
apiVersion: opsflow/v1
kind: escalation
metadata: {name: metrics-desk, owner: support-operations}
spec:
  match: "false"
  priorities: [p2]
  calendar: 24x7
  slas:
    - priority: p2
      first_response: 1h
      next_reply: 2h
      periodic_update: 4h
      pausable_update: 4h
      requester_wait: 8h
      agent_work: 6h
      resolution: 1d
  levels:
    - after: 30m
      actions:
        - {type: notify, channel: email, to: ["queue:support"], template: case-escalated}
"""
EVERY_CLOCK = [
    "first_response",
    "next_reply",
    "periodic_update",
    "pausable_update",
    "requester_wait",
    "agent_work",
    "resolution",
]


@pytest.fixture
async def cli(
    dev_env: WorkflowEnvironment, app_db: AppDb, tmp_path: Path
) -> AsyncIterator[CommandLine]:
    path = tmp_path / "metrics-desk.yaml"
    path.write_text(METRICS_POLICY, encoding="utf-8")
    loaded = load_file(path)
    assert not loaded.problems, loaded.problems
    await deploy(app_db.sessions, loaded.definitions, deployed_by="test")
    async with escalation_worker(dev_env, app_db) as queue:
        yield CommandLine.against(dev_env, app_db.url, queue, tmp_path)


async def test_case_show_lists_every_clock_with_spent_remaining_and_due(
    cli: CommandLine,
) -> None:
    ticket = new_ticket_id()
    await cli.ok(
        "case", "open", "--ticket", ticket, "--customer", "C-0002", "--priority", "p2",
        "--policy", "metrics-desk@1", "--by", "ana", "--unknown-customer",
    )  # fmt: skip
    await cli.ok("case", "requester-reply", ticket, "--by", "C-0002")
    await cli.ok("case", "reply", ticket, "--by", "ana", "--internal")  # counts for nothing
    await cli.ok("case", "requester-reply", ticket, "--by", "C-0002")

    shown = (await cli.ok("case", "show", ticket, "--json")).json()
    clocks = shown["clocks"]
    assert list(clocks) == EVERY_CLOCK
    assert clocks["next_reply"]["status"] == "running" and clocks["next_reply"]["target"] == 1
    assert clocks["periodic_update"]["status"] == "waiting"
    for name in ("first_response", "next_reply", "requester_wait", "agent_work", "resolution"):
        clock = clocks[name]
        assert clock["spent_seconds"] >= 0 and clock["due"], (name, clock)
        left = clock["budget_seconds"] - clock["spent_seconds"]
        assert abs(clock["remaining_seconds"] - left) <= 1  # each rounded to the second
    assert clocks["periodic_update"]["due"] is None
    assert clocks["periodic_update"]["remaining_seconds"] is None

    # A public reply answers the requester and starts the update intervals.
    await cli.ok("case", "reply", ticket, "--by", "ana")
    clocks = (await cli.ok("case", "show", ticket, "--json")).json()["clocks"]
    assert clocks["first_response"]["status"] == "met"
    assert clocks["next_reply"]["status"] == "met"
    assert clocks["periodic_update"]["status"] == "running"
    assert clocks["pausable_update"]["due"] is not None

    table = (await cli.ok("case", "show", ticket)).stdout
    assert "spent" in table and "left" in table
    for name in EVERY_CLOCK:
        assert name in table, name
    assert "resolved" in (await cli.ok("case", "resolve", ticket, "--by", "ana")).stdout
