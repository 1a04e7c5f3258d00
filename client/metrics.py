"""The Temporal runtime that serves a process's metrics to Prometheus.

One exporter per process, on `OPSFLOW_METRICS_ADDRESS`: the SDK's own metrics (`temporal_*`,
of every client and worker built on this runtime) and opsflow's (`opsflow_*`, recorded by
workflows through their replay-safe meter and by the intake through `runtime.metric_meter`).
The exporter follows Prometheus' naming: `_total` on counters, durations in seconds with a
`_seconds` suffix (the SDK's default would be milliseconds with no unit in the name).
"""

from __future__ import annotations

from temporalio.runtime import LoggingConfig, PrometheusConfig, Runtime, TelemetryConfig

from definitions.errors import OpsflowError
from workflows.metrics import CATALOG

METRICS_SETTING = "OPSFLOW_METRICS_ADDRESS"

# The SDK metrics opsflow's Grafana dashboard charts, as exposed with this configuration
# (tests/test_metrics.py scrapes a real worker for each of them).
SDK_METRICS: tuple[str, ...] = (
    "temporal_workflow_task_schedule_to_start_latency_seconds",
    "temporal_workflow_task_execution_latency_seconds",
    "temporal_activity_schedule_to_start_latency_seconds",
    "temporal_activity_execution_latency_seconds",
    "temporal_workflow_completed_total",
    "temporal_worker_task_slots_available",
    "temporal_request_total",
)


def prometheus_config(address: str) -> PrometheusConfig:
    return PrometheusConfig(
        bind_address=address,
        counters_total_suffix=True,
        unit_suffix=True,
        durations_as_seconds=True,
        # The exporter's default buckets for seconds end at 10 s: far too short for an SLA.
        histogram_bucket_overrides={
            spec.name: list(spec.buckets) for spec in CATALOG if spec.buckets
        },
    )


def metrics_runtime(address: str, *, logging: LoggingConfig | None = None) -> Runtime:
    """A runtime serving http://<address>/metrics, its Core logs as `logging` says (default:
    the SDK's); OpsflowError naming the setting when the address cannot be bound. The
    exporter stops when the runtime is garbage-collected."""
    telemetry = TelemetryConfig(
        logging=logging or LoggingConfig.default, metrics=prometheus_config(address)
    )
    try:
        return Runtime(telemetry=telemetry)
    except ValueError as exc:  # "Failed starting Prometheus exporter: Address already in use"
        reason = str(exc).removeprefix("Failed starting Prometheus exporter: ")
        raise OpsflowError(
            f"cannot serve metrics on {address} ({reason}): set {METRICS_SETTING} to a free "
            "host:port"
        ) from None
