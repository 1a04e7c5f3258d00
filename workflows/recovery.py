"""The service-recovery workflow: one per customer (`customer-<id>`), started by
signal-with-start on the customer's first event, alive while anything is pending (windows,
cooldowns, caps, dedup keys, stall timers, an open episode or an approval).

Decisions are made by the pure `RecoveryEngine` (workflows/recovery_core.py); this module
turns its plans into ledger entries and actions (activities), handles the messages and keeps
the Temporal UI telling. The `event` signal takes the EventEnvelope and, optionally, which
rule sets are deployed now (`RulesDigest`; runs recorded before it carry the `RecoveryRules`
themselves): a newer set replaces the pinned one from that event on.
"""

from __future__ import annotations

import asyncio
import contextlib
from datetime import datetime, timedelta
from typing import Any, Literal

from temporalio import workflow
from temporalio.exceptions import ActivityError

from activities import search_attributes as sa
from workflows import metrics
from workflows.actions import ActionTarget, call, ledger, run_actions

with workflow.unsafe.imports_passed_through():
    from activities.models import (
        CreateTicket,
        CustomerProfile,
        GetCustomer,
        MessageSent,
        SendMessage,
        Ticket,
    )
    from definitions.events import EventEnvelope
    from workflows.recovery_context import Plan
    from workflows.recovery_core import RecoveryEngine
    from workflows.recovery_model import (
        MEMORY_STEP,
        Approve,
        CloseEpisode,
        OpsState,
        PendingApproval,
        PreviousState,
        RecoveryInput,
        RecoveryMemory,
        RecoveryRules,
        RecoveryState,
        RecoverySummary,
        RecoveryView,
        Reject,
        RulesDigest,
        Silence,
        SilenceCommand,
        Unsilence,
        rules_digest,
    )

# Runs started before this patch keep reading the pre-contract event names of their pinned
# rule sets (recovery_core.LEGACY_EVENT_NAMES); new runs read the event contract only.
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
APPROVAL_TEMPLATE = "credit-approval"
# Runs since this patch tie an episode's follow-up to its contact (a survey about another
# ticket does not answer it), hand a not-recovered episode to a person (a ticket in the
# follow-up's not_recovered_queue; the episode stays open until they close it), and send no
# follow-up for episodes whose rules only asked a person to look (`follow_up: false`).
EPISODE_CONTACT_PATCH = "recovery-episode-contact"
_NOTICE_CHANNELS = {
    "email": "email",
    "slack": "chat",
    "chat": "chat",
    "pager": "pager",
    "webhook": "webhook",
}
PROFILE_TTL = timedelta(days=1)


