"""The escalation decision core: pure, deterministic, tested without Temporal.

`EscalationCore` owns one case's state (`EscalationState`) and the pinned policy it follows. Given
`now`, it decides what falls due on the clocks and levels (`due`), when the next thing does
(`next_deadline`: one timer across every clock) and what an action's outcome changes. Its
topics live beside it: the clocks (workflows/escalation_clocks.py), a person's commands
(escalation_commands.py), how the case looks from outside (escalation_status.py). The
workflow (workflows/escalation.py) holds the core, carries out what it decides (ledger
entries, actions, timers, upserts) and decides nothing itself. The core never imports
`temporalio.workflow`, never awaits and never reads a clock.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

from definitions.calendar import BusinessCalendar
from definitions.common import Action, NotifyAction
from definitions.events import SlaBreached
from definitions.models import (
    ActionRetry,
    EscalationLevel,
    EscalationSpec,
    PinnedDefinition,
)
from workflows.escalation_clocks import (
    LEVELS_CLOCK,
    SlaClock,
    TicketEvent,
    adjust_metrics,
    kind_of,
    next_breach,
    opened_clocks,
    rebudget_clocks,
    sla_budgets,
)
from workflows.escalation_model import (
    MAX_ACTION_FAILURES,
    ActionFailure,
    CaseInfo,
    EscalationState,
    InFlightAction,
    LevelVisit,
    PagerAlert,
    PendingLedgerEntry,
)

AlertAction = Literal["acknowledge", "resolve"]


def who(by: str | None) -> dict[str, str]:
    """`{"by": ...}` for a command's ledger entry; nothing from a client that did not say."""
    return {"by": by} if by else {}


def describe_actions(actions: list[Action]) -> str:
    """What a step's actions do, in a few words: `notify pager, assign`."""
    return ", ".join(
        f"notify {a.channel}" if isinstance(a, NotifyAction) else a.type for a in actions
    )


@dataclass(frozen=True)
class WarningDue:
    """`percent` of a clock's budget is spent: record it (stamped `at`), run `on_warning`."""

    clock: str
    percent: int
    at: datetime | None
    cycle: int = 0
    """Which target of a metric that restarts (next reply: each message); 0: the only one."""

    @property
    def step(self) -> str:
        if self.cycle:
            return f"warn-{self.clock}-{self.cycle}-{self.percent}"
        return f"warn-{self.clock}-{self.percent}"

    @property
    def detail(self) -> dict[str, Any]:
        cycle = {"target": self.cycle} if self.cycle else {}
        return {"sla": self.clock, "percent": self.percent, **cycle}


@dataclass(frozen=True)
class BreachDue:
    """A clock ran out: record and announce `event`, run `on_breach`."""

    clock: str
    event: SlaBreached
    cycle: int = 0
    """Which target of a metric that restarts; 0: the only one."""

    @property
    def step(self) -> str:
        return f"breach-{self.clock}-{self.cycle}" if self.cycle else f"breach-{self.clock}"

    @property
    def detail(self) -> dict[str, Any]:
        return {"event": self.event.model_dump(mode="json")}


@dataclass(frozen=True)
class LevelDue:
    """An escalation level fell due (`at`): record it, run its `actions`."""

    level: int
    cycle: int
    name: str | None
    at: datetime
    actions: list[Action]
    round_robin: bool = False
    """Each notify action goes to the next of its targets in turn across cases, not to all."""

    @property
    def step(self) -> str:
        return f"level-{self.level}-cycle-{self.cycle}"

    @property
    def detail(self) -> dict[str, Any]:
        return {"level": self.level, "cycle": self.cycle, "name": self.name}


DueStep = WarningDue | BreachDue | LevelDue


