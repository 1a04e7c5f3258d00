"""The rollout's bake: when to read the checks, what a reading says, when a phase has passed,
failed or must wait for a person. Pure: `now` and the readings are given; the workflow
(workflows/rollout.py) reads the metrics and carries out the verdicts.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal

from activities.models import MetricCohort
from definitions.models import Analysis, Check, Phase, RolloutSpec
from workflows.rollout_model import CheckStatus, Reading, RolloutState, Verdict

MAX_READINGS_KEPT = 48
"""Readings kept per check in state (the counts cover all of them)."""


def threshold_text(check: Check) -> str:
    parts = []
    if check.max is not None:
        parts.append(f"max {check.max:g}")
    if check.min is not None:
        parts.append(f"min {check.min:g}")
    if check.max_increase_pct is not None:
        parts.append(f"at most +{check.max_increase_pct:g}% vs baseline")
    if check.max_decrease_pct is not None:
        parts.append(f"at most -{check.max_decrease_pct:g}% vs baseline")
    return ", ".join(parts)


def needs_baseline(check: Check) -> bool:
    return check.max_increase_pct is not None or check.max_decrease_pct is not None


def fresh_checks(phase: Phase) -> list[CheckStatus]:
    """A phase's checks before their first reading."""
    return [
        CheckStatus(metric=c.metric, threshold=threshold_text(c), on_fail=c.on_fail)
        for c in phase.checks
    ]


def judge(
    check: Check,
    analysis: Analysis,
    value: float | None,
    sample_size: int,
    baseline: float | None,
    baseline_samples: int,
) -> tuple[Verdict, str]:
    """One reading's verdict: pass, fail or inconclusive (too few samples, no data)."""
    if value is None or sample_size == 0:
        return "inconclusive", "no data for the exposed cohort"
    if sample_size < analysis.min_samples:
        return "inconclusive", f"{sample_size} samples, fewer than {analysis.min_samples}"
    if check.max is not None and value > check.max:
        return "fail", f"{value:g} above max {check.max:g}"
    if check.min is not None and value < check.min:
        return "fail", f"{value:g} below min {check.min:g}"
    if needs_baseline(check):
        if baseline is None or baseline_samples < analysis.min_samples or baseline <= 0:
            return "inconclusive", "no usable baseline"
        change = (value - baseline) / baseline * 100
        if check.max_increase_pct is not None and change > check.max_increase_pct:
            return "fail", f"{change:+.1f}% vs baseline, more than +{check.max_increase_pct:g}%"
        if check.max_decrease_pct is not None and -change > check.max_decrease_pct:
            return "fail", f"{change:+.1f}% vs baseline, more than -{check.max_decrease_pct:g}%"
    return "pass", ""


def record(
    status: CheckStatus, reading: Reading, analysis: Analysis, *, consecutive: bool = False
) -> None:
    """Add a reading and update the check's counts and verdict. `failures` counts failing
    readings (`error_limit` errors in a row count as one); with `consecutive` a passing
    reading sets it back to 0, so only failures in a row reach `failure_limit`."""
    status.readings.append(reading)
    del status.readings[:-MAX_READINGS_KEPT]
    if reading.verdict == "error":
        status.consecutive_errors += 1
        if status.consecutive_errors >= analysis.error_limit:
            status.failures += 1
            status.consecutive_errors = 0
    else:
        status.consecutive_errors = 0
        if reading.verdict == "fail":
            status.failures += 1
        elif reading.verdict == "pass" and consecutive and status.verdict != "failed":
            status.failures = 0  # a failed check stays failed until `resume` resets it
    if status.failures > analysis.failure_limit:
        status.verdict = "failed"
    elif reading.verdict == "pass":
        status.verdict = "passing"
    elif reading.verdict == "inconclusive":
        status.verdict = "inconclusive"


@dataclass(frozen=True)
class BakeMove:
    """What a baking phase does now: wait (until a moment, or a command when `until` is
    None), go on as promoted, read its checks, or end its bake."""

    kind: Literal["wait", "promoted", "read", "end"]
    until: datetime | None = None


def next_bake_move(s: RolloutState, spec: RolloutSpec, now: datetime) -> BakeMove:
    """The bake clock counts active time only; readings fall every `analysis.interval` of it
    and none after the bake's end. A promote ends the bake at once."""
    phase = s.phases[s.phase_index]
    checks = spec.phases[s.phase_index].checks
    if s.paused:
        return BakeMove("wait")
    if s.promote_requested:
        s.promote_requested = False
        phase.verdict = "promoted"
        return BakeMove("promoted")
    interval = spec.analysis.interval
    spent = phase.bake.spent(now)
    next_reading = interval * (phase.readings_taken + 1)
    if checks and next_reading <= phase.bake_total and spent >= next_reading:
        phase.readings_taken += 1
        return BakeMove("read")
    if spent >= phase.bake_total:
        return BakeMove("end")
    target = phase.bake_total
    if checks and next_reading <= phase.bake_total:
        target = next_reading
    return BakeMove("wait", phase.bake.moment_reaching(target))


