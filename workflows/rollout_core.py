"""The rollout's pure decision core: given the state, the plan, `now` and a command or a due
moment, what happens next. No Temporal, no I/O, no clock; workflows/rollout.py carries out
what it decides (activities, timers, search attributes, ledger entries).

The run is a state machine over `RolloutState.state`: `next_step` names the pass to make,
and each pass asks its topic what to do: rollout_approvals (who approves what; asking,
reminding, paging), rollout_checks (the bake: readings and verdicts), this module (windows,
apply, gates, rollback), rollout_commands (what a person's command changes, or why it is
refused) and rollout_text (what the Temporal UI says).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal

from activities import search_attributes as sa
from activities.models import CohortSpec
from definitions.calendar import BusinessCalendar
from definitions.models import Phase, RolloutSpec
from workflows.rollout_checks import fresh_checks
from workflows.rollout_model import (
    TERMINAL,
    PhaseStatus,
    RolloutState,
    Stopwatch,
)
from workflows.rollout_pinned import RolloutInput

if TYPE_CHECKING:
    from temporalio.common import SearchAttributeUpdate

RETRY_WINDOW = timedelta(days=7)
"""After an abort, how long the rollout waits for `retry` before it ends as rolled back."""

Step = Literal[
    "begin_rollback",
    "jump_to_full",
    "await_approval",
    "await_window",
    "apply",
    "bake",
    "hold_wait",
    "roll_back",
    "rolled_back_wait",
    "frozen_wait",
    "finish",
]
_STEP_OF_STATE: dict[str, Step] = {
    "awaiting_approval": "await_approval",
    "waiting_window": "await_window",
    "applying": "apply",
    "baking": "bake",
    "held": "hold_wait",
    "rolling_back": "roll_back",
    "rolled_back": "rolled_back_wait",
    "frozen": "frozen_wait",
}


def initial_state(request: RolloutInput, spec: RolloutSpec, now: datetime) -> RolloutState:
    """A new run's state: every phase pending, the deadline's clock running."""
    status = RolloutState(
        change=request.change,
        attempt=request.attempt,
        approvals_scoped=request.attempt > 1,
        plan=request.plan.ref,
        risk=spec.impact.risk,
        deadline=spec.deadline,
        phases=[
            PhaseStatus(
                name=phase.name,
                percent=phase.cohort.percent,
                condition=phase.cohort.when,
                irreversible=phase.irreversible,
                gate=phase.gate,
                bake_total=phase.bake,
                checks=fresh_checks(phase),
            )
            for phase in spec.phases
        ],
    )
    status.active.resume(now)
    return status


def next_step(s: RolloutState) -> Step:
    """The pass the run makes next: a decided rollback or a promote to 100% comes first,
    then the state's own pass; a state without one ends the run."""
    if s.rollback_reason and s.state not in ("rolling_back", "rolled_back", "frozen"):
        return "begin_rollback"
    if s.promote_full_by and s.state in ("waiting_window", "baking", "held", "awaiting_approval"):
        return "jump_to_full"
    return _STEP_OF_STATE.get(s.state, "finish")


def local_time(spec: RolloutSpec, moment: datetime) -> str:
    """A moment as people read it: weekday and time in the plan's timezone."""
    calendar = spec.windows
    return calendar.local_time(moment).strftime("%a %H:%M") + f" {calendar.timezone}"


def phase_calendar(spec: RolloutSpec, *, outside_windows: bool) -> BusinessCalendar:
    """When phases may start: the windows minus blackouts; with `outside_windows`, any time
    but a blackout."""
    if not outside_windows:
        return spec.change_calendar()
    closed = sorted({day for b in spec.blackouts for day in b.days()})
    return BusinessCalendar(timezone=spec.windows.timezone, hours="24x7", resolved_holidays=closed)


def cohort_of(s: RolloutState, phase: Phase) -> CohortSpec:
    """A phase's customers: the same ones on every call, cumulative from phase to phase."""
    return CohortSpec(
        seed=s.change.change_id, percent=phase.cohort.percent, condition=phase.cohort.when
    )


# --- clocks and deadlines ------------------------------------------------------------------


def sync_clocks(s: RolloutState, now: datetime) -> None:
    """The deadline runs unless paused, held or done; a bake runs only while baking."""
    waiting_on_people = s.paused or s.state in ("held", "frozen", "rolled_back")
    if waiting_on_people or s.finished or s.state in TERMINAL:
        s.active.pause(now)
    else:
        s.active.resume(now)
    phase = s.current
    if phase is not None:
        if s.state == "baking" and not s.paused:
            phase.bake.resume(now)
        else:
            phase.bake.pause(now)


