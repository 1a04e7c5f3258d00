"""The intake's metrics, recorded with the Temporal runtime's meter.

The intake is an ordinary process (no workflow replay), so it records with the meter of the
runtime its Temporal client uses: in `opsflow dev` the worker's, on the same /metrics; alone
(`opsflow intake`) its own runtime on its own OPSFLOW_METRICS_ADDRESS. One exporter and one
naming scheme for everything opsflow serves, no second metrics library. With metrics off
the meter is the SDK's no-op one. The names and help texts are in workflows/metrics.py.
"""

from __future__ import annotations

from temporalio.common import MetricMeter

from workflows.metrics import (
    INTAKE_DELIVERIES,
    INTAKE_EVENTS,
    INTAKE_REFUSED,
    INTAKE_WAITING,
)


class IntakeMetrics:
    def __init__(self, meter: MetricMeter = MetricMeter.noop) -> None:
        self._events = meter.create_counter(INTAKE_EVENTS.name, INTAKE_EVENTS.help)
        self._refused = meter.create_counter(INTAKE_REFUSED.name, INTAKE_REFUSED.help)
        self._deliveries = meter.create_counter(INTAKE_DELIVERIES.name, INTAKE_DELIVERIES.help)
        self._waiting = meter.create_gauge(INTAKE_WAITING.name, INTAKE_WAITING.help)

    def event_received(self, source: str, *, new: bool) -> None:
        """`source` is a configured sender (checked before), so the label stays bounded."""
        self._events.add(1, {"source": source, "outcome": "accepted" if new else "duplicate"})

    def request_refused(self, reason: str) -> None:
        """`reason`: the problem type, one of a fixed few (never the path or the sender a
        refused request named, which anyone can make up)."""
        self._refused.add(1, {"reason": reason})

    def delivery(self, outcome: str) -> None:
        self._deliveries.add(1, {"outcome": outcome})

    def waiting(self, events: int) -> None:
        self._waiting.set(events)
