"""The escalation case's effects: the activities, patches and upserts the workflow issues to
carry out what the core decided, in the order the workflow always issued them (a run in
flight replays against that order).

The core (escalation_core and its topics) decides; these functions run inside the workflow:
`temporalio.workflow` is theirs to call, unlike the core's. Each name is unique across
workflows/ so tests/test_workflow_fingerprints.py follows the calls into them.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from temporalio import workflow
from temporalio.common import SearchAttributeUpdate
from temporalio.exceptions import ActivityError

from activities import search_attributes as sa
from workflows.actions import ActionOutcome, ActionTarget, call, failure_reason, ledger
from workflows.releases import has_change

with workflow.unsafe.imports_passed_through():
    from activities.customer_contracts import CustomerProfile
    from activities.models import GetCustomer, PagerEvent, PagerEventSent
    from definitions.events import SlaBreached
    from workflows.escalation_core import AlertAction, EscalationCore
    from workflows.escalation_status import breach_envelope, search_attributes

# Failed actions are recorded (state, ledger) and a failed reassign answers with the failure;
# runs recorded before this did neither.
ACTION_FAILURES_PATCH = "escalation-action-failures"
# Search attributes carry the next breach (OpsDueAt) and OpsState=stuck while a failed action
# waits for a person, and are upserted only when they change. Runs recorded before this
# upserted them all at every change of state.
DUE_AT_PATCH = "escalation-due-at-stuck"
_UNSET = object()

Target = Callable[[], ActionTarget]
"""The case as its actions and ledger entries see it, at the moment they run."""


def _pair(name: str, value: object) -> SearchAttributeUpdate[Any]:
    """The update for search attribute `name` (from the registry) to `value`."""
    key = next(k for k in sa.ALL if k.name == name)
    return key.value_set(value)


def upsert_case_attributes(core: EscalationCore, upserted: dict[str, object]) -> None:
    """Upsert the case's search attributes that changed since `upserted` (which it updates)."""
    if not has_change(DUE_AT_PATCH):
        values = search_attributes(core, due_and_stuck=False)
        workflow.upsert_search_attributes([_pair(k, v) for k, v in values.items()])
        return
    values = search_attributes(core)
    # Every upsert is a command (a billed action on Temporal Cloud): only what changed.
    changed = {k: v for k, v in values.items() if upserted.get(k, _UNSET) != v}
    if not changed:
        return
    upserted.update(changed)
    updates = [_pair(name, value) for name, value in changed.items()]
    workflow.upsert_search_attributes(updates)


async def read_customer_profile(customer_id: str) -> CustomerProfile | None:
    """The customer's CRM profile, for templates and recipients; a case opens without."""
    try:
        profile: CustomerProfile = await call(
            "crm.get_customer", GetCustomer(customer_id=customer_id), CustomerProfile
        )
    except ActivityError as exc:
        workflow.logger.warning("no CRM profile for the case's customer: %s", exc.cause)
        return None
    return profile


async def deliver_breach_to_recovery(event: SlaBreached, cycle: int = 0) -> None:
    """Hand the breach to `customer-<id>` (recovery); its fixed id makes it count once
    (once per target, for a metric that restarts: `cycle`)."""
    envelope = breach_envelope(workflow.info().workflow_id, event, cycle)
    try:
        await call("recovery.deliver_event", envelope, str)
    except ActivityError as exc:
        workflow.logger.warning("sla.breached not delivered to recovery: %s", exc.cause)


async def record_failed_actions(
    core: EscalationCore, step: str, outcome: ActionOutcome, target: Target
) -> None:
    """Failed actions go into the state and the ledger (`<step>-failed`): not done."""
    if not outcome.failed or not has_change(ACTION_FAILURES_PATCH):
        return
    workflow.logger.warning("case actions failed at %s: %s", step, "; ".join(outcome.failed))
    core.keep_failures(step, outcome.failed, workflow.now())
    await ledger(target(), f"{step}-failed", {"failed": outcome.failed})


async def follow_pager_alerts(core: EscalationCore, action: AlertAction, target: Target) -> None:
    """Acknowledge or resolve every alert the case's pages opened."""
    workflow_id = workflow.info().workflow_id
    limit = core.spec.give_up_after.pager
    for index, alert in core.alerts_to_follow(action):
        try:
            await call(
                "notify.pager_event",
                PagerEvent(
                    idempotency_key=f"{workflow_id}/pager-{action}/{index}",
                    dedup_key=alert.dedup_key,
                    action=action,
                ),
                PagerEventSent,
                give_up_after=limit,
            )
        except ActivityError as exc:
            step = f"pager-{action}"
            error = f"{action} alert of {alert.recipient}: {failure_reason(exc, limit)}"
            core.keep_failures(step, [error], workflow.now())
            await ledger(target(), f"{step}-{index}-failed", {"failed": [error]})
            continue
        core.alert_followed(alert, action)


async def cancel_case_actions(
    core: EscalationCore, tasks: list[asyncio.Task[None]], target: Target
) -> None:
    """The case is resolved: what still runs or retries is cancelled, and recorded."""
    unfinished = list(core.state.in_flight)
    for task in tasks:
        task.cancel()
    if tasks:
        await asyncio.gather(*tasks, return_exceptions=True)
    for item in unfinished:
        detail = core.cancelled(item, workflow.now())
        await ledger(target(), f"{item.step}-cancelled", detail)
