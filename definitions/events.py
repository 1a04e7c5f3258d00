"""The event contract: the `data` of every CloudEvents type opsflow understands.

Events arrive through the intake (CloudEvents 1.0: `id` + `source` identify an event,
`subject` names the entity, `time` says when it happened) or are emitted by workflows
(`sla.breached`). Each type's data is a pydantic model that refuses unknown fields, so a
typo from a sender is an error, not a silently ignored value.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

EntityId = Annotated[str, StringConstraints(min_length=1, max_length=64, pattern=r"^[\w.:@-]+$")]
Priority = Literal["p1", "p2", "p3", "p4"]
Channel = Literal["email", "chat", "phone", "web", "social", "sms"]
ShortText = Annotated[str, StringConstraints(max_length=500)]
LongText = Annotated[str, StringConstraints(max_length=20_000)]


class EventData(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TicketCreated(EventData):
    ticket_id: EntityId
    customer_id: EntityId
    priority: Priority = "p3"
    stage: EntityId = "support"
    channel: Channel = "email"
    subject: ShortText = ""


class TicketUpdated(EventData):
    """Only the fields that changed are given."""

    ticket_id: EntityId
    customer_id: EntityId | None = None
    status: Literal["new", "open", "pending", "on_hold", "solved", "closed"] | None = None
    priority: Priority | None = None
    stage: EntityId | None = None
    assignee: EntityId | None = None
    group: EntityId | None = None
    public_reply_by: EntityId | None = Field(
        None,
        description="the agent who just replied publicly to the customer: the case's first "
        "response (acknowledgement) when it has none yet",
    )
    requester_reply_by: EntityId | None = Field(
        None,
        description="the requester who just wrote on the ticket: starts a next-reply target "
        "when none is waiting for an answer",
    )


class TicketSolved(EventData):
    ticket_id: EntityId
    customer_id: EntityId | None = None
    solved_by: ShortText = "agent"


class TicketReopened(EventData):
    ticket_id: EntityId
    customer_id: EntityId | None = None


class ContactReceived(EventData):
    customer_id: EntityId
    channel: Channel
    ticket_id: EntityId | None = None
    topic: ShortText | None = None


class SurveyResponded(EventData):
    customer_id: EntityId
    survey: Literal["csat", "nps"] = "csat"
    score: int
    scale: int = Field(
        5, ge=1, le=100, description="highest possible score: 5 for CSAT, 10 for NPS"
    )
    comment: LongText | None = None
    ticket_id: EntityId | None = None

    @model_validator(mode="after")
    def _score_on_scale(self) -> SurveyResponded:
        lowest = 0 if self.survey == "nps" else 1
        if not lowest <= self.score <= self.scale:
            raise ValueError(f"score {self.score} is outside {lowest}..{self.scale}")
        return self


class SentimentScored(EventData):
    customer_id: EntityId
    score: float = Field(ge=-1.0, le=1.0, description="-1 very negative .. 1 very positive")
    source: ShortText = "ticket"
    ticket_id: EntityId | None = None
    conversation_id: EntityId | None = None


class JourneyStageChanged(EventData):
    customer_id: EntityId
    from_stage: EntityId | None = None
    to_stage: EntityId


class SlaBreached(EventData):
    """Emitted by the escalation workflow, exactly once per SLA per case."""

    ticket_id: EntityId
    customer_id: EntityId
    sla: Literal[
        "first_response",
        "next_reply",
        "periodic_update",
        "pausable_update",
        "requester_wait",
        "agent_work",
        "resolution",
    ]
    priority: Priority
    stage: EntityId
    budget_seconds: int = Field(ge=0)
    breached_at: datetime
    policy: ShortText


class CaseEscalated(EventData):
    """Emitted by the escalation workflow when a level's (or a warning's) `start` action hands
    the case's customer to a recovery definition: once per case and step."""

    ticket_id: EntityId
    customer_id: EntityId
    priority: Priority
    stage: EntityId
    policy: ShortText
    step: ShortText = Field(description="the case's step, e.g. level-2-cycle-0")
    level: int | None = Field(None, ge=1, description="the level that started it, if a level")


class TranscriptLine(EventData):
    from_: Literal["customer", "bot", "agent"] = Field(alias="from")
    text: LongText
    at: datetime | None = None


class BotTurn(EventData):
    conversation_id: EntityId
    customer_id: EntityId
    text: LongText
    intent: ShortText | None = None
    confidence: float = Field(1.0, ge=0.0, le=1.0)
    sentiment: float | None = Field(None, ge=-1.0, le=1.0)
    speaker: Literal["customer", "bot"] = "customer"


class BotHandoffRequested(EventData):
    conversation_id: EntityId
    customer_id: EntityId
    reason: ShortText
    transcript: list[TranscriptLine] = Field(default_factory=list, max_length=500)
    tried: list[ShortText] = Field(default_factory=list, max_length=50)


class AgentStatusChanged(EventData):
    agent_id: EntityId
    status: Literal["available", "busy", "offline"]


