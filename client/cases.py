"""Client-side operations on escalation cases, shared by the command line and the intake."""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import structlog
from pydantic import BaseModel
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio.api.common.v1 import WorkflowExecution
from temporalio.api.workflowservice.v1 import GetWorkflowExecutionHistoryReverseRequest
from temporalio.client import (
    Client,
    WorkflowExecutionStatus,
    WorkflowHandle,
    WorkflowHistoryEventFilterType,
    WorkflowQueryFailedError,
    WorkflowQueryRejectedError,
    WorkflowUpdateFailedError,
)
from temporalio.common import (
    SearchAttributePair,
    TypedSearchAttributes,
    WorkflowIDReusePolicy,
)
from temporalio.exceptions import ApplicationError, WorkflowAlreadyStartedError
from temporalio.service import RPCError, RPCStatusCode

from activities import search_attributes as sa
from activities.errors import NOT_FOUND
from activities.models import CustomerProfile
from activities.ports import CrmPort, OwnsCaseTickets, TicketingPort
from client.updates import execute_update
from definitions.conditions import ConditionError, evaluate
from definitions.errors import OpsflowError
from definitions.models import PinnedDefinition
from definitions.selection import ClauseResult, explain_match
from store.registry import get, latest, latest_of_kind
from workflows.escalation import (
    CaseInfo,
    EscalationWorkflow,
    Migrate,
    case_workflow_id,
)
from workflows.escalation import EscalationInput as OpenCase
from workflows.escalation import EscalationStatus as CaseStatus
from workflows.escalation_clocks import SlaClock, migrated_clocks, sla_budgets
from workflows.escalation_commands import migration_refusal

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
            "e.g. support or support@2"
        )
    return found["name"], version


@dataclass(frozen=True)
class OpenedCase:
    handle: WorkflowHandle[EscalationWorkflow, Any]
    policy: str
    started: bool
    """False when the case was already open (or already resolved): nothing new started."""
    existing: CaseView | None = None
    """When nothing started: the case that is there (open, resolved or failing)."""
    previous: CaseView | None = None
    """When a case whose workflow had failed or was terminated opened again: that run."""

    def message(self) -> str:
        """What happened, in one honest line."""
        ticket = self.handle.id.removeprefix("case-")
        if self.started and self.previous is not None:
            why = f": {self.previous.reason}" if self.previous.reason else ""
            return (
                f"case {ticket} opened again under {self.policy} "
                f"(its earlier run was {self.previous.state.replace('_', ' ')}{why})"
            )
        if self.started:
            return f"case {ticket} opened under {self.policy}"
        view = self.existing
        if view is not None and view.state == "failing":
            return (
                f"case {ticket} exists but its workflow is failing ({view.reason}); nothing "
                f"started: terminate it (`temporal workflow terminate --workflow-id "
                f"{self.handle.id}`) and open it again"
            )
        if view is not None and view.execution == "completed":
            return f"case {ticket} is already resolved under {self.policy}; nothing started"
        return f"case {ticket} is already open under {self.policy} (nothing started)"


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


def policy_refusal(policy: PinnedDefinition, case: CaseInfo) -> str | None:
    """Why `policy` cannot run `case` (its priority or stage has no SLA there), or None.

    The workflow would fail at its first step; refusing here keeps `case open` honest."""
    spec = policy.escalation
    if case.priority not in spec.priorities:
        return (
            f"--policy: {policy.ref} does not cover priority {case.priority} "
            f"(it covers {', '.join(spec.priorities)}); name a policy for {case.priority} "
            "or leave --policy out to pick the first that matches"
        )
    if spec.sla_for(case.priority, case.stage) is None:
        stages = sorted({t.stage for t in spec.slas if t.priority == case.priority})
        return (
            f"--stage: {policy.ref} has no SLA for {case.priority} at stage {case.stage} "
            f"(it has {', '.join(stages) or 'none'})"
        )
    return None


