"""Health checks judge windows, not the whole bake (issue 15, item 5): `failure_limit` counts
failing readings in a row unless the plan says `failure_count: total`."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from temporalio.testing import WorkflowEnvironment

from activities.adapters.sandbox import degrade
from definitions.models import Analysis
from tests.conftest import AppDb
from tests.definition_support import pinned
from tests.rollout_support import (
    add_customers,
    new_change_id,
    phase,
    plan_document,
    rollout_worker,
    start,
)
from workflows.rollout_checks import record
from workflows.rollout_model import CheckStatus, Reading

AT = datetime(2025, 6, 2, tzinfo=UTC)


def _counts(verdicts: str, failure_count: str) -> tuple[int, str]:
    analysis = Analysis.model_validate(
        {"interval": "2h", "failure_limit": 1, "failure_count": failure_count}
    )
    status = CheckStatus(metric="csat", threshold="min 3", on_fail="rollback")
    names = {"p": "pass", "f": "fail", "i": "inconclusive", "e": "error"}
    for letter in verdicts:
        reading = Reading(at=AT, verdict=names[letter])  # type: ignore[arg-type]
        record(status, reading, analysis, consecutive=failure_count == "consecutive")
    return status.failures, status.verdict


def test_consecutive_counts_failures_in_a_row_and_total_counts_them_all() -> None:
    assert _counts("pfppppfp", "consecutive") == (0, "passing")
    assert _counts("pffp", "consecutive") == (2, "failed")
    assert _counts("pfif", "consecutive") == (2, "failed")  # inconclusive: no reset
    assert _counts("pfpeeep", "consecutive") == (0, "passing")  # 3 errors: one failure
    assert _counts("pfeee", "consecutive") == (2, "failed")
    assert _counts("pfppppf", "total") == (2, "failed")
    assert Analysis.model_validate({"interval": "1h"}).failure_count == "consecutive"


async def _noisy_bake(env: WorkflowEnvironment, db: AppDb, failure_count: str) -> str:
    """Two bad readings a day apart in a two-day bake; returns how the rollout ended."""
    change_id = new_change_id()
    plan = pinned(
        plan_document(
            impact={"risk": "standard"},
            analysis={
                "interval": "2h",
                "failure_limit": 1,
                "failure_count": failure_count,
                "min_samples": 5,
            },
            phases=[
                phase(
                    "everyone",
                    100,
                    bake="2d",
                    checks=[{"metric": "csat", "min": 3.0, "window": "1h"}],
                )
            ],
        )
    )
    async with rollout_worker(env, db) as queue:
        handle = await start(env, queue, plan, change_id)
        # Readings every 2 h from the apply on: the ones at 2 h and 26 h read bad.
        for quiet in (timedelta(hours=1), timedelta(hours=21)):
            await env.sleep(quiet)
            await degrade(db.sessions, "csat", change_id, 2.0)
            await env.sleep(timedelta(hours=2))  # one reading fails
            await degrade(db.sessions, "csat", change_id, 4.4)
        await env.sleep(timedelta(days=1))
        result = await handle.result()
    fails = [r.verdict for r in result.phases[0].checks[0].readings].count("fail")
    assert fails == 2, result.phases[0].checks[0].readings
    return result.state


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_two_noisy_readings_days_apart_do_not_roll_back(
    workflow_env: WorkflowEnvironment, app_db: AppDb
) -> None:
    await add_customers(app_db)
    assert await _noisy_bake(workflow_env, app_db, "consecutive") == "completed"
    assert await _noisy_bake(workflow_env, app_db, "total") == "rolled_back"
