"""The inbox: every accepted event once (unique by source + id), where it went and when.

A vendor's event that maps to no opsflow type is kept as well, already `rejected` with the
reason (`Refused`), so nothing a sender was told we received is silently dropped.

Writes are few and short: a request's replay check and insert are one transaction
(`accept`), and the relay marks every settled event of a pass in one UPDATE transaction per
group (`mark_many`). On SQLite the writers of this process take turns on an asyncio lock
(`write_lock`): SQLite has one writer at a time, and its busy handler sleeps in steps of up
to 100 ms, so connections that contend for the lock wait far longer, and less fairly, than
coroutines queueing in order. PostgreSQL needs no such lock.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol, TypeVar

from sqlalchemy import bindparam, insert, select, update
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker
from sqlalchemy.orm import Session

from definitions.events import EventEnvelope
from store.blocking import create_sync_engine
from store.db import write_lock
from store.models import InboxEvent, LedgerEntry
from store.types import utcnow

Sessions = async_sessionmaker[AsyncSession]
T = TypeVar("T")
WAITING = ("accepted", "pending")


class Refused(EventEnvelope):
    """An event received but not mapped to an opsflow event (a vendor's kind opsflow has no
    type for): recorded as it came, `rejected` with `reason` as the outcome, so it shows in
    `opsflow events list --rejected` rather than being acknowledged and dropped."""

    reason: str


@dataclass(frozen=True)
class Recorded:
    row: InboxEvent
    new: bool


class EventRow(Protocol):
    """What an envelope is made of: an inbox row, whole or as loaded for the relay."""

    @property
    def event_id(self) -> str: ...
    @property
    def source(self) -> str: ...
    @property
    def type(self) -> str: ...
    @property
    def subject(self) -> str: ...
    @property
    def time(self) -> datetime | None: ...
    @property
    def data(self) -> dict[str, Any]: ...


@dataclass(frozen=True)
class Waiting:
    """An event the relay still has to deliver: only the columns delivery needs."""

    id: int
    source: str
    event_id: str
    type: str
    subject: str
    time: datetime | None
    data: dict[str, Any]
    attempts: int = 0
    """Failed attempts so far: a waiting event has failed every attempt it counted."""


@dataclass(frozen=True)
class Settled:
    """The outcome of one delivery attempt, to be written by `mark_many`.

    `counted`: whether the attempt counts in `attempts`. One that never reached Temporal
    (it was down) does not: an outage of any length must not use up an event's attempts."""

    row_id: int
    status: str
    outcome: str
    target: str | None
    counted: bool = True


def envelope_of(row: EventRow) -> EventEnvelope:
    return EventEnvelope(
        id=row.event_id,
        source=row.source,
        type=row.type,
        subject=row.subject,
        time=row.time,
        data=row.data,
    )


def describe(row: InboxEvent) -> dict[str, Any]:
    return {
        "id": row.event_id,
        "source": row.source,
        "type": row.type,
        "subject": row.subject,
        "status": row.status,
        "outcome": row.outcome,
        "target": row.target,
        "attempts": row.attempts,
        "time": row.time.isoformat() if row.time else None,
        "received_at": row.received_at.isoformat(),
        "delivered_at": row.delivered_at.isoformat() if row.delivered_at else None,
    }


async def seen_request(sessions: Sessions, source: str, webhook_id: str, stamp: str) -> bool:
    """True when this exact signed request (id and timestamp) was already recorded."""
    async with sessions() as session:
        return await _seen(session, source, webhook_id, stamp)


async def _seen(session: AsyncSession, source: str, webhook_id: str, stamp: str) -> bool:
    found = await session.scalar(
        select(InboxEvent.id)
        .where(
            InboxEvent.webhook_id == webhook_id,
            InboxEvent.source == source,
            InboxEvent.webhook_timestamp == stamp,
        )
        .limit(1)
    )
    return found is not None


class Replayed(Exception):
    """This exact signed request (webhook id and timestamp) is already in the inbox."""


@dataclass
class _Request:
    events: Sequence[EventEnvelope]
    source: str | None
    webhook_id: str | None
    webhook_timestamp: str | None
    future: asyncio.Future[list[Recorded]] | None = None

    @property
    def signature(self) -> tuple[str, str, str] | None:
        if self.source is None or self.webhook_id is None or self.webhook_timestamp is None:
            return None
        return (self.source, self.webhook_id, self.webhook_timestamp)


async def record(
    sessions: Sessions,
    events: Sequence[EventEnvelope],
    webhook_id: str | None = None,
    webhook_timestamp: str | None = None,
) -> list[Recorded]:
    """Store the events not seen before, durably, and return every event's row in order."""
    result = (await _write(sessions, [_Request(events, None, webhook_id, webhook_timestamp)]))[0]
    assert not isinstance(result, Replayed)
    return result


