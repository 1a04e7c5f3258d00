"""The plain-Temporal baseline for bench/escalation.py: the same timers and the same
activity calls, written by hand as one would without opsflow."""

from __future__ import annotations

import asyncio
import contextlib
from datetime import datetime, timedelta

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from activities.customer_contracts import CustomerProfile
    from activities.models import GetCustomer, LedgerAppend, MessageSent, SendMessage
    from bench.harness import serve_baseline

TIMEOUT = timedelta(seconds=30)


@workflow.defn(name="PlainEscalation")
class PlainEscalation:
    def __init__(self) -> None:
        self.acknowledged = False
        self.resolved = False

    async def _ledger(self, step: str, at: datetime | None = None) -> None:
        """`at`: when the step fell due (a timer's), by default now."""
        info = workflow.info()
        await workflow.execute_activity(
            "ledger.append",
            LedgerAppend(
                idempotency_key=f"{info.workflow_id}/{step}/ledger",
                workflow_id=info.workflow_id,
                kind="plain",
                step=step,
                at=at or workflow.now(),
            ),
            result_type=int,
            start_to_close_timeout=TIMEOUT,
        )

    @workflow.run
    async def run(self, args: list[str]) -> None:
        customer_id, level_seconds = args[0], float(args[1])
        info = workflow.info()
        profile: CustomerProfile = await workflow.execute_activity(
            "crm.get_customer",
            GetCustomer(customer_id=customer_id),
            result_type=CustomerProfile,
            start_to_close_timeout=TIMEOUT,
        )
        await self._ledger("opened")
        opened = workflow.info().start_time
        for level in range(1, 4):
            # Level n falls due n levels after the case opened, as opsflow's levels do (not
            # after the previous level's actions); the due moment is recorded with the level.
            due = opened + timedelta(seconds=level * level_seconds)
            remaining = due - workflow.now()
            if remaining > timedelta(0):
                with contextlib.suppress(TimeoutError):
                    await workflow.wait_condition(lambda: self.acknowledged, timeout=remaining)
            if self.acknowledged:
                break
            await self._ledger(f"level-{level}", at=due)
            await workflow.execute_activity(
                "notify.send",
                SendMessage(
                    idempotency_key=f"{info.workflow_id}/level-{level}/0",
                    channel="email",
                    recipient="queue:support",
                    template="case-escalated",
                    context={
                        "case": {"id": info.workflow_id, "priority": "p1", "subject": ""},
                        "customer": {"name": profile.name},
                        "level": {"number": level, "name": ""},
                    },
                ),
                result_type=MessageSent,
                start_to_close_timeout=TIMEOUT,
            )
        if not self.acknowledged:
            await self._ledger("breach")
        await workflow.wait_condition(lambda: self.resolved)
        await self._ledger("resolved")

    @workflow.update
    async def acknowledge(self) -> None:
        self.acknowledged = True

    @workflow.update
    async def resolve(self) -> None:
        self.resolved = True


if __name__ == "__main__":
    # The sandbox loads a workflow from its module by name: never hand it one from __main__.
    from bench.baseline_escalation import PlainEscalation as by_name

    asyncio.run(serve_baseline([by_name]))