@workflow.defn(name="Recovery")
class RecoveryWorkflow:
    @workflow.init
    def __init__(self, request: RecoveryInput) -> None:
        customer_id = workflow.info().workflow_id.removeprefix("customer-")
        state = request.carried or RecoveryState(customer_id=customer_id)
        legacy = request.legacy_event_names or not workflow.patched(CONTRACT_NAMES_PATCH)
        self._engine: RecoveryEngine | None = RecoveryEngine(
            state,
            request.rules,
            legacy_names=legacy,
            stalls_in_hours=workflow.patched(STALLS_IN_HOURS_PATCH),
        )
        self._queue: list[tuple[EventEnvelope, RecoveryRules | RulesDigest | None]] = []
        self._acting = 0
        self._changed = False
        self._upsert_on_change = False
        self._upserted: tuple[str, str] | None = None
        self._recalled = True  # False while a new run loads what the last one left
        self._dirty = False  # changed since the run started (or last recorded its state)
        self._memories = 0

    @property
    def engine(self) -> RecoveryEngine:
        assert self._engine is not None
        return self._engine

    @property
    def state(self) -> RecoveryState:
        return self.engine.state

    # --- plumbing ------------------------------------------------------------------------

    def _ops_state(self) -> OpsState:
        now = workflow.now()
        if self._acting:
            return "acting"
        if self.state.waiting_approvals():
            return "awaiting_approval"
        episode = self.state.open_episode()
        if episode is not None and episode.handed_over_at is not None:
            return "with_person"
        if any(x.rule is None and x.until > now for x in self.state.silences):
            return "silenced"
        return "watching"

    def _upsert(self) -> None:
        shown = (self._ops_state(), ",".join(self.state.rule_sets)[:1000] or "none")
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

    def _calendar_tz(self) -> str:
        rules = self.engine.rules
        return rules[0].spec.calendar.timezone if rules else "UTC"

    def _at(self, moment: datetime) -> str:
        rules = self.engine.rules
        if rules:
            local = rules[0].spec.calendar.local_time(moment)
            return local.strftime("%a %d %b %H:%M") + f" {self._calendar_tz()}"
        return moment.strftime("%a %d %b %H:%M UTC")

    def _details(self) -> str:
        s = self.state
        now = workflow.now()
        parts: list[str] = []
        for approval in s.waiting_approvals()[:1]:
            parts.append(
                f"awaiting approval of a {approval.amount} {approval.currency} credit by "
                f"{approval.group} until {self._at(approval.deadline)}"
            )
        episode = s.open_episode()
        if episode is not None:
            days = (now - episode.opened_at).days
            since = {0: "since today", 1: "since 1 day"}.get(days, f"since {days} days")
            waiting = ""
            if episode.handed_over_at:
                ticket = f" (ticket {episode.handover_ticket})" if episode.handover_ticket else ""
                waiting = (
                    f", not recovered (follow-up scored {episode.score}): with "
                    f"{episode.handed_over_to}{ticket} until a person closes it"
                )
            elif episode.follow_up_sent_at:
                waiting = ", waiting for the follow-up survey"
            elif episode.follow_up_at:
                waiting = f", follow-up survey at {self._at(episode.follow_up_at)}"
            parts.append(f"episode {episode.id} {since}{waiting}")
        silenced = [x for x in s.silences if x.until > now]
        for silence in silenced[:1]:
            what = silence.rule or "customer"
            parts.append(f"{what} silenced until {self._at(silence.until)}")
        if not parts:
            wake = self.engine.next_wake()
            windows = ", ".join(f"{k.split('/')[-1]} {len(v)}" for k, v in s.windows.items())
            parts.append(f"watching {len(self.engine.rules)} rules")
            if windows:
                parts.append(f"windows: {windows}")
            if wake is not None:
                parts.append(f"next check {self._at(wake)}")
        return "; ".join(parts)

    def _target(self, plan: Plan) -> ActionTarget:
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

    async def _recall(self) -> None:
        """Continue from the state the customer's last run recorded when it ended."""
        self._recalled = False
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
        if memory.state is None:
            return
        carried = memory.state
        carried.customer_id = self.state.customer_id
        notices, contacts = self.engine.approver_notices, self.engine.episode_contacts
        self._engine = RecoveryEngine(
            carried,
            self.engine.rule_sets,
            legacy_names=self.engine.legacy_names,
            stalls_in_hours=self.engine.stalls_in_hours,
        )
        self._engine.approver_notices = notices
        self._engine.episode_contacts = contacts

    async def _record_memory(self) -> None:
        """Leave this run's state for the customer's next run (CRM profile excluded)."""
        self._dirty = False
        self._memories += 1
        state = self.state.model_dump(mode="json", exclude={"customer", "customer_at"})
        step = f"{MEMORY_STEP}{workflow.info().run_id}-{self._memories}"
        try:
            await ledger(
                ActionTarget(kind="recovery", customer_id=self.state.customer_id),
                step,
                {"events_seen": self.state.events_seen, "state": state},
                subject=self.state.customer_id,
            )
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
        customer = self.state.customer_id
        command = f"opsflow recovery approve {customer} --approval {approval.id} --by <you>"
        context = dict(target.template_context)
        context["action"] = {
            "notice": notice,
            "approval": approval.id,
            "amount": str(approval.amount),
            "currency": approval.currency,
            "reason": approval.reason,
            "customer": customer,
            "group": approval.group,
            "required": approval.required,
            "approvals": len(approval.approved_by),
            "deadline": self._at(approval.deadline),
            "on_timeout": approval.on_timeout,
            "command": command,
            "reject": f"opsflow recovery reject {customer} --approval {approval.id} --by <you>",
        }
        recipients = [f"agent:{m}" for m in approval.members] or [f"team:{approval.group}"]
        for n, recipient in enumerate(recipients):
            try:
                await call(
                    "notify.send",
                    SendMessage(
                        idempotency_key=f"{workflow.info().workflow_id}/{step}/notice/{n}",
                        channel=_NOTICE_CHANNELS.get(approval.channel, "chat"),
                        recipient=recipient,
                        template=APPROVAL_TEMPLATE,
                        context=context,
                        severity="info",
                    ),
                    MessageSent,
                    give_up_after=timedelta(hours=1),
                )
            except ActivityError as exc:
                # The approval still waits (and times out as defined); the failure is recorded.
                await ledger(
                    target,
                    f"{step}-notice-{n}-failed",
                    {"recipient": recipient, "error": str(exc.cause or exc)[:500]},
                    subject=customer,
                )

    async def _hand_over(self, plan: Plan, target: ActionTarget) -> None:
        """Open the person's ticket, then record the hand-over (with the ticket, or why there
        is none: the episode stays handed over and visible either way)."""
        handover = plan.handover
        assert handover is not None
        detail = dict(plan.detail)
        try:
            ticket: Ticket = await call(
                "ticketing.create_ticket",
                CreateTicket(
                    idempotency_key=f"{workflow.info().workflow_id}/{plan.step}",
                    customer_id=self.state.customer_id,
                    subject=handover.subject,
                    description=handover.description,
                    priority=handover.priority,
                    queue=handover.queue,
                    tags=["opsflow", "recovery", "not-recovered"],
                ),
                Ticket,
                give_up_after=timedelta(hours=1),
            )
        except ActivityError as exc:
            detail["ticket_error"] = str(exc.cause or exc)[:500]
        else:
            detail["ticket"] = ticket.id
            episode = next((e for e in self.state.episodes if e.id == handover.episode), None)
            if episode is not None:
                episode.handover_ticket = ticket.id
        await ledger(target, plan.step, detail, subject=self.state.customer_id)

    async def _refresh_profile(self) -> None:
        s = self.state
        now = workflow.now()
        if s.customer is not None and s.customer_at and now - s.customer_at < PROFILE_TTL:
            return
        try:
            profile: CustomerProfile = await call(
                "crm.get_customer", GetCustomer(customer_id=s.customer_id), CustomerProfile
            )
        except ActivityError as exc:
            workflow.logger.warning("no CRM profile for the customer: %s", exc.cause)
            s.customer, s.customer_at = {"id": s.customer_id}, now
            return
        data = profile.model_dump(mode="json")
        data["lifetime_value"] = float(profile.lifetime_value)
        s.customer, s.customer_at = data, now

    # --- run -----------------------------------------------------------------------------

    @workflow.run
    async def run(self, request: RecoveryInput) -> RecoverySummary:
        customer_id = self.state.customer_id
        self._upsert_on_change = workflow.patched(UPSERT_ON_CHANGE_PATCH)
        self._upsert()
        # Runs started before this patch cleared the wake flag just before waiting, losing a
        # wake from an update that finished while the pass was still acting.
        wake_at_start = workflow.patched(WAKE_FLAG_PATCH)
        remember = workflow.patched(RUN_MEMORY_PATCH)
        self.engine.approver_notices = workflow.patched(APPROVAL_NOTICES_PATCH)
        self.engine.episode_contacts = workflow.patched(EPISODE_CONTACT_PATCH)
        if remember and request.carried is None:
            await self._recall()
        while True:
            if wake_at_start:
                self._changed = False
            while self._queue:
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
                    workflow.continue_as_new(
                        RecoveryInput(
                            rules=self.engine.rule_sets,
                            carried=self.state,
                            max_history_events=request.max_history_events,
                            legacy_event_names=self.engine.legacy_names,
                        )
                    )
            workflow.set_current_details(self._details())
            self._upsert()
            wake = self.engine.next_wake()
            timeout = None
            if wake is not None:
                timeout = max(wake - workflow.now(), timedelta(seconds=1))
            if not wake_at_start:
                self._changed = False
            with contextlib.suppress(asyncio.TimeoutError):
                await workflow.wait_condition(
                    lambda: bool(self._queue) or self._changed, timeout=timeout
                )
        workflow.set_current_details("nothing pending: finished")
        return RecoverySummary(
            customer_id=customer_id,
            events_seen=self.state.events_seen,
            episodes=self.state.episode_count,
            tally=self.state.tally,
        )

    async def _switch_rules(self, offered: RecoveryRules | RulesDigest | None) -> None:
        """Use the rule sets deployed now when they differ from this run's, from the next
        event on; each switch is in the ledger."""
        if offered is None:
            return
        current = rules_digest(self.engine.rule_sets)
        if isinstance(offered, RulesDigest):
            if offered.digest == current:
                return
            try:
                loaded: RecoveryRules = await call("recovery.rule_sets", offered, RecoveryRules)
            except ActivityError as exc:
                workflow.logger.warning("keeping the current rules: %s", exc.cause)
                return
        else:
            loaded = offered
        if rules_digest(loaded.rules) == current:
            return
        before = list(self.state.rule_sets)
        self.engine.set_rules(loaded.rules)
        await ledger(
            ActionTarget(kind="recovery", customer_id=self.state.customer_id),
            f"rules-{self.state.events_seen + 1}",
            {"from": before, "to": self.state.rule_sets},
            subject=self.state.customer_id,
        )

    # --- messages ------------------------------------------------------------------------

    @workflow.signal
    def event(self, event: EventEnvelope, rules: Any = None) -> None:
        """An event about this customer (re-deliveries are ignored by `event.key`).

        `rules` is optional: the SDK converts arguments by type only when as many are sent as
        the handler declares, so both forms are validated here, a `RulesDigest` or (in runs
        recorded before it) the `RecoveryRules` themselves."""
        envelope = EventEnvelope.model_validate(event)
        offered: RecoveryRules | RulesDigest | None = None
        if isinstance(rules, RecoveryRules | RulesDigest):
            offered = rules
        elif isinstance(rules, dict):
            model = RulesDigest if "digest" in rules else RecoveryRules
            offered = model.model_validate(rules)
        self._queue.append((envelope, offered))

    @workflow.signal
    def update_rules(self, rules: RecoveryRules) -> None:
        """The rule sets deployed now; they apply from the next event on."""
        if rules_digest(rules.rules) != rules_digest(self.engine.rule_sets):
            self.engine.set_rules(rules.rules)
            self._changed = True

    @workflow.query
    def view(self) -> RecoveryView:
        return RecoveryView(
            state=self.state,
            ops_state=self._ops_state(),
            details=self._details(),
            next_wake=self.engine.next_wake(),
        )

    def _wake(self) -> None:
        self._changed = True

    @workflow.update
    async def approve(self, command: Approve) -> RecoveryView:
        approval = self.state.approval(command.approval_id)
        assert approval is not None  # the validator checked
        amount = command.amount or approval.amount
        status: Literal["approved", "approved_reduced"] = (
            "approved" if amount == approval.amount else "approved_reduced"
        )
        pending = None
        if approval.required > 1:
            pending = self.engine.add_approval(
                approval, command.by, workflow.now(), amount, command.note
            )
        plans = pending or self.engine.decide_approval(
            approval, status, command.by, workflow.now(), amount, command.note
        )
        await self._execute(plans)
        self._wake()
        return self.view()

    @approve.validator
    def _validate_approve(self, command: Approve) -> None:
        refusal = self.engine.approval_refusal(command.approval_id, command.by)
        if refusal:
            raise ValueError(refusal)
        approval = self.state.approval(command.approval_id)
        if approval is not None and command.amount is not None and command.amount > approval.amount:
            raise ValueError(
                f"cannot approve more than the {approval.amount} {approval.currency} requested"
            )

    @workflow.update
    async def reject(self, command: Reject) -> RecoveryView:
        approval = self.state.approval(command.approval_id)
        assert approval is not None
        plans = self.engine.decide_approval(
            approval, "rejected", command.by, workflow.now(), None, command.reason or None
        )
        await self._execute(plans)
        self._wake()
        return self.view()

    @reject.validator
    def _validate_reject(self, command: Reject) -> None:
        refusal = self.engine.approval_refusal(command.approval_id, command.by)
        if refusal:
            raise ValueError(refusal)

    def _rule_id(self, rule: str | None) -> str | None:
        if rule is None:
            return None
        ids = self.engine.rule_ids()
        if rule in ids:
            return rule
        matches = [r for r in ids if r.split("/", 1)[1] == rule]
        return matches[0] if len(matches) == 1 else rule

    @workflow.update
    async def silence(self, command: SilenceCommand) -> RecoveryView:
        now = workflow.now()
        until = command.until or now + (command.duration or timedelta(0))
        silence = Silence(
            rule=self._rule_id(command.rule), until=until, by=command.by, reason=command.reason
        )
        await workflow.wait_condition(lambda: self._recalled)
        self._dirty = True
        self.engine.silence(silence)
        await ledger(
            ActionTarget(kind="recovery", customer_id=self.state.customer_id),
            f"silence-{self.state.seq}-{len(self.state.silences)}",
            silence.model_dump(mode="json"),
            subject=self.state.customer_id,
        )
        self._upsert()
        self._wake()
        return self.view()

    @silence.validator
    def _validate_silence(self, command: SilenceCommand) -> None:
        now = workflow.now()
        if (command.until is None) == (command.duration is None):
            raise ValueError("give exactly one of until or duration")
        until = command.until or now + (command.duration or timedelta(0))
        if until.tzinfo is None:
            raise ValueError("until needs a timezone")
        if until <= now:
            raise ValueError(f"until {until.isoformat()} is not in the future")
        if until - now > timedelta(days=365):
            raise ValueError("a silence lasts at most 365 days")
        rule = self._rule_id(command.rule)
        if rule is not None and rule not in self.engine.rule_ids():
            known = ", ".join(self.engine.rule_ids())
            raise ValueError(f"unknown rule {command.rule!r}; the rules are {known}")

    @workflow.update
    async def unsilence(self, command: Unsilence) -> RecoveryView:
        self._dirty = True
        self.engine.unsilence(self._rule_id(command.rule))
        await ledger(
            ActionTarget(kind="recovery", customer_id=self.state.customer_id),
            f"unsilence-{self.state.seq}-{command.rule or 'customer'}",
            {"by": command.by, "rule": command.rule},
            subject=self.state.customer_id,
        )
        self._upsert()
        self._wake()
        return self.view()

    @unsilence.validator
    def _validate_unsilence(self, command: Unsilence) -> None:
        rule = self._rule_id(command.rule)
        now = workflow.now()
        if not any(x.rule == rule and x.until > now for x in self.state.silences):
            what = f"rule {command.rule}" if command.rule else "the customer"
            raise ValueError(f"{what} is not silenced")

    @workflow.update
    async def close_episode(self, command: CloseEpisode) -> RecoveryView:
        plans = self.engine.close_episode(workflow.now(), command.outcome, command.by)
        await self._execute(plans)
        self._wake()
        return self.view()

    @close_episode.validator
    def _validate_close_episode(self, command: CloseEpisode) -> None:
        if self.state.open_episode() is None:
            raise ValueError(f"customer {self.state.customer_id} has no open episode")
