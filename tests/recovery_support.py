"""Shared set-up for recovery tests: the catalog's rule set (and variants), events, a worker
with the real activities on the sandbox backends, and what the sandbox recorded."""

from __future__ import annotations

import contextlib
import copy
import uuid
from collections.abc import AsyncIterator, Awaitable
from contextlib import asynccontextmanager
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

import yaml
from sqlalchemy import func, select
from temporalio.client import WorkflowHandle, WorkflowUpdateFailedError
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from activities.deps import ActivityDeps
from client.recovery import recovery_signal_args
from definitions.events import EventEnvelope
from definitions.loader import load_file
from definitions.models import PinnedDefinition
from store.models import SandboxCredit, SandboxCrmNote, SandboxNotification, SandboxTicket
from store.registry import deploy, get
from tests.conftest import AppDb
from worker.assembly import activity_functions
from workflows.escalation import EscalationWorkflow
from workflows.recovery import RecoveryWorkflow
from workflows.recovery_model import (
    RecoveryInput,
    RecoveryRules,
    RecoveryStatus,
    customer_workflow_id,
)
from workflows.sandbox import WORKFLOW_RUNNER

STARTED: dict[str, set[str]] = {}
CATALOG = Path(__file__).resolve().parents[1] / "definitions" / "catalog" / "recovery"
CATALOG_FILE = CATALOG / "service-recovery.yaml"


def catalog_document() -> dict[str, Any]:
    text = CATALOG_FILE.read_text(encoding="utf-8")
    document: dict[str, Any] = yaml.safe_load(text)
    return document


def variant(**changes: Any) -> dict[str, Any]:
    """The catalog document with `spec` keys replaced, and `rule__<name>` patches merged."""
    document = copy.deepcopy(catalog_document())
    spec = document["spec"]
    for key, value in changes.items():
        if key.startswith("rule__"):
            name = key.removeprefix("rule__").replace("_", "-")
            rule = next(r for r in spec["rules"] if r["name"] == name)
            rule.update(value)
        else:
            spec[key] = value
    return document


async def deploy_document(db: AppDb, folder: Path, document: dict[str, Any]) -> PinnedDefinition:
    """Deploy `document` to the registry (a new version when its content is new)."""
    path = folder / f"{uuid.uuid4().hex[:8]}.yaml"
    path.write_text(yaml.safe_dump(document, sort_keys=False), encoding="utf-8")
    [result] = await deploy(db.sessions, load_file(path).definitions, deployed_by="test")
    return await get(db.sessions, result.name, result.version)


def new_customer() -> str:
    """A seeded sandbox customer (so the CRM has a profile), each test its own workflow id."""
    return "C-0001"


def unique_customer(db_index: int) -> str:
    return f"C-{db_index:04d}"


def event(
    event_type: str,
    data: dict[str, Any],
    at: datetime | None = None,
    event_id: str | None = None,
    source: str = "test",
) -> EventEnvelope:
    return EventEnvelope(
        id=event_id or uuid.uuid4().hex[:12],
        source=source,
        type=event_type,
        subject=str(data.get("customer_id", "")),
        time=at,
        data=data,
    )


def survey(
    customer: str,
    score: int,
    at: datetime | None = None,
    *,
    ticket: str | None = None,
    comment: str | None = None,
    **kw: Any,
) -> EventEnvelope:
    """A CSAT survey answer, about `ticket` when one is given."""
    data: dict[str, Any] = {"customer_id": customer, "score": score}
    if ticket is not None:
        data["ticket_id"] = ticket
    if comment is not None:
        data["comment"] = comment
    return event("survey.responded", data, at, **kw)


def contact(customer: str, at: datetime | None = None, **kw: Any) -> EventEnvelope:
    return event("contact.received", {"customer_id": customer, "channel": "phone"}, at, **kw)