async def check_customer(
    crm: CrmPort, customer_id: str, *, allow_unknown: bool = False
) -> CustomerProfile | None:
    """The customer's CRM profile. An unknown customer (or a CRM that cannot answer) is
    refused naming the id, unless `allow_unknown`: then the case opens without a profile
    and its messages use the customer's id where a name would go."""
    try:
        return await crm.get_customer(customer_id)
    except Exception as exc:  # whatever the adapter raised, one line naming the customer
        if allow_unknown:
            return None
        if isinstance(exc, ApplicationError) and exc.type == NOT_FOUND:
            raise OpsflowError(
                f"--customer: customer {customer_id} is not in the CRM ({crm.name}); check "
                "the id, or pass --unknown-customer to open the case without a profile"
            ) from None
        reason = (exc.message if isinstance(exc, ApplicationError) else str(exc)) or type(
            exc
        ).__name__
        raise OpsflowError(
            f"--customer: cannot look up customer {customer_id} in the CRM ({crm.name}): "
            f"{reason.splitlines()[0][:200]}; pass --unknown-customer to open the case "
            "without a profile"
        ) from None


async def policies_in_order(
    sessions: async_sessionmaker[AsyncSession],
) -> list[PinnedDefinition]:
    """The latest version of every escalation policy, in the order they are tried."""
    policies = await latest_of_kind(sessions, "escalation")
    return sorted(policies, key=lambda p: (p.escalation.order, p.name))


@dataclass(frozen=True)
class PolicyCandidate:
    """One policy as `choose_policy` would try it for a case, and what came of it."""

    ref: str
    order: int
    match: str
    refusal: str | None
    """Why it cannot run the case (priority or stage not covered); then match is not tried."""
    matched: bool | None
    """Whether `match` held; None when not tried or not evaluable."""
    clauses: list[ClauseResult]
    chosen: bool = False

    def as_json(self) -> dict[str, Any]:
        return {
            "policy": self.ref,
            "order": self.order,
            "match": self.match,
            "covers_case": self.refusal is None,
            "refusal": self.refusal,
            "matched": self.matched,
            "clauses": [{"clause": c.clause, "value": c.value} for c in self.clauses],
            "chosen": self.chosen,
        }


async def explain_policies(
    sessions: async_sessionmaker[AsyncSession], case: CaseInfo, profile: CustomerProfile | None
) -> list[PolicyCandidate]:
    """Every deployed escalation policy in selection order, whether it covers the case,
    whether its match held and why (the value of each clause), and the one chosen: exactly
    the path `choose_policy` takes."""
    context = match_context(case, profile)
    candidates: list[PolicyCandidate] = []
    chosen = False
    for policy in await policies_in_order(sessions):
        spec = policy.escalation
        refusal = policy_refusal(policy, case)
        matched: bool | None = None
        clauses: list[ClauseResult] = []
        if refusal is None:
            clauses = explain_match(spec.match, context)
            try:
                matched = evaluate(spec.match, context)
            except ConditionError:
                matched = None
        takes = not chosen and refusal is None and matched is True
        chosen = chosen or takes
        candidates.append(
            PolicyCandidate(policy.ref, spec.order, spec.match, refusal, matched, clauses, takes)
        )
    return candidates


