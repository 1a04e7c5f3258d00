"""The escalation workflow: one per case, SLA clocks on a business calendar, escalation levels
until someone acknowledges, breaches recorded and announced once.

Workflow id `case-<ticket id>`. Updates (acknowledge, pause, resume, set_priority, set_stage,
reassign, resolve, migrate) are validated first: a refused update changes nothing. The `state` query
returns everything; the Temporal UI shows the search attributes and a one-line status.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import Any, Literal

from pydantic import ValidationError
from temporalio import workflow
from temporalio.common import SearchAttributeUpdate
from temporalio.exceptions import ActivityError, ApplicationError

from activities import search_attributes as sa
from workflows import metrics
from workflows.actions import (
    ActionOutcome,
    ActionTarget,
    call,
    failure_reason,
    ledger,
    run_actions,
    run_actions_independently,
)

with workflow.unsafe.imports_passed_through():
    from activities.escalation_contracts import Acknowledge, Resolve
    from activities.models import CustomerProfile, GetCustomer, PagerEvent, PagerEventSent
    from definitions.calendar import BusinessCalendar
    from definitions.common import Action, AssignAction, NotifyAction
    from definitions.directory import JOURNEY_STAGES
    from definitions.events import CaseEscalated, EventEnvelope, SlaBreached
    from definitions.models import (
        ANY_STAGE,
        ActionRetry,
        EscalationLevel,
        EscalationSpec,
        PinnedDefinition,
    )
    from workflows.escalation_clocks import FIRST_RESPONSE, RESOLUTION, SlaClock, sla_budgets
    from workflows.escalation_commands import migration_refusal
    from workflows.escalation_model import (
        MAX_ACTION_FAILURES,
        MAX_HISTORY_EVENTS,
        ActionFailure,
        CaseInfo,
        CaseState,
        CaseStatus,
        CaseSummary,
        InFlightAction,
        LevelVisit,
        Migrate,
        OpenCase,
        PagerAlert,
        Pause,
        PendingLedgerEntry,
        Priority,
        Reassign,
        Resume,
        SetPriority,
        SetStage,
        SlaOutcome,
        TicketStatus,
        case_workflow_id,
    )


# Failed actions are recorded (state, ledger) and a failed reassign answers with the failure;
# runs recorded before this did neither.
ACTION_FAILURES_PATCH = "escalation-action-failures"
ACTION_FAILED = "ActionFailed"
# Actions run beside the clock (a retrying vendor delays its own effect, not the next level
# or the breach), each recipient on its own, with the definition's retry limits; resolve
# cancels what still retries, and pages are acknowledged and resolved with the case. Runs
# recorded before this awaited each action in turn.
CONCURRENT_ACTIONS_PATCH = "escalation-concurrent-actions"
# Search attributes carry the next breach (OpsDueAt) and OpsState=stuck while a failed action
# waits for a person, and are upserted only when they change. Runs recorded before this
# upserted them all at every change of state.
DUE_AT_PATCH = "escalation-due-at-stuck"
_UNSET = object()
AlertAction = Literal["acknowledge", "resolve"]
# The stages a case may be at besides the ones a policy names: the default `support` and the
# customer journey's stages.
CASE_STAGES = ("support", *JOURNEY_STAGES)


def _who(by: str | None) -> dict[str, str]:
    """`{"by": ...}` for a command's ledger entry; nothing from a client that did not say."""
    return {"by": by} if by else {}


def _pair(name: str, value: object) -> SearchAttributeUpdate[Any]:
    """The update for search attribute `name` (from the registry) to `value`."""
    key = next(k for k in sa.ALL if k.name == name)
    return key.value_set(value)


def _format_at(moment: datetime, calendar: BusinessCalendar) -> str:
    return calendar.local_time(moment).strftime("%a %H:%M") + f" {calendar.timezone}"


