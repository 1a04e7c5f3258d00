"""Change activities for rollouts: expose a cohort to a flag value, and revert it."""

from __future__ import annotations

from temporalio import activity

from activities.deps import ActivityDeps
from activities.models import ApplyChange, ChangeApplied, ChangeReverted, RevertChange
from activities.outbox import Effect, Outbox


class ChangeActivities:
    def __init__(self, deps: ActivityDeps) -> None:
        self._deps = deps
        self._outbox = Outbox(deps.sessions)

    @activity.defn(name="changes.apply")
    async def apply(self, request: ApplyChange) -> ChangeApplied:
        """Expose the cohort (selected through the CRM) to the change; phases grow by percent."""
        backends = self._deps.resolved_backends
        changes = backends.changes

        async def act(effect: Effect) -> ChangeApplied:
            members = await backends.crm.cohort_members(request.cohort)
            return await changes.apply(effect, request, members.customer_ids)

        return await self._outbox.run(
            idempotency_key=request.idempotency_key,
            system="changes",
            operation="apply",
            backend=changes,
            result_type=ChangeApplied,
            act=act,
        )

    @activity.defn(name="changes.revert")
    async def revert(self, request: RevertChange) -> ChangeReverted:
        """Revert the whole change, or (with a cohort) one phase's own customers: the cohort's
        members minus the earlier phases' members, selected through the CRM."""
        backends = self._deps.resolved_backends
        changes = backends.changes

        async def act(effect: Effect) -> ChangeReverted:
            if request.cohort is None:
                return await changes.revert(effect, request)
            members = (await backends.crm.cohort_members(request.cohort)).customer_ids
            if request.earlier:
                taken: set[str] = set()
                for spec in request.earlier:
                    taken.update((await backends.crm.cohort_members(spec)).customer_ids)
                members = [customer for customer in members if customer not in taken]
            return await changes.revert(effect, request, members)

        return await self._outbox.run(
            idempotency_key=request.idempotency_key,
            system="changes",
            operation="revert",
            backend=changes,
            result_type=ChangeReverted,
            act=act,
        )
