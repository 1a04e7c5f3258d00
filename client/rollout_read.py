"""Reading a rollout: its state (the workflow's `state` query), the activities it waits on
and the list of rollouts. What `opsflow rollout status` and `rollout list` need: the Temporal
client and the status model (workflows/rollout_model.py), never the workflow module
(tests/test_cli_help.py checks the imports); starting a rollout is client/rollouts.py's."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from temporalio.api.enums.v1 import PendingActivityState
from temporalio.client import (
    Client,
    WorkflowHandle,
    WorkflowQueryFailedError,
    WorkflowQueryRejectedError,
)
from temporalio.service import RPCError, RPCStatusCode

from activities import search_attributes as sa
from definitions.errors import OpsflowError
from workflows.rollout_model import RolloutStatus, rollout_workflow_id


class RolloutCommandRefused(OpsflowError):
    """The rollout refused the command (or does not exist); the message says why."""


def rollout_handle(client: Client, change_id: str) -> WorkflowHandle[Any, Any]:
    return client.get_workflow_handle(rollout_workflow_id(change_id))


async def rollout_state(client: Client, change_id: str) -> RolloutStatus:
    try:
        result: RolloutStatus = await rollout_handle(client, change_id).query(
            "state", result_type=RolloutStatus
        )
    except RPCError as exc:
        if exc.status == RPCStatusCode.NOT_FOUND:
            raise RolloutCommandRefused(f"there is no rollout of change {change_id}") from None
        raise OpsflowError(f"cannot read rollout of change {change_id}: {exc.message}") from None
    return result


async def rollout_timezone(client: Client, change_id: str) -> str | None:
    """The plan's timezone (the rollout's `timezone` query); None when no worker answers it
    (one older than the query, or none running)."""
    try:
        zone: str = await rollout_handle(client, change_id).query(
            TIMEZONE_QUERY, result_type=str, rpc_timeout=timedelta(seconds=1)
        )
    except (RPCError, WorkflowQueryFailedError, WorkflowQueryRejectedError):
        return None
    return zone


TIMEZONE_QUERY = "timezone"
"""RolloutWorkflow.timezone, by name (naming the method would import the workflow module)."""


@dataclass(frozen=True)
class PendingActivity:
    """An activity the rollout waits on, as the server sees it (describe's pending activities):
    a rollback stuck on a failing vendor shows here with its attempt and last failure."""

    activity: str
    state: str
    attempt: int
    last_failure: str | None
    last_heartbeat: datetime | None
    next_attempt: datetime | None

    @property
    def failing(self) -> bool:
        return self.attempt > 1 or self.last_failure is not None

    def line(self) -> str:
        text = f"{self.activity}: {self.state}, attempt {self.attempt}"
        if self.last_failure:
            text += f", last failure: {self.last_failure}"
        if self.next_attempt is not None:
            text += f", next attempt {self.next_attempt:%H:%M:%S} UTC"
        return text

    def as_json(self) -> dict[str, Any]:
        return {
            "activity": self.activity,
            "state": self.state,
            "attempt": self.attempt,
            "last_failure": self.last_failure,
            "last_heartbeat": self.last_heartbeat.isoformat() if self.last_heartbeat else None,
            "next_attempt": self.next_attempt.isoformat() if self.next_attempt else None,
        }


def _moment(stamp: Any, present: bool) -> datetime | None:
    return stamp.ToDatetime(tzinfo=UTC) if present else None


async def pending_activities(client: Client, change_id: str) -> list[PendingActivity]:
    """The activities the running rollout waits on; empty when none or it cannot be read."""
    try:
        described = await rollout_handle(client, change_id).describe()
    except RPCError:
        return []
    pending = []
    for info in described.raw_description.pending_activities:
        failure = info.last_failure.message if info.HasField("last_failure") else None
        pending.append(
            PendingActivity(
                activity=info.activity_type.name,
                state=PendingActivityState.Name(info.state)
                .removeprefix("PENDING_ACTIVITY_STATE_")
                .lower(),
                attempt=info.attempt,
                last_failure=(failure or None) and failure.splitlines()[0][:300],
                last_heartbeat=_moment(
                    info.last_heartbeat_time, info.HasField("last_heartbeat_time")
                ),
                next_attempt=_moment(
                    info.next_attempt_schedule_time, info.HasField("next_attempt_schedule_time")
                ),
            )
        )
    return pending


async def list_rollouts(client: Client, limit: int = 100) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    async for execution in client.list_workflows("OpsKind = 'rollout'", limit=limit):
        attrs = execution.typed_search_attributes
        rows.append(
            {
                "change": execution.id.removeprefix("rollout-"),
                "owner": attrs.get(sa.OPS_OWNER),
                "state": attrs.get(sa.OPS_STATE),
                "stage": attrs.get(sa.OPS_STAGE),
                "plan": attrs.get(sa.OPS_DEFINITION),
                "status": execution.status.name.lower() if execution.status else "",
                "started": execution.start_time,
            }
        )
    return rows
