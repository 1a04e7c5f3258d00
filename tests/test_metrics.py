"""Prometheus metrics (OPSFLOW_METRICS_ADDRESS): what a worker and the intake really serve.

A time-skipping server whose client runs on the metrics runtime (client/metrics.py) on a free
127.0.0.1 port; a case driven to a breach and acknowledged; /metrics scraped over HTTP and
parsed with prometheus_client. The Grafana dashboard's queries are checked against the
catalog, and its SDK metrics against a real scrape. Everything started here is stopped, the
exporter's port included.
"""

from __future__ import annotations

import asyncio
import gc
import json
import re
import socket
import urllib.request
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample
from temporalio.api.enums.v1 import IndexedValueType
from temporalio.api.operatorservice.v1 import AddSearchAttributesRequest
from temporalio.client import WorkflowHandle
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.runtime import Runtime
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Replayer

from activities.search_attributes import ALL as SEARCH_ATTRIBUTES
from client.metrics import SDK_METRICS, metrics_runtime
from client.settings import Settings
from definitions.errors import OpsflowError
from intake.metrics import IntakeMetrics
from tests.conftest import AppDb
from tests.definition_support import pinned
from tests.escalation_support import (
    add_ticket,
    case,
    escalation_worker,
    new_ticket_id,
    policy_document,
)
from tests.helpers import assert_eventually
from tests.intake_support import cloud_event, encode, http, make_intake, post_event
from worker.binaries import temporal_test_server
from worker.metrics import dev_metrics_address
from workflows import metrics as catalog
from workflows.escalation import (
    Acknowledge,
    EscalationWorkflow,
    Resolve,
    case_workflow_id,
)
from workflows.escalation import EscalationInput as OpenCase
from workflows.escalation import EscalationStatus as CaseStatus
from workflows.rollout import rollback_cause
from workflows.sandbox import WORKFLOW_RUNNER

on_sqlite = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)

DASHBOARD = Path(__file__).resolve().parent.parent / "worker" / "grafana" / "opsflow-dashboard.json"
README = (Path(__file__).resolve().parent.parent / "README.md").read_text(encoding="utf-8")
# What every series carries besides its own labels: the workflow meter's and the runtime's.
WORKFLOW_LABELS = {"namespace", "task_queue", "workflow_type"}
RUNTIME_LABELS = {"service_name"}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def port_is_free(port: int) -> bool:
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def scrape(address: str) -> list[Sample]:
    with urllib.request.urlopen(f"http://{address}/metrics", timeout=10) as response:
        assert response.status == 200
        text = response.read().decode()
    return [s for family in text_string_to_metric_families(text) for s in family.samples]


def family_types(address: str) -> dict[str, str]:
    """Exposed family name -> its TYPE (prometheus_client strips a counter's `_total`)."""
    with urllib.request.urlopen(f"http://{address}/metrics", timeout=10) as response:
        text = response.read().decode()
    return dict(re.findall(r"^# TYPE (\S+) (\S+)$", text, flags=re.MULTILINE))


def series(samples: list[Sample], name: str, **labels: str) -> list[Sample]:
    return [s for s in samples if s.name == name and labels.items() <= s.labels.items()]


def value(samples: list[Sample], name: str, **labels: str) -> float:
    """The one sample of `name` with these labels (0 when none: nothing was recorded)."""
    found = series(samples, name, **labels)
    assert len(found) <= 1, found
    return found[0].value if found else 0.0


class MetricsEnv:
    """The environment and where its metrics are served. `release` drops the environment
    (and so the runtime) although pytest keeps this object until the fixture is torn down."""

    def __init__(self, env: WorkflowEnvironment, address: str) -> None:
        self._env = [env]
        self.address = address

    @property
    def env(self) -> WorkflowEnvironment:
        return self._env[0]

    def release(self) -> None:
        self._env.clear()


@pytest.fixture(scope="module")
async def metrics_env() -> AsyncIterator[MetricsEnv]:
    """The time-skipping server with its client (and so every worker on it) on a metrics
    runtime; afterwards the exporter's port is free again."""
    port = free_port()
    address = f"127.0.0.1:{port}"
    runtime: Runtime | None = metrics_runtime(address)
    env = await WorkflowEnvironment.start_time_skipping(
        test_server_existing_path=str(temporal_test_server()),
        data_converter=pydantic_data_converter,
        runtime=runtime,
    )
    async with env:
        await env.client.operator_service.add_search_attributes(
            AddSearchAttributesRequest(
                namespace=env.client.namespace,
                search_attributes={
                    key.name: IndexedValueType.ValueType(key.indexed_value_type)
                    for key in SEARCH_ATTRIBUTES
                },
            )
        )
        shared = MetricsEnv(env, address)
        yield shared
    # The exporter lives as long as its runtime: drop the last references and it stops.
    shared.release()
    del env, runtime
    gc.collect()

    async def released() -> bool:
        return port_is_free(port)

    await assert_eventually(released, bool, f"metrics port {port} released")


