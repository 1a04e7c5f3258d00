"""Recovery end to end on the time-skipping server: an SLA breach from a real escalation case,
backtest against a live run, bounded history, the client side and the backtest command."""

from __future__ import annotations

import asyncio
import json
from datetime import timedelta
from pathlib import Path

import pytest
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment
from typer.testing import CliRunner

from client.recovery import (
    RecoveryCommandRefused,
    command_customer,
    read_events,
    recovery_signal_args,
    recovery_start_input,
    show_customer,
)
from definitions.events import EventEnvelope
from definitions.loader import load_file
from store.registry import deploy, latest_of_kind
from tests.conftest import AppDb
from tests.definition_support import pinned
from tests.escalation_support import add_ticket, case, policy_document
from tests.recovery_support import (
    CATALOG_FILE,
    STARTED,
    catalog_document,
    contact,
    event,
    recovery_worker,
    sandbox_counts,
    send,
    settle,
    survey,
    view,
)
from worker.cli import app
from workflows.escalation import EscalationInput as OpenCase
from workflows.escalation import EscalationWorkflow, case_workflow_id
from workflows.recovery import RecoveryWorkflow
from workflows.recovery_backtest import backtest
from workflows.recovery_context import MAX_SEEN
from workflows.recovery_core import RecoveryEngine
from workflows.recovery_model import Approve, RecoveryRules, RecoveryState, customer_workflow_id

SQLITE = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
SLA = "service-recovery/sla-breached"


async def _deploy_catalog(db: AppDb) -> None:
    await deploy(db.sessions, load_file(CATALOG_FILE).definitions, deployed_by="test")


@SQLITE
async def test_an_sla_breach_from_a_real_case_acts_exactly_once(
    workflow_env: WorkflowEnvironment, app_db: AppDb
) -> None:
    await _deploy_catalog(app_db)
    customer, ticket = "C-0020", "T-rec-breach"
    await add_ticket(app_db, ticket, customer)
    async with recovery_worker(workflow_env, app_db) as queue:
        before = await sandbox_counts(app_db, customer, customer_workflow_id(customer))
        opened = await workflow_env.get_current_time()
        STARTED.setdefault(queue, set()).update(
            {case_workflow_id(ticket), customer_workflow_id(customer)}
        )
        await workflow_env.client.start_workflow(
            EscalationWorkflow.run,
            OpenCase(
                case=case(ticket, opened, customer_id=customer),
                policy=pinned(policy_document()),
            ),
            id=case_workflow_id(ticket),
            task_queue=queue,
        )
        # p1: first response breaches after 1h, resolution after 4h: another SLA, another
        # dedup key, but the rule already acted in the open episode and has no ladder.
        await workflow_env.sleep(timedelta(hours=4, minutes=5))
        handle = workflow_env.client.get_workflow_handle(customer_workflow_id(customer))
        state = await view(handle)
        keys = set(state.state.seen)
        assert f"escalation/case-{ticket}/first_response" in keys
        assert f"escalation/case-{ticket}/resolution" in keys
        assert state.state.tally[SLA] == {"fired": 1, "ladder_exhausted": 1}
        assert state.state.rule_sets == ["service-recovery@1"]
        # The activity retried (or the breach re-sent) is the same event: nothing more.
        again = EventEnvelope(
            id=f"case-{ticket}/first_response",
            source="escalation",
            type="sla.breached",
            subject=ticket,
            data={},
        )
        await handle.signal(RecoveryWorkflow.event, again)
        state = await settle(workflow_env, handle)
        assert state.state.tally[SLA] == {"fired": 1, "ladder_exhausted": 1}
        counts = await sandbox_counts(app_db, customer, handle.id)
        assert counts["apologies"] - before["apologies"] == 1
        # One CRM note from recovery, two from the case policy's own on_breach.
        assert counts["notes"] - before["notes"] == 3


