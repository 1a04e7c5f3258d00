"""Opening an escalation case: the customer checked in the CRM, the policy chosen (in
selection order, by its `match` condition) and the case's workflow started. The intake and
`opsflow case open` use it; reading or commanding a case does not (client/case_read.py,
client/case_commands.py), so those never import the workflow module, CEL or the registry."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any

import structlog
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio.client import Client, WorkflowHandle
from temporalio.common import SearchAttributePair, TypedSearchAttributes, WorkflowIDReusePolicy
from temporalio.exceptions import ApplicationError, WorkflowAlreadyStartedError

from activities import search_attributes as sa
from activities.customer_contracts import CustomerProfile
from activities.errors import NOT_FOUND
from activities.ports import CrmPort, OwnsCaseTickets, TicketingPort
from client.case_read import CLOSED_STATES, CaseView, parse_policy_ref, read_case
from definitions.conditions import ConditionError, evaluate
from definitions.errors import OpsflowError
from definitions.models import PinnedDefinition
from definitions.selection import ClauseResult, explain_match
from store.registry import get, latest, latest_of_kind
from workflows.escalation import EscalationWorkflow
from workflows.escalation_model import CaseInfo, case_workflow_id
from workflows.escalation_pinned import EscalationInput as OpenCase

log = structlog.get_logger(__name__)


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
