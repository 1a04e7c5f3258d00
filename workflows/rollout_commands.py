"""The commands a person gives a rollout (the workflow's updates): why one is refused
(`refuse_*` raise ValueError with the reason, before anything changes) and what an accepted
one changes. Pure: `now` is given; the workflow records the command in the ledger and wakes
the run.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from definitions.models import RolloutSpec
from workflows.rollout_approvals import approvals_for, refusal_of_approver
from workflows.rollout_checks import fresh_checks
from workflows.rollout_core import finish
from workflows.rollout_model import Approval, Decision, Reason, RolloutState, Stopwatch


def who(command: Reason | None) -> dict[str, str]:
    """`{"by": ...}` for a command's ledger entry; nothing from a client that did not say."""
    return {"by": command.by} if command is not None and command.by else {}


def _refuse_if_over(s: RolloutState) -> None:
    if s.finished:
        raise ValueError(f"rollout of {s.change.change_id} is over ({s.state})")


def _refuse_approver(s: RolloutState, spec: RolloutSpec, approver: str) -> None:
    if (refusal := refusal_of_approver(s, spec, approver)) is not None:
        raise ValueError(refusal)


# --- approve, reject -----------------------------------------------------------------------


def refuse_approve(s: RolloutState, spec: RolloutSpec, command: Decision) -> None:
    _refuse_if_over(s)
    if s.state != "awaiting_approval":
        raise ValueError(f"nothing awaits approval: the rollout is {s.state}")
    _refuse_approver(s, spec, command.approver)
    stage = s.approval_for or "start"
    if any(a.approver == command.approver for a in approvals_for(s, stage)):
        raise ValueError(f"{command.approver} has already approved this")


def approve(s: RolloutState, command: Decision, now: datetime) -> str:
    """Count the approval for what awaits it (the start or a gate); that stage."""
    stage = s.approval_for or "start"
    s.approvals.append(
        Approval(
            approver=command.approver,
            reason=command.reason,
            at=now,
            stage=stage,
            attempt=s.attempt,
        )
    )
    return stage


def refuse_reject(s: RolloutState, spec: RolloutSpec, command: Decision) -> None:
    _refuse_if_over(s)
    if s.state != "awaiting_approval":
        raise ValueError(f"nothing awaits approval: the rollout is {s.state}")
    _refuse_approver(s, spec, command.approver)


def reject(s: RolloutState, command: Decision) -> None:
    """A rejection rolls back (before the start: ends the rollout as rejected)."""
    s.rollback_reason = f"rejected by {command.approver}" + (
        f": {command.reason}" if command.reason else ""
    )


# --- pause, resume, promote ----------------------------------------------------------------


def refuse_pause(s: RolloutState) -> None:
    _refuse_if_over(s)
    if s.paused:
        raise ValueError("the rollout is already paused")
    if s.state not in ("awaiting_approval", "waiting_window", "applying", "baking", "held"):
        raise ValueError(f"a rollout that is {s.state} cannot be paused")


def pause(s: RolloutState, command: Reason) -> None:
    s.paused, s.pause_reason = True, command.reason or None


def refuse_resume(s: RolloutState) -> None:
    _refuse_if_over(s)
    if not s.paused and s.state != "held":
        raise ValueError(f"the rollout is not paused or held (it is {s.state})")


def resume(s: RolloutState, spec: RolloutSpec, now: datetime) -> dict[str, Any]:
    """Unpause; or, when held, keep baking: the failed counts start afresh, and a spent bake
    gets one more round. The ledger's detail (the hold it ended)."""
    detail: dict[str, Any] = {}
    if s.paused:
        s.paused, s.pause_reason = False, None
    elif s.state == "held":
        phase = s.phases[s.phase_index]
        detail["hold"] = s.hold_reason
        s.hold_reason = None
        for check in phase.checks:
            check.failures, check.consecutive_errors, check.verdict = 0, 0, "pending"
        spent, interval = phase.bake.spent(now), spec.analysis.interval
        if spent >= phase.bake_total:
            phase.bake_total = max(spent, interval * phase.readings_taken) + interval
        phase.verdict = "baking"
        s.state = "baking"
    return detail


