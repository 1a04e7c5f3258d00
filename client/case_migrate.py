"""Moving running escalation cases to another policy version (`opsflow case migrate`): each
case's clocks planned under the old and the new policy, then its validated `migrate` update,
paced."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio.client import Client
from temporalio.service import RPCError, RPCStatusCode

from activities import search_attributes as sa
from client.case_commands import CaseCommandRefused, command_case
from client.case_read import parse_policy_ref, read_case
from definitions.errors import OpsflowError
from definitions.models import PinnedDefinition
from store.registry import get, latest
from workflows.escalation_clocks import SlaClock, migrated_clocks, sla_budgets
from workflows.escalation_commands import migration_refusal
from workflows.escalation_model import EscalationStatus as CaseStatus
from workflows.escalation_pinned import Migrate

DEFAULT_MIGRATION_RATE = 5.0
"""Cases migrated per second at most, by default: each is a workflow update a worker runs."""
MigrationOutcome = Literal["would migrate", "migrated", "skipped", "refused"]


async def migration_target(
    sessions: async_sessionmaker[AsyncSession], text: str
) -> PinnedDefinition:
    """The escalation policy version `NAME@VERSION` names (the version is required: a
    migration that is run again must move cases to the same version)."""
    name, version = parse_policy_ref(text)
    if version is None:
        raise OpsflowError(
            f"name the version to migrate to, e.g. {name}@2 (`opsflow defs list` shows them)"
        )
    policy = await get(sessions, name, version)
    if policy.definition.kind != "escalation":
        raise OpsflowError(
            f"{policy.ref} is a {policy.definition.kind} definition, not an escalation policy"
        )
    return policy


@dataclass(frozen=True)
class ClockMove:
    """One SLA clock of a migrated case: its due moment under the old and the new policy."""

    name: str
    state: str
    """running, paused, met or breached (before the migration)."""
    spent: timedelta
    """Business time spent so far, on the old policy's calendar: kept by the migration."""
    old_budget: timedelta
    new_budget: timedelta
    old_due: datetime | None
    """When it runs out under the old policy; None for a paused or met clock."""
    new_due: datetime | None

    def as_json(self) -> dict[str, Any]:
        return {
            "state": self.state,
            "spent_seconds": int(self.spent.total_seconds()),
            "old_budget_seconds": int(self.old_budget.total_seconds()),
            "new_budget_seconds": int(self.new_budget.total_seconds()),
            "old_due": self.old_due.isoformat() if self.old_due else None,
            "new_due": self.new_due.isoformat() if self.new_due else None,
        }


@dataclass(frozen=True)
class CaseMigration:
    """What a migration did (or, in a dry run, would do) to one case."""

    ticket_id: str
    source: str | None
    """The policy version the case was on; None when it could not be read."""
    target: str
    outcome: MigrationOutcome
    reason: str | None = None
    """Why it was skipped or refused."""
    clocks: tuple[ClockMove, ...] = ()
    old_timezone: str | None = None
    new_timezone: str | None = None

    def as_json(self) -> dict[str, Any]:
        return {
            "ticket": self.ticket_id,
            "from": self.source,
            "to": self.target,
            "outcome": self.outcome,
            "reason": self.reason,
            "clocks": {move.name: move.as_json() for move in self.clocks},
            "old_timezone": self.old_timezone,
            "new_timezone": self.new_timezone,
        }


def plan_clocks(
    status: CaseStatus,
    old: PinnedDefinition,
    new: PinnedDefinition,
    now: datetime,
    applied: dict[str, SlaClock] | None = None,
) -> tuple[ClockMove, ...]:
    """Each clock's due moment under `old` and under `new` for a migration at `now`, the
    time spent and any pause kept (`migrated_clocks`: what the workflow's `migrate` does).
    `applied`: the clocks the workflow answered with, once it has migrated."""
    priority, stage = status.case.priority, status.case.stage
    old_calendar = old.escalation.calendar_for(priority)
    new_calendar = new.escalation.calendar_for(priority)
    # A case measured by the SLA metrics takes the new policy's metric targets too.
    budgets = sla_budgets(new.escalation, priority, stage, metrics=status.sla_metrics) or {}
    moved = applied or migrated_clocks(status.clocks, budgets, now, old_calendar)
    moves: list[ClockMove] = []
    for name, clock in status.clocks.items():
        after = moved.get(name, clock)
        moves.append(
            ClockMove(
                name=name,
                state=clock.shown_status(),
                spent=clock.spent(now, old_calendar),
                old_budget=clock.budget,
                new_budget=after.budget,
                old_due=None if clock.stopped else clock.due_at(old_calendar),
                new_due=None if after.stopped else after.due_at(new_calendar),
            )
        )
    return tuple(moves)


