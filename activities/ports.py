"""The typed ports each system's activities call; adapters/ holds one implementation per vendor.

Reads take plain arguments; effects take an `Effect` (the idempotency key, and the outbox's
transaction for backends inside the app database) and must pass the key on to vendors that
deduplicate by it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol, runtime_checkable

from activities.customer_contracts import CustomerProfile
from activities.handoff_contracts import (
    AgentReleased,
    AgentView,
    OpenTickets,
    PickAgent,
    QueueInfo,
    QueueRequest,
    ReleaseAgent,
    Reservation,
    TicketBrief,
)
from activities.models import (
    AddComment,
    AddNote,
    ApplyChange,
    ApplyCredit,
    ChangeApplied,
    ChangeReverted,
    Channel,
    CohortSpec,
    CommentAdded,
    CreateTicket,
    CreditApplied,
    MetricCohort,
    MetricReading,
    NoteAdded,
    RevertChange,
    Ticket,
    UpdateTicket,
)
from activities.outbox import Effect


@dataclass(frozen=True)
class Contact:
    """How to reach a customer: personal data, never returned to a workflow or logged."""

    customer_id: str
    name: str
    email: str | None
    phone: str | None
    language: str


@dataclass(frozen=True)
class OutgoingMessage:
    channel: Channel
    recipient: str
    subject: str | None
    body: str
    language: str
    template: str
    severity: str
    customer_id: str | None = None
    dedup_key: str | None = None
    """The alert a page belongs to (pager backends); None: the effect's idempotency key."""


@dataclass(frozen=True)
class CohortMembers:
    customer_ids: list[str]
    eligible: int
    """Customers matching the filter, before the percentage."""


class Backend(Protocol):
    @property
    def name(self) -> str: ...

    @property
    def in_app_database(self) -> bool: ...


class CrmPort(Backend, Protocol):
    async def get_customer(self, customer_id: str) -> CustomerProfile: ...

    async def contact(self, customer_id: str) -> Contact: ...

    async def cohort_members(self, spec: CohortSpec) -> CohortMembers:
        """Every member of the cohort, in id order (ids only: no personal data)."""
        ...

    async def add_note(self, effect: Effect, request: AddNote) -> NoteAdded: ...


class CreditsPort(Backend, Protocol):
    async def apply_credit(self, effect: Effect, request: ApplyCredit) -> CreditApplied: ...


class TicketingPort(Backend, Protocol):
    async def create_ticket(self, effect: Effect, request: CreateTicket) -> Ticket: ...

    async def get_ticket(self, ticket_id: str) -> Ticket: ...

    async def update_ticket(self, effect: Effect, request: UpdateTicket) -> Ticket: ...

    async def add_comment(self, effect: Effect, request: AddComment) -> CommentAdded: ...


class NotifierPort(Backend, Protocol):
    async def send(self, effect: Effect, message: OutgoingMessage) -> str:
        """Deliver the message; return the message id."""
        ...


@runtime_checkable
class OwnsCaseTickets(Protocol):
    """A ticketing backend whose tickets opsflow itself keeps (the sandbox): a case opened
    for a ticket it has not seen makes that ticket exist there first, as the ticket a case
    is opened for exists in a real ticketing system (whose tickets are its own)."""

    async def ensure_ticket(
        self,
        ticket_id: str,
        *,
        customer_id: str,
        subject: str,
        priority: str = "p3",
        stage: str | None = None,
        channel: str | None = None,
    ) -> bool:
        """Make the ticket exist; True when it was created."""
        ...


class ChangesPort(Backend, Protocol):
    async def apply(
        self, effect: Effect, request: ApplyChange, members: Sequence[str]
    ) -> ChangeApplied: ...

    async def revert(
        self, effect: Effect, request: RevertChange, members: Sequence[str] | None = None
    ) -> ChangeReverted:
        """Revert `members` (one phase's own customers), or the whole change when None."""
        ...


class MetricsPort(Backend, Protocol):
    async def read(
        self, metric: str, cohort: MetricCohort, start: datetime, end: datetime
    ) -> MetricReading: ...


class PresencePort(Backend, Protocol):
    """Who can take a conversation: agents, their status and load, queues and the line.

    Answers that free an agent name the workflows waiting in line it can take, first first;
    the activity wakes them."""

    async def list_agents(self) -> list[AgentView]: ...

    async def set_agent_status(self, agent_id: str, status: str) -> tuple[AgentView, list[str]]:
        """Set the status; also the workflows first in line the agent can now take."""
        ...

    async def queue_info(self, request: QueueRequest) -> QueueInfo: ...

    async def reserve_agent(self, effect: Effect, request: PickAgent) -> Reservation:
        """Take one slot of the best free agent (or the conversation's place in line)."""
        ...

    async def release_agent(self, effect: Effect, request: ReleaseAgent) -> AgentReleased: ...

    async def leave_line(self, conversation_id: str) -> None: ...

    async def open_tickets(self, request: OpenTickets) -> list[TicketBrief]: ...
