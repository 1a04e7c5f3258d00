"""Reading an escalation case: live when a worker answers, else its last known state.

What `opsflow case show` and `case list` need, and nothing more: the Temporal client and the
case's status model (workflows/escalation_model.py), never the workflow module, the
definitions loader, CEL or the registry (tests/test_cli_help.py checks the imports).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from temporalio.api.common.v1 import WorkflowExecution
from temporalio.api.workflowservice.v1 import GetWorkflowExecutionHistoryReverseRequest
from temporalio.client import (
    Client,
    WorkflowExecutionStatus,
    WorkflowHistoryEventFilterType,
    WorkflowQueryFailedError,
    WorkflowQueryRejectedError,
)
from temporalio.common import TypedSearchAttributes
from temporalio.service import RPCError, RPCStatusCode

from activities import search_attributes as sa
from definitions.errors import OpsflowError
from workflows.escalation_model import EscalationStatus as CaseStatus
from workflows.escalation_model import case_workflow_id

STATE_QUERY = "state"
"""The escalation workflow's query for its whole state (EscalationWorkflow.state), by name:
naming the method would import the workflow module (tests check the two agree)."""
CALENDAR_QUERY = "calendar"
"""The escalation workflow's query for the business calendar its clocks run on
(EscalationWorkflow.calendar), by name as STATE_QUERY."""

_POLICY_REF = re.compile(r"(?P<name>[^@\s]+)(?:@(?P<version>[0-9]{1,9}))?")


def parse_policy_ref(text: str) -> tuple[str, int | None]:
    """`NAME` or `NAME@VERSION` (a positive number) as (name, version or None)."""
    found = _POLICY_REF.fullmatch(text.strip())
    version = int(found["version"]) if found and found["version"] else None
    if found is None or version == 0:
        raise OpsflowError(
            f"{text!r} is not a policy reference: use NAME or NAME@VERSION, "
            "e.g. support or support@2"
        )
    return found["name"], version


QUERY_TIMEOUT = timedelta(seconds=1)
"""How long `case show` / `case list` wait for a worker to answer the state query."""
CLOSED_STATES = {
    WorkflowExecutionStatus.FAILED: "failed",
    WorkflowExecutionStatus.TERMINATED: "terminated",
    WorkflowExecutionStatus.TIMED_OUT: "timed_out",
    WorkflowExecutionStatus.CANCELED: "canceled",
}
BROKEN_STATES = frozenset({*CLOSED_STATES.values(), "failing"})
"""States of a case whose workflow does not run its policy any more (or cannot)."""


@dataclass(frozen=True)
class CaseView:
    """What is known of a case: its live state when a worker answered the query, else the
    search attributes it last upserted; `state` is the workflow's own state (open, paused,
    acknowledged, resolved) unless the workflow failed, was terminated, timed out or was
    canceled, or its workflow task keeps failing (`failing`), with `reason` saying why."""

    ticket_id: str
    workflow_id: str
    run_id: str | None
    execution: str
    """Temporal's execution status, lower case: running, completed, failed, terminated, ..."""
    state: str
    reason: str | None
    live: CaseStatus | None
    last_known: dict[str, Any]
    started_at: datetime | None
    closed_at: datetime | None

    @property
    def broken(self) -> bool:
        return self.state in BROKEN_STATES

    def as_json(self) -> dict[str, Any]:
        return {
            "ticket": self.ticket_id,
            "workflow_id": self.workflow_id,
            "run_id": self.run_id,
            "execution": self.execution,
            "state": self.state,
            "reason": self.reason,
            "live": self.live is not None,
            "last_known": self.last_known,
            "started_at": self.started_at.isoformat() if self.started_at else None,
            "closed_at": self.closed_at.isoformat() if self.closed_at else None,
        }


def _attributes(search: TypedSearchAttributes) -> dict[str, Any]:
    return {
        "customer": search.get(sa.OPS_CUSTOMER_ID),
        "priority": search.get(sa.OPS_PRIORITY),
        "stage": search.get(sa.OPS_STAGE),
        "state": search.get(sa.OPS_STATE),
        "level": search.get(sa.OPS_LEVEL),
        "policy": search.get(sa.OPS_DEFINITION),
        "owner": search.get(sa.OPS_OWNER),
        "queue": search.get(sa.OPS_QUEUE),
    }


