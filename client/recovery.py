"""Client-side operations on customers' recovery workflows: what the intake passes when it
signals-with-start `customer-<id>`, the commands of `opsflow recovery`, and backtests."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio.client import Client, WorkflowExecutionStatus, WorkflowUpdateFailedError
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError, RPCStatusCode

from client.updates import execute_update
from definitions.errors import OpsflowError
from definitions.events import EventEnvelope, parse_event_data
from definitions.loader import load_file
from definitions.models import PinnedDefinition
from store.registry import latest_of_kind
from workflows.recovery import RecoveryWorkflow
from workflows.recovery_backtest import BacktestReport, backtest
from workflows.recovery_model import (
    RecoveryInput,
    RecoveryRules,
    RecoveryStatus,
    RulesDigest,
    customer_workflow_id,
    rules_digest,
)

MAX_BACKTEST_EVENTS = 1_000_000


class RecoveryCommandRefused(OpsflowError):
    """The recovery workflow refused the command (or is not running); the message says why."""


async def recovery_rules(sessions: async_sessionmaker[AsyncSession]) -> RecoveryRules:
    """The recovery rule sets deployed now."""
    return RecoveryRules(rules=await latest_of_kind(sessions, "recovery"))


async def recovery_start_input(sessions: async_sessionmaker[AsyncSession]) -> RecoveryInput:
    """The `Recovery` workflow's start argument: the rule sets deployed now, pinned."""
    return RecoveryInput(rules=(await recovery_rules(sessions)).rules)


def recovery_signal_args(event: EventEnvelope, rules: RecoveryRules) -> list[Any]:
    """The `event` signal's arguments: the envelope and the digest of the rule sets deployed
    now (a running workflow whose own differ loads them once and switches from this event
    on); the rule sets themselves travel only in the start input."""
    return [event, RulesDigest(digest=rules_digest(rules.rules))]


async def _why_not_running(client: Client, customer: str) -> str:
    try:
        described = await client.get_workflow_handle(customer_workflow_id(customer)).describe()
    except RPCError as exc:
        if exc.status == RPCStatusCode.NOT_FOUND:
            return f"customer {customer} has no recovery workflow (no event has reached it yet)"
        raise
    if described.status == WorkflowExecutionStatus.COMPLETED:
        return f"the recovery workflow of customer {customer} finished: nothing was pending"
    status = described.status.name.lower() if described.status else "closed"
    return f"the recovery workflow of customer {customer} is {status}"


async def show_customer(client: Client, customer: str) -> RecoveryStatus:
    handle = client.get_workflow_handle_for(RecoveryWorkflow.run, customer_workflow_id(customer))
    try:
        result: RecoveryStatus = await handle.query(RecoveryWorkflow.view)
    except RPCError as exc:
        if exc.status != RPCStatusCode.NOT_FOUND:
            raise
        raise RecoveryCommandRefused(await _why_not_running(client, customer)) from None
    except Exception as exc:  # a query on a closed run fails with a workflow query error
        if "query" not in type(exc).__name__.lower():
            raise
        raise RecoveryCommandRefused(await _why_not_running(client, customer)) from None
    return result


async def command_customer(
    client: Client, customer: str, update: str, argument: BaseModel
) -> RecoveryStatus:
    """Send `update` (approve, reject, silence, unsilence, close_episode); a refusal raises
    RecoveryCommandRefused with the workflow's reason."""
    handle = client.get_workflow_handle(customer_workflow_id(customer))
    try:
        result = await execute_update(handle, update, args=[argument], result_type=RecoveryStatus)
    except WorkflowUpdateFailedError as exc:
        cause = exc.cause
        reason = cause.message if isinstance(cause, ApplicationError) else str(cause or exc)
        raise RecoveryCommandRefused(f"customer {customer} refused: {reason}") from None
    except RPCError as exc:
        if exc.status != RPCStatusCode.NOT_FOUND:
            raise
        raise RecoveryCommandRefused(await _why_not_running(client, customer)) from None
    return result


def read_rule_file(path: Path) -> list[PinnedDefinition]:
    """The recovery definitions in a file, pinned as version 0 (not deployed)."""
    result = load_file(path)
    if result.problems:
        first = result.problems[0]
        raise OpsflowError(f"{first}")
    rules = [
        PinnedDefinition(
            name=loaded.name,
            version=0,
            content_hash=loaded.content_hash,
            kind="recovery",
            definition=loaded.definition,
        )
        for loaded in result.definitions
        if loaded.kind == "recovery"
    ]
    if not rules:
        raise OpsflowError(f"{path}: no recovery definition in this file")
    return rules


def read_events(path: Path) -> list[EventEnvelope]:
    """Events, one JSON object a line (the CloudEvents fields: id, source, type, time, data;
    `subject` optional); a bad line is refused with its number."""
    events: list[EventEnvelope] = []
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise OpsflowError(f"cannot read {path}: {exc}") from None
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        if len(events) >= MAX_BACKTEST_EVENTS:
            raise OpsflowError(f"{path}: more than {MAX_BACKTEST_EVENTS} events")
        try:
            raw = json.loads(line)
            if not isinstance(raw, dict):
                raise ValueError("a line is one JSON object")
            raw.setdefault("subject", str(raw.get("data", {}).get("customer_id", "")))
            envelope = EventEnvelope.model_validate(raw)
            parse_event_data(envelope.type, envelope.data)
        except KeyError as exc:
            raise OpsflowError(f"{path}:{number}: unknown event type {exc}") from None
        except (ValueError, RecursionError, ValidationError) as exc:
            first = str(exc).splitlines()[0][:200]
            raise OpsflowError(f"{path}:{number}: bad event: {first}") from None
        if envelope.time is None:
            raise OpsflowError(f"{path}:{number}: the event has no time")
        events.append(envelope)
    return events


def read_profiles(path: Path) -> dict[str, dict[str, Any]]:
    """Customer profiles for conditions: a JSON object of customer id -> profile."""
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise OpsflowError(f"cannot read {path}: {str(exc)[:200]}") from None
    if not isinstance(raw, dict) or not all(isinstance(v, dict) for v in raw.values()):
        raise OpsflowError(f"{path}: give a JSON object of customer id -> profile object")
    return {str(k): {**v, "id": str(k)} for k, v in raw.items()}


def run_backtest(
    rule_file: Path, events_file: Path, profiles_file: Path | None = None
) -> BacktestReport:
    profiles = read_profiles(profiles_file) if profiles_file else None
    return backtest(read_rule_file(rule_file), read_events(events_file), profiles)
