"""The metrics activity: a customer-experience metric for a cohort over a window."""

from __future__ import annotations

from temporalio import activity

from activities.deps import ActivityDeps
from activities.errors import invalid
from activities.models import MetricReading, ReadMetric


class MetricsActivities:
    def __init__(self, deps: ActivityDeps) -> None:
        self._deps = deps

    @activity.defn(name="metrics.read")
    async def read(self, request: ReadMetric) -> MetricReading:
        """Value and sample size; no data is `value=None, sample_size=0`, never an error."""
        if request.window_end <= request.window_start:
            raise invalid("window_end must be after window_start")
        if request.window_start.tzinfo is None or request.window_end.tzinfo is None:
            raise invalid("window bounds must carry a time zone")
        return await self._deps.resolved_backends.metrics.read(
            request.metric, request.cohort, request.window_start, request.window_end
        )
