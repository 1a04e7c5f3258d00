"""The escalation core's SLA clocks, measured in business time: pause, resume and re-budget
without losing a second.

A clock is a value (`SlaClock`: its budget, the time spent, warnings sent, when it was met or
breached) and a kind (`ClockKind`: which target of the policy budgets it at a case's priority
and stage, and which command meets it). Everything due on the clocks (each warning, each
breach, the next deadline across all of them) is computed here from the clocks alone, so a
new SLA metric is one more `ClockKind`, not a new code path in the workflow.

Pure and deterministic: the caller passes `now` (workflow.now()) and the calendar, so the
same code runs in a workflow, in a backtest and in a unit test.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal, Protocol

from pydantic import BaseModel, Field

from definitions.models import EscalationSpec, SlaTarget

FIRST_RESPONSE = "first_response"
RESOLUTION = "resolution"
# What meets a clock: a person's first response (acknowledge) or the end of the case.
MetBy = Literal["acknowledge", "resolve"]
ClockStatus = Literal["running", "paused", "met", "breached"]


class Calendar(Protocol):
    def business_time_between(self, start: datetime, end: datetime) -> timedelta: ...

    def add_business_time(self, start: datetime, duration: timedelta) -> datetime: ...


class SlaClock(BaseModel):
    """One SLA target (first response or resolution) for one case."""

    name: str
    budget: timedelta
    # Business time spent in intervals that have closed (by a pause or a re-budget).
    spent_before: timedelta = timedelta(0)
    running_since: datetime | None = None
    warned_at: list[int] = Field(default_factory=list, description="warn_at percents sent")
    met_at: datetime | None = None
    breached_at: datetime | None = None
    due: datetime | None = Field(
        None, description="when the budget runs out if nothing changes; set by the state query"
    )
    status: ClockStatus | None = Field(
        None, description="what to show: breached wins over running; set by the state query"
    )

    @property
    def running(self) -> bool:
        return self.running_since is not None

    @property
    def stopped(self) -> bool:
        return self.met_at is not None

    def spent(self, now: datetime, calendar: Calendar) -> timedelta:
        if self.running_since is None:
            return self.spent_before
        return self.spent_before + calendar.business_time_between(self.running_since, now)

    def remaining(self, now: datetime, calendar: Calendar) -> timedelta:
        return self.budget - self.spent(now, calendar)

    def moment_spent_reaches(self, spent: timedelta, calendar: Calendar) -> datetime | None:
        """The wall-clock moment this running clock will have spent `spent`; None if paused."""
        if self.running_since is None:
            return None
        needed = spent - self.spent_before
        if needed <= timedelta(0):
            # Reached before this stretch began: at its start (adding zero would move a
            # closed instant to the next opening, a moment that has not come yet).
            return self.running_since
        return calendar.add_business_time(self.running_since, needed)

    def due_at(self, calendar: Calendar) -> datetime | None:
        return self.moment_spent_reaches(self.budget, calendar)

    def shown_status(self) -> ClockStatus:
        if self.breached_at is not None and (self.met_at is None or self.met_at > self.breached_at):
            return "breached"
        if self.met_at is not None:
            return "met"
        return "running" if self.running else "paused"

    def pause(self, now: datetime, calendar: Calendar) -> None:
        self.spent_before = self.spent(now, calendar)
        self.running_since = None

    def resume(self, now: datetime) -> None:
        if self.running_since is None and not self.stopped:
            self.running_since = now

    def stop(self, now: datetime, calendar: Calendar) -> None:
        """The target was reached (first response given, case resolved)."""
        self.pause(now, calendar)
        self.met_at = now

    def rebudget(self, budget: timedelta, now: datetime, calendar: Calendar) -> None:
        """A new SLA (priority or stage change) counts the time already spent."""
        running = self.running
        self.pause(now, calendar)
        self.budget = budget
        if running:
            self.resume(now)

    def met_within_budget(self) -> bool:
        """A clock just stopped counts as met: it never breached and spent at most its budget."""
        return self.breached_at is None and self.spent_before <= self.budget

    def warning_due(self, percent: int, calendar: Calendar) -> datetime | None:
        """The moment `percent` of the budget is spent; None while paused."""
        return self.moment_spent_reaches(self.budget * percent / 100, calendar)

    def warning_reached(self, percent: int, spent: timedelta) -> bool:
        """Whether, with `spent` on the clock, the `percent` warning is due and not sent."""
        return percent not in self.warned_at and spent >= self.budget * percent / 100

    def next_moments(self, warn_at: Iterable[int], calendar: Calendar) -> list[datetime]:
        """When this clock next needs attention: each warning not sent yet, then its breach.
        Nothing for a clock that is met or paused."""
        if self.stopped or not self.running:
            return []
        moments = [
            at
            for percent in warn_at
            if percent not in self.warned_at
            for at in [self.warning_due(percent, calendar)]
            if at
        ]
        if self.breached_at is None and (due := self.due_at(calendar)):
            moments.append(due)
        return moments


@dataclass(frozen=True)
class ClockKind:
    """One SLA metric a case is measured by: the policy target that budgets it (per priority
    and stage) and the commands that meet it. The escalation levels run on the kind that
    `drives_levels` (the first response: levels escalate until someone acknowledges)."""

    name: str
    budget: Callable[[SlaTarget], timedelta]
    met_by: frozenset[MetBy]
    drives_levels: bool = False


CLOCK_KINDS: tuple[ClockKind, ...] = (
    ClockKind(
        FIRST_RESPONSE,
        lambda target: target.first_response,
        frozenset({"acknowledge", "resolve"}),
        drives_levels=True,
    ),
    ClockKind(RESOLUTION, lambda target: target.resolution, frozenset({"resolve"})),
)
LEVELS_CLOCK = next(kind.name for kind in CLOCK_KINDS if kind.drives_levels)


def met_by(clock_name: str, command: MetBy) -> bool:
    """Whether `command` meets the clock named `clock_name`."""
    return any(kind.name == clock_name and command in kind.met_by for kind in CLOCK_KINDS)


def sla_budgets(spec: EscalationSpec, priority: str, stage: str) -> dict[str, timedelta] | None:
    """Each clock's budget under `spec` for a case at `priority` and `stage`; None: no SLA."""
    target = spec.sla_for(priority, stage)
    if target is None:
        return None
    return {kind.name: kind.budget(target) for kind in CLOCK_KINDS}


