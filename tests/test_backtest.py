"""Backtest: the recorded cases re-run under a definition give, per priority, the breaches,
levels and notifications they gave live when the definition is the one they ran under; a
changed definition shows its difference."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from temporalio.testing import WorkflowEnvironment

from store.registry import CATALOG_DIR, deploy_folder, latest
from tests.conftest import AppDb
from tests.escalation_support import add_ticket, escalation_worker, new_ticket_id, settled
from worker.backtest import backtest_escalation, read_past_cases
from worker.simulate import load_definition
from workflows.escalation import (
    Acknowledge,
    CaseInfo,
    EscalationWorkflow,
    Pause,
    Resolve,
    Resume,
    case_workflow_id,
)
from workflows.escalation import EscalationInput as OpenCase
from workflows.recovery import RecoveryWorkflow

pytestmark = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
SUPPORT = CATALOG_DIR / "escalation" / "support.yaml"


async def test_a_backtest_under_the_same_policy_gives_the_recorded_counts(
    workflow_env: WorkflowEnvironment, app_db: AppDb, tmp_path: Path
) -> None:
    await deploy_folder(app_db.sessions, CATALOG_DIR, deployed_by="test")
    support = await latest(app_db.sessions, "support")
    began = await workflow_env.get_current_time()
    # A synthetic month in small: cases of every priority, some acknowledged in time, one
    # paused and resumed, opened over two days.
    plan = [
        ("p1", timedelta(0), timedelta(minutes=5), None),
        ("p1", timedelta(hours=3), None, None),
        ("p2", timedelta(hours=5), timedelta(hours=2), None),
        ("p3", timedelta(hours=20), None, (timedelta(hours=1), timedelta(hours=3))),
        ("p4", timedelta(hours=30), timedelta(hours=6), None),
    ]
    # Breaches reach the customer's recovery workflow, as on a real worker.
    async with escalation_worker(workflow_env, app_db, also=[RecoveryWorkflow]) as queue:
        handles = []
        agenda = []
        for n, (priority, at, ack, pause) in enumerate(plan):
            ticket = new_ticket_id()
            await add_ticket(app_db, ticket)
            agenda.append((at, "open", n, ticket, priority))
            if ack is not None:
                agenda.append((at + ack, "ack", n, ticket, priority))
            if priority == "p2":  # one case resolved within the month, as most are
                agenda.append((at + timedelta(hours=4), "resolve", n, ticket, priority))
            if pause is not None:
                agenda.append((at + pause[0], "pause", n, ticket, priority))
                agenda.append((at + pause[1], "resume", n, ticket, priority))
        agenda.sort(key=lambda item: (item[0], item[2]))
        by_ticket = {}
        for at, what, _, ticket, priority in agenda:
            now = await workflow_env.get_current_time()
            if began + at > now:
                await workflow_env.sleep(began + at - now)
            if what == "open":
                opened = await workflow_env.get_current_time()
                info = CaseInfo(
                    ticket_id=ticket, customer_id="C-0001", priority=priority, opened_at=opened
                )
                by_ticket[ticket] = await workflow_env.client.start_workflow(
                    EscalationWorkflow.run,
                    OpenCase(case=info, policy=support, by="test"),
                    id=case_workflow_id(ticket),
                    task_queue=queue,
                )
                handles.append(by_ticket[ticket])
                await settled(by_ticket[ticket])
            elif what == "ack":
                await by_ticket[ticket].execute_update(
                    EscalationWorkflow.acknowledge, Acknowledge(by="ana")
                )
            elif what == "resolve":
                await by_ticket[ticket].execute_update(
                    EscalationWorkflow.resolve, Resolve(by="ana")
                )
            elif what == "pause":
                await by_ticket[ticket].execute_update(EscalationWorkflow.pause, Pause(by="ana"))
            else:
                await by_ticket[ticket].execute_update(EscalationWorkflow.resume, Resume(by="ana"))
        until = began + timedelta(days=4)
        await workflow_env.sleep(until - await workflow_env.get_current_time())
        for handle in handles:
            await settled(handle)
        past, dropped = await read_past_cases(
            app_db.sessions, began - timedelta(minutes=1), "support"
        )
        assert dropped == []
        for handle in handles[:2] + handles[3:]:  # the p2 case is resolved already
            await handle.execute_update(EscalationWorkflow.resolve, Resolve(by="ana"))

    assert len(past) == len(plan)
    assert [len(c.commands) for c in past] == [1, 0, 2, 2, 1]
    same = await backtest_escalation(load_definition(SUPPORT), past, began, until)
    assert same.cases == len(plan) and not same.skipped
    for priority in ("p1", "p2", "p3", "p4"):
        assert vars(same.now[priority]) == vars(same.then[priority]), priority
    assert sum(o.breaches for o in same.then.values()) > 0
    assert sum(o.levels for o in same.then.values()) > 0

    # A stricter P1 first response (15m -> 3m; P1 runs 24x7): the case acknowledged at five
    # minutes now breaches.
    stricter = tmp_path / "support.yaml"
    stricter.write_text(
        SUPPORT.read_text().replace(
            "{priority: p1, first_response: 15m, resolution: 4h}",
            "{priority: p1, first_response: 3m, resolution: 4h}",
        )
    )
    changed = await backtest_escalation(load_definition(stricter), past, began, until)
    assert changed.now["p1"].breaches == same.then["p1"].breaches + 1
    assert vars(changed.now["p3"]) == vars(same.then["p3"])
