"""Every run that needs a person, found in seconds among thousands of open runs.

Where each kind of trouble is known, and so how it is found without describing every run:

- an activity retrying (attempt >= 3) or given up: only the server knows (pending activities);
  the worker's index `activity_failures` names the runs, describe confirms and gives the
  vendor's last error;
- a run failed, terminated or timed out: visibility (`ExecutionStatus IN (...) AND
  CloseTime > ...`), then its close event for the reason;
- a workflow task failing (non-determinism): the server's `TemporalReportedProblems`
  search attribute, then describe and the last `WorkflowTaskFailed` event;
- an approval past its time, a handoff past its queue's maximum wait: `OpsState` in
  visibility narrows to waiting runs, their `state`/`view` query tells how long;
- inbox events pending or rejected: the app database (`inbox_events` by status).

Describes and queries run concurrently, at most `concurrency` at a time.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal, TypeVar

from google.protobuf.timestamp_pb2 import Timestamp
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio.api.common.v1 import WorkflowExecution as ExecutionRef
from temporalio.api.enums.v1 import EventType
from temporalio.api.failure.v1 import Failure
from temporalio.api.sdk.v1 import WorkflowMetadata
from temporalio.api.workflowservice.v1 import GetWorkflowExecutionHistoryReverseRequest
from temporalio.client import (
    Client,
    WorkflowExecution,
    WorkflowExecutionStatus,
    WorkflowQueryFailedError,
)
from temporalio.service import RPCError

from activities import search_attributes as sa
from store.models import ActivityFailure, InboxEvent
from workflows.handoff_model import HandoffStatus
from workflows.recovery_model import RecoveryStatus
from workflows.rollout_model import RolloutStatus

Kind = Literal["escalation", "rollout", "recovery", "handoff", "inbox"]
KINDS: tuple[Kind, ...] = ("escalation", "rollout", "recovery", "handoff", "inbox")
WORKFLOW_TYPES: dict[str, Kind] = {
    "Escalation": "escalation",
    "Rollout": "rollout",
    "Recovery": "recovery",
    "Handoff": "handoff",
}
RETRYING_FROM_ATTEMPT = 3
CLOSED_TROUBLE = {
    WorkflowExecutionStatus.FAILED: "workflow failed",
    WorkflowExecutionStatus.TERMINATED: "workflow terminated",
    WorkflowExecutionStatus.TIMED_OUT: "workflow timed out",
}
# How long a describe or query may take before the run is reported as not answering.
CALL_TIMEOUT = timedelta(seconds=10)
MAX_LISTED = 5000  # per visibility query: beyond this the report says it is partial

T = TypeVar("T")


@dataclass(frozen=True)
class StuckRun:
    kind: Kind
    subject: str
    """The workflow id, or `inbox event <id>`."""
    reason: str
    """A short category: `activity retrying`, `workflow failed`, `approval overdue`, ..."""
    detail: str
    """One line: what is wrong, the vendor's or the server's last error."""
    since: datetime | None
    url: str | None

    def as_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["since"] = self.since.isoformat() if self.since else None
        return data


@dataclass(frozen=True)
class StuckQuery:
    kinds: frozenset[Kind] = frozenset(KINDS)
    older_than: timedelta = timedelta(minutes=5)
    """A gate or handoff overdue, an inbox event pending or rejected, for at least this."""
    within: timedelta = timedelta(hours=24)
    """Closed runs (failed, terminated, timed out) and given-up activities this recent."""
    task_queue: str | None = None
    """Only runs of this task queue (opsflow's); None: every task queue."""
    concurrency: int = 16
    now: datetime = field(default_factory=lambda: datetime.now(UTC))


@dataclass
class StuckReport:
    runs: list[StuckRun]
    partial: list[str] = field(default_factory=list)
    """Checks that could not finish (a listing over MAX_LISTED, a server refusing a query)."""


def _time(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _one_line(text: str, limit: int = 300) -> str:
    line = " ".join(text.split())
    return line if len(line) <= limit else line[: limit - 1] + "…"


def failure_text(failure: Failure) -> str:
    """The failure's message and its causes' (the vendor's error is usually the last)."""
    parts: list[str] = []
    current: Failure | None = failure
    while current is not None and len(parts) < 4:
        if current.message and current.message not in parts:
            parts.append(current.message)
        current = current.cause if current.HasField("cause") else None
    return _one_line(": ".join(parts) or "no message")


def _stamp(value: Timestamp) -> datetime | None:
    if not value.seconds and not value.nanos:
        return None
    return value.ToDatetime(tzinfo=UTC)


class StuckFinder:
    def __init__(
        self,
        client: Client,
        sessions: async_sessionmaker[AsyncSession],
        query: StuckQuery,
        url: Callable[[str], str],
    ) -> None:
        self.client = client
        self.sessions = sessions
        self.query = query
        self.url = url
        self._bound = asyncio.Semaphore(query.concurrency)
        self.partial: list[str] = []

    # --- shared helpers ------------------------------------------------------------------

    def _kinds_clause(self) -> str:
        types = [t for t, kind in WORKFLOW_TYPES.items() if kind in self.query.kinds]
        clause = "WorkflowType IN (" + ", ".join(f'"{t}"' for t in types) + ")"
        if self.query.task_queue:
            clause += f' AND TaskQueue = "{self.query.task_queue}"'
        return clause

    def _wants(self, kind: Kind) -> bool:
        return kind in self.query.kinds

    async def _list(self, what: str, condition: str) -> list[WorkflowExecution]:
        found: list[WorkflowExecution] = []
        try:
            async for execution in self.client.list_workflows(
                f"{self._kinds_clause()} AND {condition}",
                limit=MAX_LISTED + 1,
                rpc_timeout=CALL_TIMEOUT,
            ):
                found.append(execution)
        except RPCError as exc:
            self.partial.append(f"{what}: the server refused the listing ({exc.message})")
            return found
        if len(found) > MAX_LISTED:
            self.partial.append(f"{what}: more than {MAX_LISTED} runs, the first shown")
            found = found[:MAX_LISTED]
        return found

    async def _bounded(self, calls: Iterable[Awaitable[T]]) -> list[T]:
        async def one(call: Awaitable[T]) -> T:
            async with self._bound:
                return await call

        return list(await asyncio.gather(*(one(c) for c in calls)))

    def _run(self, kind: Kind, workflow_id: str, reason: str, detail: str, since: datetime | None
             ) -> StuckRun:  # fmt: skip
        return StuckRun(kind, workflow_id, reason, _one_line(detail), since, self.url(workflow_id))

    # --- the checks ----------------------------------------------------------------------

    async def find(self) -> StuckReport:
        checks: list[Awaitable[list[StuckRun]]] = []
        if self.query.kinds - {"inbox"}:
            checks += [
                self.activities(),
                self.closed_runs(),
                self.failing_workflow_tasks(),
                self.overdue_gates(),
                self.self_flagged(),
            ]
        if self._wants("inbox"):
            checks.append(self.inbox())
        results = await asyncio.gather(*checks)
        runs = [run for found in results for run in found]
        runs.sort(key=lambda r: (r.since or self.query.now, r.kind, r.subject))
        return StuckReport(runs, self.partial)

    async def self_flagged(self) -> list[StuckRun]:
        """Runs that flagged themselves (`OpsState = "stuck"`, the reason in their current
        details): an action failed and waits for a person."""
        listed = await self._list(
            "self-flagged runs", f'ExecutionStatus = "Running" AND OpsState = "{sa.STUCK}"'
        )

        async def one(execution: WorkflowExecution) -> StuckRun | None:
            kind = WORKFLOW_TYPES.get(execution.workflow_type)
            if kind is None or kind == "rollout":  # a stuck rollout: an overdue gate, below
                return None
            handle = self.client.get_workflow_handle(execution.id, run_id=execution.run_id)
            try:
                metadata = await handle.query(
                    "__temporal_workflow_metadata",
                    result_type=WorkflowMetadata,
                    rpc_timeout=CALL_TIMEOUT,
                )
                details = str(metadata.current_details)
            except (RPCError, WorkflowQueryFailedError):
                details = "no worker answered for its details"
            return self._run(kind, execution.id, "needs a person", details, execution.start_time)

        found = await self._bounded(one(e) for e in listed)
        return [run for run in found if run is not None]

    async def activities(self) -> list[StuckRun]:
        """Runs whose activity is on attempt >= 3 or was given up, by the worker's index."""
        since = self.query.now - self.query.within
        async with self.sessions() as session:
            rows = list(
                await session.scalars(
                    select(ActivityFailure)
                    .where(
                        (ActivityFailure.status == "retrying")
                        | (ActivityFailure.failed_at >= since)
                    )
                    .order_by(ActivityFailure.failed_at.desc())
                    .limit(MAX_LISTED + 1)
                )
            )
        if len(rows) > MAX_LISTED:
            self.partial.append(f"activities: more than {MAX_LISTED} noted, the newest shown")
            rows = rows[:MAX_LISTED]
        by_run: dict[tuple[str, str], list[ActivityFailure]] = {}
        for row in rows:
            kind = self._kind_of(row.workflow_id)
            if kind is not None and self._wants(kind):
                by_run.setdefault((row.workflow_id, row.run_id), []).append(row)
        found = await self._bounded(
            self._activity_trouble(wid, rid, noted) for (wid, rid), noted in by_run.items()
        )
        return [run for runs in found for run in runs]

    @staticmethod
    def _kind_of(workflow_id: str) -> Kind | None:
        prefix = workflow_id.split("-", 1)[0]
        return {
            "case": "escalation",
            "rollout": "rollout",
            "customer": "recovery",
            "handoff": "handoff",
        }.get(prefix)  # type: ignore[return-value]

    async def _activity_trouble(
        self, workflow_id: str, run_id: str, noted: list[ActivityFailure]
    ) -> list[StuckRun]:
        kind = self._kind_of(workflow_id)
        assert kind is not None
        try:
            described = await self.client.get_workflow_handle(workflow_id, run_id=run_id).describe(
                rpc_timeout=CALL_TIMEOUT
            )
        except RPCError:
            return []  # the run is gone (retention): nothing to do for anyone
        if described.status != WorkflowExecutionStatus.RUNNING:
            return []  # closed: the closed-run check reports it if it ended badly
        if self.query.task_queue and described.task_queue != self.query.task_queue:
            return []
        runs: list[StuckRun] = []
        for pending in described.raw_description.pending_activities:
            if pending.attempt < RETRYING_FROM_ATTEMPT:
                continue
            error = failure_text(pending.last_failure) if pending.HasField("last_failure") else ""
            runs.append(
                self._run(
                    kind,
                    workflow_id,
                    "activity retrying",
                    f"{pending.activity_type.name} attempt {pending.attempt}"
                    + (f": {error}" if error else ""),
                    _stamp(pending.scheduled_time) or _stamp(pending.last_started_time),
                )
            )
        for row in noted:
            if row.status == "failed":
                runs.append(
                    self._run(
                        kind,
                        workflow_id,
                        "activity failed",
                        f"{row.activity_type} gave up after attempt {row.attempt}: {row.error}",
                        row.failed_at,
                    )
                )
        return runs

    async def closed_runs(self) -> list[StuckRun]:
        since = self.query.now - self.query.within
        closed = await self._list(
            "closed runs",
            'ExecutionStatus IN ("Failed", "Terminated", "TimedOut") '
            f'AND CloseTime > "{_time(since)}"',
        )
        latest: dict[str, WorkflowExecution] = {}
        for execution in closed:
            known = latest.get(execution.id)
            if known is None or (execution.close_time or since) > (known.close_time or since):
                latest[execution.id] = execution
        found = await self._bounded(self._closed_trouble(e) for e in latest.values())
        return [run for run in found if run is not None]

    async def _closed_trouble(self, execution: WorkflowExecution) -> StuckRun | None:
        kind = WORKFLOW_TYPES[execution.workflow_type]
        try:
            newest = await self.client.get_workflow_handle(execution.id).describe(
                rpc_timeout=CALL_TIMEOUT
            )
        except RPCError:
            newest = None
        if newest is not None and newest.run_id != execution.run_id:
            return None  # started again since (a case opened afresh): that run speaks now
        assert execution.status is not None
        reason = CLOSED_TROUBLE[execution.status]
        detail = reason
        try:
            history = await self.client.workflow_service.get_workflow_execution_history_reverse(
                GetWorkflowExecutionHistoryReverseRequest(
                    namespace=self.client.namespace,
                    execution=ExecutionRef(workflow_id=execution.id, run_id=execution.run_id),
                    maximum_page_size=1,
                ),
                timeout=CALL_TIMEOUT,
            )
            events = history.history.events  # newest first
            if events:
                detail = _close_detail(events[0], reason)
        except RPCError:
            pass
        return self._run(kind, execution.id, reason, detail, execution.close_time)

    async def failing_workflow_tasks(self) -> list[StuckRun]:
        failing = await self._list(
            "failing workflow tasks",
            'ExecutionStatus = "Running" AND TemporalReportedProblems IS NOT NULL',
        )
        return await self._bounded(self._task_trouble(e) for e in failing)

    async def _task_trouble(self, execution: WorkflowExecution) -> StuckRun:
        kind = WORKFLOW_TYPES[execution.workflow_type]
        problems = [
            str(value)
            for pair in execution.typed_search_attributes
            if pair.key.name == "TemporalReportedProblems"
            for value in (pair.value if isinstance(pair.value, list) else [pair.value])
        ]
        cause = next((p.split("=", 1)[1] for p in problems if p.startswith("cause=")), "")
        detail = cause.removeprefix("WorkflowTaskFailedCause") or "workflow task failing"
        since: datetime | None = None
        try:
            history = await self.client.workflow_service.get_workflow_execution_history_reverse(
                GetWorkflowExecutionHistoryReverseRequest(
                    namespace=self.client.namespace,
                    execution=ExecutionRef(workflow_id=execution.id, run_id=execution.run_id),
                    maximum_page_size=20,
                ),
                timeout=CALL_TIMEOUT,
            )
            for event in history.history.events:
                if event.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_FAILED:
                    attributes = event.workflow_task_failed_event_attributes
                    detail += f": {failure_text(attributes.failure)}"
                    since = _stamp(event.event_time)
                    break
            described = await self.client.get_workflow_handle(
                execution.id, run_id=execution.run_id
            ).describe(rpc_timeout=CALL_TIMEOUT)
            attempt = described.raw_description.pending_workflow_task.attempt
            if attempt:
                detail = f"attempt {attempt}, {detail}"
        except RPCError:
            pass
        return self._run(kind, execution.id, "workflow task failing", detail, since)

    async def overdue_gates(self) -> list[StuckRun]:
        waiting = await self._list(
            "waiting runs",
            'ExecutionStatus = "Running" AND ('
            '(WorkflowType IN ("Rollout", "Recovery") AND OpsState = "awaiting_approval") OR '
            # A rollout whose paged approval nobody answered reads stuck; the gate says why.
            '(WorkflowType = "Rollout" AND OpsState = "stuck") OR '
            '(WorkflowType = "Handoff" AND OpsState IN ("requested", "queued", "offered")))',
        )
        found = await self._bounded(self._gate_trouble(e) for e in waiting)
        return [run for runs in found for run in runs]

    async def _gate_trouble(self, execution: WorkflowExecution) -> list[StuckRun]:
        kind = WORKFLOW_TYPES[execution.workflow_type]
        handle = self.client.get_workflow_handle(execution.id, run_id=execution.run_id)
        now, grace = self.query.now, self.query.older_than
        try:
            if kind == "rollout":
                rollout = await handle.query(
                    "state", result_type=RolloutStatus, rpc_timeout=CALL_TIMEOUT
                )
                return self._rollout_overdue(execution.id, rollout)
            if kind == "recovery":
                view = await handle.query(
                    "view", result_type=RecoveryStatus, rpc_timeout=CALL_TIMEOUT
                )
                return [
                    self._run(
                        kind,
                        execution.id,
                        "approval overdue",
                        f"approval {a.id} ({a.amount} {a.currency}, rule {a.rule}) for "
                        f"{a.group} was due {_time(a.deadline)}"
                        + (", escalated" if a.escalated else ""),
                        a.deadline,
                    )
                    for a in view.state.waiting_approvals()
                    if a.deadline + grace <= now
                ]
            handoff = await handle.query(
                "state", result_type=HandoffStatus, rpc_timeout=CALL_TIMEOUT
            )
        except Exception as exc:  # a query that fails is itself a sign
            message = exc.message if isinstance(exc, RPCError) else str(exc)
            return [
                self._run(
                    kind,
                    execution.id,
                    "not answering",
                    f"its state query failed: {message or type(exc).__name__}",
                    None,
                )
            ]
        due = handoff.queue_deadline
        if due is None or due + grace > now:
            return []
        return [
            self._run(
                kind,
                execution.id,
                "handoff overdue",
                f"{handoff.state} in queue {handoff.queue or '?'} since "
                f"{_time(handoff.queued_at or due)}, past its maximum wait ({_time(due)})",
                due,
            )
        ]

    def _rollout_overdue(self, workflow_id: str, rollout: RolloutStatus) -> list[StuckRun]:
        if rollout.state != "awaiting_approval" or rollout.approval_since is None:
            return []
        # The run pages the approvers at its timeout (approval_paged): past that, a person is
        # overdue. The timeout itself is in the pinned plan, not in the state.
        if not rollout.approval_paged:
            return []
        waited = self.query.now - rollout.approval_since
        if waited < self.query.older_than:
            return []
        given = len([a for a in rollout.approvals if a.stage == (rollout.approval_for or "start")])
        return [
            self._run(
                "rollout",
                workflow_id,
                "approval overdue",
                f"approval of {rollout.approval_for or 'start'} waiting since "
                f"{_time(rollout.approval_since)} ({given} of {rollout.approvals_needed}), "
                "past its timeout: approvers paged",
                rollout.approval_since,
            )
        ]

    async def inbox(self) -> list[StuckRun]:
        before = self.query.now - self.query.older_than
        async with self.sessions() as session:
            rows = list(
                await session.scalars(
                    select(InboxEvent)
                    .where(
                        InboxEvent.status.in_(("accepted", "pending", "rejected")),
                        InboxEvent.received_at <= before,
                        # A rejected event stays rejected: it counts within --within only.
                        (InboxEvent.status != "rejected")
                        | (InboxEvent.received_at >= self.query.now - self.query.within),
                    )
                    .order_by(InboxEvent.id.desc())
                    .limit(MAX_LISTED + 1)
                )
            )
        if len(rows) > MAX_LISTED:
            self.partial.append(f"inbox: more than {MAX_LISTED} events, the newest shown")
            rows = rows[:MAX_LISTED]
        runs = []
        for row in rows:
            waiting = "rejected" if row.status == "rejected" else "pending"
            detail = f"{row.type} from {row.source} for {row.subject}"
            if row.target:
                detail += f" to {row.target}"
            if row.outcome:
                detail += f": {row.outcome}"
            if waiting == "pending" and row.attempts:
                detail += f" ({row.attempts} attempts)"
            runs.append(
                StuckRun(
                    "inbox",
                    f"inbox event {row.id}",
                    f"event {waiting}",
                    _one_line(detail),
                    row.received_at,
                    self.url(row.target) if row.target else None,
                )
            )
        return runs


def _close_detail(event: Any, reason: str) -> str:
    kind = event.event_type
    if kind == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_FAILED:
        return failure_text(event.workflow_execution_failed_event_attributes.failure)
    if kind == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_TERMINATED:
        attributes = event.workflow_execution_terminated_event_attributes
        who = f" by {attributes.identity}" if attributes.identity else ""
        return f"terminated{who}: {attributes.reason or 'no reason given'}"
    if kind == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_TIMED_OUT:
        return "the run's execution or run timeout passed"
    return reason


async def find_stuck(
    client: Client,
    sessions: async_sessionmaker[AsyncSession],
    query: StuckQuery,
    url: Callable[[str], str],
) -> StuckReport:
    return await StuckFinder(client, sessions, query, url).find()


def kinds_from(names: Sequence[str]) -> frozenset[Kind]:
    """`--kind` values: each one of KINDS; none given means all."""
    unknown = [n for n in names if n not in KINDS]
    if unknown:
        raise ValueError(f"--kind {unknown[0]!r} is not one of {', '.join(KINDS)}")
    return frozenset(names or KINDS)  # type: ignore[arg-type]
