"""SLA clocks measured in business time: pause, resume and re-budget without losing a second.

Pure and deterministic: the caller passes `now` (workflow.now()) and the calendar, so the
same code runs in a workflow, in a backtest and in a unit test.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Literal, Protocol

from pydantic import BaseModel, Field


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
    status: Literal["running", "paused", "met", "breached"] | None = Field(
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

    def shown_status(self) -> Literal["running", "paused", "met", "breached"]:
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