def refuse_promote(s: RolloutState) -> None:
    _refuse_if_over(s)
    if s.paused:
        raise ValueError("the rollout is paused: resume it first")
    if s.state not in ("baking", "held", "frozen"):
        raise ValueError(f"nothing to promote: the rollout is {s.state}, not baking or held")


def promote(s: RolloutState) -> None:
    """End the current phase's bake as passed (a frozen rollout: roll forward)."""
    s.promote_requested = True
    if s.state == "held":
        s.hold_reason = None
        s.state = "baking"


def refuse_promote_full(s: RolloutState, spec: RolloutSpec, command: Decision) -> None:
    _refuse_if_over(s)
    if s.paused:
        raise ValueError("the rollout is paused: resume it first")
    if s.state not in ("waiting_window", "baking", "held", "awaiting_approval"):
        raise ValueError(f"cannot skip to 100% while the rollout is {s.state}")
    if s.state == "awaiting_approval" and s.approval_for == "start":
        raise ValueError("the rollout is not approved yet")
    if s.phase_index >= len(s.phases) - 1:
        raise ValueError("the rollout is already at its last phase")
    _refuse_approver(s, spec, command.approver)


def promote_full(s: RolloutState, command: Decision, now: datetime) -> None:
    """Skip to the last phase (100%), an approver's decision kept with the approvals."""
    s.promote_full_by = command.approver
    s.approvals.append(
        Approval(
            approver=command.approver,
            reason=command.reason,
            at=now,
            stage="full",
            attempt=s.attempt,
        )
    )
    if s.state == "held":
        s.state = "baking"


# --- abort, retry --------------------------------------------------------------------------


def refuse_abort(s: RolloutState) -> None:
    _refuse_if_over(s)
    if s.state in ("rolling_back", "rolled_back") or (s.rollback_reason and s.state != "frozen"):
        raise ValueError(f"the rollout is already rolling back ({s.rollback_reason})")


@dataclass(frozen=True)
class Abort:
    """What an abort became: `accept` (a frozen rollout ends as it stands) or `abort` (roll
    back, then wait for a retry), with the reason recorded."""

    command: Literal["accept", "abort"]
    reason: str


def abort(s: RolloutState, command: Reason, now: datetime) -> Abort:
    reason = command.reason or "aborted by the owner"
    if s.state == "frozen":
        s.ended_reason = f"accepted as it stands: {reason}"
        finish(s, now)
        return Abort("accept", reason)
    s.aborted = True
    s.paused, s.pause_reason = False, None
    s.rollback_reason = f"aborted: {reason}"
    return Abort("abort", reason)


def refuse_retry(s: RolloutState) -> None:
    _refuse_if_over(s)
    if s.state != "rolled_back" or not s.aborted:
        raise ValueError(f"only an aborted, rolled-back rollout can be retried (it is {s.state})")


def retry(s: RolloutState, spec: RolloutSpec, *, fresh_approvals: bool) -> bool:
    """Start again from the first phase as the next attempt. With `fresh_approvals` the
    earlier attempt's approvals count for none of its gates; True when the start must then
    be approved afresh (the state is already awaiting_approval)."""
    s.attempt += 1
    s.phase_index, s.applied = 0, []
    s.rollback_reason = s.hold_reason = s.ended_reason = s.rolled_back_at = None
    s.aborted = s.promote_requested = False
    for number, phase in enumerate(s.phases):
        phase.applied_at = phase.exposed_total = None
        phase.bake, phase.readings_taken, phase.verdict = Stopwatch(), 0, "pending"
        phase.bake_total = spec.phases[number].bake
        phase.checks = fresh_checks(spec.phases[number])
        phase.reverted, phase.notified, phase.recorded = False, 0, False
    s.state, s.stage = "waiting_window", s.phases[0].name
    if not fresh_approvals:
        return False
    s.approvals_scoped = True
    s.approval_for = s.approval_since = None
    if not s.approvals_needed:
        return False
    s.state = "awaiting_approval"
    return True
