"""The inputs and outputs of the integration activities (what workflows send and receive);
the CRM profile is activities/customer_contracts.py, each kind's own in activities/*_contracts.py.

Personal data stays out of workflow histories: profiles carry no email or phone, and a
notification to a customer names them as `customer:<id>`; the activity looks the address up.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from definitions.events import EventEnvelope

IdempotencyKey = Annotated[
    str,
    Field(
        min_length=1,
        max_length=400,
        description="workflow id + step, computed by the workflow; a retry with the same key "
        "returns the recorded result instead of acting again",
    ),
]
Identifier = Annotated[str, StringConstraints(min_length=1, max_length=64, pattern=r"^[\w.:@-]+$")]
Priority = Literal["p1", "p2", "p3", "p4"]
TicketStatus = Literal["new", "open", "pending", "on_hold", "solved", "closed"]
Channel = Literal["email", "chat", "pager", "webhook"]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# --- crm ------------------------------------------------------------------------------------


class GetCustomer(_Model):
    customer_id: Identifier


class CohortSpec(_Model):
    """Which customers a phase reaches: a filter, then a stable percentage of the matches.

    A customer's place is a stable hash of (customer id, seed) in [0, 100): the same customer
    stays in (or out of) the cohort on every call, and anyone in the 5% cohort is also in the
    25% cohort of the same seed."""

    seed: str = Field(min_length=1, max_length=200)
    percent: float = Field(gt=0, le=100)
    segments: list[str] = Field(default_factory=list, description="empty: every segment")
    tiers: list[str] = Field(default_factory=list, description="empty: every tier")
    languages: list[str] = Field(default_factory=list, description="empty: every language")
    condition: str | None = Field(
        None,
        max_length=2000,
        description="a CEL expression over `customer`, e.g. "
        "customer.lifetime_value > 1000.0 && customer.journey_stage != 'at_risk'",
    )


class SelectCohort(_Model):
    cohort: CohortSpec
    max_ids: int = Field(1000, ge=0, le=10_000, description="ids returned (the size is exact)")


class Cohort(_Model):
    size: int
    eligible: int = Field(description="customers that match the filter before the percentage")
    customer_ids: list[str] = Field(description="the first max_ids members, in id order")
    truncated: bool


class AddNote(_Model):
    idempotency_key: IdempotencyKey
    customer_id: Identifier
    body: str = Field(min_length=1, max_length=20_000)
    author: str = Field("opsflow", max_length=200)


class NoteAdded(_Model):
    note_id: str


class ApplyCredit(_Model):
    idempotency_key: IdempotencyKey
    customer_id: Identifier
    amount: Decimal = Field(gt=0, le=Decimal("100000"), decimal_places=2)
    currency: str = Field(pattern=r"^[A-Z]{3}$")
    reason: str = Field(min_length=1, max_length=2000)


class CreditApplied(_Model):
    credit_id: str
    amount: Decimal
    currency: str


# --- ticketing ---------------------------------------------------------------------------------


class CreateTicket(_Model):
    idempotency_key: IdempotencyKey
    customer_id: Identifier
    subject: str = Field(min_length=1, max_length=500)
    description: str = Field("", max_length=60_000, description="the first, internal comment")
    priority: Priority = "p3"
    queue: str | None = Field(None, max_length=64)
    assignee: str | None = Field(None, max_length=64)
    tags: list[str] = Field(default_factory=list, max_length=50)
    stage: str | None = Field(None, max_length=40)
    channel: str | None = Field(None, max_length=20)
    due_at: datetime | None = Field(
        None, description="when the work is due (a callback's time); in Zendesk a `task`"
    )


class GetTicket(_Model):
    ticket_id: Identifier


class Ticket(_Model):
    id: str
    customer_id: str | None
    subject: str
    status: str
    priority: str
    queue: str | None = None
    assignee: str | None = None
    tags: list[str] = Field(default_factory=list)
    stage: str | None = None
    due_at: datetime | None = None
    created_at: datetime | None = None
    updated_at: datetime | None = None


class UpdateTicket(_Model):
    """Only the fields given change; `tags` replaces the set, `add_tags` adds to it."""

    idempotency_key: IdempotencyKey
    ticket_id: Identifier
    queue: str | None = Field(None, max_length=64)
    assignee: str | None = Field(None, max_length=64)
    priority: Priority | None = None
    status: TicketStatus | None = None
    stage: str | None = Field(None, max_length=40)
    tags: list[str] | None = Field(None, max_length=50)
    add_tags: list[str] = Field(default_factory=list, max_length=50)


class AddComment(_Model):
    idempotency_key: IdempotencyKey
    ticket_id: Identifier
    body: str = Field(min_length=1, max_length=60_000)
    public: bool = False
    author: str = Field("opsflow", max_length=200)


class CommentAdded(_Model):
    comment_id: str


# --- notify ----------------------------------------------------------------------------------


class SendMessage(_Model):
    idempotency_key: IdempotencyKey
    channel: Channel
    recipient: str = Field(
        min_length=1,
        max_length=320,
        description="`customer:<id>` (address looked up in the CRM), an email address, a chat "
        "channel, a pager service or a webhook name",
    )
    template: str = Field(min_length=1, max_length=120)
    language: str | None = Field(
        None, max_length=20, description="default: the customer's language, else English"
    )
    context: dict[str, Any] = Field(default_factory=dict)
    severity: Literal["critical", "error", "warning", "info"] = "warning"
    dedup_key: str | None = Field(
        None,
        min_length=1,
        max_length=255,
        description="the alert a page belongs to (PagerDuty `dedup_key`), the same for every "
        "page of one case to one recipient; default: the idempotency key",
    )


class MessageSent(_Model):
    message_id: str
    channel: Channel
    backend: str
    language: str


class PagerEvent(_Model):
    """Acknowledge or resolve the alert that pages with `dedup_key` opened."""

    idempotency_key: IdempotencyKey
    dedup_key: str = Field(min_length=1, max_length=255)
    action: Literal["acknowledge", "resolve"]


class StartDefinition(_Model):
    """Start the named (recovery) definition's workflow for the event's customer:
    signal-with-start `customer-<id>`; the event's fixed id makes a repeat count once."""

    definition: str = Field(min_length=1, max_length=63)
    event: EventEnvelope


