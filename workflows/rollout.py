"""The rollout workflow: one per change, phase by phase over customer cohorts, with approvals,
change windows, bake-time analysis, gates and rollback in reverse order.

Workflow id `rollout-<change id>`. The decisions are the pure core's (workflows/rollout_core.py
and its topics: rollout_approvals, rollout_checks, rollout_commands, rollout_text); this module
holds the state, receives the commands, asks the core what to do and carries it out: the
activities and their ledger entries through rollout_effects, the waits and search attributes
itself, in the order the recorded histories hold them. The run is re-entrant over
`RolloutState.state`, so continue-as-new resumes mid-phase; updates are validated first and a
refused update changes nothing; the `state` query returns everything. Cohorts are chosen by
the activities from (change id, percent): the same customers on every call, cumulative from
phase to phase, and their ids never enter the history.
"""

from __future__ import annotations

import asyncio
import contextlib
from datetime import datetime, timedelta
from typing import Any

from temporalio import workflow

from workflows import metrics
from workflows.releases import has_change

with workflow.unsafe.imports_passed_through():
    from definitions.calendar import BusinessCalendar
    from definitions.models import RolloutSpec
    from workflows import (
        rollout_approvals,
        rollout_checks,
        rollout_commands,
        rollout_core,
        rollout_text,
    )
    from workflows.rollout_core import rollback_cause
    from workflows.rollout_effects import (
        apply_rollout_phase,
        ask_rollout_approvers,
        assess_rollout_impact,
        page_rollout_people,
        read_rollout_checks,
        record_rollout_step,
        revert_rollout_phases,
    )
    from workflows.rollout_model import (
        ChangeRequest,
        Decision,
        PhaseStatus,
        Reason,
        RolloutState,
        RolloutStateName,
        RolloutStatus,
        rollout_workflow_id,
    )
    from workflows.rollout_pinned import RolloutInput

__all__ = [
    "ChangeRequest",
    "RolloutStatus",
    "RolloutWorkflow",
    "rollback_cause",
    "rollout_workflow_id",
]

MAX_HISTORY_EVENTS = 10_000
# Search attributes carry the next deadline (OpsDueAt: an approval's paging time, a bake's
# end, a window's opening) and OpsState=stuck while a paged approval waits. Runs recorded
# before this upserted on state and stage changes only.
DUE_AT_PATCH = "rollout-due-at-stuck"
# The patches asked while carrying out effects live with them, in rollout_effects.


