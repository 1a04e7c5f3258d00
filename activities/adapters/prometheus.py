"""Metrics from the Prometheus HTTP API: GET /api/v1/query (an instant query at window end).

Each metric has a PromQL template with these placeholders; a second template gives the
sample size. An empty result vector or NaN is "no data": value None, sample size 0.

- `{cohort}`: the cohort's key (`MetricCohort.key()`), escaped for a PromQL string, for
  exporters that label each series with opsflow's cohort key: `change=CHG-1` (exposed to
  CHG-1), `not_change=CHG-1` (a rollout's baseline: everyone not exposed to CHG-1),
  `tiers=gold;not_change=CHG-1`, `all`.
- `{selector}`: the same cohort as PromQL label matchers, for exporters that label each
  customer's series with the change it is exposed to (`change`) and its `segment`, `tier`
  and `language`: `change="CHG-1"`; the baseline is `change!="CHG-1"` (series without a
  `change` label match too); filters are `tier=~"gold|silver"`. It is empty for everyone,
  so put a matcher of your own first (PromQL accepts a trailing comma):
  `opsflow_csat{{job="cx",{selector}}}`.
- `{window}`: the window length, e.g. `3600s`; `{metric}`: the metric's name.

For example (as the value of a JSON object in OPSFLOW_PROMETHEUS_QUERIES, quotes escaped):
`avg_over_time(opsflow_csat{{job="cx",{selector}}}[{window}])`.
"""

from __future__ import annotations

import math
import re
from datetime import datetime
from typing import Any

from activities.adapters.http import VendorHttp
from activities.errors import invalid, protocol_error
from activities.models import MetricCohort, MetricReading
from activities.settings import AdapterSettings


def promql_string(text: str) -> str:
    """Escape a value for use inside a double-quoted PromQL string."""
    return text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _any_of(values: list[str]) -> str:
    return "|".join(re.escape(value) for value in sorted(values))


def selector(cohort: MetricCohort) -> str:
    """The cohort as comma-separated PromQL label matchers ("" for everyone)."""
    matchers = []
    if cohort.change_id is not None:
        matchers.append(f'change="{promql_string(cohort.change_id)}"')
    if cohort.exclude_change_id is not None:
        matchers.append(f'change!="{promql_string(cohort.exclude_change_id)}"')
    for label, values in (
        ("segment", cohort.segments),
        ("tier", cohort.tiers),
        ("language", cohort.languages),
    ):
        if values:
            matchers.append(f'{label}=~"{promql_string(_any_of(values))}"')
    return ",".join(matchers)


class PrometheusMetrics:
    name = "prometheus"
    in_app_database = False

    def __init__(
        self,
        url: str,
        queries: dict[str, str],
        sample_query: str,
        *,
        bearer_token: str | None = None,
        timeout: float = 10.0,
    ) -> None:
        headers = {"Authorization": f"Bearer {bearer_token}"} if bearer_token else {}
        self._http = VendorHttp("prometheus", url, headers=headers, timeout=timeout)
        self._queries = queries
        self._sample_query = sample_query

    @classmethod
    def from_settings(cls, settings: AdapterSettings) -> PrometheusMetrics:
        assert settings.prometheus_url is not None
        token = settings.prometheus_bearer_token
        return cls(
            settings.prometheus_url,
            settings.prometheus_queries,
            settings.prometheus_sample_query,
            bearer_token=token.get_secret_value() if token else None,
            timeout=settings.http_timeout_seconds,
        )

    async def read(
        self, metric: str, cohort: MetricCohort, start: datetime, end: datetime
    ) -> MetricReading:
        template = self._queries.get(metric)
        if template is None:
            raise invalid(f"no PromQL query for metric {metric!r}; set OPSFLOW_PROMETHEUS_QUERIES")
        fields = {
            "metric": metric,
            "cohort": promql_string(cohort.key()),
            "selector": selector(cohort),
            "window": f"{max(int((end - start).total_seconds()), 1)}s",
        }
        try:
            value_query = template.format(**fields)
            samples_query = self._sample_query.format(**fields)
        except (KeyError, IndexError, ValueError) as exc:
            raise invalid(f"PromQL template for {metric!r} is malformed: {exc}") from None
        value = await self._instant(value_query, end)
        if value is None:
            return MetricReading(metric=metric, value=None, sample_size=0, backend=self.name)
        samples = await self._instant(samples_query, end)
        return MetricReading(
            metric=metric,
            value=value,
            sample_size=int(samples) if samples is not None else 0,
            backend=self.name,
        )

    async def _instant(self, query: str, at: datetime) -> float | None:
        body = await self._http.json(
            "query",
            "GET",
            "/api/v1/query",
            params={"query": query, "time": f"{at.timestamp():.3f}"},
        )
        if body.get("status") != "success":
            raise protocol_error("prometheus", "query", f"status {body.get('status')!r}")
        data: Any = body.get("data")
        if not isinstance(data, dict):
            raise protocol_error("prometheus", "query", "no data object")
        result_type, result = data.get("resultType"), data.get("result")
        try:
            if result_type == "vector":
                if not result:
                    return None
                raw = result[0]["value"][1]
            elif result_type == "scalar" and isinstance(result, list):
                raw = result[1]
            else:
                raise protocol_error("prometheus", "query", f"unexpected {result_type!r} result")
            number = float(raw)
        except (KeyError, IndexError, TypeError, ValueError):
            raise protocol_error("prometheus", "query", "malformed sample") from None
        return None if math.isnan(number) else number
