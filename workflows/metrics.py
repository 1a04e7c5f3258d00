"""opsflow's own Prometheus metrics: the one catalog, and the helpers workflows record with.

Every metric opsflow defines is a `MetricSpec` in `CATALOG`, whoever emits it (the workflows
here, the intake in intake/metrics.py); the metrics runtime (client/metrics.py) takes its
histogram buckets from it, and the Grafana dashboard (worker/grafana/) is checked against it.
It lives in workflows/ because that is the lowest layer every emitter may import.

Workflows record through `workflow.metric_meter()`, which records nothing while a history is
replayed: a worker that picks a case up again after a restart or a cache eviction does not
count its breaches twice. Recording is not a Temporal command, so histories do not change.
The meter adds `namespace`, `task_queue` and `workflow_type` to every series.

Names are given to the meter without suffixes: the exporter is configured
(`counters_total_suffix`, `unit_suffix`) to append `_total` to counters and `_seconds` to
histograms in seconds, as Prometheus names them; `MetricSpec.exposed` is the scraped name.
Label values are bounded by definitions (policies, plans, rules, queues), never ids.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from temporalio import workflow
from temporalio.common import MetricMeter

MetricKind = Literal["counter", "histogram", "gauge"]


@dataclass(frozen=True)
class MetricSpec:
    name: str
    """As given to the meter: without `_total` or a unit suffix (the exporter adds them)."""
    kind: MetricKind
    help: str
    labels: tuple[str, ...]
    unit: Literal["seconds"] | None = None
    buckets: tuple[float, ...] = ()
    """Histogram bucket bounds, in `unit`."""

    @property
    def exposed(self) -> str:
        """The metric family's name on /metrics."""
        if self.kind == "counter":
            return f"{self.name}_total"
        if self.unit is not None:
            return f"{self.name}_{self.unit}"
        return self.name

    @property
    def series_names(self) -> tuple[str, ...]:
        """Every sample name the family exposes (a histogram's _bucket, _sum and _count)."""
        if self.kind == "histogram":
            return tuple(f"{self.exposed}_{part}" for part in ("bucket", "sum", "count"))
        return (self.exposed,)


_MINUTE = 60.0
_HOUR = 60 * _MINUTE

# --- escalation ----------------------------------------------------------------------------
SLA_WARNINGS = MetricSpec(
    "opsflow_sla_warnings",
    "counter",
    "SLA warnings sent, by policy, case priority, clock and percent of the budget spent.",
    ("policy", "priority", "clock", "percent"),
)
SLA_BREACHES = MetricSpec(
    "opsflow_sla_breaches",
    "counter",
    "SLA clocks whose budget ran out, by policy, case priority and clock.",
    ("policy", "priority", "clock"),
)
SLA_MET = MetricSpec(
    "opsflow_sla_met",
    "counter",
    "SLA clocks stopped within their budget (acknowledged or resolved in time).",
    ("policy", "priority", "clock"),
)
TIME_TO_ACKNOWLEDGE = MetricSpec(
    "opsflow_time_to_acknowledge",
    "histogram",
    "Wall-clock time from a case's opening to its first acknowledgement.",
    ("policy", "priority"),
    unit="seconds",
    buckets=(
        _MINUTE,
        5 * _MINUTE,
        15 * _MINUTE,
        30 * _MINUTE,
        _HOUR,
        2 * _HOUR,
        4 * _HOUR,
        8 * _HOUR,
        24 * _HOUR,
        72 * _HOUR,
    ),
)
ESCALATION_LEVELS = MetricSpec(
    "opsflow_escalation_levels_fired",
    "counter",
    "Escalation levels fired, by policy, case priority and level number.",
    ("policy", "priority", "level"),
)

# --- rollout -------------------------------------------------------------------------------
ROLLOUT_PHASE_VERDICTS = MetricSpec(
    "opsflow_rollout_phase_verdicts",
    "counter",
    "Rollout phase verdicts (passed, failed, promoted, skipped), by plan and phase.",
    ("plan", "phase", "verdict"),
)
ROLLOUT_ROLLBACKS = MetricSpec(
    "opsflow_rollout_rollbacks",
    "counter",
    "Rollbacks started, by plan and cause "
    "(check_failed, inconclusive, deadline, rejected, aborted, other).",
    ("plan", "cause"),
)

# --- recovery ------------------------------------------------------------------------------
RECOVERY_ACTIONS_FIRED = MetricSpec(
    "opsflow_recovery_actions_fired",
    "counter",
    "Recovery actions run for a rule that fired (approved credits included), by rule and "
    "action type.",
    ("rule", "action"),
)
RECOVERY_TRIGGERS_SUPPRESSED = MetricSpec(
    "opsflow_recovery_triggers_suppressed",
    "counter",
    "Rule triggers whose actions were suppressed, by rule and reason (silence, dedup, "
    "inhibition, cooldown, cap, ladder_exhausted, condition_error).",
    ("rule", "reason"),
)