class EscalationCore:
    """One case's decisions. The workflow builds it from the state it carries and the policy
    it follows, feeds it `now` and commands, and carries out what it returns."""

    def __init__(self, state: EscalationState, policy: PinnedDefinition) -> None:
        self.state = state
        self.policy = policy
        self.spec: EscalationSpec = policy.escalation

    def follow(self, policy: PinnedDefinition) -> None:
        """From now on the case follows `policy` (a migration)."""
        self.policy, self.spec = policy, policy.escalation
        self.state.definition = policy.ref

    # --- the policy at the case's priority: calendar, warnings, levels, breach actions ----

    @property
    def calendar(self) -> BusinessCalendar:
        return self.spec.calendar_for(self.state.case.priority)

    @property
    def levels(self) -> list[EscalationLevel]:
        return self.spec.levels_for(self.state.case.priority)

    @property
    def repeat(self) -> int:
        return self.spec.repeat_for(self.state.case.priority)

    @property
    def warn_at(self) -> list[int]:
        return self.spec.warn_at_for(self.state.case.priority)

    @property
    def on_warning(self) -> list[Action]:
        return self.spec.on_warning_for(self.state.case.priority)

    @property
    def on_breach(self) -> list[Action]:
        return self.spec.on_breach_for(self.state.case.priority)

    def give_up_after(self) -> dict[str, timedelta]:
        """How long each class of action retries (`retry_class`) before it counts as failed."""
        limits = self.spec.give_up_after
        return {name: getattr(limits, name) for name in ActionRetry.model_fields}

    def budgets(
        self, priority: str, stage: str, policy: PinnedDefinition | None = None
    ) -> dict[str, timedelta]:
        """The clocks' budgets at `priority` and `stage` under `policy` (default: the case's)."""
        spec = policy.escalation if policy else self.spec
        budgets = sla_budgets(spec, priority, stage, metrics=self.state.sla_metrics)
        if budgets is None:
            ref = policy.ref if policy else self.state.definition
            raise ValueError(f"policy {ref} has no SLA for {priority} at {stage}")
        return budgets

    @property
    def resolved(self) -> bool:
        return self.state.state == "resolved"

    # --- the schedule: levels, warnings and breaches ---------------------------------------

    def level_due_spent(self, index: int) -> timedelta:
        """Business time on the levels' clock at which firing number `index` is due: each
        repeat starts again after the last level's `after`."""
        levels = self.levels
        cycle, position = divmod(index, len(levels))
        return levels[-1].after * cycle + levels[position].after

    def total_firings(self) -> int:
        return len(self.levels) * (1 + self.repeat)

    def escalating(self) -> bool:
        """Levels still fire: the case is open (not acknowledged, paused or resolved) and
        not every level of every cycle has fired."""
        return self.state.state == "open" and self.state.levels_fired < self.total_firings()

    def current_level(self) -> int:
        """The level the case is at (1-based); 0 before the first and once acknowledged."""
        visits = self.state.visits
        return visits[-1].level if visits and visits[-1].ended_at is None else 0

    def next_deadline(self) -> datetime | None:
        """The next moment something falls due on any clock (a warning, a breach) or on the
        levels: the workflow's one timer."""
        calendar = self.calendar
        clocks = self.state.clocks
        moments = [
            moment
            for clock in clocks.values()
            for moment in clock.next_moments(self.warn_at, calendar)
        ]
        levels_clock = clocks.get(LEVELS_CLOCK)
        if self.escalating() and levels_clock and levels_clock.running:
            spent = self.level_due_spent(self.state.levels_fired)
            if at := levels_clock.moment_spent_reaches(spent, calendar):
                moments.append(at)
        return min(moments) if moments else None

    def next_breach(self) -> datetime | None:
        """The first moment a running clock that has not breached runs out (OpsDueAt)."""
        return next_breach(self.state.clocks.values(), self.calendar)

    def due(self, now: datetime) -> Iterator[DueStep]:
        """What has fallen due by `now`, one step at a time: each clock's warnings and its
        breach, then the levels. Each step is marked in the state as it is yielded (a warning
        sent, a breach, a level fired). Lazy on purpose: the workflow carries out a step (its
        ledger entry, its actions) before it asks for the next, and a command that lands
        meanwhile (an acknowledge, a new priority) counts for the steps decided after it, as
        it always has; each clock's time spent is read once, at `now`."""
        calendar = self.calendar
        s = self.state
        for name, clock in s.clocks.items():
            if clock.stopped or not clock.running:
                continue
            spent = clock.spent(now, calendar)
            for percent in sorted(self.warn_at):
                if clock.warning_reached(percent, spent):
                    clock.warned_at.append(percent)
                    # Stamped when it fell due; a catch-up after an outage is written later.
                    at = clock.warning_due(percent, self.calendar)
                    yield WarningDue(name, percent, at, clock.cycle)
            if clock.breached_at is None and spent >= clock.budget:
                # The moment the budget ran out, not the moment the timer was handled.
                clock.breached_at = clock.due_at(calendar) or now
                event = self._breach_event(name, clock, clock.breached_at)
                yield BreachDue(name, event, clock.cycle)
        levels_clock = s.clocks.get(LEVELS_CLOCK)
        while (
            self.escalating()
            and levels_clock is not None
            and levels_clock.spent(now, calendar) >= self.level_due_spent(s.levels_fired)
        ):
            yield self._fire_level(s.levels_fired, now)

    def _breach_event(self, name: str, clock: SlaClock, at: datetime) -> SlaBreached:
        case = self.state.case
        return SlaBreached(
            ticket_id=case.ticket_id,
            customer_id=case.customer_id,
            sla=name,
            priority=case.priority,
            stage=case.stage,
            budget_seconds=int(clock.budget.total_seconds()),
            breached_at=at,
            policy=self.state.definition,
        )

    def _fire_level(self, index: int, now: datetime) -> LevelDue:
        s = self.state
        levels = self.levels
        cycle, position = divmod(index, len(levels))
        level = levels[position]
        clock = s.clocks[LEVELS_CLOCK]
        # The moment the level fell due, not the moment the timer was handled.
        at = clock.moment_spent_reaches(self.level_due_spent(index), self.calendar) or now
        self.end_visit(at)
        s.visits.append(LevelVisit(level=position + 1, cycle=cycle, name=level.name, started_at=at))
        s.levels_fired = index + 1
        return LevelDue(position + 1, cycle, level.name, at, level.actions, level.round_robin)

    def end_visit(self, at: datetime) -> None:
        """The case leaves the level it is at (a level after it, an acknowledge, resolve)."""
        visits = self.state.visits
        if visits and visits[-1].ended_at is None:
            visits[-1].ended_at = at

    def breach_announced(self, clock: str) -> None:
        self.state.breaches_announced.append(clock)

    # --- what actions changed ----------------------------------------------------------------

    def rebudget(
        self, now: datetime, *, priority: str, stage: str, policy: PinnedDefinition | None = None
    ) -> None:
        """The clocks take the SLA for `priority` and `stage` (under `policy`, default the
        case's) and keep the time spent, counted on the calendar they ran on until now."""
        s = self.state
        budgets = self.budgets(priority, stage, policy)
        if s.sla_metrics:
            self._adjust_metrics(budgets, now)
        rebudget_clocks(s.clocks, budgets, now, self.calendar)
        s.case = s.case.model_copy(update={"priority": priority, "stage": stage})

    def _adjust_metrics(self, budgets: dict[str, timedelta], now: datetime) -> None:
        s = self.state
        adjust_metrics(
            s.clocks,
            budgets,
            now,
            paused=s.state == "paused",
            ticket_status=s.ticket_status,
            replied=s.last_public_reply_at is not None,
        )

    # --- the SLA metrics: ticket events and statuses -------------------------------------

    def measure_metrics(self, opened: datetime) -> None:
        """From now on the case is measured by every metric its SLA gives, each since
        `opened` (or waiting for its first target). A run since the metrics patch asks
        this once, when it opens the case."""
        s = self.state
        s.sla_metrics = True
        self._adjust_metrics(self.budgets(s.case.priority, s.case.stage), opened)

    def ticket_event(self, event: TicketEvent, now: datetime) -> list[str]:
        """`event` happened on the ticket: it meets each target it meets, then starts a new
        target on each clock it restarts that measures none (ClockKind's restart rule).
        The names of the clocks it met within their budget."""
        s = self.state
        met = []
        for name, clock in s.clocks.items():
            kind = kind_of(name)
            if kind is None:
                continue
            if event in kind.met_by and clock.active:
                clock.stop(now, self.calendar)
                if clock.met_within_budget():
                    met.append(name)
            if event in kind.restarted_by and not clock.active:
                # A new target takes the SLA the case is under now (a met one kept its own).
                clock.budget = self.budgets(s.case.priority, s.case.stage).get(name, clock.budget)
                paused = s.state == "paused"
                clock.restart(now, running=kind.runs_now(paused, s.ticket_status))
        return met

    def status_changed(self, status: str, now: datetime) -> bool:
        """The ticket is at `status`: the clocks that run by the ticket's status (requester
        wait, agent work) pause or resume. True: one of them did."""
        s = self.state
        s.ticket_status = status
        changed = False
        for name, clock in s.clocks.items():
            kind = kind_of(name)
            if kind is None or kind.paused_by != "ticket_status" or not clock.active:
                continue
            runs = kind.runs_now(False, status)
            if runs and not clock.running:
                clock.resume(now)
                changed = True
            elif not runs and clock.running:
                clock.pause(now, self.calendar)
                changed = True
        return changed

    def pauses_with_case(self, name: str) -> bool:
        """Whether the case's pause stops the clock `name` (first response, resolution and
        pausable update do; the others run by their own rules)."""
        kind = kind_of(name)
        return kind is None or kind.paused_by == "case"

    def take_outcome(
        self,
        now: datetime,
        *,
        assignee: str | None,
        queue: str | None,
        priority: str | None,
    ) -> None:
        """What actions that succeeded changed: the assignee, the queue, the priority (the
        clocks take its SLA, when the policy has one)."""
        s = self.state
        if assignee:
            s.assignee = assignee
        if queue:
            s.queue = queue
        if priority and priority != s.case.priority:
            if self.spec.sla_for(priority, s.case.stage) is None:
                # A level raised the priority beyond what this policy has targets for: the
                # ticket says so, the clocks keep the SLA they have.
                s.case = s.case.model_copy(update={"priority": priority})
            else:
                self.rebudget(now, priority=priority, stage=s.case.stage)

    def keep_failures(self, step: str, failed: list[str], now: datetime) -> None:
        """Actions of `step` that failed: kept (the last few) and the case needs a person."""
        s = self.state
        s.failures.extend(ActionFailure(step=step, error=error[:500], at=now) for error in failed)
        del s.failures[:-MAX_ACTION_FAILURES]
        if failed:
            s.attention = f"{step} failed: {failed[0][:200]}"

    def record(
        self, command: str, detail: dict[str, Any], now: datetime, *, by_person: bool = True
    ) -> None:
        """Note a command for the ledger (the workflow writes it, so an update answers at
        once instead of waiting for the database)."""
        s = self.state
        s.commands += 1
        if by_person:  # a person acted on the case: they have seen what failed
            s.attention = None
        # A readable step (`pause`); the command's number keeps its ledger entry unique.
        s.unrecorded.append(
            PendingLedgerEntry(
                step=command, key=f"command-{s.commands}-{command}", detail=detail, at=now
            )
        )

    # --- actions beside the clock --------------------------------------------------------------

    def started(self, step: str, actions: list[Action], now: datetime) -> None:
        """The actions of `step` run beside the clock from `now`."""
        what = describe_actions(actions) or "deliver"
        self.state.in_flight.append(InFlightAction(step=step, what=what, since=now))

    def finished(self, step: str) -> None:
        self.state.in_flight = [a for a in self.state.in_flight if a.step != step]

    def page_heard(self, recipient: str, dedup_key: str, landed: bool | None) -> bool:
        """A page to `recipient` (alert `dedup_key`) was sent (`landed` None), landed or
        failed. True: it landed on a case already acknowledged, so its alert is to be
        acknowledged too."""
        s = self.state
        alert = next((a for a in s.alerts if a.dedup_key == dedup_key), None)
        if alert is None:
            alert = PagerAlert(recipient=recipient, dedup_key=dedup_key)
            s.alerts.append(alert)
        if landed is None:
            if alert.status in ("failed", "resolved"):
                alert.status = "paging"
        elif landed:
            if alert.status in ("paging", "failed"):
                alert.status = "triggered"
            return s.acknowledged_by is not None and alert.status == "triggered"
        elif alert.status == "paging":
            alert.status = "failed"
        return False

    def alerts_to_follow(self, action: AlertAction) -> Iterator[tuple[int, PagerAlert]]:
        """The alerts to acknowledge or resolve, with their index (their key): those
        triggered and, on resolve, pages cancelled mid-flight too (resolving none is
        harmless). Lazy: an alert opened while an earlier one is followed is followed too."""
        wanted = ["triggered"]
        if action == "resolve":
            wanted += ["paging", "acknowledged"]
        for index, alert in enumerate(self.state.alerts):
            if alert.status in wanted:
                yield index, alert

    def alert_followed(self, alert: PagerAlert, action: AlertAction) -> None:
        alert.status = "acknowledged" if action == "acknowledge" else "resolved"

    def cancelled(self, item: InFlightAction, now: datetime) -> dict[str, str]:
        """`item` was still running when the case was resolved: kept as failed; its ledger
        entry's detail."""
        reason = f"cancelled: the case was resolved by {self.state.resolved_by} while it still ran"
        self.keep_failures(item.step, [f"{item.what}: {reason}"], now)
        return {"actions": item.what, "why": reason}


def opening_refusal(case: CaseInfo, policy: PinnedDefinition) -> str | None:
    """Why a case cannot open under `policy`, or None."""
    if sla_budgets(policy.escalation, case.priority, case.stage) is None:
        return f"policy {policy.ref} has no SLA for {case.priority} at {case.stage}"
    return None


def opened_state(case: CaseInfo, policy: PinnedDefinition, now: datetime) -> EscalationState:
    """A new case's state: each clock running since the case opened (a ticket opened
    `opened_at` in the future starts now). `opening_refusal` first."""
    budgets = sla_budgets(policy.escalation, case.priority, case.stage)
    if budgets is None:
        raise ValueError(opening_refusal(case, policy))
    status = EscalationState(case=case, definition=policy.ref)
    status.clocks = opened_clocks(budgets, min(case.opened_at, now))
    return status