def _timeline(customer: str, start: object) -> list[tuple[timedelta, EventEnvelope]]:
    assert hasattr(start, "tzinfo")
    plan: list[tuple[timedelta, EventEnvelope]] = []
    hours = [0, 20, 44, 45, 46, 47, 70, 100, 200, 201, 202, 400]
    kinds = ["c", "c", "c", "s1", "s2", "dup", "s1", "sent", "c", "c", "c", "s1"]
    for n, (hour, kind) in enumerate(zip(hours, kinds, strict=True)):
        at = start + timedelta(hours=hour)  # type: ignore[operator]
        if kind == "c":
            envelope = contact(customer, at, event_id=f"e{n}")
        elif kind == "dup":
            envelope = survey(customer, 2, at, event_id="e4")
        elif kind == "sent":
            envelope = event(
                "sentiment.scored", {"customer_id": customer, "score": -0.9}, at, event_id=f"e{n}"
            )
        else:
            envelope = survey(customer, int(kind[1]), at, event_id=f"e{n}")
        plan.append((timedelta(hours=hour), envelope))
    return plan


@SQLITE
async def test_backtest_counts_match_a_live_run(
    workflow_env: WorkflowEnvironment, app_db: AppDb
) -> None:
    customer = "C-0021"
    rules = [pinned(catalog_document())]
    async with recovery_worker(workflow_env, app_db) as queue:
        start = await workflow_env.get_current_time()
        timeline = _timeline(customer, start)
        handle = None
        for offset, envelope in timeline:
            now = await workflow_env.get_current_time()
            if start + offset > now:
                await workflow_env.sleep(start + offset - now)
            stamped = envelope.model_copy(update={"time": await workflow_env.get_current_time()})
            handle = await send(workflow_env, queue, customer, stamped, rules)
            await workflow_env.sleep(1)
        assert handle is not None
        live = await view(handle)
    # The backtest gets the same CRM profile the live run read (conditions read the tier).
    assert live.state.customer is not None and live.state.customer["tier"] == "vip"
    profiles = {customer: live.state.customer}
    report = backtest(rules, [e for _, e in timeline], profiles, until=start + timedelta(hours=400))
    expected = {rule: counts for rule, counts in report.rules.items() if counts}
    assert live.state.tally == expected
    # Something of each kind happened, so the comparison means something.
    assert expected["service-recovery/repeat-contacts"]["fired"] == 1
    # Two ladder steps in episode 1; the last survey answers the follow-up (not recovered),
    # which hands the episode to a person: it stays open, so the low score climbs the ladder.
    assert expected["service-recovery/low-csat"] == {"fired": 1, "laddered": 3}
    assert report.episodes == {"open": 1}
    [episode] = live.state.episodes
    assert episode.status == "open" and episode.handed_over_to == "cx-review"
    # A VIP's negative sentiment while the low-CSAT episode is open only adds to it.
    assert expected["service-recovery/vip-negative-sentiment"] == {"inhibition": 1}
    assert report.events == len(timeline)


def test_the_engine_state_stays_bounded_over_10000_events() -> None:
    from datetime import UTC, datetime

    rules = [pinned(catalog_document())]
    engine = RecoveryEngine(RecoveryState(customer_id="C-0022"), rules)
    start = datetime(2026, 1, 5, 9, tzinfo=UTC)
    for n in range(10_000):
        at = start + timedelta(minutes=7 * n)
        kind = n % 4
        if kind == 0:
            envelope = contact("C-0022", at, event_id=f"e{n}")
        elif kind == 1:
            envelope = survey("C-0022", 1 + n % 5, at, event_id=f"e{n}")
        else:
            envelope = event(
                "sentiment.scored", {"customer_id": "C-0022", "score": 0.1}, at, event_id=f"e{n}"
            )
        while (wake := engine.next_wake()) is not None and wake <= at:
            engine.on_time(wake)
        engine.on_event(envelope, at)
    s = engine.state
    assert s.events_seen == 10_000
    assert len(s.seen) <= MAX_SEEN
    assert len(s.decisions) <= 100 and len(s.suppressed) <= 100
    assert len(s.episodes) <= 21
    assert len(s.model_dump_json()) < 250_000


