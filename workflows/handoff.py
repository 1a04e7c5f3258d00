"""The handoff workflow: one per bot conversation, from the bot to the right person.

Workflow id `handoff-<conversation id>`, started by signal-with-start of `event` (the
intake's `bot.turn` / `bot.handoff_requested`). States: bot → requested → queued → offered →
active, ending resolved, returned_to_bot, callback_scheduled or abandoned; every transition
goes to the ledger. Updates (accept, decline, return_to_bot, resolve, customer_left) are
validated first: a refused update changes nothing. The `state` query returns everything,
the context packet included. Handlers change the state; the main loop does the effects.
"""

from __future__ import annotations

import contextlib
from datetime import datetime, timedelta
from typing import Any, Literal

from temporalio import workflow
from temporalio.exceptions import ActivityError, ApplicationError, WorkflowAlreadyStartedError

from activities import search_attributes as sa
from workflows import metrics
from workflows.actions import ActionTarget, call, ledger, run_actions
from workflows.escalation import CaseInfo, EscalationWorkflow, OpenCase, case_workflow_id
from workflows.handoff_logic import (
    build_packet,
    callback_context,
    callback_slot,
    choose_route,
    customer_calendar,
    customer_context,
    detect_trigger,
    format_local,
    minutes,
    observe_turn,
    queue_calendar,
)

with workflow.unsafe.imports_passed_through():
    from activities.handoff_contracts import (
        AgentReleased,
        AssignGroup,
        BotAction,
        BotActionSent,
        CaseCommand,
        CaseCommandDone,
        GroupAssigned,
        LeaveQueue,
        OpenTickets,
        PickAgent,
        QueueInfo,
        QueueRequest,
        ReleaseAgent,
        Reservation,
        TicketBrief,
    )
    from activities.models import (
        AddComment,
        CommentAdded,
        CreateTicket,
        CustomerProfile,
        GetCustomer,
        MessageSent,
        SendMessage,
        Ticket,
        UpdateTicket,
    )
    from definitions.calendar import BusinessCalendar
    from definitions.common import Action, ScheduleCallbackAction
    from definitions.events import (
        BotHandoffRequested,
        BotTurn,
        EventEnvelope,
        TicketUpdated,
        parse_event_data,
    )
    from definitions.models import HandoffSpec, Route
    from workflows.handoff_model import (
        FINAL_STATES,
        Accept,
        CustomerLeft,
        Decline,
        HandoffInput,
        HandoffState,
        HandoffStatus,
        Offer,
        Resolve,
        ReturnToBot,
        Transition,
        Trigger,
        Turn,
    )

BOT_IDLE = timedelta(hours=2)
"""A bot conversation with no turn for this long ends (returned_to_bot: the bot had it)."""
ACTIVE_LIMIT = timedelta(hours=12)
"""An accepted conversation nobody resolves ends after this long."""
AGENT_POLL = timedelta(seconds=20)
"""How often a queued conversation looked for a free agent again, in runs recorded before it
waited in line."""
AGENT_FALLBACK = timedelta(minutes=1)
"""In line, a released agent wakes the conversation (`agent_free`); it also looks again this
often, in case a wake-up was lost, and so keeps its place in line fresh."""
FIRST_COME_PATCH = "handoff-first-come-first-served"
"""Queued conversations wait in line (first come, first served) and are woken by a free
agent, instead of each looking again every AGENT_POLL."""
TICKET_PRIORITY = "p2"
"""The priority of a handoff's ticket, and its place among priorities in line."""
TICKET_SEARCHABLE_PATCH = "handoff-ticket-searchable"
"""Upsert OpsCaseId as soon as the ticket exists, not at the `queued` transition."""
CASE_ACKNOWLEDGED_PATCH = "handoff-case-acknowledged"
"""The agent's accept acknowledges the handoff's case: its first response, by that agent."""
CASE_CLOSED_PATCH = "handoff-case-closed"
"""The conversation's ending resolves its case, with the outcome when it was not resolved."""
TRIGGERS_BY_MEANING_PATCH = "handoff-triggers-by-meaning"
"""Asking for a person is read from whole words and the bot's intents, not substrings."""
DUE_AT_PATCH = "handoff-due-at"
"""OpsDueAt carries the pending offer's expiry or the queue's maximum wait."""
SEEN_EVENTS_KEPT = 500
_WAITING = frozenset({"requested", "queued", "offered"})
"""The states in which the customer waits for a person (the handoff wait metric)."""
MAX_HISTORY_EVENTS = 10_000


