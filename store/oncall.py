"""On-call in the app database: schedules (the registry's newest versions), the overrides
`opsflow oncall override` stores, and the round-robin counters of escalation levels.

Shared by `opsflow oncall` and the notify activity, so both answer "who is on call" from the
same schedule version and the same overrides.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from definitions.errors import OpsflowError
from definitions.models import PinnedDefinition
from definitions.schedule import Override, Rota
from store import registry
from store.db import transaction
from store.models import OnCallOverride, RoundRobinCounter, RoundRobinPick

Sessions = async_sessionmaker[AsyncSession]


class ScheduleNotFound(OpsflowError):
    """No schedule of that name is deployed (or the name belongs to another kind)."""


@dataclass(frozen=True)
class StoredOverride:
    id: int
    schedule: str
    person: str
    starts_at: datetime
    ends_at: datetime
    created_by: str
    created_at: datetime

    @property
    def override(self) -> Override:
        return Override(self.person, self.starts_at, self.ends_at)


def _stored(row: OnCallOverride) -> StoredOverride:
    return StoredOverride(
        row.id,
        row.schedule,
        row.person,
        row.starts_at,
        row.ends_at,
        row.created_by,
        row.created_at,
    )


async def schedule(sessions: Sessions, name: str) -> PinnedDefinition:
    """The newest deployed version of schedule `name`."""
    try:
        found = await registry.latest(sessions, name)
    except registry.DefinitionNotFound:
        raise ScheduleNotFound(f"no schedule named {name!r} is deployed") from None
    if found.kind != "schedule":
        raise ScheduleNotFound(f"{name!r} is a {found.kind} definition, not a schedule")
    return found


async def schedules(sessions: Sessions) -> list[PinnedDefinition]:
    """The newest version of every deployed schedule, by name."""
    return await registry.latest_of_kind(sessions, "schedule")


async def add_override(
    sessions: Sessions,
    name: str,
    person: str,
    starts_at: datetime,
    ends_at: datetime,
    created_by: str,
) -> StoredOverride:
    """Store an override of schedule `name` (which must be deployed); it wins over the
    schedule's layers, its own overrides and every override stored before it."""
    await schedule(sessions, name)
    if ends_at <= starts_at:
        raise OpsflowError("--to is not after --from")
    async with transaction(sessions) as session:
        row = OnCallOverride(
            schedule=name,
            person=person,
            starts_at=starts_at,
            ends_at=ends_at,
            created_by=created_by,
        )
        session.add(row)
        await session.flush()
        return _stored(row)


async def stored_overrides(
    sessions: Sessions, name: str, *, ending_after: datetime
) -> list[StoredOverride]:
    """Schedule `name`'s stored overrides that end after `ending_after`, oldest first (the
    order in which a later one wins)."""
    async with sessions() as session:
        rows = await session.scalars(
            select(OnCallOverride)
            .where(OnCallOverride.schedule == name, OnCallOverride.ends_at > ending_after)
            .order_by(OnCallOverride.id)
        )
        return [_stored(row) for row in rows]


async def rota(sessions: Sessions, pinned: PinnedDefinition, *, at: datetime) -> Rota:
    """The schedule with the stored overrides that matter from `at` on."""
    overrides = await stored_overrides(sessions, pinned.name, ending_after=at)
    return Rota(pinned.schedule, [stored.override for stored in overrides])


async def on_call(sessions: Sessions, name: str, at: datetime) -> str | None:
    """Who is on call for schedule `name` at `at`, stored overrides included."""
    return (await rota(sessions, await schedule(sessions, name), at=at)).on_call(at)


class _Raced(Exception):
    pass


def _rowcount(result: object) -> int:
    count = getattr(result, "rowcount", None)
    return count if isinstance(count, int) else 0


async def pick_round_robin(
    sessions: Sessions, idempotency_key: str, definition: str, level: str, targets: list[str]
) -> str:
    """The target of the round-robin notification `idempotency_key`: the one picked before
    for that key, else the next in turn for (`definition`, `level`), which moves on by one."""
    if not targets:
        raise ValueError("a round-robin pick needs at least one target")
    for _ in range(5):
        async with sessions() as session:
            picked = await session.get(RoundRobinPick, idempotency_key)
            if picked is not None:
                return picked.target
        try:
            async with transaction(sessions) as session:
                counter = await session.get(
                    RoundRobinCounter, (definition, level), with_for_update=True
                )
                if counter is None:
                    counter = RoundRobinCounter(definition=definition, level=level, turns=0)
                    session.add(counter)
                    await session.flush()
                turn = counter.turns
                moved = await session.execute(
                    update(RoundRobinCounter)
                    .where(
                        RoundRobinCounter.definition == definition,
                        RoundRobinCounter.level == level,
                        RoundRobinCounter.turns == turn,
                    )
                    .values(turns=turn + 1)
                    .execution_options(synchronize_session=False)
                )
                if _rowcount(moved) != 1:
                    raise _Raced  # another process took this turn: read the counter again
                target = targets[turn % len(targets)]
                session.add(RoundRobinPick(idempotency_key=idempotency_key, target=target))
                await session.flush()
                return target
        except (IntegrityError, _Raced):
            continue  # another attempt picked for this key (or moved the counter) meanwhile
    raise OpsflowError(f"could not pick a round-robin target for {idempotency_key!r}")