async def accept(
    sessions: Sessions,
    source: str,
    webhook_id: str,
    webhook_timestamp: str,
    events: Sequence[EventEnvelope],
) -> list[Recorded]:
    """One signed request into the inbox in one transaction: Replayed when this webhook id
    and timestamp were recorded before, else every event's row in order (new or not)."""
    result = (await _write(sessions, [_Request(events, source, webhook_id, webhook_timestamp)]))[0]
    if isinstance(result, Replayed):
        raise result
    return result


class Writer:
    """The request path's writer: group commit on a connection and thread of its own.

    Each request queues its events and waits; one task hands everything queued meanwhile
    to the writer thread, which runs it as one transaction (replay check, duplicates,
    insert, commit) and answers every request once it is committed. Alone, a request is one
    transaction; under load, many share one. The relay's marks go through the same thread,
    so this process never has two writers contending for SQLite's lock, and each
    transaction is one hand-off to the thread instead of several per statement.
    """

    def __init__(self, sessions: Sessions, max_events: int = 500) -> None:
        self.sessions = sessions
        self.max_events = max_events
        self._queue: list[_Request] = []
        self._task: asyncio.Task[None] | None = None
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="inbox-writer")
        self._engine: Engine | None = None
        self.transactions = 0

    def _sync_engine(self) -> Engine:
        if self._engine is None:
            bind = self.sessions.kw.get("bind")
            if not isinstance(bind, AsyncEngine):
                raise TypeError("the inbox writer needs sessions bound to an AsyncEngine")
            self._engine = create_sync_engine(bind.url)
        return self._engine

    async def _run(self, work: Callable[[Session], T]) -> T:
        def transaction() -> T:
            engine = self._sync_engine()
            with Session(engine, expire_on_commit=False) as session, session.begin():
                return work(session)

        return await asyncio.get_running_loop().run_in_executor(self._thread, transaction)

    async def accept(
        self,
        source: str,
        webhook_id: str,
        webhook_timestamp: str,
        events: Sequence[EventEnvelope],
    ) -> list[Recorded]:
        """As `accept`, sharing a transaction with the requests queued at the same time."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[list[Recorded]] = loop.create_future()
        self._queue.append(_Request(events, source, webhook_id, webhook_timestamp, future))
        if self._task is None or self._task.done():
            self._task = loop.create_task(self._drain())
        return await future

    async def mark_many(self, settled: Sequence[Settled]) -> None:
        """As `mark_many`, on the writer's thread."""
        if settled:
            await self._run(lambda session: _mark_in(session, settled))

    async def _drain(self) -> None:
        while self._queue:
            batch: list[_Request] = []
            size = 0
            while self._queue and (
                not batch or size + len(self._queue[0].events) <= self.max_events
            ):
                request = self._queue.pop(0)
                batch.append(request)
                size += len(request.events)
            try:
                results = await self._write(batch)
                self.transactions += 1
            except BaseException as exc:
                for request in batch:
                    if request.future is not None and not request.future.done():
                        request.future.set_exception(exc)
                if not isinstance(exc, Exception):
                    raise
                continue
            for request, result in zip(batch, results, strict=True):
                if request.future is None or request.future.done():
                    continue  # the caller gave up; its events are in the inbox all the same
                if isinstance(result, Replayed):
                    request.future.set_exception(result)
                else:
                    request.future.set_result(result)

    async def _write(self, batch: Sequence[_Request]) -> list[list[Recorded] | Replayed]:
        for _attempt in range(3):
            try:
                return await self._run(lambda session: _write_in(session, batch))
            except IntegrityError:
                continue  # a concurrent delivery of the same event won: read it back
        raise RuntimeError("the inbox kept conflicting on the same events")

    async def close(self) -> None:
        """Finish what was handed to the thread, then release the thread and connection."""
        await asyncio.get_running_loop().run_in_executor(None, self._thread.shutdown)
        if self._engine is not None:
            self._engine.dispose()


async def _write(sessions: Sessions, batch: Sequence[_Request]) -> list[list[Recorded] | Replayed]:
    """Every request of `batch` in one transaction, retried when a concurrent writer wins."""
    for _attempt in range(3):
        try:
            async with write_lock(sessions), sessions() as session, session.begin():
                return await session.run_sync(_write_in, batch)
        except IntegrityError:
            continue  # a concurrent delivery of the same event won: read it back
    raise RuntimeError("the inbox kept conflicting on the same events")


