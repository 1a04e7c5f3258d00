"""Client-side operations on rollouts, shared by the command line and tests: starting, retrying
and commanding a rollout here (starting names the workflow); reading one is
client/rollout_read.py's, re-exported here under the same names."""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from pydantic import BaseModel
from temporalio.client import (
    Client,
    WorkflowExecutionStatus,
    WorkflowHandle,
    WorkflowQueryFailedError,
    WorkflowUpdateFailedError,
)
from temporalio.common import SearchAttributePair, TypedSearchAttributes, WorkflowIDReusePolicy
from temporalio.exceptions import ApplicationError, WorkflowAlreadyStartedError
from temporalio.service import RPCError, RPCStatusCode

from activities import search_attributes as sa
from client.rollout_read import (
    PendingActivity,
    RolloutCommandRefused,
    list_rollouts,
    pending_activities,
    rollout_handle,
    rollout_state,
)
from definitions.errors import OpsflowError
from definitions.models import PinnedDefinition
from workflows.rollout import RolloutWorkflow
from workflows.rollout_model import ChangeRequest, RolloutStatus, rollout_workflow_id
from workflows.rollout_pinned import RolloutInput

__all__ = [
    "COMMANDS",
    "PendingActivity",
    "RetriedRollout",
    "RolloutCommandRefused",
    "StartedRollout",
    "command_rollout",
    "list_rollouts",
    "pending_activities",
    "retry_rollout",
    "rollout_state",
    "start_rollout",
]

COMMANDS = ("approve", "reject", "pause", "resume", "promote", "promote_full", "abort", "retry")


@dataclass(frozen=True)
class StartedRollout:
    handle: WorkflowHandle[RolloutWorkflow, RolloutStatus]
    started: bool
    """False when a rollout of this change is already running: nothing new started."""
    plan: str
    """The plan the rollout runs under: the given one, or the running run's own."""
    running: ChangeRequest | None = None
    """When one was already running and its state could be read: its change request."""

    def not_applied(self, change: ChangeRequest) -> list[str]:
        """The given fields an already running rollout did not take (it keeps its own)."""
        if self.started or self.running is None:
            return []
        return [
            field
            for field in ("owner", "reason", "ticket_id", "outside_windows")
            if getattr(change, field) not in (None, False)  # given, not left at its default
            and getattr(change, field) != getattr(self.running, field)
        ]


async def _running(
    handle: WorkflowHandle[RolloutWorkflow, RolloutStatus], fallback: str
) -> tuple[str, ChangeRequest | None]:
    """The running run's plan (its OpsDefinition search attribute) and change request."""
    plan = fallback
    with contextlib.suppress(RPCError):
        described = await handle.describe()
        plan = described.typed_search_attributes.get(sa.OPS_DEFINITION) or plan
    try:
        status: RolloutStatus = await handle.query(
            "state", result_type=RolloutStatus, rpc_timeout=timedelta(seconds=5)
        )
    except (RPCError, WorkflowQueryFailedError):
        return plan, None
    return status.plan or plan, status.change


async def start_rollout(
    client: Client, task_queue: str, change: ChangeRequest, plan: PinnedDefinition
) -> StartedRollout:
    if plan.kind != "rollout":
        raise OpsflowError(f"{plan.ref} is a {plan.kind} definition, not a rollout plan")
    workflow_id = rollout_workflow_id(change.change_id)
    attributes = _attributes(change, plan)
    summary = f"Change {change.change_id} by {change.owner} under {plan.ref}: {change.reason[:120]}"
    try:
        handle = await client.start_workflow(
            RolloutWorkflow.run,
            RolloutInput(change=change, plan=plan),
            id=workflow_id,
            task_queue=task_queue,
            id_reuse_policy=WorkflowIDReusePolicy.ALLOW_DUPLICATE_FAILED_ONLY,
            search_attributes=attributes,
            static_summary=summary,
        )
    except WorkflowAlreadyStartedError:
        existing = client.get_workflow_handle_for(RolloutWorkflow.run, workflow_id)
        finished = await _finished(existing)
        if finished is not None:
            raise RolloutCommandRefused(_what_instead(change.change_id, finished)) from None
        running_plan, running = await _running(existing, plan.ref)
        return StartedRollout(existing, False, running_plan, running)
    return StartedRollout(handle, True, plan.ref)


def _attributes(change: ChangeRequest, plan: PinnedDefinition) -> TypedSearchAttributes:
    return TypedSearchAttributes(
        [
            SearchAttributePair(sa.OPS_KIND, "rollout"),
            SearchAttributePair(sa.OPS_OWNER, change.owner),
            SearchAttributePair(sa.OPS_STATE, "assessing"),
            SearchAttributePair(sa.OPS_STAGE, "impact"),
            SearchAttributePair(sa.OPS_DEFINITION, plan.ref),
        ]
    )


async def _finished(handle: WorkflowHandle[Any, Any]) -> RolloutStatus | None:
    """The final state of the change's latest run when it has ended normally; None while it
    runs (or when it failed, was terminated or timed out: `start` may start it again)."""
    try:
        described = await handle.describe()
    except RPCError:
        return None
    if described.status != WorkflowExecutionStatus.COMPLETED:
        return None
    result = await handle.result(rpc_timeout=timedelta(seconds=10))
    return result if isinstance(result, RolloutStatus) else RolloutStatus.model_validate(result)


