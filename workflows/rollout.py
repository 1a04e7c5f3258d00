"""The rollout workflow: one per change, phase by phase over customer cohorts, with approvals,
change windows, bake-time analysis, gates and rollback in reverse order.

Workflow id `rollout-<change id>`. The run is a small state machine over `RolloutStatus.state`
(re-entrant, so continue-as-new resumes mid-phase); updates are validated first and a refused
update changes nothing; the `state` query returns everything. Cohorts are chosen by the
activities from (change id, percent): the same customers on every call, cumulative from phase
to phase, and their ids never enter the history.
"""

from __future__ import annotations

import asyncio
import contextlib
from datetime import datetime, timedelta
from typing import Any

from temporalio import workflow
from temporalio.common import RetryPolicy, SearchAttributeUpdate
from temporalio.exceptions import ActivityError

from activities import search_attributes as sa
from workflows import metrics
from workflows.actions import ACTIVITY_RETRY, ActionTarget, call, ledger
from workflows.rollout_model import (
    TERMINAL,
    Approval,
    ChangeRequest,
    CheckStatus,
    Decision,
    PhaseStatus,
    Reading,
    Reason,
    RolloutState,
    RolloutStatus,
    StartRollout,
    Stopwatch,
    rollout_workflow_id,
)

with workflow.unsafe.imports_passed_through():
    from activities.models import (
        ChangeApplied,
        ChangeReverted,
        Cohort,
        CohortSpec,
        MessageSent,
        MetricCohort,
        MetricReading,
        ReadMetric,
        SelectCohort,
        SendMessage,
    )
    from activities.rollout_contracts import (
        ApplyPhase,
        CustomerNoticeRequest,
        NotifyPhaseCustomers,
        PhaseCustomersNotified,
        RevertPhase,
    )
    from definitions.calendar import BusinessCalendar
    from definitions.models import Phase, RolloutSpec
    from workflows.rollout_checks import judge, needs_baseline, record, threshold_text
    from workflows.rollout_text import percent_text

__all__ = ["ChangeRequest", "RolloutStatus", "RolloutWorkflow", "rollout_workflow_id"]

MAX_HISTORY_EVENTS = 10_000
# Search attributes carry the next deadline (OpsDueAt: an approval's paging time, a bake's
# end, a window's opening) and OpsState=stuck while a paged approval waits. Runs recorded
# before this upserted on state and stage changes only.
DUE_AT_PATCH = "rollout-due-at-stuck"
RETRY_WINDOW = timedelta(days=7)
"""After an abort, how long the rollout waits for `retry` before it ends as rolled back."""
METRIC_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    maximum_interval=timedelta(seconds=10),
    maximum_attempts=3,
)
LONG_ACTIVITY = timedelta(hours=2)
HEARTBEAT = timedelta(seconds=20)
"""Long activities heartbeat per batch or customer: a killed worker's attempt is retried
elsewhere within this, from its last recorded progress."""
_CHANNELS = {"email": "email", "slack": "chat", "chat": "chat", "pager": "pager", "sms": "chat"}


def _who(command: Reason | None) -> dict[str, str]:
    """`{"by": ...}` for a command's ledger entry; nothing from a client that did not say."""
    return {"by": command.by} if command is not None and command.by else {}


def rollback_cause(reason: str, *, aborted: bool) -> str:
    """A rollback's reason (free text, set where it is decided) as a bounded metric label."""
    if aborted:
        return "aborted"
    for prefix, cause in (
        ("rejected by ", "rejected"),
        ("the overall deadline ", "deadline"),
        ("checks ", "inconclusive"),
        ("check ", "check_failed"),
    ):
        if reason.startswith(prefix):
            return cause
    return "other"


def _value_text(metric: str, value: float | None) -> str:
    if value is None:
        return "no data"
    if metric.endswith("_rate"):
        return f"{value * 100:.1f}%"
    return f"{value:.3g}"


