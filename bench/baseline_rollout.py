"""The plain-Temporal baseline for bench/rollout.py: the same activities with the same batch
sizes (impact from the CRM cohort selection, apply per phase, a bake timer, then on abort a
phase-scoped revert and the batched customer notices per phase in reverse), written by hand
as one would without opsflow."""

from __future__ import annotations

import asyncio
import contextlib
from datetime import timedelta

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from activities.models import (
        ApplyChange,
        ChangeApplied,
        ChangeReverted,
        Cohort,
        CohortSpec,
        LedgerAppend,
        RevertChange,
        SelectCohort,
    )
    from activities.rollout_contracts import (
        CustomerNoticeRequest,
        NotifyPhaseCustomers,
        PhaseCustomersNotified,
    )
    from bench.harness import serve_baseline

TIMEOUT = timedelta(seconds=30)
LONG = timedelta(hours=2)
HEARTBEAT = timedelta(minutes=2)


@workflow.defn(name="PlainRollout")
class PlainRollout:
    def __init__(self) -> None:
        self.aborted = False
        self.applied: list[int] = []
        self.reverted = 0
        self.notified = 0

    async def _ledger(self, step: str) -> None:
        info = workflow.info()
        await workflow.execute_activity(
            "ledger.append",
            LedgerAppend(
                idempotency_key=f"{info.workflow_id}/{step}/ledger",
                workflow_id=info.workflow_id,
                kind="plain",
                step=step,
                at=workflow.now(),
            ),
            result_type=int,
            start_to_close_timeout=TIMEOUT,
        )

    @workflow.run
    async def run(self, args: list[str]) -> list[int]:
        """args: change id, flag key, then `percent:bake seconds` per phase."""
        change_id, flag = args[0], args[1]
        phases = [tuple(float(n) for n in phase.split(":")) for phase in args[2:]]
        percents = [percent for percent, _ in phases]
        key = workflow.info().workflow_id
        cohorts = [CohortSpec(seed=change_id, percent=p) for p in percents]
        for cohort in cohorts:
            await workflow.execute_activity(
                "crm.select_cohort",
                SelectCohort(cohort=cohort, max_ids=0),
                result_type=Cohort,
                start_to_close_timeout=LONG,
            )
        await self._ledger("impact")
        for number, cohort in enumerate(cohorts):
            if self.aborted:
                break
            await workflow.execute_activity(
                "changes.apply",
                ApplyChange(
                    idempotency_key=f"{key}/phase-{number + 1}/apply",
                    change_id=change_id,
                    flag_key=flag,
                    cohort=cohort,
                ),
                result_type=ChangeApplied,
                start_to_close_timeout=LONG,
                heartbeat_timeout=HEARTBEAT,
            )
            self.applied.append(number)
            await self._ledger(f"phase-{number + 1}-applied")
            bake = timedelta(seconds=phases[number][1])
            with contextlib.suppress(TimeoutError):
                await workflow.wait_condition(lambda: self.aborted, timeout=bake)
        if self.aborted:
            for position in range(len(self.applied) - 1, -1, -1):
                number = self.applied[position]
                earlier = [cohorts[n] for n in self.applied[:position]]
                reverted: ChangeReverted = await workflow.execute_activity(
                    "changes.revert",
                    RevertChange(
                        idempotency_key=f"{key}/rollback/phase-{number + 1}/revert",
                        change_id=change_id,
                        flag_key=flag,
                        cohort=cohorts[number],
                        earlier=earlier,
                    ),
                    result_type=ChangeReverted,
                    start_to_close_timeout=LONG,
                )
                done: PhaseCustomersNotified = await workflow.execute_activity(
                    "rollout.notify_phase_customers",
                    NotifyPhaseCustomers(
                        idempotency_key=f"{key}/rollback/phase-{number + 1}/customers",
                        change_id=change_id,
                        phase=f"phase-{number + 1}",
                        cohort=cohorts[number],
                        earlier=earlier,
                        notice=CustomerNoticeRequest(
                            channel="email", template="change-rolled-back"
                        ),
                        context={
                            "change": {"id": change_id, "rollback_reason": "aborted"},
                            "phase": {"name": f"phase-{number + 1}", "percent": percents[number]},
                        },
                    ),
                    result_type=PhaseCustomersNotified,
                    start_to_close_timeout=LONG,
                    heartbeat_timeout=HEARTBEAT,
                )
                self.reverted += reverted.reverted
                self.notified += done.notified
                await self._ledger(f"rollback-phase-{number + 1}")
        return [self.reverted, self.notified]

    @workflow.update
    async def abort(self) -> None:
        self.aborted = True

    @workflow.query
    def phases_applied(self) -> int:
        return len(self.applied)


if __name__ == "__main__":
    # The sandbox loads a workflow from its module by name: never hand it one from __main__.
    from bench.baseline_rollout import PlainRollout as by_name

    asyncio.run(serve_baseline([by_name]))