async def drive_case_to_breach_then_ack(
    metrics_env: MetricsEnv, app_db: AppDb
) -> tuple[str, CaseStatus, WorkflowHandle[EscalationWorkflow, object]]:
    """A P1 case (first response 1 h, resolution 4 h, levels at 10/20/30 min repeated once,
    a warning at 50 %) left 65 minutes, then acknowledged and resolved."""
    env = metrics_env.env
    ticket = new_ticket_id()
    await add_ticket(app_db, ticket)
    async with escalation_worker(env, app_db) as queue:
        opened_at = await env.get_current_time()
        handle = await env.client.start_workflow(
            EscalationWorkflow.run,
            OpenCase(case=case(ticket, opened_at), policy=pinned(policy_document())),
            id=case_workflow_id(ticket),
            task_queue=queue,
        )
        await env.sleep(timedelta(minutes=65))
        acknowledged = await handle.execute_update(
            EscalationWorkflow.acknowledge, Acknowledge(by="ana")
        )
        await handle.execute_update(EscalationWorkflow.resolve, Resolve(by="ana"))
        await handle.result()
    return queue, acknowledged, handle


@on_sqlite
async def test_a_breach_and_an_acknowledgement_are_scraped_with_their_labels(
    metrics_env: MetricsEnv, app_db: AppDb
) -> None:
    queue, acknowledged, _ = await drive_case_to_breach_then_ack(metrics_env, app_db)
    case_labels = {
        "policy": "test-policy",  # the definition's name, not name@version
        "priority": "p1",
        "task_queue": queue,
        "workflow_type": "Escalation",
        "namespace": "default",
    }
    samples = await assert_eventually(
        lambda: asyncio.to_thread(scrape, metrics_env.address),
        lambda s: bool(series(s, "opsflow_sla_met_total", task_queue=queue)),
        "the case's metrics on /metrics",
    )

    breaches = series(samples, "opsflow_sla_breaches_total", task_queue=queue)
    assert [(s.labels, s.value) for s in breaches] == [
        ({**case_labels, "clock": "first_response", "service_name": "temporal-core-sdk"}, 1.0)
    ]
    # First response breached before the acknowledgement; resolution was met at resolve.
    assert value(samples, "opsflow_sla_met_total", task_queue=queue, clock="resolution") == 1
    assert value(samples, "opsflow_sla_met_total", task_queue=queue, clock="first_response") == 0
    warning = {"task_queue": queue, "clock": "first_response", "percent": "50"}
    assert value(samples, "opsflow_sla_warnings_total", **warning) == 1
    for level in ("1", "2", "3"):  # each level of the two cycles in 60 minutes
        fired = value(
            samples, "opsflow_escalation_levels_fired_total", task_queue=queue, level=level
        )
        assert fired == 2, level

    # Time to acknowledge: one observation, its value the case's own (65 minutes), in the
    # 2 h bucket and not the 1 h one.
    assert acknowledged.acknowledged_at is not None
    took = (acknowledged.acknowledged_at - acknowledged.case.opened_at).total_seconds()
    assert took == pytest.approx(65 * 60, abs=5)
    ack = {"task_queue": queue}
    assert value(samples, "opsflow_time_to_acknowledge_seconds_count", **ack) == 1
    assert value(samples, "opsflow_time_to_acknowledge_seconds_sum", **ack) == pytest.approx(took)
    [count] = series(samples, "opsflow_time_to_acknowledge_seconds_count", **ack)
    assert count.labels == {**case_labels, "service_name": "temporal-core-sdk"}
    buckets = {
        float(s.labels["le"]): s.value
        for s in series(samples, "opsflow_time_to_acknowledge_seconds_bucket", **ack)
    }
    assert buckets[3600] == 0 and buckets[7200] == 1 and buckets[float("inf")] == 1
    # The catalog's buckets, not the exporter's default ones (which end at 10 s).
    assert sorted(buckets)[:-1] == list(catalog.TIME_TO_ACKNOWLEDGE.buckets)

    # The SDK's own metrics come through the same exporter, named as Prometheus names them.
    types = family_types(metrics_env.address)
    for name in SDK_METRICS:
        expected = "histogram" if name.endswith("_seconds") else None
        assert name in types, f"{name} not exposed; exposed: {sorted(types)}"
        if expected:
            assert types[name] == expected, name
    assert not any(name.endswith("_total_total") for name in types)
    # The dashboard's SDK panels group by labels the SDK really sets.
    for title, expr in dashboard_queries():
        for name, labels in labels_used(expr).items():
            if name.startswith("temporal_"):
                seen = set().union(*(s.labels for s in samples if s.name == name))
                assert labels <= seen, f"{title}: {name} has {sorted(seen)}, not {labels}"


