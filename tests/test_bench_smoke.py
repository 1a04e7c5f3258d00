"""The benchmarks import and parse their arguments, judge their goals against the tuned
baseline, and measure timer lateness from the ledger and the outbox. The benchmarks
themselves are never run here: they print ratios, they are not timed tests."""

from __future__ import annotations

import asyncio
import importlib
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from bench.escalation import timer_lateness_ms
from bench.handoff import OfferWatch
from bench.harness import JUDGED_BASELINE, Goal, Measured, print_goals
from store.models import LedgerEntry, SandboxNotification
from tests.conftest import AppDb
from tests.escalation_support import ledger_row

ROOT = Path(__file__).resolve().parent.parent
BENCHMARKS = ["escalation", "rollout", "recovery", "handoff", "intake", "open_cases", "cli"]
BASELINES = ["baseline_escalation", "baseline_rollout", "baseline_recovery", "baseline_handoff"]


@pytest.mark.parametrize("name", BENCHMARKS + BASELINES)
def test_bench_module_imports(name: str) -> None:
    importlib.import_module(f"bench.{name}")


@pytest.mark.parametrize("name", [n for n in BENCHMARKS if n != "cli"])
def test_benchmark_parses_its_arguments(name: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", f"bench.{name}", "--help"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("usage:")


def test_goals_are_judged_against_the_tuned_baseline(capsys: pytest.CaptureFixture[str]) -> None:
    naive = Measured("plain (naive)", 100, 10.0, 10.0, 200.0)
    tuned = Measured(JUDGED_BASELINE, 100, 5.0, 2.0, 100.0)
    opsflow = Measured("opsflow", 100, 5.0, 2.2, 140.0)

    def ack(opsflow: Measured, baseline: Measured) -> list[Goal]:
        return [Goal("ack p99", 150.0, 200, unit=" ms"), Goal("shown only", 3.0)]

    all_met = print_goals(opsflow, [naive, tuned], "case", ack)

    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == (
        "against plain (naive): throughput 2.00, worker CPU per case 0.22, peak RSS 0.70, "
        "ack p99 +150 ms, shown only 3.00"
    )
    assert lines[1:] == [
        "against plain (tuned) (the goals):",
        "  throughput 1.00 (goal >= 0.95): met",
        "  worker CPU per case 1.10 (goal <= 1.15): met",
        "  peak RSS 1.40 (goal <= 1.3): missed",
        "  ack p99 +150 ms (goal <= +200 ms): met",
        "  shown only 3.00",
    ]
    assert not all_met


async def test_timer_lateness_is_the_first_effect_after_the_due_moment(app_db: AppDb) -> None:
    due = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
    ms = timedelta(milliseconds=1)
    async with app_db.sessions() as session, session.begin():

        def level(workflow_id: str, step: str, at: datetime, written: datetime) -> LedgerEntry:
            return ledger_row(workflow_id, step, at, kind="plain", written_at=written)

        session.add_all(
            [
                # the notification went out before the ledger row was written: it counts
                level("plain-ab-1", "level-1", due, due + 300 * ms),
                level("plain-ab-1", "level-2", due + 1000 * ms, due + 1050 * ms),
                level("plain-ab-1", "opened", due - 500 * ms, due + 900 * ms),  # not a level
                level("plain-cd-1", "level-1", due, due + 9000 * ms),  # another run
            ]
        )
        session.add(
            SandboxNotification(
                message_id="msg-bench-1",
                channel="email",
                recipient="queue:support",
                body="escalated",
                idempotency_key="plain-ab-1/level-1/0",
                created_at=due + 100 * ms,
            )
        )

    lateness = await timer_lateness_ms(app_db.sessions, "plain-ab-")

    assert sorted(lateness) == pytest.approx([50.0, 100.0])


def test_a_missed_goal_is_never_shown_as_its_bound() -> None:
    assert Goal("throughput", 0.948, 0.95, at_most=False).describe(judged=True) == (
        "throughput 0.948 (goal >= 0.95): missed"
    )
    assert Goal("throughput", 0.951, 0.95, at_most=False).describe(judged=True) == (
        "throughput 0.95 (goal >= 0.95): met"
    )


def test_a_figure_that_could_not_be_measured_misses_its_goal() -> None:
    lateness = Goal("timer lateness p99", float("nan"), 200, unit=" ms")
    assert lateness.describe(judged=True) == "timer lateness p99 not measured"
    assert not lateness.met


async def test_the_handoff_driver_reads_offers_and_early_ends_from_the_ledger(
    app_db: AppDb,
) -> None:
    at = datetime(2026, 12, 7, 12, tzinfo=UTC)

    def row(workflow_id: str, step: str, detail: dict[str, str]) -> LedgerEntry:
        return ledger_row(workflow_id, step, at, kind="handoff", detail=detail)

    async with app_db.sessions() as session, session.begin():
        session.add(row("handoff-a", "transition-3-offered", {"agent": "bench-01"}))
    watch = OfferWatch(app_db.sessions)
    watching = asyncio.create_task(watch.watch())
    try:
        # offered before the driver asked, and after
        assert await asyncio.wait_for(watch.offer("handoff-a"), 5) == ("bench-01", at)
        later = asyncio.create_task(watch.offer("handoff-b"))
        async with app_db.sessions() as session, session.begin():
            session.add(row("handoff-b", "transition-3-offered", {"agent": "bench-02"}))
            session.add(row("handoff-c", "transition-4-callback_scheduled", {}))
        assert await asyncio.wait_for(later, 5) == ("bench-02", at)
        with pytest.raises(RuntimeError, match=r"handoff-c ended .*callback_scheduled"):
            await asyncio.wait_for(watch.offer("handoff-c"), 5)
    finally:
        watching.cancel()
