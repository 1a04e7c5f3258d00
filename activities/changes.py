"""Change activities for rollouts: expose a cohort to a flag value, and revert it.

With the phase and attempt named (`ApplyPhase`, `RevertPhase`), apply records exactly whom
it exposed (`activities/exposures.py`) in the transaction of its effect (the sandbox flag
store's own; for a vendor, right after the vendor accepted and before the outbox marks it
done, so a crash in between records again on the retry), and revert reads that record.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from sqlalchemy.ext.asyncio import AsyncSession
from temporalio import activity

from activities import exposures
from activities.deps import ActivityDeps
from activities.models import ChangeApplied, ChangeReverted
from activities.outbox import Effect, Outbox
from activities.rollout_contracts import ApplyPhase, RevertPhase
from store.db import transaction


class ChangeActivities:
    def __init__(self, deps: ActivityDeps) -> None:
        self._deps = deps
        self._outbox = Outbox(deps.sessions)

    @asynccontextmanager
    async def _record_session(self, effect: Effect) -> AsyncIterator[AsyncSession]:
        """The effect's own transaction when the backend lives in the app database."""
        if effect.session is not None:
            yield effect.session
            return
        async with transaction(self._deps.sessions) as session:
            yield session

    @activity.defn(name="changes.apply")
    async def apply(self, request: ApplyPhase) -> ChangeApplied:
        """Expose the cohort (selected through the CRM) to the change; phases grow by percent."""
        request = ApplyPhase.model_validate(request.model_dump())  # a plain ApplyChange too
        backends = self._deps.resolved_backends
        changes = backends.changes

        async def act(effect: Effect) -> ChangeApplied:
            members = await backends.crm.cohort_members(request.cohort)
            applied = await changes.apply(effect, request, members.customer_ids)
            if request.attempt is not None and request.phase is not None:
                async with self._record_session(effect) as session:
                    await exposures.record(
                        session,
                        request.change_id,
                        request.attempt,
                        request.phase,
                        members.customer_ids,
                    )
            return applied

        return await self._outbox.run(
            idempotency_key=request.idempotency_key,
            system="changes",
            operation="apply",
            backend=changes,
            result_type=ChangeApplied,
            act=act,
        )

    @activity.defn(name="changes.revert")
    async def revert(self, request: RevertPhase) -> ChangeReverted:
        """Revert one phase's own customers: with the attempt named, exactly those its apply
        recorded; otherwise (older runs) the cohort's members minus the earlier phases'
        members, selected through the CRM now; with neither, the whole change."""
        request = RevertPhase.model_validate(request.model_dump())  # a plain RevertChange too
        backends = self._deps.resolved_backends
        changes = backends.changes

        async def act(effect: Effect) -> ChangeReverted:
            if request.attempt is not None and request.phase is not None:
                async with self._record_session(effect) as session:
                    members = await exposures.members(
                        session, request.change_id, request.attempt, request.phase
                    )
                reverted = await changes.revert(effect, request, members)
                async with self._record_session(effect) as session:
                    await exposures.mark_reverted(
                        session, request.change_id, request.attempt, request.phase
                    )
                return reverted
            if request.cohort is None:
                return await changes.revert(effect, request)
            ids = (await backends.crm.cohort_members(request.cohort)).customer_ids
            if request.earlier:
                taken: set[str] = set()
                for spec in request.earlier:
                    taken.update((await backends.crm.cohort_members(spec)).customer_ids)
                ids = [customer for customer in ids if customer not in taken]
            return await changes.revert(effect, request, ids)

        return await self._outbox.run(
            idempotency_key=request.idempotency_key,
            system="changes",
            operation="revert",
            backend=changes,
            result_type=ChangeReverted,
            act=act,
        )