@dataclass(frozen=True)
class MetricWindow:
    """Whom a reading covers and over which stretch of time."""

    cohort: MetricCohort
    start: datetime
    end: datetime


def exposed_window(s: RolloutState, window: timedelta, now: datetime) -> MetricWindow:
    """The customers exposed to the change, over the check's window up to now."""
    return MetricWindow(MetricCohort(change_id=s.change.change_id), now - window, now)


def baseline_window(s: RolloutState, window: timedelta, now: datetime) -> MetricWindow:
    """The customers not exposed to the change, over the same window; once a phase reaches
    everyone there are none, so then all customers before the first phase."""
    phase = s.phases[s.phase_index]
    everyone = phase.percent >= 100 and phase.condition is None
    if not everyone:
        return MetricWindow(MetricCohort(exclude_change_id=s.change.change_id), now - window, now)
    first = s.phases[s.applied[0]].applied_at if s.applied else None
    before = first if first is not None and first < now else now
    return MetricWindow(MetricCohort(), before - window, before)


def reading_of(
    check: Check,
    analysis: Analysis,
    now: datetime,
    exposed: tuple[float | None, int],
    baseline: tuple[float | None, int] | None,
) -> Reading:
    """A reading of the exposed cohort's (value, sample size), judged against the check and,
    when it needs one, the baseline's (value, sample size)."""
    value, samples = exposed
    baseline_value, baseline_samples = baseline if baseline is not None else (None, 0)
    verdict, note = judge(check, analysis, value, samples, baseline_value, baseline_samples)
    return Reading(
        at=now,
        value=value,
        baseline=baseline_value,
        sample_size=samples,
        verdict=verdict,
        note=note,
    )


def error_reading(now: datetime, error: str) -> Reading:
    """A reading the metrics source could not give (it counts towards `error_limit`)."""
    return Reading(at=now, verdict="error", note=error[:200])


@dataclass(frozen=True)
class FailedChecks:
    """Checks that failed with the latest readings: what the ledger records, and either the
    rollback's reason (a check with on_fail: rollback) or the hold's."""

    step: str
    detail: dict[str, Any] = field(default_factory=dict)
    rollback_reason: str | None = None
    hold_reason: str | None = None


def record_readings(
    s: RolloutState, spec: RolloutSpec, readings: list[Reading], *, consecutive: bool
) -> FailedChecks | None:
    """Record one round of readings (one per check, in the plan's order); None when no check
    failed with it. A check that had already failed does not fail again."""
    phase = s.phases[s.phase_index]
    failed: list[tuple[CheckStatus, Reading]] = []
    for status, reading in zip(phase.checks, readings, strict=True):
        was_failed = status.verdict == "failed"
        record(status, reading, spec.analysis, consecutive=consecutive)
        if status.verdict == "failed" and not was_failed:
            failed.append((status, reading))
    if not failed:
        return None
    step = f"phase-{s.phase_index + 1}-reading-{phase.readings_taken}-failed"
    detail = {
        "phase": phase.name,
        "failed": [{"metric": c.metric, "failures": c.failures, "note": r.note} for c, r in failed],
    }
    rollback = [(c, r) for c, r in failed if c.on_fail == "rollback"]
    check, reading = rollback[0] if rollback else failed[0]
    reason = (
        f"check {check.metric} failed in phase {phase.name}: "
        f"{reading.note or 'too many metric errors'}"
    )
    if rollback:
        return FailedChecks(step, detail, rollback_reason=reason)
    return FailedChecks(step, detail, hold_reason=reason)


@dataclass(frozen=True)
class BakeEnd:
    """How a bake that ran its full time ends: passed (the ledger's detail), or checks still
    unsure (pending or inconclusive) that the plan says fail (a rollback) or hold."""

    kind: Literal["passed", "rollback", "hold"]
    reason: str = ""
    detail: dict[str, Any] = field(default_factory=dict)


def end_of_bake(s: RolloutState, spec: RolloutSpec) -> BakeEnd:
    """The phase's verdict once its bake is over; a failed one sets the rollback's reason."""
    phase = s.phases[s.phase_index]
    policy = spec.analysis.inconclusive
    unsure = [c for c in phase.checks if c.verdict in ("pending", "inconclusive")]
    if unsure and policy != "pass":
        names = ", ".join(c.metric for c in unsure)
        if policy == "fail":
            phase.verdict = "failed"
            s.rollback_reason = f"checks {names} inconclusive in phase {phase.name}"
            return BakeEnd("rollback", s.rollback_reason)
        return BakeEnd("hold", f"checks {names} inconclusive at the end of phase {phase.name}")
    phase.verdict = "passed"
    detail = {"phase": phase.name, "checks": {c.metric: c.verdict for c in phase.checks}}
    return BakeEnd("passed", detail=detail)
