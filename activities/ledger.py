"""The audit trail: workflows append one entry per step they take."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from temporalio import activity

from activities.deps import ActivityDeps
from activities.models import LedgerAppend, LedgerBatch
from store.db import transaction
from store.models import LedgerEntry
from store.types import utcnow


class LedgerActivities:
    def __init__(self, deps: ActivityDeps) -> None:
        self._sessions = deps.sessions

    @activity.defn(name="ledger.append")
    async def append(self, entry: LedgerAppend) -> int:
        """Append an entry once per idempotency key; return its id."""
        return (await self._append([entry]))[0]

    @activity.defn(name="ledger.append_many")
    async def append_many(self, batch: LedgerBatch) -> list[int]:
        """Append several entries in one transaction, each once per idempotency key (the same
        keys `ledger.append` uses, so a run that switches between the two writes nothing
        twice); their ids, in order. A case taking commands faster than one write each
        drains its backlog in one call."""
        return await self._append(batch.entries)

    async def _append(self, entries: list[LedgerAppend]) -> list[int]:
        async with transaction(self._sessions) as session:
            dialect = session.get_bind().dialect.name
            insert = pg_insert if dialect == "postgresql" else sqlite_insert
            written_at = utcnow()
            for entry in entries:
                values = entry.model_dump()
                values["written_at"] = written_at
                values["at"] = entry.at or written_at
                await session.execute(
                    insert(LedgerEntry)
                    .values(**values)
                    .on_conflict_do_nothing(index_elements=["idempotency_key"])
                )
            keys = [entry.idempotency_key for entry in entries]
            found = await session.execute(
                select(LedgerEntry.idempotency_key, LedgerEntry.id).where(
                    LedgerEntry.idempotency_key.in_(keys)
                )
            )
            ids = {key: entry_id for key, entry_id in found}
        return [ids[key] for key in keys]
