"""The rollout's activities on their own: a phase-scoped revert (sandbox flag store and the
signed changes webhook), and the baseline cohort "not exposed to this change" (sandbox
metrics, PromQL selector)."""

from __future__ import annotations

import json
import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from temporalio.testing import ActivityEnvironment

from activities.adapters.prometheus import PrometheusMetrics, selector
from activities.adapters.webhook import SignedWebhook, WebhookChanges, verify
from activities.backends import Backends
from activities.changes import ChangeActivities
from activities.cohorts import place
from activities.deps import ActivityDeps
from activities.metrics import MetricsActivities
from activities.models import (
    ApplyChange,
    CohortSpec,
    MetricCohort,
    ReadMetric,
    RevertChange,
)
from tests.activities.conftest import Reply, Seen, VendorServer
from tests.conftest import AppDb
from tests.rollout_support import add_customers, exposed, revert_waves

SQLITE = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)

env = ActivityEnvironment()
FLAG = "new-billing-flow"
END = datetime(2025, 6, 2, 12, tzinfo=UTC)


def _apply(change_id: str, percent: float) -> ApplyChange:
    return ApplyChange(
        idempotency_key=f"rollout-{change_id}/phase-{percent}/apply",
        change_id=change_id,
        flag_key=FLAG,
        cohort=CohortSpec(seed=change_id, percent=percent),
    )


def _revert(change_id: str, percent: float, earlier: list[float]) -> RevertChange:
    return RevertChange(
        idempotency_key=f"rollout-{change_id}/phase-{percent}/revert",
        change_id=change_id,
        flag_key=FLAG,
        cohort=CohortSpec(seed=change_id, percent=percent),
        earlier=[CohortSpec(seed=change_id, percent=p) for p in earlier],
    )


@SQLITE
async def test_phase_scoped_revert_leaves_earlier_phases_exposed(app_db: AppDb) -> None:
    await add_customers(app_db, 300)
    changes = ChangeActivities(ActivityDeps(sessions=app_db.sessions))
    for percent in (10, 30, 60):
        await env.run(changes.apply, _apply("ch1", percent))
    everyone = await exposed(app_db, "ch1")
    own = {
        60: {c for c in everyone if 30 <= place(c, "ch1") < 60},
        30: {c for c in everyone if 10 <= place(c, "ch1") < 30},
        10: {c for c in everyone if place(c, "ch1") < 10},
    }
    assert all(own.values())

    last = await env.run(changes.revert, _revert("ch1", 60, [10, 30]))
    assert last.reverted == len(own[60])
    assert await exposed(app_db, "ch1") == own[10] | own[30]
    # The same key again: the outbox answers, nothing more is reverted.
    assert await env.run(changes.revert, _revert("ch1", 60, [10, 30])) == last
    middle = await env.run(changes.revert, _revert("ch1", 30, [10]))
    assert middle.reverted == len(own[30])
    assert await exposed(app_db, "ch1") == own[10]
    first = await env.run(changes.revert, _revert("ch1", 10, []))
    assert first.reverted == len(own[10])
    assert await exposed(app_db, "ch1") == set()
    assert await revert_waves(app_db, "ch1") == [own[60], own[30], own[10]]

    # A retry's first phase re-exposes its own customers only.
    again = await env.run(
        changes.apply, _apply("ch1", 10).model_copy(update={"idempotency_key": "a2/phase-1"})
    )
    assert await exposed(app_db, "ch1") == own[10] and again.total_exposed == len(own[10])