def opened_clocks(budgets: dict[str, timedelta], opened: datetime) -> dict[str, SlaClock]:
    """A new case's clocks, each running since `opened`."""
    return {
        name: SlaClock(name=name, budget=budget, running_since=opened)
        for name, budget in budgets.items()
    }


def rebudget_clocks(
    clocks: dict[str, SlaClock],
    budgets: dict[str, timedelta],
    now: datetime,
    calendar: Calendar,
) -> None:
    """The clocks take `budgets` from `now` on and keep the time spent, counted on the
    `calendar` they ran on until now; a target already met keeps the SLA it was met under."""
    for name, clock in clocks.items():
        if not clock.stopped:
            clock.rebudget(budgets[name], now, calendar)


def migrated_clocks(
    clocks: dict[str, SlaClock],
    budgets: dict[str, timedelta],
    now: datetime,
    calendar: Calendar,
) -> dict[str, SlaClock]:
    """The clocks as a migration at `now` leaves them (copies; `clocks` is not touched): the
    time spent so far counted on the old `calendar`, the new budgets from `now` on, a paused
    clock still paused, a target already met keeping the SLA it was met under. What the
    workflow's `migrate` does, for the command line's dry run."""
    moved: dict[str, SlaClock] = {}
    for name, clock in clocks.items():
        copy = clock.model_copy(deep=True)
        if not copy.stopped and name in budgets:
            copy.rebudget(budgets[name], now, calendar)
        moved[name] = copy
    return moved


def next_breach(clocks: Iterable[SlaClock], calendar: Calendar) -> datetime | None:
    """The first moment a running clock that has not breached runs out."""
    moments = [
        due
        for clock in clocks
        if not clock.stopped and clock.breached_at is None
        for due in [clock.due_at(calendar)]
        if due is not None
    ]
    return min(moments, default=None)


def shown(clock: SlaClock, calendar: Calendar) -> SlaClock:
    """A copy of `clock` as the state query shows it: its due moment and status filled in."""
    view = clock.model_copy(deep=True)
    view.due = None if view.stopped else view.due_at(calendar)
    view.status = view.shown_status()
    return view