async def choose_policy(
    sessions: async_sessionmaker[AsyncSession],
    case: CaseInfo,
    profile: CustomerProfile | None,
    requested: str | None = None,
) -> PinnedDefinition:
    """The pinned policy for a case: `requested` (NAME or NAME@VERSION), or the first
    deployed escalation policy, in selection order (`spec.order`, then name), whose match
    condition holds and which handles the case's priority. A condition that cannot be
    evaluated for this case (say it reads `customer.journey_stage` and the customer has no
    CRM profile) counts as not matching."""
    if requested:
        name, version = parse_policy_ref(requested)
        policy = await (get(sessions, name, version) if version else latest(sessions, name))
        if policy.kind != "escalation":
            raise OpsflowError(f"{policy.ref} is a {policy.kind} definition, not an escalation")
        refusal = policy_refusal(policy, case)
        if refusal:
            raise OpsflowError(refusal)
        return policy
    context = match_context(case, profile)
    unevaluable: list[str] = []
    for policy in await policies_in_order(sessions):
        if policy_refusal(policy, case):
            continue
        try:
            matches = evaluate(policy.escalation.match, context)
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
    """With a ticketing backend whose tickets opsflow keeps (the sandbox), make the case's
    ticket exist there: a case stands for a ticket of the ticketing system, and its actions
    (assign, update_ticket) act on it. A vendor's backend (Zendesk) is left alone: the ticket
    is its own. True when created."""
    if not isinstance(ticketing, OwnsCaseTickets):
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
    by: str | None = None,
) -> OpenedCase:
    """Start `case-<ticket>` under `policy`; opening an open or resolved ticket again starts
    nothing, a case whose workflow failed or was terminated starts afresh.

    `ticketing`: the configured ticketing backend; when it is the sandbox, the ticket is
    created there first if missing (see `ensure_ticket`). `by`: who opens it, for the ledger."""
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
    previous: CaseView | None = None
    with contextlib.suppress(OpsflowError):  # no case yet
        previous = await read_case(client, case.ticket_id, query=False)
    try:
        # A case whose workflow failed, was terminated or timed out may be opened again; an
        # open or resolved one may not.
        handle = await client.start_workflow(
            EscalationWorkflow.run,
            OpenCase(case=case, policy=policy, by=by),
            id=workflow_id,
            task_queue=task_queue,
            id_reuse_policy=WorkflowIDReusePolicy.ALLOW_DUPLICATE_FAILED_ONLY,
            search_attributes=attributes,
            static_summary=summary,
        )
    except WorkflowAlreadyStartedError:
        existing = client.get_workflow_handle_for(EscalationWorkflow.run, workflow_id)
        view = await read_case(client, case.ticket_id, query=False)
        ref = view.last_known.get("policy") or policy.ref
        return OpenedCase(existing, ref, started=False, existing=view)
    earlier = (
        previous if previous is not None and previous.state in CLOSED_STATES.values() else None
    )
    return OpenedCase(handle, policy.ref, started=True, previous=earlier)


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


# --- reading a case: live when a worker answers, else its last known state ------------------

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
    handle = client.get_workflow_handle_for(EscalationWorkflow.run, workflow_id)
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
            live = await handle.query(EscalationWorkflow.state, rpc_timeout=QUERY_TIMEOUT)
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


# --- moving running cases to another policy version ----------------------------------------

DEFAULT_MIGRATION_RATE = 5.0
"""Cases migrated per second at most, by default: each is a workflow update a worker runs."""
MigrationOutcome = Literal["would migrate", "migrated", "skipped", "refused"]


async def migration_target(
    sessions: async_sessionmaker[AsyncSession], text: str
) -> PinnedDefinition:
    """The escalation policy version `NAME@VERSION` names (the version is required: a
    migration that is run again must move cases to the same version)."""
    name, version = parse_policy_ref(text)
    if version is None:
        raise OpsflowError(
            f"name the version to migrate to, e.g. {name}@2 (`opsflow defs list` shows them)"
        )
    policy = await get(sessions, name, version)
    if policy.definition.kind != "escalation":
        raise OpsflowError(
            f"{policy.ref} is a {policy.definition.kind} definition, not an escalation policy"
        )
    return policy


