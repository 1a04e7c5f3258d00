"""What the Temporal UI says of a rollout (`workflow.set_current_details`): in one line, what it
waits for and until when. Pure: the state and the plan are given.
"""

from __future__ import annotations

from definitions.models import RolloutSpec
from workflows.rollout_approvals import approvals_for, needed_for
from workflows.rollout_core import local_time, retry_closes_at
from workflows.rollout_model import PhaseStatus, RolloutState


def percent_text(percent: float) -> str:
    return f"{percent:g}%"


def value_text(metric: str, value: float | None) -> str:
    """A reading as people read it: rates in percent."""
    if value is None:
        return "no data"
    if metric.endswith("_rate"):
        return f"{value * 100:.1f}%"
    return f"{value:.3g}"


def phase_text(s: RolloutState, phase: PhaseStatus) -> str:
    size = phase.exposed_total if phase.exposed_total is not None else phase.cohort_size
    return (
        f"phase {s.phase_index + 1} of {len(s.phases)} "
        f"({percent_text(phase.percent)}, {size} customers)"
    )


def describe(s: RolloutState, spec: RolloutSpec) -> str:
    """The one line: how it ended, or what it waits for (paused: that first)."""
    if s.state == "completed":
        return f"completed: {s.ended_reason}"
    if s.state == "rejected":
        return f"rejected: {s.ended_reason}"
    if s.state == "rolling_back":
        return f"rolling back: {s.rollback_reason}"
    if s.state == "rolled_back":
        if s.finished:
            return f"rolled back: {s.ended_reason}"
        until = local_time(spec, retry_closes_at(s))
        return f"rolled back after abort ({s.ended_reason}); retry possible until {until}"
    if s.state == "frozen":
        return f"frozen: {s.frozen_reason}"
    prefix = "paused" + (f" ({s.pause_reason})" if s.pause_reason else "") + ", no clock runs; "
    text = state_text(s, spec)
    return (prefix if s.paused else "") + text


def state_text(s: RolloutState, spec: RolloutSpec) -> str:
    """What a running (or paused) rollout is doing."""
    phase = s.current
    if s.state == "awaiting_approval":
        stage = s.approval_for or "start"
        missing = needed_for(s, spec, stage) - len(approvals_for(s, stage))
        what = "the start" if stage == "start" else f"the gate after phase {stage}"
        text = f"awaiting {missing} more approval(s) from {spec.approvals.group} for {what}"
        if s.approval_since is not None and not s.approval_paged:
            paging = local_time(spec, s.approval_since + spec.approvals.timeout)
            text += f"; approvers paged at {paging}"
        return text
    if phase is None:
        return s.state
    head = phase_text(s, phase)
    if s.state == "waiting_window":
        when = local_time(spec, s.next_window) if s.next_window else "now"
        return f"{head} waiting for the change window at {when}"
    if s.state == "applying":
        return f"{head} applying"
    if s.state == "held":
        return f"{head} held: {s.hold_reason}; waiting for the owner to promote, resume or abort"
    if s.state == "baking":
        parts = [f"{head} baking"]
        for check in phase.checks:
            if check.readings and check.readings[-1].value is not None:
                latest = check.readings[-1]
                parts.append(
                    f"{check.metric.replace('_', ' ')} "
                    f"{value_text(check.metric, latest.value)} vs {check.threshold}"
                )
                break
        ends = phase.bake.moment_reaching(phase.bake_total)
        if ends is not None:
            then = "approval gate" if phase.gate == "approval" else "next phase"
            if s.phase_index == len(s.phases) - 1:
                then = "completion"
            parts.append(f"{then} at {local_time(spec, ends)} if healthy")
        return ", ".join(parts)
    return f"{head} {s.state}"
