"""The escalation core's commands: whether a person's command is refused (and with what
words), and what one that is accepted does to the case, its clocks and its levels.

Each `refuse_*` answers the workflow's update validator: a refused command changes nothing.
Each command function changes the state through the core, notes the command for the ledger
and returns what the workflow still has to do (`Applied`). Pure: `now` is given.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from pydantic import ValidationError

from activities.escalation_contracts import Acknowledge, Resolve
from definitions.common import AssignAction
from definitions.directory import JOURNEY_STAGES
from definitions.models import ANY_STAGE, EscalationSpec, PinnedDefinition
from workflows.escalation_clocks import MetBy, met_by
from workflows.escalation_core import AlertAction, EscalationCore, who
from workflows.escalation_model import (
    AgentReply,
    EscalationState,
    Pause,
    Reassign,
    RequesterReply,
    Resume,
    SetPriority,
    SetStage,
    TicketStatus,
)
from workflows.escalation_pinned import Migrate

# The stages a case may be at besides the ones a policy names: the default `support` and the
# customer journey's stages.
CASE_STAGES = ("support", *JOURNEY_STAGES)
PRIORITIES = ("p1", "p2", "p3", "p4")


@dataclass
class Applied:
    """What an accepted command leaves the workflow to do besides recording it."""

    met: list[str] = field(default_factory=list)
    """Clocks the command stopped within their budget (the SLA-met metric)."""
    acknowledged_after: timedelta | None = None
    """Time from opening to the first response, when the command was it."""
    follow_alerts: AlertAction | None = None
    """The pager alerts the case's pages opened are to be acknowledged (or resolved)."""


def _already_resolved(state: EscalationState) -> str | None:
    if state.state == "resolved":
        return f"case {state.case.ticket_id} is already resolved"
    return None


def _stop(core: EscalationCore, command: Acknowledge | Resolve, now: datetime) -> list[str]:
    """Stop the clocks `command` meets; the names of those met within their budget."""
    kind: MetBy = "acknowledge" if isinstance(command, Acknowledge) else "resolve"
    met = []
    for name, clock in core.state.clocks.items():
        if met_by(name, kind) and clock.active:
            clock.stop(now, core.calendar)
            if clock.met_within_budget():
                met.append(name)
    return met


# --- acknowledge, resolve ----------------------------------------------------------------------


def refuse_acknowledge(state: EscalationState, command: Acknowledge) -> str | None:
    if refusal := _already_resolved(state):
        return refusal
    if state.acknowledged_by is not None and not command.first_response_only:
        return f"already acknowledged by {state.acknowledged_by}"
    return None


def acknowledge(core: EscalationCore, command: Acknowledge, now: datetime) -> Applied | None:
    """The first response: it meets the first-response clock and ends the escalation (the
    levels stop, the pages' alerts are acknowledged). None: a later public reply, which
    changes nothing (the first one counted)."""
    s = core.state
    if s.acknowledged_by is not None:
        return None
    s.acknowledged_by, s.acknowledged_at = command.by, now
    s.state = "acknowledged" if s.state == "open" else s.state
    applied = Applied(met=_stop(core, command, now), acknowledged_after=now - s.case.opened_at)
    core.end_visit(now)
    how = {"as": "public reply"} if command.first_response_only else {}
    core.record("acknowledge", {"by": command.by, **how}, now)
    if any(alert.status == "triggered" for alert in s.alerts):
        applied.follow_alerts = "acknowledge"
    return applied


# --- the conversation: agent replies, requester messages --------------------------------------


def refuse_agent_reply(state: EscalationState, command: AgentReply) -> str | None:
    return _already_resolved(state)


def agent_reply(core: EscalationCore, command: AgentReply, now: datetime) -> Applied | None:
    """An agent wrote on the ticket. A public reply is the first response when the case has
    none (as an acknowledge by public reply) and, on a case measured by the metrics, meets
    the next reply waiting for an answer and the update interval, and starts the next
    interval. An internal note counts for nothing. None: nothing changed."""
    if not command.public:
        return None
    s = core.state
    applied = acknowledge(core, Acknowledge(by=command.by, first_response_only=True), now)
    if not s.sla_metrics:
        return applied
    s.last_public_reply_at = now
    met = core.ticket_event("public_reply", now)
    if applied is None:
        core.record("agent-reply", {"by": command.by}, now, by_person=False)
        applied = Applied()
    applied.met += met
    return applied


