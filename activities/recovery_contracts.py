"""The recovery kind's activity contracts: what the recovery workflow and the recovery event
activities (activities/recovery_events.py) exchange.

`recovery.deliver_event` starts `customer-<id>` with a `RecoveryInput` and signals the event
with a `RulesDigest`; `recovery.rule_sets` answers a digest with the `RecoveryRules`;
`recovery.previous_state` answers `PreviousState` with the `RecoveryMemory` a run left in the
ledger. The memory is the customer's whole `RecoveryState`, so the state (episodes, approvals,
silences, decisions) is a contract too: the activity validates what it read before the
workflow sees it.

Pure pydantic and pure functions, importing nothing with I/O: workflows import this module
(workflows/recovery_model.py re-exports it), and the activities never import workflows/.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from definitions.events import EventEnvelope
from definitions.models import PinnedDefinition

MAX_HISTORY_EVENTS = 10_000
MEMORY_STEP = "run-ended-"
"""The ledger step prefix of a run's last state (`run-ended-<run id>-<n>`)."""
NEXT_CHUNK_ACTIVITY = "recovery.next_chunk"
"""The local activity a recovery run awaits between two chunks of events (it does nothing):
each chunk is an activation of its own, within the SDK's deadlock detection."""
BACKLOG_QUERY = "backlog"
"""The query answering how many received events a customer's workflow has not decided yet
(senders hold their next events while it is long: activities/recovery_pacing.py)."""


def customer_workflow_id(customer_id: str) -> str:
    return f"customer-{customer_id}"


def rules_digest(rules: list[PinnedDefinition]) -> list[str]:
    return sorted(f"{p.ref}#{p.content_hash}" for p in rules)


Outcome = Literal["fired", "laddered", "shadow", "suppressed"]
SuppressedBy = Literal[
    "silence", "dedup", "inhibition", "cooldown", "cap", "ladder_exhausted", "condition_error"
]
EpisodeStatus = Literal["open", "recovered", "not_recovered", "closed", "expired"]
ApprovalStatus = Literal["waiting", "approved", "approved_reduced", "rejected", "skipped"]


class Decision(BaseModel):
    """One trigger of one rule and what became of it."""

    seq: int
    at: datetime
    rule: str = Field(description="<definition>/<rule>")
    ref: str = Field(description="the definition version that decided: name@version")
    event: str | None = Field(None, description="source/id of the event, None for a timer")
    event_type: str
    outcome: Outcome
    suppressed_by: SuppressedBy | None = None
    reason: str | None = None
    episode: int | None = None
    rung: int = Field(0, description="0: the rule's actions; n: ladder step n")
    actions: list[str] = Field(default_factory=list)
    capped: list[str] = Field(default_factory=list)
    gated: list[str] = Field(default_factory=list, description="actions waiting for approval")


class Episode(BaseModel):
    id: int
    opened_at: datetime
    opened_by: str
    ref: str
    severity: int
    rungs: dict[str, int] = Field(default_factory=dict, description="rule -> steps taken")
    events: list[str] = Field(default_factory=list)
    follow_up_at: datetime | None = None
    follow_up_sent_at: datetime | None = None
    expires_at: datetime
    status: EpisodeStatus = "open"
    closed_at: datetime | None = None
    closed_by: str | None = None
    score: int | None = None
    contact: str | None = Field(
        None, description="the ticket the opening event was about: what the follow-up asks about"
    )
    tied: bool = Field(
        False,
        description="opened since runs tie the follow-up to the contact and hand a failed "
        "one to a person (older episodes close on any survey)",
    )
    handed_over_at: datetime | None = Field(
        None, description="the follow-up said not recovered: a person has it until they close it"
    )
    handed_over_to: str | None = Field(None, description="the queue of the hand-over ticket")
    handover_ticket: str | None = None


class PendingApproval(BaseModel):
    id: int
    rule: str
    ref: str
    episode: int | None
    step: str = Field(description="names the credit's idempotency key")
    amount: Decimal
    currency: str
    reason: str
    group: str
    members: list[str] = Field(default_factory=list)
    requested_by: str
    requested_at: datetime
    deadline: datetime
    on_timeout: Literal["skip", "escalate", "approve_reduced"]
    escalate_to: str | None = None
    reduced_amount: Decimal | None = None
    timeout: timedelta
    escalated: bool = False
    required: int = Field(1, description="distinct approvers needed")
    approved_by: list[str] = Field(default_factory=list, description="approvals so far")
    channel: str = "slack"
    remind_at: datetime | None = Field(None, description="when the approvers are reminded")
    reminded: bool = False
    status: ApprovalStatus = "waiting"
    decided_by: str | None = None
    decided_at: datetime | None = None
    note: str | None = None
    applied_amount: Decimal | None = None


