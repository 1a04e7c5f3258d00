"""Backtest an escalation policy change: re-run the recorded cases of the last days under a
new definition and compare, per priority, with what happened.

What happened comes from the configured app database, read only: each case's `opened` step
(priority, stage, customer) and the commands people and tickets gave it (acknowledge, pause,
resume, priority, stage, resolve) with their moments, from the ledger; breaches and levels
fired from the ledger; notifications from the sandbox outbox (zero with vendor backends).
The re-run opens every case at its recorded moment under the new definition and gives it the
same commands at the same moments, all on one scratch stack in skipped time (see
worker/simulate.py), so cases that overlapped overlap again.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from pydantic import BaseModel, ValidationError
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio.client import WorkflowHandle, WorkflowUpdateFailedError

from definitions.errors import OpsflowError
from definitions.loader import LoadedDefinition
from store.models import LedgerEntry, SandboxNotification
from worker.simulate import (
    COMMANDS,
    MAX_HORIZON,
    end_simulated_case,
    open_simulated_case,
    scratch_stack,
    shift_for,
    shifted_policy,
)
from workflows.escalation import CaseInfo, CaseSummary, EscalationWorkflow

Sessions = async_sessionmaker[AsyncSession]

# Ledger step -> the scripted command that repeats it, and how its detail becomes the message.
_REPLAYED: dict[str, tuple[str, Any]] = {
    "acknowledge": ("acknowledge", lambda d: {"by": d.get("by") or "someone"}),
    "pause": ("pause", lambda d: {"reason": d.get("reason") or "paused", "by": d.get("by")}),
    "resume": ("resume", lambda d: {"by": d.get("by")}),
    "priority": ("priority", lambda d: {"priority": d.get("to"), "by": d.get("by")}),
    "stage": ("stage", lambda d: {"stage": d.get("to"), "by": d.get("by")}),
    "resolve": ("resolve", lambda d: {"by": d.get("by") or "someone"}),
}


@dataclass
class Outcome:
    breaches: int = 0
    levels: int = 0
    notifications: int = 0

    def add(self, other: Outcome) -> None:
        self.breaches += other.breaches
        self.levels += other.levels
        self.notifications += other.notifications


@dataclass
class PastCase:
    workflow_id: str
    ticket_id: str
    customer_id: str
    priority: str
    stage: str
    opened_at: datetime
    commands: list[tuple[timedelta, str, BaseModel]] = field(default_factory=list)
    happened: Outcome = field(default_factory=Outcome)


def _outcome(steps: Sequence[str]) -> Outcome:
    outcome = Outcome()
    for step in steps:
        if step.startswith("breach-") and not step.endswith(("-failed", "-cancelled")):
            outcome.breaches += 1
        elif step.startswith("level-") and step.count("-") == 3:  # level-N-cycle-M
            outcome.levels += 1
    return outcome


async def _notifications(sessions: Sessions, workflow_ids: Sequence[str]) -> dict[str, int]:
    counts: dict[str, int] = defaultdict(int)
    async with sessions() as session:
        keys = await session.scalars(
            select(SandboxNotification.idempotency_key).where(
                SandboxNotification.idempotency_key.like("case-%")
            )
        )
        wanted = set(workflow_ids)
        for key in keys:
            owner = (key or "").split("/", 1)[0]
            if owner in wanted:
                counts[owner] += 1
    return counts


_LEGACY_COMMAND_STEP = re.compile(r"command-\d+-(\w+)")
"""Ledger steps before readable names: `command-3-pause` is a `pause`."""


async def read_past_cases(
    sessions: Sessions, since: datetime, policy: str | None = None
) -> tuple[list[PastCase], list[str]]:
    """Every case opened since `since` (under the policy named `policy`, any version, when
    given), with its commands and what came of it; and the recorded commands that could not
    be repeated, each with why."""
    async with sessions() as session:
        opened = list(
            await session.scalars(
                select(LedgerEntry)
                .where(
                    LedgerEntry.kind == "escalation",
                    LedgerEntry.step == "opened",
                    LedgerEntry.at >= since,
                )
                .order_by(LedgerEntry.at, LedgerEntry.id)
            )
        )
        ids = sorted({row.workflow_id for row in opened})
        entries = (
            list(
                await session.scalars(
                    select(LedgerEntry)
                    .where(LedgerEntry.workflow_id.in_(ids))
                    .order_by(LedgerEntry.at, LedgerEntry.id)
                )
            )
            if ids
            else []
        )
    by_case: dict[str, list[LedgerEntry]] = defaultdict(list)
    for entry in entries:
        by_case[entry.workflow_id].append(entry)
    sent = await _notifications(sessions, ids)
    cases: dict[str, PastCase] = {}
    dropped: list[str] = []
    for row in opened:
        if row.workflow_id in cases:
            continue  # a later run of the same case
        ran_under = str(row.detail.get("policy") or "").partition("@")[0]
        if policy is not None and ran_under != policy:
            continue  # another policy's case: not what this file would have taken
        steps = by_case[row.workflow_id]
        customer = row.detail.get("customer") or next(
            (
                e.detail["event"].get("customer_id")
                for e in steps
                if isinstance(e.detail.get("event"), dict)
            ),
            None,
        )
        case = PastCase(
            workflow_id=row.workflow_id,
            ticket_id=row.subject or row.workflow_id.removeprefix("case-"),
            customer_id=customer or "C-0001",
            priority=str(row.detail.get("priority", "p3")),
            stage=str(row.detail.get("stage", "support")),
            opened_at=row.at,
            happened=_outcome([e.step for e in steps]),
        )
        case.happened.notifications = sent.get(row.workflow_id, 0)
        for entry in steps:
            legacy = _LEGACY_COMMAND_STEP.fullmatch(entry.step)
            replayed = _REPLAYED.get(legacy[1] if legacy else entry.step)
            if replayed is None:
                continue
            name, build = replayed
            try:
                message = COMMANDS[name][1].model_validate(build(entry.detail))
            except ValidationError as exc:
                reason = exc.errors()[0]["msg"]
                dropped.append(f"{case.ticket_id}: recorded {entry.step} not repeated: {reason}")
                continue
            case.commands.append((entry.at - row.at, name, message))
        cases[row.workflow_id] = case
    return list(cases.values()), dropped


@dataclass
class Backtest:
    policy: str
    since: datetime
    cases: int
    shifted_weeks: int
    then: dict[str, Outcome]
    now: dict[str, Outcome]
    skipped: list[str]

    def as_json(self) -> dict[str, Any]:
        priorities = sorted(set(self.then) | set(self.now))
        return {
            "policy": self.policy,
            "since": self.since.isoformat(),
            "cases": self.cases,
            "shifted_weeks": self.shifted_weeks,
            "per_priority": {
                p: {
                    "recorded": vars(self.then.get(p, Outcome())),
                    "simulated": vars(self.now.get(p, Outcome())),
                }
                for p in priorities
            },
            "skipped": self.skipped,
        }


async def backtest_escalation(
    loaded: LoadedDefinition, past: Sequence[PastCase], since: datetime, until: datetime
) -> Backtest:
    """Re-run `past` under `loaded` and count what it would have done, per priority."""
    if not past:
        raise OpsflowError(
            f"no escalation case was opened since {since:%Y-%m-%d %H:%M} UTC: nothing to backtest"
        )
    first = min(case.opened_at for case in past)
    horizon = min(until - first, MAX_HORIZON)
    then: dict[str, Outcome] = defaultdict(Outcome)
    now_counts: dict[str, Outcome] = defaultdict(Outcome)
    skipped: list[str] = []
    async with scratch_stack(loaded) as stack:
        spec = stack.pinned.escalation
        zone = ZoneInfo(spec.calendar.timezone)
        server_now = await stack.env.get_current_time()
        shift = shift_for(first, server_now + timedelta(seconds=1), zone, horizon)
        pinned = shifted_policy(stack.pinned, shift)
        # One timeline for every case: openings and commands in the order they happened.
        agenda: list[tuple[datetime, int, PastCase, str | None, BaseModel | None]] = []
        for n, case in enumerate(past):
            if case.priority not in spec.priorities:
                skipped.append(f"{case.ticket_id}: {pinned.ref} has no {case.priority}")
                continue
            then[case.priority].add(case.happened)
            agenda.append((case.opened_at + shift, n, case, None, None))
            for after, command, body in case.commands:
                agenda.append((case.opened_at + shift + after, n, case, command, body))
        agenda.sort(key=lambda item: (item[0], item[1], item[3] is not None))
        handles: dict[str, WorkflowHandle[EscalationWorkflow, CaseSummary]] = {}
        for moment, _, case, name, message in agenda:
            await stack.skip_to(moment)
            if name is None or message is None:
                info = CaseInfo(
                    ticket_id=case.ticket_id,
                    customer_id=case.customer_id,
                    priority=case.priority,
                    stage=case.stage,
                    opened_at=moment,
                )
                handles[case.workflow_id] = await open_simulated_case(stack, info, pinned)
                continue
            handle = handles[case.workflow_id]
            try:
                await handle.execute_update(COMMANDS[name][0], message)
            except WorkflowUpdateFailedError as exc:  # refused under the new policy
                skipped.append(f"{case.ticket_id}: {name} refused: {exc.cause or exc}")
        await stack.skip_to(first + shift + horizon)
        ids = list(handles)
        async with stack.sessions() as session:
            rows = await session.execute(
                select(LedgerEntry.workflow_id, LedgerEntry.step).where(
                    LedgerEntry.workflow_id.in_(ids)
                )
            )
            steps: dict[str, list[str]] = defaultdict(list)
            for workflow_id, step in rows:
                steps[workflow_id].append(step)
        sent = await _notifications(stack.sessions, ids)
        for case in past:
            if case.workflow_id not in handles:
                continue
            outcome = _outcome(steps[case.workflow_id])
            outcome.notifications = sent.get(case.workflow_id, 0)
            now_counts[case.priority].add(outcome)
        for handle in handles.values():
            await end_simulated_case(handle)
    return Backtest(
        pinned.ref, since, len(handles), shift.days // 7, dict(then), dict(now_counts), skipped
    )
