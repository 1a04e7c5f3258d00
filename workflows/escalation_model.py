"""The escalation workflow's data: its state, commands and summary (the run's input and the
migrate command, which carry a pinned policy, are in workflows/escalation_pinned.py).

Kept apart from the workflow so the sandbox passes it through (workflows/sandbox.py) instead
of building these pydantic classes again for every run. What the case decides with them is
in the core (workflows/escalation_core.py and its topic modules).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any, Literal

from pydantic import BaseModel, Field

from activities.customer_contracts import CustomerProfile
from workflows.escalation_clocks import SlaClock

Priority = Literal["p1", "p2", "p3", "p4"]
CaseState = Literal["open", "paused", "acknowledged", "resolved"]
# Keep histories small: a case that has seen this many events starts afresh, state carried.
MAX_HISTORY_EVENTS = 10_000
MAX_UPDATES_PER_RUN = 1_000
# The most recent failed actions a case keeps in its state (the ledger keeps them all).
MAX_ACTION_FAILURES = 20


def case_workflow_id(ticket_id: str) -> str:
    return f"case-{ticket_id}"


class CaseInfo(BaseModel):
    ticket_id: str = Field(min_length=1, max_length=64)
    customer_id: str = Field(min_length=1, max_length=64)
    priority: Priority
    stage: str = Field("support", min_length=1, max_length=40)
    channel: str | None = None
    subject: str | None = Field(None, max_length=500)
    opened_at: datetime


class LevelVisit(BaseModel):
    level: int = Field(description="1-based level number")
    cycle: int = Field(description="0 for the first pass, then one more per repeat")
    name: str | None = None
    started_at: datetime
    ended_at: datetime | None = None


class SlaOutcome(BaseModel):
    name: str
    budget: timedelta
    spent: timedelta
    met: bool
    breached: bool
    margin: timedelta = Field(description="budget - spent: negative by how much it was late")


class CaseSummary(BaseModel):
    ticket_id: str
    resolved_at: datetime
    resolved_by: str
    acknowledged_by: str | None
    acknowledged_at: datetime | None
    slas: list[SlaOutcome]
    time_at_level: dict[str, timedelta]


class PendingLedgerEntry(BaseModel):
    step: str
    detail: dict[str, Any]
    at: datetime
    key: str | None = Field(None, description="unique in the run; None: the step")


class ActionFailure(BaseModel):
    """An action of the case that failed (a vendor refused it, the ticket is gone): not done."""

    step: str = Field(description="the ledger step it ran under, e.g. reassign, level-2-cycle-0")
    error: str
    at: datetime


class InFlightAction(BaseModel):
    """Actions of one step (a level, a warning, a breach) still running or retrying."""

    step: str
    what: str = Field(description="e.g. notify pager, assign")
    since: datetime


class PagerAlert(BaseModel):
    """The alert a case's pages to one recipient opened (PagerDuty: one dedup_key)."""

    recipient: str
    dedup_key: str
    status: Literal["paging", "triggered", "acknowledged", "resolved", "failed"] = "paging"


class EscalationState(BaseModel):
    """Everything the workflow knows, what its core decides from; carried whole through
    continue-as-new."""

    case: CaseInfo
    definition: str
    customer: CustomerProfile | None = None
    state: CaseState = "open"
    paused_since: datetime | None = None
    pause_reason: str | None = None
    assignee: str | None = None
    queue: str | None = None
    acknowledged_by: str | None = None
    acknowledged_at: datetime | None = None
    resolved_by: str | None = None
    resolved_at: datetime | None = None
    clocks: dict[str, SlaClock] = Field(default_factory=dict)
    sla_metrics: bool = Field(
        False,
        description="measured by every metric its SLA gives (next reply, updates, requester "
        "wait, agent work); cases opened before measure first response and resolution only",
    )
    ticket_status: str = Field("new", description="the ticket's status, as last reported")
    last_public_reply_at: datetime | None = Field(
        None, description="when an agent last replied publicly to the requester"
    )
    levels_fired: int = Field(0, description="levels fired so far, across cycles")
    visits: list[LevelVisit] = Field(default_factory=list)
    breaches_announced: list[str] = Field(default_factory=list)
    commands: int = Field(0, description="updates applied; numbers their ledger steps")
    unrecorded: list[PendingLedgerEntry] = Field(
        default_factory=list, description="commands applied, not yet written to the ledger"
    )
    failures: list[ActionFailure] = Field(
        default_factory=list,
        description=f"the last {MAX_ACTION_FAILURES} actions that failed, oldest first",
    )
    in_flight: list[InFlightAction] = Field(
        default_factory=list,
        description="actions still running or retrying; the clocks and levels do not wait",
    )
    alerts: list[PagerAlert] = Field(
        default_factory=list, description="pager alerts opened, followed on ack and resolve"
    )
    attention: str | None = Field(
        None,
        description="why the case needs a person (an action failed); the next command a "
        "person gives clears it. Shown as OpsState=stuck",
    )


EscalationStatus = EscalationState
"""What the `state` query and the updates return: the whole state (the query fills in each
clock's due moment and status). One model: a name for each role, as in every kind."""


class Pause(BaseModel):
    reason: str = Field("waiting on the customer", max_length=500)
    by: str | None = Field(None, max_length=200, description="who paused it")


class AgentReply(BaseModel):
    """An agent wrote on the ticket: a public reply answers the requester (the first
    response, the next reply, a periodic update); an internal note counts for no metric."""

    by: str = Field(min_length=1, max_length=200, description="the agent")
    public: bool = True


class RequesterReply(BaseModel):
    """The requester wrote on the ticket: a next-reply target starts unless one already
    waits for an answer (it is measured from the oldest message not answered)."""

    by: str | None = Field(None, max_length=200, description="the requester")


class Resume(BaseModel):
    by: str | None = Field(None, max_length=200, description="who resumed it")


class TicketStatus(BaseModel):
    """The ticket's status changed in the ticketing system: the case's pinned policy decides
    (`pause_statuses` pause the clocks, any other status resumes a case they paused)."""

    status: str = Field(min_length=1, max_length=40)
    by: str | None = Field(None, max_length=200, description="who changed it")


class SetPriority(BaseModel):
    priority: str
    by: str | None = Field(None, max_length=200, description="who changed it")


class SetStage(BaseModel):
    stage: str = Field(min_length=1, max_length=40)
    by: str | None = Field(None, max_length=200, description="who changed it")


class Reassign(BaseModel):
    queue: str | None = Field(None, max_length=64)
    agent: str | None = Field(None, max_length=64)
    by: str = Field("opsflow", max_length=200)