def _write_in(session: Session, batch: Sequence[_Request]) -> list[list[Recorded] | Replayed]:
    """What each request is (a replay, or its events new or already there), inserting the
    new rows; within a batch, a repeated request or event counts as a repeat."""
    signatures = {sig for request in batch if (sig := request.signature) is not None}
    seen = _seen_many(session, signatures)
    existing = _existing(session, [e for request in batch for e in request.events])
    now = utcnow()
    added: dict[tuple[str, str], InboxEvent] = {}
    results: list[list[Recorded] | Replayed] = []
    for request in batch:
        signature = request.signature
        if signature is not None:
            if signature in seen:
                results.append(Replayed(signature[1]))
                continue
            seen.add(signature)
        recorded: list[Recorded] = []
        for event in request.events:
            key = (event.source, event.id)
            if key in existing:
                recorded.append(Recorded(existing[key], False))
            elif key in added:
                recorded.append(Recorded(added[key], False))
            else:
                refused = event.reason[:4000] if isinstance(event, Refused) else None
                row = InboxEvent(
                    source=event.source,
                    event_id=event.id,
                    type=event.type,
                    subject=event.subject,
                    time=event.time,
                    data=event.data,
                    status="accepted" if refused is None else "rejected",
                    outcome=refused,
                    delivered_at=None if refused is None else now,
                    webhook_id=request.webhook_id,
                    webhook_timestamp=request.webhook_timestamp,
                    attempts=0,
                    received_at=now,
                )
                added[key] = row
                recorded.append(Recorded(row, True))
        results.append(recorded)
    if added:
        rows = list(added.values())
        ids = session.scalars(
            insert(InboxEvent.__table__).returning(  # type: ignore[arg-type]
                InboxEvent.__table__.c.id, sort_by_parameter_order=True
            ),
            [_insert_params(row) for row in rows],
        )
        for row, row_id in zip(rows, ids, strict=True):
            row.id = row_id
    return results


def _insert_params(row: InboxEvent) -> dict[str, Any]:
    return {
        "source": row.source,
        "event_id": row.event_id,
        "type": row.type,
        "subject": row.subject,
        "time": row.time,
        "data": row.data,
        "status": row.status,
        "outcome": row.outcome,
        "target": None,
        "webhook_id": row.webhook_id,
        "webhook_timestamp": row.webhook_timestamp,
        "attempts": 0,
        "received_at": row.received_at,
        "delivered_at": row.delivered_at,
    }


_TABLE = InboxEvent.__table__


def _seen_many(
    session: Session, signatures: set[tuple[str, str, str]]
) -> set[tuple[str, str, str]]:
    if not signatures:
        return set()
    rows = session.connection().execute(
        select(_TABLE.c.source, _TABLE.c.webhook_id, _TABLE.c.webhook_timestamp).where(
            _TABLE.c.webhook_id.in_({sig[1] for sig in signatures})
        )
    )
    found: set[tuple[str, str, str]] = set()
    for source, webhook_id, stamp in rows:
        if (source, webhook_id, stamp) in signatures:
            found.add((source, webhook_id, stamp))
    return found


def _existing(
    session: Session, events: Sequence[EventEnvelope]
) -> dict[tuple[str, str], InboxEvent]:
    """The rows already in the inbox for `events` (usually none: one cheap Core query per
    source, and the whole rows only for the repeats found)."""
    by_source: dict[str, list[str]] = {}
    for event in events:
        by_source.setdefault(event.source, []).append(event.id)
    repeated: dict[str, list[str]] = {}
    for source, ids in by_source.items():
        found = session.connection().execute(
            select(_TABLE.c.event_id).where(_TABLE.c.source == source, _TABLE.c.event_id.in_(ids))
        )
        repeated[source] = [event_id for (event_id,) in found]
    rows: dict[tuple[str, str], InboxEvent] = {}
    for source, ids in repeated.items():
        if ids:
            for row in session.scalars(
                select(InboxEvent).where(InboxEvent.source == source, InboxEvent.event_id.in_(ids))
            ):
                rows[(row.source, row.event_id)] = row
    return rows


async def waiting(
    sessions: Sessions, limit: int, skip_subjects: Sequence[str] = ()
) -> list[Waiting]:
    """Events not yet delivered, oldest first (only what delivery needs), leaving out the
    subjects in `skip_subjects` (held back: their events must not fill the batch)."""
    query = (
        select(
            InboxEvent.id,
            InboxEvent.source,
            InboxEvent.event_id,
            InboxEvent.type,
            InboxEvent.subject,
            InboxEvent.time,
            InboxEvent.data,
            InboxEvent.attempts,
        )
        .where(InboxEvent.status.in_(WAITING))
        .order_by(InboxEvent.id)
        .limit(limit)
    )
    if skip_subjects:
        query = query.where(InboxEvent.subject.not_in(list(skip_subjects)))
    async with sessions() as session:
        result = await session.execute(query)
        return [Waiting(*row) for row in result]


