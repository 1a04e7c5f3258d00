"""CRM activities: customer profiles, cohorts, timeline notes and service credits."""

from __future__ import annotations

from temporalio import activity

from activities.customer_contracts import CustomerProfile
from activities.deps import ActivityDeps
from activities.models import (
    AddNote,
    ApplyCredit,
    Cohort,
    CreditApplied,
    GetCustomer,
    NoteAdded,
    SelectCohort,
)
from activities.outbox import Outbox


class CrmActivities:
    def __init__(self, deps: ActivityDeps) -> None:
        self._deps = deps
        self._outbox = Outbox(deps.sessions)

    @activity.defn(name="crm.get_customer")
    async def get_customer(self, request: GetCustomer) -> CustomerProfile:
        """The customer's profile (no email or phone: those stay out of workflow histories)."""
        return await self._deps.resolved_backends.crm.get_customer(request.customer_id)

    @activity.defn(name="crm.select_cohort")
    async def select_cohort(self, request: SelectCohort) -> Cohort:
        """The cohort's exact size and its first `max_ids` members in id order."""
        members = await self._deps.resolved_backends.crm.cohort_members(request.cohort)
        return Cohort(
            size=len(members.customer_ids),
            eligible=members.eligible,
            customer_ids=members.customer_ids[: request.max_ids],
            truncated=len(members.customer_ids) > request.max_ids,
        )

    @activity.defn(name="crm.add_note")
    async def add_note(self, request: AddNote) -> NoteAdded:
        crm = self._deps.resolved_backends.crm
        return await self._outbox.run(
            idempotency_key=request.idempotency_key,
            system="crm",
            operation="add_note",
            backend=crm,
            result_type=NoteAdded,
            act=lambda effect: crm.add_note(effect, request),
        )

    @activity.defn(name="crm.apply_credit")
    async def apply_credit(self, request: ApplyCredit) -> CreditApplied:
        credits = self._deps.resolved_backends.credits
        return await self._outbox.run(
            idempotency_key=request.idempotency_key,
            system="crm",
            operation="apply_credit",
            backend=credits,
            result_type=CreditApplied,
            act=lambda effect: credits.apply_credit(effect, request),
        )