class MigrationPacer:
    """At most `rate` migrations per second, evenly spaced: a bulk migration does not flood
    the workers (and the namespace's rate limits) with updates."""

    def __init__(
        self,
        rate: float,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        if rate <= 0:
            raise OpsflowError("the migration rate must be above 0 per second")
        self._interval = 1.0 / rate
        self._clock, self._sleep = clock, sleep
        self._next: float | None = None

    async def wait(self) -> None:
        """Return when the next update may be sent."""
        now = self._clock()
        if self._next is not None and now < self._next:
            await self._sleep(self._next - now)
            now = self._next
        self._next = now + self._interval


class PolicyVersions:
    """Pinned policy versions read from the registry once each (a case's old policy)."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self._sessions = sessions
        self._known: dict[str, PinnedDefinition] = {}

    async def pinned(self, ref: str) -> PinnedDefinition:
        if ref not in self._known:
            name, version = parse_policy_ref(ref)
            self._known[ref] = await (
                get(self._sessions, name, version) if version else latest(self._sessions, name)
            )
        return self._known[ref]


async def migrate_case(
    client: Client,
    versions: PolicyVersions,
    ticket_id: str,
    target: PinnedDefinition,
    *,
    by: str,
    dry_run: bool = False,
    pacer: MigrationPacer | None = None,
    now: datetime | None = None,
) -> CaseMigration:
    """Move one running case to `target` through its workflow's validated `migrate` update
    (or, with `dry_run`, only work out what that would do). A case already on `target` is
    skipped, so a migration run again carries on where it stopped; a case the workflow
    would refuse (resolved, priority or stage not covered) is refused with the reason.
    Raises OpsflowError when the case cannot be read (none for this ticket)."""
    view = await read_case(client, ticket_id)
    status = view.live
    if status is None:
        reason = (
            f"case {ticket_id} is already resolved"
            if view.execution == "completed"
            else f"case {ticket_id} is {view.state.replace('_', ' ')}"
            + (f" ({view.reason})" if view.reason else "")
        )
        return CaseMigration(
            ticket_id, view.last_known.get("policy"), target.ref, "refused", reason
        )
    source = status.definition
    if source == target.ref:
        return CaseMigration(ticket_id, source, target.ref, "skipped", f"already on {target.ref}")
    refusal = migration_refusal(status, target)
    if refusal is not None:
        return CaseMigration(ticket_id, source, target.ref, "refused", refusal)
    try:
        old = await versions.pinned(source)
    except OpsflowError as exc:
        reason = f"its policy {source} cannot be read from the registry ({exc})"
        return CaseMigration(ticket_id, source, target.ref, "refused", reason)
    priority = status.case.priority
    zones = (
        old.escalation.calendar_for(priority).timezone,
        target.escalation.calendar_for(priority).timezone,
    )
    moment = now or datetime.now(UTC)
    if dry_run:
        moves = plan_clocks(status, old, target, moment)
        return CaseMigration(ticket_id, source, target.ref, "would migrate", None, moves, *zones)
    if pacer is not None:
        await pacer.wait()
    try:
        migrated = await command_case(client, ticket_id, "migrate", Migrate(policy=target, by=by))
    except CaseCommandRefused as exc:
        return CaseMigration(ticket_id, source, target.ref, "refused", str(exc))
    moves = plan_clocks(status, old, target, moment, applied=migrated.clocks)
    return CaseMigration(ticket_id, source, target.ref, "migrated", None, moves, *zones)


async def cases_matching(client: Client, query: str) -> list[str]:
    """The tickets of every running escalation case the visibility query `query` finds
    (e.g. `OpsDefinition = "support@3"`), listed whole before any is changed."""
    full = f'OpsKind = "escalation" AND ExecutionStatus = "Running" AND ({query})'
    tickets: list[str] = []
    seen: set[str] = set()
    try:
        async for execution in client.list_workflows(full):
            if execution.id in seen:
                continue
            seen.add(execution.id)
            ticket = execution.typed_search_attributes.get(sa.OPS_CASE_ID)
            tickets.append(ticket or execution.id.removeprefix("case-"))
    except RPCError as exc:
        if exc.status != RPCStatusCode.INVALID_ARGUMENT:
            raise
        first = (exc.message or str(exc)).splitlines()[0][:200]
        raise OpsflowError(f"--query: Temporal cannot run this query ({first})") from None
    return tickets


async def migrate_cases(
    client: Client,
    versions: PolicyVersions,
    tickets: Sequence[str],
    target: PinnedDefinition,
    *,
    by: str,
    dry_run: bool = False,
    rate: float = DEFAULT_MIGRATION_RATE,
) -> AsyncIterator[CaseMigration]:
    """`migrate_case` for each ticket in turn, at most `rate` updates per second; a case
    that cannot be read is refused with the reason and the others go on."""
    pacer = MigrationPacer(rate)
    for ticket in tickets:
        try:
            yield await migrate_case(
                client, versions, ticket, target, by=by, dry_run=dry_run, pacer=pacer
            )
        except OpsflowError as exc:
            yield CaseMigration(ticket, None, target.ref, "refused", str(exc))