class PagerEventSent(_Model):
    backend: str
    followed: bool = Field(description="False: the pager backend keeps no alerts to follow")


# --- changes -----------------------------------------------------------------------------------


class ApplyChange(_Model):
    idempotency_key: IdempotencyKey
    change_id: Identifier
    flag_key: str = Field(min_length=1, max_length=200)
    value: str = Field("on", max_length=200)
    cohort: CohortSpec


class ChangeApplied(_Model):
    change_id: str
    exposed: int = Field(description="customers newly exposed by this call")
    total_exposed: int = Field(description="customers exposed to this change now")


class RevertChange(_Model):
    """Revert a change: all of it, or (with `cohort`) one phase's own customers.

    A phase's own customers are the members of its cohort minus the members of the earlier
    phases' cohorts (`earlier`): rolling back phase by phase in reverse order reverts each
    customer in the phase that first exposed them, and the earlier phases stay exposed
    until their own turn."""

    idempotency_key: IdempotencyKey
    change_id: Identifier
    flag_key: str = Field(min_length=1, max_length=200)
    cohort: CohortSpec | None = Field(
        None, description="the phase's cohort; None reverts every customer of the change"
    )
    earlier: list[CohortSpec] = Field(
        default_factory=list,
        description="earlier phases' cohorts: their customers stay exposed (with `cohort` only)",
    )


class ChangeReverted(_Model):
    change_id: str
    reverted: int


# --- metrics ----------------------------------------------------------------------------------


class MetricCohort(_Model):
    """The customers a reading covers: the exposed customers of a change, or a filter;
    `exclude_change_id` leaves out the customers exposed to that change (a rollout's
    baseline: the customers not exposed yet)."""

    change_id: str | None = Field(None, max_length=64)
    segments: list[str] = Field(default_factory=list)
    tiers: list[str] = Field(default_factory=list)
    languages: list[str] = Field(default_factory=list)
    exclude_change_id: str | None = Field(
        None, max_length=64, description="leave out the customers exposed to this change"
    )

    def key(self) -> str:
        """A stable text naming this cohort (used to seed sandbox readings and PromQL)."""
        exclude = [f"not_change={self.exclude_change_id}"] if self.exclude_change_id else []
        if self.change_id is not None:
            return ";".join([f"change={self.change_id}", *exclude])
        parts = [
            f"{name}={','.join(sorted(values))}"
            for name, values in (
                ("segments", self.segments),
                ("tiers", self.tiers),
                ("languages", self.languages),
            )
            if values
        ]
        return ";".join(parts + exclude) or "all"


class ReadMetric(_Model):
    metric: str = Field(min_length=1, max_length=64, pattern=r"^[a-z][a-z0-9_]*$")
    cohort: MetricCohort = Field(default_factory=MetricCohort)
    window_start: datetime
    window_end: datetime


class MetricReading(_Model):
    metric: str
    value: float | None = Field(description="None when there is no data (sample_size 0)")
    sample_size: int
    backend: str


class LedgerAppend(BaseModel):
    idempotency_key: str = Field(description="workflow id + step; a retry appends nothing more")
    workflow_id: str
    run_id: str | None = None
    kind: str
    subject: str | None = None
    step: str
    detail: dict[str, Any] = Field(default_factory=dict)
    definition: str | None = None
    at: datetime | None = Field(None, description="when it happened: the workflow's time")


class LedgerBatch(BaseModel):
    entries: list[LedgerAppend] = Field(min_length=1, max_length=1000)
