"""The service-recovery workflow: one per customer (`customer-<id>`), started by
signal-with-start on the customer's first event, alive while anything is pending (windows,
cooldowns, caps, dedup keys, stall timers, an open episode or an approval).

Decisions are made by the pure `RecoveryEngine` (workflows/recovery_core.py): what an event
or a due moment does, whether a person's command is refused and what it does, what the UI
shows. This module holds the engine, receives the messages, asks it and carries out its plans
(ledger entries, actions, notices, tickets), upserts the search attributes and decides only
when to wait, continue as new or end.

The `event` signal takes the EventEnvelope and, optionally, which rule sets are deployed now
(`RulesDigest`; runs recorded before it carry the `RecoveryRules` themselves): a newer set
replaces the pinned one from that event on.
"""

from __future__ import annotations

import asyncio
import contextlib
from datetime import datetime, timedelta
from typing import Any, Literal

from temporalio import workflow
from temporalio.exceptions import ActivityError

from activities import search_attributes as sa
from activities.recovery_contracts import BACKLOG_QUERY, NEXT_CHUNK_ACTIVITY
from workflows import metrics
from workflows.actions import ActionTarget, call, ledger, run_actions
from workflows.releases import has_change

with workflow.unsafe.imports_passed_through():
    from activities.customer_contracts import CustomerProfile
    from activities.models import GetCustomer, MessageSent, Ticket
    from definitions.events import EventEnvelope
    from workflows.recovery_context import Plan
    from workflows.recovery_core import RecoveryEngine
    from workflows.recovery_model import (
        Approve,
        CloseEpisode,
        PendingApproval,
        PreviousState,
        RecoveryInput,
        RecoveryMemory,
        RecoveryRules,
        RecoveryState,
        RecoveryStatus,
        RecoverySummary,
        Reject,
        RulesDigest,
        SilenceCommand,
        Unsilence,
        offered_rules,
    )

# Runs started before this patch keep reading the pre-contract event names of their pinned
# rule sets (recovery_context.LEGACY_EVENT_NAMES); new runs read the event contract only.
CONTRACT_NAMES_PATCH = "recovery-contract-names"
WAKE_FLAG_PATCH = "recovery-wake-flag-at-pass-start"
UPSERT_ON_CHANGE_PATCH = "recovery-upsert-on-change"
# Runs since this patch remember across runs: a run that ends idle records its state in the
# ledger (one activity at the end), and a new run of the customer loads it before its first
# event (one activity at the start), so a duplicate delivery reaching a new run is ignored and
# counters (and so step names and idempotency keys) continue instead of starting again.
RUN_MEMORY_PATCH = "recovery-remember-across-runs"
# Runs since this patch tell a credit's approvers at once (and remind them before the
# timeout) on the gate's channel, and count N-of-M approvals.
APPROVAL_NOTICES_PATCH = "recovery-approval-notices"
# Runs since this patch put a stall's due time in business hours (the calendar's
# business_days_after); before, Friday 20:00 + 1 business day was Monday 20:00.
STALLS_IN_HOURS_PATCH = "recovery-stalls-in-hours"
# Runs since this patch tie an episode's follow-up to its contact (a survey about another
# ticket does not answer it), hand a not-recovered episode to a person (a ticket in the
# follow-up's not_recovered_queue; the episode stays open until they close it), and send no
# follow-up for episodes whose rules only asked a person to look (`follow_up: false`).
EPISODE_CONTACT_PATCH = "recovery-episode-contact"
# A burst of events (a customer's thousands in a minute) was decided in one workflow task:
# at ~2 ms a rule's condition, past the SDK's 2 s deadlock detection, and the failed task
# failed again on every retry, wedging the customer. Runs since this patch decide about
# CONDITIONS_PER_TASK conditions' worth of events per workflow task (one condition per rule
# and event), ending the task with a 1 ms timer.
EVENTS_IN_CHUNKS_PATCH = "recovery-events-in-chunks"
CONDITIONS_PER_TASK = 100
# A continuous stream of events never left the queue empty, and a run continued as new only
# with an empty queue: past the server's 10,000 signals per run the next one was refused.
# Runs since this patch also continue as new between chunks, carrying the events not yet
# decided, and after SIGNALS_PER_RUN signals.
CONTINUE_MID_STREAM_PATCH = "recovery-continue-mid-stream"
SIGNALS_PER_RUN = 5_000
# The 1 ms timer between two chunks took the server about a second to fire, so a customer's
# events were decided at about 16 a second. Runs since this patch end a chunk with a local
# activity that does nothing (`recovery.next_chunk`: the next activation comes from the
# worker itself, in the same workflow task) and size a chunk by the conditions it evaluated
# (an event whose type no rule takes costs almost nothing), at most EVENTS_PER_CHUNK events.
CHUNKS_IN_ONE_TASK_PATCH = "recovery-chunks-in-one-task"
EVENTS_PER_CHUNK = 100
PENDING_BYTES = 1_000_000
"""The most undecided events (as JSON) a run carries into the next; senders keep the backlog
far below it (activities/recovery_pacing.py)."""
# A run kept only by windows, dedup keys, cooldowns, caps or silences waited without a timer
# and so never ended when they expired, only at the customer's next event. Runs since this
# patch wake when the last of them expires (`quiet_at`), one timer kept across events.
QUIET_END_PATCH = "recovery-end-when-quiet"
# A new run recalled the last run's state, and only then read the CRM profile for its first
# decision: two activities one after the other. Runs since this read both at once.
RECALL_WITH_PROFILE_PATCH = "recovery-recall-with-profile"


