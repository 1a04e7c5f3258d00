"""How an escalation case looks from outside, decided by the core: the state query's view,
its search attributes, the one-line status the Temporal UI shows, what message templates
see, the events it hands recovery and the summary it ends with. Pure: `now` is given.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from activities import search_attributes as sa
from definitions.calendar import BusinessCalendar
from definitions.events import CaseEscalated, EventEnvelope, SlaBreached
from workflows.escalation_clocks import CLOCK_KINDS, FIRST_RESPONSE, SlaClock, shown
from workflows.escalation_core import EscalationCore
from workflows.escalation_model import (
    CaseSummary,
    EscalationState,
    EscalationStatus,
    SlaOutcome,
)


def format_at(moment: datetime, calendar: BusinessCalendar) -> str:
    """A moment as people at the calendar's place read it: `Mon 09:30 Europe/Paris`."""
    return calendar.local_time(moment).strftime("%a %H:%M") + f" {calendar.timezone}"


def status_view(core: EscalationCore) -> EscalationStatus:
    """The full state, each clock with the moment it runs out and its status."""
    view = core.state.model_copy(deep=True)
    # In the metrics' own order (first response ... resolution), whatever order they came in.
    order = {kind.name: index for index, kind in enumerate(CLOCK_KINDS)}
    names = sorted(view.clocks, key=lambda name: order.get(name, len(order)))
    view.clocks = {name: shown(view.clocks[name], core.calendar) for name in names}
    return view


def search_attributes(core: EscalationCore, *, due_and_stuck: bool = True) -> dict[str, object]:
    """The case's search attributes by name. Runs from before the `escalation-due-at-stuck`
    patch (`due_and_stuck` False) show neither the next breach nor OpsState=stuck."""
    s = core.state
    stuck = due_and_stuck and s.attention is not None and s.state != "resolved"
    values: dict[str, object] = {
        sa.OPS_KIND.name: "escalation",
        sa.OPS_CASE_ID.name: s.case.ticket_id,
        sa.OPS_CUSTOMER_ID.name: s.case.customer_id,
        sa.OPS_STAGE.name: s.case.stage,
        sa.OPS_PRIORITY.name: s.case.priority,
        sa.OPS_LEVEL.name: core.current_level(),
        sa.OPS_STATE.name: sa.STUCK if stuck else s.state,
        sa.OPS_DEFINITION.name: s.definition,
    }
    due = core.next_breach() if due_and_stuck else None
    if due is not None:
        # Kept, not unset, once nothing is due (paused, resolved): servers answer an unset
        # Datetime as null, which the SDK's describe cannot decode. Queries filter OpsState.
        values[sa.OPS_DUE_AT.name] = due
    return values


def template_context(
    core: EscalationCore, now: datetime, clock: SlaClock | None = None, percent: int | None = None
) -> dict[str, object]:
    """What message templates of an escalation policy may use: case, customer, sla (the
    given clock, default the first response), level (definitions/lint.py checks them)."""
    s = core.state
    calendar = core.calendar
    clock = clock or s.clocks.get(FIRST_RESPONSE)
    sla_context: dict[str, object] = {}
    if clock is not None:
        due = clock.due_at(calendar)
        sla_context = {
            "name": clock.name,
            "label": clock.name.replace("_", " "),
            "budget": str(clock.budget),
            "spent": str(clock.spent(now, calendar)),
            "remaining": str(clock.remaining(now, calendar)),
            "due_at": format_at(due, calendar) if due else "",
            "percent": percent or 0,
        }
    visit = s.visits[-1] if s.visits else None
    profile = s.customer.model_dump(mode="json") if s.customer else {"id": s.case.customer_id}
    return {
        "case": {
            "id": s.case.ticket_id,
            "ticket_id": s.case.ticket_id,
            "subject": s.case.subject or "",
            "priority": s.case.priority,
            "stage": s.case.stage,
            "channel": s.case.channel or "",
            "state": s.state,
            "assignee": s.assignee or "",
            "queue": s.queue or "",
            "opened_at": s.case.opened_at.isoformat(),
            "policy": s.definition,
        },
        "customer": profile,
        "sla": sla_context,
        "level": {
            "number": visit.level if visit else 0,
            "name": (visit.name or "") if visit else "",
            "cycle": visit.cycle if visit else 0,
            "of": len(core.levels),
        },
    }


