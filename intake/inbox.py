"""The inbox: every accepted event once (unique by source + id), where it went and when."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from definitions.events import EventEnvelope
from store.models import InboxEvent
from store.types import utcnow

Sessions = async_sessionmaker[AsyncSession]
WAITING = ("accepted", "pending")


@dataclass(frozen=True)
class Recorded:
    row: InboxEvent
    new: bool


def envelope_of(row: InboxEvent) -> EventEnvelope:
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


async def record(
    sessions: Sessions,
    events: Sequence[EventEnvelope],
    webhook_id: str | None = None,
    webhook_timestamp: str | None = None,
) -> list[Recorded]:
    """Store the events not seen before, durably, and return every event's row in order."""
    for _attempt in range(3):
        try:
            async with sessions() as session, session.begin():
                existing = await _existing(session, events)
                new_rows: dict[tuple[str, str], InboxEvent] = {}
                for event in events:
                    key = (event.source, event.id)
                    if key in existing or key in new_rows:
                        continue
                    new_rows[key] = InboxEvent(
                        source=event.source,
                        event_id=event.id,
                        type=event.type,
                        subject=event.subject,
                        time=event.time,
                        data=event.data,
                        status="accepted",
                        webhook_id=webhook_id,
                        webhook_timestamp=webhook_timestamp,
                        attempts=0,
                    )
                session.add_all(new_rows.values())
            return [
                Recorded(new_rows[k], True)
                if (k := (e.source, e.id)) in new_rows
                else Recorded(existing[k], False)
                for e in events
            ]
        except IntegrityError:
            continue  # a concurrent delivery of the same event won: read it back
    raise RuntimeError("the inbox kept conflicting on the same events")


async def _existing(
    session: AsyncSession, events: Sequence[EventEnvelope]
) -> dict[tuple[str, str], InboxEvent]:
    found: dict[tuple[str, str], InboxEvent] = {}
    by_source: dict[str, list[str]] = {}
    for event in events:
        by_source.setdefault(event.source, []).append(event.id)
    for source, ids in by_source.items():
        rows = await session.scalars(
            select(InboxEvent).where(InboxEvent.source == source, InboxEvent.event_id.in_(ids))
        )
        found.update({(row.source, row.event_id): row for row in rows})
    return found


async def waiting(sessions: Sessions, limit: int) -> list[InboxEvent]:
    """Events not yet delivered, oldest first."""
    async with sessions() as session:
        rows = await session.scalars(
            select(InboxEvent)
            .where(InboxEvent.status.in_(WAITING))
            .order_by(InboxEvent.id)
            .limit(limit)
        )
        return list(rows)


async def mark(
    sessions: Sessions, row_id: int, status: str, outcome: str, target: str | None
) -> None:
    async with sessions() as session, session.begin():
        await session.execute(
            update(InboxEvent)
            .where(InboxEvent.id == row_id)
            .values(
                status=status,
                outcome=outcome[:4000],
                target=target,
                attempts=InboxEvent.attempts + 1,
                delivered_at=utcnow() if status in ("delivered", "rejected") else None,
            )
        )


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