@workflow.defn(name="Rollout")
class RolloutWorkflow:
    def __init__(self) -> None:
        self._status: RolloutStatus | None = None
        self._spec: RolloutSpec | None = None
        self._changed = False
        self._upserted: tuple[object, ...] | None = None
        self._blackouts: BusinessCalendar | None = None

    # --- plumbing ------------------------------------------------------------------------

    @property
    def status(self) -> RolloutStatus:
        assert self._status is not None
        return self._status

    @property
    def spec(self) -> RolloutSpec:
        assert self._spec is not None
        return self._spec

    def _key(self, step: str) -> str:
        return f"{workflow.info().workflow_id}/a{self.status.attempt}/{step}"

    def _target(self) -> ActionTarget:
        s = self.status
        return ActionTarget(
            kind="rollout",
            customer_id=s.change.change_id,
            owner=s.change.owner,
            definition=s.plan,
        )

    def _count_verdict(self, phase: PhaseStatus) -> None:
        plan = metrics.definition_name(self.status.plan)
        metrics.rollout_phase_verdict(plan=plan, phase=phase.name, verdict=phase.verdict)

    async def _ledger(self, step: str, detail: dict[str, Any]) -> None:
        s = self.status
        await ledger(self._target(), f"a{s.attempt}-{step}", detail, subject=s.change.change_id)

    def _cohort(self, phase: Phase) -> CohortSpec:
        return CohortSpec(
            seed=self.status.change.change_id,
            percent=phase.cohort.percent,
            condition=phase.cohort.when,
        )

    def _calendar(self) -> BusinessCalendar:
        """When phases may start: the windows minus blackouts; with `outside_windows`, any
        time but a blackout."""
        if not self.status.change.outside_windows:
            return self.spec.change_calendar()
        if self._blackouts is None:
            closed = sorted({day for b in self.spec.blackouts for day in b.days()})
            self._blackouts = BusinessCalendar(
                timezone=self.spec.windows.timezone, hours="24x7", resolved_holidays=closed
            )
        return self._blackouts

    def _local(self, moment: datetime) -> str:
        calendar = self.spec.windows
        return calendar.local_time(moment).strftime("%a %H:%M") + f" {calendar.timezone}"

    def _wake(self) -> None:
        self._changed = True

    def _sync_clocks(self) -> None:
        """The deadline runs unless paused, held or done; a bake runs only while baking."""
        s = self.status
        now = workflow.now()
        waiting_on_people = s.paused or s.state in ("held", "frozen", "rolled_back")
        if waiting_on_people or s.finished or s.state in TERMINAL:
            s.active.pause(now)
        else:
            s.active.resume(now)
        phase = s.current
        if phase is not None:
            if s.state == "baking" and not s.paused:
                phase.bake.resume(now)
            else:
                phase.bake.pause(now)

    def _upsert(self) -> None:
        s = self.status
        if not workflow.patched(DUE_AT_PATCH):
            values: tuple[object, ...] = (s.ops_state, s.stage)
            if values == self._upserted:
                return
            self._upserted = values
            workflow.upsert_search_attributes(
                [
                    sa.OPS_KIND.value_set("rollout"),
                    sa.OPS_OWNER.value_set(s.change.owner),
                    sa.OPS_STATE.value_set(s.ops_state),
                    sa.OPS_STAGE.value_set(s.stage),
                    sa.OPS_DEFINITION.value_set(s.plan),
                ]
            )
            return
        # An approval paged for (past its time) waits for a person: OpsState=stuck.
        overdue = s.state == "awaiting_approval" and s.approval_paged
        state = sa.STUCK if overdue else s.ops_state
        due = self._next_deadline()
        values = (state, s.stage, due)
        if values == self._upserted:
            return
        self._upserted = values
        updates: list[SearchAttributeUpdate[Any]] = [
            sa.OPS_KIND.value_set("rollout"),
            sa.OPS_OWNER.value_set(s.change.owner),
            sa.OPS_STATE.value_set(state),
            sa.OPS_STAGE.value_set(s.stage),
            sa.OPS_DEFINITION.value_set(s.plan),
        ]
        if due is not None:  # kept once nothing is due (see OPS_DUE_AT)
            updates.append(sa.OPS_DUE_AT.value_set(due))
        workflow.upsert_search_attributes(updates)

    def _next_deadline(self) -> datetime | None:
        """An approval's paging time, a bake's end or a change window's opening."""
        s = self.status
        if s.paused or s.finished:
            return None
        if s.state == "awaiting_approval" and s.approval_since and not s.approval_paged:
            return s.approval_since + self.spec.approvals.timeout
        phase = s.current
        if s.state == "baking" and phase is not None:
            return phase.bake.moment_reaching(phase.bake_total)
        if s.state == "waiting_window":
            return s.next_window
        return None

    def _set_state(self, state: RolloutState, stage: str | None = None) -> None:
        s = self.status
        s.state = state
        if stage is not None:
            s.stage = stage
        self._sync_clocks()
        self._upsert()

    # --- run -----------------------------------------------------------------------------

    @workflow.run
    async def run(self, request: StartRollout) -> RolloutStatus:
        self._spec = request.plan.rollout
        if request.carried is not None:
            self._status = request.carried
        else:
            spec = self.spec
            self._status = RolloutStatus(
                change=request.change,
                attempt=request.attempt,
                approvals_scoped=request.attempt > 1,
                plan=request.plan.ref,
                risk=spec.impact.risk,
                deadline=spec.deadline,
                phases=[
                    PhaseStatus(
                        name=phase.name,
                        percent=phase.cohort.percent,
                        condition=phase.cohort.when,
                        irreversible=phase.irreversible,
                        gate=phase.gate,
                        bake_total=phase.bake,
                        checks=self._fresh_checks(phase),
                    )
                    for phase in spec.phases
                ],
            )
            self.status.active.resume(workflow.now())
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
                    StartRollout(change=s.change, plan=request.plan, carried=s)
                )
            await self._step()
        self._sync_clocks()
        await workflow.wait_condition(workflow.all_handlers_finished)
        workflow.set_current_details(self._describe())
        return s

    def _fresh_checks(self, phase: Phase) -> list[CheckStatus]:
        return [
            CheckStatus(metric=c.metric, threshold=threshold_text(c), on_fail=c.on_fail)
            for c in phase.checks
        ]

    async def _step(self) -> None:
        s = self.status
        if s.rollback_reason and s.state not in ("rolling_back", "rolled_back", "frozen"):
            await self._begin_rollback()
            return
        if s.promote_full_by and s.state in (
            "waiting_window",
            "baking",
            "held",
            "awaiting_approval",
        ):
            await self._jump_to_full()
            return
        handler = {
            "awaiting_approval": self._await_approval,
            "waiting_window": self._await_window,
            "applying": self._apply,
            "baking": self._bake,
            "held": self._hold_wait,
            "rolling_back": self._roll_back,
            "rolled_back": self._rolled_back_wait,
            "frozen": self._frozen_wait,
        }.get(s.state)
        if handler is None:
            s.finished = True
            return
        await handler()

    async def _wait(self, until: datetime | None = None) -> None:
        """Sleep until `until`, a command, or the overall deadline, whichever comes first."""
        s = self.status
        moments = [until] if until is not None else []
        if s.deadline is not None and (due := s.active.moment_reaching(s.deadline)):
            moments.append(due)
        workflow.set_current_details(self._describe())
        self._upsert()
        timeout = None
        if moments:
            timeout = max(min(moments) - workflow.now(), timedelta(seconds=1))
        # Consumed after the wait: a command that landed while an activity ran (flag already
        # set) wakes this pass at once instead of being lost until the next timer.
        with contextlib.suppress(asyncio.TimeoutError):
            await workflow.wait_condition(lambda: self._changed, timeout=timeout)
        self._changed = False
        if (
            s.deadline is not None
            and s.rollback_reason is None
            and s.state not in ("rolling_back", "rolled_back", "frozen", *TERMINAL)
            and s.active.spent(workflow.now()) >= s.deadline
        ):
            s.rollback_reason = f"the overall deadline of {s.deadline} passed"

    # --- impact and approvals ------------------------------------------------------------

    async def _assess(self) -> None:
        s = self.status
        sizes = []
        for number, phase in enumerate(self.spec.phases):
            cohort: Cohort = await call(
                "crm.select_cohort", SelectCohort(cohort=self._cohort(phase), max_ids=0), Cohort
            )
            s.phases[number].cohort_size = cohort.size
            s.phases[number].eligible = cohort.eligible
            sizes.append(
                {"phase": phase.name, "percent": phase.cohort.percent, "size": cohort.size}
            )
        risk = self.spec.impact.risk
        s.approvals_needed = {"standard": 0, "normal": self.spec.approvals.required}.get(risk, 1)
        outside = s.change.outside_windows and risk != "emergency"
        if outside:
            # Starting outside the change windows is never pre-approved.
            s.approvals_needed = max(s.approvals_needed, 1)
        await self._ledger(
            "impact",
            {
                "risk": risk,
                "journeys": list(self.spec.impact.journeys),
                "compliance": list(self.spec.impact.compliance),
                "phases": sizes,
                "approvals_needed": s.approvals_needed,
                "group": self.spec.approvals.group,
                "windows": "skipped (emergency)"
                if risk == "emergency"
                else "outside windows allowed (blackouts apply)"
                if outside
                else "apply",
            },
        )
        first = s.phases[0].name
        if s.approvals_needed:
            self._request_approval("start")
            self._set_state("awaiting_approval", first)
        else:
            self._set_state("waiting_window", first)

    def _request_approval(self, stage: str) -> None:
        s = self.status
        s.approval_for, s.approval_since, s.approval_paged = stage, workflow.now(), False
        # Since this patch the approvers are asked at once and reminded before the timeout.
        s.approval_notify, s.approval_notices = workflow.patched("approval-notices"), 0

    def _approvals_for(self, stage: str) -> list[Approval]:
        s = self.status
        return [
            a
            for a in s.approvals
            if a.stage == stage and (a.attempt == s.attempt or not s.approvals_scoped)
        ]

    def _needed_for(self, stage: str) -> int:
        s = self.status
        if stage == "start":
            return s.approvals_needed
        return 1 if s.risk == "emergency" else self.spec.approvals.required

    async def _await_approval(self) -> None:
        s = self.status
        stage = s.approval_for or "start"
        if len(self._approvals_for(stage)) >= self._needed_for(stage):
            names = [a.approver for a in self._approvals_for(stage)]
            await self._ledger(f"approved-{stage}", {"approvers": names})
            s.approval_for = s.approval_since = None
            if stage == "start":
                self._set_state("waiting_window", s.phases[s.phase_index].name)
            else:
                await self._advance()
            return
        page_at = None
        if not s.approval_paged and s.approval_since is not None:
            page_at = s.approval_since + self.spec.approvals.timeout
            if workflow.now() >= page_at:
                s.approval_paged = True
                self._upsert()
                await self._page(
                    f"approval for {stage} has waited {self.spec.approvals.timeout}",
                    approvers=True,
                )
                return
        remind_at = None
        if s.approval_notify and s.approval_since is not None and not s.approval_paged:
            reminders = self.spec.approvals.reminders
            if s.approval_notices == 0:
                await self._ask_approvers(stage, reminder=False)
                return
            if s.approval_notices <= reminders:
                share = s.approval_notices / (reminders + 1)
                remind_at = s.approval_since + self.spec.approvals.timeout * share
                if workflow.now() >= remind_at:
                    await self._ask_approvers(stage, reminder=True)
                    return
        await self._wait(min((m for m in (page_at, remind_at) if m is not None), default=None))

    async def _ask_approvers(self, stage: str, *, reminder: bool) -> None:
        """Ask the approvers' group on the plan's channel what is asked, for which cohort, by
        when, and the exact command that answers."""
        s = self.status
        approvals = self.spec.approvals
        s.approval_notices += 1
        assert s.approval_since is not None
        deadline = self._local(s.approval_since + approvals.timeout)
        # The start unlocks the first phase; a gate after phase X unlocks the next one.
        number = s.phase_index if stage == "start" else min(s.phase_index + 1, len(s.phases) - 1)
        unlocked = s.phases[number]
        change_id = s.change.change_id
        what = "the start of the rollout" if stage == "start" else f"the gate after phase {stage}"
        ask = {
            "what": what,
            "stage": stage,
            "group": approvals.group,
            "phase": unlocked.name,
            "percent": f"{unlocked.percent:g}",
            "customers": unlocked.cohort_size,
            "given": len(self._approvals_for(stage)),
            "needed": self._needed_for(stage),
            "deadline": deadline,
            "reminder": reminder,
            "approve": f"opsflow rollout approve {change_id} --approver <your name>",
            "reject": f"opsflow rollout reject {change_id} --approver <your name> --reason ...",
        }
        context = {
            "change": {
                "id": change_id,
                "owner": s.change.owner,
                "plan": s.plan,
                "reason": s.change.reason,
                "attempt": s.attempt,
            },
            "ask": ask,
        }
        step = f"approval-{stage}-{s.approval_notices}"
        try:
            await call(
                "notify.send",
                SendMessage(
                    idempotency_key=self._key(step),
                    channel=_CHANNELS[approvals.channel],
                    recipient=f"group:{approvals.group}",
                    template="rollout-approval",
                    context=context,
                    severity="info",
                ),
                MessageSent,
            )
        except ActivityError as exc:
            workflow.logger.warning("asking %s failed: %s", approvals.group, exc.cause)
        await self._ledger(step, {"asked": approvals.group, **ask})

    async def _page(self, attention: str, *, approvers: bool = False) -> None:
        """Tell the owner (and the approvers' channel) that the rollout needs a person."""
        s = self.status
        s.pages += 1
        phase = s.current
        context = {
            "change": {
                "id": s.change.change_id,
                "owner": s.change.owner,
                "plan": s.plan,
                "reason": s.change.reason,
                "attention": attention,
                "details": self._describe(),
            },
            "phase": {
                "name": phase.name if phase else "",
                "percent": phase.percent if phase else 0,
            },
        }
        recipients = [("pager", f"owner:{s.change.owner}")]
        if approvers:
            channel = _CHANNELS[self.spec.approvals.channel]
            recipients.insert(0, (channel, f"group:{self.spec.approvals.group}"))
        for number, (channel, recipient) in enumerate(recipients):
            try:
                await call(
                    "notify.send",
                    SendMessage(
                        idempotency_key=self._key(f"page-{s.pages}/{number}"),
                        channel=channel,
                        recipient=recipient,
                        template="rollout-attention",
                        context=context,
                        severity="warning",
                    ),
                    MessageSent,
                )
            except ActivityError as exc:
                workflow.logger.warning("paging %s failed: %s", recipient, exc.cause)
        await self._ledger(f"page-{s.pages}", {"attention": attention, "approvers": approvers})

    # --- windows, apply, bake ------------------------------------------------------------

    async def _await_window(self) -> None:
        s = self.status
        phase = s.phases[s.phase_index]
        s.stage = phase.name
        if s.paused:
            await self._wait()
            return
        now = workflow.now()
        if s.risk == "emergency" or self._calendar().is_open(now):
            s.next_window = None
            self._set_state("applying")
            return
        s.next_window = self._calendar().next_open(now)
        await self._wait(s.next_window)

    async def _apply(self) -> None:
        s = self.status
        number = s.phase_index
        phase = s.phases[number]
        spec = self.spec.phases[number]
        # Since this patch the apply records exactly whom it exposed; rollback reads that.
        recorded = workflow.patched("exposure-record")
        applied: ChangeApplied = await workflow.execute_activity(
            "changes.apply",
            ApplyPhase(
                idempotency_key=self._key(f"phase-{number + 1}/apply"),
                change_id=s.change.change_id,
                flag_key=self.spec.change.key,
                value=self.spec.change.value,
                cohort=self._cohort(spec),
                attempt=s.attempt if recorded else None,
                phase=number + 1 if recorded else None,
            ),
            result_type=ChangeApplied,
            start_to_close_timeout=LONG_ACTIVITY,
            heartbeat_timeout=HEARTBEAT,
            retry_policy=ACTIVITY_RETRY,
        )
        now = workflow.now()
        if number not in s.applied:
            s.applied.append(number)
        phase.applied_at, phase.exposed_total = now, applied.total_exposed
        phase.recorded = recorded
        phase.bake, phase.readings_taken, phase.verdict = Stopwatch(), 0, "baking"
        phase.checks = self._fresh_checks(spec)
        await self._ledger(
            f"phase-{number + 1}-applied",
            {
                "phase": phase.name,
                "percent": phase.percent,
                "newly_exposed": applied.exposed,
                "total_exposed": applied.total_exposed,
            },
        )
        self._set_state("baking")

    async def _bake(self) -> None:
        s = self.status
        number = s.phase_index
        phase = s.phases[number]
        spec = self.spec.phases[number]
        if s.paused:
            await self._wait()
            return
        if s.promote_requested:
            s.promote_requested = False
            phase.verdict = "promoted"
            self._count_verdict(phase)
            await self._ledger(f"phase-{number + 1}-promoted", {"phase": phase.name})
            await self._gate()
            return
        interval = self.spec.analysis.interval
        spent = phase.bake.spent(workflow.now())
        next_reading = interval * (phase.readings_taken + 1)
        if spec.checks and next_reading <= phase.bake_total and spent >= next_reading:
            phase.readings_taken += 1
            await self._read_checks(number)
            return
        if spent >= phase.bake_total:
            await self._end_bake(number)
            return
        target = phase.bake_total
        if spec.checks and next_reading <= phase.bake_total:
            target = next_reading
        await self._wait(phase.bake.moment_reaching(target))

    async def _read_checks(self, number: int) -> None:
        s = self.status
        phase = s.phases[number]
        spec = self.spec.phases[number]
        analysis = self.spec.analysis
        now = workflow.now()

        async def read(metric: str, cohort: MetricCohort, window: timedelta) -> MetricReading:
            result: MetricReading = await workflow.execute_activity(
                "metrics.read",
                ReadMetric(metric=metric, cohort=cohort, window_start=now - window, window_end=now),
                result_type=MetricReading,
                start_to_close_timeout=timedelta(seconds=30),
                retry_policy=METRIC_RETRY,
            )
            return result

        everyone = phase.percent >= 100 and phase.condition is None

        async def read_baseline(metric: str, window: timedelta) -> MetricReading:
            """The customers not exposed to the change, over the same window; once a phase
            reaches everyone there are none, so then all customers before the first phase."""
            if not everyone:
                cohort = MetricCohort(exclude_change_id=s.change.change_id)
                return await read(metric, cohort, window)
            first = s.phases[s.applied[0]].applied_at if s.applied else None
            before = first if first is not None and first < now else now
            result: MetricReading = await workflow.execute_activity(
                "metrics.read",
                ReadMetric(
                    metric=metric,
                    cohort=MetricCohort(),
                    window_start=before - window,
                    window_end=before,
                ),
                result_type=MetricReading,
                start_to_close_timeout=timedelta(seconds=30),
                retry_policy=METRIC_RETRY,
            )
            return result

        async def one(check_number: int) -> Reading:
            check = spec.checks[check_number]
            try:
                exposed = await read(
                    check.metric, MetricCohort(change_id=s.change.change_id), check.window
                )
                baseline = None
                if needs_baseline(check):
                    baseline = await read_baseline(check.metric, check.window)
            except ActivityError as exc:
                return Reading(at=now, verdict="error", note=str(exc.cause or exc)[:200])
            verdict, note = judge(
                check,
                analysis,
                exposed.value,
                exposed.sample_size,
                baseline.value if baseline else None,
                baseline.sample_size if baseline else 0,
            )
            return Reading(
                at=now,
                value=exposed.value,
                baseline=baseline.value if baseline else None,
                sample_size=exposed.sample_size,
                verdict=verdict,
                note=note,
            )

        readings = await asyncio.gather(*(one(n) for n in range(len(spec.checks))))
        # Since this patch failure_limit counts failing readings in a row unless the plan
        # says `failure_count: total` (before it, always the whole bake).
        consecutive = analysis.failure_count == "consecutive" and workflow.patched(
            "consecutive-failures"
        )
        failed: list[tuple[CheckStatus, Reading]] = []
        for status, reading in zip(phase.checks, readings, strict=True):
            was_failed = status.verdict == "failed"
            record(status, reading, analysis, consecutive=consecutive)
            if status.verdict == "failed" and not was_failed:
                failed.append((status, reading))
        if not failed:
            return
        detail = {
            "phase": phase.name,
            "failed": [
                {"metric": c.metric, "failures": c.failures, "note": r.note} for c, r in failed
            ],
        }
        await self._ledger(f"phase-{number + 1}-reading-{phase.readings_taken}-failed", detail)
        rollback = [c for c, _ in failed if c.on_fail == "rollback"]
        phase.verdict = "failed"
        self._count_verdict(phase)
        if rollback:
            check, reading = next((c, r) for c, r in failed if c.on_fail == "rollback")
            s.rollback_reason = (
                f"check {check.metric} failed in phase {phase.name}: "
                f"{reading.note or 'too many metric errors'}"
            )
            return
        check, reading = failed[0]
        await self._hold(
            f"check {check.metric} failed in phase {phase.name}: "
            f"{reading.note or 'too many metric errors'}"
        )

    async def _end_bake(self, number: int) -> None:
        s = self.status
        phase = s.phases[number]
        policy = self.spec.analysis.inconclusive
        unsure = [c for c in phase.checks if c.verdict in ("pending", "inconclusive")]
        if unsure and policy != "pass":
            names = ", ".join(c.metric for c in unsure)
            if policy == "fail":
                phase.verdict = "failed"
                self._count_verdict(phase)
                s.rollback_reason = f"checks {names} inconclusive in phase {phase.name}"
                return
            await self._hold(f"checks {names} inconclusive at the end of phase {phase.name}")
            return
        phase.verdict = "passed"
        self._count_verdict(phase)
        await self._ledger(
            f"phase-{number + 1}-passed",
            {"phase": phase.name, "checks": {c.metric: c.verdict for c in phase.checks}},
        )
        await self._gate()

    async def _hold(self, reason: str) -> None:
        s = self.status
        s.hold_reason = reason
        self._set_state("held")
        await self._ledger(f"hold-{s.pages + 1}", {"reason": reason})
        await self._page(f"held: {reason}")

    async def _hold_wait(self) -> None:
        await self._wait()

    async def _frozen_wait(self) -> None:
        s = self.status
        if not s.promote_requested:
            await self._wait()
            return
        # Roll forward: the irreversible phase stays; the rollout carries on.
        s.promote_requested = False
        s.rollback_reason = s.frozen_reason = None
        phase = s.phases[s.phase_index]
        phase.verdict = "promoted"
        self._count_verdict(phase)
        await self._ledger(f"phase-{s.phase_index + 1}-rolled-forward", {"phase": phase.name})
        await self._gate()

    async def _gate(self) -> None:
        s = self.status
        phase = s.phases[s.phase_index]
        last = s.phase_index == len(s.phases) - 1
        if phase.gate == "approval" and not last:
            self._request_approval(phase.name)
            self._set_state("awaiting_approval")
            return
        await self._advance()

    async def _advance(self) -> None:
        s = self.status
        s.phase_index += 1
        if s.phase_index >= len(s.phases):
            s.phase_index = len(s.phases) - 1
            s.ended_reason = f"all {len(s.phases)} phases passed"
            self._finish("completed")
            await self._ledger("completed", {"exposed": s.phases[-1].exposed_total})
            return
        self._set_state("waiting_window", s.phases[s.phase_index].name)

    def _finish(self, state: RolloutState) -> None:
        s = self.status
        s.finished, s.finished_at = True, workflow.now()
        self._set_state(state)

    async def _jump_to_full(self) -> None:
        s = self.status
        approver = s.promote_full_by
        s.promote_full_by = None
        last = len(s.phases) - 1
        current = s.phases[s.phase_index]
        if s.phase_index in s.applied and current.verdict in ("baking", "failed"):
            current.verdict = "promoted"
            self._count_verdict(current)
        for number in range(s.phase_index + (1 if s.phase_index in s.applied else 0), last):
            s.phases[number].verdict = "skipped"
            self._count_verdict(s.phases[number])
        s.phase_index = last
        s.hold_reason = s.approval_for = None
        await self._ledger("promote-full", {"approver": approver})
        self._set_state("waiting_window", s.phases[last].name)

    # --- rollback --------------------------------------------------------------------------

    async def _begin_rollback(self) -> None:
        s = self.status
        reason = s.rollback_reason or "rolled back"
        frozen = [s.phases[n].name for n in s.applied if s.phases[n].irreversible]
        if frozen:
            s.frozen_reason = (
                f"{reason}; phase {', '.join(frozen)} is irreversible: roll forward (promote) "
                "or accept (abort)"
            )
            s.hold_reason = None
            self._set_state("frozen")
            await self._ledger(f"frozen-{s.pages + 1}", {"reason": reason, "irreversible": frozen})
            await self._page(f"frozen: {reason}")
            return
        starting = s.state == "awaiting_approval" and s.approval_for == "start"
        if starting and not s.applied and not s.aborted:
            s.ended_reason = reason
            await self._ledger("rejected", {"reason": reason})
            self._finish("rejected")
            return
        s.hold_reason = None
        s.approval_for = None
        self._set_state("rolling_back")

    async def _roll_back(self) -> None:
        s = self.status
        reason = s.rollback_reason or "rolled back"
        s.rollbacks += 1
        metrics.rollout_rollback_started(
            plan=metrics.definition_name(s.plan), cause=rollback_cause(reason, aborted=s.aborted)
        )
        await self._ledger("rollback-started", {"reason": reason, "phases": list(s.applied)})
        notice = self.spec.rollback.notify
        # Before this patch the first revert undid the whole change; now each phase reverts
        # its own customers (its cohort minus the earlier phases'), last phase first.
        scoped = workflow.patched("phase-scoped-revert")
        for position in range(len(s.applied) - 1, -1, -1):
            number = s.applied[position]
            phase = s.phases[number]
            spec = self.spec.phases[number]
            earlier = [self._cohort(self.spec.phases[n]) for n in s.applied[:position]]
            # A phase applied with the exposure record reverts and notifies exactly whom it
            # exposed; older phases recompute their cohorts.
            attempt = s.attempt if phase.recorded else None
            phase_number = number + 1 if phase.recorded else None
            reverted: ChangeReverted = await call(
                "changes.revert",
                RevertPhase(
                    idempotency_key=self._key(f"rollback/phase-{number + 1}/revert"),
                    change_id=s.change.change_id,
                    flag_key=self.spec.change.key,
                    cohort=self._cohort(spec) if scoped else None,
                    earlier=earlier if scoped else [],
                    attempt=attempt,
                    phase=phase_number,
                ),
                ChangeReverted,
            )
            s.customers_reverted += reverted.reverted
            done: PhaseCustomersNotified = await workflow.execute_activity(
                "rollout.notify_phase_customers",
                NotifyPhaseCustomers(
                    idempotency_key=self._key(f"rollback/phase-{number + 1}/customers"),
                    change_id=s.change.change_id,
                    phase=phase.name,
                    cohort=self._cohort(spec),
                    earlier=earlier,
                    attempt=attempt,
                    phase_number=phase_number,
                    notice=CustomerNoticeRequest(channel=notice.channel, template=notice.template)
                    if notice
                    else None,
                    recovery=list(self.spec.rollback.recovery),
                    context={
                        "change": {
                            "id": s.change.change_id,
                            "owner": s.change.owner,
                            "reason": s.change.reason,
                            "plan": s.plan,
                            "rollback_reason": reason,
                        },
                        "phase": {"name": phase.name, "percent": phase.percent},
                    },
                ),
                result_type=PhaseCustomersNotified,
                start_to_close_timeout=LONG_ACTIVITY,
                heartbeat_timeout=HEARTBEAT,
                retry_policy=ACTIVITY_RETRY,
            )
            phase.reverted, phase.notified = True, done.notified
            s.customers_notified += done.notified
            await self._ledger(
                f"rollback-phase-{number + 1}",
                {
                    "phase": phase.name,
                    "reverted": reverted.reverted,
                    "customers": done.customers,
                    "notified": done.notified,
                    "recovery_actions": done.recovery_actions,
                    "failed": done.failed,
                },
            )
        s.ended_reason = reason
        s.rolled_back_at = workflow.now()
        await self._ledger(
            "rolled-back",
            {"reason": reason, "reverted": s.customers_reverted, "notified": s.customers_notified},
        )
        if s.aborted:
            self._set_state("rolled_back")
        else:
            self._finish("rolled_back")

    async def _rolled_back_wait(self) -> None:
        s = self.status
        assert s.rolled_back_at is not None
        until = s.rolled_back_at + RETRY_WINDOW
        if workflow.now() >= until:
            self._finish("rolled_back")
            return
        await self._wait(until)

    # --- what the UI shows -----------------------------------------------------------------

    def _phase_text(self, phase: PhaseStatus) -> str:
        s = self.status
        size = phase.exposed_total if phase.exposed_total is not None else phase.cohort_size
        return (
            f"phase {s.phase_index + 1} of {len(s.phases)} "
            f"({percent_text(phase.percent)}, {size} customers)"
        )

    def _describe(self) -> str:
        s = self.status
        phase = s.current
        if s.state == "completed":
            return f"completed: {s.ended_reason}"
        if s.state == "rejected":
            return f"rejected: {s.ended_reason}"
        if s.state == "rolling_back":
            return f"rolling back: {s.rollback_reason}"
        if s.state == "rolled_back":
            if s.finished:
                return f"rolled back: {s.ended_reason}"
            assert s.rolled_back_at is not None
            until = self._local(s.rolled_back_at + RETRY_WINDOW)
            return f"rolled back after abort ({s.ended_reason}); retry possible until {until}"
        if s.state == "frozen":
            return f"frozen: {s.frozen_reason}"
        prefix = "paused" + (f" ({s.pause_reason})" if s.pause_reason else "") + ", no clock runs; "
        text = self._state_text(phase)
        return (prefix if s.paused else "") + text

    def _state_text(self, phase: PhaseStatus | None) -> str:
        s = self.status
        if s.state == "awaiting_approval":
            stage = s.approval_for or "start"
            missing = self._needed_for(stage) - len(self._approvals_for(stage))
            what = "the start" if stage == "start" else f"the gate after phase {stage}"
            text = (
                f"awaiting {missing} more approval(s) from {self.spec.approvals.group} for {what}"
            )
            if s.approval_since is not None and not s.approval_paged:
                paging = self._local(s.approval_since + self.spec.approvals.timeout)
                text += f"; approvers paged at {paging}"
            return text
        if phase is None:
            return s.state
        head = self._phase_text(phase)
        if s.state == "waiting_window":
            when = self._local(s.next_window) if s.next_window else "now"
            return f"{head} waiting for the change window at {when}"
        if s.state == "applying":
            return f"{head} applying"
        if s.state == "held":
            return (
                f"{head} held: {s.hold_reason}; waiting for the owner to promote, resume or abort"
            )
        if s.state == "baking":
            parts = [f"{head} baking"]
            for check in phase.checks:
                if check.readings and check.readings[-1].value is not None:
                    latest = check.readings[-1]
                    parts.append(
                        f"{check.metric.replace('_', ' ')} "
                        f"{_value_text(check.metric, latest.value)} vs {check.threshold}"
                    )
                    break
            ends = phase.bake.moment_reaching(phase.bake_total)
            if ends is not None:
                then = "approval gate" if phase.gate == "approval" else "next phase"
                if s.phase_index == len(s.phases) - 1:
                    then = "completion"
                parts.append(f"{then} at {self._local(ends)} if healthy")
            return ", ".join(parts)
        return f"{head} {s.state}"

    # --- messages ------------------------------------------------------------------------

    @workflow.query
    def state(self) -> RolloutStatus:
        return self.status

    async def _record(self, command: str, detail: dict[str, Any]) -> None:
        s = self.status
        s.commands += 1
        self._sync_clocks()
        self._upsert()
        self._wake()
        await self._ledger(f"command-{s.commands}-{command}", detail)

    def _refuse_if_over(self) -> None:
        s = self.status
        if s.finished:
            raise ValueError(f"rollout of {s.change.change_id} is over ({s.state})")

    def _check_approver(self, approver: str) -> None:
        s = self.status
        approvals = self.spec.approvals
        if approver == s.change.owner and not approvals.allow_owner:
            raise ValueError(f"{approver} owns change {s.change.change_id} and may not approve it")
        if approvals.members and approver not in approvals.members:
            raise ValueError(f"{approver} is not in the approvers' group {approvals.group}")

    @workflow.update
    async def approve(self, command: Decision) -> RolloutStatus:
        s = self.status
        stage = s.approval_for or "start"
        s.approvals.append(
            Approval(
                approver=command.approver,
                reason=command.reason,
                at=workflow.now(),
                stage=stage,
                attempt=s.attempt,
            )
        )
        await self._record("approve", {"approver": command.approver, "stage": stage})
        return s

    @approve.validator
    def _validate_approve(self, command: Decision) -> None:
        self._refuse_if_over()
        s = self.status
        if s.state != "awaiting_approval":
            raise ValueError(f"nothing awaits approval: the rollout is {s.state}")
        self._check_approver(command.approver)
        stage = s.approval_for or "start"
        if any(a.approver == command.approver for a in self._approvals_for(stage)):
            raise ValueError(f"{command.approver} has already approved this")

    @workflow.update
    async def reject(self, command: Decision) -> RolloutStatus:
        s = self.status
        s.rollback_reason = f"rejected by {command.approver}" + (
            f": {command.reason}" if command.reason else ""
        )
        await self._record("reject", {"approver": command.approver, "reason": command.reason})
        return s

    @reject.validator
    def _validate_reject(self, command: Decision) -> None:
        self._refuse_if_over()
        if self.status.state != "awaiting_approval":
            raise ValueError(f"nothing awaits approval: the rollout is {self.status.state}")
        self._check_approver(command.approver)

    @workflow.update
    async def pause(self, command: Reason) -> RolloutStatus:
        s = self.status
        s.paused, s.pause_reason = True, command.reason or None
        await self._record("pause", {"reason": command.reason, **_who(command)})
        return s

    @pause.validator
    def _validate_pause(self, command: Reason) -> None:
        self._refuse_if_over()
        s = self.status
        if s.paused:
            raise ValueError("the rollout is already paused")
        if s.state not in ("awaiting_approval", "waiting_window", "applying", "baking", "held"):
            raise ValueError(f"a rollout that is {s.state} cannot be paused")

    @workflow.update
    async def resume(self, command: Reason | None = None) -> RolloutStatus:
        s = self.status
        detail: dict[str, Any] = {}
        if s.paused:
            s.paused, s.pause_reason = False, None
        elif s.state == "held":
            # Keep baking: the failed counts start afresh, and a spent bake gets one more round.
            phase = s.phases[s.phase_index]
            detail["hold"] = s.hold_reason
            s.hold_reason = None
            for check in phase.checks:
                check.failures, check.consecutive_errors, check.verdict = 0, 0, "pending"
            spent, interval = phase.bake.spent(workflow.now()), self.spec.analysis.interval
            if spent >= phase.bake_total:
                phase.bake_total = max(spent, interval * phase.readings_taken) + interval
            phase.verdict = "baking"
            s.state = "baking"
        await self._record("resume", {**detail, **_who(command)})
        return s

    @resume.validator
    def _validate_resume(self, command: Reason | None = None) -> None:
        self._refuse_if_over()
        s = self.status
        if not s.paused and s.state != "held":
            raise ValueError(f"the rollout is not paused or held (it is {s.state})")

    @workflow.update
    async def promote(self, command: Reason | None = None) -> RolloutStatus:
        s = self.status
        s.promote_requested = True
        if s.state == "held":
            s.hold_reason = None
            s.state = "baking"
        await self._record("promote", {"phase": s.stage, **_who(command)})
        return s

    @promote.validator
    def _validate_promote(self, command: Reason | None = None) -> None:
        self._refuse_if_over()
        s = self.status
        if s.paused:
            raise ValueError("the rollout is paused: resume it first")
        if s.state not in ("baking", "held", "frozen"):
            raise ValueError(f"nothing to promote: the rollout is {s.state}, not baking or held")

    @workflow.update
    async def promote_full(self, command: Decision) -> RolloutStatus:
        s = self.status
        s.promote_full_by = command.approver
        s.approvals.append(
            Approval(
                approver=command.approver,
                reason=command.reason,
                at=workflow.now(),
                stage="full",
                attempt=s.attempt,
            )
        )
        if s.state == "held":
            s.state = "baking"
        await self._record("promote-full", {"approver": command.approver})
        return s

    @promote_full.validator
    def _validate_promote_full(self, command: Decision) -> None:
        self._refuse_if_over()
        s = self.status
        if s.paused:
            raise ValueError("the rollout is paused: resume it first")
        if s.state not in ("waiting_window", "baking", "held", "awaiting_approval"):
            raise ValueError(f"cannot skip to 100% while the rollout is {s.state}")
        if s.state == "awaiting_approval" and s.approval_for == "start":
            raise ValueError("the rollout is not approved yet")
        if s.phase_index >= len(s.phases) - 1:
            raise ValueError("the rollout is already at its last phase")
        self._check_approver(command.approver)

    @workflow.update
    async def abort(self, command: Reason) -> RolloutStatus:
        s = self.status
        reason = command.reason or "aborted by the owner"
        if s.state == "frozen":
            s.ended_reason = f"accepted as it stands: {reason}"
            self._finish("frozen")
            await self._record("accept", {"reason": reason, **_who(command)})
            return s
        s.aborted = True
        s.paused, s.pause_reason = False, None
        s.rollback_reason = f"aborted: {reason}"
        await self._record("abort", {"reason": reason, **_who(command)})
        return s

    @abort.validator
    def _validate_abort(self, command: Reason) -> None:
        self._refuse_if_over()
        s = self.status
        if s.state in ("rolling_back", "rolled_back") or (
            s.rollback_reason and s.state != "frozen"
        ):
            raise ValueError(f"the rollout is already rolling back ({s.rollback_reason})")

    @workflow.update
    async def retry(self, command: Reason | None = None) -> RolloutStatus:
        s = self.status
        s.attempt += 1
        s.phase_index, s.applied = 0, []
        s.rollback_reason = s.hold_reason = s.ended_reason = s.rolled_back_at = None
        s.aborted = s.promote_requested = False
        for number, phase in enumerate(s.phases):
            phase.applied_at = phase.exposed_total = None
            phase.bake, phase.readings_taken, phase.verdict = Stopwatch(), 0, "pending"
            phase.bake_total = self.spec.phases[number].bake
            phase.checks = self._fresh_checks(self.spec.phases[number])
            phase.reverted, phase.notified, phase.recorded = False, 0, False
        s.state, s.stage = "waiting_window", s.phases[0].name
        # Since this patch a retry is a new attempt in full: the earlier attempt's approvals
        # count for none of its gates, and the start is approved afresh.
        if workflow.patched("retry-fresh-approvals"):
            s.approvals_scoped = True
            s.approval_for = s.approval_since = None
            if s.approvals_needed:
                self._request_approval("start")
                s.state = "awaiting_approval"
        await self._record("retry", {"attempt": s.attempt, **_who(command)})
        return s

    @retry.validator
    def _validate_retry(self, command: Reason | None = None) -> None:
        self._refuse_if_over()
        s = self.status
        if s.state != "rolled_back" or not s.aborted:
            raise ValueError(
                f"only an aborted, rolled-back rollout can be retried (it is {s.state})"
            )
