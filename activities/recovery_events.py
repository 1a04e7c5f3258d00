"""Delivering workflow-emitted events (`sla.breached`) to the customer's recovery workflow.

A workflow cannot signal-with-start another, so this activity does it with the worker's own
client: `Recovery` workflow `customer-<id>`, signal `event`, the envelope plus the digest of
the recovery rule sets deployed now. The envelope's id is deterministic (the escalation
workflow uses `<case workflow id>/<sla>` from source `escalation`), so a retried activity
delivers an event the recovery workflow has already seen, and it ignores it: exactly once
per breach.

`recovery.rule_sets` gives a running recovery workflow the exact rule-set versions a digest
names, when the deployed ones differ from its own.

`recovery.previous_state` gives a new run of `customer-<id>` what the customer's last run
knew when it ended idle (the ledger entry it wrote, step `run-ended-...`), so a duplicate
delivery of an event that run already took is recognised by the new one.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

from sqlalchemy import select
from temporalio import activity
from temporalio.common import SearchAttributePair, TypedSearchAttributes
from temporalio.exceptions import ApplicationError

from activities import search_attributes as sa
from activities.deps import ActivityDeps
from activities.recovery_contracts import (
    MEMORY_STEP,
    NEXT_CHUNK_ACTIVITY,
    PreviousState,
    RecoveryInput,
    RecoveryMemory,
    RecoveryRules,
    RulesDigest,
    customer_workflow_id,
    rules_digest,
)
from activities.recovery_pacing import CustomerBusy, CustomerPacing
from definitions.events import EventEnvelope, parse_event_data
from store.models import LedgerEntry
from store.registry import DefinitionNotFound, get, latest_of_kind


class RecoveryEventActivities:
    def __init__(self, deps: ActivityDeps) -> None:
        self._sessions = deps.sessions
        self._pacing = CustomerPacing()

    def all(self) -> list[Callable[..., Any]]:
        return [self.deliver_event, self.rule_sets, self.previous_state, self.next_chunk]

    @activity.defn(name=NEXT_CHUNK_ACTIVITY)
    async def next_chunk(self) -> None:
        """Nothing: awaited as a local activity between two chunks of a customer's events,
        it ends the workflow's activation without a round trip to the server."""

    @activity.defn(name="recovery.deliver_event")
    async def deliver_event(self, event: EventEnvelope) -> str:
        """Signal-with-start `customer-<id>` with `event`; returns the workflow id ("" when
        no recovery rule set is deployed: there is nothing to decide with)."""
        try:
            parse_event_data(event.type, event.data)
        except (KeyError, ValueError) as exc:
            raise ApplicationError(
                f"cannot deliver a bad {event.type} event: {str(exc)[:200]}", non_retryable=True
            ) from None
        customer = event.data.get("customer_id")
        if not isinstance(customer, str):
            raise ApplicationError("the event names no customer_id", non_retryable=True)
        rules = await latest_of_kind(self._sessions, "recovery")
        if not rules:
            activity.logger.info("no recovery rules deployed: %s not delivered", event.type)
            return ""
        workflow_id = customer_workflow_id(customer)
        client = activity.client()
        try:
            await self._pacing.before_sending(client, workflow_id)
        except CustomerBusy as exc:  # retried by the activity's policy, after a pause
            raise ApplicationError(str(exc), next_retry_delay=timedelta(seconds=2)) from None
        await client.start_workflow(
            "Recovery",
            RecoveryInput(rules=rules),
            id=workflow_id,
            task_queue=activity.info().task_queue,
            start_signal="event",
            start_signal_args=[event, RulesDigest(digest=rules_digest(rules))],
            search_attributes=TypedSearchAttributes(
                [
                    SearchAttributePair(sa.OPS_KIND, "recovery"),
                    SearchAttributePair(sa.OPS_CUSTOMER_ID, customer),
                ]
            ),
            static_summary=f"recovery for {customer}",
        )
        self._pacing.sent(workflow_id)
        return workflow_id

    @activity.defn(name="recovery.rule_sets")
    async def rule_sets(self, wanted: RulesDigest) -> RecoveryRules:
        """The rule-set versions `wanted` names, each checked against its content hash."""
        rules = []
        for entry in wanted.digest:
            ref, _, content_hash = entry.partition("#")
            name, _, version = ref.rpartition("@")
            if not name or not version.isdigit():
                raise ApplicationError(
                    f"not a rule-set digest entry: {entry!r}", non_retryable=True
                )
            try:
                pinned = await get(self._sessions, name, int(version))
            except DefinitionNotFound as exc:
                raise ApplicationError(str(exc), non_retryable=True) from None
            if pinned.content_hash != content_hash:
                raise ApplicationError(
                    f"{ref} has content {pinned.content_hash}, not {content_hash}",
                    non_retryable=True,
                )
            rules.append(pinned)
        return RecoveryRules(rules=rules)

    @activity.defn(name="recovery.previous_state")
    async def previous_state(self, wanted: PreviousState) -> RecoveryMemory:
        """The state the customer's latest run recorded when it ended (none: empty)."""
        async with self._sessions() as session:
            detail = await session.scalar(
                select(LedgerEntry.detail)
                .where(
                    LedgerEntry.workflow_id == customer_workflow_id(wanted.customer_id),
                    LedgerEntry.step.startswith(MEMORY_STEP, autoescape=True),
                )
                .order_by(LedgerEntry.at.desc(), LedgerEntry.id.desc())
                .limit(1)
            )
        if not detail or "state" not in detail:
            return RecoveryMemory()
        return RecoveryMemory.model_validate({"state": detail["state"]})