@SQLITE
async def test_baseline_leaves_out_the_exposed_customers(app_db: AppDb) -> None:
    await add_customers(app_db, 200)
    deps = ActivityDeps(sessions=app_db.sessions)
    await env.run(ChangeActivities(deps).apply, _apply("ch2", 25))
    assert await exposed(app_db, "ch2")
    metrics = MetricsActivities(deps)

    async def sample_size(cohort: MetricCohort) -> int:
        reading = await env.run(
            metrics.read,
            ReadMetric(
                metric="csat", cohort=cohort, window_start=END - timedelta(hours=4), window_end=END
            ),
        )
        return reading.sample_size

    # Samples are observations (many per customer); the exposed and the rest add up to all.
    everyone = await sample_size(MetricCohort())
    inside = await sample_size(MetricCohort(change_id="ch2"))
    rest = await sample_size(MetricCohort(exclude_change_id="ch2"))
    assert everyone > 200 and 0 < inside < everyone and 0 < rest < everyone
    assert abs(inside + rest - everyone) < 0.1 * everyone
    gold = await sample_size(MetricCohort(tiers=["gold"]))
    gold_baseline = await sample_size(MetricCohort(tiers=["gold"], exclude_change_id="ch2"))
    assert 0 < gold_baseline < gold
    assert MetricCohort(exclude_change_id="ch2").key() == "not_change=ch2"
    assert MetricCohort(tiers=["gold"], exclude_change_id="ch2").key() == (
        "tiers=gold;not_change=ch2"
    )
    assert MetricCohort().key() == "all" and MetricCohort(change_id="x").key() == "change=x"


def test_promql_selector() -> None:
    assert selector(MetricCohort()) == ""
    assert selector(MetricCohort(change_id="CHG-1")) == 'change="CHG-1"'
    assert selector(MetricCohort(exclude_change_id="CHG-1")) == 'change!="CHG-1"'
    assert selector(MetricCohort(tiers=["gold", "bronze"], exclude_change_id='a"b')) == (
        'change!="a\\"b",tier=~"bronze|gold"'
    )


@SQLITE
async def test_prometheus_baseline_query_and_webhook_revert_payload(app_db: AppDb) -> None:
    queries: list[str] = []

    def prometheus(seen: Seen) -> Reply:
        queries.append(seen.query["query"][0])
        result = [{"metric": {}, "value": [1, "4.2"]}]
        return Reply(200, {"status": "success", "data": {"resultType": "vector", "result": result}})

    secret = b"s3cret"
    posts: list[dict[str, object]] = []

    def hook(seen: Seen) -> Reply:
        assert verify(secret, seen.headers, seen.body, now=time.time())
        posts.append(json.loads(seen.body))
        return Reply(200, {})

    await add_customers(app_db, 100)
    with VendorServer(prometheus) as prom, VendorServer(hook) as receiver:
        template = 'avg_over_time(opsflow_csat{{job="cx",{selector}}}[{window}])'
        metrics = PrometheusMetrics(prom.url, {"csat": template}, "count({cohort})", timeout=2)
        reading = await metrics.read(
            "csat", MetricCohort(exclude_change_id="CHG-7"), END - timedelta(hours=1), END
        )
        assert reading.value == 4.2
        assert queries == [
            'avg_over_time(opsflow_csat{job="cx",change!="CHG-7"}[3600s])',
            "count(not_change=CHG-7)",
        ]

        sandbox = Backends.sandbox(app_db.sessions)
        backends = replace(
            sandbox,
            changes=WebhookChanges(SignedWebhook(receiver.url + "/hooks", secret, timeout=2)),
        )
        changes = ChangeActivities(ActivityDeps(sessions=app_db.sessions, backends=backends))
        reverted = await env.run(changes.revert, _revert("ch3", 50, [10]))
        whole = await env.run(
            changes.revert,
            RevertChange(idempotency_key="rollout-ch3/all", change_id="ch3", flag_key=FLAG),
        )
    scoped, everything = posts
    assert scoped["type"] == "change.revert"
    assert scoped["cohort"] == {
        "seed": "ch3",
        "percent": 50.0,
        "segments": [],
        "tiers": [],
        "languages": [],
        "condition": None,
    }
    assert scoped["earlier"] == [CohortSpec(seed="ch3", percent=10).model_dump(mode="json")]
    ids = scoped["customer_ids"]
    assert isinstance(ids, list) and ids
    assert all(10 <= place(c, "ch3") < 50 for c in ids)
    assert reverted.reverted == len(ids)
    assert everything["cohort"] is None and "customer_ids" not in everything
    assert whole.reverted == 0