def breach_envelope(workflow_id: str, event: SlaBreached, cycle: int = 0) -> EventEnvelope:
    """The breach as recovery (`customer-<id>`) receives it; its fixed id counts it once
    (each target of a metric that restarts, `cycle`, is its own breach)."""
    target = f"/{cycle}" if cycle else ""
    return EventEnvelope(
        id=f"{workflow_id}/{event.sla}{target}",
        source="escalation",
        type="sla.breached",
        subject=event.ticket_id,
        time=event.breached_at,
        data=event.model_dump(mode="json"),
    )


def escalated_envelope(
    state: EscalationState, workflow_id: str, step: str, now: datetime
) -> EventEnvelope:
    """What a level's or warning's `start` hands the recovery workflow, once per step."""
    s = state
    level = s.visits[-1].level if step.startswith("level-") and s.visits else None
    event = CaseEscalated(
        ticket_id=s.case.ticket_id,
        customer_id=s.case.customer_id,
        priority=s.case.priority,
        stage=s.case.stage,
        policy=s.definition,
        step=step,
        level=level,
    )
    return EventEnvelope(
        id=f"{workflow_id}/{step}",
        source="escalation",
        type="case.escalated",
        subject=event.ticket_id,
        time=now,
        data=event.model_dump(mode="json"),
    )


def case_details(core: EscalationCore) -> str:
    """One line on what the case waits for and until when (the UI's current details)."""
    s = core.state
    if s.state == "resolved":
        return f"resolved by {s.resolved_by}"
    calendar = core.calendar
    parts = [f"needs a person: {s.attention}"] if s.attention else []
    level = core.current_level()
    if s.state == "paused":
        parts.append(f"paused ({s.pause_reason}); clocks stopped")
    elif s.state == "acknowledged":
        parts.append(f"acknowledged by {s.acknowledged_by}")
    elif level:
        whom = s.assignee or s.queue or "the assignee"
        parts.append(f"level {level} of {len(core.levels)}, waiting for acknowledgement by {whom}")
    else:
        parts.append("waiting for acknowledgement")
    for name, clock in s.clocks.items():
        if clock.stopped:
            continue
        due = clock.due_at(calendar)
        label = name.replace("_", " ")
        if clock.breached_at:
            parts.append(f"{label} breached")
        elif due:
            parts.append(f"{label} breaches at {format_at(due, calendar)}")
        break
    if s.in_flight:
        first = s.in_flight[0]
        more = f" (+{len(s.in_flight) - 1} more)" if len(s.in_flight) > 1 else ""
        since = format_at(first.since, calendar)
        parts.append(f"{first.step} still trying {first.what} since {since}{more}")
    if s.failures:
        last = s.failures[-1]
        parts.append(f"{len(s.failures)} failed, last {last.step}: {last.error[:120]}")
    return "; ".join(parts)


def summary(core: EscalationCore) -> CaseSummary:
    """How the resolved case went: each SLA met or breached by how much, time per level."""
    s = core.state
    assert s.resolved_at is not None and s.resolved_by is not None
    calendar = core.calendar
    outcomes = []
    for name, clock in s.clocks.items():
        spent = clock.spent(s.resolved_at, calendar)
        outcomes.append(
            SlaOutcome(
                name=name,
                budget=clock.budget,
                spent=spent,
                met=clock.met_at is not None and spent <= clock.budget,
                breached=spent > clock.budget,
                margin=clock.budget - spent,
            )
        )
    at_level: dict[str, timedelta] = {}
    for visit in s.visits:
        key = f"level {visit.level}"
        at_level[key] = at_level.get(key, timedelta(0)) + (
            (visit.ended_at or s.resolved_at) - visit.started_at
        )
    return CaseSummary(
        ticket_id=s.case.ticket_id,
        resolved_at=s.resolved_at,
        resolved_by=s.resolved_by,
        acknowledged_by=s.acknowledged_by,
        acknowledged_at=s.acknowledged_at,
        slas=outcomes,
        time_at_level=at_level,
    )