@asynccontextmanager
async def recovery_worker(
    env: WorkflowEnvironment, db: AppDb, queue: str | None = None
) -> AsyncIterator[str]:
    queue = queue or f"recovery-{uuid.uuid4()}"
    async with Worker(
        env.client,
        task_queue=queue,
        workflows=[RecoveryWorkflow, EscalationWorkflow],
        workflow_runner=WORKFLOW_RUNNER,
        activities=activity_functions(ActivityDeps(sessions=db.sessions)),
    ):
        try:
            yield queue
        finally:
            # A run left waiting would hold the time-skipping server's clock for later tests.
            for workflow_id in STARTED.pop(queue, set()):
                with contextlib.suppress(RPCError):
                    await env.client.get_workflow_handle(workflow_id).terminate("test over")


async def send(
    env: WorkflowEnvironment,
    queue: str,
    customer: str,
    envelope: EventEnvelope,
    rules: list[PinnedDefinition],
    *,
    with_rules: Literal["digest", "full"] | None = None,
    max_history_events: int = 10_000,
    workflow_id: str | None = None,
) -> WorkflowHandle[RecoveryWorkflow, Any]:
    """What the intake does: signal-with-start `customer-<id>`; `with_rules` adds the rule
    sets' digest (as the intake sends it) or the rule sets themselves (as runs recorded
    before the digest carry them)."""
    STARTED.setdefault(queue, set()).add(workflow_id or customer_workflow_id(customer))
    args: list[Any] = [envelope]
    if with_rules == "digest":
        args = recovery_signal_args(envelope, RecoveryRules(rules=rules))
    elif with_rules == "full":
        args.append(RecoveryRules(rules=rules))
    return await env.client.start_workflow(
        RecoveryWorkflow.run,
        RecoveryInput(rules=rules, max_history_events=max_history_events),
        id=workflow_id or customer_workflow_id(customer),
        task_queue=queue,
        start_signal="event",
        start_signal_args=args,
    )


async def view(handle: WorkflowHandle[Any, Any]) -> RecoveryStatus:
    result: RecoveryStatus = await handle.query(RecoveryWorkflow.view)
    return result


async def settle(env: WorkflowEnvironment, handle: WorkflowHandle[Any, Any]) -> RecoveryStatus:
    """Let the workflow handle what it was sent (the time-skipping server runs it)."""
    await env.sleep(1)
    return await view(handle)


async def sandbox_counts(db: AppDb, customer: str, workflow_id: str) -> dict[str, int]:
    async with db.sessions() as session:
        apologies = await session.scalar(
            select(func.count())
            .select_from(SandboxNotification)
            .where(
                SandboxNotification.idempotency_key.like(f"{workflow_id}/%"),
                SandboxNotification.template == "apology",
            )
        )
        notifications = await session.scalar(
            select(func.count())
            .select_from(SandboxNotification)
            .where(SandboxNotification.idempotency_key.like(f"{workflow_id}/%"))
        )
        tickets = await session.scalar(
            select(func.count())
            .select_from(SandboxTicket)
            .where(SandboxTicket.customer_id == customer)
        )
        notes = await session.scalar(
            select(func.count())
            .select_from(SandboxCrmNote)
            .where(SandboxCrmNote.customer_id == customer)
        )
        credits = await session.scalar(
            select(func.count())
            .select_from(SandboxCredit)
            .where(SandboxCredit.customer_id == customer)
        )
    return {
        "apologies": apologies or 0,
        "notifications": notifications or 0,
        "tickets": tickets or 0,
        "notes": notes or 0,
        "credits": credits or 0,
    }


async def credits_of(db: AppDb, customer: str) -> list[str]:
    async with db.sessions() as session:
        rows = await session.scalars(
            select(SandboxCredit).where(SandboxCredit.customer_id == customer)
        )
        return [f"{row.amount:.2f} {row.currency}" for row in rows]


async def refusal(update: Awaitable[Any]) -> str:
    """The reason a validated update was refused (fails the test if it was accepted)."""
    try:
        await update
    except WorkflowUpdateFailedError as exc:
        cause = exc.cause
        return cause.message if isinstance(cause, ApplicationError) else str(cause)
    raise AssertionError("the update was accepted")