@on_sqlite
async def test_replaying_a_history_records_nothing(metrics_env: MetricsEnv, app_db: AppDb) -> None:
    """The workflow meter is replay-safe: a worker that replays a case (after a restart or a
    cache eviction) counts none of its breaches, levels or acknowledgements again."""
    queue, _, handle = await drive_case_to_breach_then_ack(metrics_env, app_db)

    def ours() -> list[tuple[str, dict[str, str], float]]:
        # Every opsflow series, whatever its labels (a replayer runs on a task queue of its own).
        samples = scrape(metrics_env.address)
        return [(s.name, s.labels, s.value) for s in samples if s.name.startswith("opsflow_")]

    before = await assert_eventually(
        lambda: asyncio.to_thread(ours),
        lambda found: any(labels.get("task_queue") == queue for _, labels, _ in found),
        "the case's metrics",
    )
    history = await handle.fetch_history()
    replayer = Replayer(
        workflows=[EscalationWorkflow],
        workflow_runner=WORKFLOW_RUNNER,
        data_converter=pydantic_data_converter,
        runtime=metrics_env.env.client.service_client.config.runtime,
    )
    result = await replayer.replay_workflow(history)
    assert result.replay_failure is None
    assert await asyncio.to_thread(ours) == before


@on_sqlite
async def test_the_intake_counts_events_refusals_and_deliveries(
    metrics_env: MetricsEnv, app_db: AppDb
) -> None:
    """The intake records with its runtime's meter: new and duplicate events by sender,
    refusals by problem type (never by the made-up sender a refused request names), delivery
    outcomes and the backlog."""
    runtime = metrics_env.env.client.service_client.config.runtime
    assert runtime is not None
    intake = make_intake(app_db)  # Temporal unreachable: deliveries stay pending
    intake.metrics = IntakeMetrics(runtime.metric_meter)
    assert intake.relay is not None
    intake.relay.metrics = intake.metrics
    event = cloud_event("survey.responded", {"customer_id": "C-0017", "score": 1, "scale": 5})
    async with http(intake) as client:
        assert (await post_event(client, event)).status_code == 202
        assert (await post_event(client, event)).status_code == 200  # the same event again
        unsigned = await client.post(
            "/v1/events/crm", content=encode(event), headers={"content-type": "application/json"}
        )
        assert unsigned.status_code == 401
        stranger = await post_event(client, event, source=f"made-up-{uuid.uuid4().hex}")
        assert stranger.status_code == 401
    await intake.relay.drain_once()

    samples = await asyncio.to_thread(scrape, metrics_env.address)
    assert value(samples, "opsflow_intake_events_total", source="crm", outcome="accepted") == 1
    assert value(samples, "opsflow_intake_events_total", source="crm", outcome="duplicate") == 1
    refused = series(samples, "opsflow_intake_requests_refused_total")
    assert [(s.labels["reason"], s.value) for s in refused] == [("unauthorized", 2.0)]
    assert value(samples, "opsflow_intake_deliveries_total", outcome="pending") == 1
    assert value(samples, "opsflow_intake_events_waiting") == 1


def test_every_catalog_metric_is_exposed_as_declared() -> None:
    """Each metric opsflow defines, recorded once through the production exporter settings:
    its family has the declared name (counters `_total`, durations `_seconds`), type and
    labels. Unrecorded metrics are not exposed at all, so this is the name check for the
    kinds the workflow tests here do not drive (rollouts, recovery, handoffs)."""
    port = free_port()
    address = f"127.0.0.1:{port}"
    runtime: Runtime | None = metrics_runtime(address)
    assert runtime is not None
    meter = runtime.metric_meter
    for spec in catalog.CATALOG:
        labels = {label: "x" for label in spec.labels}
        if spec.kind == "counter":
            meter.create_counter(spec.name, spec.help).add(1, labels)
        elif spec.kind == "histogram":
            meter.create_histogram_float(spec.name, spec.help, spec.unit).record(1.0, labels)
        else:
            meter.create_gauge(spec.name, spec.help).set(1, labels)
    try:
        types = family_types(address)
        samples = scrape(address)
    finally:
        del runtime, meter
        gc.collect()
    for spec in catalog.CATALOG:
        assert types.get(spec.exposed) == spec.kind, (spec.exposed, sorted(types))
        for name in spec.series_names:
            found = series(samples, name, **dict.fromkeys(spec.labels, "x"))
            assert found, name
            assert set(found[0].labels) - {"le"} == set(spec.labels) | RUNTIME_LABELS, name
    assert len({spec.name for spec in catalog.CATALOG}) == len(catalog.CATALOG)


