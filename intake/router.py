"""Where each event type goes, and delivering it there.

- `ticket.*` → the escalation case `case-<ticket>`: `ticket.created` opens it under the
  matching policy (idempotent: the id-reuse policy rejects a second start); `ticket.updated`,
  `ticket.solved` become the case's validated updates, each with the Temporal update id
  `<source>/<event id>/<n>`, so a re-delivered event gets the first answer back instead of
  acting twice. `ticket.reopened` cannot reopen a resolved case (a new case with the same
  id is rejected by the reuse policy): it is recorded `rejected` with that reason, or, when
  the case is still running, delivered as a no-op. A `ticket.updated` for a ticket without a
  case goes to the running handoff that waits on that ticket (vendor routing), if any.
- Entity workflows (ENTITY_ROUTES): signal-with-start of the `event` signal, argument the
  EventEnvelope (its id lets the workflow ignore repeats). `customer-<id>` (Recovery) starts
  with the recovery rule sets deployed now and each signal carries their digest, so a running
  workflow switches to a newly deployed version from the next event on; `handoff-<id>`
  (Handoff) starts with the pinned handoff definition and its escalation policy. Both are
  read from the registry through a cache of a few seconds (`StartInputs`), so a burst of
  events does not read the database once per event. A customer whose workflow has a long
  backlog of undecided events gets its next ones later (`CustomerBusy`, from the pacing in
  activities/recovery_pacing.py): the relay holds them `pending`, in order.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Generic, Literal, TypeVar

import structlog
from pydantic import BaseModel, ValidationError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio.client import (
    Client,
    RPCTimeoutOrCancelledError,
    WorkflowExecutionStatus,
    WorkflowUpdateFailedError,
)
from temporalio.common import RawValue, SearchAttributePair, TypedSearchAttributes
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError, RPCStatusCode

from activities import search_attributes as sa
from activities.ports import CrmPort, TicketingPort
from activities.recovery_pacing import CustomerPacing
from client.cases import choose_policy, open_case
from client.handoffs import deliver_ticket_event, handoff_start_input
from client.recovery import recovery_rules, recovery_signal_args
from client.updates import execute_update
from definitions.common import AssignAction
from definitions.errors import OpsflowError
from definitions.events import (
    EventEnvelope,
    TicketCreated,
    TicketReopened,
    TicketSolved,
    TicketUpdated,
    parse_event_data,
)
from workflows.escalation import (
    AgentReply,
    CaseInfo,
    Reassign,
    RequesterReply,
    Resolve,
    SetPriority,
    SetStage,
    TicketStatus,
    case_workflow_id,
)
from workflows.escalation import EscalationStatus as CaseStatus
from workflows.handoff_model import HandoffInput
from workflows.recovery_model import RecoveryInput, RecoveryRules

log = structlog.get_logger(__name__)
Sessions = async_sessionmaker[AsyncSession]
RPC_TIMEOUT = timedelta(seconds=10)
START_INPUT_TTL = 5.0
# What Temporal answers when it (or the target workflow) refuses this event for good; every
# other status (unavailable, deadline, resource exhausted, cancelled, unauthenticated, internal,
# ...) means Temporal could not take it now, and the event waits in the inbox for a retry.
_REFUSED = {
    RPCStatusCode.INVALID_ARGUMENT,
    RPCStatusCode.ALREADY_EXISTS,
    RPCStatusCode.FAILED_PRECONDITION,
    RPCStatusCode.OUT_OF_RANGE,
    RPCStatusCode.NOT_FOUND,
}


class TemporalUnavailable(Exception):
    """Temporal cannot be reached now; the event stays in the inbox for the relay."""


@dataclass(frozen=True)
class Delivery:
    status: Literal["delivered", "rejected"]
    outcome: str
    target: str | None


class TemporalLink:
    """One Temporal client, (re)connected on demand; failures become TemporalUnavailable."""

    def __init__(
        self, connect: Callable[[], Awaitable[Client]], client: Client | None = None
    ) -> None:
        self._connect = connect
        self._client = client
        self._lock = asyncio.Lock()

    async def client(self) -> Client:
        if self._client is not None:
            return self._client
        async with self._lock:
            if self._client is None:
                try:
                    self._client = await asyncio.wait_for(self._connect(), timeout=5)
                except Exception as exc:
                    # Whatever connecting raised (the SDK's RuntimeError, client.temporal's
                    # TemporalUnreachable, a timeout, DNS or TLS trouble), nothing reached a
                    # workflow: the event waits for the next attempt.
                    text = str(exc) or type(exc).__name__
                    if not text.startswith("cannot reach Temporal"):
                        text = f"cannot reach Temporal: {text}"
                    raise TemporalUnavailable(text) from None
            return self._client

    def reset(self) -> None:
        self._client = None

    async def ping(self) -> bool:
        try:
            client = await self.client()
            await client.workflow_service.get_system_info(
                _system_info_request(), timeout=timedelta(seconds=2)
            )
        except (TemporalUnavailable, RPCError, RuntimeError):
            self.reset()
            return False
        return True


def _system_info_request() -> Any:
    from temporalio.api.workflowservice.v1 import GetSystemInfoRequest

    return GetSystemInfoRequest()


@dataclass(frozen=True)
class EntityRoute:
    """Signal-with-start of one entity workflow per `<prefix><data[key_field]>`."""

    workflow: str
    kind: str
    prefix: str
    key_field: str
    signal: str = "event"

    def workflow_id(self, event: EventEnvelope) -> str:
        return f"{self.prefix}{event.data[self.key_field]}"


RECOVERY = EntityRoute("Recovery", "recovery", "customer-", "customer_id")
HANDOFF = EntityRoute("Handoff", "handoff", "handoff-", "conversation_id")

ENTITY_ROUTES: dict[str, EntityRoute] = {
    "contact.received": RECOVERY,
    "survey.responded": RECOVERY,
    "sentiment.scored": RECOVERY,
    "journey.stage_changed": RECOVERY,
    "sla.breached": RECOVERY,
    "case.escalated": RECOVERY,
    "bot.turn": HANDOFF,
    "bot.handoff_requested": HANDOFF,
}
CASE_TYPES = ("ticket.created", "ticket.updated", "ticket.solved", "ticket.reopened")
UNROUTED = {"agent.status_changed": "recorded; no workflow consumes agent status yet"}


def _unavailable(exc: RPCError) -> bool:
    return exc.status not in _REFUSED


T = TypeVar("T")


class TtlCache(Generic[T]):
    """One value read by `load`, kept for `ttl` seconds; concurrent callers share one read."""

    def __init__(
        self,
        load: Callable[[], Awaitable[T]],
        ttl: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._load = load
        self.ttl = ttl
        self._clock = clock
        self._value: T | None = None
        self._expires = float("-inf")
        self._lock = asyncio.Lock()
        self.loads = 0

    def _fresh(self) -> bool:
        return self._value is not None and self._clock() < self._expires

    async def get(self) -> T:
        if self._fresh():
            assert self._value is not None
            return self._value
        async with self._lock:
            if not self._fresh():
                self._value = await self._load()
                self.loads += 1
                self._expires = self._clock() + self.ttl
            assert self._value is not None
            return self._value

    def clear(self) -> None:
        self._value = None
        self._expires = float("-inf")


@dataclass(frozen=True)
class StartCall:
    """What a signal-with-start sends: the run's start arguments and the signal's."""

    start_args: list[Any]
    signal_args: list[Any]
    definition: str | None = None


@dataclass(frozen=True)
class RecoveryStart:
    """The deployed recovery rule sets, and the `Recovery` start input made of them, converted
    once: every signal-with-start sends it, and converting the rule sets per event cost the
    intake more CPU than anything else it does."""

    rules: RecoveryRules
    start_input: RawValue


async def _recovery_start(sessions: Sessions) -> RecoveryStart:
    rules = await recovery_rules(sessions)
    [payload] = pydantic_data_converter.payload_converter.to_payloads(
        [RecoveryInput(rules=rules.rules)]
    )
    return RecoveryStart(rules, RawValue(payload))


class StartInputs:
    """The start inputs of the entity workflows, read from the registry at most once per
    `ttl` seconds each (a newly deployed version is used at most `ttl` seconds later)."""

    def __init__(self, sessions: Sessions, ttl: float = START_INPUT_TTL) -> None:
        self.recovery: TtlCache[RecoveryStart] = TtlCache(lambda: _recovery_start(sessions), ttl)
        self.handoff: TtlCache[HandoffInput] = TtlCache(lambda: handoff_start_input(sessions), ttl)

    async def call(self, route: EntityRoute, event: EventEnvelope) -> StartCall | str:
        """The arguments for `route`, or why the event cannot start its workflow."""
        if route is RECOVERY:
            recovery = await self.recovery.get()
            rules = recovery.rules
            if not rules.rules:
                return "no recovery rule set is deployed: nothing decides on this event"
            refs = ",".join(p.ref for p in rules.rules)
            return StartCall([recovery.start_input], recovery_signal_args(event, rules), refs)
        if route is HANDOFF:
            try:
                start = await self.handoff.get()
            except OpsflowError as exc:
                return str(exc)
            return StartCall([start], [event], start.definition.ref)
        return StartCall([], [event])


class Router:
    def __init__(
        self,
        link: TemporalLink,
        sessions: Sessions,
        task_queue: str,
        crm: CrmPort,
        *,
        ticketing: TicketingPort | None = None,
        entity_task_queue: str | None = None,
        start_input_ttl: float = START_INPUT_TTL,
    ) -> None:
        self.link = link
        self.sessions = sessions
        self.task_queue = task_queue
        self.entity_task_queue = entity_task_queue or task_queue
        self.crm = crm
        # the configured ticketing backend: with the sandbox, an opened case's ticket is
        # made to exist there (client.cases.ensure_ticket)
        self.ticketing = ticketing
        self.start_inputs = StartInputs(sessions, start_input_ttl)
        self.pacing = CustomerPacing()

    async def deliver(self, event: EventEnvelope) -> Delivery:
        """Deliver one event; raises TemporalUnavailable when it should be retried later."""
        try:
            if event.type in ENTITY_ROUTES:
                return await self._signal(ENTITY_ROUTES[event.type], event)
            if event.type == "ticket.created":
                return await self._open(event)
            if event.type in CASE_TYPES:
                return await self._command(event)
        except RPCError as exc:
            if _unavailable(exc):
                self.link.reset()
                raise TemporalUnavailable(str(exc)) from None
            return Delivery("rejected", f"Temporal refused: {exc.message}", None)
        except (RuntimeError, RPCTimeoutOrCancelledError, TimeoutError) as exc:
            # the core client's "connection closed" and friends, an update whose RPC timed out
            self.link.reset()
            raise TemporalUnavailable(str(exc) or type(exc).__name__) from None
        return Delivery("delivered", UNROUTED.get(event.type, "no route"), None)

    async def _signal(self, route: EntityRoute, event: EventEnvelope) -> Delivery:
        workflow_id = route.workflow_id(event)
        client = await self.link.client()
        call = await self.start_inputs.call(route, event)
        if isinstance(call, str):
            return Delivery("rejected", call, workflow_id)
        pairs: list[SearchAttributePair[Any]] = [SearchAttributePair(sa.OPS_KIND, route.kind)]
        customer = event.data.get("customer_id")
        if isinstance(customer, str):
            pairs.append(SearchAttributePair(sa.OPS_CUSTOMER_ID, customer))
        if call.definition:
            pairs.append(SearchAttributePair(sa.OPS_DEFINITION, call.definition[:1000]))
        if route is RECOVERY:
            await self.pacing.before_sending(client, workflow_id)
        await client.start_workflow(
            route.workflow,
            args=call.start_args,
            id=workflow_id,
            task_queue=self.entity_task_queue,
            start_signal=route.signal,
            start_signal_args=call.signal_args,
            search_attributes=TypedSearchAttributes(pairs),
            static_summary=f"{route.kind} for {workflow_id.removeprefix(route.prefix)}",
            rpc_timeout=RPC_TIMEOUT,
        )
        if route is RECOVERY:
            self.pacing.sent(workflow_id)
        return Delivery("delivered", f"signalled {route.signal} ({event.type})", workflow_id)

    async def _profile(self, customer_id: str) -> Any:
        try:
            return await self.crm.get_customer(customer_id)
        except (ApplicationError, OSError) as exc:
            log.info("no CRM profile for the case", error=str(exc)[:200])
            return None

    async def _open(self, event: EventEnvelope) -> Delivery:
        data = parse_event_data(event.type, event.data)
        assert isinstance(data, TicketCreated)
        workflow_id = case_workflow_id(data.ticket_id)
        case = CaseInfo(
            ticket_id=data.ticket_id,
            customer_id=data.customer_id,
            priority=data.priority,
            stage=data.stage,
            channel=data.channel,
            subject=data.subject or None,
            opened_at=event.time or _now(),
        )
        try:
            policy = await choose_policy(self.sessions, case, await self._profile(case.customer_id))
        except OpsflowError as exc:
            return Delivery("rejected", str(exc), workflow_id)
        client = await self.link.client()
        opened = await open_case(client, self.task_queue, case, policy, ticketing=self.ticketing)
        if opened.started:
            return Delivery("delivered", f"case opened under {opened.policy}", workflow_id)
        return Delivery("delivered", f"case already open under {opened.policy}", workflow_id)

    def _commands(self, event: EventEnvelope) -> list[tuple[str, BaseModel | None]]:
        data = parse_event_data(event.type, event.data)
        who = f"{event.source} event {event.id}"[:200]
        if isinstance(data, TicketSolved):
            return [("resolve", Resolve(by=data.solved_by or who))]
        assert isinstance(data, TicketUpdated)
        commands: list[tuple[str, BaseModel | None]] = []
        if data.requester_reply_by is not None:
            # A requester's message starts a next-reply target (the case's SLA metrics).
            commands.append(("requester_reply", RequesterReply(by=data.requester_reply_by)))
        if data.public_reply_by is not None:
            # An agent's public reply is the first response (Zendesk's own definition), and
            # answers the requester and updates them (next reply, periodic update).
            commands.append(("agent_reply", AgentReply(by=data.public_reply_by, public=True)))
        if data.status in ("solved", "closed"):
            commands.append(("resolve", Resolve(by=who)))
        elif data.status is not None:
            # Whether it pauses is the case's pinned policy's to say (`pause_statuses`).
            commands.append(("ticket_status", TicketStatus(status=data.status, by=who)))
        if data.priority is not None:
            commands.append(("set_priority", SetPriority(priority=data.priority, by=who)))
        if data.stage is not None:
            commands.append(("set_stage", SetStage(stage=data.stage, by=who)))
        if data.assignee is not None:
            commands.append(("reassign", Reassign(agent=data.assignee, by=who)))
        if data.group is not None:
            commands.append(("reassign", Reassign(queue=data.group, by=who)))
        return commands

    async def _command(self, event: EventEnvelope) -> Delivery:
        data = parse_event_data(event.type, event.data)
        ticket = getattr(data, "ticket_id", "")
        workflow_id = case_workflow_id(ticket)
        client = await self.link.client()
        handle = client.get_workflow_handle(workflow_id)
        if isinstance(data, TicketReopened):
            return await self._reopen(client, ticket, workflow_id)
        commands = self._commands(event)
        early = _refused_before_sending(commands)
        if early:
            return Delivery("rejected", early, workflow_id)
        if not commands:
            return Delivery("delivered", "nothing the case tracks changed", workflow_id)
        done: list[str] = []
        refused: list[str] = []
        for number, (name, argument) in enumerate(commands, start=1):
            try:
                await execute_update(
                    handle,
                    name,
                    args=[] if argument is None else [argument],
                    id=f"{event.source}/{event.id}/{number}",
                    result_type=CaseStatus,
                    rpc_timeout=RPC_TIMEOUT,
                )
                done.append(name)
            except WorkflowUpdateFailedError as exc:
                cause = exc.cause
                reason = cause.message if isinstance(cause, ApplicationError) else str(cause)
                refused.append(f"{name} refused: {reason}")
            except RPCError as exc:
                if exc.status != RPCStatusCode.NOT_FOUND:
                    raise
                # A handoff's ticket has no case until an agent accepts: with vendor routing
                # the assignee the vendor picked is what the handoff waits for.
                handoff = await deliver_ticket_event(client, event)
                if handoff is not None:
                    return Delivery("delivered", f"signalled event ({event.type})", handoff)
                return Delivery("rejected", await _why_gone(client, ticket), workflow_id)
        if refused:
            applied = f"; applied {', '.join(done)}" if done else ""
            return Delivery("rejected", "; ".join(refused) + applied, workflow_id)
        return Delivery("delivered", f"case updated: {', '.join(done)}", workflow_id)

    async def _reopen(self, client: Client, ticket: str, workflow_id: str) -> Delivery:
        try:
            described = await client.get_workflow_handle(workflow_id).describe(
                rpc_timeout=RPC_TIMEOUT
            )
        except RPCError as exc:
            if exc.status != RPCStatusCode.NOT_FOUND:
                raise
            return Delivery("rejected", f"there is no case for ticket {ticket}", workflow_id)
        # A resolved case may still be finishing its last ledger writes: it counts as closed.
        resolved = described.typed_search_attributes.get(sa.OPS_STATE) == "resolved"
        if described.status == WorkflowExecutionStatus.RUNNING and not resolved:
            return Delivery("delivered", "the case is still open: nothing to reopen", workflow_id)
        return Delivery(
            "rejected",
            f"case {ticket} is closed and a case id is never reused: open a new ticket "
            "for the reopened problem",
            workflow_id,
        )


def _refused_before_sending(commands: list[tuple[str, BaseModel | None]]) -> str | None:
    """Refuse what the case's validators let through but its handler cannot take.

    The escalation `reassign` validator checks only "queue xor agent"; an id the definition
    language refuses (upper case, say) would fail the update's workflow task instead of
    being refused, so it is refused here with the definition language's reason.
    """
    for name, argument in commands:
        if isinstance(argument, Reassign):
            try:
                AssignAction(type="assign", queue=argument.queue, agent=argument.agent)
            except ValidationError as exc:
                reason = "; ".join(str(e["msg"]) for e in exc.errors())
                target = argument.agent or argument.queue
                return f"{name} refused: {target!r} is not a valid assignee ({reason})"
    return None


async def _why_gone(client: Client, ticket: str) -> str:
    try:
        described = await client.get_workflow_handle(case_workflow_id(ticket)).describe(
            rpc_timeout=RPC_TIMEOUT
        )
    except RPCError as exc:
        if exc.status == RPCStatusCode.NOT_FOUND:
            return f"there is no case for ticket {ticket}"
        raise
    if described.status == WorkflowExecutionStatus.COMPLETED:
        return f"case {ticket} is already resolved"
    status = described.status.name.lower() if described.status else "closed"
    return f"case {ticket} is {status}"


def _now() -> Any:
    from store.types import utcnow

    return utcnow()