def next_deadline(s: RolloutState, spec: RolloutSpec) -> datetime | None:
    """An approval's paging time, a bake's end or a change window's opening (OpsDueAt)."""
    if s.paused or s.finished:
        return None
    if s.state == "awaiting_approval" and s.approval_since and not s.approval_paged:
        return s.approval_since + spec.approvals.timeout
    phase = s.current
    if s.state == "baking" and phase is not None:
        return phase.bake.moment_reaching(phase.bake_total)
    if s.state == "waiting_window":
        return s.next_window
    return None


def shown_state(s: RolloutState) -> str:
    """OpsState: an approval paged for (past its time) waits for a person, so it is stuck."""
    overdue = s.state == "awaiting_approval" and s.approval_paged
    return sa.STUCK if overdue else s.ops_state


@dataclass(frozen=True)
class SearchAttributes:
    """What the Temporal UI finds the run by. `shown` is what they are made of: the workflow
    upserts only when it differs from the last upsert's."""

    shown: tuple[object, ...]
    updates: list[SearchAttributeUpdate[Any]]


def search_attributes(s: RolloutState, spec: RolloutSpec, *, due_at: bool) -> SearchAttributes:
    """With `due_at` (runs since the patch rollout-due-at-stuck) OpsDueAt carries the next
    deadline and an overdue approval shows OpsState=stuck; runs before it show state and
    stage only."""
    state = shown_state(s) if due_at else s.ops_state
    due = next_deadline(s, spec) if due_at else None
    updates: list[SearchAttributeUpdate[Any]] = [
        sa.OPS_KIND.value_set("rollout"),
        sa.OPS_OWNER.value_set(s.change.owner),
        sa.OPS_STATE.value_set(state),
        sa.OPS_STAGE.value_set(s.stage),
        sa.OPS_DEFINITION.value_set(s.plan),
    ]
    if due is not None:  # kept once nothing is due (see OPS_DUE_AT)
        updates.append(sa.OPS_DUE_AT.value_set(due))
    shown = (state, s.stage, due) if due_at else (state, s.stage)
    return SearchAttributes(shown, updates)


def wake_at(s: RolloutState, until: datetime | None) -> datetime | None:
    """When a wait for `until` (None: only a command) ends: then, or at the overall deadline."""
    moments = [until] if until is not None else []
    if s.deadline is not None and (due := s.active.moment_reaching(s.deadline)):
        moments.append(due)
    return min(moments) if moments else None


def note_deadline(s: RolloutState, now: datetime) -> None:
    """Past the overall deadline (active time) a running rollout rolls back."""
    if (
        s.deadline is not None
        and s.rollback_reason is None
        and s.state not in ("rolling_back", "rolled_back", "frozen", *TERMINAL)
        and s.active.spent(now) >= s.deadline
    ):
        s.rollback_reason = f"the overall deadline of {s.deadline} passed"


def finish(s: RolloutState, now: datetime) -> None:
    s.finished, s.finished_at = True, now


# --- windows, apply, gates -----------------------------------------------------------------


@dataclass(frozen=True)
class WindowMove:
    """A phase waiting for its change window: apply it now, or wait (until the window opens;
    None: until a command)."""

    apply: bool
    until: datetime | None = None


def next_window_move(s: RolloutState, calendar: BusinessCalendar, now: datetime) -> WindowMove:
    """An emergency change ignores the windows; a paused one waits for resume."""
    s.stage = s.phases[s.phase_index].name
    if s.paused:
        return WindowMove(apply=False)
    if s.risk == "emergency" or calendar.is_open(now):
        s.next_window = None
        return WindowMove(apply=True)
    s.next_window = calendar.next_open(now)
    return WindowMove(apply=False, until=s.next_window)


def phase_applied(
    s: RolloutState,
    spec: RolloutSpec,
    number: int,
    *,
    newly_exposed: int,
    total_exposed: int,
    recorded: bool,
    now: datetime,
) -> dict[str, object]:
    """Phase `number` reached its customers: its bake starts afresh. The ledger's detail."""
    phase = s.phases[number]
    if number not in s.applied:
        s.applied.append(number)
    phase.applied_at, phase.exposed_total = now, total_exposed
    phase.recorded = recorded
    phase.bake, phase.readings_taken, phase.verdict = Stopwatch(), 0, "baking"
    phase.checks = fresh_checks(spec.phases[number])
    return {
        "phase": phase.name,
        "percent": phase.percent,
        "newly_exposed": newly_exposed,
        "total_exposed": total_exposed,
    }


def gate_awaiting(s: RolloutState) -> str | None:
    """After a phase passed: the phase whose approval gate must open first, or None to go
    on (the last phase's gate is no gate: nothing comes after it)."""
    phase = s.phases[s.phase_index]
    last = s.phase_index == len(s.phases) - 1
    return phase.name if phase.gate == "approval" and not last else None