def refuse_requester_reply(state: EscalationState, command: RequesterReply) -> str | None:
    return _already_resolved(state)


def requester_reply(core: EscalationCore, command: RequesterReply, now: datetime) -> Applied | None:
    """The requester wrote: on a case measured by the metrics, a next-reply target starts
    unless one already waits for an answer. None: nothing to measure (an older case)."""
    s = core.state
    if not s.sla_metrics:
        return None
    core.ticket_event("requester_reply", now)
    core.record("requester-reply", who(command.by), now, by_person=False)
    return Applied()


def refuse_resolve(state: EscalationState, command: Resolve) -> str | None:
    return _already_resolved(state)


def resolve(core: EscalationCore, command: Resolve, now: datetime) -> Applied:
    """The case ends: every clock stops, the level it was at ends."""
    s = core.state
    applied = Applied(met=_stop(core, command, now))
    core.end_visit(now)
    s.resolved_by, s.resolved_at, s.state = command.by, now, "resolved"
    outcome = {"outcome": command.outcome} if command.outcome else {}
    core.record("resolve", {"by": command.by, **outcome}, now)
    return applied


# --- pause, resume, the ticket's status -----------------------------------------------------


def refuse_pause(state: EscalationState, command: Pause) -> str | None:
    if refusal := _already_resolved(state):
        return refusal
    if state.state == "paused":
        return "the case is already paused"
    return None


def refuse_resume(state: EscalationState, command: Resume | None) -> str | None:
    if refusal := _already_resolved(state):
        return refusal
    if state.state != "paused":
        return "the case is not paused"
    return None


def _pause(core: EscalationCore, reason: str, now: datetime) -> None:
    """Every running clock stops counting (waiting on the customer) until a resume."""
    s = core.state
    for name, clock in s.clocks.items():
        if not clock.stopped and core.pauses_with_case(name):
            clock.pause(now, core.calendar)
    s.paused_since, s.pause_reason = now, reason
    s.state = "paused"


def _resume(core: EscalationCore, now: datetime) -> None:
    s = core.state
    for name, clock in s.clocks.items():
        if core.pauses_with_case(name):
            clock.resume(now)
    s.paused_since, s.pause_reason = None, None
    s.state = "acknowledged" if s.acknowledged_by else "open"


def pause(core: EscalationCore, command: Pause, now: datetime) -> Applied:
    _pause(core, command.reason, now)
    core.record("pause", {"reason": command.reason, **who(command.by)}, now)
    return Applied()


def resume(core: EscalationCore, command: Resume | None, now: datetime) -> Applied:
    _resume(core, now)
    core.record("resume", who(command.by if command else None), now)
    return Applied()


def refuse_ticket_status(state: EscalationState, command: TicketStatus) -> str | None:
    return _already_resolved(state)


def ticket_status(core: EscalationCore, command: TicketStatus, now: datetime) -> Applied | None:
    """The policy's `pause_statuses` pause the clocks, any other status resumes a paused
    case. Not a person's command: a failed action still needs one. None: it changes nothing
    (still waiting, still running), and nothing is recorded. On a case measured by the
    metrics the status also pauses or resumes requester wait and agent work time."""
    s = core.state
    pauses = command.status in core.spec.pause_statuses_for(s.case.priority)
    detail = {"status": command.status, **who(command.by)}
    status_clocks = s.sla_metrics and core.status_changed(command.status, now)
    if pauses and s.state != "paused":
        reason = f"ticket {command.status}"
        _pause(core, reason, now)
        core.record("pause", {**detail, "reason": reason}, now, by_person=False)
        return Applied()
    if not pauses and s.state == "paused":
        _resume(core, now)
        core.record("resume", detail, now, by_person=False)
        return Applied()
    if status_clocks:
        core.record("status", detail, now, by_person=False)
        return Applied()
    return None


# --- priority, stage, policy -----------------------------------------------------------------


def refuse_set_priority(
    state: EscalationState, spec: EscalationSpec, command: SetPriority
) -> str | None:
    if refusal := _already_resolved(state):
        return refusal
    if command.priority not in PRIORITIES:
        return f"unknown priority {command.priority!r}: use p1, p2, p3 or p4"
    if command.priority == state.case.priority:
        return f"the case is already {command.priority}"
    if spec.sla_for(command.priority, state.case.stage) is None:
        covers = ", ".join(spec.priorities)
        return (
            f"policy {state.definition} has no SLA for {command.priority} (it covers "
            f"{covers}); first migrate the case to a policy that covers both "
            "(`opsflow case migrate`)"
        )
    return None


