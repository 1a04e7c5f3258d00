"""The rollout's approvals: how many the start and each gate need, which approvals count, when
the approvers are asked, reminded and paged, and what they are told. Pure: `now` is given;
the workflow (workflows/rollout.py) sends the messages and writes the ledger.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from definitions.models import RolloutSpec
from workflows.rollout_core import local_time
from workflows.rollout_model import Approval, RolloutState

CHANNELS = {"email": "email", "slack": "chat", "chat": "chat", "pager": "pager", "sms": "chat"}
"""A plan's channel name -> the notification channel that carries it."""


def approvals_needed_at_start(s: RolloutState, spec: RolloutSpec) -> int:
    """A standard change starts by itself, a normal one needs the plan's number, any other
    (emergency) one; starting outside the change windows always needs one (but emergency)."""
    risk = spec.impact.risk
    needed = {"standard": 0, "normal": spec.approvals.required}.get(risk, 1)
    if s.change.outside_windows and risk != "emergency":
        needed = max(needed, 1)
    return needed


def impact_assessed(
    s: RolloutState, spec: RolloutSpec, sizes: list[dict[str, Any]]
) -> dict[str, Any]:
    """Set the approvals the start needs; the ledger's record of the assessed impact."""
    risk = spec.impact.risk
    s.approvals_needed = approvals_needed_at_start(s, spec)
    outside = s.change.outside_windows and risk != "emergency"
    return {
        "risk": risk,
        "journeys": list(spec.impact.journeys),
        "compliance": list(spec.impact.compliance),
        "phases": sizes,
        "approvals_needed": s.approvals_needed,
        "group": spec.approvals.group,
        "windows": "skipped (emergency)"
        if risk == "emergency"
        else "outside windows allowed (blackouts apply)"
        if outside
        else "apply",
    }


def request_approval(s: RolloutState, stage: str, now: datetime, *, notify: bool) -> None:
    """Wait for approvals of `stage` (start, or the phase whose gate waits) from now; with
    `notify` the approvers are asked at once and reminded before the timeout."""
    s.approval_for, s.approval_since, s.approval_paged = stage, now, False
    s.approval_notify, s.approval_notices = notify, 0


def approvals_for(s: RolloutState, stage: str) -> list[Approval]:
    """The approvals that count for `stage`: after a retry, only the current attempt's."""
    return [
        a
        for a in s.approvals
        if a.stage == stage and (a.attempt == s.attempt or not s.approvals_scoped)
    ]


def needed_for(s: RolloutState, spec: RolloutSpec, stage: str) -> int:
    if stage == "start":
        return s.approvals_needed
    return 1 if s.risk == "emergency" else spec.approvals.required


def refusal_of_approver(s: RolloutState, spec: RolloutSpec, approver: str) -> str | None:
    """Why `approver` may not approve (or reject) this change; None when they may."""
    approvals = spec.approvals
    if approver == s.change.owner and not approvals.allow_owner:
        return f"{approver} owns change {s.change.change_id} and may not approve it"
    if approvals.members and approver not in approvals.members:
        return f"{approver} is not in the approvers' group {approvals.group}"
    return None


@dataclass(frozen=True)
class ApprovalMove:
    """What a rollout awaiting approval does now: go on (`approvers` gave enough), page the
    approvers and the owner (the timeout passed), ask or remind the approvers, or wait
    (until a reminder or the paging time; None: until a command)."""

    kind: Literal["approved", "page", "ask", "remind", "wait"]
    stage: str
    approvers: list[str] = field(default_factory=list)
    attention: str = ""
    until: datetime | None = None


