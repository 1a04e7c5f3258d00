"""The handoff workflow: one per bot conversation, from the bot to the right person.

Workflow id `handoff-<conversation id>`, started by signal-with-start of `event` (the
intake's `bot.turn` / `bot.handoff_requested`). States: bot → requested → queued → offered →
active, ending resolved, returned_to_bot, callback_scheduled or abandoned; every transition
goes to the ledger. Updates (accept, decline, return_to_bot, resolve, customer_left) are
validated first: a refused update changes nothing. The `state` query returns everything,
the context packet included. Handlers change the state; the main loop asks the core
(handoff_core and its topics) what to do and carries it out through handoff_effects.
"""

from __future__ import annotations

import contextlib
from datetime import timedelta

from temporalio import workflow
from temporalio.exceptions import ApplicationError, WorkflowAlreadyStartedError

from workflows import metrics
from workflows.actions import ActionTarget, ledger
from workflows.escalation import EscalationWorkflow
from workflows.releases import has_change

with workflow.unsafe.imports_passed_through():
    from activities.handoff_contracts import QueueInfo
    from definitions.calendar import BusinessCalendar
    from definitions.events import BotHandoffRequested, BotTurn, EventEnvelope, TicketUpdated
    from definitions.models import HandoffSpec, Route
    from workflows import handoff_core as core
    from workflows import handoff_routing as routing
    from workflows.escalation_model import case_workflow_id
    from workflows.escalation_pinned import EscalationInput as OpenCase
    from workflows.handoff_effects import (
        acknowledge_and_record_case,
        assign_ticket_to_agent,
        carry_out_ending,
        fetch_queue_info,
        file_handoff_ticket,
        gather_handoff_context,
        handoff_target,
        load_customer_profile,
        release_handoff_agent,
        reserve_agent_for,
        schedule_fallback,
        take_over_from_bot,
        upsert_handoff_attributes,
    )
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
TRIGGERS_BY_MEANING_PATCH = "handoff-triggers-by-meaning"
"""Asking for a person is read from whole words and the bot's intents, not substrings."""
TRANSCRIPT_BY_SIZE_PATCH = "handoff-transcript-by-size"
"""Runs from before this patch kept the last 500 turns; runs since keep the transcript whole
up to a size (handoff_triggers.TRANSCRIPT_BYTES), then its start and its latest turns, and
count every turn in `conversation.turns` (route conditions read it)."""
# The patches asked while carrying out effects live with them, in handoff_effects.
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

    def _target(self) -> ActionTarget:
        return handoff_target(self.status, self.spec)

    def _set_state(self, phase: HandoffPhase, why: str) -> None:
        """Change phase now; `_move` also writes it to the ledger."""
        s = self.status
        if s.state in FINAL_PHASES:
            return  # an ending is final: a late step of the main loop changes nothing
        waited = core.change_phase(s, phase, why, workflow.now())
        if waited is not None:
            metrics.handoff_wait_ended(queue=s.queue or "none", outcome=phase, seconds=waited)
        upsert_handoff_attributes(s)
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
        s = self.status
        s.transcript_by_size = has_change(TRANSCRIPT_BY_SIZE_PATCH)
        if request.carried is None:
            await self._move(core.Move("bot", "conversation started"))
        upsert_handoff_attributes(s)
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
        await carry_out_ending(s, self.spec, core.ending(s))
        await workflow.wait_condition(workflow.all_handlers_finished)
        upsert_handoff_attributes(s)
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
                upsert_handoff_attributes(s)
            if isinstance(event, BotTurn | BotHandoffRequested):
                await load_customer_profile(s)  # a tier trigger reads the profile
                # Asked only where it decides, so a run records the patch where it always did.
                by_meaning = (
                    isinstance(event, BotTurn)
                    and s.state == "bot"
                    and has_change(TRIGGERS_BY_MEANING_PATCH)
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

    # --- routing -------------------------------------------------------------------------

    def _use_queue(self, info: QueueInfo) -> BusinessCalendar:
        self._calendar = routing.use_queue(self.status, info)
        return self._calendar

    async def _route_and_queue(self) -> None:
        s = self.status
        await gather_handoff_context(s, self.spec)
        route, unreadable = routing.choose_route(list(self.spec.routes), s)
        for name in unreadable:
            workflow.logger.warning("route %s could not be evaluated; skipped", name)
        if route is None:
            await self._callback("no route matches the conversation")
            return
        s.route = route.name
        # Staffing and the estimate count the required skills: optional ones may be dropped.
        info = await fetch_queue_info(s, route.queue, list(route.skills))
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
        return await fetch_queue_info(s, self.spec.overflow_queue, None)

    async def _enter_queue(self) -> None:
        s = self.status
        if s.state in FINAL_PHASES:
            return
        await file_handoff_ticket(s)
        if s.state in FINAL_PHASES:
            return
        await take_over_from_bot(s, self.spec)
        await self._move(routing.queued(s, self.spec, workflow.now()))

    # --- offers --------------------------------------------------------------------------

    async def _offer_loop(self) -> None:
        s = self.status
        route = routing.current_route(s, self.spec)
        if self._first_come is None:
            self._first_come = has_change(FIRST_COME_PATCH)
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
        search = routing.agent_search(s, route, bool(self._first_come), workflow.info().workflow_id)
        reservation = await reserve_agent_for(s, search)
        s.in_line = bool(search.line) and reservation.agent_id is None
        if reservation.agent_id is None:
            return False
        if s.state != "queued":  # the customer left while we looked
            await release_handoff_agent(reservation.agent_id, f"release-{search.number}")
            return True
        offer, move = routing.offer(s, reservation, search.number, self.spec, workflow.now())
        await self._move(move)
        with contextlib.suppress(TimeoutError):
            await workflow.wait_condition(
                lambda: offer.outcome != "pending", timeout=self.spec.offer_timeout
            )
        if offer.outcome == "pending":
            timed_out = routing.offer_timed_out(offer)
            await release_handoff_agent(offer.agent_id, f"release-{search.number}")
            await self._move(timed_out)
        elif offer.outcome == "declined":
            await release_handoff_agent(offer.agent_id, f"release-{search.number}")
        elif offer.outcome == "accepted":
            await self._accepted()
        metrics.handoff_offer_answered(queue=offer.queue, outcome=offer.outcome)
        return True

    async def _accepted(self) -> None:
        """The agent has it: the ticket is theirs and, under an escalation policy, the
        ticket's case opens as a child workflow that outlives the conversation."""
        s = self.status
        assert s.agent is not None and s.ticket_id is not None
        await assign_ticket_to_agent(s)
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
        await acknowledge_and_record_case(s, self.spec, policy.ref, case)

    async def _active_phase(self) -> None:
        s = self.status
        self._show()
        try:
            await workflow.wait_condition(lambda: s.state != "active", timeout=ACTIVE_LIMIT)
        except TimeoutError:
            await self._move(core.active_expired(s, ACTIVE_LIMIT))

    # --- endings ---------------------------------------------------------------------------

    async def _callback(self, why: str) -> None:
        """No agent (after hours, too long a wait, no one): fall back to a callback."""
        s = self.status
        if s.state in FINAL_PHASES:
            return
        await schedule_fallback(s, self.spec, why)
        await self._move(core.callback_moved(s, why))

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
