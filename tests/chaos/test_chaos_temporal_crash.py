"""kill -9 of the Temporal server while escalation cases fire levels, then a restart on the
same database file: the worker process rides out the outage and every level, breach and
resolution happens once."""

from __future__ import annotations

import asyncio

from tests.chaos.escalation_load import open_cases, progress, resolve_all_and_count
from tests.chaos.support import (
    Scenarios,
    Stage,
    Workers,
    eventually,
)

DOWN_SECONDS = 5


async def temporal_killed_while_cases_fire_levels(on: Stage) -> None:
    temporal, processes, app_db, sizes, ledger = (
        on.temporal,
        on.processes,
        on.db,
        on.sizes,
        on.ledger,
    )
    workers = Workers(processes, temporal, app_db.url)
    worker = await workers.start_polling()
    cases = await open_cases(temporal.client, app_db, workers.queue, sizes.cases, over=3)
    total = len(cases.expected_steps)

    async def a_third_written() -> bool:
        return await progress(app_db, cases) >= total // 3

    await eventually(a_third_written, "a third of the levels fired", within=60)
    await temporal.kill()
    at_kill = await progress(app_db, cases)
    ledger.note(f"Temporal killed with {at_kill}/{total} steps written")
    ledger.check(at_kill < total, "every step was written before the kill")
    await asyncio.sleep(DOWN_SECONDS)  # levels fall due while it is down
    client = await temporal.start()
    ledger.note(f"Temporal restarted on {temporal.db_file.name} with the same port")

    await resolve_all_and_count(client, app_db, cases, ledger)
    ledger.check(worker.poll() is None, f"the worker exited ({worker.returncode}) in the outage")


async def test_temporal_killed_while_cases_fire_levels(scenarios: Scenarios) -> None:
    (await scenarios.play(temporal_killed_while_cases_fire_levels)).assert_clean()