@workflow.defn(name="Escalation")
class EscalationWorkflow:
    @workflow.init
    def __init__(self, request: OpenCase) -> None:
        # State exists before any handler runs: an update may arrive with the first task.
        # The pinned policy this run follows; `migrate` swaps it, and continue-as-new hands
        # the new run this one, not the one the case opened with.
        self._policy: PinnedDefinition = request.policy
        self._spec: EscalationSpec = request.policy.escalation
        self._status: CaseStatus = request.carried or self._new_status(request)
        self._changed = False
        # Actions running beside the main loop, by ledger step (levels, warnings, breaches,
        # pager follow-ups); None until the run knows whether it is patched.
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._concurrent: bool | None = None
        self._follow_ups = 0
        self._upserted: dict[str, object] = {}  # search attributes as last upserted

    # --- plumbing ------------------------------------------------------------------------

    @property
    def status(self) -> CaseStatus:
        return self._status

    @property
    def spec(self) -> EscalationSpec:
        return self._spec

    def _metric_labels(self) -> dict[str, str]:
        s = self.status
        return {"policy": metrics.definition_name(s.definition), "priority": s.case.priority}

    def _stopped_clock(self, name: str, clock: SlaClock) -> None:
        """Count a clock just stopped (acknowledged, resolved) as met if within budget."""
        if clock.breached_at is None and clock.spent_before <= clock.budget:
            metrics.sla_met(**self._metric_labels(), clock=name)

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
        """What message templates of an escalation policy may use: case, customer, sla, level."""
        s = self.status
        now = workflow.now()
        calendar = self._calendar
        clock = sla or s.clocks.get(FIRST_RESPONSE)
        sla_context: dict[str, object] = {}
        if clock is not None:
            due = clock.due_at(calendar)
            sla_context = {
                "name": clock.name,
                "label": clock.name.replace("_", " "),
                "budget": str(clock.budget),
                "spent": str(clock.spent(now, calendar)),
                "remaining": str(clock.remaining(now, calendar)),
                "due_at": _format_at(due, calendar) if due else "",
                "percent": percent or 0,
            }
        visit = s.visits[-1] if s.visits else None
        profile = s.customer.model_dump(mode="json") if s.customer else {"id": s.case.customer_id}
        return {
            "case": {
                "id": s.case.ticket_id,
                "ticket_id": s.case.ticket_id,
                "subject": s.case.subject or "",
                "priority": s.case.priority,
                "stage": s.case.stage,
                "channel": s.case.channel or "",
                "state": s.state,
                "assignee": s.assignee or "",
                "queue": s.queue or "",
                "opened_at": s.case.opened_at.isoformat(),
                "policy": s.definition,
            },
            "customer": profile,
            "sla": sla_context,
            "level": {
                "number": visit.level if visit else 0,
                "name": (visit.name or "") if visit else "",
                "cycle": visit.cycle if visit else 0,
                "of": len(self._levels),
            },
        }

    # The case's priority picks its calendar, warnings, levels and breach actions.
    @property
    def _calendar(self) -> BusinessCalendar:
        return self.spec.calendar_for(self.status.case.priority)

    @property
    def _levels(self) -> list[EscalationLevel]:
        return self.spec.levels_for(self.status.case.priority)

    @property
    def _plan_repeat(self) -> int:
        return self.spec.repeat_for(self.status.case.priority)

    @property
    def _warn_at(self) -> list[int]:
        return self.spec.warn_at_for(self.status.case.priority)

    @property
    def _on_warning(self) -> list[Action]:
        return self.spec.on_warning_for(self.status.case.priority)

    @property
    def _on_breach(self) -> list[Action]:
        return self.spec.on_breach_for(self.status.case.priority)

    def _budgets(
        self, priority: str, stage: str, policy: PinnedDefinition | None = None
    ) -> dict[str, timedelta]:
        """The clocks' budgets at `priority` and `stage` under `policy` (default: the case's)."""
        budgets = sla_budgets(policy.escalation if policy else self.spec, priority, stage)
        if budgets is None:
            ref = policy.ref if policy else self.status.definition
            raise ValueError(f"policy {ref} has no SLA for {priority} at {stage}")
        return budgets

    def _wake(self) -> None:
        self._changed = True

    def _upsert_search_attributes(self) -> None:
        s = self.status
        if not workflow.patched(DUE_AT_PATCH):
            workflow.upsert_search_attributes(
                [
                    sa.OPS_KIND.value_set("escalation"),
                    sa.OPS_CASE_ID.value_set(s.case.ticket_id),
                    sa.OPS_CUSTOMER_ID.value_set(s.case.customer_id),
                    sa.OPS_STAGE.value_set(s.case.stage),
                    sa.OPS_PRIORITY.value_set(s.case.priority),
                    sa.OPS_LEVEL.value_set(self._current_level()),
                    sa.OPS_STATE.value_set(s.state),
                    sa.OPS_DEFINITION.value_set(s.definition),
                ]
            )
            return
        stuck = s.attention is not None and s.state != "resolved"
        due = self._next_breach()
        values = {
            sa.OPS_KIND.name: "escalation",
            sa.OPS_CASE_ID.name: s.case.ticket_id,
            sa.OPS_CUSTOMER_ID.name: s.case.customer_id,
            sa.OPS_STAGE.name: s.case.stage,
            sa.OPS_PRIORITY.name: s.case.priority,
            sa.OPS_LEVEL.name: self._current_level(),
            sa.OPS_STATE.name: sa.STUCK if stuck else s.state,
            sa.OPS_DEFINITION.name: s.definition,
        }
        if due is not None:
            # Kept, not unset, once nothing is due (paused, resolved): servers answer an unset
            # Datetime as null, which the SDK's describe cannot decode. Queries filter OpsState.
            values[sa.OPS_DUE_AT.name] = due
        # Every upsert is a command (a billed action on Temporal Cloud): only what changed.
        changed = {k: v for k, v in values.items() if self._upserted.get(k, _UNSET) != v}
        if not changed:
            return
        self._upserted.update(changed)
        updates = [_pair(name, value) for name, value in changed.items()]
        workflow.upsert_search_attributes(updates)

    def _next_breach(self) -> datetime | None:
        """The first moment a running clock that has not breached runs out."""
        moments = [
            due
            for clock in self.status.clocks.values()
            if not clock.stopped and clock.breached_at is None
            for due in [clock.due_at(self._calendar)]
            if due is not None
        ]
        return min(moments, default=None)

    def _current_level(self) -> int:
        visits = self.status.visits
        return visits[-1].level if visits and visits[-1].ended_at is None else 0

    # --- schedule ------------------------------------------------------------------------

    def _level_due_spent(self, index: int) -> timedelta:
        """Business time on the escalation clock at which firing number `index` is due."""
        levels = self._levels
        cycle, position = divmod(index, len(levels))
        return levels[-1].after * cycle + levels[position].after

    def _total_firings(self) -> int:
        return len(self._levels) * (1 + self._plan_repeat)

    def _escalating(self) -> bool:
        s = self.status
        return s.state == "open" and s.levels_fired < self._total_firings()

    def _next_moment(self) -> datetime | None:
        """The next moment something is due: a warning, a level or a breach."""
        calendar = self._calendar
        s = self.status
        moments: list[datetime] = []
        for clock in s.clocks.values():
            if clock.stopped or not clock.running:
                continue
            for percent in self._warn_at:
                if percent not in clock.warned_at:
                    at = clock.moment_spent_reaches(clock.budget * percent / 100, calendar)
                    if at:
                        moments.append(at)
            if clock.breached_at is None and (due := clock.due_at(calendar)):
                moments.append(due)
        escalation = s.clocks.get(FIRST_RESPONSE)
        if self._escalating() and escalation and escalation.running:
            at = escalation.moment_spent_reaches(self._level_due_spent(s.levels_fired), calendar)
            if at:
                moments.append(at)
        return min(moments) if moments else None

    async def _fire_due(self) -> None:
        calendar = self._calendar
        s = self.status
        now = workflow.now()
        for name, clock in s.clocks.items():
            if clock.stopped or not clock.running:
                continue
            spent = clock.spent(now, calendar)
            for percent in sorted(self._warn_at):
                if percent not in clock.warned_at and spent >= clock.budget * percent / 100:
                    clock.warned_at.append(percent)
                    await self._warn(name, percent)
            if clock.breached_at is None and spent >= clock.budget:
                # The moment the budget ran out, not the moment the timer was handled.
                clock.breached_at = clock.due_at(calendar) or now
                await self._breach(name, clock)
        escalation = s.clocks.get(FIRST_RESPONSE)
        while (
            self._escalating()
            and escalation is not None
            and escalation.spent(now, calendar) >= self._level_due_spent(s.levels_fired)
        ):
            await self._fire_level(s.levels_fired)

    async def _warn(self, clock_name: str, percent: int) -> None:
        step = f"warn-{clock_name}-{percent}"
        clock = self.status.clocks[clock_name]
        target = self._target(clock, percent)
        # Stamped when the warning fell due; a catch-up after an outage is written later.
        due = clock.moment_spent_reaches(clock.budget * percent / 100, self._calendar)
        metrics.sla_warned(**self._metric_labels(), clock=clock_name, percent=percent)
        await ledger(target, step, {"sla": clock_name, "percent": percent}, at=due)
        if self._on_warning and self._concurrent:
            self._spawn(step, self._on_warning, target)
        elif self._on_warning:
            outcome = await run_actions(
                self._on_warning, target, step, priority=self.status.case.priority
            )
            await self._note_failures(step, outcome)

    async def _breach(self, clock_name: str, clock: SlaClock) -> None:
        s = self.status
        step = f"breach-{clock_name}"
        event = SlaBreached(
            ticket_id=s.case.ticket_id,
            customer_id=s.case.customer_id,
            sla=clock_name,
            priority=s.case.priority,
            stage=s.case.stage,
            budget_seconds=int(clock.budget.total_seconds()),
            breached_at=clock.breached_at or workflow.now(),
            policy=s.definition,
        )
        target = self._target(clock)
        metrics.sla_breached(**self._metric_labels(), clock=clock_name)
        await ledger(target, step, {"event": event.model_dump(mode="json")}, at=event.breached_at)
        if self._concurrent:
            deliver = workflow.patched("deliver-sla-breach")
            self._spawn(
                step,
                self._on_breach,
                target,
                before=(lambda: self._deliver_breach(event)) if deliver else None,
                start_event=self._breach_envelope(event),
            )
            s.breaches_announced.append(clock_name)
            return
        if workflow.patched("deliver-sla-breach"):
            await self._deliver_breach(event)
        if self._on_breach:
            await self._apply(
                await run_actions(self._on_breach, target, step, priority=s.case.priority),
                step,
            )
        s.breaches_announced.append(clock_name)

    def _breach_envelope(self, event: SlaBreached) -> EventEnvelope:
        return EventEnvelope(
            id=f"{workflow.info().workflow_id}/{event.sla}",
            source="escalation",
            type="sla.breached",
            subject=event.ticket_id,
            time=event.breached_at,
            data=event.model_dump(mode="json"),
        )

    def _escalated_envelope(self, step: str) -> EventEnvelope:
        """What a level's or warning's `start` hands the recovery workflow, once per step."""
        s = self.status
        level = s.visits[-1].level if step.startswith("level-") and s.visits else None
        event = CaseEscalated(
            ticket_id=s.case.ticket_id,
            customer_id=s.case.customer_id,
            priority=s.case.priority,
            stage=s.case.stage,
            policy=s.definition,
            step=step,
            level=level,
        )
        return EventEnvelope(
            id=f"{workflow.info().workflow_id}/{step}",
            source="escalation",
            type="case.escalated",
            subject=event.ticket_id,
            time=workflow.now(),
            data=event.model_dump(mode="json"),
        )

    async def _deliver_breach(self, event: SlaBreached) -> None:
        """Hand the breach to `customer-<id>` (recovery); its fixed id makes it count once."""
        envelope = self._breach_envelope(event)
        try:
            await call("recovery.deliver_event", envelope, str)
        except ActivityError as exc:
            workflow.logger.warning("sla.breached not delivered to recovery: %s", exc.cause)

    async def _fire_level(self, index: int) -> None:
        s = self.status
        cycle, position = divmod(index, len(self._levels))
        level = self._levels[position]
        # The moment the level fell due, not the moment the timer was handled.
        clock = s.clocks[FIRST_RESPONSE]
        due = clock.moment_spent_reaches(self._level_due_spent(index), self._calendar)
        at = due or workflow.now()
        if s.visits and s.visits[-1].ended_at is None:
            s.visits[-1].ended_at = at
        s.visits.append(LevelVisit(level=position + 1, cycle=cycle, name=level.name, started_at=at))
        s.levels_fired = index + 1
        step = f"level-{position + 1}-cycle-{cycle}"
        metrics.escalation_level_fired(**self._metric_labels(), level=position + 1)
        await ledger(
            self._target(),
            step,
            {"level": position + 1, "cycle": cycle, "name": level.name},
            at=at,
        )
        if self._concurrent:
            self._spawn(step, level.actions, self._target())
            self._upsert_search_attributes()
            return
        await self._apply(
            await run_actions(level.actions, self._target(), step, priority=s.case.priority),
            step,
        )
        self._upsert_search_attributes()

    async def _apply(self, outcome: ActionOutcome, step: str) -> None:
        """Take in what the actions did; one that failed changed nothing and is recorded."""
        s = self.status
        if self._concurrent and outcome.skipped:  # not done either: recorded, never silent
            outcome.failed.extend(f"skipped: {why}" for why in outcome.skipped)
            outcome.skipped.clear()
        await self._note_failures(step, outcome)
        if outcome.new_assignee:
            s.assignee = outcome.new_assignee
        if outcome.new_queue:
            s.queue = outcome.new_queue
        if outcome.new_priority and outcome.new_priority != s.case.priority:
            if self.spec.sla_for(outcome.new_priority, s.case.stage) is None:
                # A level raised the priority beyond what this policy has targets for: the
                # ticket says so, the clocks keep the SLA they have.
                s.case = s.case.model_copy(update={"priority": outcome.new_priority})
            else:
                self._rebudget(priority=outcome.new_priority, stage=s.case.stage)

    # --- actions beside the clock ---------------------------------------------------------

    def _give_up_after(self) -> dict[str, timedelta]:
        limits = self.spec.give_up_after
        return {name: getattr(limits, name) for name in ActionRetry.model_fields}

    def _alert_key(self, recipient: str) -> str:
        """One alert per case and recipient: every page to them folds into it."""
        return f"{workflow.info().workflow_id}/pager/{recipient}"[:255]

    def _on_page(self, recipient: str, dedup_key: str, landed: bool | None) -> None:
        s = self.status
        alert = next((a for a in s.alerts if a.dedup_key == dedup_key), None)
        if alert is None:
            alert = PagerAlert(recipient=recipient, dedup_key=dedup_key)
            s.alerts.append(alert)
        if landed is None:
            if alert.status in ("failed", "resolved"):
                alert.status = "paging"
        elif landed:
            if alert.status in ("paging", "failed"):
                alert.status = "triggered"
            if s.acknowledged_by is not None and alert.status == "triggered":
                self._follow_alerts_later("acknowledge")  # the page landed after the ack
        elif alert.status == "paging":
            alert.status = "failed"

    def _spawn(
        self,
        step: str,
        actions: list[Action],
        target: ActionTarget,
        *,
        before: Callable[[], Awaitable[None]] | None = None,
        start_event: EventEnvelope | None = None,
    ) -> None:
        """Run `actions` for `step` beside the main loop; what they change is applied when
        they finish, what fails is recorded, and the loop is woken either way. A `start`
        action hands the started workflow `start_event` (default: a case.escalated event)."""
        s = self.status
        target = dataclasses.replace(
            target, start_event=start_event or self._escalated_envelope(step)
        )
        priority = s.case.priority
        what = ", ".join(
            f"notify {a.channel}" if isinstance(a, NotifyAction) else a.type for a in actions
        )
        s.in_flight.append(InFlightAction(step=step, what=what or "deliver", since=workflow.now()))

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
                        give_up_after=self._give_up_after(),
                        alert_key=self._alert_key,
                        on_page=self._on_page,
                    )
                    await self._apply(outcome, step)
                    self._upsert_search_attributes()
            finally:
                s.in_flight = [a for a in s.in_flight if a.step != step]
                self._tasks.pop(step, None)
                self._wake()

        self._tasks[step] = asyncio.create_task(run())

    async def _follow_alerts(self, action: AlertAction) -> None:
        """Acknowledge or resolve every alert the case's pages opened."""
        s = self.status
        wanted = ["triggered"]
        if action == "resolve":  # also pages cancelled mid-flight: resolving none is harmless
            wanted += ["paging", "acknowledged"]
        workflow_id = workflow.info().workflow_id
        limit = self.spec.give_up_after.pager
        for index, alert in enumerate(s.alerts):
            if alert.status not in wanted:
                continue
            try:
                await call(
                    "notify.pager_event",
                    PagerEvent(
                        idempotency_key=f"{workflow_id}/pager-{action}/{index}",
                        dedup_key=alert.dedup_key,
                        action=action,
                    ),
                    PagerEventSent,
                    give_up_after=limit,
                )
            except ActivityError as exc:
                step = f"pager-{action}"
                error = f"{action} alert of {alert.recipient}: {failure_reason(exc, limit)}"
                self._keep_failures(step, [error])
                await ledger(self._target(), f"{step}-{index}-failed", {"failed": [error]})
                continue
            alert.status = "acknowledged" if action == "acknowledge" else "resolved"

    def _follow_alerts_later(self, action: AlertAction) -> None:
        self._follow_ups += 1
        step = f"pager-{action}-{self._follow_ups}"

        async def run() -> None:
            try:
                await self._follow_alerts(action)
            finally:
                self._tasks.pop(step, None)
                self._wake()

        self._tasks[step] = asyncio.create_task(run())

    async def _cancel_in_flight(self) -> None:
        """The case is resolved: what still runs or retries is cancelled, and recorded."""
        s = self.status
        unfinished = list(s.in_flight)
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        for item in unfinished:
            reason = f"cancelled: the case was resolved by {s.resolved_by} while it still ran"
            self._keep_failures(item.step, [f"{item.what}: {reason}"])
            await ledger(
                self._target(), f"{item.step}-cancelled", {"actions": item.what, "why": reason}
            )

    def _keep_failures(self, step: str, failed: list[str]) -> None:
        s = self.status
        now = workflow.now()
        s.failures.extend(ActionFailure(step=step, error=error[:500], at=now) for error in failed)
        del s.failures[:-MAX_ACTION_FAILURES]
        if failed:
            s.attention = f"{step} failed: {failed[0][:200]}"

    async def _note_failures(self, step: str, outcome: ActionOutcome) -> None:
        """Failed actions go into the state and the ledger (`<step>-failed`): not done."""
        if not outcome.failed or not workflow.patched(ACTION_FAILURES_PATCH):
            return
        workflow.logger.warning("case actions failed at %s: %s", step, "; ".join(outcome.failed))
        self._keep_failures(step, outcome.failed)
        await ledger(self._target(), f"{step}-failed", {"failed": outcome.failed})

    def _rebudget(
        self, *, priority: str, stage: str, policy: PinnedDefinition | None = None
    ) -> None:
        """The clocks take the SLA for `priority` and `stage` (under `policy`, default the
        case's) and keep the time spent, counted on the calendar they ran on until now."""
        s = self.status
        budgets = self._budgets(priority, stage, policy)
        now = workflow.now()
        for name, clock in s.clocks.items():
            if not clock.stopped:  # a target already met keeps the SLA it was met under
                clock.rebudget(budgets[name], now, self._calendar)
        s.case = s.case.model_copy(update={"priority": priority, "stage": stage})

    def _describe(self, next_at: datetime | None) -> str:
        s = self.status
        if s.state == "resolved":
            return f"resolved by {s.resolved_by}"
        parts = [f"needs a person: {s.attention}"] if s.attention else []
        level = self._current_level()
        if s.state == "paused":
            parts.append(f"paused ({s.pause_reason}); clocks stopped")
        elif s.state == "acknowledged":
            parts.append(f"acknowledged by {s.acknowledged_by}")
        elif level:
            who = s.assignee or s.queue or "the assignee"
            parts.append(
                f"level {level} of {len(self._levels)}, waiting for acknowledgement by {who}"
            )
        else:
            parts.append("waiting for acknowledgement")
        for name, clock in s.clocks.items():
            if clock.stopped:
                continue
            due = clock.due_at(self._calendar)
            label = name.replace("_", " ")
            if clock.breached_at:
                parts.append(f"{label} breached")
            elif due:
                parts.append(f"{label} breaches at {_format_at(due, self._calendar)}")
            break
        if s.in_flight:
            first = s.in_flight[0]
            more = f" (+{len(s.in_flight) - 1} more)" if len(s.in_flight) > 1 else ""
            since = _format_at(first.since, self._calendar)
            parts.append(f"{first.step} still trying {first.what} since {since}{more}")
        if s.failures:
            last = s.failures[-1]
            parts.append(f"{len(s.failures)} failed, last {last.step}: {last.error[:120]}")
        return "; ".join(parts)

    # --- run -----------------------------------------------------------------------------

    @workflow.run
    async def run(self, request: OpenCase) -> CaseSummary:
        s = self.status
        self._concurrent = workflow.patched(CONCURRENT_ACTIONS_PATCH)
        self._upsert_search_attributes()
        if request.carried is None:
            s.customer = await self._profile(s.case.customer_id)
            await ledger(
                self._target(),
                "opened",
                {
                    "customer": s.case.customer_id,  # a backtest opens the case again
                    "priority": s.case.priority,
                    "stage": s.case.stage,
                    "policy": s.definition,
                    **_who(request.by),
                },
            )
        while not self._resolved():
            # Cleared before the awaits below, so a command that lands while an activity
            # runs still wakes the wait at the end of this pass.
            self._changed = False
            await self._write_unrecorded()
            await self._fire_due()
            if self._resolved():  # resolved while an action ran
                break
            next_at = self._next_moment()
            workflow.set_current_details(self._describe(next_at))
            if workflow.patched(DUE_AT_PATCH):
                self._upsert_search_attributes()  # the next breach moves as clocks change
            if (
                workflow.info().is_continue_as_new_suggested()
                or workflow.info().get_current_history_length() > request.max_history_events
            ) and not self._tasks:  # what still runs finishes in this run
                await workflow.wait_condition(workflow.all_handlers_finished)
                # The policy this run follows now: a migrated case carries its new one.
                carried = {"case": s.case, "carried": s, "policy": self._policy}
                workflow.continue_as_new(request.model_copy(update=carried))
            timeout = None
            if next_at is not None:
                timeout = max(next_at - workflow.now(), timedelta(seconds=1))
            with contextlib.suppress(asyncio.TimeoutError):
                await workflow.wait_condition(lambda: self._changed, timeout=timeout)
        if self._concurrent:
            await self._cancel_in_flight()
            await self._follow_alerts("resolve")
        await workflow.wait_condition(workflow.all_handlers_finished)
        await self._write_unrecorded()
        workflow.set_current_details(self._describe(None))
        return self._summary()

    async def _profile(self, customer_id: str) -> CustomerProfile | None:
        """The customer's CRM profile, for templates and recipients; a case opens without."""
        try:
            profile: CustomerProfile = await call(
                "crm.get_customer", GetCustomer(customer_id=customer_id), CustomerProfile
            )
        except ActivityError as exc:
            workflow.logger.warning("no CRM profile for the case's customer: %s", exc.cause)
            return None
        return profile

    def _new_status(self, request: OpenCase) -> CaseStatus:
        case = request.case
        status = CaseStatus(case=case, definition=request.policy.ref)
        target = self._spec.sla_for(case.priority, case.stage)
        if target is None:
            raise ApplicationError(
                f"policy {request.policy.ref} has no SLA for {case.priority} at {case.stage}",
                type="InvalidRequest",
                non_retryable=True,
            )
        opened = min(case.opened_at, workflow.now())
        for name, budget in (
            (FIRST_RESPONSE, target.first_response),
            (RESOLUTION, target.resolution),
        ):
            status.clocks[name] = SlaClock(name=name, budget=budget, running_since=opened)
        return status

    def _summary(self) -> CaseSummary:
        s = self.status
        assert s.resolved_at is not None and s.resolved_by is not None
        calendar = self._calendar
        outcomes = []
        for name, clock in s.clocks.items():
            spent = clock.spent(s.resolved_at, calendar)
            outcomes.append(
                SlaOutcome(
                    name=name,
                    budget=clock.budget,
                    spent=spent,
                    met=clock.met_at is not None and spent <= clock.budget,
                    breached=spent > clock.budget,
                    margin=clock.budget - spent,
                )
            )
        at_level: dict[str, timedelta] = {}
        for visit in s.visits:
            key = f"level {visit.level}"
            at_level[key] = at_level.get(key, timedelta(0)) + (
                (visit.ended_at or s.resolved_at) - visit.started_at
            )
        return CaseSummary(
            ticket_id=s.case.ticket_id,
            resolved_at=s.resolved_at,
            resolved_by=s.resolved_by,
            acknowledged_by=s.acknowledged_by,
            acknowledged_at=s.acknowledged_at,
            slas=outcomes,
            time_at_level=at_level,
        )

    # --- messages ------------------------------------------------------------------------

    @workflow.query
    def state(self) -> CaseStatus:
        """The full state, each running clock with the moment it runs out."""
        view = self.status.model_copy(deep=True)
        for clock in view.clocks.values():
            clock.due = None if clock.stopped else clock.due_at(self._calendar)
            clock.status = clock.shown_status()
        return view

    def _resolved(self) -> bool:
        return self.status.state == "resolved"

    def _refuse_if_resolved(self) -> None:
        if self.status.state == "resolved":
            raise ValueError(f"case {self.status.case.ticket_id} is already resolved")

    def _record(self, command: str, detail: dict[str, Any], *, by_person: bool = True) -> None:
        """Note a command for the ledger and wake the main loop, which writes it: the update
        answers at once instead of waiting for the database."""
        s = self.status
        s.commands += 1
        if by_person:  # a person acted on the case: they have seen what failed
            s.attention = None
        # A readable step (`pause`); the command's number keeps its ledger entry unique.
        s.unrecorded.append(
            PendingLedgerEntry(
                step=command,
                key=f"command-{s.commands}-{command}",
                detail=detail,
                at=workflow.now(),
            )
        )
        self._upsert_search_attributes()
        self._wake()

    async def _write_unrecorded(self) -> None:
        while self.status.unrecorded:
            entry = self.status.unrecorded[0]
            await ledger(self._target(), entry.step, entry.detail, at=entry.at, key=entry.key)
            self.status.unrecorded.pop(0)

    @workflow.update
    async def acknowledge(self, command: Acknowledge) -> CaseStatus:
        s = self.status
        if s.acknowledged_by is not None:  # a later public reply: the first one counted
            return s
        now = workflow.now()
        s.acknowledged_by, s.acknowledged_at = command.by, now
        s.state = "acknowledged" if s.state == "open" else s.state
        clock = s.clocks[FIRST_RESPONSE]
        if not clock.stopped:
            clock.stop(now, self._calendar)
            self._stopped_clock(FIRST_RESPONSE, clock)
        seconds = (now - s.case.opened_at).total_seconds()
        metrics.case_acknowledged(**self._metric_labels(), seconds=seconds)
        if s.visits and s.visits[-1].ended_at is None:
            s.visits[-1].ended_at = now
        how = {"as": "public reply"} if command.first_response_only else {}
        self._record("acknowledge", {"by": command.by, **how})
        if self._concurrent and any(a.status == "triggered" for a in s.alerts):
            self._follow_alerts_later("acknowledge")
        return s

    @acknowledge.validator
    def _validate_acknowledge(self, command: Acknowledge) -> None:
        self._refuse_if_resolved()
        if self.status.acknowledged_by is not None and not command.first_response_only:
            raise ValueError(f"already acknowledged by {self.status.acknowledged_by}")

    @workflow.update
    async def pause(self, command: Pause) -> CaseStatus:
        self._pause(command.reason)
        self._record("pause", {"reason": command.reason, **_who(command.by)})
        return self.status

    def _pause(self, reason: str) -> None:
        s = self.status
        now = workflow.now()
        for clock in s.clocks.values():
            if not clock.stopped:
                clock.pause(now, self._calendar)
        s.paused_since, s.pause_reason = now, reason
        s.state = "paused"

    def _resume(self) -> None:
        s = self.status
        now = workflow.now()
        for clock in s.clocks.values():
            clock.resume(now)
        s.paused_since, s.pause_reason = None, None
        s.state = "acknowledged" if s.acknowledged_by else "open"

    @pause.validator
    def _validate_pause(self, command: Pause) -> None:
        self._refuse_if_resolved()
        if self.status.state == "paused":
            raise ValueError("the case is already paused")

    @workflow.update
    async def resume(self, command: Resume | None = None) -> CaseStatus:
        self._resume()
        self._record("resume", _who(command.by if command else None))
        return self.status

    @resume.validator
    def _validate_resume(self, command: Resume | None = None) -> None:
        self._refuse_if_resolved()
        if self.status.state != "paused":
            raise ValueError("the case is not paused")

    @workflow.update
    async def ticket_status(self, command: TicketStatus) -> CaseStatus:
        """The ticket's status, as the ticketing system says: the pinned policy's
        `pause_statuses` pause the clocks, any other status resumes a paused case. What
        changes nothing (paused and still waiting, running and still running) is not
        recorded."""
        s = self.status
        pauses = command.status in self.spec.pause_statuses_for(s.case.priority)
        detail = {"status": command.status, **_who(command.by)}
        if pauses and s.state != "paused":
            self._pause(f"ticket {command.status}")
            self._record("pause", {**detail, "reason": f"ticket {command.status}"}, by_person=False)
        elif not pauses and s.state == "paused":
            self._resume()
            self._record("resume", detail, by_person=False)
        return s

    @ticket_status.validator
    def _validate_ticket_status(self, command: TicketStatus) -> None:
        self._refuse_if_resolved()

    @workflow.update
    async def set_priority(self, command: SetPriority) -> CaseStatus:
        before = self.status.case.priority
        self._rebudget(priority=command.priority, stage=self.status.case.stage)
        self._record("priority", {"from": before, "to": command.priority, **_who(command.by)})
        return self.status

    @set_priority.validator
    def _validate_set_priority(self, command: SetPriority) -> None:
        self._refuse_if_resolved()
        if command.priority not in ("p1", "p2", "p3", "p4"):
            raise ValueError(f"unknown priority {command.priority!r}: use p1, p2, p3 or p4")
        if command.priority == self.status.case.priority:
            raise ValueError(f"the case is already {command.priority}")
        if self.spec.sla_for(command.priority, self.status.case.stage) is None:
            covers = ", ".join(self.spec.priorities)
            raise ValueError(
                f"policy {self.status.definition} has no SLA for {command.priority} (it covers "
                f"{covers}); first migrate the case to a policy that covers both "
                "(`opsflow case migrate`)"
            )

    @workflow.update
    async def set_stage(self, command: SetStage) -> CaseStatus:
        before = self.status.case.stage
        self._rebudget(priority=self.status.case.priority, stage=command.stage)
        self._record("stage", {"from": before, "to": command.stage, **_who(command.by)})
        return self.status

    @set_stage.validator
    def _validate_set_stage(self, command: SetStage) -> None:
        self._refuse_if_resolved()
        if command.stage == self.status.case.stage:
            raise ValueError(f"the case is already at stage {command.stage}")
        known = self._known_stages(self.status.case.priority)
        if command.stage not in known:
            raise ValueError(
                f"unknown stage {command.stage!r} for policy {self.status.definition}: "
                f"known stages: {', '.join(known) or 'none'}"
            )
        if self.spec.sla_for(self.status.case.priority, command.stage) is None:
            raise ValueError(
                f"policy {self.status.definition} has no SLA for stage {command.stage!r}"
            )

    def _known_stages(self, priority: str) -> list[str]:
        """The stages this policy has an SLA for at `priority`: those it names, and with a
        `*` target the usual case stages as well."""
        named = [t.stage for t in self.spec.slas if t.priority == priority]
        known = [stage for stage in named if stage != ANY_STAGE]
        if ANY_STAGE in named:
            known += [stage for stage in CASE_STAGES if stage not in known]
        return known

    @workflow.update
    async def reassign(self, command: Reassign) -> CaseStatus:
        s = self.status
        action = AssignAction(type="assign", queue=command.queue, agent=command.agent)
        s.commands += 1
        step = f"command-{s.commands}-reassign"
        if self._concurrent:
            outcome = await run_actions_independently(
                [action], self._target(), step, give_up_after=self._give_up_after()
            )
        else:
            outcome = await run_actions([action], self._target(), step)
        if outcome.failed and workflow.patched(ACTION_FAILURES_PATCH):
            # Not done: the queue and assignee stay, the ledger and the answer say why.
            self._keep_failures("reassign", outcome.failed)
            await ledger(
                self._target(),
                "reassign",
                {**command.model_dump(), "failed": outcome.failed},
                key=step,
            )
            self._upsert_search_attributes()
            self._wake()
            target = f"queue {command.queue}" if command.queue else f"agent {command.agent}"
            raise ApplicationError(
                f"reassign to {target} failed ({'; '.join(outcome.failed)}); "
                f"queue and assignee unchanged",
                type=ACTION_FAILED,
                non_retryable=True,
            )
        await self._apply(outcome, step)
        await ledger(self._target(), "reassign", command.model_dump(), key=step)
        self._upsert_search_attributes()
        self._wake()
        return s

    @reassign.validator
    def _validate_reassign(self, command: Reassign) -> None:
        self._refuse_if_resolved()
        try:
            AssignAction(type="assign", queue=command.queue, agent=command.agent)
        except ValidationError as exc:
            error = exc.errors()[0]
            where = ".".join(str(part) for part in error["loc"])
            message = str(error["msg"]).removeprefix("Value error, ")
            raise ValueError(f"{where + ': ' if where else ''}{message}") from None

    @workflow.update
    async def migrate(self, command: Migrate) -> CaseStatus:
        """Follow `command.policy` from now on: the clocks take its targets for the case's
        priority and stage and keep the time spent (on the old calendar until now) and any
        pause; its calendar, levels, warnings and actions apply from here."""
        s = self.status
        before = s.definition
        self._rebudget(priority=s.case.priority, stage=s.case.stage, policy=command.policy)
        self._policy, self._spec = command.policy, command.policy.escalation
        s.definition = command.policy.ref
        self._record("migrate", {"from": before, "to": s.definition, "by": command.by})
        return s

    @migrate.validator
    def _validate_migrate(self, command: Migrate) -> None:
        refusal = migration_refusal(self.status, command.policy)
        if refusal is not None:
            raise ValueError(refusal)

    @workflow.update
    async def resolve(self, command: Resolve) -> CaseStatus:
        s = self.status
        now = workflow.now()
        for name, clock in s.clocks.items():
            if not clock.stopped:
                clock.stop(now, self._calendar)
                self._stopped_clock(name, clock)
        if s.visits and s.visits[-1].ended_at is None:
            s.visits[-1].ended_at = now
        s.resolved_by, s.resolved_at, s.state = command.by, now, "resolved"
        outcome = {"outcome": command.outcome} if command.outcome else {}
        self._record("resolve", {"by": command.by, **outcome})
        return s

    @resolve.validator
    def _validate_resolve(self, command: Resolve) -> None:
        self._refuse_if_resolved()


__all__ = [
    "FIRST_RESPONSE",
    "MAX_HISTORY_EVENTS",
    "RESOLUTION",
    "Acknowledge",
    "ActionFailure",
    "CaseInfo",
    "CaseState",
    "CaseStatus",
    "CaseSummary",
    "EscalationWorkflow",
    "LevelVisit",
    "Migrate",
    "OpenCase",
    "Pause",
    "PendingLedgerEntry",
    "Priority",
    "Reassign",
    "Resolve",
    "Resume",
    "SetPriority",
    "SetStage",
    "SlaOutcome",
    "TicketStatus",
    "case_workflow_id",
]
