"""The one place that assembles a worker: every workflow and every activity opsflow runs."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import timedelta
from typing import Any

from temporalio.client import Client
from temporalio.worker import PatchActivationInput, Worker

from activities.changes import ChangeActivities
from activities.crm import CrmActivities
from activities.deps import ActivityDeps
from activities.ledger import LedgerActivities
from activities.metrics import MetricsActivities
from activities.notify import NotifyActivities
from activities.presence import PresenceActivities
from activities.recovery_events import RecoveryEventActivities
from activities.rollback_notify import RollbackNotifyActivities
from activities.starts import StartActivities
from activities.ticketing import TicketingActivities
from client.settings import Settings
from definitions import conditions
from worker.activity_failures import ActivityFailureInterceptor
from worker.log_context import LogContextInterceptor
from workflows.escalation import EscalationWorkflow
from workflows.handoff import HandoffWorkflow
from workflows.recovery import RecoveryWorkflow
from workflows.releases import RELEASES
from workflows.rollout import RolloutWorkflow
from workflows.sandbox import WORKFLOW_RUNNER

WORKFLOWS: Sequence[type] = (EscalationWorkflow, RolloutWorkflow, RecoveryWorkflow, HandoffWorkflow)

# Activities in flight get this long to finish before a stopping worker cancels them.
GRACEFUL_SHUTDOWN = timedelta(seconds=10)


def activity_functions(deps: ActivityDeps) -> list[Callable[..., Any]]:
    ledger = LedgerActivities(deps)
    crm = CrmActivities(deps)
    ticketing = TicketingActivities(deps)
    notify = NotifyActivities(deps)
    changes = ChangeActivities(deps)
    metrics = MetricsActivities(deps)
    return [
        ledger.append,
        ledger.append_many,
        crm.get_customer,
        crm.select_cohort,
        crm.add_note,
        crm.apply_credit,
        ticketing.create_ticket,
        ticketing.get_ticket,
        ticketing.update_ticket,
        ticketing.add_comment,
        notify.send,
        notify.pager_event,
        StartActivities(deps).start,
        changes.apply,
        changes.revert,
        metrics.read,
        RollbackNotifyActivities(deps).notify_phase_customers,
        *PresenceActivities(deps).all(),
        *RecoveryEventActivities(deps).all(),
    ]


def build_worker(client: Client, settings: Settings, deps: ActivityDeps) -> Worker:
    conditions.warm_up()
    return Worker(
        client,
        task_queue=settings.task_queue,
        workflows=list(WORKFLOWS),
        workflow_runner=WORKFLOW_RUNNER,
        activities=activity_functions(deps),
        max_concurrent_activities=settings.max_concurrent_activities,
        graceful_shutdown_timeout=GRACEFUL_SHUTDOWN,
        # Activity log lines carry the workflow id, run id, activity and attempt.
        interceptors=[LogContextInterceptor(), ActivityFailureInterceptor(deps.sessions)],
        patch_activation_callback=None if settings.workflow_releases else each_change_apart,
    )


RELEASE_IDS = frozenset(release for release, _ in RELEASES)


def each_change_apart(patch: PatchActivationInput) -> bool:
    """New runs record each change's own patch, never a release's (`workflow_releases` off):
    what an opsflow from before releases replays. Histories that have a release's marker
    still replay by it."""
    return patch.patch_id not in RELEASE_IDS