@workflow.defn(name="Recovery")
class RecoveryWorkflow:
    @workflow.init
    def __init__(self, request: RecoveryInput) -> None:
        customer_id = workflow.info().workflow_id.removeprefix("customer-")
        state = request.carried or RecoveryState(customer_id=customer_id)
        legacy = request.legacy_event_names or not has_change(CONTRACT_NAMES_PATCH)
        self.engine = RecoveryEngine(
            state,
            request.rules,
            legacy_names=legacy,
            stalls_in_hours=has_change(STALLS_IN_HOURS_PATCH),
        )
        self._queue: list[tuple[EventEnvelope, RecoveryRules | RulesDigest | None]] = []
        self._signals = 0
        self._acting = 0
        self._changed = False
        self._upsert_on_change = False
        self._upserted: tuple[str, str] | None = None
        self._recalled = True  # False while a new run loads what the last one left
        self._dirty = False  # changed since the run started (or last recorded its state)
        self._memories = 0
        self._quiet_wake: asyncio.Task[None] | None = None
        self._quiet_wake_at: datetime | None = None

    @property
    def state(self) -> RecoveryState:
        return self.engine.state

    # --- plumbing ------------------------------------------------------------------------

    def _upsert(self) -> None:
        shown = (
            self.engine.ops_state(workflow.now(), bool(self._acting)),
            self.engine.definitions_shown(),
        )
        # Each upsert is a command and a history event: runs since the patch skip unchanged ones
        if self._upsert_on_change and shown == self._upserted:
            return
        self._upserted = shown
        workflow.upsert_search_attributes(
            [
                sa.OPS_KIND.value_set("recovery"),
                sa.OPS_CUSTOMER_ID.value_set(self.state.customer_id),
                sa.OPS_STATE.value_set(shown[0]),
                sa.OPS_DEFINITION.value_set(shown[1]),
            ]
        )

    def _target(self, plan: Plan | None = None) -> ActionTarget:
        """Whom actions and ledger entries are about (a plan's rule set, ticket and context)."""
        if plan is None:
            return ActionTarget(kind="recovery", customer_id=self.state.customer_id)
        customer = self.state.customer or {}
        manager = customer.get("account_manager")
        return ActionTarget(
            kind="recovery",
            customer_id=self.state.customer_id,
            ticket_id=plan.ticket_id,
            account_manager=manager if isinstance(manager, str) else None,
            definition=plan.ref,
            template_context=plan.context,
        )

    def _count_plan(self, plan: Plan) -> None:
        """Metrics: a suppressed trigger by its reason; the actions of a rule that fired (or
        of an approved credit) by type. Shadow decisions and follow-ups are not counted."""
        decision = plan.decision
        if decision is not None and decision.outcome == "suppressed":
            reason = decision.suppressed_by or "unknown"
            metrics.recovery_trigger_suppressed(rule=decision.rule, reason=reason)
            return
        fired = decision is not None and decision.outcome in ("fired", "laddered")
        if not (fired or plan.kind == "credit"):
            return
        rule = decision.rule if decision is not None else str(plan.detail.get("rule", ""))
        for action in plan.actions:
            metrics.recovery_action_fired(rule=rule, action=action.type)

    async def _execute(self, plans: list[Plan]) -> None:
        if not plans:
            return
        self._dirty = True
        self._acting += 1
        self._upsert()
        try:
            for plan in plans:
                target = self._target(plan)
                if plan.handover is not None:
                    await self._hand_over(plan, target)
                    continue
                await ledger(target, plan.step, plan.detail, subject=self.state.customer_id)
                self._count_plan(plan)
                if plan.notice and plan.approval is not None:
                    await self._tell_approvers(plan.approval, plan.notice, plan.step, target)
                if plan.actions:
                    outcome = await run_actions(plan.actions, target, plan.step)
                    if outcome.failed or outcome.skipped:
                        await ledger(
                            target,
                            f"{plan.step}-problems",
                            {"failed": outcome.failed, "skipped": outcome.skipped},
                            subject=self.state.customer_id,
                        )
        finally:
            self._acting -= 1
            self._upsert()

    async def _recall(self, *, with_profile: bool) -> None:
        """Continue from the state the customer's last run recorded when it ended; with
        `with_profile`, read the CRM profile meanwhile (the run's first decision needs both,
        and the recalled state holds no profile)."""
        self._recalled = False
        now = workflow.now()
        # Started first, it is scheduled second: after the recall this coroutine asks for.
        profile_read = asyncio.create_task(self._read_profile()) if with_profile else None
        try:
            memory: RecoveryMemory = await call(
                "recovery.previous_state",
                PreviousState(customer_id=self.state.customer_id),
                RecoveryMemory,
            )
        except ActivityError as exc:
            workflow.logger.warning("starting without the last run's state: %s", exc.cause)
            memory = RecoveryMemory()
        finally:
            self._recalled = True
        if memory.state is not None:
            self.engine.recall(memory.state)
        if profile_read is not None:
            self.engine.set_profile(await profile_read, now)

    async def _record_memory(self) -> None:
        """Leave this run's state for the customer's next run (CRM profile excluded)."""
        self._dirty = False
        self._memories += 1
        record = self.engine.memory(workflow.info().run_id, self._memories)
        try:
            await ledger(self._target(), record.step, record.detail, subject=self.state.customer_id)
        except ActivityError as exc:
            workflow.logger.warning("the next run will not know this one: %s", exc.cause)

    async def _tell_approvers(
        self,
        approval: PendingApproval,
        notice: Literal["request", "reminder"],
        step: str,
        target: ActionTarget,
    ) -> None:
        """What is asked, how much, for whom, until when, and the exact command to answer."""
        messages = self.engine.approver_messages(
            approval, notice, step, target.template_context, workflow.info().workflow_id
        )
        for n, message in enumerate(messages):
            try:
                await call("notify.send", message, MessageSent, give_up_after=timedelta(hours=1))
            except ActivityError as exc:
                # The approval still waits (and times out as defined); the failure is recorded.
                await ledger(
                    target,
                    f"{step}-notice-{n}-failed",
                    {"recipient": message.recipient, "error": str(exc.cause or exc)[:500]},
                    subject=self.state.customer_id,
                )

    async def _hand_over(self, plan: Plan, target: ActionTarget) -> None:
        """Open the person's ticket, then record the hand-over (with the ticket, or why there
        is none: the episode stays handed over and visible either way)."""
        handover = plan.handover
        assert handover is not None
        detail = dict(plan.detail)
        request = self.engine.handover_ticket(handover, plan.step, workflow.info().workflow_id)
        try:
            ticket: Ticket = await call(
                "ticketing.create_ticket", request, Ticket, give_up_after=timedelta(hours=1)
            )
        except ActivityError as exc:
            detail["ticket_error"] = str(exc.cause or exc)[:500]
        else:
            detail["ticket"] = ticket.id
            self.engine.note_handover_ticket(handover.episode, ticket.id)
        await ledger(target, plan.step, detail, subject=self.state.customer_id)

    async def _refresh_profile(self) -> None:
        now = workflow.now()
        if self.engine.profile_fresh(now):
            return
        self.engine.set_profile(await self._read_profile(), now)

    async def _read_profile(self) -> CustomerProfile | None:
        """The customer's CRM profile; None when the CRM does not answer."""
        try:
            profile: CustomerProfile = await call(
                "crm.get_customer",
                GetCustomer(customer_id=self.state.customer_id),
                CustomerProfile,
            )
        except ActivityError as exc:
            workflow.logger.warning("no CRM profile for the customer: %s", exc.cause)
            return None
        return profile

    # --- run -----------------------------------------------------------------------------

    @workflow.run
    async def run(self, request: RecoveryInput) -> RecoverySummary:
        self._upsert_on_change = has_change(UPSERT_ON_CHANGE_PATCH)
        self._upsert()
        # Runs started before this patch cleared the wake flag just before waiting, losing a
        # wake from an update that finished while the pass was still acting.
        wake_at_start = has_change(WAKE_FLAG_PATCH)
        remember = has_change(RUN_MEMORY_PATCH)
        self.engine.approver_notices = has_change(APPROVAL_NOTICES_PATCH)
        self.engine.episode_contacts = has_change(EPISODE_CONTACT_PATCH)
        if remember and request.carried is None:
            await self._recall(with_profile=has_change(RECALL_WITH_PROFILE_PATCH))
        in_chunks = has_change(EVENTS_IN_CHUNKS_PATCH)
        mid_stream = in_chunks and has_change(CONTINUE_MID_STREAM_PATCH)
        by_cost = mid_stream and has_change(CHUNKS_IN_ONE_TASK_PATCH)
        # The events the previous run had not decided come first.
        self._queue[:0] = [(event, None) for event in request.pending_events]
        while True:
            if wake_at_start:
                self._changed = False
            decided = 0
            chunk_start = self.engine.conditions_evaluated
            while self._queue:
                if in_chunks and self._chunk_done(decided, chunk_start, by_cost):
                    if by_cost:
                        await workflow.execute_local_activity(
                            NEXT_CHUNK_ACTIVITY, start_to_close_timeout=timedelta(seconds=10)
                        )
                    else:
                        await workflow.sleep(timedelta(milliseconds=1))  # the next task goes on
                    decided = 0
                    chunk_start = self.engine.conditions_evaluated
                    carriable = not by_cost or self._queue_carriable()
                    if mid_stream and self._run_is_full(request) and carriable:
                        await workflow.wait_condition(workflow.all_handlers_finished)
                        pending = [event for event, _ in self._queue]
                        workflow.continue_as_new(
                            self.engine.continued(request.max_history_events).model_copy(
                                update={"pending_events": pending}
                            )
                        )
                event, offered = self._queue.pop(0)
                # A duplicate changes nothing, not even the rules (since the patch)
                if remember and event.key in self.state.seen:
                    continue
                await self._switch_rules(offered)
                if event.key in self.state.seen:
                    continue
                self._dirty = True
                await self._refresh_profile()
                await self._execute(self.engine.on_event(event, workflow.now()))
                decided += 1
            await self._execute(self.engine.on_time(workflow.now()))
            if self._queue:
                continue
            if self.engine.idle(workflow.now()):
                await workflow.wait_condition(workflow.all_handlers_finished)
                if not self._queue and self.engine.idle(workflow.now()):
                    if not (remember and self._dirty):
                        break
                    await self._record_memory()
                    if not self._queue and self.engine.idle(workflow.now()):
                        await workflow.wait_condition(workflow.all_handlers_finished)
                        if not self._queue and not self._dirty:
                            break
                continue
            info = workflow.info()
            if info.is_continue_as_new_suggested() or (
                info.get_current_history_length() > request.max_history_events
            ):
                await workflow.wait_condition(workflow.all_handlers_finished)
                if not self._queue:
                    workflow.continue_as_new(self.engine.continued(request.max_history_events))
            self._upsert()
            wake = self.engine.next_wake()
            timeout = None
            if wake is not None:
                timeout = max(wake - workflow.now(), timedelta(seconds=1))
            if not wake_at_start:
                self._changed = False
            self._arm_quiet_wake()
            workflow.set_current_details(self._details())
            with contextlib.suppress(asyncio.TimeoutError):
                await workflow.wait_condition(
                    lambda: bool(self._queue) or self._changed or self._quiet_due(),
                    timeout=timeout,
                )
        workflow.set_current_details("nothing pending: finished")
        return self.engine.summary()

    def _details(self) -> str:
        """The UI's one line; a run that only its windows, dedup keys, cooldowns, caps or
        silences keep says when it ends (the quiet timer's moment)."""
        line = self.engine.details(workflow.now())
        s = self.state
        only_quiet = not (s.stalls or s.open_episode() or s.waiting_approvals())
        ends = self.engine.quiet_at()
        if self._quiet_wake is not None and ends is not None and only_quiet:
            line += f"; ends {self.engine.local_time(ends)} unless another event comes"
        return line

    def _arm_quiet_wake(self) -> None:
        """A timer at the moment all that keeps the run has expired: then the loop prunes
        it and ends. Kept across events rather than restarted on each; one that fires before
        a later expiry is followed by the next, one due later than a new, earlier moment is
        replaced."""
        if self._quiet_wake is not None and self._quiet_wake.done():
            self._quiet_wake = self._quiet_wake_at = None
        at = self.engine.quiet_at()
        if at is None or (self._quiet_wake_at is not None and self._quiet_wake_at <= at):
            return
        if not has_change(QUIET_END_PATCH):
            return
        if self._quiet_wake is not None:
            self._quiet_wake.cancel()
        self._quiet_wake_at = at
        self._quiet_wake = asyncio.create_task(
            workflow.sleep(
                max(at - workflow.now(), timedelta(seconds=1)),
                summary="windows, cooldowns and silences expire: the run ends if idle",
            )
        )

    def _quiet_due(self) -> bool:
        return self._quiet_wake is not None and self._quiet_wake.done()

    def _run_is_full(self, request: RecoveryInput) -> bool:
        info = workflow.info()
        return (
            info.is_continue_as_new_suggested()
            or info.get_current_history_length() > request.max_history_events
            or self._signals >= SIGNALS_PER_RUN
        )

    def _queue_carriable(self) -> bool:
        """Whether the undecided events fit in the next run's input (Temporal refuses a
        payload over 2 MB); until they do, the run decides on and sheds them."""
        size = 0
        for event, _ in self._queue:
            size += len(event.model_dump_json())
            if size > PENDING_BYTES:
                return False
        return True

    def _chunk_done(self, decided: int, chunk_start: int, by_cost: bool) -> bool:
        if by_cost:
            evaluated = self.engine.conditions_evaluated - chunk_start
            return evaluated >= CONDITIONS_PER_TASK or decided >= EVENTS_PER_CHUNK
        return decided >= max(10, CONDITIONS_PER_TASK // max(1, len(self.engine.rules)))

    async def _switch_rules(self, offered: RecoveryRules | RulesDigest | None) -> None:
        """Use the rule sets deployed now when they differ from this run's, from the next
        event on; each switch is in the ledger."""
        if offered is None:
            return
        in_use = self.engine.digest()
        if isinstance(offered, RulesDigest):
            if offered.digest == in_use:
                return
            try:
                loaded: RecoveryRules = await call("recovery.rule_sets", offered, RecoveryRules)
            except ActivityError as exc:
                workflow.logger.warning("keeping the current rules: %s", exc.cause)
                return
        else:
            loaded = offered
        record = self.engine.switch_rules(loaded.rules, in_use)
        if record is not None:
            await ledger(self._target(), record.step, record.detail, subject=self.state.customer_id)

    # --- messages ------------------------------------------------------------------------

    @workflow.signal
    def event(self, event: EventEnvelope, rules: Any = None) -> None:
        """An event about this customer (re-deliveries are ignored by `event.key`).

        `rules` is optional: the SDK converts arguments by type only when as many are sent as
        the handler declares, so both forms are validated here (`offered_rules`)."""
        self._signals += 1
        self._queue.append((EventEnvelope.model_validate(event), offered_rules(rules)))

    @workflow.signal
    def update_rules(self, rules: RecoveryRules) -> None:
        """The rule sets deployed now; they apply from the next event on."""
        if self.engine.switch_rules(rules.rules) is not None:
            self._changed = True

    @workflow.query(name=BACKLOG_QUERY)
    def backlog(self) -> int:
        """Events received and not decided yet (senders pace themselves by it)."""
        return len(self._queue)

    @workflow.query
    def view(self) -> RecoveryStatus:
        return self.engine.status(workflow.now(), bool(self._acting))

    def _wake(self) -> None:
        self._changed = True

    @staticmethod
    def _refuse(refusal: str | None) -> None:
        """An update validator's answer: the core's reason refuses the command."""
        if refusal:
            raise ValueError(refusal)

    @workflow.update
    async def approve(self, command: Approve) -> RecoveryStatus:
        await self._execute(self.engine.approve(command, workflow.now()))
        self._wake()
        return self.view()

    @approve.validator
    def _validate_approve(self, command: Approve) -> None:
        self._refuse(self.engine.approve_refusal(command))

    @workflow.update
    async def reject(self, command: Reject) -> RecoveryStatus:
        await self._execute(self.engine.reject(command, workflow.now()))
        self._wake()
        return self.view()

    @reject.validator
    def _validate_reject(self, command: Reject) -> None:
        self._refuse(self.engine.reject_refusal(command))

    @workflow.update
    async def silence(self, command: SilenceCommand) -> RecoveryStatus:
        silence = self.engine.silence_of(command, workflow.now())
        await workflow.wait_condition(lambda: self._recalled)
        self._dirty = True
        record = self.engine.add_silence(silence)
        await ledger(self._target(), record.step, record.detail, subject=self.state.customer_id)
        self._upsert()
        self._wake()
        return self.view()

    @silence.validator
    def _validate_silence(self, command: SilenceCommand) -> None:
        self._refuse(self.engine.silence_refusal(command, workflow.now()))

    @workflow.update
    async def unsilence(self, command: Unsilence) -> RecoveryStatus:
        self._dirty = True
        record = self.engine.lift_silence(command)
        await ledger(self._target(), record.step, record.detail, subject=self.state.customer_id)
        self._upsert()
        self._wake()
        return self.view()

    @unsilence.validator
    def _validate_unsilence(self, command: Unsilence) -> None:
        self._refuse(self.engine.unsilence_refusal(command, workflow.now()))

    @workflow.update
    async def close_episode(self, command: CloseEpisode) -> RecoveryStatus:
        plans = self.engine.close_episode(workflow.now(), command.outcome, command.by)
        await self._execute(plans)
        self._wake()
        return self.view()

    @close_episode.validator
    def _validate_close_episode(self, command: CloseEpisode) -> None:
        self._refuse(self.engine.close_refusal())
