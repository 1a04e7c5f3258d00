"""The app database: definition registry, ledger, outbox and the sandbox backends' tables."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    Numeric,
    String,
    Text,
    UniqueConstraint,
    func,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from store.types import UtcDateTime, utcnow

# Explicit constraint names so migrations are identical on SQLite and PostgreSQL.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

# BigInteger ids that are still SQLite's rowid alias (autoincrement) there.
BigId = BigInteger().with_variant(Integer(), "sqlite")


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {datetime: UtcDateTime(), dict[str, Any]: JSON(), list[Any]: JSON()}


# --- engine state -------------------------------------------------------------------------


class DefinitionVersion(Base):
    """One immutable, deployed version of a definition; runs are pinned to one of these."""

    __tablename__ = "definition_versions"
    __table_args__ = (
        UniqueConstraint("name", "version", name="uq_definition_versions_name_version"),
        UniqueConstraint("name", "content_hash", name="uq_definition_versions_name_hash"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(200))
    kind: Mapped[str] = mapped_column(String(32), index=True)
    version: Mapped[int] = mapped_column(Integer)
    content_hash: Mapped[str] = mapped_column(String(64))
    body: Mapped[dict[str, Any]]
    source: Mapped[str | None] = mapped_column(String(1000))
    deployed_by: Mapped[str | None] = mapped_column(String(200))
    deployed_at: Mapped[datetime] = mapped_column(default=utcnow)


class LedgerEntry(Base):
    """The append-only audit trail: one row per workflow step."""

    __tablename__ = "ledger_entries"
    __table_args__ = (
        UniqueConstraint("idempotency_key", name="uq_ledger_entries_idempotency_key"),
        Index("ix_ledger_entries_workflow_id_at", "workflow_id", "at"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    idempotency_key: Mapped[str] = mapped_column(String(400))
    workflow_id: Mapped[str] = mapped_column(String(300))
    run_id: Mapped[str | None] = mapped_column(String(64))
    kind: Mapped[str] = mapped_column(String(32))
    subject: Mapped[str | None] = mapped_column(String(200), index=True)
    step: Mapped[str] = mapped_column(String(200))
    detail: Mapped[dict[str, Any]] = mapped_column(default=dict)
    definition: Mapped[str | None] = mapped_column(String(250))
    at: Mapped[datetime] = mapped_column(default=utcnow, doc="when it happened or fell due")
    # A step caught up after a worker outage is written later than it fell due; both count.
    written_at: Mapped[datetime] = mapped_column(
        default=utcnow, server_default=func.now(), doc="when the row was written"
    )


class OutboxEntry(Base):
    """One row per external effect; the idempotency key makes a retried activity act once."""

    __tablename__ = "outbox"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    idempotency_key: Mapped[str] = mapped_column(String(400), unique=True)
    system: Mapped[str] = mapped_column(String(32))
    operation: Mapped[str] = mapped_column(String(64))
    backend: Mapped[str] = mapped_column(String(32))
    status: Mapped[str] = mapped_column(String(16), default="pending")
    result: Mapped[dict[str, Any] | None]
    error: Mapped[str | None] = mapped_column(Text)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    completed_at: Mapped[datetime | None]


class InboxEvent(Base):
    """One accepted event (unique by source + id): where it went, when, and with what outcome.

    status: `accepted` (in the inbox, not yet routed), `pending` (routing waits for Temporal),
    `delivered`, `rejected` (a workflow or the routing refused it; `outcome` says why).
    """

    __tablename__ = "inbox_events"
    __table_args__ = (
        UniqueConstraint("source", "event_id", name="uq_inbox_events_source_event_id"),
        Index("ix_inbox_events_status_id", "status", "id"),
        Index("ix_inbox_events_webhook_id", "webhook_id"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    source: Mapped[str] = mapped_column(String(100))
    event_id: Mapped[str] = mapped_column(String(200))
    type: Mapped[str] = mapped_column(String(64))
    subject: Mapped[str] = mapped_column(String(200), index=True)
    time: Mapped[datetime | None]
    data: Mapped[dict[str, Any]]
    status: Mapped[str] = mapped_column(String(16), default="accepted")
    outcome: Mapped[str | None] = mapped_column(Text)
    target: Mapped[str | None] = mapped_column(String(300))
    webhook_id: Mapped[str | None] = mapped_column(String(200))
    webhook_timestamp: Mapped[str | None] = mapped_column(String(32))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    received_at: Mapped[datetime] = mapped_column(default=utcnow)
    delivered_at: Mapped[datetime | None]


class ActivityFailure(Base):
    """The last failed attempt of an activity still being retried (`retrying`) or given up
    (`failed`), written by the worker's interceptor: the index `opsflow stuck` reads instead
    of describing every open run. A later successful attempt deletes its row."""

    __tablename__ = "activity_failures"
    __table_args__ = (
        UniqueConstraint(
            "workflow_id", "run_id", "activity_id", name="uq_activity_failures_activity"
        ),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    workflow_id: Mapped[str] = mapped_column(String(300))
    run_id: Mapped[str] = mapped_column(String(64))
    activity_id: Mapped[str] = mapped_column(String(200))
    activity_type: Mapped[str] = mapped_column(String(200))
    attempt: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(16), index=True)
    error: Mapped[str] = mapped_column(Text)
    failed_at: Mapped[datetime] = mapped_column(default=utcnow)


class RolloutExposure(Base):
    """One customer exposed to a change in one attempt, under the phase that first exposed
    them: written by the apply activity with its effect, read by revert, rollback notices and
    recovery actions (never the CRM's current state)."""

    __tablename__ = "rollout_exposures"
    __table_args__ = (
        UniqueConstraint("change_id", "attempt", "customer_id", name="uq_rollout_exposures_member"),
        Index("ix_rollout_exposures_phase", "change_id", "attempt", "phase", "customer_id"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    change_id: Mapped[str] = mapped_column(String(64))
    attempt: Mapped[int] = mapped_column(Integer)
    phase: Mapped[int] = mapped_column(Integer)
    customer_id: Mapped[str] = mapped_column(String(64))
    exposed_at: Mapped[datetime] = mapped_column(default=utcnow)
    reverted_at: Mapped[datetime | None]


class OnCallOverride(Base):
    """A person put on call over a schedule's layers for a while (`opsflow oncall override`):
    `oncall show` and the notify activity apply every override of the schedule, a later one
    winning over an earlier one where they overlap."""

    __tablename__ = "oncall_overrides"
    __table_args__ = (Index("ix_oncall_overrides_schedule_ends_at", "schedule", "ends_at"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    schedule: Mapped[str] = mapped_column(String(200))
    person: Mapped[str] = mapped_column(String(320))
    starts_at: Mapped[datetime]
    ends_at: Mapped[datetime]
    created_by: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class RoundRobinCounter(Base):
    """How many cases an escalation level with `round_robin: true` has notified: the next
    case's notification goes to target number `turns` modulo the level's targets."""

    __tablename__ = "round_robin_counters"

    definition: Mapped[str] = mapped_column(String(200), primary_key=True)
    level: Mapped[str] = mapped_column(String(100), primary_key=True)
    turns: Mapped[int] = mapped_column(Integer, default=0)


class RoundRobinPick(Base):
    """The target a round-robin notification picked, by its idempotency key: a retried
    activity sends to the same person, and the counter moves once per notification."""

    __tablename__ = "round_robin_picks"

    idempotency_key: Mapped[str] = mapped_column(String(400), primary_key=True)
    target: Mapped[str] = mapped_column(String(320))
    picked_at: Mapped[datetime] = mapped_column(default=utcnow)


# --- sandbox backends ---------------------------------------------------------------------


class SandboxCustomer(Base):
    __tablename__ = "sandbox_customers"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    email: Mapped[str] = mapped_column(String(320))
    phone: Mapped[str | None] = mapped_column(String(40))
    segment: Mapped[str] = mapped_column(String(40), index=True)
    tier: Mapped[str] = mapped_column(String(20), index=True)
    language: Mapped[str] = mapped_column(String(10))
    timezone: Mapped[str] = mapped_column(String(64))
    country: Mapped[str] = mapped_column(String(2))
    lifetime_value: Mapped[Decimal] = mapped_column(Numeric(14, 2))
    account_manager: Mapped[str | None] = mapped_column(String(64))
    journey_stage: Mapped[str] = mapped_column(String(40))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class SandboxAgent(Base):
    __tablename__ = "sandbox_agents"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    email: Mapped[str] = mapped_column(String(320))
    team: Mapped[str] = mapped_column(String(64))
    skills: Mapped[list[Any]] = mapped_column(default=list)
    languages: Mapped[list[Any]] = mapped_column(default=list)
    status: Mapped[str] = mapped_column(String(16), default="offline")
    capacity: Mapped[int] = mapped_column(Integer, default=2)
    active_conversations: Mapped[int] = mapped_column(Integer, default=0)
    status_since: Mapped[datetime] = mapped_column(default=utcnow)


class SandboxWaiting(Base):
    """A handoff waiting for a free agent: first come, first served within a priority; a
    released agent wakes the longest-waiting conversation it can take."""

    __tablename__ = "sandbox_waiting"
    __table_args__ = (Index("ix_sandbox_waiting_order", "priority", "since", "conversation_id"),)

    conversation_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    workflow_id: Mapped[str] = mapped_column(String(200))
    queue: Mapped[str] = mapped_column(String(64))
    priority: Mapped[str] = mapped_column(String(10))
    skills: Mapped[list[Any]] = mapped_column(default=list)
    languages: Mapped[list[Any]] = mapped_column(default=list)
    exclude: Mapped[list[Any]] = mapped_column(default=list)
    since: Mapped[datetime]
    seen_at: Mapped[datetime] = mapped_column(default=utcnow)


class SandboxQueue(Base):
    __tablename__ = "sandbox_queues"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    skills: Mapped[list[Any]] = mapped_column(default=list)
    languages: Mapped[list[Any]] = mapped_column(default=list)
    timezone: Mapped[str] = mapped_column(String(64))
    hours: Mapped[str] = mapped_column(String(64))


class SandboxTicket(Base):
    __tablename__ = "sandbox_tickets"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    customer_id: Mapped[str] = mapped_column(String(64), index=True)
    subject: Mapped[str] = mapped_column(String(500))
    status: Mapped[str] = mapped_column(String(20), default="new")
    priority: Mapped[str] = mapped_column(String(10), default="p3")
    stage: Mapped[str | None] = mapped_column(String(40))
    channel: Mapped[str | None] = mapped_column(String(20))
    queue: Mapped[str | None] = mapped_column(String(64))
    assignee: Mapped[str | None] = mapped_column(String(64))
    tags: Mapped[list[Any]] = mapped_column(default=list)
    due_at: Mapped[datetime | None]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)

    comments: Mapped[list[SandboxTicketComment]] = relationship(
        back_populates="ticket", order_by="SandboxTicketComment.id"
    )


class SandboxTicketComment(Base):
    __tablename__ = "sandbox_ticket_comments"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    ticket_id: Mapped[str] = mapped_column(ForeignKey("sandbox_tickets.id"), index=True)
    body: Mapped[str] = mapped_column(Text)
    public: Mapped[bool] = mapped_column(Boolean, default=False)
    author: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    ticket: Mapped[SandboxTicket] = relationship(back_populates="comments")


class SandboxNotification(Base):
    __tablename__ = "sandbox_notifications"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    message_id: Mapped[str] = mapped_column(String(100), unique=True)
    channel: Mapped[str] = mapped_column(String(20))
    recipient: Mapped[str] = mapped_column(String(320))
    subject: Mapped[str | None] = mapped_column(String(500))
    body: Mapped[str] = mapped_column(Text)
    language: Mapped[str | None] = mapped_column(String(10))
    template: Mapped[str | None] = mapped_column(String(200))
    idempotency_key: Mapped[str | None] = mapped_column(String(400), index=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class SandboxCrmNote(Base):
    __tablename__ = "sandbox_crm_notes"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    customer_id: Mapped[str] = mapped_column(String(64), index=True)
    body: Mapped[str] = mapped_column(Text)
    author: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class SandboxCredit(Base):
    __tablename__ = "sandbox_credits"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    customer_id: Mapped[str] = mapped_column(String(64), index=True)
    amount: Mapped[Decimal] = mapped_column(Numeric(12, 2))
    currency: Mapped[str] = mapped_column(String(3))
    reason: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class SandboxFlag(Base):
    """A flag in the sandbox flag store: the thing a rollout changes."""

    __tablename__ = "sandbox_flags"

    key: Mapped[str] = mapped_column(String(200), primary_key=True)
    description: Mapped[str] = mapped_column(Text, default="")
    default_value: Mapped[str] = mapped_column(String(200), default="off")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class SandboxFlagExposure(Base):
    """A customer exposed to a flag's new value by a change; reverted_at set on rollback."""

    __tablename__ = "sandbox_flag_exposures"
    __table_args__ = (
        UniqueConstraint(
            "flag_key", "customer_id", "change_id", name="uq_sandbox_flag_exposures_member"
        ),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    flag_key: Mapped[str] = mapped_column(ForeignKey("sandbox_flags.key"), index=True)
    customer_id: Mapped[str] = mapped_column(String(64))
    change_id: Mapped[str] = mapped_column(String(100), index=True)
    value: Mapped[str] = mapped_column(String(200))
    applied_at: Mapped[datetime] = mapped_column(default=utcnow)
    reverted_at: Mapped[datetime | None]


class SandboxMetricSample(Base):
    """One observation of a customer-experience metric for one customer."""

    __tablename__ = "sandbox_metric_samples"
    __table_args__ = (Index("ix_sandbox_metric_samples_metric_at", "metric", "at"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    metric: Mapped[str] = mapped_column(String(64))
    customer_id: Mapped[str] = mapped_column(String(64), index=True)
    value: Mapped[float]
    at: Mapped[datetime] = mapped_column(default=utcnow)