@dataclass(frozen=True)
class ClockMove:
    """One SLA clock of a migrated case: its due moment under the old and the new policy."""

    name: str
    state: str
    """running, paused, met or breached (before the migration)."""
    spent: timedelta
    """Business time spent so far, on the old policy's calendar: kept by the migration."""
    old_budget: timedelta
    new_budget: timedelta
    old_due: datetime | None
    """When it runs out under the old policy; None for a paused or met clock."""
    new_due: datetime | None

    def as_json(self) -> dict[str, Any]:
        return {
            "state": self.state,
            "spent_seconds": int(self.spent.total_seconds()),
            "old_budget_seconds": int(self.old_budget.total_seconds()),
            "new_budget_seconds": int(self.new_budget.total_seconds()),
            "old_due": self.old_due.isoformat() if self.old_due else None,
            "new_due": self.new_due.isoformat() if self.new_due else None,
        }


@dataclass(frozen=True)
class CaseMigration:
    """What a migration did (or, in a dry run, would do) to one case."""

    ticket_id: str
    source: str | None
    """The policy version the case was on; None when it could not be read."""
    target: str
    outcome: MigrationOutcome
    reason: str | None = None
    """Why it was skipped or refused."""
    clocks: tuple[ClockMove, ...] = ()
    old_timezone: str | None = None
    new_timezone: str | None = None

    def as_json(self) -> dict[str, Any]:
        return {
            "ticket": self.ticket_id,
            "from": self.source,
            "to": self.target,
            "outcome": self.outcome,
            "reason": self.reason,
            "clocks": {move.name: move.as_json() for move in self.clocks},
            "old_timezone": self.old_timezone,
            "new_timezone": self.new_timezone,
        }


def plan_clocks(
    status: CaseStatus,
    old: PinnedDefinition,
    new: PinnedDefinition,
    now: datetime,
    applied: dict[str, SlaClock] | None = None,
) -> tuple[ClockMove, ...]:
    """Each clock's due moment under `old` and under `new` for a migration at `now`, the
    time spent and any pause kept (`migrated_clocks`: what the workflow's `migrate` does).
    `applied`: the clocks the workflow answered with, once it has migrated."""
    priority, stage = status.case.priority, status.case.stage
    old_calendar = old.escalation.calendar_for(priority)
    new_calendar = new.escalation.calendar_for(priority)
    # A case measured by the SLA metrics takes the new policy's metric targets too.
    budgets = sla_budgets(new.escalation, priority, stage, metrics=status.sla_metrics) or {}
    moved = applied or migrated_clocks(status.clocks, budgets, now, old_calendar)
    moves: list[ClockMove] = []
    for name, clock in status.clocks.items():
        after = moved.get(name, clock)
        moves.append(
            ClockMove(
                name=name,
                state=clock.shown_status(),
                spent=clock.spent(now, old_calendar),
                old_budget=clock.budget,
                new_budget=after.budget,
                old_due=None if clock.stopped else clock.due_at(old_calendar),
                new_due=None if after.stopped else after.due_at(new_calendar),
            )
        )
    return tuple(moves)


