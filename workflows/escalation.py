"""The escalation workflow: one per case, SLA clocks on a business calendar, escalation levels
until someone acknowledges, breaches recorded and announced once.

Workflow id `case-<ticket id>`. Updates (acknowledge, agent_reply, requester_reply, pause, resume,
ticket_status, set_priority, set_stage, reassign, resolve, migrate) are validated first: a
refused update changes nothing. The `state` query returns everything; the Temporal UI shows
the search attributes and a one-line status.

The decisions are the core's (workflows/escalation_core.py and its topics: escalation_clocks,
escalation_commands, escalation_status): this module holds the state, receives the messages,
asks the core what they do and what is due, and carries it out (ledger entries, actions,
timers, upserts; the effects that need no workflow instance are in escalation_effects.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta

from temporalio import workflow
from temporalio.exceptions import ApplicationError

from workflows import metrics
from workflows.actions import (
    ActionOutcome,
    ActionTarget,
    LevelNotice,
    ledger,
    ledger_batch,
    run_actions,
    run_actions_independently,
)
from workflows.releases import has_change

with workflow.unsafe.imports_passed_through():
    from activities.escalation_contracts import Acknowledge, Resolve
    from definitions.calendar import BusinessCalendar
    from definitions.common import Action
    from definitions.events import EventEnvelope
    from workflows import escalation_commands as commands
    from workflows.escalation_clocks import SlaClock
    from workflows.escalation_commands import Applied
    from workflows.escalation_core import (
        AlertAction,
        BreachDue,
        EscalationCore,
        LevelDue,
        WarningDue,
        opened_state,
        opening_refusal,
        who,
    )
    from workflows.escalation_effects import (
        ACTION_FAILURES_PATCH,
        DUE_AT_PATCH,
        cancel_case_actions,
        deliver_breach_to_recovery,
        follow_pager_alerts,
        read_customer_profile,
        record_failed_actions,
        upsert_case_attributes,
    )
    from workflows.escalation_model import (
        AgentReply,
        CaseInfo,
        CaseSummary,
        EscalationState,
        EscalationStatus,
        Pause,
        Reassign,
        RequesterReply,
        Resume,
        SetPriority,
        SetStage,
        TicketStatus,
        case_workflow_id,
    )
    from workflows.escalation_pinned import EscalationInput, Migrate
    from workflows.escalation_status import (
        breach_envelope,
        case_details,
        escalated_envelope,
        status_view,
        summary,
        template_context,
    )


ACTION_FAILED = "ActionFailed"
# Actions run beside the clock (a retrying vendor delays its own effect, not the next level
# or the breach), each recipient on its own, with the definition's retry limits; resolve
# cancels what still retries, and pages are acknowledged and resolved with the case. Runs
# recorded before this awaited each action in turn.
CONCURRENT_ACTIONS_PATCH = "escalation-concurrent-actions"
# A case opened since this is measured by every SLA metric its policy gives (next reply,
# periodic and pausable update, requester wait, agent work); runs opened before keep their
# two clocks, first response and resolution, and the commands they issued.
SLA_METRICS_PATCH = "escalation-sla-metrics"
# A case taking commands as fast as its ledger writes them wrote one entry at a time and never
# got back to its clocks or to continuing as new (each update's answer, the whole state with
# the growing backlog, filled the history to its size limit). The backlog is written in one
# call now, and a run continues as new after `max_updates` updates, well before the
# server's 2,000.
LEDGER_BATCH_PATCH = "escalation-ledger-in-batches"
# The loop waited for the next deadline with a timer of its own on every pass, so each action
# finishing (or command) cancelled it and started another for the same moment: two more
# history events and a billable timer each time. Runs since this patch keep one timer per
# deadline across passes, set for the deadline itself: the old loop never waited less than a
# second, so a level due 0.3 s after a pass fired 0.7 s late.
DEADLINE_TIMER_PATCH = "escalation-one-timer-per-deadline"
SHORTEST_WAIT = timedelta(milliseconds=50)
"""A deadline already passed (the pass took longer) is waited for this long: the next pass
fires it, and a clock that rounds a moment just short of due cannot spin in one task."""


def _refuse(refusal: str | None) -> None:
    """A validator's answer: the core's refusal, if any, refuses the update."""
    if refusal is not None:
        raise ValueError(refusal)


@workflow.defn(name="Escalation")
class EscalationWorkflow:
    @workflow.init
    def __init__(self, request: EscalationInput) -> None:
        # State exists before any handler runs: an update may arrive with the first task.
        # The core follows the pinned policy; `migrate` swaps it, and continue-as-new hands
        # the new run the one it follows, not the one the case opened with.
        state = request.carried or self._new_status(request)
        self._core = EscalationCore(state, request.policy)
        self._changed = False
        # Actions running beside the main loop, by ledger step (levels, warnings, breaches,
        # pager follow-ups); None until the run knows whether it is patched.
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._concurrent: bool | None = None
        self._batched = False
        self._updates_this_run = 0
        self._follow_ups = 0
        self._upserted: dict[str, object] = {}  # search attributes as last upserted
        self._one_timer = False
        self._deadline_timer: asyncio.Task[None] | None = None
        self._deadline_at: datetime | None = None

    # --- plumbing ------------------------------------------------------------------------

    @property
    def status(self) -> EscalationState:
        return self._core.state

    def _metric_labels(self) -> dict[str, str]:
        s = self.status
        return {"policy": metrics.definition_name(s.definition), "priority": s.case.priority}

    def _target(self, sla: SlaClock | None = None, percent: int | None = None) -> ActionTarget:
        s = self.status
        return ActionTarget(
            kind="escalation",
            customer_id=s.case.customer_id,
            ticket_id=s.case.ticket_id,
            assignee=s.assignee,
            account_manager=s.customer.account_manager if s.customer else None,
            definition=s.definition,
            template_context=self._template_context(sla, percent),
        )

    def _template_context(self, sla: SlaClock | None, percent: int | None) -> dict[str, object]:
        return template_context(self._core, workflow.now(), sla, percent)

    def _wake(self) -> None:
        self._changed = True

    def _upsert_search_attributes(self) -> None:
        upsert_case_attributes(self._core, self._upserted)

    # --- what falls due --------------------------------------------------------------------

    async def _fire_due(self) -> None:
        for step in self._core.due(workflow.now()):
            if isinstance(step, WarningDue):
                await self._warn(step)
            elif isinstance(step, BreachDue):
                await self._breach(step)
            else:
                await self._fire_level(step)

    async def _warn(self, warning: WarningDue) -> None:
        step = warning.step
        target = self._target(self.status.clocks[warning.clock], warning.percent)
        labels = self._metric_labels()
        metrics.sla_warned(**labels, clock=warning.clock, percent=warning.percent)
        await ledger(target, step, warning.detail, at=warning.at)
        on_warning = self._core.on_warning
        if on_warning and self._concurrent:
            self._spawn(step, on_warning, target)
        elif on_warning:
            outcome = await run_actions(
                on_warning, target, step, priority=self.status.case.priority
            )
            await record_failed_actions(self._core, step, outcome, self._target)

    async def _breach(self, breach: BreachDue) -> None:
        s = self.status
        step, event = breach.step, breach.event
        target = self._target(s.clocks[breach.clock])
        metrics.sla_breached(**self._metric_labels(), clock=breach.clock)
        await ledger(target, step, breach.detail, at=event.breached_at)
        if self._concurrent:
            deliver = has_change("deliver-sla-breach")
            self._spawn(
                step,
                self._core.on_breach,
                target,
                before=(lambda: deliver_breach_to_recovery(event, breach.cycle))
                if deliver
                else None,
                start_event=breach_envelope(workflow.info().workflow_id, event, breach.cycle),
            )
            self._core.breach_announced(breach.clock)
            return
        if has_change("deliver-sla-breach"):
            await deliver_breach_to_recovery(event, breach.cycle)
        on_breach = self._core.on_breach
        if on_breach:
            await self._apply(
                await run_actions(on_breach, target, step, priority=s.case.priority),
                step,
            )
        self._core.breach_announced(breach.clock)

    async def _fire_level(self, fired: LevelDue) -> None:
        step = fired.step
        metrics.escalation_level_fired(**self._metric_labels(), level=fired.level)
        await ledger(self._target(), step, fired.detail, at=fired.at)
        priority = self.status.case.priority
        if self._concurrent:
            # Round-robin turns are counted per policy (any version) and level of a priority.
            level = f"{priority}/{fired.level}"
            notice = LevelNotice(fired.at, self._core.policy.name, level, fired.round_robin)
            self._spawn(step, fired.actions, self._target(), level=notice)
            self._upsert_search_attributes()
            return
        await self._apply(
            await run_actions(fired.actions, self._target(), step, priority=priority), step
        )
        self._upsert_search_attributes()

    async def _apply(self, outcome: ActionOutcome, step: str) -> None:
        """Take in what the actions did; one that failed changed nothing and is recorded."""
        if self._concurrent and outcome.skipped:  # not done either: recorded, never silent
            outcome.failed.extend(f"skipped: {why}" for why in outcome.skipped)
            outcome.skipped.clear()
        await record_failed_actions(self._core, step, outcome, self._target)
        self._core.take_outcome(
            workflow.now(),
            assignee=outcome.new_assignee,
            queue=outcome.new_queue,
            priority=outcome.new_priority,
        )

    # --- actions beside the clock ---------------------------------------------------------

    def _alert_key(self, recipient: str) -> str:
        """One alert per case and recipient: every page to them folds into it."""
        return f"{workflow.info().workflow_id}/pager/{recipient}"[:255]

    def _on_page(self, recipient: str, dedup_key: str, landed: bool | None) -> None:
        if self._core.page_heard(recipient, dedup_key, landed):
            self._follow_alerts_later("acknowledge")  # the page landed after the ack

    def _spawn(
        self,
        step: str,
        actions: list[Action],
        target: ActionTarget,
        *,
        before: Callable[[], Awaitable[None]] | None = None,
        start_event: EventEnvelope | None = None,
        level: LevelNotice | None = None,
    ) -> None:
        """Run `actions` for `step` beside the main loop; what they change is applied when
        they finish, what fails is recorded, and the loop is woken either way. A `start`
        action hands the started workflow `start_event` (default: a case.escalated event);
        `level`: the escalation level the actions are of."""
        now, workflow_id = workflow.now(), workflow.info().workflow_id
        start_event = start_event or escalated_envelope(self.status, workflow_id, step, now)
        target = dataclasses.replace(target, start_event=start_event)
        priority = self.status.case.priority
        self._core.started(step, actions, now)

        async def run() -> None:
            try:
                if before is not None:
                    await before()
                if actions:
                    outcome = await run_actions_independently(
                        actions,
                        target,
                        step,
                        priority=priority,
                        give_up_after=self._core.give_up_after(),
                        alert_key=self._alert_key,
                        on_page=self._on_page,
                        level=level,
                    )
                    await self._apply(outcome, step)
                    self._upsert_search_attributes()
            finally:
                self._core.finished(step)
                self._tasks.pop(step, None)
                self._wake()

        self._tasks[step] = asyncio.create_task(run())

    def _follow_alerts_later(self, action: AlertAction) -> None:
        self._follow_ups += 1
        step = f"pager-{action}-{self._follow_ups}"

        async def run() -> None:
            try:
                await follow_pager_alerts(self._core, action, self._target)
            finally:
                self._tasks.pop(step, None)
                self._wake()

        self._tasks[step] = asyncio.create_task(run())

    # --- run -----------------------------------------------------------------------------

    @workflow.run
    async def run(self, request: EscalationInput) -> CaseSummary:
        s = self.status
        self._concurrent = has_change(CONCURRENT_ACTIONS_PATCH)
        self._batched = has_change(LEDGER_BATCH_PATCH)
        self._one_timer = has_change(DEADLINE_TIMER_PATCH)
        self._upsert_search_attributes()
        if request.carried is None:
            if has_change(SLA_METRICS_PATCH):
                self._core.measure_metrics(min(s.case.opened_at, workflow.now()))
            s.customer = await read_customer_profile(s.case.customer_id)
            await ledger(
                self._target(),
                "opened",
                {
                    "customer": s.case.customer_id,  # a backtest opens the case again
                    "priority": s.case.priority,
                    "stage": s.case.stage,
                    "policy": s.definition,
                    **who(request.by),
                },
            )
        while not self._core.resolved:
            # Cleared before the awaits below, so a command that lands while an activity
            # runs still wakes the wait at the end of this pass.
            self._changed = False
            await self._write_unrecorded()
            await self._fire_due()
            if self._core.resolved:  # resolved while an action ran
                break
            next_at = self._core.next_deadline()
            workflow.set_current_details(case_details(self._core))
            if has_change(DUE_AT_PATCH):
                self._upsert_search_attributes()  # the next breach moves as clocks change
            if (
                workflow.info().is_continue_as_new_suggested()
                or workflow.info().get_current_history_length() > request.max_history_events
                or (self._batched and self._updates_this_run >= request.max_updates)
            ) and not self._tasks:  # what still runs finishes in this run
                await workflow.wait_condition(workflow.all_handlers_finished)
                # The policy this run follows now: a migrated case carries its new one.
                carried = {"case": s.case, "carried": s, "policy": self._core.policy}
                workflow.continue_as_new(request.model_copy(update=carried))
            if self._one_timer:
                self._wait_for_deadline(next_at)
                await workflow.wait_condition(lambda: self._changed or self._deadline_reached())
            else:
                timeout = None
                if next_at is not None:
                    timeout = max(next_at - workflow.now(), timedelta(seconds=1))
                with contextlib.suppress(asyncio.TimeoutError):
                    await workflow.wait_condition(lambda: self._changed, timeout=timeout)
        if self._concurrent:
            await cancel_case_actions(self._core, list(self._tasks.values()), self._target)
            await follow_pager_alerts(self._core, "resolve", self._target)
        await workflow.wait_condition(workflow.all_handlers_finished)
        await self._write_unrecorded()
        workflow.set_current_details(case_details(self._core))
        return summary(self._core)

    def _wait_for_deadline(self, next_at: datetime | None) -> None:
        """One timer for the next deadline, kept while it stays the next one."""
        timer = self._deadline_timer
        if timer is not None and not timer.done() and self._deadline_at == next_at:
            return
        if timer is not None and not timer.done():
            timer.cancel()
        self._deadline_timer, self._deadline_at = None, next_at
        if next_at is not None:
            wait = max(next_at - workflow.now(), SHORTEST_WAIT)
            self._deadline_timer = asyncio.create_task(workflow.sleep(wait))

    def _deadline_reached(self) -> bool:
        return self._deadline_timer is not None and self._deadline_timer.done()

    @staticmethod
    def _new_status(request: EscalationInput) -> EscalationState:
        refusal = opening_refusal(request.case, request.policy)
        if refusal is not None:
            raise ApplicationError(refusal, type="InvalidRequest", non_retryable=True)
        return opened_state(request.case, request.policy, workflow.now())

    # --- messages ------------------------------------------------------------------------

    @workflow.query
    def state(self) -> EscalationStatus:
        """The full state, each running clock with the moment it runs out."""
        return status_view(self._core)

    @workflow.query
    def calendar(self) -> BusinessCalendar:
        """The business calendar the case's clocks run on (at its priority), as pinned: what
        `opsflow case show` measures time left with, without reading the registry."""
        return self._core.calendar

    def _carry_out(self, applied: Applied | None) -> None:
        """After a command the core accepted: its metrics, the search attributes it changed,
        the main loop woken to write its ledger entry (the update answers at once)."""
        self._updates_this_run += 1
        if applied is None:
            return
        for clock in applied.met:
            metrics.sla_met(**self._metric_labels(), clock=clock)
        if applied.acknowledged_after is not None:
            seconds = applied.acknowledged_after.total_seconds()
            metrics.case_acknowledged(**self._metric_labels(), seconds=seconds)
        self._upsert_search_attributes()
        self._wake()
        if applied.follow_alerts and self._concurrent:
            self._follow_alerts_later(applied.follow_alerts)

    async def _write_unrecorded(self) -> None:
        if self._batched:
            # What is noted now, in one call: commands landing meanwhile wait for the next
            # pass, so the loop gets back to the clocks and to continuing as new.
            noted = list(self.status.unrecorded)
            if noted:
                await ledger_batch(self._target(), noted)
                del self.status.unrecorded[: len(noted)]
            return
        while self.status.unrecorded:
            entry = self.status.unrecorded[0]
            await ledger(self._target(), entry.step, entry.detail, at=entry.at, key=entry.key)
            self.status.unrecorded.pop(0)

    @workflow.update
    async def acknowledge(self, command: Acknowledge) -> EscalationStatus:
        self._carry_out(commands.acknowledge(self._core, command, workflow.now()))
        return self.status

    @acknowledge.validator
    def _validate_acknowledge(self, command: Acknowledge) -> None:
        _refuse(commands.refuse_acknowledge(self.status, command))

    @workflow.update
    async def agent_reply(self, command: AgentReply) -> EscalationStatus:
        """An agent wrote on the ticket: a public reply is the first response when there is
        none, answers the requester (next reply) and is an update (periodic, pausable)."""
        self._carry_out(commands.agent_reply(self._core, command, workflow.now()))
        return self.status

    @agent_reply.validator
    def _validate_agent_reply(self, command: AgentReply) -> None:
        _refuse(commands.refuse_agent_reply(self.status, command))

    @workflow.update
    async def requester_reply(self, command: RequesterReply) -> EscalationStatus:
        """The requester wrote on the ticket: a next-reply target starts if none waits."""
        self._carry_out(commands.requester_reply(self._core, command, workflow.now()))
        return self.status

    @requester_reply.validator
    def _validate_requester_reply(self, command: RequesterReply) -> None:
        _refuse(commands.refuse_requester_reply(self.status, command))

    @workflow.update
    async def pause(self, command: Pause) -> EscalationStatus:
        self._carry_out(commands.pause(self._core, command, workflow.now()))
        return self.status

    @pause.validator
    def _validate_pause(self, command: Pause) -> None:
        _refuse(commands.refuse_pause(self.status, command))

    @workflow.update
    async def resume(self, command: Resume | None = None) -> EscalationStatus:
        self._carry_out(commands.resume(self._core, command, workflow.now()))
        return self.status

    @resume.validator
    def _validate_resume(self, command: Resume | None = None) -> None:
        _refuse(commands.refuse_resume(self.status, command))

    @workflow.update
    async def ticket_status(self, command: TicketStatus) -> EscalationStatus:
        """The ticket's status, as the ticketing system says: the pinned policy's
        `pause_statuses` pause the clocks, any other status resumes a paused case. What
        changes nothing (paused and still waiting, running and still running) is not
        recorded."""
        self._carry_out(commands.ticket_status(self._core, command, workflow.now()))
        return self.status

    @ticket_status.validator
    def _validate_ticket_status(self, command: TicketStatus) -> None:
        _refuse(commands.refuse_ticket_status(self.status, command))

    @workflow.update
    async def set_priority(self, command: SetPriority) -> EscalationStatus:
        self._carry_out(commands.set_priority(self._core, command, workflow.now()))
        return self.status

    @set_priority.validator
    def _validate_set_priority(self, command: SetPriority) -> None:
        _refuse(commands.refuse_set_priority(self.status, self._core.spec, command))

    @workflow.update
    async def set_stage(self, command: SetStage) -> EscalationStatus:
        self._carry_out(commands.set_stage(self._core, command, workflow.now()))
        return self.status

    @set_stage.validator
    def _validate_set_stage(self, command: SetStage) -> None:
        _refuse(commands.refuse_set_stage(self.status, self._core.spec, command))

    @workflow.update
    async def reassign(self, command: Reassign) -> EscalationStatus:
        s = self.status
        self._updates_this_run += 1
        action = commands.reassign_action(command)
        step = commands.reassign_step(self._core)
        if self._concurrent:
            outcome = await run_actions_independently(
                [action], self._target(), step, give_up_after=self._core.give_up_after()
            )
        else:
            outcome = await run_actions([action], self._target(), step)
        if outcome.failed and has_change(ACTION_FAILURES_PATCH):
            # Not done: the queue and assignee stay, the ledger and the answer say why.
            answer = commands.reassign_failed(self._core, command, outcome.failed, workflow.now())
            await ledger(
                self._target(),
                "reassign",
                {**command.model_dump(), "failed": outcome.failed},
                key=step,
            )
            self._upsert_search_attributes()
            self._wake()
            raise ApplicationError(answer, type=ACTION_FAILED, non_retryable=True)
        await self._apply(outcome, step)
        await ledger(self._target(), "reassign", command.model_dump(), key=step)
        self._upsert_search_attributes()
        self._wake()
        return s

    @reassign.validator
    def _validate_reassign(self, command: Reassign) -> None:
        _refuse(commands.refuse_reassign(self.status, command))

    @workflow.update
    async def migrate(self, command: Migrate) -> EscalationStatus:
        """Follow `command.policy` from now on: the clocks take its targets for the case's
        priority and stage and keep the time spent (on the old calendar until now) and any
        pause; its calendar, levels, warnings and actions apply from here."""
        self._carry_out(commands.migrate(self._core, command, workflow.now()))
        return self.status

    @migrate.validator
    def _validate_migrate(self, command: Migrate) -> None:
        _refuse(commands.migration_refusal(self.status, command.policy))

    @workflow.update
    async def resolve(self, command: Resolve) -> EscalationStatus:
        self._carry_out(commands.resolve(self._core, command, workflow.now()))
        return self.status

    @resolve.validator
    def _validate_resolve(self, command: Resolve) -> None:
        _refuse(commands.refuse_resolve(self.status, command))


__all__ = [
    "Acknowledge",
    "AgentReply",
    "CaseInfo",
    "CaseSummary",
    "EscalationInput",
    "EscalationState",
    "EscalationStatus",
    "EscalationWorkflow",
    "Migrate",
    "Pause",
    "Reassign",
    "RequesterReply",
    "Resolve",
    "Resume",
    "SetPriority",
    "SetStage",
    "TicketStatus",
    "case_workflow_id",
]
