"""The exposure record (`rollout_exposures`): which customers each phase of a change's attempt
exposed. Written once by `changes.apply` with its effect; read in keyset-paginated pages
(customer id order) by revert, rollback notices and recovery actions."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence

from sqlalchemy import select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from store.models import RolloutExposure
from store.types import utcnow

PAGE = 5_000
_CHUNK = 1_000  # rows per INSERT: 6 columns each stays far below SQLite's variable limit


async def record(
    session: AsyncSession, change_id: str, attempt: int, phase: int, customer_ids: Sequence[str]
) -> int:
    """Record `customer_ids` as exposed by `phase` unless this attempt already exposed them
    (an earlier phase keeps its customers); returns how many rows were new."""
    dialect = session.get_bind().dialect.name
    insert = pg_insert if dialect == "postgresql" else sqlite_insert
    now, added = utcnow(), 0
    for start in range(0, len(customer_ids), _CHUNK):
        chunk = customer_ids[start : start + _CHUNK]
        result = await session.execute(
            insert(RolloutExposure)
            .values(
                [
                    {
                        "change_id": change_id,
                        "attempt": attempt,
                        "phase": phase,
                        "customer_id": customer_id,
                        "exposed_at": now,
                    }
                    for customer_id in chunk
                ]
            )
            .on_conflict_do_nothing(index_elements=["change_id", "attempt", "customer_id"])
        )
        count = getattr(result, "rowcount", 0)
        added += count if isinstance(count, int) and count > 0 else 0
    return added


async def page(
    session: AsyncSession,
    change_id: str,
    attempt: int,
    phase: int,
    *,
    after: str | None = None,
    size: int = PAGE,
) -> list[str]:
    """Up to `size` of the phase's own customers in id order after `after` (keyset)."""
    statement = (
        select(RolloutExposure.customer_id)
        .where(
            RolloutExposure.change_id == change_id,
            RolloutExposure.attempt == attempt,
            RolloutExposure.phase == phase,
        )
        .order_by(RolloutExposure.customer_id)
        .limit(size)
    )
    if after is not None:
        statement = statement.where(RolloutExposure.customer_id > after)
    return list((await session.scalars(statement)).all())


async def pages(
    sessions: async_sessionmaker[AsyncSession],
    change_id: str,
    attempt: int,
    phase: int,
    *,
    after: str | None = None,
    size: int = PAGE,
) -> AsyncIterator[list[str]]:
    """The phase's own customers after `after`, a page at a time, each read in a short
    session of its own (no transaction stays open while the caller acts on a page)."""
    while True:
        async with sessions() as session:
            found = await page(session, change_id, attempt, phase, after=after, size=size)
        if not found:
            return
        yield found
        if len(found) < size:
            return
        after = found[-1]


async def members(session: AsyncSession, change_id: str, attempt: int, phase: int) -> list[str]:
    """All of the phase's own customers, in id order, read page by page in `session`."""
    everyone: list[str] = []
    while True:
        found = await page(
            session, change_id, attempt, phase, after=everyone[-1] if everyone else None
        )
        everyone.extend(found)
        if len(found) < PAGE:
            return everyone


async def mark_reverted(session: AsyncSession, change_id: str, attempt: int, phase: int) -> None:
    await session.execute(
        update(RolloutExposure)
        .where(
            RolloutExposure.change_id == change_id,
            RolloutExposure.attempt == attempt,
            RolloutExposure.phase == phase,
            RolloutExposure.reverted_at.is_(None),
        )
        .values(reverted_at=utcnow())
    )
