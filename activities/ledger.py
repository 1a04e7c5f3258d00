"""The audit trail: workflows append one entry per step they take."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from temporalio import activity

from activities.deps import ActivityDeps
from activities.models import LedgerAppend
from store.db import transaction
from store.models import LedgerEntry
from store.types import utcnow


class LedgerActivities:
    def __init__(self, deps: ActivityDeps) -> None:
        self._sessions = deps.sessions

    @activity.defn(name="ledger.append")
    async def append(self, entry: LedgerAppend) -> int:
        """Append an entry once per idempotency key; return its id."""
        async with transaction(self._sessions) as session:
            dialect = session.get_bind().dialect.name
            insert = pg_insert if dialect == "postgresql" else sqlite_insert
            values = entry.model_dump()
            values["written_at"] = utcnow()
            values["at"] = entry.at or values["written_at"]
            await session.execute(
                insert(LedgerEntry)
                .values(**values)
                .on_conflict_do_nothing(index_elements=["idempotency_key"])
            )
            entry_id = await session.scalar(
                select(LedgerEntry.id).where(LedgerEntry.idempotency_key == entry.idempotency_key)
            )
        assert entry_id is not None
        return entry_id
