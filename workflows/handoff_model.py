"""The handoff workflow's state and messages (the presence activities' wire models are the
activity contracts in activities/handoff_contracts.py).

Pure pydantic (no I/O): the workflow, its decision core and the command line share these.
Everything the workflow knows lives in `HandoffState`, carried whole through continue-as-new;
the `state` query returns it whole (`HandoffStatus`). A conversation's phase (bot, queued,
offered, ...) is its `HandoffPhase`, in the field `state`.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any, Literal

from pydantic import BaseModel, Field

from activities.customer_contracts import CustomerProfile
from activities.handoff_contracts import Routing, TicketBrief
from definitions.models import PinnedDefinition

HandoffPhase = Literal[
    "bot",
    "requested",
    "queued",
    "offered",
    "active",
    "resolved",
    "returned_to_bot",
    "callback_scheduled",
    "abandoned",
]
FINAL_PHASES: frozenset[str] = frozenset(
    {"resolved", "returned_to_bot", "callback_scheduled", "abandoned"}
)
TriggerKind = Literal[
    "customer_asks", "bot_requests", "low_confidence", "negative_sentiment", "topic", "tier"
]


def handoff_workflow_id(conversation_id: str) -> str:
    return f"handoff-{conversation_id}"


# --- workflow -----------------------------------------------------------------------------


class Turn(BaseModel):
    speaker: Literal["customer", "bot", "agent"]
    text: str
    at: datetime | None = None
    intent: str | None = None
    confidence: float | None = None
    sentiment: float | None = None


class Trigger(BaseModel):
    kind: TriggerKind
    detail: str
    at: datetime


class ContextPacket(BaseModel):
    """Everything the agent needs, built once at the handoff request."""

    conversation_id: str
    customer_id: str
    trigger: Trigger
    transcript: list[Turn] = Field(default_factory=list)
    turns_omitted: int = Field(0, description="turns left out after the opening ones")
    intents: list[str] = Field(default_factory=list)
    attempts: list[str] = Field(default_factory=list, description="what the bot tried")
    profile: CustomerProfile | None = None
    open_tickets: list[TicketBrief] = Field(default_factory=list)
    sentiment_trend: list[float] = Field(default_factory=list)
    summary: str = ""
    text: str = Field("", description="the packet as the ticket comment shows it")


class Offer(BaseModel):
    agent_id: str
    agent_name: str | None = None
    skills: list[str] = Field(default_factory=list)
    languages: list[str] = Field(default_factory=list)
    queue: str
    number: int = Field(description="1-based offer number in this conversation")
    offered_at: datetime
    expires_at: datetime
    outcome: Literal["pending", "accepted", "declined", "timed_out", "withdrawn"] = "pending"
    reason: str | None = None


class Transition(BaseModel):
    state: HandoffPhase
    at: datetime
    why: str


class HandoffState(BaseModel):
    """Everything the workflow knows, what its core decides from; carried whole through
    continue-as-new."""

    conversation_id: str
    customer_id: str | None = None
    definition: str
    state: HandoffPhase = "bot"
    history: list[Transition] = Field(default_factory=list)
    turns: list[Turn] = Field(default_factory=list)
    transcript_by_size: bool = Field(
        False, description="the transcript is bounded by size (runs since that patch)"
    )
    transcript_bytes: int = Field(0, description="the size `turns` counts against its bound")
    turns_omitted: int = Field(
        0, description="turns left out of the middle of a transcript past its bound"
    )
    omitted_through: datetime | None = Field(None, description="the latest turn left out")
    attempts: list[str] = Field(default_factory=list)
    low_confidence_streak: int = 0
    topic: str | None = None
    profile: CustomerProfile | None = None
    profile_loaded: bool = False
    trigger: Trigger | None = None
    requested_at: datetime | None = None
    context: ContextPacket | None = None
    ticket_id: str | None = None
    route: str | None = None
    queue: str | None = None
    queue_name: str | None = None
    queue_depth: int = 0
    queue_skills: list[str] = Field(default_factory=list)
    queued_at: datetime | None = None
    queue_deadline: datetime | None = None
    overflowed: bool = False
    relaxed: bool = False
    estimated_wait_seconds: int | None = None
    routing: Routing = Field("opsflow", description="who picks the agent in the current queue")
    vendor_group: str | None = Field(None, description="vendor routing: the ticket's group")
    offers: list[Offer] = Field(default_factory=list)
    agent: str | None = None
    accepted_at: datetime | None = None
    case_workflow_id: str | None = None
    case_acknowledged: bool = Field(False, description="the accept was the case's first response")
    case_closed: bool = Field(False, description="the conversation's ending closed its case")
    ended_by: str | None = Field(None, description="who ended the conversation")
    bot_muted: bool = False
    customer_notified: bool = False
    callback_ticket_id: str | None = None
    callback_at: datetime | None = None
    callback_local: str | None = None
    ended_at: datetime | None = None
    end_reason: str | None = None
    seen_events: list[str] = Field(default_factory=list, description="recent event keys")
    commands: int = 0
    transitions: int = 0
    searches: int = Field(0, description="agent searches so far (each its own key)")
    in_line: bool = Field(False, description="waiting in line for a free agent (presence)")

    @property
    def current_offer(self) -> Offer | None:
        if self.offers and self.offers[-1].outcome == "pending":
            return self.offers[-1]
        return None


HandoffStatus = HandoffState
"""What the `state` query, the updates and the run return: the whole state, the context packet
included (one model: a name for each role, as in every kind)."""


class HandoffInput(BaseModel):
    """The workflow's input: the pinned handoff definition and the escalation policy it names."""

    definition: PinnedDefinition
    escalation_policy: PinnedDefinition | None = Field(
        None, description="the pinned `escalation_policy`; None: no case is opened on accept"
    )
    conversation_id: str | None = Field(None, description="default: from the workflow id")
    carried: HandoffState | None = None


class Accept(BaseModel):
    agent: str = Field(min_length=1, max_length=64)


class Decline(BaseModel):
    agent: str = Field(min_length=1, max_length=64)
    reason: str = Field("declined", max_length=500)


class Resolve(BaseModel):
    by: str | None = Field(
        None, min_length=1, max_length=200, description="default: the conversation's agent"
    )


class ReturnToBot(BaseModel):
    by: str | None = Field(
        None, min_length=1, max_length=200, description="default: the conversation's agent"
    )
    reason: str = Field("returned to the bot", max_length=500)


class CustomerLeft(BaseModel):
    reason: str = Field("customer left the chat", max_length=500)


def plain(value: Any) -> Any:
    """JSON-friendly data for the ledger."""
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if isinstance(value, timedelta):
        return value.total_seconds()
    return value