async def any_waiting(sessions: Sessions) -> bool:
    async with sessions() as session:
        found = await session.scalar(
            select(InboxEvent.id).where(InboxEvent.status.in_(WAITING)).limit(1)
        )
    return found is not None


async def mark(
    sessions: Sessions, row_id: int, status: str, outcome: str, target: str | None
) -> None:
    await mark_many(sessions, [Settled(row_id, status, outcome, target)])


_MARK = (
    update(InboxEvent.__table__)  # type: ignore[arg-type]
    .where(InboxEvent.__table__.c.id == bindparam("b_id"))
    .values(
        status=bindparam("b_status"),
        outcome=bindparam("b_outcome"),
        target=bindparam("b_target"),
        attempts=InboxEvent.__table__.c.attempts + bindparam("b_counted"),
        delivered_at=bindparam("b_delivered_at"),
    )
)


async def mark_many(sessions: Sessions, settled: Sequence[Settled]) -> None:
    """Record the outcome of many delivery attempts in one transaction."""
    if not settled:
        return
    async with write_lock(sessions), sessions() as session, session.begin():
        await session.run_sync(_mark_in, settled)


def _mark_in(session: Session, settled: Sequence[Settled]) -> None:
    now = utcnow()
    params = [
        {
            "b_id": s.row_id,
            "b_status": s.status,
            "b_outcome": s.outcome[:4000],
            "b_target": s.target,
            "b_counted": 1 if s.counted else 0,
            "b_delivered_at": now if s.status in ("delivered", "rejected") else None,
        }
        for s in settled
    ]
    session.execute(_MARK, params)


async def listing(
    sessions: Sessions, statuses: Sequence[str] | None = None, limit: int = 200
) -> list[InboxEvent]:
    async with sessions() as session:
        query = select(InboxEvent).order_by(InboxEvent.id.desc()).limit(limit)
        if statuses:
            query = query.where(InboxEvent.status.in_(statuses))
        return list(await session.scalars(query))


async def find(sessions: Sessions, event_id: str, source: str | None = None) -> list[InboxEvent]:
    async with sessions() as session:
        query = select(InboxEvent).where(InboxEvent.event_id == event_id)
        if source:
            query = query.where(InboxEvent.source == source)
        return list(await session.scalars(query.order_by(InboxEvent.id)))


class NothingToRequeue(Exception):
    """The event asked for is not in the inbox, or not rejected; the message says which."""


async def requeue(
    sessions: Sessions,
    *,
    by: str,
    event_id: str | None = None,
    source: str | None = None,
    rejected_since: datetime | None = None,
) -> list[InboxEvent]:
    """Send rejected events again: one by id (and source when ids clash), or every event
    rejected since a moment. Each goes back to `pending` with its attempts reset, the relay
    delivers it like a new one (the same update ids and event ids, so a workflow that did
    take it acts once), and the ledger records who requeued it and what it was refused for.
    """
    async with write_lock(sessions), sessions() as session, session.begin():
        query = select(InboxEvent).where(InboxEvent.status == "rejected")
        if event_id is not None:
            everything = list(
                await session.scalars(
                    select(InboxEvent).where(
                        InboxEvent.event_id == event_id,
                        *([InboxEvent.source == source] if source else []),
                    )
                )
            )
            if not everything:
                raise NothingToRequeue(f"no event {event_id!r} in the inbox")
            if len(everything) > 1:
                senders = ", ".join(sorted(r.source for r in everything))
                raise NothingToRequeue(
                    f"event id {event_id!r} was sent by {senders}: say which with --source"
                )
            [row] = everything
            if row.status != "rejected":
                raise NothingToRequeue(
                    f"event {event_id!r} is {row.status}, not rejected: nothing to requeue"
                )
            query = query.where(InboxEvent.id == row.id)
        if rejected_since is not None:
            query = query.where(InboxEvent.delivered_at >= rejected_since)
        if source is not None:
            query = query.where(InboxEvent.source == source)
        rows = list(await session.scalars(query.order_by(InboxEvent.id)))
        now = utcnow()
        for row in rows:
            previous = row.outcome
            row.status = "pending"
            row.outcome = f"requeued by {by}; was rejected: {previous or '(no reason)'}"[:4000]
            row.attempts = 0
            row.delivered_at = None
            session.add(
                LedgerEntry(
                    idempotency_key=f"intake/{row.source}/{row.event_id}/requeue/{uuid.uuid4()}",
                    workflow_id=row.target or "intake",
                    kind="intake",
                    subject=row.subject,
                    step="event-requeued",
                    detail={
                        "by": by,
                        "source": row.source,
                        "event_id": row.event_id,
                        "type": row.type,
                        "rejected_for": previous,
                    },
                    at=now,
                )
            )
        return rows