EVENT_TYPES: dict[str, type[EventData]] = {
    "ticket.created": TicketCreated,
    "ticket.updated": TicketUpdated,
    "ticket.solved": TicketSolved,
    "ticket.reopened": TicketReopened,
    "contact.received": ContactReceived,
    "survey.responded": SurveyResponded,
    "sentiment.scored": SentimentScored,
    "journey.stage_changed": JourneyStageChanged,
    "sla.breached": SlaBreached,
    "case.escalated": CaseEscalated,
    "bot.turn": BotTurn,
    "bot.handoff_requested": BotHandoffRequested,
    "agent.status_changed": AgentStatusChanged,
}


def parse_event_data(event_type: str, data: Any) -> EventData:
    """Validate `data` for `event_type`; raises KeyError for an unknown type."""
    return EVENT_TYPES[event_type].model_validate(data)


def event_schemas() -> dict[str, dict[str, Any]]:
    return {name: model.model_json_schema() for name, model in EVENT_TYPES.items()}


# The entity each type is about: its `subject` when the sender gives none, and the key
# events are delivered in order by.
SUBJECT_FIELD: dict[str, str] = {
    "ticket.created": "ticket_id",
    "ticket.updated": "ticket_id",
    "ticket.solved": "ticket_id",
    "ticket.reopened": "ticket_id",
    "contact.received": "customer_id",
    "survey.responded": "customer_id",
    "sentiment.scored": "customer_id",
    "journey.stage_changed": "customer_id",
    "sla.breached": "ticket_id",
    "case.escalated": "ticket_id",
    "bot.turn": "conversation_id",
    "bot.handoff_requested": "conversation_id",
    "agent.status_changed": "agent_id",
}


def subject_of(event_type: str, data: EventData) -> str:
    """The entity an event is about, from its data."""
    value = getattr(data, SUBJECT_FIELD[event_type])
    assert isinstance(value, str)
    return value


class EventEnvelope(BaseModel):
    """An accepted event as workflows receive it (the `event` signal's argument).

    `id` + `source` identify it; a workflow remembers the ids it has seen and ignores a
    repeat. `data` is the type's data model, dumped to JSON types: validate it again with
    `parse_event_data(type, data)`.
    """

    model_config = ConfigDict(frozen=True)

    id: str
    source: str
    type: str
    subject: str
    time: datetime | None = None
    data: dict[str, Any]

    @property
    def key(self) -> str:
        """`source/id`: unique across senders."""
        return f"{self.source}/{self.id}"


EXAMPLES: dict[str, dict[str, Any]] = {
    "ticket.created": {
        "ticket_id": "T-1042",
        "customer_id": "C-0017",
        "priority": "p2",
        "stage": "support",
        "channel": "email",
        "subject": "Invoice shows wrong VAT",
    },
    "ticket.updated": {"ticket_id": "T-1042", "status": "pending"},
    "ticket.solved": {"ticket_id": "T-1042", "solved_by": "agent:ana"},
    "ticket.reopened": {"ticket_id": "T-1042", "customer_id": "C-0017"},
    "contact.received": {"customer_id": "C-0017", "channel": "phone", "ticket_id": "T-1042"},
    "survey.responded": {
        "customer_id": "C-0017",
        "survey": "csat",
        "score": 1,
        "scale": 5,
        "comment": "Third time I ask.",
        "ticket_id": "T-1042",
    },
    "sentiment.scored": {"customer_id": "C-0017", "score": -0.8, "ticket_id": "T-1042"},
    "journey.stage_changed": {
        "customer_id": "C-0017",
        "from_stage": "onboarding",
        "to_stage": "adoption",
    },
    "sla.breached": {
        "ticket_id": "T-1042",
        "customer_id": "C-0017",
        "sla": "first_response",
        "priority": "p2",
        "stage": "support",
        "budget_seconds": 7200,
        "breached_at": "2026-11-23T11:14:00Z",
        "policy": "support-standard@1",
    },
    "case.escalated": {
        "ticket_id": "T-1042",
        "customer_id": "C-0017",
        "priority": "p2",
        "stage": "renewal",
        "policy": "renewal@1",
        "step": "level-2-cycle-0",
        "level": 2,
    },
    "bot.turn": {
        "conversation_id": "CONV-88",
        "customer_id": "C-0017",
        "text": "I want to talk to a person",
        "intent": "human_agent",
        "confidence": 0.42,
        "sentiment": -0.3,
    },
    "bot.handoff_requested": {
        "conversation_id": "CONV-88",
        "customer_id": "C-0017",
        "reason": "customer asks",
        "transcript": [{"from": "customer", "text": "I want to talk to a person"}],
        "tried": ["faq:refunds"],
    },
    "agent.status_changed": {"agent_id": "A-007", "status": "available"},
}


def event_schemas_with_examples() -> dict[str, dict[str, Any]]:
    """Every type's JSON Schema, each with its example."""
    schemas = event_schemas()
    for name, schema in schemas.items():
        schema["examples"] = [EXAMPLES[name]]
    return schemas
