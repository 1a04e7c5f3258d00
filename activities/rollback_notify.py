"""Rollback of one phase of a rollout, for its customers: tell each of them once, in their
language, and run the plan's service-recovery actions, in batches with heartbeats.

The customers are exactly those the phase's apply recorded as exposed (`rollout_exposures`),
read here in keyset pages, so their ids never enter a workflow history: customers who joined
later are never told, customers who left the cohort's condition still are. (Runs from before
the record recompute the phase's cohort minus the earlier phases' instead.)
Every effect goes through the outbox with a key of `<key>/<customer id>/...`: a retried
attempt (resuming from its last heartbeat, `NotifyProgress`) never notifies or acts twice.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, Literal

import structlog
from pydantic import Field
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities import exposures
from activities.cohorts import Condition
from activities.crm import CrmActivities
from activities.customer_contracts import CustomerProfile
from activities.deps import ActivityDeps
from activities.heartbeat import HeartbeatDetails, Progress, progress
from activities.models import AddNote, ApplyCredit, Channel, CreateTicket, SendMessage
from activities.notify import NotifyActivities
from activities.rollout_contracts import (
    NotifyPhaseCustomers,
    PhaseCustomersNotified,
)
from activities.ticketing import TicketingActivities
from definitions.common import (
    CreateTicketAction,
    CreditAction,
    CrmNoteAction,
    NotifyAction,
    ScheduleCallbackAction,
)
from definitions.templates import TemplateProblem, render_string

log = structlog.get_logger(__name__)

_CHANNELS: dict[str, Channel] = {
    "email": "email",
    "slack": "chat",
    "chat": "chat",
    "pager": "pager",
    "sms": "chat",
}


class NotifyProgress(HeartbeatDetails):
    """How far one phase's rollback notices got: every customer up to `after` (in id order)
    is done, with these counts."""

    kind: Literal["rollback-notify/1"] = "rollback-notify/1"
    after: str | None = None
    customers: int = Field(0, ge=0)
    notified: int = Field(0, ge=0)
    recovery_actions: int = Field(0, ge=0)
    failed: int = Field(0, ge=0)


class RollbackNotifyActivities:
    def __init__(self, deps: ActivityDeps) -> None:
        self._deps = deps
        self._notify = NotifyActivities(deps)
        self._crm = CrmActivities(deps)
        self._ticketing = TicketingActivities(deps)

    @activity.defn(name="rollout.notify_phase_customers")
    async def notify_phase_customers(self, request: NotifyPhaseCustomers) -> PhaseCustomersNotified:
        conditions = [Condition(step.when) if step.when else None for step in request.recovery]
        # A retried attempt resumes after the last customer it recorded (customers go in id
        # order); the outbox makes the overlap (a customer cut short by a crash) harmless.
        first = NotifyProgress()
        start = Progress.resume(NotifyProgress, first)
        with progress(start) as done:
            state = done.details
            async for customer_id in self._customers(request, state.after):
                sent, acted, refused = 0, 0, 0
                try:
                    sent, acted = await self._one(request, customer_id, conditions)
                except ApplicationError as exc:
                    if not exc.non_retryable:
                        raise
                    refused = 1
                    log.warning(
                        "rollback.customer_refused", customer_id=customer_id, error=exc.message
                    )
                state = state.model_copy(
                    update={
                        "after": customer_id,
                        "customers": state.customers + 1,
                        "notified": state.notified + sent,
                        "recovery_actions": state.recovery_actions + acted,
                        "failed": state.failed + refused,
                    }
                )
                done.save(state)
        log.info(
            "rollback.phase_customers",
            change_id=request.change_id,
            phase=request.phase,
            customers=state.customers,
            notified=state.notified,
            recovery_actions=state.recovery_actions,
            failed=state.failed,
            resumed_after=start.after,
        )
        return PhaseCustomersNotified(
            customers=state.customers,
            notified=state.notified,
            recovery_actions=state.recovery_actions,
            failed=state.failed,
        )

    async def _customers(
        self, request: NotifyPhaseCustomers, after: str | None
    ) -> AsyncIterator[str]:
        """The phase's own customers after `after`, in id order: those its apply recorded
        (keyset pages), or for older runs the cohort minus the earlier phases' now."""
        if request.attempt is not None and request.phase_number is not None:
            async for page in exposures.pages(
                self._deps.sessions,
                request.change_id,
                request.attempt,
                request.phase_number,
                after=after,
            ):
                for customer_id in page:
                    yield customer_id
            return
        for customer_id in await self._members(request):
            if after is None or customer_id > after:
                yield customer_id

    async def _members(self, request: NotifyPhaseCustomers) -> list[str]:
        """The phase's own customers in id order: its cohort minus the earlier phases'."""
        crm = self._deps.resolved_backends.crm
        members = (await crm.cohort_members(request.cohort)).customer_ids
        if request.earlier:
            taken: set[str] = set()
            for spec in request.earlier:
                taken.update((await crm.cohort_members(spec)).customer_ids)
            members = [customer for customer in members if customer not in taken]
        return sorted(members)

    async def _one(
        self,
        request: NotifyPhaseCustomers,
        customer_id: str,
        conditions: list[Condition | None],
    ) -> tuple[int, int]:
        key = f"{request.idempotency_key}/{customer_id}"
        profile: CustomerProfile = await self._deps.resolved_backends.crm.get_customer(customer_id)
        customer = profile.model_dump(mode="json")
        customer["lifetime_value"] = float(profile.lifetime_value)
        context = {**request.context, "customer": customer}
        sent = 0
        if request.notice is not None:
            await self._notify.send(
                SendMessage(
                    idempotency_key=f"{key}/notice",
                    channel=_CHANNELS.get(request.notice.channel, "email"),
                    recipient=f"customer:{customer_id}",
                    template=request.notice.template,
                    context=context,
                    severity="info",
                )
            )
            sent = 1
        acted = 0
        for number, (step, condition) in enumerate(zip(request.recovery, conditions, strict=True)):
            if condition is not None and not condition.matches(customer):
                continue
            for index, action in enumerate(step.actions):
                acted += await self._act(
                    action, f"{key}/recovery/{number}/{index}", customer_id, context
                )
        return sent, acted

    async def _act(
        self, action: object, key: str, customer_id: str, context: dict[str, Any]
    ) -> int:
        if isinstance(action, CrmNoteAction):
            await self._crm.add_note(
                AddNote(
                    idempotency_key=key, customer_id=customer_id, body=_render(action.text, context)
                )
            )
        elif isinstance(action, CreateTicketAction):
            await self._ticketing.create_ticket(
                CreateTicket(
                    idempotency_key=key,
                    customer_id=customer_id,
                    subject=_render(action.subject, context),
                    priority=action.priority,
                    queue=action.queue,
                    tags=["opsflow", "rollout", "rollback"],
                )
            )
        elif isinstance(action, ScheduleCallbackAction):
            await self._ticketing.create_ticket(
                CreateTicket(
                    idempotency_key=key,
                    customer_id=customer_id,
                    subject="Call the customer back",
                    queue=action.queue,
                    tags=["opsflow", "rollout", "callback"],
                )
            )
        elif isinstance(action, CreditAction):
            if action.approval_above is not None and action.amount > action.approval_above:
                return 0
            await self._crm.apply_credit(
                ApplyCredit(
                    idempotency_key=key,
                    customer_id=customer_id,
                    amount=action.amount,
                    currency=action.currency,
                    reason=action.reason,
                )
            )
        elif isinstance(action, NotifyAction):
            for m, name in enumerate(action.to):
                await self._notify.send(
                    SendMessage(
                        idempotency_key=f"{key}/{m}",
                        channel=_CHANNELS[action.channel],
                        recipient=f"customer:{customer_id}" if name == "customer" else name,
                        template=action.template,
                        context=context,
                    )
                )
        else:  # assign, set_priority, update_ticket, start: nothing to act on per customer
            return 0
        return 1


def _render(source: str, context: dict[str, Any]) -> str:
    try:
        return render_string(source, context)
    except TemplateProblem as exc:
        return f"{source}\n\n[template could not be rendered: {exc}]"