def test_a_taken_metrics_address_is_one_line_naming_the_setting() -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        taken = f"127.0.0.1:{holder.getsockname()[1]}"
        with pytest.raises(OpsflowError, match=r"OPSFLOW_METRICS_ADDRESS") as error:
            metrics_runtime(taken)
    assert "Address already in use" in str(error.value) and "\n" not in str(error.value)


def test_dev_serves_metrics_on_the_default_port_or_a_free_one() -> None:
    settings = Settings(metrics_address=None)
    address = dev_metrics_address(settings)
    host, _, port = address.rpartition(":")
    assert host == settings.dev_ip and 1 <= int(port) <= 65535
    with socket.socket() as holder:  # whatever it chose, taken now: it picks another
        holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        holder.bind((host, int(port)))
        holder.listen()
        assert dev_metrics_address(settings) != address
    assert dev_metrics_address(Settings(metrics_address="127.0.0.1:9999")) == "127.0.0.1:9999"


@pytest.mark.parametrize(
    ("reason", "aborted", "cause"),
    [
        ("check csat failed in phase canary: 2.1 < 4.0", False, "check_failed"),
        ("checks csat, errors inconclusive in phase canary", False, "inconclusive"),
        ("the overall deadline of 3 days, 0:00:00 passed", False, "deadline"),
        ("rejected by lena.vogel: not now", False, "rejected"),
        ("aborted: waiting for the billing fix", True, "aborted"),
        ("rolled back", False, "other"),
    ],
)
def test_a_rollback_reason_becomes_a_bounded_cause(reason: str, aborted: bool, cause: str) -> None:
    assert rollback_cause(reason, aborted=aborted) == cause


# --- the Grafana dashboard -------------------------------------------------------------------

METRIC_NAME = re.compile(r"\b((?:opsflow|temporal)_[a-z0-9_]+)")
BY_CLAUSE = re.compile(r"\bby\s*\(([^)]*)\)")
SELECTOR = re.compile(r"\b((?:opsflow|temporal)_[a-z0-9_]+)\{([^}]*)\}")


def dashboard_panels() -> Iterator[dict[str, object]]:
    document = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    for panel in document["panels"]:
        if panel["type"] == "row":
            yield from panel.get("panels", [])
        else:
            yield panel


def dashboard_queries() -> list[tuple[str, str]]:
    """(panel title, PromQL expression) of every query of every panel."""
    queries = []
    for panel in dashboard_panels():
        targets = panel["targets"]
        assert isinstance(targets, list) and targets, panel["title"]
        queries += [(str(panel["title"]), str(target["expr"])) for target in targets]
    return queries


def labels_used(expr: str) -> dict[str, set[str]]:
    """Metric name -> the labels the expression groups or selects it by."""
    grouped = {label.strip() for clause in BY_CLAUSE.findall(expr) for label in clause.split(",")}
    used: dict[str, set[str]] = {name: set(grouped) for name in METRIC_NAME.findall(expr)}
    for name, matchers in SELECTOR.findall(expr):
        used[name] |= {m.split("=")[0].strip().rstrip("!~") for m in matchers.split(",")}
    return used


def test_every_dashboard_query_uses_metrics_and_labels_opsflow_exposes() -> None:
    opsflow = {name: spec for spec in catalog.CATALOG for name in spec.series_names}
    sdk = {
        f"{name}{part}"
        for name in SDK_METRICS
        for part in (("", "_bucket", "_sum", "_count") if name.endswith("_seconds") else ("",))
    }
    queries = dashboard_queries()
    assert len(queries) >= 20
    charted: set[str] = set()
    for title, expr in queries:
        used = labels_used(expr)
        assert used, f"{title}: no metric in {expr!r}"
        for name, labels in used.items():
            assert name in opsflow or name in sdk, f"{title}: {name} is not exposed"
            if name in opsflow:
                spec = opsflow[name]
                known = set(spec.labels) | WORKFLOW_LABELS | RUNTIME_LABELS
                known |= {"le"} if name.endswith("_bucket") else set()
                assert labels <= known, f"{title}: {name} has no label {labels - known}"
                charted.add(spec.name)
    # Every metric opsflow defines is on the dashboard.
    assert charted == {spec.name for spec in catalog.CATALOG}


def test_the_readme_describes_every_dashboard_panel() -> None:
    text = " ".join(README.split())  # a title may be wrapped across lines
    for panel in dashboard_panels():
        assert f"**{panel['title']}**" in text, panel["title"]
    for spec in catalog.CATALOG:
        assert f"`{spec.exposed}" in README, spec.exposed