@SQLITE
async def test_history_stays_bounded_over_many_events(
    workflow_env: WorkflowEnvironment, app_db: AppDb
) -> None:
    customer = "C-0023"
    rules = [pinned(catalog_document())]
    async with recovery_worker(workflow_env, app_db) as queue:
        handle = await send(
            workflow_env, queue, customer, contact(customer), rules, max_history_events=300
        )
        for _ in range(10):
            await asyncio.gather(
                *(
                    handle.signal(
                        RecoveryWorkflow.event,
                        event("sentiment.scored", {"customer_id": customer, "score": 0.2}),
                    )
                    for _ in range(100)
                )
            )
            await workflow_env.sleep(1)
        state = await settle(workflow_env, handle)
        assert state.state.events_seen == 1_001
        history = await handle.fetch_history()
        assert len(history.events) < 600
        assert history.events[
            0
        ].workflow_execution_started_event_attributes.continued_execution_run_id


@SQLITE
async def test_client_side_start_input_commands_and_refusals(
    workflow_env: WorkflowEnvironment, app_db: AppDb
) -> None:
    await _deploy_catalog(app_db)
    customer = "C-0024"
    start = await recovery_start_input(app_db.sessions)
    assert [p.ref for p in start.rules] == [
        p.ref for p in await latest_of_kind(app_db.sessions, "recovery")
    ]
    client: Client = workflow_env.client
    async with recovery_worker(workflow_env, app_db) as queue:
        envelope = survey(customer, 1)
        args = recovery_signal_args(envelope, RecoveryRules(rules=start.rules))
        STARTED.setdefault(queue, set()).add(customer_workflow_id(customer))
        await client.start_workflow(
            RecoveryWorkflow.run,
            start,
            id=customer_workflow_id(customer),
            task_queue=queue,
            start_signal="event",
            start_signal_args=args,
        )
        await workflow_env.sleep(1)
        shown = await show_customer(client, customer)
        assert shown.state.tally["service-recovery/low-csat"] == {"fired": 1}
        with pytest.raises(RecoveryCommandRefused, match="no approval is waiting"):
            await command_customer(client, customer, "approve", Approve(by="lead-ana"))
        with pytest.raises(RecoveryCommandRefused, match="has no recovery workflow"):
            await show_customer(client, "C-9999")


def test_backtest_command_prints_counts_per_rule(tmp_path: Path) -> None:
    from datetime import UTC, datetime

    start = datetime(2026, 1, 5, 9, tzinfo=UTC)
    lines = [e.model_dump_json() for _, e in _timeline("C-0030", start)] + [
        e.model_dump_json() for _, e in _timeline("C-0031", start + timedelta(days=1))
    ]
    events = tmp_path / "events.jsonl"
    events.write_text("\n".join(lines) + "\n", encoding="utf-8")
    result = CliRunner().invoke(
        app, ["recovery", "backtest", str(CATALOG_FILE), "--events", str(events), "--json"]
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["customers"] == 2
    # Per customer: one episode, handed to a person when the follow-up scores 1 (it stays
    # open, so the last low score climbs the ladder).
    assert report["rules"]["service-recovery/low-csat"] == {"fired": 2, "laddered": 6}
    assert report["episodes"] == {"open": 2}
    assert report["rules"]["service-recovery/repeat-contacts"]["fired"] == 2
    table = CliRunner().invoke(
        app, ["recovery", "backtest", str(CATALOG_FILE), "--events", str(events)]
    )
    assert table.exit_code == 0
    assert "backtest: 24 events, 2 customers" in table.output
    assert "approvals: skipped 2" in table.output  # the catalog never pays unasked

    bad = tmp_path / "bad.jsonl"
    bad.write_text(lines[0] + "\n" + '{"id": "x", "type": "survey.responded"}\n', encoding="utf-8")
    refused = CliRunner().invoke(
        app, ["recovery", "backtest", str(CATALOG_FILE), "--events", str(bad)]
    )
    assert refused.exit_code == 1
    assert "bad.jsonl:2: bad event" in refused.output
    assert "Traceback" not in refused.output
    assert len(read_events(events)) == len(lines)
