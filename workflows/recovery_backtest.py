"""Backtest of recovery rule sets: the core (`RecoveryEngine`) run over past events in skipped
time, each customer's engine seeing its events at their times, timers firing between them.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field

from definitions.events import EventEnvelope
from definitions.models import PinnedDefinition
from workflows.recovery_context import load_rules
from workflows.recovery_core import RecoveryEngine
from workflows.recovery_model import RecoveryState


class BacktestReport(BaseModel):
    events: int
    customers: int
    rules: dict[str, dict[str, int]]
    approvals: dict[str, int] = Field(default_factory=dict)
    episodes: dict[str, int] = Field(default_factory=dict)


def _customer_of(event: EventEnvelope) -> str | None:
    customer = event.data.get("customer_id")
    return customer if isinstance(customer, str) else None


def backtest(
    rule_sets: list[PinnedDefinition],
    events: list[EventEnvelope],
    customers: dict[str, dict[str, Any]] | None = None,
    until: datetime | None = None,
) -> BacktestReport:
    """Run the rules over past events in skipped time: each customer's engine sees its events
    at their times, and timers (stalls, follow-ups, approval timeouts) fire between them."""
    engines: dict[str, RecoveryEngine] = {}
    timed = sorted((e for e in events if e.time is not None), key=lambda e: e.time or 0)
    for event in timed:
        customer = _customer_of(event)
        if customer is None or event.time is None:
            continue
        engine = engines.get(customer)
        if engine is None:
            state = RecoveryState(customer_id=customer, customer=(customers or {}).get(customer))
            engine = engines[customer] = RecoveryEngine(state, rule_sets)
        _advance(engine, event.time)
        engine.on_event(event, event.time)
    end = until or (timed[-1].time if timed and timed[-1].time else None)
    if end is not None:
        for engine in engines.values():
            _advance(engine, end)
    report = BacktestReport(events=len(timed), customers=len(engines), rules={})
    for engine in engines.values():
        for rule, counts in engine.state.tally.items():
            mine = report.rules.setdefault(rule, {})
            for name, n in counts.items():
                mine[name] = mine.get(name, 0) + n
        for approval in engine.state.approvals:
            report.approvals[approval.status] = report.approvals.get(approval.status, 0) + 1
        for episode in engine.state.episodes:
            report.episodes[episode.status] = report.episodes.get(episode.status, 0) + 1
    for loaded in load_rules(rule_sets):
        report.rules.setdefault(loaded.id, {})
    return report


def _advance(engine: RecoveryEngine, to: datetime) -> None:
    while (wake := engine.next_wake()) is not None and wake <= to:
        engine.on_time(wake)
