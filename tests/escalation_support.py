"""Shared set-up for escalation tests: policies, a worker with the real activities on the
sandbox backends, and time helpers for the time-skipping server."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import replace
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import select
from temporalio.api.sdk.v1 import WorkflowMetadata
from temporalio.client import WorkflowHandle
from temporalio.service import RPCError, RPCStatusCode
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from activities.adapters.pagerduty import PagerDutyNotifier
from activities.backends import Backends
from activities.deps import ActivityDeps
from store.models import LedgerEntry, SandboxTicket
from tests.activities.conftest import Reply, Seen, VendorServer
from tests.conftest import AppDb
from tests.definition_support import pinned
from tests.helpers import assert_eventually
from worker.assembly import activity_functions
from workflows.escalation import (
    CaseInfo,
    CaseSummary,
    EscalationInput,
    EscalationStatus,
    EscalationWorkflow,
    case_workflow_id,
)
from workflows.sandbox import WORKFLOW_RUNNER

BERLIN = ZoneInfo("Europe/Berlin")
HISTORIES = Path(__file__).resolve().parent / "histories"


async def keep_history(handle: WorkflowHandle[Any, Any], name: str) -> None:
    """With OPSFLOW_RECORD_HISTORIES=1, save this run's history for the replay test.

    Record again (and commit) only for a change that is meant to alter the commands a
    workflow issues; the replay test then guards every other change."""
    if os.environ.get("OPSFLOW_RECORD_HISTORIES") == "1":
        history = await handle.fetch_history()
        (HISTORIES / f"{name}.json").write_text(history.to_json(), encoding="utf-8")


def policy_document(**spec_overrides: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "priorities": ["p1", "p2", "p3"],
        "calendar": "24x7",
        "slas": [
            {"priority": "p1", "first_response": "1h", "resolution": "4h"},
            {"priority": "p2", "first_response": "2h", "resolution": "8h"},
            {"priority": "p3", "first_response": "4h", "resolution": "1d"},
        ],
        "warn_at": [50],
        "on_warning": [
            {"type": "notify", "channel": "slack", "to": ["assignee"], "template": "sla-warning"}
        ],
        "levels": [
            {
                "after": "10m",
                "name": "agent",
                "actions": [
                    {
                        "type": "notify",
                        "channel": "email",
                        "to": ["queue:support"],
                        "template": "case-escalated",
                    }
                ],
            },
            {"after": "20m", "name": "tier 2", "actions": [{"type": "assign", "queue": "tier-2"}]},
            {
                "after": "30m",
                "name": "duty manager",
                "actions": [
                    {
                        "type": "notify",
                        "channel": "pager",
                        "to": ["team:duty-managers"],
                        "template": "case-escalated",
                    }
                ],
            },
        ],
        "repeat": 1,
        "on_breach": [
            {"type": "crm_note", "text": "Case {{ case.id }} missed its {{ sla.name }} target."}
        ],
    }
    spec.update(spec_overrides)
    return {
        "apiVersion": "opsflow/v1",
        "kind": "escalation",
        "metadata": {"name": "test-policy", "owner": "support-operations"},
        "spec": spec,
    }


def new_ticket_id() -> str:
    return f"T-{uuid.uuid4().hex[:8]}"


async def add_ticket(db: AppDb, ticket_id: str, customer_id: str = "C-0001") -> None:
    async with db.sessions() as session, session.begin():
        session.add(
            SandboxTicket(id=ticket_id, customer_id=customer_id, subject="Invoice shows wrong VAT")
        )


def case(ticket_id: str, opened_at: datetime, priority: str = "p1", **extra: Any) -> CaseInfo:
    return CaseInfo(
        ticket_id=ticket_id,
        customer_id=extra.pop("customer_id", "C-0001"),
        priority=priority,  # type: ignore[arg-type]
        stage=extra.pop("stage", "support"),
        channel="email",
        subject="Invoice shows wrong VAT",
        opened_at=opened_at,
        **extra,
    )


async def start_case(
    env: WorkflowEnvironment, queue: str, ticket_id: str
) -> WorkflowHandle[EscalationWorkflow, CaseSummary]:
    """A P1 case for `ticket_id` under `policy_document()`, opened now (the server's time)."""
    opened_at = await env.get_current_time()
    return await env.client.start_workflow(
        EscalationWorkflow.run,
        EscalationInput(case=case(ticket_id, opened_at), policy=pinned(policy_document())),
        id=case_workflow_id(ticket_id),
        task_queue=queue,
    )


@asynccontextmanager
async def escalation_worker(
    env: WorkflowEnvironment,
    db: AppDb,
    *,
    pagerduty: FakePagerDuty | None = None,
    also: Sequence[type] = (),
) -> AsyncIterator[str]:
    """A worker on a queue of its own; with `pagerduty`, pages go to that local server;
    `also`: more workflow classes (a Recovery that a `start` action starts)."""
    queue = f"escalation-{uuid.uuid4()}"
    backends = None
    if pagerduty is not None:
        sandbox = Backends.sandbox(db.sessions)
        pager = PagerDutyNotifier(pagerduty.routing_key, url=pagerduty.url, timeout=5)
        backends = replace(sandbox, notifiers={**sandbox.notifiers, "pager": pager})
    async with Worker(
        env.client,
        task_queue=queue,
        workflows=[EscalationWorkflow, *also],
        workflow_runner=WORKFLOW_RUNNER,
        activities=activity_functions(ActivityDeps(sessions=db.sessions, backends=backends)),
    ):
        yield queue


class FakePagerDuty:
    """PagerDuty's Events API v2 on 127.0.0.1: POST /v2/enqueue with `trigger` (a payload
    with summary, source and severity), `acknowledge` and `resolve` (a dedup_key); 202
    `{"status": "success", "dedup_key": ...}`, 400 for an invalid event. Alerts fold by
    dedup_key as PagerDuty's do. `down` answers 503 to everything; `refused` recipients get
    401 (as a revoked integration would)."""

    def __init__(self, routing_key: str = "R0UTING") -> None:
        self.routing_key = routing_key
        self.down = False
        self.refused: set[str] = set()
        self.accepted: list[dict[str, Any]] = []
        self.alerts: dict[str, str] = {}
        self.unavailable = 0
        self.server = VendorServer(self._handle)

    @property
    def url(self) -> str:
        return self.server.url

    def __enter__(self) -> FakePagerDuty:
        self.server.__enter__()
        return self

    def __exit__(self, *_: object) -> None:
        self.server.__exit__()

    def _handle(self, seen: Seen) -> Reply:
        if (seen.method, seen.path) != ("POST", "/v2/enqueue"):
            return Reply(404, {"status": "not found"})
        if self.down:
            self.unavailable += 1
            return Reply(503, {"status": "unavailable"})
        event = seen.json()
        action, key = event.get("event_action"), event.get("dedup_key")
        if event.get("routing_key") != self.routing_key:
            return Reply(400, {"status": "invalid event", "errors": ["Invalid routing key"]})
        if action == "trigger":
            payload = event.get("payload") or {}
            if not payload.get("summary") or not payload.get("source"):
                return Reply(400, {"status": "invalid event", "errors": ["payload missing"]})
            if payload.get("severity") not in ("critical", "error", "warning", "info"):
                return Reply(400, {"status": "invalid event", "errors": ["bad severity"]})
            if payload.get("custom_details", {}).get("recipient") in self.refused:
                return Reply(401, {"status": "unauthorized"})
            if self.alerts.get(key) in (None, "resolved"):
                self.alerts[key] = "triggered"
        elif action in ("acknowledge", "resolve"):
            if not key:
                return Reply(400, {"status": "invalid event", "errors": ["dedup_key missing"]})
            if key in self.alerts and self.alerts[key] != "resolved":
                self.alerts[key] = "acknowledged" if action == "acknowledge" else "resolved"
        else:
            return Reply(400, {"status": "invalid event", "errors": ["bad event_action"]})
        self.accepted.append(event)
        return Reply(202, {"status": "success", "message": "Event processed", "dedup_key": key})

    def actions(self) -> list[tuple[str, str]]:
        """(event_action, dedup_key) of every accepted event, in order."""
        return [(e["event_action"], e["dedup_key"]) for e in self.accepted]


def ledger_row(
    workflow_id: str,
    step: str,
    at: datetime,
    *,
    kind: str = "escalation",
    detail: dict[str, Any] | None = None,
    written_at: datetime | None = None,
) -> LedgerEntry:
    """A ledger row as a workflow writes it (its idempotency key), to add to a session."""
    return LedgerEntry(
        idempotency_key=f"{workflow_id}/{step}/ledger",
        workflow_id=workflow_id,
        kind=kind,
        step=step,
        detail=detail or {},
        at=at,
        written_at=written_at or at,
    )


async def ledger_steps(db: AppDb, workflow_id: str) -> list[str]:
    async with db.sessions() as session:
        rows = await session.scalars(
            select(LedgerEntry)
            .where(LedgerEntry.workflow_id == workflow_id)
            .order_by(LedgerEntry.id)
        )
        return [row.step for row in rows]


async def ledger_entries(db: AppDb, workflow_id: str) -> list[LedgerEntry]:
    async with db.sessions() as session:
        rows = await session.scalars(
            select(LedgerEntry)
            .where(LedgerEntry.workflow_id == workflow_id)
            .order_by(LedgerEntry.id)
        )
        return list(rows)


async def skip_to(env: WorkflowEnvironment, moment: datetime) -> None:
    now = await env.get_current_time()
    if moment > now:
        await env.sleep(moment - now)


def next_weekday_at(now: datetime, weekday: int, hour: int, minute: int) -> datetime:
    """The first `weekday` (0 = Monday) at hour:minute Berlin time at least a day after now."""
    local = now.astimezone(BERLIN) + timedelta(days=1)
    day: date = local.date()
    while day.weekday() != weekday:
        day += timedelta(days=1)
    return datetime(day.year, day.month, day.day, hour, minute, tzinfo=BERLIN)


def about(expected: timedelta) -> object:
    """Equal to `expected` to the second: an update lands a few milliseconds after a sleep."""

    class _About:
        def __eq__(self, other: object) -> bool:
            return isinstance(other, timedelta) and abs(other - expected) < timedelta(seconds=1)

        def __repr__(self) -> str:
            return f"about {expected}"

    return _About()


def about_at(expected: datetime) -> object:
    class _AboutAt:
        def __eq__(self, other: object) -> bool:
            return isinstance(other, datetime) and abs(other - expected) < timedelta(seconds=1)

        def __repr__(self) -> str:
            return f"about {expected.isoformat()}"

    return _AboutAt()


async def current_details(handle: WorkflowHandle[Any, Any]) -> str:
    metadata = await handle.query("__temporal_workflow_metadata", result_type=WorkflowMetadata)
    return str(metadata.current_details)


async def eventually(
    check: Callable[[], Awaitable[bool]], what: str, deadline: float = 60.0
) -> None:
    """Poll `check` until it holds (generous deadline: the machine is shared)."""
    await assert_eventually(check, bool, what, within=deadline, every=0.1)


def answer_timed_out(exc: RPCError) -> bool:
    """The server stopped waiting for a busy worker's answer to a query or an update (the
    time-skipping server says "Timeout expired"): asking again is safe, an update with the
    same id being the same command."""
    timed_out = exc.status in (RPCStatusCode.DEADLINE_EXCEEDED, RPCStatusCode.CANCELLED)
    return timed_out or "Timeout expired" in exc.message


async def settled(handle: WorkflowHandle[Any, Any]) -> EscalationStatus:
    """The case's state once the workflow has caught up (profile read, commands recorded)."""
    for _ in range(200):
        try:
            state: EscalationStatus = await handle.query(EscalationWorkflow.state)
        except RPCError as exc:  # a worker busy with a long task (a continue-as-new): again
            if not answer_timed_out(exc):
                raise
            continue
        if state.customer is not None and not state.unrecorded:
            return state
        await asyncio.sleep(0.05)
    raise AssertionError(f"{handle.id} did not settle")


# A policy narrower than the catalog's (which covers every priority): only P1, and only when
# asked for by name (`match: "false"`), for tests of a policy that does not cover a case.
P1_ONLY_POLICY = """\
apiVersion: opsflow/v1
kind: escalation
metadata: {name: p1-only, owner: support-operations}
spec:
  match: "false"
  priorities: [p1]
  calendar: 24x7
  slas:
    - {priority: p1, first_response: 15m, resolution: 4h}
  levels:
    - after: 10m
      actions:
        - {type: notify, channel: email, to: ["queue:support"], template: case-escalated}
"""


async def deploy_p1_only(db: AppDb, folder: Path) -> None:
    """Deploy `p1-only` (P1_ONLY_POLICY) into the registry."""
    from definitions.loader import load_file
    from store.registry import deploy

    path = folder / "p1-only.yaml"
    path.write_text(P1_ONLY_POLICY, encoding="utf-8")
    loaded = load_file(path)
    assert not loaded.problems, loaded.problems
    await deploy(db.sessions, loaded.definitions, deployed_by="test")
