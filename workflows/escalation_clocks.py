"""The escalation core's SLA clocks, measured in business time: pause, resume and re-budget
without losing a second.

A clock is a value (`SlaClock`: its budget, the time spent, warnings sent, when it was met or
breached) and a kind (`ClockKind`: which target of the policy budgets it at a case's priority
and stage, which ticket events meet it or start a new target, and what pauses it).
Everything due on the clocks (each warning, each breach, the next deadline across all of
them) is computed here from the clocks alone, so a new SLA metric is one more `ClockKind`,
not a new code path in the workflow.

The metrics are Zendesk's (support.zendesk.com, "Defining and using SLA policies"; the
ticket metric events reference on developer.zendesk.com for what pauses requester wait and
agent work time): first reply, next reply, periodic and pausable update, requester wait,
agent work and resolution time.

Pure and deterministic: the caller passes `now` (workflow.now()) and the calendar, so the
same code runs in a workflow, in a backtest and in a unit test.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Literal, Protocol

from pydantic import BaseModel, Field

if TYPE_CHECKING:  # annotations only: `case show` reads clocks without the policy models
    from definitions.models import EscalationSpec, SlaTarget

FIRST_RESPONSE = "first_response"
NEXT_REPLY = "next_reply"
PERIODIC_UPDATE = "periodic_update"
PAUSABLE_UPDATE = "pausable_update"
REQUESTER_WAIT = "requester_wait"
AGENT_WORK = "agent_work"
RESOLUTION = "resolution"
# What meets a clock or starts a new target on it: a person's first response (acknowledge),
# a public agent reply, a requester's message, the end of the case.
MetBy = Literal["acknowledge", "public_reply", "requester_reply", "resolve"]
TicketEvent = MetBy
# What pauses a clock: the case's pause (its policy's pause_statuses or a person's pause),
# the ticket's own status (the clock runs only in `runs_in`), or nothing.
PausedBy = Literal["case", "ticket_status", "nothing"]
ClockStatus = Literal["running", "paused", "met", "breached", "waiting"]


class Calendar(Protocol):
    def business_time_between(self, start: datetime, end: datetime) -> timedelta: ...

    def add_business_time(self, start: datetime, duration: timedelta) -> datetime: ...


class SlaClock(BaseModel):
    """One SLA metric of one case: its current target (a metric that restarts, such as next
    reply, measures one target at a time, numbered by `cycle`)."""

    name: str
    budget: timedelta
    cycle: int = Field(
        0, description="which target of a metric that restarts (1, 2, ...); 0: the only one"
    )
    waiting: bool = Field(
        False, description="no target runs: waiting for the event that starts one"
    )
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
        if self.waiting:
            return "waiting"
        if self.breached_at is not None and (self.met_at is None or self.met_at > self.breached_at):
            return "breached"
        if self.met_at is not None:
            return "met"
        return "running" if self.running else "paused"

    def pause(self, now: datetime, calendar: Calendar) -> None:
        self.spent_before = self.spent(now, calendar)
        self.running_since = None

    def resume(self, now: datetime) -> None:
        if self.running_since is None and not self.stopped and not self.waiting:
            self.running_since = now

    def restart(self, now: datetime, *, running: bool) -> None:
        """A new target starts at `now` (the next one of a metric that restarts): nothing
        spent, no warning sent; paused from the start when `running` is False."""
        self.cycle += 1
        self.spent_before = timedelta(0)
        self.warned_at = []
        self.met_at = self.breached_at = None
        self.waiting = False
        self.running_since = now if running else None

    @property
    def active(self) -> bool:
        """A target is measured (running or paused), not met and not waiting for one."""
        return not self.stopped and not self.waiting

    def step(self, what: str) -> str:
        """A ledger step of this clock's current target: `breach-next_reply-2`."""
        base = f"{what}-{self.name}"
        return f"{base}-{self.cycle}" if self.cycle else base

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
    and stage; None: the policy does not measure it), the ticket events that meet its target
    and those that start a new one, and what pauses it. The escalation levels run on the
    kind that `drives_levels` (the first response: levels escalate until someone
    acknowledges).

    The restart rule: an event in `met_by` meets the target being measured; an event in
    `restarted_by` then starts a new one if none is measured. So a periodic update (met and
    restarted by a public reply) measures each gap between replies, and a next reply
    (started by a requester message, met by a public reply) measures from the oldest
    message not yet answered. A kind with `restarted_by` waits for its first target unless
    it `starts_at_open`."""

    name: str
    budget: Callable[[SlaTarget], timedelta | None]
    met_by: frozenset[MetBy]
    drives_levels: bool = False
    restarted_by: frozenset[TicketEvent] = frozenset()
    starts_at_open: bool = True
    paused_by: PausedBy = "case"
    runs_in: frozenset[str] = frozenset()
    """With `paused_by="ticket_status"`: the ticket statuses it runs in."""
    original: bool = False
    """One of the two clocks every case had before the other metrics (runs since then)."""

    def runs_now(self, paused: bool, ticket_status: str) -> bool:
        """Whether a target of this kind counts time with the case `paused` (or not) and the
        ticket at `ticket_status`."""
        if self.paused_by == "case":
            return not paused
        if self.paused_by == "ticket_status":
            return ticket_status in self.runs_in
        return True


# The ticket statuses of TicketUpdated (definitions/events.py); a new case's ticket is new.
NEW_TICKET = "new"

CLOCK_KINDS: tuple[ClockKind, ...] = (
    ClockKind(
        FIRST_RESPONSE,
        lambda target: target.first_response,
        frozenset({"acknowledge", "resolve"}),
        drives_levels=True,
        original=True,
    ),
    # Zendesk: the time between the oldest unanswered requester comment and the next public
    # agent comment; it does not pause.
    ClockKind(
        NEXT_REPLY,
        lambda target: target.next_reply,
        frozenset({"public_reply", "resolve"}),
        restarted_by=frozenset({"requester_reply"}),
        starts_at_open=False,
        paused_by="nothing",
    ),
    # Zendesk: the time between each public comment from agents.
    ClockKind(
        PERIODIC_UPDATE,
        lambda target: target.periodic_update,
        frozenset({"public_reply", "resolve"}),
        restarted_by=frozenset({"public_reply"}),
        starts_at_open=False,
        paused_by="nothing",
    ),
    # Zendesk: the same, paused while the ticket is pending (here: the policy's pause).
    ClockKind(
        PAUSABLE_UPDATE,
        lambda target: target.pausable_update,
        frozenset({"public_reply", "resolve"}),
        restarted_by=frozenset({"public_reply"}),
        starts_at_open=False,
    ),
    # Zendesk: time in new, open and on-hold; paused while pending, fulfilled when solved.
    ClockKind(
        REQUESTER_WAIT,
        lambda target: target.requester_wait,
        frozenset({"resolve"}),
        paused_by="ticket_status",
        runs_in=frozenset({"new", "open", "on_hold"}),
    ),
    # Zendesk: time in new and open; paused while pending or on-hold.
    ClockKind(
        AGENT_WORK,
        lambda target: target.agent_work,
        frozenset({"resolve"}),
        paused_by="ticket_status",
        runs_in=frozenset({"new", "open"}),
    ),
    ClockKind(RESOLUTION, lambda target: target.resolution, frozenset({"resolve"}), original=True),
)
LEVELS_CLOCK = next(kind.name for kind in CLOCK_KINDS if kind.drives_levels)


def kind_of(clock_name: str) -> ClockKind | None:
    """The kind of the clock named `clock_name` (read from CLOCK_KINDS each time)."""
    return next((kind for kind in CLOCK_KINDS if kind.name == clock_name), None)


def met_by(clock_name: str, command: MetBy) -> bool:
    """Whether `command` meets the clock named `clock_name`."""
    kind = kind_of(clock_name)
    return kind is not None and command in kind.met_by


def sla_budgets(
    spec: EscalationSpec, priority: str, stage: str, *, metrics: bool = False
) -> dict[str, timedelta] | None:
    """Each clock's budget under `spec` for a case at `priority` and `stage`; None: no SLA.
    Without `metrics`, only the two clocks every case had before the others (cases started
    before them keep exactly those); with it, every metric the target gives."""
    target = spec.sla_for(priority, stage)
    if target is None:
        return None
    return {
        kind.name: budget
        for kind in CLOCK_KINDS
        if metrics or kind.original
        for budget in [kind.budget(target)]
        if budget is not None
    }


def opened_clock(
    name: str, budget: timedelta, now: datetime, *, paused: bool, ticket_status: str
) -> SlaClock:
    """A clock of `name` measured from `now`: running, paused (its kind's pause holds) or
    waiting for the event that starts its first target."""
    kind = kind_of(name)
    assert kind is not None, name
    if not kind.starts_at_open:
        return SlaClock(name=name, budget=budget, waiting=True)
    running = kind.runs_now(paused, ticket_status)
    return SlaClock(name=name, budget=budget, running_since=now if running else None)


def opened_clocks(budgets: dict[str, timedelta], opened: datetime) -> dict[str, SlaClock]:
    """A new case's clocks, each running since `opened` (or waiting for its first target)."""
    return {
        name: opened_clock(name, budget, opened, paused=False, ticket_status=NEW_TICKET)
        for name, budget in budgets.items()
    }


def rebudget_clocks(
    clocks: dict[str, SlaClock],
    budgets: dict[str, timedelta],
    now: datetime,
    calendar: Calendar,
) -> None:
    """The clocks take `budgets` from `now` on and keep the time spent, counted on the
    `calendar` they ran on until now; a target already met keeps the SLA it was met under.
    A clock whose metric `budgets` does not give keeps its budget (`adjust_metrics` first
    drops it when the new SLA no longer measures it)."""
    for name, clock in clocks.items():
        if not clock.stopped and name in budgets:
            clock.rebudget(budgets[name], now, calendar)


def adjust_metrics(
    clocks: dict[str, SlaClock],
    budgets: dict[str, timedelta],
    now: datetime,
    *,
    paused: bool,
    ticket_status: str,
    replied: bool,
) -> None:
    """The case moves to an SLA (a priority, stage or policy) measuring the metrics in
    `budgets`: one it no longer measures is dropped, one it now measures starts at `now`
    (an update metric at once once an agent has `replied`). The original two stay."""
    for name in list(clocks):
        kind = kind_of(name)
        if name not in budgets and not (kind and kind.original):
            del clocks[name]
    for name, budget in budgets.items():
        if name in clocks:
            continue
        clock = opened_clock(name, budget, now, paused=paused, ticket_status=ticket_status)
        kind = kind_of(name)
        if replied and kind and "public_reply" in kind.restarted_by:
            clock.restart(now, running=kind.runs_now(paused, ticket_status))
        clocks[name] = clock


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