@workflow.defn(name="Rollout")
class RolloutWorkflow:
    def __init__(self) -> None:
        self._status: RolloutState | None = None
        self._spec: RolloutSpec | None = None
        self._changed = False
        self._upserted: tuple[object, ...] | None = None
        self._calendar: BusinessCalendar | None = None

    # --- plumbing ------------------------------------------------------------------------

    @property
    def status(self) -> RolloutState:
        assert self._status is not None
        return self._status

    @property
    def spec(self) -> RolloutSpec:
        assert self._spec is not None
        return self._spec

    def _count_verdict(self, phase: PhaseStatus) -> None:
        plan = metrics.definition_name(self.status.plan)
        metrics.rollout_phase_verdict(plan=plan, phase=phase.name, verdict=phase.verdict)

    async def _ledger(self, step: str, detail: dict[str, Any]) -> None:
        await record_rollout_step(self.status, step, detail)

    def _phase_calendar(self) -> BusinessCalendar:
        if self._calendar is None:
            outside = self.status.change.outside_windows
            self._calendar = rollout_core.phase_calendar(self.spec, outside_windows=outside)
        return self._calendar

    def _describe(self) -> str:
        return rollout_text.describe(self.status, self.spec)

    def _wake(self) -> None:
        self._changed = True

    def _sync_clocks(self) -> None:
        rollout_core.sync_clocks(self.status, workflow.now())

    def _upsert(self) -> None:
        due_at = has_change(DUE_AT_PATCH)
        attributes = rollout_core.search_attributes(self.status, self.spec, due_at=due_at)
        if attributes.shown == self._upserted:
            return
        self._upserted = attributes.shown
        workflow.upsert_search_attributes(attributes.updates)

    def _set_state(self, state: RolloutStateName, stage: str | None = None) -> None:
        s = self.status
        s.state = state
        if stage is not None:
            s.stage = stage
        self._sync_clocks()
        self._upsert()

    # --- run -----------------------------------------------------------------------------

    @workflow.run
    async def run(self, request: RolloutInput) -> RolloutStatus:
        self._spec = request.plan.rollout
        if request.carried is not None:
            self._status = request.carried
        else:
            self._status = rollout_core.initial_state(request, self.spec, workflow.now())
        self._upsert()
        s = self.status
        if s.state == "assessing":
            await self._assess()
        while not s.finished:
            info = workflow.info()
            if (
                info.is_continue_as_new_suggested()
                or info.get_current_history_length() > MAX_HISTORY_EVENTS
            ):
                await workflow.wait_condition(workflow.all_handlers_finished)
                workflow.continue_as_new(
                    RolloutInput(change=s.change, plan=request.plan, carried=s)
                )
            await self._step()
        self._sync_clocks()
        await workflow.wait_condition(workflow.all_handlers_finished)
        workflow.set_current_details(self._describe())
        return s

    async def _step(self) -> None:
        match rollout_core.next_step(self.status):
            case "begin_rollback":
                await self._begin_rollback()
            case "jump_to_full":
                await self._jump_to_full()
            case "await_approval":
                await self._await_approval()
            case "await_window":
                await self._await_window()
            case "apply":
                await self._apply()
            case "bake":
                await self._bake()
            case "hold_wait":
                await self._wait()
            case "roll_back":
                await self._roll_back()
            case "rolled_back_wait":
                await self._rolled_back_wait()
            case "frozen_wait":
                await self._frozen_wait()
            case "finish":
                self.status.finished = True

    async def _wait(self, until: datetime | None = None) -> None:
        """Sleep until `until`, a command, or the overall deadline, whichever comes first."""
        s = self.status
        wake = rollout_core.wake_at(s, until)
        workflow.set_current_details(self._describe())
        self._upsert()
        timeout = None
        if wake is not None:
            timeout = max(wake - workflow.now(), timedelta(seconds=1))
        # Consumed after the wait: a command that landed while an activity ran (flag already
        # set) wakes this pass at once instead of being lost until the next timer.
        with contextlib.suppress(asyncio.TimeoutError):
            await workflow.wait_condition(lambda: self._changed, timeout=timeout)
        self._changed = False
        rollout_core.note_deadline(s, workflow.now())

    # --- impact and approvals ------------------------------------------------------------

    async def _assess(self) -> None:
        s = self.status
        await assess_rollout_impact(s, self.spec)
        first = s.phases[0].name
        if s.approvals_needed:
            self._request_approval("start")
            self._set_state("awaiting_approval", first)
        else:
            self._set_state("waiting_window", first)

    def _request_approval(self, stage: str) -> None:
        # Since this patch the approvers are asked at once and reminded before the timeout.
        notify = has_change("approval-notices")
        rollout_approvals.request_approval(self.status, stage, workflow.now(), notify=notify)

    async def _await_approval(self) -> None:
        s = self.status
        move = rollout_approvals.next_approval_move(s, self.spec, workflow.now())
        if move.kind == "approved":
            await self._ledger(f"approved-{move.stage}", {"approvers": move.approvers})
            rollout_approvals.approval_granted(s)
            if move.stage == "start":
                self._set_state("waiting_window", s.phases[s.phase_index].name)
            else:
                await self._advance()
        elif move.kind == "page":
            self._upsert()
            await self._page(move.attention, approvers=True)
        elif move.kind in ("ask", "remind"):
            await ask_rollout_approvers(s, self.spec, move.stage, reminder=move.kind == "remind")
        else:
            await self._wait(move.until)

    async def _page(self, attention: str, *, approvers: bool = False) -> None:
        """Tell the owner (and the approvers' channel) that the rollout needs a person."""
        await page_rollout_people(
            self.status, self.spec, attention, self._describe(), approvers=approvers
        )

    # --- windows, apply, bake ------------------------------------------------------------

    async def _await_window(self) -> None:
        move = rollout_core.next_window_move(self.status, self._phase_calendar(), workflow.now())
        if move.apply:
            self._set_state("applying")
        else:
            await self._wait(move.until)

    async def _apply(self) -> None:
        await apply_rollout_phase(self.status, self.spec)
        self._set_state("baking")

    async def _bake(self) -> None:
        s = self.status
        move = rollout_checks.next_bake_move(s, self.spec, workflow.now())
        if move.kind == "promoted":
            phase = s.phases[s.phase_index]
            self._count_verdict(phase)
            await self._ledger(f"phase-{s.phase_index + 1}-promoted", {"phase": phase.name})
            await self._gate()
        elif move.kind == "read":
            await self._read_checks()
        elif move.kind == "end":
            await self._end_bake()
        else:
            await self._wait(move.until)

    async def _read_checks(self) -> None:
        s = self.status
        failed = await read_rollout_checks(s, self.spec)
        if failed is None:
            return
        phase = s.phases[s.phase_index]
        phase.verdict = "failed"
        self._count_verdict(phase)
        if failed.rollback_reason is not None:
            s.rollback_reason = failed.rollback_reason
            return
        assert failed.hold_reason is not None
        await self._hold(failed.hold_reason)

    async def _end_bake(self) -> None:
        s = self.status
        end = rollout_checks.end_of_bake(s, self.spec)
        if end.kind == "hold":
            await self._hold(end.reason)
            return
        self._count_verdict(s.phases[s.phase_index])
        if end.kind == "passed":
            await self._ledger(f"phase-{s.phase_index + 1}-passed", end.detail)
            await self._gate()

    async def _hold(self, reason: str) -> None:
        s = self.status
        s.hold_reason = reason
        self._set_state("held")
        await self._ledger(f"hold-{s.pages + 1}", {"reason": reason})
        await self._page(f"held: {reason}")

    async def _frozen_wait(self) -> None:
        s = self.status
        if not rollout_core.roll_forward(s):
            await self._wait()
            return
        phase = s.phases[s.phase_index]
        self._count_verdict(phase)
        await self._ledger(f"phase-{s.phase_index + 1}-rolled-forward", {"phase": phase.name})
        await self._gate()

    async def _gate(self) -> None:
        stage = rollout_core.gate_awaiting(self.status)
        if stage is not None:
            self._request_approval(stage)
            self._set_state("awaiting_approval")
            return
        await self._advance()

    async def _advance(self) -> None:
        s = self.status
        if rollout_core.advance(s):
            self._finish("completed")
            await self._ledger("completed", {"exposed": s.phases[-1].exposed_total})
            return
        self._set_state("waiting_window", s.phases[s.phase_index].name)

    def _finish(self, state: RolloutStateName) -> None:
        rollout_core.finish(self.status, workflow.now())
        self._set_state(state)

    async def _jump_to_full(self) -> None:
        s = self.status
        jump = rollout_core.jump_to_full(s)
        for phase in jump.judged:
            self._count_verdict(phase)
        await self._ledger("promote-full", {"approver": jump.approver})
        self._set_state("waiting_window", s.phases[s.phase_index].name)

    # --- rollback --------------------------------------------------------------------------

    async def _begin_rollback(self) -> None:
        s = self.status
        start = rollout_core.begin_rollback(s)
        if start.kind == "freeze":
            self._set_state("frozen")
            await self._ledger(
                f"frozen-{s.pages + 1}",
                {"reason": start.reason, "irreversible": start.irreversible},
            )
            await self._page(f"frozen: {start.reason}")
        elif start.kind == "reject":
            await self._ledger("rejected", {"reason": start.reason})
            self._finish("rejected")
        else:
            self._set_state("rolling_back")

    async def _roll_back(self) -> None:
        s = self.status
        reason = s.rollback_reason or "rolled back"
        s.rollbacks += 1
        metrics.rollout_rollback_started(
            plan=metrics.definition_name(s.plan), cause=rollback_cause(reason, aborted=s.aborted)
        )
        await self._ledger("rollback-started", {"reason": reason, "phases": list(s.applied)})
        await revert_rollout_phases(s, self.spec, reason)
        waits_for_retry = rollout_core.rolled_back(s, reason, workflow.now())
        await self._ledger(
            "rolled-back",
            {"reason": reason, "reverted": s.customers_reverted, "notified": s.customers_notified},
        )
        if waits_for_retry:
            self._set_state("rolled_back")
        else:
            self._finish("rolled_back")

    async def _rolled_back_wait(self) -> None:
        until = rollout_core.retry_closes_at(self.status)
        if workflow.now() >= until:
            self._finish("rolled_back")
            return
        await self._wait(until)

    # --- messages ------------------------------------------------------------------------

    @workflow.query
    def state(self) -> RolloutStatus:
        return self.status

    @workflow.query
    def timezone(self) -> str:
        """The plan's windows' timezone, as pinned: what `opsflow rollout status` shows
        moments in, without reading the registry."""
        return self.spec.windows.timezone

    async def _record(self, command: str, detail: dict[str, Any]) -> None:
        s = self.status
        s.commands += 1
        self._sync_clocks()
        self._upsert()
        self._wake()
        await self._ledger(f"command-{s.commands}-{command}", detail)

    @workflow.update
    async def approve(self, command: Decision) -> RolloutStatus:
        stage = rollout_commands.approve(self.status, command, workflow.now())
        await self._record("approve", {"approver": command.approver, "stage": stage})
        return self.status

    @approve.validator
    def _validate_approve(self, command: Decision) -> None:
        rollout_commands.refuse_approve(self.status, self.spec, command)

    @workflow.update
    async def reject(self, command: Decision) -> RolloutStatus:
        rollout_commands.reject(self.status, command)
        await self._record("reject", {"approver": command.approver, "reason": command.reason})
        return self.status

    @reject.validator
    def _validate_reject(self, command: Decision) -> None:
        rollout_commands.refuse_reject(self.status, self.spec, command)

    @workflow.update
    async def pause(self, command: Reason) -> RolloutStatus:
        rollout_commands.pause(self.status, command)
        await self._record("pause", {"reason": command.reason, **rollout_commands.who(command)})
        return self.status

    @pause.validator
    def _validate_pause(self, command: Reason) -> None:
        rollout_commands.refuse_pause(self.status)

    @workflow.update
    async def resume(self, command: Reason | None = None) -> RolloutStatus:
        detail = rollout_commands.resume(self.status, self.spec, workflow.now())
        await self._record("resume", {**detail, **rollout_commands.who(command)})
        return self.status

    @resume.validator
    def _validate_resume(self, command: Reason | None = None) -> None:
        rollout_commands.refuse_resume(self.status)

    @workflow.update
    async def promote(self, command: Reason | None = None) -> RolloutStatus:
        s = self.status
        rollout_commands.promote(s)
        await self._record("promote", {"phase": s.stage, **rollout_commands.who(command)})
        return s

    @promote.validator
    def _validate_promote(self, command: Reason | None = None) -> None:
        rollout_commands.refuse_promote(self.status)

    @workflow.update
    async def promote_full(self, command: Decision) -> RolloutStatus:
        rollout_commands.promote_full(self.status, command, workflow.now())
        await self._record("promote-full", {"approver": command.approver})
        return self.status

    @promote_full.validator
    def _validate_promote_full(self, command: Decision) -> None:
        rollout_commands.refuse_promote_full(self.status, self.spec, command)

    @workflow.update
    async def abort(self, command: Reason) -> RolloutStatus:
        s = self.status
        outcome = rollout_commands.abort(s, command, workflow.now())
        if outcome.command == "accept":
            self._set_state("frozen")
        detail = {"reason": outcome.reason, **rollout_commands.who(command)}
        await self._record(outcome.command, detail)
        return s

    @abort.validator
    def _validate_abort(self, command: Reason) -> None:
        rollout_commands.refuse_abort(self.status)

    @workflow.update
    async def retry(self, command: Reason | None = None) -> RolloutStatus:
        s = self.status
        # Since this patch a retry is a new attempt in full: the earlier attempt's approvals
        # count for none of its gates, and the start is approved afresh.
        fresh = has_change("retry-fresh-approvals")
        if rollout_commands.retry(s, self.spec, fresh_approvals=fresh):
            self._request_approval("start")
        await self._record("retry", {"attempt": s.attempt, **rollout_commands.who(command)})
        return s

    @retry.validator
    def _validate_retry(self, command: Reason | None = None) -> None:
        rollout_commands.refuse_retry(self.status)
