"""The outbox: one row per external effect, keyed by the caller's idempotency key.

A retried activity must not act twice. `Outbox.run` claims the row for the key before
acting and records the result after:

- a `done` row: the effect happened; return the recorded result without acting;
- no row: insert it as `pending` (committed), act, then mark it `done` with the result;
- a `pending` row: an earlier attempt crashed or failed between claim and record. Whether
  the effect happened is unknown, so the attempt acts again *with the same key*; vendors
  that deduplicate (PagerDuty `dedup_key`, Zendesk/HubSpot/webhook `Idempotency-Key`) make
  that safe. Only for vendors that take no key (SMTP, Slack incoming webhooks) is there an
  at-least-once window: a crash after the vendor accepted the message and before the `done`
  row commits sends it again on retry. `attempts` counts how often that happened.

Backends that live in the app database itself (the sandbox) act inside the outbox's own
transaction, so for them claim, effect and record commit together: exactly once.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol, TypeVar

import structlog
from pydantic import BaseModel, ValidationError
from sqlalchemy import select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.sql.expression import Executable
from temporalio.exceptions import ApplicationError

from activities.errors import invalid
from store.db import transaction
from store.models import OutboxEntry
from store.types import utcnow

log = structlog.get_logger(__name__)

ResultT = TypeVar("ResultT", bound=BaseModel)

MAX_KEY_LENGTH = 400


@dataclass(frozen=True)
class Effect:
    """What a backend gets to perform one effect."""

    idempotency_key: str
    session: AsyncSession | None = None
    """The outbox's open transaction, for backends that live in the app database."""
    retry: bool = False
    """An earlier attempt claimed this key and recorded no result: the effect may have
    happened. Adapters of vendors that take no idempotency key look for it first."""


class EffectBackend(Protocol):
    """What the outbox needs to know about a backend."""

    @property
    def name(self) -> str: ...

    @property
    def in_app_database(self) -> bool:
        """True when the backend's effects are rows in the app database (the sandbox)."""
        ...


class Outbox:
    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self._sessions = sessions

    async def run(
        self,
        *,
        idempotency_key: str,
        system: str,
        operation: str,
        backend: EffectBackend,
        result_type: type[ResultT],
        act: Callable[[Effect], Awaitable[ResultT]],
    ) -> ResultT:
        """Perform `act` once per idempotency key and return its (recorded) result."""
        if not idempotency_key or len(idempotency_key) > MAX_KEY_LENGTH:
            raise invalid(f"idempotency_key must be 1..{MAX_KEY_LENGTH} characters")
        if backend.in_app_database:
            return await self._run_in_one_transaction(
                idempotency_key, system, operation, backend, result_type, act
            )
        recorded, retry = await self._claim(idempotency_key, system, operation, backend.name)
        if recorded is not None:
            return self._recorded(recorded, result_type, idempotency_key)
        try:
            result = await act(Effect(idempotency_key, retry=retry))
        except BaseException as exc:
            await self._note_failure(idempotency_key, exc)
            raise
        await self._record(idempotency_key, result)
        return result

    async def _run_in_one_transaction(
        self,
        key: str,
        system: str,
        operation: str,
        backend: EffectBackend,
        result_type: type[ResultT],
        act: Callable[[Effect], Awaitable[ResultT]],
    ) -> ResultT:
        async with transaction(self._sessions) as session:
            # The insert takes the row's lock first, so a concurrent duplicate waits here and
            # then finds the `done` row instead of acting too.
            await session.execute(_insert_pending(session, key, system, operation, backend.name))
            row = await session.scalar(
                select(OutboxEntry).where(OutboxEntry.idempotency_key == key)
            )
            assert row is not None
            if row.status == "done":
                return self._recorded(row, result_type, key)
            result = await act(Effect(key, session))
            row.status, row.result, row.completed_at = (
                "done",
                result.model_dump(mode="json"),
                utcnow(),
            )
            row.attempts += 1
            row.error = None
            return result

    async def _claim(
        self, key: str, system: str, operation: str, backend: str
    ) -> tuple[OutboxEntry | None, bool]:
        """Insert the pending row (or count another attempt); return it if already done, and
        whether an earlier attempt may have acted."""
        async with transaction(self._sessions) as session:
            await session.execute(_insert_pending(session, key, system, operation, backend))
            row = await session.scalar(
                select(OutboxEntry).where(OutboxEntry.idempotency_key == key)
            )
            assert row is not None
            if row.status == "done":
                return row, False
            if (row.system, row.operation) != (system, operation):
                raise invalid(
                    f"idempotency key already used for {row.system}.{row.operation}, "
                    f"not {system}.{operation}"
                )
            if row.attempts > 0:
                log.warning(
                    "outbox.acting_again",
                    idempotency_key=key,
                    system=system,
                    operation=operation,
                    earlier_attempts=row.attempts,
                    why="an earlier attempt did not record its result; the vendor gets the "
                    "same key",
                )
            retry = row.attempts > 0
            row.attempts += 1
            return None, retry

    def _recorded(self, row: OutboxEntry, result_type: type[ResultT], key: str) -> ResultT:
        log.info("outbox.replayed", idempotency_key=key, system=row.system, operation=row.operation)
        try:
            return result_type.model_validate(row.result)
        except ValidationError as exc:
            raise ApplicationError(
                f"outbox row for {key!r} holds a result that is not a {result_type.__name__}: "
                f"{exc.error_count()} problems",
                type="OutboxCorrupt",
                non_retryable=True,
            ) from None

    async def _record(self, key: str, result: BaseModel) -> None:
        async with transaction(self._sessions) as session:
            await session.execute(
                update(OutboxEntry)
                .where(OutboxEntry.idempotency_key == key)
                .values(
                    status="done",
                    result=result.model_dump(mode="json"),
                    error=None,
                    completed_at=utcnow(),
                )
            )

    async def _note_failure(self, key: str, exc: BaseException) -> None:
        # The row stays `pending`: the next attempt acts again with the same key.
        message = f"{type(exc).__name__}: {exc}"[:2000]
        try:
            async with transaction(self._sessions) as session:
                await session.execute(
                    update(OutboxEntry)
                    .where(OutboxEntry.idempotency_key == key)
                    .values(error=message)
                )
        except Exception:  # the original error matters more than this note
            log.warning("outbox.note_failure_failed", idempotency_key=key)


def _insert_pending(
    session: AsyncSession, key: str, system: str, operation: str, backend: str
) -> Executable:
    dialect = session.get_bind().dialect.name
    insert = pg_insert if dialect == "postgresql" else sqlite_insert
    return (
        insert(OutboxEntry)
        .values(
            idempotency_key=key,
            system=system,
            operation=operation,
            backend=backend,
            status="pending",
            attempts=0,
            created_at=utcnow(),
        )
        .on_conflict_do_nothing(index_elements=["idempotency_key"])
    )
