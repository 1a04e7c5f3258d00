"""The sandbox backends: the app database's sandbox tables behave like a CRM, a ticketing
system, a notification outbox, a flag store and a metrics source.

Effects run inside the outbox's transaction (`Effect.session`), so a sandbox effect and its
outbox record commit together: exactly once, even when a worker dies mid-attempt.
"""

from __future__ import annotations

import hashlib
import math
import random
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any

from sqlalchemy import Select, func, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from activities.cohorts import Condition, place
from activities.customer_contracts import CustomerProfile
from activities.errors import invalid, not_found
from activities.heartbeat import heartbeat
from activities.models import (
    AddComment,
    AddNote,
    ApplyChange,
    ApplyCredit,
    ChangeApplied,
    ChangeReverted,
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
from activities.people import PersonContact
from activities.ports import CohortMembers, Contact, OutgoingMessage
from store.db import transaction
from store.models import (
    SandboxAgent,
    SandboxCredit,
    SandboxCrmNote,
    SandboxCustomer,
    SandboxFlag,
    SandboxFlagExposure,
    SandboxMetricSample,
    SandboxNotification,
    SandboxTicket,
    SandboxTicketComment,
)
from store.types import utcnow

BACKEND = "sandbox"
_BATCH = 5_000

Sessions = async_sessionmaker[AsyncSession]


def _short_id(prefix: str, key: str, length: int = 10) -> str:
    """A stable id derived from the idempotency key: the same effect gets the same id."""
    return f"{prefix}-{hashlib.sha256(key.encode()).hexdigest()[:length].upper()}"


@asynccontextmanager
async def _session(sessions: Sessions, effect: Effect | None = None) -> AsyncIterator[AsyncSession]:
    """The outbox's transaction when there is one, otherwise a transaction of our own."""
    if effect is not None and effect.session is not None:
        yield effect.session
        return
    async with transaction(sessions) as session:
        yield session


def _insert(session: AsyncSession) -> Any:
    return pg_insert if session.get_bind().dialect.name == "postgresql" else sqlite_insert


class _SandboxBackend:
    name = BACKEND
    in_app_database = True

    def __init__(self, sessions: Sessions) -> None:
        self._sessions = sessions


# --- CRM --------------------------------------------------------------------------------------


def _profile(row: SandboxCustomer) -> CustomerProfile:
    return CustomerProfile(
        id=row.id,
        name=row.name,
        tier=row.tier,
        segment=row.segment,
        lifetime_value=row.lifetime_value,
        language=row.language,
        timezone=row.timezone,
        country=row.country,
        account_manager=row.account_manager,
        journey_stage=row.journey_stage,
    )


def _filtered(
    statement: Select[Any], segments: Sequence[str], tiers: Sequence[str], languages: Sequence[str]
) -> Select[Any]:
    if segments:
        statement = statement.where(SandboxCustomer.segment.in_(segments))
    if tiers:
        statement = statement.where(SandboxCustomer.tier.in_(tiers))
    if languages:
        statement = statement.where(SandboxCustomer.language.in_(languages))
    return statement


# Columns a CEL condition may read (no email or phone: conditions are not for personal data).
_CONDITION_COLUMNS = (
    SandboxCustomer.id,
    SandboxCustomer.name,
    SandboxCustomer.segment,
    SandboxCustomer.tier,
    SandboxCustomer.language,
    SandboxCustomer.timezone,
    SandboxCustomer.country,
    SandboxCustomer.lifetime_value,
    SandboxCustomer.account_manager,
    SandboxCustomer.journey_stage,
)


class SandboxCrm(_SandboxBackend):
    async def get_customer(self, customer_id: str) -> CustomerProfile:
        async with self._sessions() as session:
            row = await session.get(SandboxCustomer, customer_id)
        if row is None:
            raise not_found(f"customer {customer_id!r}")
        return _profile(row)

    async def contact(self, customer_id: str) -> Contact:
        async with self._sessions() as session:
            row = await session.get(SandboxCustomer, customer_id)
        if row is None:
            raise not_found(f"customer {customer_id!r}")
        return Contact(row.id, row.name, row.email, row.phone, row.language)

    async def person(self, person: str) -> PersonContact | None:
        """The people directory (activities/people.py): the sandbox's agents, found by id or
        by email address."""
        async with self._sessions() as session:
            row = await session.get(SandboxAgent, person)
            if row is None and "@" in person:
                row = await session.scalar(
                    select(SandboxAgent).where(func.lower(SandboxAgent.email) == person.lower())
                )
        return None if row is None else PersonContact(row.id, row.name, row.email)

    async def cohort_members(self, spec: CohortSpec) -> CohortMembers:
        """Stream the filtered customers in id order; the SQL filter does the heavy lifting,
        the hash and the CEL condition (only for customers inside the percentage) run here."""
        condition = Condition(spec.condition) if spec.condition else None
        columns = _CONDITION_COLUMNS if condition else (SandboxCustomer.id,)
        statement = _filtered(
            select(*columns).order_by(SandboxCustomer.id),
            spec.segments,
            spec.tiers,
            spec.languages,
        )
        members: list[str] = []
        eligible = 0
        async with self._sessions() as session:
            result = await session.stream(statement.execution_options(yield_per=_BATCH))
            async for partition in result.partitions(_BATCH):
                for row in partition:
                    customer_id: str = row[0]
                    inside = place(customer_id, spec.seed) < spec.percent
                    if condition is None:
                        eligible += 1
                        if inside:
                            members.append(customer_id)
                        continue
                    # CEL is the slow part: evaluate it only where the answer matters.
                    if not inside:
                        continue
                    if condition.matches(row._asdict()):
                        members.append(customer_id)
                heartbeat()
        if condition is not None:
            # With a condition, `eligible` is estimated from the sampled share that matched.
            eligible = round(len(members) * 100.0 / spec.percent)
        return CohortMembers(members, eligible)

    async def add_note(self, effect: Effect, request: AddNote) -> NoteAdded:
        async with _session(self._sessions, effect) as session:
            if await session.get(SandboxCustomer, request.customer_id) is None:
                raise not_found(f"customer {request.customer_id!r}")
            note = SandboxCrmNote(
                customer_id=request.customer_id, body=request.body, author=request.author
            )
            session.add(note)
            await session.flush()
            return NoteAdded(note_id=str(note.id))


class SandboxCredits(_SandboxBackend):
    async def apply_credit(self, effect: Effect, request: ApplyCredit) -> CreditApplied:
        async with _session(self._sessions, effect) as session:
            if await session.get(SandboxCustomer, request.customer_id) is None:
                raise not_found(f"customer {request.customer_id!r}")
            credit = SandboxCredit(
                customer_id=request.customer_id,
                amount=request.amount,
                currency=request.currency,
                reason=request.reason,
            )
            session.add(credit)
            await session.flush()
            return CreditApplied(
                credit_id=str(credit.id), amount=request.amount, currency=request.currency
            )


# --- ticketing --------------------------------------------------------------------------------


def _ticket(row: SandboxTicket) -> Ticket:
    return Ticket(
        id=row.id,
        customer_id=row.customer_id,
        subject=row.subject,
        status=row.status,
        priority=row.priority,
        queue=row.queue,
        assignee=row.assignee,
        tags=[str(tag) for tag in row.tags],
        stage=row.stage,
        due_at=row.due_at,
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


class SandboxTicketing(_SandboxBackend):
    async def create_ticket(self, effect: Effect, request: CreateTicket) -> Ticket:
        async with _session(self._sessions, effect) as session:
            ticket_id = _short_id("T", effect.idempotency_key, 8)
            existing = await session.get(SandboxTicket, ticket_id)
            if existing is not None:  # same key, same ticket: nothing more to do
                return _ticket(existing)
            now = utcnow()
            row = SandboxTicket(
                id=ticket_id,
                customer_id=request.customer_id,
                subject=request.subject,
                status="new",
                priority=request.priority,
                stage=request.stage,
                channel=request.channel,
                queue=request.queue,
                assignee=request.assignee,
                tags=sorted(set(request.tags)),
                due_at=request.due_at,
                created_at=now,
                updated_at=now,
            )
            session.add(row)
            if request.description:
                session.add(
                    SandboxTicketComment(
                        ticket_id=ticket_id,
                        body=request.description,
                        public=False,
                        author="opsflow",
                        created_at=now,
                    )
                )
            await session.flush()
            return _ticket(row)

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
        """Make ticket `ticket_id` exist, as the ticket a case is opened for exists in a real
        ticketing system; an existing ticket is left as it is. True when it was created."""
        async with transaction(self._sessions) as session:
            now = utcnow()
            result = await session.execute(
                _insert(session)(SandboxTicket)
                .values(
                    id=ticket_id,
                    customer_id=customer_id,
                    subject=subject[:500],
                    status="new",
                    priority=priority,
                    stage=stage,
                    channel=channel[:20] if channel else None,
                    tags=[],
                    created_at=now,
                    updated_at=now,
                )
                .on_conflict_do_nothing(index_elements=["id"])
                .returning(SandboxTicket.id)
            )
            return result.first() is not None

    async def get_ticket(self, ticket_id: str) -> Ticket:
        async with self._sessions() as session:
            row = await session.get(SandboxTicket, ticket_id)
        if row is None:
            raise not_found(f"ticket {ticket_id!r}")
        return _ticket(row)

    async def update_ticket(self, effect: Effect, request: UpdateTicket) -> Ticket:
        async with _session(self._sessions, effect) as session:
            row = await session.get(SandboxTicket, request.ticket_id)
            if row is None:
                raise not_found(f"ticket {request.ticket_id!r}")
            for field in ("queue", "assignee", "priority", "status", "stage"):
                value = getattr(request, field)
                if value is not None:
                    setattr(row, field, value)
            tags = set(request.tags if request.tags is not None else row.tags)
            row.tags = sorted(tags | set(request.add_tags))
            row.updated_at = utcnow()
            await session.flush()
            return _ticket(row)

    async def add_comment(self, effect: Effect, request: AddComment) -> CommentAdded:
        async with _session(self._sessions, effect) as session:
            if await session.get(SandboxTicket, request.ticket_id) is None:
                raise not_found(f"ticket {request.ticket_id!r}")
            comment = SandboxTicketComment(
                ticket_id=request.ticket_id,
                body=request.body,
                public=request.public,
                author=request.author,
            )
            session.add(comment)
            await session.flush()
            return CommentAdded(comment_id=str(comment.id))


# --- notifications ----------------------------------------------------------------------------


class SandboxNotifier(_SandboxBackend):
    """Every channel's messages land in sandbox_notifications (see `opsflow sandbox
    notifications`)."""

    async def send(self, effect: Effect, message: OutgoingMessage) -> str:
        async with _session(self._sessions, effect) as session:
            existing = await session.scalar(
                select(SandboxNotification.message_id).where(
                    SandboxNotification.idempotency_key == effect.idempotency_key
                )
            )
            if existing is not None:
                return existing
            message_id = _short_id("msg", effect.idempotency_key, 16).lower()
            session.add(
                SandboxNotification(
                    message_id=message_id,
                    channel=message.channel,
                    recipient=message.recipient,
                    subject=message.subject,
                    body=message.body,
                    language=message.language,
                    template=message.template,
                    idempotency_key=effect.idempotency_key,
                )
            )
            await session.flush()
            return message_id


# --- changes (the flag store) ---------------------------------------------------------------


class SandboxChanges(_SandboxBackend):
    async def apply(
        self, effect: Effect, request: ApplyChange, members: Sequence[str]
    ) -> ChangeApplied:
        async with _session(self._sessions, effect) as session:
            if await session.get(SandboxFlag, request.flag_key) is None:
                session.add(
                    SandboxFlag(
                        key=request.flag_key,
                        description=f"created by change {request.change_id}",
                    )
                )
                await session.flush()
            before = await _exposed(session, request.change_id, request.flag_key)
            insert = _insert(session)
            now = utcnow()
            for start in range(0, len(members), 1000):
                chunk = members[start : start + 1000]
                # A member exposed before and reverted since is exposed again (only the
                # cohort's members: a retry's first phase must not re-expose later phases).
                await session.execute(
                    update(SandboxFlagExposure)
                    .where(
                        SandboxFlagExposure.change_id == request.change_id,
                        SandboxFlagExposure.flag_key == request.flag_key,
                        SandboxFlagExposure.reverted_at.is_not(None),
                        SandboxFlagExposure.customer_id.in_(chunk),
                    )
                    .values(reverted_at=None, value=request.value, applied_at=now)
                )
                await session.execute(
                    insert(SandboxFlagExposure)
                    .values(
                        [
                            {
                                "flag_key": request.flag_key,
                                "customer_id": customer_id,
                                "change_id": request.change_id,
                                "value": request.value,
                                "applied_at": now,
                            }
                            for customer_id in chunk
                        ]
                    )
                    .on_conflict_do_nothing(index_elements=["flag_key", "customer_id", "change_id"])
                )
                heartbeat(f"exposed {start + len(chunk)} of {len(members)}")
            total = await _exposed(session, request.change_id, request.flag_key)
            return ChangeApplied(
                change_id=request.change_id, exposed=total - before, total_exposed=total
            )

    async def revert(
        self, effect: Effect, request: RevertChange, members: Sequence[str] | None = None
    ) -> ChangeReverted:
        """Set reverted_at on the change's live exposures: all of them, or only `members`'."""
        async with _session(self._sessions, effect) as session:
            live = update(SandboxFlagExposure).where(
                SandboxFlagExposure.change_id == request.change_id,
                SandboxFlagExposure.flag_key == request.flag_key,
                SandboxFlagExposure.reverted_at.is_(None),
            )
            now = utcnow()
            if members is None:
                result = await session.execute(live.values(reverted_at=now))
                return ChangeReverted(change_id=request.change_id, reverted=_rowcount(result))
            reverted = 0
            for start in range(0, len(members), 1000):
                chunk = members[start : start + 1000]
                result = await session.execute(
                    live.where(SandboxFlagExposure.customer_id.in_(chunk)).values(reverted_at=now)
                )
                reverted += _rowcount(result)
                heartbeat(f"reverted {start + len(chunk)} of {len(members)}")
            return ChangeReverted(change_id=request.change_id, reverted=reverted)


def _rowcount(result: object) -> int:
    count = getattr(result, "rowcount", 0)
    return int(count) if isinstance(count, int) and count > 0 else 0


async def _exposed(session: AsyncSession, change_id: str, flag_key: str | None = None) -> int:
    statement = select(func.count()).where(
        SandboxFlagExposure.change_id == change_id, SandboxFlagExposure.reverted_at.is_(None)
    )
    if flag_key is not None:
        statement = statement.where(SandboxFlagExposure.flag_key == flag_key)
    return int(await session.scalar(statement) or 0)


# --- metrics --------------------------------------------------------------------------------

# metric: (typical value, spread between cohorts, lowest, highest)
BASELINES: dict[str, tuple[float, float, float, float]] = {
    "csat": (4.3, 0.12, 1.0, 5.0),
    "complaint_rate": (0.02, 0.004, 0.0, 1.0),
    "handle_time": (420.0, 25.0, 0.0, math.inf),
    "repeat_contacts": (0.12, 0.015, 0.0, 1.0),
    "error_rate": (0.01, 0.002, 0.0, 1.0),
}
_UNKNOWN_METRIC = (1.0, 0.05, 0.0, math.inf)
METRICS: tuple[str, ...] = tuple(BASELINES)
"""The metrics the sandbox knows (readings of any other metric are synthetic guesses)."""

# A sandbox customer is an account: a business account's many users contact support all day.
# Contacts per account per day, by segment; a reading's sample size is the observations its
# cohort produced in the window (survey responses for csat, contacts for the others).
CONTACTS_PER_DAY: dict[str, float] = {
    "consumer": 1.0,
    "smb": 25.0,
    "mid_market": 100.0,
    "enterprise": 400.0,
}
_DEFAULT_CONTACTS_PER_DAY = 10.0
# metric: the share of contacts that yields one observation of it.
OBSERVED_SHARE: dict[str, float] = {
    "csat": 0.2,  # one contact in five answers the survey
    "complaint_rate": 1.0,
    "handle_time": 0.9,  # contacts handled by a person
    "repeat_contacts": 1.0,
    "error_rate": 1.0,
}


def expected_samples(metric: str, per_segment: dict[str, int], window_days: float) -> float:
    """Observations a cohort of `per_segment` customers produces for `metric` in the window."""
    contacts = sum(
        CONTACTS_PER_DAY.get(segment, _DEFAULT_CONTACTS_PER_DAY) * count
        for segment, count in per_segment.items()
    )
    return contacts * window_days * OBSERVED_SHARE.get(metric, 1.0)


_DEGRADE_PREFIX = "degrade:"


def degrade_marker(change_id: str) -> str:
    """The sandbox_metric_samples.customer_id that records a degrade for a change."""
    marker = _DEGRADE_PREFIX + change_id
    if len(marker) > 64:
        marker = _DEGRADE_PREFIX + hashlib.sha256(change_id.encode()).hexdigest()[:48]
    return marker


async def degrade(sessions: Sessions, metric: str, change_id: str, value: float) -> None:
    """From now on, `metric` read for the customers exposed by `change_id` reads `value`.

    Stored as a sample row whose customer id is `degrade:<change id>`: no customer has such an
    id, so ordinary readings never see it; the latest such row wins."""
    if not math.isfinite(value):
        raise ValueError("the degraded value must be a finite number")
    async with transaction(sessions) as session:
        session.add(
            SandboxMetricSample(
                metric=metric, customer_id=degrade_marker(change_id), value=value, at=utcnow()
            )
        )


class SandboxMetrics(_SandboxBackend):
    """Plausible, deterministic readings per (metric, cohort, window): the sample size is the
    observations the cohort's accounts produce in the window (`CONTACTS_PER_DAY` by segment
    times `OBSERVED_SHARE`), the noise shrinks as it grows; recorded samples win over the
    synthetic ones; a degrade record makes a change's exposed cohort read bad."""

    async def read(
        self, metric: str, cohort: MetricCohort, start: datetime, end: datetime
    ) -> MetricReading:
        if end <= start:
            raise invalid("window_end must be after window_start")
        async with self._sessions() as session:
            if cohort.change_id is not None:
                members: Select[Any] = select(SandboxFlagExposure.customer_id).where(
                    SandboxFlagExposure.change_id == cohort.change_id,
                    SandboxFlagExposure.reverted_at.is_(None),
                )
            else:
                members = _filtered(
                    select(SandboxCustomer.id), cohort.segments, cohort.tiers, cohort.languages
                )
            if cohort.exclude_change_id is not None:
                # The customers exposed to that change (live exposures) are left out.
                exposed_there = select(SandboxFlagExposure.customer_id).where(
                    SandboxFlagExposure.change_id == cohort.exclude_change_id,
                    SandboxFlagExposure.reverted_at.is_(None),
                )
                members = members.where(members.selected_columns[0].not_in(exposed_there))
            segments = (
                await session.execute(
                    select(SandboxCustomer.segment, func.count())
                    .where(SandboxCustomer.id.in_(members))
                    .group_by(SandboxCustomer.segment)
                )
            ).all()
            per_segment = {str(segment): int(count) for segment, count in segments}
            if not per_segment:
                return MetricReading(metric=metric, value=None, sample_size=0, backend=BACKEND)
            degraded = None
            if cohort.change_id is not None:
                degraded = await session.scalar(
                    select(SandboxMetricSample.value)
                    .where(
                        SandboxMetricSample.metric == metric,
                        SandboxMetricSample.customer_id == degrade_marker(cohort.change_id),
                    )
                    .order_by(SandboxMetricSample.at.desc(), SandboxMetricSample.id.desc())
                    .limit(1)
                )
            recorded = (
                await session.execute(
                    select(func.avg(SandboxMetricSample.value), func.count()).where(
                        SandboxMetricSample.metric == metric,
                        SandboxMetricSample.at >= start,
                        SandboxMetricSample.at < end,
                        SandboxMetricSample.customer_id.in_(members),
                    )
                )
            ).one()
        typical, spread, lowest, highest = BASELINES.get(metric, _UNKNOWN_METRIC)
        rng = random.Random(f"{metric}|{cohort.key()}|{start.isoformat()}|{end.isoformat()}")
        expected = expected_samples(metric, per_segment, (end - start).total_seconds() / 86_400)
        # Poisson-like spread around the expected count.
        synthetic_samples = max(0, round(expected + rng.gauss(0.0, math.sqrt(expected))))
        if degraded is not None:
            value = degraded + rng.gauss(0.0, abs(degraded) * 0.005)
            sample_size = synthetic_samples
        elif recorded[1]:
            value, sample_size = float(recorded[0]), int(recorded[1])
        else:
            noise = spread / math.sqrt(min(synthetic_samples, 400) / 4 + 1)
            value = typical + rng.gauss(0.0, noise)
            sample_size = synthetic_samples
        if sample_size == 0:
            return MetricReading(metric=metric, value=None, sample_size=0, backend=BACKEND)
        value = min(max(value, lowest), highest)
        return MetricReading(
            metric=metric, value=round(value, 6), sample_size=sample_size, backend=BACKEND
        )


__all__ = [
    "BASELINES",
    "CONTACTS_PER_DAY",
    "METRICS",
    "SandboxChanges",
    "SandboxCredits",
    "SandboxCrm",
    "SandboxMetrics",
    "SandboxNotifier",
    "SandboxTicketing",
    "degrade",
    "degrade_marker",
]