class MigrationPacer:
    """At most `rate` migrations per second, evenly spaced: a bulk migration does not flood
    the workers (and the namespace's rate limits) with updates."""

    def __init__(
        self,
        rate: float,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        if rate <= 0:
            raise OpsflowError("the migration rate must be above 0 per second")
        self._interval = 1.0 / rate
        self._clock, self._sleep = clock, sleep
        self._next: float | None = None

    async def wait(self) -> None:
        """Return when the next update may be sent."""
        now = self._clock()
        if self._next is not None and now < self._next:
            await self._sleep(self._next - now)
            now = self._next
        self._next = now + self._interval


class PolicyVersions:
    """Pinned policy versions read from the registry once each (a case's old policy)."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self._sessions = sessions
        self._known: dict[str, PinnedDefinition] = {}

    async def pinned(self, ref: str) -> PinnedDefinition:
        if ref not in self._known:
            name, version = parse_policy_ref(ref)
            self._known[ref] = await (
                get(self._sessions, name, version) if version else latest(self._sessions, name)
            )
        return self._known[ref]


async def migrate_case(
    client: Client,
    versions: PolicyVersions,
    ticket_id: str,
    target: PinnedDefinition,
    *,
    by: str,
    dry_run: bool = False,
    pacer: MigrationPacer | None = None,
    now: datetime | None = None,
) -> CaseMigration:
    """Move one running case to `target` through its workflow's validated `migrate` update
    (or, with `dry_run`, only work out what that would do). A case already on `target` is
    skipped, so a migration run again carries on where it stopped; a case the workflow
    would refuse (resolved, priority or stage not covered) is refused with the reason.
    Raises OpsflowError when the case cannot be read (none for this ticket)."""
    view = await read_case(client, ticket_id)
    status = view.live
    if status is None:
        reason = (
            f"case {ticket_id} is already resolved"
            if view.execution == "completed"
            else f"case {ticket_id} is {view.state.replace('_', ' ')}"
            + (f" ({view.reason})" if view.reason else "")
        )
        return CaseMigration(
            ticket_id, view.last_known.get("policy"), target.ref, "refused", reason
        )
    source = status.definition
    if source == target.ref:
        return CaseMigration(ticket_id, source, target.ref, "skipped", f"already on {target.ref}")
    refusal = migration_refusal(status, target)
    if refusal is not None:
        return CaseMigration(ticket_id, source, target.ref, "refused", refusal)
    try:
        old = await versions.pinned(source)
    except OpsflowError as exc:
        reason = f"its policy {source} cannot be read from the registry ({exc})"
        return CaseMigration(ticket_id, source, target.ref, "refused", reason)
    priority = status.case.priority
    zones = (
        old.escalation.calendar_for(priority).timezone,
        target.escalation.calendar_for(priority).timezone,
    )
    moment = now or datetime.now(UTC)
    if dry_run:
        moves = plan_clocks(status, old, target, moment)
        return CaseMigration(ticket_id, source, target.ref, "would migrate", None, moves, *zones)
    if pacer is not None:
        await pacer.wait()
    try:
        migrated = await command_case(client, ticket_id, "migrate", Migrate(policy=target, by=by))
    except CaseCommandRefused as exc:
        return CaseMigration(ticket_id, source, target.ref, "refused", str(exc))
    moves = plan_clocks(status, old, target, moment, applied=migrated.clocks)
    return CaseMigration(ticket_id, source, target.ref, "migrated", None, moves, *zones)


async def cases_matching(client: Client, query: str) -> list[str]:
    """The tickets of every running escalation case the visibility query `query` finds
    (e.g. `OpsDefinition = "support@3"`), listed whole before any is changed."""
    full = f'OpsKind = "escalation" AND ExecutionStatus = "Running" AND ({query})'
    tickets: list[str] = []
    seen: set[str] = set()
    try:
        async for execution in client.list_workflows(full):
            if execution.id in seen:
                continue
            seen.add(execution.id)
            ticket = execution.typed_search_attributes.get(sa.OPS_CASE_ID)
            tickets.append(ticket or execution.id.removeprefix("case-"))
    except RPCError as exc:
        if exc.status != RPCStatusCode.INVALID_ARGUMENT:
            raise
        first = (exc.message or str(exc)).splitlines()[0][:200]
        raise OpsflowError(f"--query: Temporal cannot run this query ({first})") from None
    return tickets


async def migrate_cases(
    client: Client,
    versions: PolicyVersions,
    tickets: Sequence[str],
    target: PinnedDefinition,
    *,
    by: str,
    dry_run: bool = False,
    rate: float = DEFAULT_MIGRATION_RATE,
) -> AsyncIterator[CaseMigration]:
    """`migrate_case` for each ticket in turn, at most `rate` updates per second; a case
    that cannot be read is refused with the reason and the others go on."""
    pacer = MigrationPacer(rate)
    for ticket in tickets:
        try:
            yield await migrate_case(
                client, versions, ticket, target, by=by, dry_run=dry_run, pacer=pacer
            )
        except OpsflowError as exc:
            yield CaseMigration(ticket, None, target.ref, "refused", str(exc))