# --- handoff -------------------------------------------------------------------------------
HANDOFF_WAIT = MetricSpec(
    "opsflow_handoff_wait",
    "histogram",
    "How long a customer waited for a person, from the handoff request to the end of the "
    "wait, by queue and how it ended (active, callback_scheduled, abandoned, returned_to_bot).",
    ("queue", "outcome"),
    unit="seconds",
    buckets=(
        10.0,
        30.0,
        _MINUTE,
        2 * _MINUTE,
        5 * _MINUTE,
        10 * _MINUTE,
        15 * _MINUTE,
        30 * _MINUTE,
        _HOUR,
    ),
)
HANDOFF_OFFERS = MetricSpec(
    "opsflow_handoff_offers",
    "counter",
    "Offers to agents, by queue and answer (accepted, declined, timed_out, withdrawn).",
    ("queue", "outcome"),
)
HANDOFF_OVERFLOWS = MetricSpec(
    "opsflow_handoff_overflows",
    "counter",
    "Conversations moved to the overflow queue, by the queue they left and the overflow queue.",
    ("queue", "overflow_queue"),
)

# --- intake (recorded by intake/metrics.py with the process's runtime meter) ----------------
INTAKE_EVENTS = MetricSpec(
    "opsflow_intake_events",
    "counter",
    "Events received from a known sender, by sender and outcome (accepted: new in the "
    "inbox; duplicate: already there).",
    ("source", "outcome"),
)
INTAKE_REFUSED = MetricSpec(
    "opsflow_intake_requests_refused",
    "counter",
    "Requests the intake refused, by reason (the problem type: unauthorized, invalid-event, ...).",
    ("reason",),
)
INTAKE_DELIVERIES = MetricSpec(
    "opsflow_intake_deliveries",
    "counter",
    "Relay delivery attempts, by outcome (delivered, rejected, pending: left for a retry).",
    ("outcome",),
)
INTAKE_WAITING = MetricSpec(
    "opsflow_intake_events_waiting",
    "gauge",
    "Events in the inbox not yet delivered, as the relay last saw them (at most its batch).",
    (),
)

CATALOG: tuple[MetricSpec, ...] = (
    SLA_WARNINGS,
    SLA_BREACHES,
    SLA_MET,
    TIME_TO_ACKNOWLEDGE,
    ESCALATION_LEVELS,
    ROLLOUT_PHASE_VERDICTS,
    ROLLOUT_ROLLBACKS,
    RECOVERY_ACTIONS_FIRED,
    RECOVERY_TRIGGERS_SUPPRESSED,
    HANDOFF_WAIT,
    HANDOFF_OFFERS,
    HANDOFF_OVERFLOWS,
    INTAKE_EVENTS,
    INTAKE_REFUSED,
    INTAKE_DELIVERIES,
    INTAKE_WAITING,
)

Labels = dict[str, str]


def definition_name(ref: str) -> str:
    """`name@version` -> `name`: a label per definition, not per deployed version."""
    return ref.partition("@")[0]


def _workflow_meter() -> MetricMeter:
    return workflow.metric_meter()


def _count(spec: MetricSpec, labels: Labels) -> None:
    _workflow_meter().create_counter(spec.name, spec.help).add(1, labels)


def _observe_seconds(spec: MetricSpec, seconds: float, labels: Labels) -> None:
    meter = _workflow_meter()
    meter.create_histogram_float(spec.name, spec.help, spec.unit).record(max(seconds, 0.0), labels)


# --- what workflows record -----------------------------------------------------------------


def sla_warned(*, policy: str, priority: str, clock: str, percent: int) -> None:
    labels = {"policy": policy, "priority": priority, "clock": clock, "percent": str(percent)}
    _count(SLA_WARNINGS, labels)


def sla_breached(*, policy: str, priority: str, clock: str) -> None:
    _count(SLA_BREACHES, {"policy": policy, "priority": priority, "clock": clock})


def sla_met(*, policy: str, priority: str, clock: str) -> None:
    _count(SLA_MET, {"policy": policy, "priority": priority, "clock": clock})


def case_acknowledged(*, policy: str, priority: str, seconds: float) -> None:
    _observe_seconds(TIME_TO_ACKNOWLEDGE, seconds, {"policy": policy, "priority": priority})


def escalation_level_fired(*, policy: str, priority: str, level: int) -> None:
    _count(ESCALATION_LEVELS, {"policy": policy, "priority": priority, "level": str(level)})


def rollout_phase_verdict(*, plan: str, phase: str, verdict: str) -> None:
    _count(ROLLOUT_PHASE_VERDICTS, {"plan": plan, "phase": phase, "verdict": verdict})


def rollout_rollback_started(*, plan: str, cause: str) -> None:
    _count(ROLLOUT_ROLLBACKS, {"plan": plan, "cause": cause})


def recovery_action_fired(*, rule: str, action: str) -> None:
    _count(RECOVERY_ACTIONS_FIRED, {"rule": rule, "action": action})


def recovery_trigger_suppressed(*, rule: str, reason: str) -> None:
    _count(RECOVERY_TRIGGERS_SUPPRESSED, {"rule": rule, "reason": reason})


def handoff_wait_ended(*, queue: str, outcome: str, seconds: float) -> None:
    _observe_seconds(HANDOFF_WAIT, seconds, {"queue": queue, "outcome": outcome})


def handoff_offer_answered(*, queue: str, outcome: str) -> None:
    _count(HANDOFF_OFFERS, {"queue": queue, "outcome": outcome})


def handoff_overflowed(*, queue: str, overflow_queue: str) -> None:
    _count(HANDOFF_OVERFLOWS, {"queue": queue, "overflow_queue": overflow_queue})
