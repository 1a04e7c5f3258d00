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
from datetime import timedelta
from typing import Any, Literal

from temporalio import workflow
from temporalio.exceptions import ActivityError, ApplicationError, WorkflowAlreadyStartedError

from activities import search_attributes as sa
from workflows import metrics
from workflows.actions import ActionTarget, call, ledger, run_actions
from workflows.escalation import EscalationWorkflow

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
    from definitions.events import BotHandoffRequested, BotTurn, EventEnvelope, TicketUpdated
    from definitions.models import HandoffSpec, Route
    from workflows import handoff_core as core
    from workflows import handoff_routing as routing
    from workflows.escalation_model import EscalationInput as OpenCase
    from workflows.escalation_model import case_workflow_id
    from workflows.handoff_hours import schedule_callback
    from workflows.handoff_model import (
        FINAL_PHASES,
        Accept,
        CustomerLeft,
        Decline,
        HandoffInput,
        HandoffPhase,
        HandoffState,
        HandoffStatus,
        Resolve,
        ReturnToBot,
    )
    from workflows.handoff_packet import build_packet

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
MAX_HISTORY_EVENTS = 10_000


@workflow.defn(name="Handoff")
class HandoffWorkflow:
    def __init__(self) -> None:
        self._status: HandoffState | None = None
        self._input: HandoffInput | None = None
        self._inbox: list[EventEnvelope] = []
        self._calendar: BusinessCalendar | None = None
        self._agent_free = False
        self._first_come: bool | None = None

    # --- plumbing ------------------------------------------------------------------------

    @property
    def status(self) -> HandoffState:
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
        return ActionTarget(
            kind="handoff",
            customer_id=s.customer_id or s.conversation_id,
            ticket_id=s.ticket_id,
            assignee=s.agent,
            account_manager=s.profile.account_manager if s.profile else None,
            definition=s.definition,
            template_context=core.template_context(s, self.spec, extra),
        )

    def _upsert(self) -> None:
        pairs = core.search_attributes(self.status)
        due = core.next_deadline(self.status)
        if due is not None and workflow.patched(DUE_AT_PATCH):
            # kept once nothing is due (see OPS_DUE_AT)
            pairs.append(sa.OPS_DUE_AT.value_set(due))
        workflow.upsert_search_attributes(pairs)

    def _set_state(self, phase: HandoffPhase, why: str) -> None:
        """Change phase now; `_move` also writes it to the ledger."""
        s = self.status
        if s.state in FINAL_PHASES:
            return  # an ending is final: a late step of the main loop changes nothing
        waited = core.change_phase(s, phase, why, workflow.now())
        if waited is not None:
            metrics.handoff_wait_ended(queue=s.queue or "none", outcome=phase, seconds=waited)
        self._upsert()
        self._show()

    def _show(self) -> None:
        workflow.set_current_details(core.describe(self.status, workflow.now(), self._calendar))

    async def _move(self, move: core.Move) -> None:
        """Change phase now (synchronously: handlers and queries see it), then write it to
        the ledger."""
        self._set_state(move.phase, move.why)
        s = self.status
        last = s.history[-1]
        step = f"transition-{s.transitions}-{last.state}"
        await ledger(self._target(), step, {"state": last.state, "why": last.why, **move.detail})

    async def _write(self, entry: core.LedgerEntry) -> None:
        await ledger(self._target(), entry.step, entry.detail)

    # --- run -----------------------------------------------------------------------------

    @workflow.run
    async def run(self, request: HandoffInput) -> HandoffStatus:
        self._input = request
        if request.carried is not None:
            self._status = request.carried
        else:
            conversation = (
                request.conversation_id
                # The start signal's conversation, from history: a replay under another
                # workflow id (a recorded history) decides exactly as the live run.
                or core.conversation_named(self._inbox)
                or workflow.info().workflow_id.removeprefix("handoff-")
            )
            self._status = HandoffState(
                conversation_id=conversation, definition=request.definition.ref
            )
            await self._move(core.Move("bot", "conversation started"))
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

    async def _finish(self) -> None:
        s = self.status
        end = core.ending(s)
        if end.leave_line:  # it stopped waiting without an agent: out of the line
            await call(
                "presence.leave_queue", LeaveQueue(conversation_id=s.conversation_id), type(None)
            )
            s.in_line = False
        if end.release_offered is not None:
            offer = end.release_offered
            await self._release(offer.agent_id, f"release-{offer.number}")
        if end.release_active is not None:
            await self._release(end.release_active, "release-active")
        if end.close_ticket:
            try:
                await self._update_ticket("abandoned", status="closed", add_tags=["abandoned"])
            except ActivityError as exc:  # a vendor may refuse the status: the run still ends
                workflow.logger.warning("closing the abandoned ticket failed: %s", exc.cause)
        if end.resume_bot is not None:
            await self._bot("resume", end.resume_bot)
        if s.case_workflow_id and workflow.patched(CASE_CLOSED_PATCH):
            await self._close_case()
        await workflow.wait_condition(workflow.all_handlers_finished)
        self._upsert()
        self._show()

    async def _bot_phase(self, request: HandoffInput) -> None:
        s = self.status
        while s.state == "bot":
            await self._drain()
            if s.state != "bot":
                return
            self._show()
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
                await self._move(core.Move("returned_to_bot", "the bot conversation went idle"))

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
            received = core.receive(s, envelope)
            if received.note is not None:
                workflow.logger.warning(received.note)
            event = received.event
            if event is None:
                continue
            if received.new_customer:
                self._upsert()
            if isinstance(event, BotTurn | BotHandoffRequested):
                await self._load_profile()  # a tier trigger reads the profile
                # Asked only where it decides, so a run records the patch where it always did.
                by_meaning = (
                    isinstance(event, BotTurn)
                    and s.state == "bot"
                    and workflow.patched(TRIGGERS_BY_MEANING_PATCH)
                )
                decision = core.read_bot_event(
                    s, event, self.spec, workflow.now(), envelope.time, by_meaning
                )
                if decision.ledger is not None:
                    await self._write(decision.ledger)
                if decision.move is not None:
                    await self._move(decision.move)
            elif isinstance(event, TicketUpdated):
                await self._vendor_update(event)

    async def _vendor_update(self, event: TicketUpdated) -> None:
        decision = core.vendor_assignment(self.status, event, workflow.now())
        if decision.note is not None:
            workflow.logger.info(decision.note)
        if decision.move is not None:
            await self._move(decision.move)
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

    async def _queue_info(self, queue: str, skills: list[str] | None) -> QueueInfo:
        info: QueueInfo = await call(
            "presence.queue_info",
            QueueRequest(
                queue=queue,
                skills=skills,
                languages=routing.languages(self.status),
                exclude_conversation=self.status.conversation_id,
            ),
            QueueInfo,
        )
        return info

    def _use_queue(self, info: QueueInfo) -> BusinessCalendar:
        self._calendar = routing.use_queue(self.status, info)
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
        route, unreadable = routing.choose_route(list(self.spec.routes), s)
        for name in unreadable:
            workflow.logger.warning("route %s could not be evaluated; skipped", name)
        if route is None:
            await self._callback("no route matches the conversation")
            return
        s.route = route.name
        # Staffing and the estimate count the required skills: optional ones may be dropped.
        info = await self._queue_info(route.queue, list(route.skills))
        if (full := routing.queue_full(info, self.spec)) is not None:
            info = await self._overflow_info(full) or info
            if info.id == route.queue:
                await self._callback(f"queue {route.queue} is full and there is no overflow")
                return
        while True:
            calendar = self._use_queue(info)
            why = routing.queue_refusal(info, calendar, self.spec, workflow.now())
            if why is None:
                break
            overflow = await self._overflow_info(why)
            if overflow is None:
                await self._callback(why)
                return
            info = overflow
        await self._enter_queue()

    async def _overflow_info(self, why: str) -> QueueInfo | None:
        """The overflow queue, once (None when there is none or it was used)."""
        s = self.status
        entry = routing.overflow(s, self.spec, why)
        if entry is None or self.spec.overflow_queue is None:
            return None
        metrics.handoff_overflowed(
            queue=s.queue or s.route or "none", overflow_queue=self.spec.overflow_queue
        )
        await self._write(entry)
        return await self._queue_info(self.spec.overflow_queue, None)

    async def _enter_queue(self) -> None:
        s = self.status
        assert s.context is not None
        if s.state in FINAL_PHASES:
            return
        if s.ticket_id is None:
            ticket: Ticket = await call(
                "ticketing.create_ticket",
                CreateTicket(
                    idempotency_key=self._key("ticket"),
                    customer_id=s.customer_id or s.conversation_id,
                    subject=routing.ticket_subject(s),
                    priority=core.TICKET_PRIORITY,
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
        if s.state in FINAL_PHASES:
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
        await self._move(routing.queued(s, self.spec, workflow.now()))

    # --- offers --------------------------------------------------------------------------

    async def _offer_loop(self) -> None:
        s = self.status
        route = routing.current_route(s, self.spec)
        if self._first_come is None:
            self._first_come = workflow.patched(FIRST_COME_PATCH)
        while s.state == "queued":
            await self._drain()
            now = workflow.now()
            check = routing.check_queue(s, self.spec, route, now)
            if check.relaxed is not None:
                await self._write(check.relaxed)
            if check.over is not None:
                info = await self._overflow_info(check.over)
                if info is None:
                    await self._callback(check.over)
                    return
                self._use_queue(info)
                routing.requeue(s, self.spec, now)
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
            with contextlib.suppress(TimeoutError):
                await workflow.wait_condition(
                    lambda: s.state != "queued" or self._agent_free,
                    timeout=routing.next_look(s, check, now, poll),
                )

    async def _await_vendor(self) -> None:
        """Vendor routing: wait for the vendor's `ticket.updated` with an assignee (drained
        by the loop), the customer leaving, or the queue's deadline."""
        s = self.status
        assert s.queue_deadline is not None
        self._show()
        wait = max(s.queue_deadline - workflow.now(), timedelta(seconds=1))
        with contextlib.suppress(TimeoutError):
            await workflow.wait_condition(
                lambda: s.state != "queued" or bool(self._inbox), timeout=wait
            )

    async def _offer(self, route: Route | None) -> bool:
        """Offer to the best free agent and wait for the answer; False when there is none."""
        s = self.status
        assert s.queue is not None
        search = routing.agent_search(s, route, bool(self._first_come), workflow.info().workflow_id)
        reservation: Reservation = await call(
            "presence.reserve_agent",
            PickAgent(
                idempotency_key=self._key(search.step),
                conversation_id=s.conversation_id,
                queue=s.queue,
                skills=search.skills,
                languages=routing.languages(s),
                exclude=search.exclude,
                **search.line,
            ),
            Reservation,
        )
        s.in_line = bool(search.line) and reservation.agent_id is None
        if reservation.agent_id is None:
            return False
        if s.state != "queued":  # the customer left while we looked
            await self._release(reservation.agent_id, f"release-{search.number}")
            return True
        offer, move = routing.offer(s, reservation, search.number, self.spec, workflow.now())
        await self._move(move)
        with contextlib.suppress(TimeoutError):
            await workflow.wait_condition(
                lambda: offer.outcome != "pending", timeout=self.spec.offer_timeout
            )
        if offer.outcome == "pending":
            timed_out = routing.offer_timed_out(offer)
            await self._release(offer.agent_id, f"release-{search.number}")
            await self._move(timed_out)
        elif offer.outcome == "declined":
            await self._release(offer.agent_id, f"release-{search.number}")
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
        case = core.case_to_open(s, policy, workflow.now())
        workflow_id = case_workflow_id(s.ticket_id)
        try:
            await workflow.start_child_workflow(
                EscalationWorkflow.run,
                OpenCase(case=case, policy=policy),
                id=workflow_id,
                parent_close_policy=workflow.ParentClosePolicy.ABANDON,
                static_summary=f"{case.priority.upper()} case {s.ticket_id} from chat handoff "
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
        by, outcome = core.case_resolution(s)
        done = await self._case_command("resolve", by, outcome)
        s.case_closed = True
        detail = {"case": s.case_workflow_id, "by": by, "outcome": outcome or "resolved"}
        if not done.applied:
            detail["not_applied"] = done.detail
        await ledger(self._target(), "case-closed", detail)

    async def _active_phase(self) -> None:
        s = self.status
        self._show()
        try:
            await workflow.wait_condition(lambda: s.state != "active", timeout=ACTIVE_LIMIT)
        except TimeoutError:
            await self._move(core.active_expired(s, ACTIVE_LIMIT))

    # --- endings ---------------------------------------------------------------------------

    async def _callback(self, why: str) -> None:
        """After hours, too long a wait, no one: a callback inside the queue's hours in the
        customer's timezone, and the definition's other fallback actions."""
        s = self.status
        if s.state in FINAL_PHASES:
            return
        callbacks, others = core.fallback_actions(self.spec)
        for n, action in enumerate(callbacks):
            info = await self._queue_info(action.queue, [])
            callback = schedule_callback(s, info, action.within, why, workflow.now())
            ticket: Ticket = await call(
                "ticketing.create_ticket",
                CreateTicket(
                    idempotency_key=self._key(f"callback-{n}"),
                    customer_id=s.customer_id or s.conversation_id,
                    subject=callback.subject,
                    description=callback.description,
                    priority=core.TICKET_PRIORITY,
                    queue=action.queue,
                    tags=["opsflow", "handoff", "callback", f"conversation:{s.conversation_id}"],
                    channel="phone",
                    stage="support",
                    due_at=callback.slot,
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
        await self._move(core.callback_moved(s, why))

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

    @staticmethod
    def _refuse(refusal: str | None) -> None:
        """Refuse the update (nothing changes) when the core gives a reason."""
        if refusal is not None:
            raise ApplicationError(refusal)

    @workflow.update
    async def accept(self, command: Accept) -> HandoffStatus:
        self._refuse(core.offer_refusal(self._status, command.agent))
        await self._move(core.accept(self.status, command.agent, workflow.now()))
        return self.status

    @accept.validator
    def _validate_accept(self, command: Accept) -> None:
        self._refuse(core.offer_refusal(self._status, command.agent))

    @workflow.update
    async def decline(self, command: Decline) -> HandoffStatus:
        self._refuse(core.offer_refusal(self._status, command.agent))
        await self._move(core.decline(self.status, command.agent, command.reason))
        return self.status

    @decline.validator
    def _validate_decline(self, command: Decline) -> None:
        self._refuse(core.offer_refusal(self._status, command.agent))

    @workflow.update
    async def return_to_bot(self, command: ReturnToBot) -> HandoffStatus:
        await self._move(core.return_to_bot(self.status, command.by, command.reason))
        return self.status

    @return_to_bot.validator
    def _validate_return_to_bot(self, command: ReturnToBot) -> None:
        self._refuse(core.return_to_bot_refusal(self._status))

    @workflow.update
    async def resolve(self, command: Resolve) -> HandoffStatus:
        await self._move(core.resolve(self.status, command.by))
        return self.status

    @resolve.validator
    def _validate_resolve(self, command: Resolve) -> None:
        self._refuse(core.resolve_refusal(self._status))

    @workflow.update
    async def customer_left(self, command: CustomerLeft) -> HandoffStatus:
        await self._move(core.customer_left(self.status, command.reason))
        return self.status

    @customer_left.validator
    def _validate_customer_left(self, command: CustomerLeft) -> None:
        self._refuse(core.refusal_if_over(self._status))