def advance(s: RolloutState) -> bool:
    """On to the next phase; True when there is none: the rollout has completed."""
    s.phase_index += 1
    if s.phase_index >= len(s.phases):
        s.phase_index = len(s.phases) - 1
        s.ended_reason = f"all {len(s.phases)} phases passed"
        return True
    return False


def roll_forward(s: RolloutState) -> bool:
    """A frozen rollout told to promote carries on: its irreversible phase stays. False when
    no promote was asked for."""
    if not s.promote_requested:
        return False
    s.promote_requested = False
    s.rollback_reason = s.frozen_reason = None
    s.phases[s.phase_index].verdict = "promoted"
    return True


@dataclass(frozen=True)
class JumpToFull:
    """A promote to 100%: who approved it, and the phases it gave a verdict (promoted or
    skipped)."""

    approver: str | None
    judged: list[PhaseStatus] = field(default_factory=list)


def jump_to_full(s: RolloutState) -> JumpToFull:
    """Skip to the last phase: a phase applied but not passed counts as promoted, the ones
    between as skipped; a hold or awaited gate is dropped."""
    approver = s.promote_full_by
    s.promote_full_by = None
    last = len(s.phases) - 1
    current = s.phases[s.phase_index]
    judged = []
    if s.phase_index in s.applied and current.verdict in ("baking", "failed"):
        current.verdict = "promoted"
        judged.append(current)
    for number in range(s.phase_index + (1 if s.phase_index in s.applied else 0), last):
        s.phases[number].verdict = "skipped"
        judged.append(s.phases[number])
    s.phase_index = last
    s.hold_reason = s.approval_for = None
    return JumpToFull(approver, judged)


# --- rollback ------------------------------------------------------------------------------


@dataclass(frozen=True)
class RollbackStart:
    """How a decided rollback begins: frozen (an irreversible phase was applied: a person
    decides), rejected (nothing was applied: the start was refused) or rolling back."""

    kind: Literal["freeze", "reject", "roll_back"]
    reason: str
    irreversible: list[str] = field(default_factory=list)


def begin_rollback(s: RolloutState) -> RollbackStart:
    reason = s.rollback_reason or "rolled back"
    frozen = [s.phases[n].name for n in s.applied if s.phases[n].irreversible]
    if frozen:
        s.frozen_reason = (
            f"{reason}; phase {', '.join(frozen)} is irreversible: roll forward (promote) "
            "or accept (abort)"
        )
        s.hold_reason = None
        return RollbackStart("freeze", reason, frozen)
    starting = s.state == "awaiting_approval" and s.approval_for == "start"
    if starting and not s.applied and not s.aborted:
        s.ended_reason = reason
        return RollbackStart("reject", reason)
    s.hold_reason = None
    s.approval_for = None
    return RollbackStart("roll_back", reason)


def rollback_cause(reason: str, *, aborted: bool) -> str:
    """A rollback's reason (free text, set where it is decided) as a bounded metric label."""
    if aborted:
        return "aborted"
    for prefix, cause in (
        ("rejected by ", "rejected"),
        ("the overall deadline ", "deadline"),
        ("checks ", "inconclusive"),
        ("check ", "check_failed"),
    ):
        if reason.startswith(prefix):
            return cause
    return "other"


@dataclass(frozen=True)
class PhaseRevert:
    """One applied phase to revert: its cohort minus the earlier phases' (their customers are
    reverted with their own phase); `attempt`/`phase_number` name its exposure record, None
    for a phase applied before the record existed (its cohort is recomputed)."""

    number: int
    cohort: CohortSpec
    earlier: list[CohortSpec]
    attempt: int | None
    phase_number: int | None


def reverts(s: RolloutState, spec: RolloutSpec) -> list[PhaseRevert]:
    """The applied phases in the order they are reverted: last applied first."""
    plan = []
    for position in range(len(s.applied) - 1, -1, -1):
        number = s.applied[position]
        recorded = s.phases[number].recorded
        plan.append(
            PhaseRevert(
                number=number,
                cohort=cohort_of(s, spec.phases[number]),
                earlier=[cohort_of(s, spec.phases[n]) for n in s.applied[:position]],
                attempt=s.attempt if recorded else None,
                phase_number=number + 1 if recorded else None,
            )
        )
    return plan


def rolled_back(s: RolloutState, reason: str, now: datetime) -> bool:
    """Every applied phase is reverted; True when the rollout waits for a retry (it was
    aborted), False when it ends."""
    s.ended_reason = reason
    s.rolled_back_at = now
    return s.aborted


def retry_closes_at(s: RolloutState) -> datetime:
    """Until when an aborted, rolled-back rollout may be retried."""
    assert s.rolled_back_at is not None
    return s.rolled_back_at + RETRY_WINDOW
