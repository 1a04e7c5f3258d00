"""The rollout's effects: the activities and patches the workflow issues to carry out a plan.

The core (rollout_core and its topics) decides; these functions carry a decision out, in the
order the workflow always issued its commands (a run in flight replays against that order).
They take what they need (the state, the pinned rollout spec) and run inside the workflow:
`temporalio.workflow` is theirs to call, unlike the core's. Each name is unique across
workflows/ so tests/test_workflow_fingerprints.py follows the calls into them.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError

from workflows.actions import ACTIVITY_RETRY, ActionTarget, call, ledger
from workflows.releases import has_change

with workflow.unsafe.imports_passed_through():
    from activities.models import (
        ChangeApplied,
        ChangeReverted,
        Cohort,
        MessageSent,
        MetricReading,
        ReadMetric,
        SelectCohort,
        SendMessage,
    )
    from activities.rollout_contracts import (
        ApplyPhase,
        CustomerNoticeRequest,
        NotifyPhaseCustomers,
        PhaseCustomersNotified,
        RevertPhase,
    )
    from definitions.models import RolloutSpec
    from workflows import rollout_approvals, rollout_checks, rollout_core
    from workflows.rollout_checks import FailedChecks, MetricWindow
    from workflows.rollout_core import PhaseRevert
    from workflows.rollout_model import Reading, RolloutState

METRIC_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    maximum_interval=timedelta(seconds=10),
    maximum_attempts=3,
)
LONG_ACTIVITY = timedelta(hours=2)
HEARTBEAT = timedelta(seconds=20)
"""Long activities heartbeat per batch or customer: a killed worker's attempt is retried
elsewhere within this, from its last recorded progress."""


def rollout_key(s: RolloutState, step: str) -> str:
    """The idempotency key of one step of this attempt of the change."""
    return f"{workflow.info().workflow_id}/a{s.attempt}/{step}"


def rollout_target(s: RolloutState) -> ActionTarget:
    """Whom the ledger entries are about: the change, its owner and its plan."""
    return ActionTarget(
        kind="rollout",
        customer_id=s.change.change_id,
        owner=s.change.owner,
        definition=s.plan,
    )


async def record_rollout_step(s: RolloutState, step: str, detail: dict[str, Any]) -> None:
    """One ledger entry of this attempt."""
    await ledger(rollout_target(s), f"a{s.attempt}-{step}", detail, subject=s.change.change_id)


async def assess_rollout_impact(s: RolloutState, spec: RolloutSpec) -> None:
    """Each phase's cohort size and eligible customers (no ids), then the impact's ledger entry."""
    sizes = []
    for number, phase in enumerate(spec.phases):
        cohort: Cohort = await call(
            "crm.select_cohort",
            SelectCohort(cohort=rollout_core.cohort_of(s, phase), max_ids=0),
            Cohort,
        )
        s.phases[number].cohort_size = cohort.size
        s.phases[number].eligible = cohort.eligible
        sizes.append({"phase": phase.name, "percent": phase.cohort.percent, "size": cohort.size})
    await record_rollout_step(s, "impact", rollout_approvals.impact_assessed(s, spec, sizes))


async def ask_rollout_approvers(
    s: RolloutState, spec: RolloutSpec, stage: str, *, reminder: bool
) -> None:
    """Ask the approvers' group on the plan's channel what is asked, for which cohort, by
    when, and the exact command that answers."""
    notice = rollout_approvals.approval_notice(s, spec, stage, reminder=reminder)
    try:
        await call(
            "notify.send",
            SendMessage(
                idempotency_key=rollout_key(s, notice.step),
                channel=notice.channel,
                recipient=notice.recipient,
                template="rollout-approval",
                context=notice.context,
                severity="info",
            ),
            MessageSent,
        )
    except ActivityError as exc:
        workflow.logger.warning("asking %s failed: %s", spec.approvals.group, exc.cause)
    await record_rollout_step(s, notice.step, {"asked": spec.approvals.group, **notice.ask})


async def page_rollout_people(
    s: RolloutState, spec: RolloutSpec, attention: str, described: str, *, approvers: bool
) -> None:
    """Tell the owner (and the approvers' channel) that the rollout needs a person."""
    page = rollout_approvals.page(s, spec, attention, described, approvers=approvers)
    for number, (channel, recipient) in enumerate(page.recipients):
        try:
            await call(
                "notify.send",
                SendMessage(
                    idempotency_key=rollout_key(s, f"{page.step}/{number}"),
                    channel=channel,
                    recipient=recipient,
                    template="rollout-attention",
                    context=page.context,
                    severity="warning",
                ),
                MessageSent,
            )
        except ActivityError as exc:
            workflow.logger.warning("paging %s failed: %s", recipient, exc.cause)
    await record_rollout_step(s, page.step, {"attention": attention, "approvers": approvers})


async def apply_rollout_phase(s: RolloutState, spec: RolloutSpec) -> None:
    """Apply the change to the current phase's cohort and record whom it exposed."""
    number = s.phase_index
    # Since this patch the apply records exactly whom it exposed; rollback reads that.
    recorded = has_change("exposure-record")
    applied: ChangeApplied = await workflow.execute_activity(
        "changes.apply",
        ApplyPhase(
            idempotency_key=rollout_key(s, f"phase-{number + 1}/apply"),
            change_id=s.change.change_id,
            flag_key=spec.change.key,
            value=spec.change.value,
            cohort=rollout_core.cohort_of(s, spec.phases[number]),
            attempt=s.attempt if recorded else None,
            phase=number + 1 if recorded else None,
        ),
        result_type=ChangeApplied,
        start_to_close_timeout=LONG_ACTIVITY,
        heartbeat_timeout=HEARTBEAT,
        retry_policy=ACTIVITY_RETRY,
    )
    detail = rollout_core.phase_applied(
        s,
        spec,
        number,
        newly_exposed=applied.exposed,
        total_exposed=applied.total_exposed,
        recorded=recorded,
        now=workflow.now(),
    )
    await record_rollout_step(s, f"phase-{number + 1}-applied", detail)


async def read_rollout_checks(s: RolloutState, spec: RolloutSpec) -> FailedChecks | None:
    """One round of readings of the current phase's checks (all at once), recorded in the
    state; the checks that failed with it are in the ledger and returned, else None."""
    checks = spec.phases[s.phase_index].checks
    analysis = spec.analysis
    now = workflow.now()

    async def read(metric: str, window: MetricWindow) -> MetricReading:
        result: MetricReading = await workflow.execute_activity(
            "metrics.read",
            ReadMetric(
                metric=metric,
                cohort=window.cohort,
                window_start=window.start,
                window_end=window.end,
            ),
            result_type=MetricReading,
            start_to_close_timeout=timedelta(seconds=30),
            retry_policy=METRIC_RETRY,
        )
        return result

    async def one(check_number: int) -> Reading:
        check = checks[check_number]
        try:
            exposed = await read(check.metric, rollout_checks.exposed_window(s, check.window, now))
            baseline = None
            if rollout_checks.needs_baseline(check):
                baseline = await read(
                    check.metric, rollout_checks.baseline_window(s, check.window, now)
                )
        except ActivityError as exc:
            return rollout_checks.error_reading(now, str(exc.cause or exc))
        return rollout_checks.reading_of(
            check,
            analysis,
            now,
            (exposed.value, exposed.sample_size),
            (baseline.value, baseline.sample_size) if baseline else None,
        )

    readings = await asyncio.gather(*(one(n) for n in range(len(checks))))
    # Since this patch failure_limit counts failing readings in a row unless the plan
    # says `failure_count: total` (before it, always the whole bake).
    consecutive = analysis.failure_count == "consecutive" and has_change("consecutive-failures")
    failed = rollout_checks.record_readings(s, spec, list(readings), consecutive=consecutive)
    if failed is not None:
        await record_rollout_step(s, failed.step, failed.detail)
    return failed


async def revert_rollout_phases(s: RolloutState, spec: RolloutSpec, reason: str) -> None:
    """Revert the applied phases, last first, each with its customers' notices."""
    # Before this patch the first revert undid the whole change; now each phase reverts
    # its own customers (its cohort minus the earlier phases'), last phase first.
    scoped = has_change("phase-scoped-revert")
    for revert in rollout_core.reverts(s, spec):
        await revert_one_rollout_phase(s, spec, revert, reason, scoped=scoped)


async def revert_one_rollout_phase(
    s: RolloutState, spec: RolloutSpec, revert: PhaseRevert, reason: str, *, scoped: bool
) -> None:
    """Undo the change for one phase's customers, send them the plan's notice and recovery
    actions (heartbeating per customer), and record the phase's rollback."""
    number = revert.number
    phase = s.phases[number]
    notice = spec.rollback.notify
    # A phase applied with the exposure record reverts and notifies exactly whom it exposed;
    # older phases recompute their cohorts.
    reverted: ChangeReverted = await call(
        "changes.revert",
        RevertPhase(
            idempotency_key=rollout_key(s, f"rollback/phase-{number + 1}/revert"),
            change_id=s.change.change_id,
            flag_key=spec.change.key,
            cohort=revert.cohort if scoped else None,
            earlier=revert.earlier if scoped else [],
            attempt=revert.attempt,
            phase=revert.phase_number,
        ),
        ChangeReverted,
    )
    s.customers_reverted += reverted.reverted
    done: PhaseCustomersNotified = await workflow.execute_activity(
        "rollout.notify_phase_customers",
        NotifyPhaseCustomers(
            idempotency_key=rollout_key(s, f"rollback/phase-{number + 1}/customers"),
            change_id=s.change.change_id,
            phase=phase.name,
            cohort=revert.cohort,
            earlier=revert.earlier,
            attempt=revert.attempt,
            phase_number=revert.phase_number,
            notice=CustomerNoticeRequest(channel=notice.channel, template=notice.template)
            if notice
            else None,
            recovery=list(spec.rollback.recovery),
            context={
                "change": {
                    "id": s.change.change_id,
                    "owner": s.change.owner,
                    "reason": s.change.reason,
                    "plan": s.plan,
                    "rollback_reason": reason,
                },
                "phase": {"name": phase.name, "percent": phase.percent},
            },
        ),
        result_type=PhaseCustomersNotified,
        start_to_close_timeout=LONG_ACTIVITY,
        heartbeat_timeout=HEARTBEAT,
        retry_policy=ACTIVITY_RETRY,
    )
    phase.reverted, phase.notified = True, done.notified
    s.customers_notified += done.notified
    await record_rollout_step(
        s,
        f"rollback-phase-{number + 1}",
        {
            "phase": phase.name,
            "reverted": reverted.reverted,
            "customers": done.customers,
            "notified": done.notified,
            "recovery_actions": done.recovery_actions,
            "failed": done.failed,
        },
    )
