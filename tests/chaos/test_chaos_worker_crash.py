"""kill -9 of the worker while escalation cases fire levels: once mid-firing, and once more
while the next worker catches up on the levels that fell due with no worker running."""

from __future__ import annotations

import asyncio
import time

from tests.chaos.escalation_load import open_cases, progress, resolve_all_and_count
from tests.chaos.support import (
    Scenarios,
    Stage,
    Workers,
    eventually,
)


async def worker_killed_twice_while_cases_fire_levels(on: Stage) -> None:
    temporal, processes, app_db, sizes, ledger = (
        on.temporal,
        on.processes,
        on.db,
        on.sizes,
        on.ledger,
    )
    client = temporal.client
    workers = Workers(processes, temporal, app_db.url)
    first = await workers.start_polling()
    cases = await open_cases(client, app_db, workers.queue, sizes.cases, over=3)
    total = len(cases.expected_steps)

    async def a_third_written() -> bool:
        return await progress(app_db, cases) >= total // 3

    await eventually(a_third_written, "a third of the levels fired", within=60)
    processes.kill(first)
    at_first_kill = await progress(app_db, cases)
    ledger.note(f"worker 1 killed with {at_first_kill}/{total} steps written")
    ledger.check(at_first_kill < total, "every step was written before the first kill")

    # No worker until every remaining level has fallen due: the next one catches up.
    await asyncio.sleep(max(0.0, cases.all_due_at - time.monotonic()))
    before_catch_up = await progress(app_db, cases)
    second = workers.start()
    ledger.note(f"worker 2 started with {before_catch_up}/{total} steps written")

    async def catching_up() -> bool:
        return await progress(app_db, cases) > before_catch_up

    await eventually(catching_up, "the second worker catches up", within=90)
    processes.kill(second)
    at_second_kill = await progress(app_db, cases)
    ledger.note(
        f"worker 2 killed during catch-up with {at_second_kill}/{total} steps written "
        f"({before_catch_up} before it started)"
    )
    ledger.check(at_second_kill < total, "the catch-up finished before the kill landed")

    workers.start()
    ledger.note("worker 3 started")
    await resolve_all_and_count(client, app_db, cases, ledger)


async def test_worker_killed_twice_while_cases_fire_levels(scenarios: Scenarios) -> None:
    (await scenarios.play(worker_killed_twice_while_cases_fire_levels)).assert_clean()