def _failure_text(failure: Any) -> str:
    """A Failure proto's message, with its cause's when that says more."""
    message = str(failure.message or "").strip()
    if failure.HasField("cause") and failure.cause.message:
        cause = str(failure.cause.message).strip()
        message = f"{message}: {cause}" if message else cause
    return message.splitlines()[0][:300] if message else "no reason recorded"


async def close_reason(client: Client, workflow_id: str, run_id: str | None) -> str | None:
    """Why a closed run ended (the failure's message, the termination's reason)."""
    handle = client.get_workflow_handle(workflow_id, run_id=run_id)
    async for event in handle.fetch_history_events(
        event_filter_type=WorkflowHistoryEventFilterType.CLOSE_EVENT, rpc_timeout=QUERY_TIMEOUT
    ):
        kind = event.WhichOneof("attributes") or ""
        if kind == "workflow_execution_failed_event_attributes":
            return _failure_text(event.workflow_execution_failed_event_attributes.failure)
        if kind == "workflow_execution_terminated_event_attributes":
            attributes = event.workflow_execution_terminated_event_attributes
            who = f" by {attributes.identity}" if attributes.identity else ""
            return f"terminated{who}: {attributes.reason or 'no reason given'}"
        if kind == "workflow_execution_timed_out_event_attributes":
            return "the workflow ran past its execution timeout"
        if kind == "workflow_execution_canceled_event_attributes":
            return "the workflow was canceled"
    return None


async def _task_failure(client: Client, workflow_id: str, run_id: str | None) -> str:
    """The newest workflow-task failure of a running case, read from the end of its history."""
    request = GetWorkflowExecutionHistoryReverseRequest(
        namespace=client.namespace,
        execution=WorkflowExecution(workflow_id=workflow_id, run_id=run_id or ""),
        maximum_page_size=50,
    )
    response = await client.workflow_service.get_workflow_execution_history_reverse(
        request, timeout=QUERY_TIMEOUT
    )
    for event in response.history.events:
        if event.HasField("workflow_task_failed_event_attributes"):
            return _failure_text(event.workflow_task_failed_event_attributes.failure)
    return "its workflow task keeps failing"


async def read_case(client: Client, ticket_id: str, *, query: bool = True) -> CaseView:
    """The case of `ticket_id` as far as it can be known within about a second: describe
    (the server alone answers), then the state query with a short deadline for a case that
    still runs its policy; without a worker's answer, the last upserted search attributes."""
    workflow_id = case_workflow_id(ticket_id)
    handle = client.get_workflow_handle(workflow_id)
    try:
        described = await handle.describe(rpc_timeout=QUERY_TIMEOUT * 5)
    except RPCError as exc:
        if exc.status == RPCStatusCode.NOT_FOUND:
            raise OpsflowError(f"there is no case for ticket {ticket_id}") from None
        raise
    execution = described.status or WorkflowExecutionStatus.RUNNING
    last_known = _attributes(described.typed_search_attributes)
    state = str(last_known["state"] or "open")
    reason: str | None = None
    live: CaseStatus | None = None
    if execution in CLOSED_STATES:
        state = CLOSED_STATES[execution]
        reason = await close_reason(client, workflow_id, described.run_id)
    elif execution == WorkflowExecutionStatus.RUNNING and (
        described.raw_description.pending_workflow_task.attempt > 1
    ):
        attempt = described.raw_description.pending_workflow_task.attempt
        state = "failing"
        failure = await _task_failure(client, workflow_id, described.run_id)
        reason = f"its workflow task failed {attempt - 1} times: {failure}"
    elif query:
        try:
            live = await handle.query(
                STATE_QUERY, result_type=CaseStatus, rpc_timeout=QUERY_TIMEOUT
            )
        except (RPCError, WorkflowQueryFailedError, WorkflowQueryRejectedError) as exc:
            detail = exc.message if isinstance(exc, RPCError) else str(exc)
            reason = (
                f"no worker answered within {QUERY_TIMEOUT.total_seconds():g} s "
                f"({detail.splitlines()[0][:120] if detail else 'no answer'}): "
                "this is the state the case last recorded"
            )
        else:
            state = live.state
    return CaseView(
        ticket_id=ticket_id,
        workflow_id=workflow_id,
        run_id=described.run_id,
        execution=execution.name.lower(),
        state=state,
        reason=reason,
        live=live,
        last_known=last_known,
        started_at=described.start_time,
        closed_at=described.close_time,
    )