def _what_instead(change_id: str, finished: RolloutStatus) -> str:
    attempt = f"attempt {finished.attempt}"
    if finished.state == "rolled_back":
        return (
            f"the rollout of {change_id} was rolled back ({attempt}: {finished.ended_reason}); "
            f"run `opsflow rollout retry {change_id}` to run it again with the same cohorts"
        )
    if finished.state == "completed":
        return (
            f"the rollout of {change_id} is complete ({attempt}, every phase passed); "
            "a further change needs a new change id"
        )
    return (
        f"the rollout of {change_id} ended {finished.state} ({attempt}: "
        f"{finished.ended_reason}); start the change under a new change id"
    )


@dataclass(frozen=True)
class RetriedRollout:
    status: RolloutStatus
    """The new attempt's state (for a new run: as it starts)."""
    new_run: bool
    """True when the change had ended and a new run started attempt N+1."""


async def _first_input(client: Client, handle: WorkflowHandle[Any, Any]) -> RolloutInput:
    """The input of the latest run (its plan exactly as pinned then)."""
    async for event in handle.fetch_history_events(page_size=1):
        payloads = event.workflow_execution_started_event_attributes.input.payloads
        decoded = await client.data_converter.decode(payloads, [RolloutInput])
        first = decoded[0]
        assert isinstance(first, RolloutInput)
        return first
    raise OpsflowError("the rollout's history has no start event")


async def retry_rollout(
    client: Client, task_queue: str, change_id: str, argument: BaseModel | None = None
) -> RetriedRollout:
    """Run a rolled-back or aborted change again: attempt N+1 with the same cohorts (same
    seed) and fresh approvals; a running, aborted rollout takes the `retry` update, an
    ended one (e.g. after an automatic rollback) starts a new run of the same workflow id."""
    handle = rollout_handle(client, change_id)
    try:
        described = await handle.describe()
    except RPCError as exc:
        if exc.status == RPCStatusCode.NOT_FOUND:
            raise RolloutCommandRefused(f"there is no rollout of change {change_id}") from None
        raise OpsflowError(f"cannot read rollout of change {change_id}: {exc.message}") from None
    if described.status == WorkflowExecutionStatus.RUNNING:
        return RetriedRollout(await command_rollout(client, change_id, "retry", argument), False)
    finished = await _finished(handle)
    if finished is None:
        state = described.status.name.lower() if described.status else "closed"
        raise RolloutCommandRefused(
            f"the rollout of {change_id} {state}; `opsflow rollout start` starts it again"
        )
    if finished.state != "rolled_back":
        raise RolloutCommandRefused(_what_instead(change_id, finished))
    first = await _first_input(client, handle)
    change, plan = finished.change, first.plan
    try:
        await client.start_workflow(
            RolloutWorkflow.run,
            RolloutInput(change=change, plan=plan, attempt=finished.attempt + 1),
            id=rollout_workflow_id(change_id),
            task_queue=task_queue,
            id_reuse_policy=WorkflowIDReusePolicy.ALLOW_DUPLICATE,
            search_attributes=_attributes(change, plan),
            static_summary=f"Change {change_id} by {change.owner} under {plan.ref}, attempt "
            f"{finished.attempt + 1}: {change.reason[:120]}",
        )
    except WorkflowAlreadyStartedError:
        raise RolloutCommandRefused(
            f"the rollout of {change_id} is already running again (retried meanwhile)"
        ) from None
    return RetriedRollout(await _started_state(client, change_id, finished.attempt + 1), True)


async def _started_state(client: Client, change_id: str, attempt: int) -> RolloutStatus:
    """The new run's state once its first workflow task has run (briefly waits for it)."""
    for _ in range(50):
        with contextlib.suppress(RPCError, WorkflowQueryFailedError, RolloutCommandRefused):
            status = await rollout_state(client, change_id)
            if status.attempt == attempt:
                return status
        await asyncio.sleep(0.2)
    return await rollout_state(client, change_id)


async def command_rollout(
    client: Client, change_id: str, update: str, argument: BaseModel | None = None
) -> RolloutStatus:
    """Send update `update`; a refusal raises RolloutCommandRefused with the reason."""
    if update not in COMMANDS:
        raise RolloutCommandRefused(f"unknown command {update!r}")
    args = [] if argument is None else [argument]
    try:
        result: RolloutStatus = await rollout_handle(client, change_id).execute_update(
            update, args=args, result_type=RolloutStatus
        )
    except WorkflowUpdateFailedError as exc:
        cause = exc.cause
        reason = cause.message if isinstance(cause, ApplicationError) else str(cause or exc)
        raise RolloutCommandRefused(f"rollout of {change_id} refused {update}: {reason}") from None
    except RPCError as exc:
        if exc.status != RPCStatusCode.NOT_FOUND:
            raise
        raise RolloutCommandRefused(f"there is no running rollout of change {change_id}") from None
    return result