def set_priority(core: EscalationCore, command: SetPriority, now: datetime) -> Applied:
    """The clocks take the new priority's SLA and keep the time spent; its calendar,
    warnings and levels apply from now on."""
    s = core.state
    before = s.case.priority
    core.rebudget(now, priority=command.priority, stage=s.case.stage)
    core.record("priority", {"from": before, "to": command.priority, **who(command.by)}, now)
    return Applied()


def known_stages(spec: EscalationSpec, priority: str) -> list[str]:
    """The stages `spec` has an SLA for at `priority`: those it names, and with a `*` target
    the usual case stages as well."""
    named = [t.stage for t in spec.slas if t.priority == priority]
    known = [stage for stage in named if stage != ANY_STAGE]
    if ANY_STAGE in named:
        known += [stage for stage in CASE_STAGES if stage not in known]
    return known


def refuse_set_stage(state: EscalationState, spec: EscalationSpec, command: SetStage) -> str | None:
    if refusal := _already_resolved(state):
        return refusal
    if command.stage == state.case.stage:
        return f"the case is already at stage {command.stage}"
    known = known_stages(spec, state.case.priority)
    if command.stage not in known:
        return (
            f"unknown stage {command.stage!r} for policy {state.definition}: "
            f"known stages: {', '.join(known) or 'none'}"
        )
    if spec.sla_for(state.case.priority, command.stage) is None:
        return f"policy {state.definition} has no SLA for stage {command.stage!r}"
    return None


def set_stage(core: EscalationCore, command: SetStage, now: datetime) -> Applied:
    s = core.state
    before = s.case.stage
    core.rebudget(now, priority=s.case.priority, stage=command.stage)
    core.record("stage", {"from": before, "to": command.stage, **who(command.by)}, now)
    return Applied()


def migration_refusal(state: EscalationState, policy: PinnedDefinition) -> str | None:
    """Why the case cannot move to `policy`, or None. The workflow's `migrate` validator
    and the command line's dry run ask the same question."""
    case = state.case
    if refusal := _already_resolved(state):
        return refusal
    if policy.definition.kind != "escalation":
        return f"{policy.ref} is a {policy.definition.kind} definition, not an escalation policy"
    if policy.ref == state.definition:
        return f"case {case.ticket_id} is already on {policy.ref}"
    spec = policy.escalation
    if case.priority not in spec.priorities:
        return (
            f"{policy.ref} does not cover priority {case.priority} "
            f"(it covers {', '.join(spec.priorities)})"
        )
    if spec.sla_for(case.priority, case.stage) is None:
        return f"{policy.ref} has no SLA for {case.priority} at stage {case.stage}"
    return None


def migrate(core: EscalationCore, command: Migrate, now: datetime) -> Applied:
    """Follow `command.policy` from now on: the clocks take its targets for the case's
    priority and stage and keep the time spent (on the old calendar until now) and any
    pause; its calendar, levels, warnings and actions apply from here."""
    s = core.state
    before = s.definition
    core.rebudget(now, priority=s.case.priority, stage=s.case.stage, policy=command.policy)
    core.follow(command.policy)
    core.record("migrate", {"from": before, "to": s.definition, "by": command.by}, now)
    return Applied()


# --- reassign -------------------------------------------------------------------------------------


def reassign_action(command: Reassign) -> AssignAction:
    return AssignAction(type="assign", queue=command.queue, agent=command.agent)


def refuse_reassign(state: EscalationState, command: Reassign) -> str | None:
    if refusal := _already_resolved(state):
        return refusal
    try:
        reassign_action(command)
    except ValidationError as exc:
        error = exc.errors()[0]
        where = ".".join(str(part) for part in error["loc"])
        message = str(error["msg"]).removeprefix("Value error, ")
        return f"{where + ': ' if where else ''}{message}"
    return None


def reassign_step(core: EscalationCore) -> str:
    """The ledger step (and action keys) of a reassign: numbered like every command."""
    core.state.commands += 1
    return f"command-{core.state.commands}-reassign"


def reassign_failed(
    core: EscalationCore, command: Reassign, failed: list[str], now: datetime
) -> str:
    """The assign action failed: nothing changes, the case needs a person; the answer."""
    core.keep_failures("reassign", failed, now)
    target = f"queue {command.queue}" if command.queue else f"agent {command.agent}"
    return f"reassign to {target} failed ({'; '.join(failed)}); queue and assignee unchanged"
