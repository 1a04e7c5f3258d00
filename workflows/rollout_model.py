"""The rollout workflow's state and messages (pydantic models; no decisions: those are in
workflows/rollout_core.py and its topic modules); its input, which carries the pinned plan,
is in workflows/rollout_pinned.py.

Everything a rollout knows lives in one `RolloutState`, carried whole through
continue-as-new and returned by the `state` query (as `RolloutStatus`, the same model).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Literal, TypeAlias

from pydantic import BaseModel, Field

RolloutStateName = Literal[
    "assessing",
    "awaiting_approval",
    "waiting_window",
    "applying",
    "baking",
    "held",
    "rolling_back",
    "rolled_back",
    "frozen",
    "completed",
    "rejected",
]
TERMINAL: frozenset[str] = frozenset({"completed", "rejected"})
Verdict = Literal["pass", "fail", "inconclusive", "error"]
CheckVerdict = Literal["pending", "passing", "failed", "inconclusive"]


def rollout_workflow_id(change_id: str) -> str:
    return f"rollout-{change_id}"


class ChangeRequest(BaseModel):
    change_id: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][\w.:@-]*$")
    owner: str = Field(min_length=1, max_length=200)
    reason: str = Field(min_length=1, max_length=2000)
    ticket_id: str | None = Field(None, max_length=64)
    outside_windows: bool = Field(
        False,
        description="Let phases start outside the plan's change windows (never in a blackout); "
        "the start then needs at least one approval even for a standard change.",
    )


class Stopwatch(BaseModel):
    """Active time: runs, pauses, resumes; `spent` never counts the paused stretches."""

    spent_before: timedelta = timedelta(0)
    running_since: datetime | None = None

    def spent(self, now: datetime) -> timedelta:
        if self.running_since is None:
            return self.spent_before
        return self.spent_before + (now - self.running_since)

    def pause(self, now: datetime) -> None:
        self.spent_before = self.spent(now)
        self.running_since = None

    def resume(self, now: datetime) -> None:
        if self.running_since is None:
            self.running_since = now

    def moment_reaching(self, spent: timedelta) -> datetime | None:
        """When this running stopwatch will show `spent`; None while paused."""
        if self.running_since is None:
            return None
        return self.running_since + max(spent - self.spent_before, timedelta(0))


class Reading(BaseModel):
    at: datetime
    value: float | None = None
    baseline: float | None = None
    sample_size: int = 0
    verdict: Verdict
    note: str = ""


class CheckStatus(BaseModel):
    metric: str
    threshold: str
    on_fail: Literal["rollback", "hold"]
    readings: list[Reading] = Field(default_factory=list)
    failures: int = 0
    consecutive_errors: int = 0
    verdict: CheckVerdict = "pending"


class PhaseStatus(BaseModel):
    name: str
    percent: float
    condition: str | None = None
    cohort_size: int = 0
    eligible: int = 0
    irreversible: bool = False
    gate: Literal["auto", "approval"] = "auto"
    applied_at: datetime | None = None
    exposed_total: int | None = None
    bake_total: timedelta
    bake: Stopwatch = Field(default_factory=Stopwatch)
    readings_taken: int = 0
    checks: list[CheckStatus] = Field(default_factory=list)
    verdict: Literal["pending", "baking", "passed", "promoted", "failed", "skipped"] = "pending"
    reverted: bool = False
    notified: int = 0
    recorded: bool = Field(
        False, description="its apply recorded the exposed customers (revert and notices read it)"
    )


class Approval(BaseModel):
    approver: str
    reason: str
    at: datetime
    stage: str
    attempt: int = Field(1, description="the attempt it was given in: it counts for no other")


class RolloutState(BaseModel):
    """Everything a rollout knows: the core's state, carried whole through continue-as-new."""

    change: ChangeRequest
    plan: str
    risk: str
    state: RolloutStateName = "assessing"
    stage: str = Field("impact", description="the phase name (OpsStage), or impact")
    attempt: int = Field(1, description="1, then one more per retry after an abort")
    phase_index: int = 0
    phases: list[PhaseStatus] = Field(default_factory=list)
    applied: list[int] = Field(default_factory=list, description="phases applied, in order")
    approvals_needed: int = 0
    approvals: list[Approval] = Field(default_factory=list)
    approvals_scoped: bool = Field(
        False, description="approvals count only in their own attempt (set by a retry)"
    )
    approval_for: str | None = Field(None, description="start, or the phase whose gate waits")
    approval_since: datetime | None = None
    approval_paged: bool = False
    approval_notify: bool = Field(
        False, description="approvers are asked at once and reminded (runs since the patch)"
    )
    approval_notices: int = Field(0, description="notices sent for the current request")
    paused: bool = False
    pause_reason: str | None = None
    hold_reason: str | None = None
    promote_requested: bool = False
    promote_full_by: str | None = None
    rollback_reason: str | None = None
    aborted: bool = False
    frozen_reason: str | None = None
    ended_reason: str | None = None
    deadline: timedelta | None = None
    active: Stopwatch = Field(default_factory=Stopwatch, description="time towards the deadline")
    next_window: datetime | None = None
    customers_notified: int = 0
    customers_reverted: int = 0
    rollbacks: int = 0
    pages: int = 0
    commands: int = 0
    finished: bool = False
    finished_at: datetime | None = None
    rolled_back_at: datetime | None = None

    @property
    def current(self) -> PhaseStatus | None:
        if 0 <= self.phase_index < len(self.phases):
            return self.phases[self.phase_index]
        return None

    @property
    def ops_state(self) -> str:
        return "held" if self.paused else self.state


RolloutStatus: TypeAlias = RolloutState
"""What the `state` query returns: the whole state."""


# --- messages ---


class Decision(BaseModel):
    approver: str = Field(min_length=1, max_length=200)
    reason: str = Field("", max_length=2000)


class Reason(BaseModel):
    reason: str = Field("", max_length=2000)
    by: str | None = Field(None, max_length=200, description="who gave the command")