@workflow.defn(name="Handoff")
class HandoffWorkflow:
    def __init__(self) -> None:
        self._status: HandoffStatus | None = None
        self._input: HandoffInput | None = None
        self._inbox: list[EventEnvelope] = []
        self._calendar: BusinessCalendar | None = None
        self._agent_free = False
        self._first_come: bool | None = None

    # --- plumbing ------------------------------------------------------------------------

    @property
    def status(self) -> HandoffStatus:
        assert self._status is not None
        return self._status

    @property
    def spec(self) -> HandoffSpec:
        assert self._input is not None
        return self._input.definition.handoff

    def _key(self, step: str) -> str:
        return f"{workflow.info().workflow_id}/{step}"

    def _target(self, extra: dict[str, Any] | None = None) -> ActionTarget:
        s = self.status
        conversation: dict[str, Any] = {"id": s.conversation_id, "topic": s.topic or ""}
        if s.callback_at is not None:
            timezone = s.profile.timezone if s.profile else "UTC"
            conversation["callback"] = callback_context(s.callback_at, timezone)
        wait = s.estimated_wait_seconds
        if wait is None and s.routing == "vendor":
            wait = int(self.spec.max_wait.total_seconds())  # the vendor's wait: at most this
        context: dict[str, Any] = {
            "conversation": conversation,
            "customer": customer_context(s.profile, s.customer_id or ""),
            "agent": {"id": s.agent or ""},
            "queue": {"id": s.queue or "", "name": s.queue_name or s.queue or ""},
            "wait": {"minutes": minutes(wait)},
        }
        context.update(extra or {})
        return ActionTarget(
            kind="handoff",
            customer_id=s.customer_id or s.conversation_id,
            ticket_id=s.ticket_id,
            assignee=s.agent,
            account_manager=s.profile.account_manager if s.profile else None,
            definition=s.definition,
            template_context=context,
        )

    def _upsert(self) -> None:
        s = self.status
        pairs = [
            sa.OPS_KIND.value_set("handoff"),
            sa.OPS_STATE.value_set(s.state),
            sa.OPS_DEFINITION.value_set(s.definition),
        ]
        if s.customer_id:
            pairs.append(sa.OPS_CUSTOMER_ID.value_set(s.customer_id))
        if s.queue:
            pairs.append(sa.OPS_QUEUE.value_set(s.queue))
        if s.agent:
            pairs.append(sa.OPS_OWNER.value_set(s.agent))
        if s.ticket_id:  # the vendor's ticket events find the conversation by its ticket
            pairs.append(sa.OPS_CASE_ID.value_set(s.ticket_id))
        due = self._next_deadline()
        if due is not None and workflow.patched(DUE_AT_PATCH):
            # kept once nothing is due (see OPS_DUE_AT)
            pairs.append(sa.OPS_DUE_AT.value_set(due))  # type: ignore[arg-type]
        workflow.upsert_search_attributes(pairs)

    def _next_deadline(self) -> datetime | None:
        """The pending offer's expiry, else the queue's maximum wait."""
        s = self.status
        offer = s.current_offer
        if offer is not None:
            return offer.expires_at
        return s.queue_deadline if s.state in _WAITING else None

    def _set_state(self, state: HandoffState, why: str) -> None:
        """Change state now (synchronously); `_record` writes it to the ledger."""
        s = self.status
        if s.state in FINAL_STATES:
            return  # an ending is final: a late step of the main loop changes nothing
        if s.state in _WAITING and state not in _WAITING and s.requested_at is not None:
            metrics.handoff_wait_ended(
                queue=s.queue or "none",
                outcome=state,
                seconds=(workflow.now() - s.requested_at).total_seconds(),
            )
        s.state = state
        s.transitions += 1
        s.history.append(Transition(state=state, at=workflow.now(), why=why))
        if state in FINAL_STATES:
            s.ended_at, s.end_reason = workflow.now(), why
        self._upsert()
        workflow.set_current_details(self._describe())

    async def _record(self, detail: dict[str, Any] | None = None) -> None:
        s = self.status
        last = s.history[-1]
        step = f"transition-{s.transitions}-{last.state}"
        await ledger(self._target(), step, {"state": last.state, "why": last.why, **(detail or {})})

    async def _transition(
        self, state: HandoffState, why: str, detail: dict[str, Any] | None = None
    ) -> None:
        self._set_state(state, why)
        await self._record(detail)

    def _local(self, moment: datetime) -> str:
        if self._calendar is None:
            return moment.strftime("%H:%M UTC")
        return format_local(moment, self._calendar)

    def _describe(self) -> str:
        s = self.status
        waiting = f"{s.queue_depth} waiting in {s.queue}" if s.queue else ""
        if s.state == "bot":
            turns = "1 turn" if len(s.turns) == 1 else f"{len(s.turns)} turns"
            return f"bot conversation, {turns}; no handoff trigger yet"
        if s.state == "requested":
            return f"handoff requested ({s.trigger.detail if s.trigger else 'no trigger'})"
        if s.state == "queued":
            until = (
                f"; overflow or callback at {self._local(s.queue_deadline)}"
                if (s.queue_deadline)
                else ""
            )
            relaxed = ", optional skills dropped" if s.relaxed else ""
            if s.routing == "vendor":
                group = f"group {s.vendor_group} ({s.queue})" if s.vendor_group else s.queue
                return f"in the vendor's {group}, waiting for an assignee{until}"
            return f"queued for an agent{relaxed}; {waiting}{until}"
        if s.state == "offered" and (offer := s.current_offer):
            ordinal = {1: "first", 2: "second", 3: "third"}.get(offer.number, f"#{offer.number}")
            traits = ", ".join(offer.skills[:2] + offer.languages[:1])
            return (
                f"offered to agent {offer.agent_id} ({traits}) until "
                f"{self._local(offer.expires_at)}, {ordinal} offer; {waiting}"
            )
        if s.state == "active":
            case = f"; case {s.case_workflow_id}" if s.case_workflow_id else ""
            since = self._local(s.accepted_at or workflow.now())
            return f"active with agent {s.agent} since {since}{case}"
        if s.state == "callback_scheduled":
            return f"callback scheduled for {s.callback_local}"
        return f"{s.state}: {s.end_reason}"

    # --- run -----------------------------------------------------------------------------

    @workflow.run
    async def run(self, request: HandoffInput) -> HandoffStatus:
        self._input = request
        if request.carried is not None:
            self._status = request.carried
        else:
            conversation = (
                request.conversation_id
                or self._first_conversation()
                or workflow.info().workflow_id.removeprefix("handoff-")
            )
            self._status = HandoffStatus(
                conversation_id=conversation, definition=request.definition.ref
            )
            self._set_state("bot", "conversation started")
            await self._record()
        s = self.status
        self._upsert()
        if s.state == "bot":
            await self._bot_phase(request)
        if s.state == "requested":
            await self._route_and_queue()
        if s.state == "queued":
            await self._offer_loop()
        if s.state == "active":
            await self._active_phase()
        await self._finish()
        return s

    def _first_conversation(self) -> str | None:
        """The conversation named by the start signal (signal-with-start delivers it with
        the first activation). Taken from history, not from the workflow id, so a replay
        under another workflow id (a recorded history) decides exactly as the live run."""
        for envelope in self._inbox:
            conversation = envelope.data.get("conversation_id")
            if isinstance(conversation, str) and conversation:
                return conversation
        return None

    async def _finish(self) -> None:
        s = self.status
        if s.in_line:  # it stopped waiting without an agent: out of the line
            await call(
                "presence.leave_queue", LeaveQueue(conversation_id=s.conversation_id), type(None)
            )
            s.in_line = False
        offer = s.offers[-1] if s.offers else None
        if offer is not None and offer.outcome in ("pending", "withdrawn"):
            offer.outcome = "withdrawn"
            await self._release(offer.agent_id, f"release-{offer.number}")
        if (
            s.state in ("resolved", "returned_to_bot")
            and s.agent
            and s.accepted_at
            and s.routing == "opsflow"
        ):
            await self._release(s.agent, "release-active")
        if s.state == "abandoned" and s.ticket_id:
            try:
                await self._update_ticket("abandoned", status="closed", add_tags=["abandoned"])
            except ActivityError as exc:  # a vendor may refuse the status: the run still ends
                workflow.logger.warning("closing the abandoned ticket failed: %s", exc.cause)
        if s.state == "returned_to_bot" and s.bot_muted:
            await self._bot("resume", s.end_reason or "returned to the bot")
        if s.case_workflow_id and workflow.patched(CASE_CLOSED_PATCH):
            await self._close_case()
        await workflow.wait_condition(workflow.all_handlers_finished)
        self._upsert()
        workflow.set_current_details(self._describe())

    async def _bot_phase(self, request: HandoffInput) -> None:
        s = self.status
        while s.state == "bot":
            await self._drain()
            if s.state != "bot":
                return
            workflow.set_current_details(self._describe())
            if workflow.info().is_continue_as_new_suggested() or (
                workflow.info().get_current_history_length() > MAX_HISTORY_EVENTS
            ):
                await workflow.wait_condition(workflow.all_handlers_finished)
                workflow.continue_as_new(
                    HandoffInput(
                        definition=request.definition,
                        escalation_policy=request.escalation_policy,
                        conversation_id=s.conversation_id,
                        carried=s,
                    )
                )
            try:
                await workflow.wait_condition(
                    lambda: bool(self._inbox) or s.state != "bot", timeout=BOT_IDLE
                )
            except TimeoutError:
                await self._transition("returned_to_bot", "the bot conversation went idle")

    # --- events --------------------------------------------------------------------------

    @workflow.signal
    def agent_free(self) -> None:
        """From presence: an agent this conversation can take is free; it looks now."""
        self._agent_free = True

    @workflow.signal
    def event(self, envelope: EventEnvelope) -> None:
        """An intake event (`bot.turn`, `bot.handoff_requested`); repeats are ignored."""
        self._inbox.append(envelope)

    async def _drain(self) -> None:
        s = self.status
        while self._inbox:
            envelope = self._inbox.pop(0)
            if envelope.key in s.seen_events:
                continue
            s.seen_events.append(envelope.key)
            del s.seen_events[:-SEEN_EVENTS_KEPT]
            try:
                data = parse_event_data(envelope.type, envelope.data)
            except (KeyError, ValueError) as exc:
                workflow.logger.warning("event %s ignored: %s", envelope.type, str(exc)[:200])
                continue
            if isinstance(data, BotTurn | BotHandoffRequested):
                if data.conversation_id != s.conversation_id:
                    workflow.logger.warning("event for another conversation ignored")
                    continue
                if s.customer_id is None:
                    s.customer_id = data.customer_id
                    self._upsert()
                await self._load_profile()
            trigger: Trigger | None = None
            now = workflow.now()
            if isinstance(data, BotTurn):
                turn = Turn(
                    speaker=data.speaker,
                    text=data.text,
                    at=envelope.time or now,
                    intent=data.intent,
                    confidence=data.confidence,
                    sentiment=data.sentiment,
                )
                observe_turn(s, turn, self.spec.triggers)
                if s.state == "bot":
                    by_meaning = workflow.patched(TRIGGERS_BY_MEANING_PATCH)
                    trigger = detect_trigger(s, turn, self.spec.triggers, now, by_meaning)
            elif isinstance(data, BotHandoffRequested):
                known = {(t.speaker, t.text) for t in s.turns}
                for line in data.transcript:
                    if (line.from_, line.text) not in known:
                        s.turns.append(Turn(speaker=line.from_, text=line.text, at=line.at))
                for tried in data.tried:
                    if tried not in s.attempts:
                        s.attempts.append(tried)
                if s.state == "bot":
                    if self.spec.triggers.bot_requests:
                        trigger = Trigger(kind="bot_requests", detail=data.reason, at=now)
                    else:
                        await ledger(
                            self._target(),
                            f"ignored-request-{len(s.seen_events)}",
                            {"reason": data.reason, "why": "bot_requests is off"},
                        )
            elif isinstance(data, TicketUpdated):
                await self._vendor_update(data)
            if trigger is not None and s.state == "bot":
                s.trigger, s.requested_at = trigger, now
                await self._transition(
                    "requested", trigger.detail, {"trigger": trigger.model_dump(mode="json")}
                )

    async def _vendor_update(self, data: TicketUpdated) -> None:
        """The vendor's `ticket.updated` for our ticket: an assignee ends the wait (vendor
        routing); anything else, or another ticket's event, is ignored."""
        s = self.status
        if data.ticket_id != s.ticket_id or data.assignee is None:
            return
        if s.routing != "vendor" or s.state != "queued" or s.queue is None:
            workflow.logger.info("ticket.updated ignored: not waiting for the vendor")
            return
        now = workflow.now()
        s.offers.append(
            Offer(
                agent_id=data.assignee,
                queue=s.queue,
                number=len(s.offers) + 1,
                offered_at=now,
                expires_at=now,
                outcome="accepted",
                reason=f"assigned in the vendor's group {s.vendor_group or s.queue}",
            )
        )
        s.agent, s.accepted_at = data.assignee, now
        await self._transition(
            "active",
            f"assigned to {data.assignee} in the vendor's group {s.vendor_group or s.queue}",
            {
                "agent": data.assignee,
                "group": s.vendor_group,
                "waited_seconds": self._waited_seconds(),
            },
        )
        await self._accepted()

    async def _load_profile(self) -> None:
        s = self.status
        if s.profile_loaded or s.customer_id is None:
            return
        s.profile_loaded = True
        try:
            s.profile = await call(
                "crm.get_customer", GetCustomer(customer_id=s.customer_id), CustomerProfile
            )
        except ActivityError as exc:
            workflow.logger.warning("no CRM profile for the conversation: %s", exc.cause)

    # --- routing -------------------------------------------------------------------------

    def _languages(self) -> list[str]:
        s = self.status
        return [s.profile.language] if s.profile else []

    def _skills(self, route: Route | None) -> list[str] | None:
        if route is None or self.status.overflowed:
            return None  # the overflow queue's own skills
        optional = [] if self.status.relaxed else list(route.optional_skills)
        return list(route.skills) + optional

    def _route(self) -> Route | None:
        s = self.status
        return next((r for r in self.spec.routes if r.name == s.route), None)

    async def _queue_info(self, queue: str, skills: list[str] | None) -> QueueInfo:
        info: QueueInfo = await call(
            "presence.queue_info",
            QueueRequest(
                queue=queue,
                skills=skills,
                languages=self._languages(),
                exclude_conversation=self.status.conversation_id,
            ),
            QueueInfo,
        )
        return info

    def _use_queue(self, info: QueueInfo) -> BusinessCalendar:
        s = self.status
        s.queue, s.queue_name, s.queue_depth = info.id, info.name, info.depth
        s.queue_skills = list(info.skills)
        s.estimated_wait_seconds = info.estimated_wait_seconds
        s.routing = info.routing
        self._calendar = queue_calendar(info.timezone, info.hours)
        return self._calendar

    async def _route_and_queue(self) -> None:
        s = self.status
        assert s.trigger is not None
        tickets: list[TicketBrief] = []
        if s.customer_id:
            try:
                tickets = await call(
                    "presence.open_tickets",
                    OpenTickets(customer_id=s.customer_id, exclude_tag="handoff"),
                    list[TicketBrief],
                )
            except ActivityError as exc:
                workflow.logger.warning("open tickets unavailable: %s", exc.cause)
        s.context = build_packet(s, s.trigger, tickets, list(self.spec.context))
        route = choose_route(list(self.spec.routes), s)
        if route is None:
            await self._callback("no route matches the conversation")
            return
        s.route = route.name
        # Staffing and the estimate count the required skills: optional ones may be dropped.
        info = await self._queue_info(route.queue, list(route.skills))
        limit = self.spec.max_queue_depth
        if limit is not None and info.depth >= limit:
            info = await self._overflow_info(f"{info.depth} waiting in {info.id}") or info
            if info.id == route.queue:
                await self._callback(f"queue {route.queue} is full and there is no overflow")
                return
        while True:
            calendar = self._use_queue(info)
            now = workflow.now()
            why = None
            if not calendar.is_open(now):
                opens = format_local(calendar.next_open(now), calendar, True)
                why = f"queue {info.id} is closed until {opens} {calendar.timezone}"
            elif info.routing == "vendor":
                pass  # the vendor's staffing is not ours to see: its hours decide
            elif info.estimated_wait_seconds is None:
                why = f"no agent in {info.id} can take the conversation"
            elif timedelta(seconds=info.estimated_wait_seconds) > self.spec.max_wait:
                wait = minutes(info.estimated_wait_seconds)
                why = f"the estimated wait in {info.id} is {wait} minutes"
            if why is None:
                break
            if s.overflowed or not self.spec.overflow_queue:
                await self._callback(why)
                return
            overflow = await self._overflow_info(why)
            if overflow is None:
                await self._callback(why)
                return
            info = overflow
        await self._enter_queue()

    async def _overflow_info(self, why: str) -> QueueInfo | None:
        s = self.status
        if s.overflowed or not self.spec.overflow_queue:
            return None
        s.overflowed = True
        metrics.handoff_overflowed(
            queue=s.queue or s.route or "none", overflow_queue=self.spec.overflow_queue
        )
        await ledger(
            self._target(),
            "overflow",
            {"from": s.queue or s.route, "to": self.spec.overflow_queue, "why": why},
        )
        return await self._queue_info(self.spec.overflow_queue, None)

    async def _enter_queue(self) -> None:
        s = self.status
        assert s.context is not None
        if s.state in FINAL_STATES:
            return
        if s.ticket_id is None:
            ticket: Ticket = await call(
                "ticketing.create_ticket",
                CreateTicket(
                    idempotency_key=self._key("ticket"),
                    customer_id=s.customer_id or s.conversation_id,
                    subject=f"Chat handoff: {s.topic or s.trigger.kind if s.trigger else 'chat'}"[
                        :500
                    ],
                    priority="p2",
                    queue=s.queue,
                    tags=["opsflow", "handoff", f"conversation:{s.conversation_id}"],
                    channel="chat",
                    stage="support",
                ),
                Ticket,
            )
            s.ticket_id = ticket.id
            if workflow.patched(TICKET_SEARCHABLE_PATCH):
                self._upsert()  # the vendor's first ticket event can find the conversation
            await call(
                "ticketing.add_comment",
                AddComment(
                    idempotency_key=self._key("context-packet"),
                    ticket_id=ticket.id,
                    body=s.context.text,
                    public=False,
                ),
                CommentAdded,
            )
        else:
            await self._update_ticket("requeue", queue=s.queue)
        if s.routing == "vendor" and s.queue is not None and s.ticket_id is not None:
            assigned: GroupAssigned = await call(
                "presence.assign_group",
                AssignGroup(
                    idempotency_key=self._key(f"group-{s.queue}"),
                    ticket_id=s.ticket_id,
                    queue=s.queue,
                ),
                GroupAssigned,
            )
            s.vendor_group = assigned.group
        if s.state in FINAL_STATES:
            return
        if not s.bot_muted:
            await self._bot("stop_replying", "a person takes over")
            s.bot_muted = True
        if not s.customer_notified and s.customer_id:
            s.customer_notified = True
            try:
                await call(
                    "notify.send",
                    SendMessage(
                        idempotency_key=self._key("customer-notice"),
                        channel="chat",
                        recipient=f"customer:{s.customer_id}",
                        template=self.spec.notice.template,
                        context=self._target().template_context,
                        severity="info",
                    ),
                    MessageSent,
                )
            except ActivityError as exc:
                workflow.logger.warning("the waiting notice failed: %s", exc.cause)
        now = workflow.now()
        s.queued_at = now
        s.queue_deadline = now + self.spec.max_wait
        await self._transition(
            "queued",
            f"waiting in {s.queue}",
            {
                "queue": s.queue,
                "route": s.route,
                "estimated_wait_seconds": s.estimated_wait_seconds,
                "ticket": s.ticket_id,
            },
        )

    # --- offers --------------------------------------------------------------------------

    async def _offer_loop(self) -> None:
        s = self.status
        route = self._route()
        relax_after = self.spec.relax_after
        if self._first_come is None:
            self._first_come = workflow.patched(FIRST_COME_PATCH)
        while s.state == "queued":
            await self._drain()
            now = workflow.now()
            assert s.queued_at is not None and s.queue_deadline is not None
            can_relax = (
                s.routing == "opsflow"
                and not s.relaxed
                and not s.overflowed
                and relax_after is not None
                and route is not None
                and bool(route.optional_skills)
            )
            if can_relax and relax_after is not None and now >= s.queued_at + relax_after:
                s.relaxed = True
                await ledger(
                    self._target(),
                    "relaxed",
                    {"dropped": list(route.optional_skills) if route else []},
                )
                can_relax = False
            in_queue = [o for o in s.offers if o.queue == s.queue]
            if now >= s.queue_deadline or len(in_queue) >= self.spec.max_offers:
                why = (
                    f"{len(in_queue)} offers in {s.queue} without an accept"
                    if len(in_queue) >= self.spec.max_offers
                    else f"no agent accepted within {self.spec.max_wait}"
                )
                info = await self._overflow_info(why)
                if info is None:
                    await self._callback(why)
                    return
                self._use_queue(info)
                s.queued_at, s.queue_deadline = now, now + self.spec.max_wait
                await self._enter_queue()
                continue
            if s.routing == "vendor":
                await self._await_vendor()
                continue
            self._agent_free = False  # a wake-up from now on means: look again
            offered = await self._offer(route)
            if offered:
                continue
            poll = AGENT_FALLBACK if self._first_come else AGENT_POLL
            wake = min(now + poll, s.queue_deadline)
            if can_relax and relax_after is not None:
                wake = min(wake, s.queued_at + relax_after)
            with contextlib.suppress(TimeoutError):
                await workflow.wait_condition(
                    lambda: s.state != "queued" or self._agent_free,
                    timeout=max(wake - now, timedelta(seconds=1)),
                )

    async def _await_vendor(self) -> None:
        """Vendor routing: wait for the vendor's `ticket.updated` with an assignee (drained
        by the loop), the customer leaving, or the queue's deadline."""
        s = self.status
        assert s.queue_deadline is not None
        workflow.set_current_details(self._describe())
        wait = max(s.queue_deadline - workflow.now(), timedelta(seconds=1))
        with contextlib.suppress(TimeoutError):
            await workflow.wait_condition(
                lambda: s.state != "queued" or bool(self._inbox), timeout=wait
            )

    async def _offer(self, route: Route | None) -> bool:
        """Offer to the best free agent and wait for the answer; False when there is none."""
        s = self.status
        assert s.queue is not None
        number = len(s.offers) + 1
        skills = self._skills(route)
        if skills is None:
            skills = list(s.queue_skills)
        tried = sorted({o.agent_id for o in s.offers})
        # Each search has its own key: the outbox would replay an earlier "no one is free".
        s.searches += 1
        line: dict[str, Any] = {}
        if self._first_come:  # in line since the request: an overflow keeps its place
            line = {
                "workflow_id": workflow.info().workflow_id,
                "waiting_since": s.requested_at or s.queued_at,
                "priority": TICKET_PRIORITY,
            }
        reservation: Reservation = await call(
            "presence.reserve_agent",
            PickAgent(
                idempotency_key=self._key(f"offer-{number}-search-{s.searches}"),
                conversation_id=s.conversation_id,
                queue=s.queue,
                skills=skills,
                languages=self._languages(),
                exclude=tried,
                **line,
            ),
            Reservation,
        )
        s.in_line = bool(line) and reservation.agent_id is None
        if reservation.agent_id is None:
            return False
        if s.state != "queued":  # the customer left while we looked
            await self._release(reservation.agent_id, f"release-{number}")
            return True
        now = workflow.now()
        offer = Offer(
            agent_id=reservation.agent_id,
            agent_name=reservation.name,
            skills=reservation.skills,
            languages=reservation.languages,
            queue=s.queue,
            number=number,
            offered_at=now,
            expires_at=now + self.spec.offer_timeout,
        )
        s.offers.append(offer)
        await self._transition(
            "offered",
            f"offered to {offer.agent_id}",
            {"agent": offer.agent_id, "offer": number, "expires_at": offer.expires_at.isoformat()},
        )
        with contextlib.suppress(TimeoutError):
            await workflow.wait_condition(
                lambda: offer.outcome != "pending", timeout=self.spec.offer_timeout
            )
        if offer.outcome == "pending":
            offer.outcome, offer.reason = "timed_out", "no answer in time"
            await self._release(offer.agent_id, f"release-{number}")
            await self._transition(
                "queued", f"offer to {offer.agent_id} timed out", {"agent": offer.agent_id}
            )
        elif offer.outcome == "declined":
            await self._release(offer.agent_id, f"release-{number}")
        elif offer.outcome == "accepted":
            await self._accepted()
        metrics.handoff_offer_answered(queue=offer.queue, outcome=offer.outcome)
        return True

    async def _release(self, agent: str, step: str) -> None:
        await call(
            "presence.release_agent",
            ReleaseAgent(idempotency_key=self._key(step), agent_id=agent),
            AgentReleased,
        )

    async def _accepted(self) -> None:
        s = self.status
        assert s.agent is not None and s.ticket_id is not None
        if s.routing == "opsflow":  # the vendor assigned it already
            await self._update_ticket("assign", assignee=s.agent, status="open")
        policy = self._input.escalation_policy if self._input else None
        if policy is None:
            return
        spec = policy.escalation
        priority = "p2" if "p2" in spec.priorities else spec.priorities[0]
        case = CaseInfo(
            ticket_id=s.ticket_id,
            customer_id=s.customer_id or s.conversation_id,
            priority=priority,
            stage="support",
            channel="chat",
            subject=(f"Chat handoff: {s.topic}" if s.topic else "Chat handoff")[:500],
            opened_at=s.requested_at or workflow.now(),
        )
        workflow_id = case_workflow_id(s.ticket_id)
        try:
            await workflow.start_child_workflow(
                EscalationWorkflow.run,
                OpenCase(case=case, policy=policy),
                id=workflow_id,
                parent_close_policy=workflow.ParentClosePolicy.ABANDON,
                static_summary=f"{priority.upper()} case {s.ticket_id} from chat handoff "
                f"{s.conversation_id} under {policy.ref}",
            )
        except WorkflowAlreadyStartedError:
            workflow.logger.info("the case for the handoff ticket is already open")
        s.case_workflow_id = workflow_id
        if workflow.patched(CASE_ACKNOWLEDGED_PATCH):
            # At once, before the case's first pass can find a level or a clock due.
            done = await self._case_command("acknowledge", s.agent)
            s.case_acknowledged = done.applied
        await ledger(
            self._target(),
            "case-opened",
            {"case": workflow_id, "policy": policy.ref, "opened_at": case.opened_at.isoformat()},
        )

    async def _case_command(
        self, command: Literal["acknowledge", "resolve"], by: str, outcome: str | None = None
    ) -> CaseCommandDone:
        s = self.status
        assert s.case_workflow_id is not None
        done: CaseCommandDone = await call(
            "handoff.case_command",
            CaseCommand(
                idempotency_key=self._key(f"case-{command}"),
                workflow_id=s.case_workflow_id,
                command=command,
                by=by,
                outcome=outcome,
            ),
            CaseCommandDone,
        )
        if not done.applied:
            workflow.logger.info("the case did not take %s: %s", command, done.detail)
        return done

    async def _close_case(self) -> None:
        """Resolve the case the way the conversation ended: by who resolved it, or with the
        outcome (returned to the bot, abandoned) and the agent who had it."""
        s = self.status
        if s.case_workflow_id is None or s.case_closed:
            return
        by = s.ended_by or s.agent or "opsflow"
        outcome = None
        if s.state != "resolved":
            outcome = f"{s.state.replace('_', ' ')}: {s.end_reason or ''}"
        elif by == "customer":  # the customer left the agent's chat: the agent had it
            outcome, by = f"customer left: {s.end_reason or ''}", s.agent or by
        elif by == "opsflow":
            outcome = s.end_reason
        if outcome is not None:
            outcome = outcome.rstrip(": ")[:200]
        done = await self._case_command("resolve", by, outcome)
        s.case_closed = True
        detail = {"case": s.case_workflow_id, "by": by, "outcome": outcome or "resolved"}
        if not done.applied:
            detail["not_applied"] = done.detail
        await ledger(self._target(), "case-closed", detail)

    async def _active_phase(self) -> None:
        s = self.status
        workflow.set_current_details(self._describe())
        try:
            await workflow.wait_condition(lambda: s.state != "active", timeout=ACTIVE_LIMIT)
        except TimeoutError:
            self.status.ended_by = "opsflow"
            await self._transition("resolved", f"no resolve within {ACTIVE_LIMIT}")

    # --- endings ---------------------------------------------------------------------------

    async def _callback(self, why: str) -> None:
        """After hours, too long a wait, no one: a callback inside the queue's hours in the
        customer's timezone, and the definition's other fallback actions."""
        s = self.status
        if s.state in FINAL_STATES:
            return
        callbacks = [a for a in self.spec.fallback if isinstance(a, ScheduleCallbackAction)]
        others: list[Action] = [
            a for a in self.spec.fallback if not isinstance(a, ScheduleCallbackAction)
        ]
        packet = s.context.text if s.context else ""
        for n, action in enumerate(callbacks):
            info = await self._queue_info(action.queue, [])
            queue_cal = queue_calendar(info.timezone, info.hours)
            timezone = s.profile.timezone if s.profile else "UTC"
            customer_cal = customer_calendar(timezone)
            slot = callback_slot(workflow.now(), queue_cal, customer_cal)
            due = queue_cal.add_business_time(slot, action.within)
            local = f"{format_local(slot, customer_cal, True)} {customer_cal.timezone}"
            s.callback_at, s.callback_local = slot, local
            ticket: Ticket = await call(
                "ticketing.create_ticket",
                CreateTicket(
                    idempotency_key=self._key(f"callback-{n}"),
                    customer_id=s.customer_id or s.conversation_id,
                    subject=f"Call back {s.customer_id} at {local}"[:500],
                    description=(
                        f"Callback due {slot.isoformat()} ({local}), at the latest "
                        f"{due.isoformat()}. Why: {why}.\n\n{packet}"
                    )[:60_000],
                    priority="p2",
                    queue=action.queue,
                    tags=["opsflow", "handoff", "callback", f"conversation:{s.conversation_id}"],
                    channel="phone",
                    stage="support",
                    due_at=slot,
                ),
                Ticket,
            )
            s.callback_ticket_id = ticket.id
        if others:
            outcome = await run_actions(others, self._target(), "fallback")
            if outcome.failed:
                workflow.logger.warning("fallback actions failed: %s", outcome.failed)
        if s.ticket_id:
            await self._update_ticket("callback", add_tags=["callback"], status="pending")
        if s.bot_muted:
            await self._bot("resume", f"callback scheduled: {why}")
        await self._transition(
            "callback_scheduled",
            why,
            {
                "callback_at": s.callback_at.isoformat() if s.callback_at else None,
                "callback_local": s.callback_local,
                "ticket": s.callback_ticket_id,
            },
        )

    async def _update_ticket(self, step: str, **changes: Any) -> None:
        s = self.status
        if s.ticket_id is None:
            return
        s.commands += 1
        await call(
            "ticketing.update_ticket",
            UpdateTicket(
                idempotency_key=self._key(f"ticket-{s.commands}-{step}"),
                ticket_id=s.ticket_id,
                **changes,
            ),
            Ticket,
        )

    async def _bot(self, action: Literal["stop_replying", "resume"], reason: str) -> None:
        s = self.status
        await call(
            "handoff.bot_action",
            BotAction(
                idempotency_key=self._key(f"bot-{action}"),
                conversation_id=s.conversation_id,
                customer_id=s.customer_id or s.conversation_id,
                action=action,
                reason=reason[:500],
            ),
            BotActionSent,
        )

    # --- messages ----------------------------------------------------------------------------

    @workflow.query
    def state(self) -> HandoffStatus:
        """The full state, the context packet included."""
        return self.status

    def _refuse_if_over(self) -> None:
        if self._status is None:
            raise ApplicationError("the conversation has not started yet")
        if self.status.state in FINAL_STATES:
            raise ApplicationError(
                f"conversation {self.status.conversation_id} has already ended "
                f"({self.status.state})"
            )

    def _refuse_unless_offered_to(self, agent: str) -> Offer:
        self._refuse_if_over()
        s = self.status
        if s.state == "active":
            raise ApplicationError(f"already accepted by {s.agent}")
        offer = s.current_offer
        if s.routing == "vendor" and s.state == "queued":
            raise ApplicationError(
                f"the vendor routes this conversation: assign ticket {s.ticket_id} there"
            )
        if s.state != "offered" or offer is None:
            raise ApplicationError(f"the conversation is {s.state}: no offer is open")
        if offer.agent_id != agent:
            raise ApplicationError(
                f"the conversation is offered to {offer.agent_id}, not to {agent}"
            )
        return offer

    @workflow.update
    async def accept(self, command: Accept) -> HandoffStatus:
        s = self.status
        offer = self._refuse_unless_offered_to(command.agent)
        offer.outcome = "accepted"
        s.agent, s.accepted_at = command.agent, workflow.now()
        await self._transition(
            "active",
            f"accepted by {command.agent}",
            {"agent": command.agent, "waited_seconds": self._waited_seconds()},
        )
        return s

    def _waited_seconds(self) -> float:
        s = self.status
        if s.requested_at is None:
            return 0.0
        return (workflow.now() - s.requested_at).total_seconds()

    @accept.validator
    def _validate_accept(self, command: Accept) -> None:
        self._refuse_unless_offered_to(command.agent)

    @workflow.update
    async def decline(self, command: Decline) -> HandoffStatus:
        s = self.status
        offer = self._refuse_unless_offered_to(command.agent)
        offer.outcome, offer.reason = "declined", command.reason
        await self._transition(
            "queued",
            f"declined by {command.agent}: {command.reason}",
            {"agent": command.agent, "reason": command.reason},
        )
        return s

    @decline.validator
    def _validate_decline(self, command: Decline) -> None:
        self._refuse_unless_offered_to(command.agent)

    @workflow.update
    async def return_to_bot(self, command: ReturnToBot) -> HandoffStatus:
        s = self.status
        if s.current_offer is not None:
            s.current_offer.outcome = "withdrawn"
        s.ended_by = command.by or s.agent or "agent"
        await self._transition("returned_to_bot", command.reason, {"by": s.ended_by})
        return s

    @return_to_bot.validator
    def _validate_return_to_bot(self, command: ReturnToBot) -> None:
        self._refuse_if_over()
        if self.status.state == "bot":
            raise ApplicationError("the bot has the conversation already")

    @workflow.update
    async def resolve(self, command: Resolve) -> HandoffStatus:
        s = self.status
        s.ended_by = command.by or s.agent or "agent"
        await self._transition("resolved", f"resolved by {s.ended_by}", {"by": s.ended_by})
        return s

    @resolve.validator
    def _validate_resolve(self, command: Resolve) -> None:
        self._refuse_if_over()
        if self.status.state != "active":
            raise ApplicationError(
                f"the conversation is {self.status.state}: only an active conversation "
                "can be resolved"
            )

    @workflow.update
    async def customer_left(self, command: CustomerLeft) -> HandoffStatus:
        s = self.status
        if s.current_offer is not None:
            s.current_offer.outcome = "withdrawn"
        s.ended_by = "customer"
        if s.state == "active":
            await self._transition("resolved", command.reason, {"by": "customer"})
        elif s.state == "bot":
            await self._transition("returned_to_bot", command.reason, {"by": "customer"})
        else:
            await self._transition("abandoned", command.reason, {"by": "customer"})
        return s

    @customer_left.validator
    def _validate_customer_left(self, command: CustomerLeft) -> None:
        self._refuse_if_over()
