"""Client-side operations on escalation cases, shared by the command line and the intake."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import structlog
from pydantic import BaseModel
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio.client import (
    Client,
    WorkflowExecutionStatus,
    WorkflowHandle,
    WorkflowUpdateFailedError,
)
from temporalio.common import (
    SearchAttributePair,
    TypedSearchAttributes,
    WorkflowIDReusePolicy,
)
from temporalio.exceptions import ApplicationError, WorkflowAlreadyStartedError
from temporalio.service import RPCError, RPCStatusCode

from activities.adapters.sandbox import SandboxTicketing
from activities.models import CustomerProfile
from activities.ports import TicketingPort
from definitions.conditions import ConditionError, evaluate
from definitions.models import PinnedDefinition
from definitions.registry import get, latest, latest_of_kind
from worker.errors import OpsflowError
from workflows import search_attributes as sa
from workflows.escalation import (
    CaseInfo,
    CaseStatus,
    EscalationWorkflow,
    OpenCase,
    case_workflow_id,
)

log = structlog.get_logger(__name__)

# The errors a case's update raises when an action it ran failed (the command is not done).
ACTION_FAILED = "ActionFailed"

_POLICY_REF = re.compile(r"(?P<name>[^@\s]+)(?:@(?P<version>[0-9]{1,9}))?")


def parse_policy_ref(text: str) -> tuple[str, int | None]:
    """`NAME` or `NAME@VERSION` (a positive number) as (name, version or None)."""
    found = _POLICY_REF.fullmatch(text.strip())
    version = int(found["version"]) if found and found["version"] else None
    if found is None or version == 0:
        raise OpsflowError(
            f"{text!r} is not a policy reference: use NAME or NAME@VERSION, "
            "e.g. support-p1 or support-p1@2"
        )
    return found["name"], version


@dataclass(frozen=True)
class OpenedCase:
    handle: WorkflowHandle[EscalationWorkflow, Any]
    policy: str
    started: bool
    """False when the case was already open (or already resolved): nothing new started."""


def match_context(case: CaseInfo, profile: CustomerProfile | None) -> dict[str, Any]:
    """What an escalation policy's `match` condition sees."""
    ticket = case.model_dump(mode="json")
    ticket["id"] = case.ticket_id
    customer: dict[str, Any] = (
        profile.model_dump(mode="json") if profile else {"id": case.customer_id}
    )
    if profile is not None:
        customer["lifetime_value"] = float(profile.lifetime_value)
    return {"ticket": ticket, "customer": customer}


async def choose_policy(
    sessions: async_sessionmaker[AsyncSession],
    case: CaseInfo,
    profile: CustomerProfile | None,
    requested: str | None = None,
) -> PinnedDefinition:
    """The pinned policy for a case: `requested` (NAME or NAME@VERSION), or the first
    deployed escalation policy, by name, whose match condition holds and which handles the
    case's priority. A condition that cannot be evaluated for this case (say it reads
    `customer.journey_stage` and the customer has no CRM profile) counts as not matching."""
    if requested:
        name, version = parse_policy_ref(requested)
        policy = await (get(sessions, name, version) if version else latest(sessions, name))
        if policy.kind != "escalation":
            raise OpsflowError(f"{policy.ref} is a {policy.kind} definition, not an escalation")
        return policy
    context = match_context(case, profile)
    unevaluable: list[str] = []
    for policy in await latest_of_kind(sessions, "escalation"):
        spec = policy.escalation
        if case.priority not in spec.priorities:
            continue
        try:
            matches = evaluate(spec.match, context)
        except ConditionError as exc:
            log.info(
                "escalation policy skipped: its match condition cannot be evaluated",
                policy=policy.ref,
                ticket_id=case.ticket_id,
                customer_id=case.customer_id,
                error=str(exc),
            )
            unevaluable.append(f"{policy.ref}: {exc}")
            continue
        if matches:
            return policy
    skipped = f"; not evaluable: {'; '.join(unevaluable)}" if unevaluable else ""
    raise OpsflowError(
        f"no deployed escalation policy matches ticket {case.ticket_id} "
        f"({case.priority}, stage {case.stage}){skipped}; deploy one with `opsflow defs deploy`"
    )


async def ensure_ticket(ticketing: TicketingPort, case: CaseInfo) -> bool:
    """With the sandbox ticketing backend, make the case's ticket exist there: a case stands
    for a ticket of the ticketing system, and its actions (assign, update_ticket) act on it.
    A real backend (Zendesk) is left alone: the ticket is its own. True when created."""
    if not isinstance(ticketing, SandboxTicketing):
        return False
    created = await ticketing.ensure_ticket(
        case.ticket_id,
        customer_id=case.customer_id,
        subject=case.subject or f"Case {case.ticket_id}",
        priority=case.priority,
        stage=case.stage,
        channel=case.channel,
    )
    if created:
        log.info("sandbox ticket created for the case", ticket_id=case.ticket_id)
    return created


async def open_case(
    client: Client,
    task_queue: str,
    case: CaseInfo,
    policy: PinnedDefinition,
    *,
    ticketing: TicketingPort | None = None,
) -> OpenedCase:
    """Start `case-<ticket>` under `policy`; opening the same ticket again starts nothing.

    `ticketing`: the configured ticketing backend; when it is the sandbox, the ticket is
    created there first if missing (see `ensure_ticket`)."""
    if ticketing is not None:
        await ensure_ticket(ticketing, case)
    workflow_id = case_workflow_id(case.ticket_id)
    attributes = TypedSearchAttributes(
        [
            SearchAttributePair(sa.OPS_KIND, "escalation"),
            SearchAttributePair(sa.OPS_CASE_ID, case.ticket_id),
            SearchAttributePair(sa.OPS_CUSTOMER_ID, case.customer_id),
            SearchAttributePair(sa.OPS_PRIORITY, case.priority),
            SearchAttributePair(sa.OPS_STAGE, case.stage),
            SearchAttributePair(sa.OPS_STATE, "open"),
            SearchAttributePair(sa.OPS_LEVEL, 0),
            SearchAttributePair(sa.OPS_DEFINITION, policy.ref),
        ]
    )
    summary = (
        f"{case.priority.upper()} case {case.ticket_id} for customer {case.customer_id} "
        f"under {policy.ref}" + (f": {case.subject[:120]}" if case.subject else "")
    )
    try:
        handle = await client.start_workflow(
            EscalationWorkflow.run,
            OpenCase(case=case, policy=policy),
            id=workflow_id,
            task_queue=task_queue,
            id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
            search_attributes=attributes,
            static_summary=summary,
        )
    except WorkflowAlreadyStartedError:
        existing = client.get_workflow_handle_for(EscalationWorkflow.run, workflow_id)
        described = await existing.describe()
        ref = described.typed_search_attributes.get(sa.OPS_DEFINITION) or policy.ref
        return OpenedCase(existing, ref, started=False)
    return OpenedCase(handle, policy.ref, started=True)


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
        result: CaseStatus = await handle.execute_update(update, args=args, result_type=CaseStatus)
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
