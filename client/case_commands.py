"""Commanding an escalation case: its updates (acknowledge, pause, resolve, ...), refused
with the workflow's reason. Imports the case's status model, not the workflow module."""

from __future__ import annotations

from typing import TYPE_CHECKING

from temporalio.client import Client, WorkflowExecutionStatus, WorkflowUpdateFailedError
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError, RPCStatusCode

from client.updates import execute_update
from definitions.errors import OpsflowError
from workflows.escalation_model import EscalationStatus as CaseStatus
from workflows.escalation_model import case_workflow_id

if TYPE_CHECKING:
    from pydantic import BaseModel

# The errors a case's update raises when an action it ran failed (the command is not done).
ACTION_FAILED = "ActionFailed"


class CaseCommandRefused(OpsflowError):
    """The case refused the command (or is gone); the message says why."""


async def _why_closed(client: Client, ticket_id: str) -> str:
    handle = client.get_workflow_handle(case_workflow_id(ticket_id))
    try:
        described = await handle.describe()
    except RPCError as exc:
        if exc.status == RPCStatusCode.NOT_FOUND:
            return f"there is no case for ticket {ticket_id}"
        raise
    if described.status == WorkflowExecutionStatus.COMPLETED:
        return f"case {ticket_id} is already resolved"
    status = described.status.name.lower() if described.status else "closed"
    return f"case {ticket_id} is {status}"


async def command_case(
    client: Client,
    ticket_id: str,
    update: str,
    argument: BaseModel | None = None,
) -> CaseStatus:
    """Send the case's update `update` (acknowledge, pause, resume, set_priority, set_stage,
    reassign, resolve); a refusal raises CaseCommandRefused with the reason."""
    handle = client.get_workflow_handle(case_workflow_id(ticket_id))
    args = [] if argument is None else [argument]
    try:
        result = await execute_update(handle, update, args=args, result_type=CaseStatus)
    except WorkflowUpdateFailedError as exc:
        cause = exc.cause
        reason = cause.message if isinstance(cause, ApplicationError) else str(cause or exc)
        if isinstance(cause, ApplicationError) and cause.type == ACTION_FAILED:
            raise CaseCommandRefused(f"case {ticket_id}: {reason}") from None
        raise CaseCommandRefused(f"case {ticket_id} refused: {reason}") from None
    except RPCError as exc:
        if exc.status != RPCStatusCode.NOT_FOUND:
            raise
        raise CaseCommandRefused(await _why_closed(client, ticket_id)) from None
    return result