def next_approval_move(s: RolloutState, spec: RolloutSpec, now: datetime) -> ApprovalMove:
    stage = s.approval_for or "start"
    given = approvals_for(s, stage)
    if len(given) >= needed_for(s, spec, stage):
        return ApprovalMove("approved", stage, approvers=[a.approver for a in given])
    timeout = spec.approvals.timeout
    page_at = None
    if not s.approval_paged and s.approval_since is not None:
        page_at = s.approval_since + timeout
        if now >= page_at:
            s.approval_paged = True
            return ApprovalMove(
                "page", stage, attention=f"approval for {stage} has waited {timeout}"
            )
    remind_at = None
    if s.approval_notify and s.approval_since is not None and not s.approval_paged:
        reminders = spec.approvals.reminders
        if s.approval_notices == 0:
            return ApprovalMove("ask", stage)
        if s.approval_notices <= reminders:
            share = s.approval_notices / (reminders + 1)
            remind_at = s.approval_since + timeout * share
            if now >= remind_at:
                return ApprovalMove("remind", stage)
    until = min((m for m in (page_at, remind_at) if m is not None), default=None)
    return ApprovalMove("wait", stage, until=until)


def approval_granted(s: RolloutState) -> None:
    """The awaited approvals are in: nothing awaits them any more."""
    s.approval_for = s.approval_since = None


@dataclass(frozen=True)
class ApprovalNotice:
    """The message that asks (or reminds) the approvers' group, and its ledger entry."""

    step: str
    channel: str
    recipient: str
    context: dict[str, Any]
    ask: dict[str, Any]


def approval_notice(
    s: RolloutState, spec: RolloutSpec, stage: str, *, reminder: bool
) -> ApprovalNotice:
    """What is asked, for which cohort, by when, and the exact command that answers."""
    approvals = spec.approvals
    s.approval_notices += 1
    assert s.approval_since is not None
    deadline = local_time(spec, s.approval_since + approvals.timeout)
    # The start unlocks the first phase; a gate after phase X unlocks the next one.
    number = s.phase_index if stage == "start" else min(s.phase_index + 1, len(s.phases) - 1)
    unlocked = s.phases[number]
    change_id = s.change.change_id
    what = "the start of the rollout" if stage == "start" else f"the gate after phase {stage}"
    ask = {
        "what": what,
        "stage": stage,
        "group": approvals.group,
        "phase": unlocked.name,
        "percent": f"{unlocked.percent:g}",
        "customers": unlocked.cohort_size,
        "given": len(approvals_for(s, stage)),
        "needed": needed_for(s, spec, stage),
        "deadline": deadline,
        "reminder": reminder,
        "approve": f"opsflow rollout approve {change_id} --approver <your name>",
        "reject": f"opsflow rollout reject {change_id} --approver <your name> --reason ...",
    }
    context = {
        "change": {
            "id": change_id,
            "owner": s.change.owner,
            "plan": s.plan,
            "reason": s.change.reason,
            "attempt": s.attempt,
        },
        "ask": ask,
    }
    return ApprovalNotice(
        step=f"approval-{stage}-{s.approval_notices}",
        channel=CHANNELS[approvals.channel],
        recipient=f"group:{approvals.group}",
        context=context,
        ask=ask,
    )


@dataclass(frozen=True)
class Page:
    """A rollout that needs a person: the message, who receives it (channel, recipient) in
    order, and the ledger's step."""

    step: str
    context: dict[str, Any]
    recipients: list[tuple[str, str]]


def page(
    s: RolloutState, spec: RolloutSpec, attention: str, details: str, *, approvers: bool
) -> Page:
    """Page the owner (and, for an approval, the approvers' channel first)."""
    s.pages += 1
    phase = s.current
    context = {
        "change": {
            "id": s.change.change_id,
            "owner": s.change.owner,
            "plan": s.plan,
            "reason": s.change.reason,
            "attention": attention,
            "details": details,
        },
        "phase": {
            "name": phase.name if phase else "",
            "percent": phase.percent if phase else 0,
        },
    }
    recipients = [("pager", f"owner:{s.change.owner}")]
    if approvers:
        channel = CHANNELS[spec.approvals.channel]
        recipients.insert(0, (channel, f"group:{spec.approvals.group}"))
    return Page(step=f"page-{s.pages}", context=context, recipients=recipients)