class Silence(BaseModel):
    rule: str | None = Field(None, description="None: the whole customer")
    until: datetime
    by: str
    reason: str = ""


class StallWatch(BaseModel):
    rule: str
    stage: str
    since: datetime
    due: datetime
    fired: bool = False


class ScoreEntry(BaseModel):
    """One survey score, on the 1..5 scale, and the contact (ticket) it was about."""

    at: datetime
    score: float
    ticket: str | None = None


class RecoveryState(BaseModel):
    """Everything one customer's recovery workflow knows; carried whole by continue-as-new."""

    customer_id: str
    rule_sets: list[str] = Field(default_factory=list, description="refs of the rule sets")
    seq: int = 0
    events_seen: int = 0
    seen: dict[str, datetime] = Field(default_factory=dict)
    windows: dict[str, list[datetime]] = Field(default_factory=dict)
    recent: dict[str, list[datetime]] = Field(default_factory=dict)
    dedup: dict[str, dict[str, datetime]] = Field(default_factory=dict)
    cooldowns: dict[str, datetime] = Field(default_factory=dict)
    caps: dict[str, list[datetime]] = Field(default_factory=dict)
    episodes: list[Episode] = Field(default_factory=list)
    episode_count: int = 0
    approvals: list[PendingApproval] = Field(default_factory=list)
    approval_count: int = 0
    silences: list[Silence] = Field(default_factory=list)
    stage: str | None = None
    stage_since: datetime | None = None
    stalls: dict[str, StallWatch] = Field(default_factory=dict)
    decisions: list[Decision] = Field(default_factory=list)
    suppressed: list[Decision] = Field(default_factory=list)
    tally: dict[str, dict[str, int]] = Field(default_factory=dict)
    customer: dict[str, Any] | None = None
    customer_at: datetime | None = None
    scores: list[ScoreEntry] = Field(default_factory=list, description="latest survey scores")

    def open_episode(self) -> Episode | None:
        for episode in reversed(self.episodes):
            if episode.status == "open":
                return episode
        return None

    def waiting_approvals(self) -> list[PendingApproval]:
        return [a for a in self.approvals if a.status == "waiting"]

    def approval(self, approval_id: int | None) -> PendingApproval | None:
        waiting = self.waiting_approvals()
        if approval_id is None:
            return waiting[0] if waiting else None
        return next((a for a in waiting if a.id == approval_id), None)


class RecoveryRules(BaseModel):
    """The recovery rule sets deployed now (`latest_of_kind(sessions, "recovery")`)."""

    model_config = ConfigDict(extra="forbid")

    rules: list[PinnedDefinition]


class RulesDigest(BaseModel):
    """Which rule sets are deployed now, by `rules_digest`: what each `event` signal carries
    instead of the rule sets themselves. A workflow whose own digest differs loads the named
    versions once (activity `recovery.rule_sets`) and switches to them from that event on."""

    model_config = ConfigDict(extra="forbid")

    digest: list[str]


class RecoveryInput(BaseModel):
    """What starts (or continues as new) a run of `customer-<id>`."""

    rules: list[PinnedDefinition] = Field(default_factory=list)
    carried: RecoveryState | None = None
    max_history_events: int = Field(MAX_HISTORY_EVENTS, ge=100)
    legacy_event_names: bool = Field(
        False, description="carried by continue-as-new of a run started before the contract"
    )
    pending_events: list[EventEnvelope] = Field(
        default_factory=list,
        description="events received and not yet decided when the previous run continued as "
        "new; this run decides them first",
    )


class PreviousState(BaseModel):
    """Ask for what the customer's last run knew when it ended (activity
    `recovery.previous_state`)."""

    customer_id: str = Field(min_length=1, max_length=200)


class RecoveryMemory(BaseModel):
    """What a run of `customer-<id>` that ended idle left for the next one: its state (seen
    events, counters, history) as recorded in the ledger step `run-ended-...`; None when the
    customer had no earlier run (or it was recorded before runs remembered)."""

    state: RecoveryState | None = None
