"""A vendor outage delays one effect, not the case: PagerDuty (a local server speaking its
Events API v2) answering 503 for ten minutes while the case's warning, levels and breach
fire on time; the page lands when PagerDuty is back, or fails, recorded, after its limit;
each recipient is tried on its own; resolve cancels what still retries; the alert is
acknowledged and resolved with the case under one dedup_key."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from temporalio.testing import WorkflowEnvironment

from tests.conftest import AppDb
from tests.definition_support import pinned
from tests.escalation_support import (
    FakePagerDuty,
    add_ticket,
    case,
    current_details,
    escalation_worker,
    eventually,
    keep_history,
    ledger_entries,
    ledger_steps,
    new_ticket_id,
    policy_document,
    settled,
)
from workflows.escalation import (
    Acknowledge,
    EscalationInput,
    EscalationWorkflow,
    Resolve,
    case_workflow_id,
)

pytestmark = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)


def _page(after: str, to: list[str]) -> dict[str, Any]:
    return {
        "after": after,
        "name": "page",
        "actions": [{"type": "notify", "channel": "pager", "to": to, "template": "case-escalated"}],
    }


def _outage_policy(**overrides: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "priorities": ["p1"],
        "slas": [{"priority": "p1", "first_response": "6m", "resolution": "1h"}],
        "warn_at": [50],
        "levels": [
            _page("2m", ["team:on-call"]),
            {"after": "4m", "name": "tier 2", "actions": [{"type": "assign", "queue": "tier-2"}]},
            {
                "after": "8m",
                "name": "support",
                "actions": [
                    {
                        "type": "notify",
                        "channel": "email",
                        "to": ["queue:support"],
                        "template": "case-escalated",
                    }
                ],
            },
        ],
        "repeat": 0,
    }
    spec.update(overrides)
    return policy_document(**spec)


async def test_pagerduty_down_for_ten_minutes_delays_the_page_not_the_case(
    workflow_env: WorkflowEnvironment, app_db: AppDb
) -> None:
    ticket = new_ticket_id()
    await add_ticket(app_db, ticket)
    with FakePagerDuty() as pagerduty:
        pagerduty.down = True
        async with escalation_worker(workflow_env, app_db, pagerduty=pagerduty) as queue:
            opened_at = await workflow_env.get_current_time()
            handle = await workflow_env.client.start_workflow(
                EscalationWorkflow.run,
                EscalationInput(case=case(ticket, opened_at), policy=pinned(_outage_policy())),
                id=case_workflow_id(ticket),
                task_queue=queue,
            )
            await workflow_env.sleep(timedelta(minutes=10))
            state = await handle.query(EscalationWorkflow.state)
            # Everything after the page fired on time while the page kept retrying.
            assert [v.started_at - opened_at for v in state.visits] == [
                timedelta(minutes=m) for m in (2, 4, 8)
            ]
            assert state.queue == "tier-2"
            first_response = state.clocks["first_response"]
            assert first_response.warned_at == [50]
            assert first_response.breached_at == opened_at + timedelta(minutes=6)
            assert [a.step for a in state.in_flight] == ["level-1-cycle-0"]
            [alert] = state.alerts
            assert (alert.recipient, alert.status) == ("team:on-call", "paging")
            assert pagerduty.unavailable > 3 and not pagerduty.accepted
            steps = await ledger_steps(app_db, handle.id)
            assert "breach-first_response" in steps and "level-3-cycle-0" in steps
            details = await current_details(handle)
            assert "level-1-cycle-0 still trying notify pager" in details
            assert "first response breached" in details

            # PagerDuty is back: the retry lands, once, and the case knows it.
            pagerduty.down = False
            await workflow_env.sleep(timedelta(minutes=3))
            state = await settled(handle)
            assert not state.in_flight and not state.failures
            assert [a.status for a in state.alerts] == ["triggered"]
            assert pagerduty.actions() == [("trigger", alert.dedup_key)]

            # The alert follows the case: acknowledged, then resolved, one dedup_key.
            await handle.execute_update(EscalationWorkflow.acknowledge, Acknowledge(by="ana"))

            async def acknowledged() -> bool:
                return pagerduty.alerts.get(alert.dedup_key) == "acknowledged"

            await eventually(acknowledged, "PagerDuty alert acknowledged")
            await handle.execute_update(EscalationWorkflow.resolve, Resolve(by="ana"))
            await handle.result()
            await keep_history(handle, "escalation-pager-outage")
    assert pagerduty.actions() == [
        ("trigger", alert.dedup_key),
        ("acknowledge", alert.dedup_key),
        ("resolve", alert.dedup_key),
    ]
    assert pagerduty.alerts == {alert.dedup_key: "resolved"}
    assert alert.dedup_key == f"case-{ticket}/pager/team:on-call"


async def test_a_page_that_never_lands_fails_after_its_limit_and_resolve_cancels_the_rest(
    workflow_env: WorkflowEnvironment, app_db: AppDb
) -> None:
    ticket = new_ticket_id()
    await add_ticket(app_db, ticket)
    policy = _outage_policy(
        levels=[_page("1m", ["team:on-call"]), _page("10m", ["team:duty-managers"])],
        give_up_after={"pager": "5m"},
    )
    with FakePagerDuty() as pagerduty:
        pagerduty.down = True
        async with escalation_worker(workflow_env, app_db, pagerduty=pagerduty) as queue:
            opened_at = await workflow_env.get_current_time()
            handle = await workflow_env.client.start_workflow(
                EscalationWorkflow.run,
                EscalationInput(case=case(ticket, opened_at), policy=pinned(policy)),
                id=case_workflow_id(ticket),
                task_queue=queue,
            )
            await workflow_env.sleep(timedelta(minutes=8))
            state = await settled(handle)
            assert not state.in_flight
            [failure] = state.failures
            assert failure.step == "level-1-cycle-0"
            assert failure.error.startswith("notify pager to team:on-call: gave up after 5m")
            assert "503" in failure.error
            assert [a.status for a in state.alerts] == ["failed"]
            assert "1 failed, last level-1-cycle-0" in await current_details(handle)
            assert "level-1-cycle-0-failed" in await ledger_steps(app_db, handle.id)

            # Level 2 pages into the outage; the case is resolved while it retries.
            await workflow_env.sleep(timedelta(minutes=3))
            assert [a.step for a in (await handle.query(EscalationWorkflow.state)).in_flight] == [
                "level-2-cycle-0"
            ]
            resolved = await handle.execute_update(EscalationWorkflow.resolve, Resolve(by="ana"))
            assert resolved.state == "resolved"
            pagerduty.down = False  # the resolve of the alerts can land
            summary = await handle.result()
    assert summary.resolved_by == "ana"
    entries = {e.step: e.detail for e in await ledger_entries(app_db, handle.id)}
    assert "level-2-cycle-0-cancelled" in entries
    assert "resolved by ana" in entries["level-2-cycle-0-cancelled"]["why"]
    # No page landed after the resolve; only the resolves of the two alerts went out.
    assert {action for action, _ in pagerduty.actions()} <= {"resolve"}


async def test_each_recipient_is_tried_on_its_own(
    workflow_env: WorkflowEnvironment, app_db: AppDb
) -> None:
    ticket = new_ticket_id()
    await add_ticket(app_db, ticket)
    policy = _outage_policy(levels=[_page("1m", ["team:revoked", "team:on-call"])])
    with FakePagerDuty() as pagerduty:
        pagerduty.refused.add("team:revoked")
        async with escalation_worker(workflow_env, app_db, pagerduty=pagerduty) as queue:
            opened_at = await workflow_env.get_current_time()
            handle = await workflow_env.client.start_workflow(
                EscalationWorkflow.run,
                EscalationInput(case=case(ticket, opened_at), policy=pinned(policy)),
                id=case_workflow_id(ticket),
                task_queue=queue,
            )
            await workflow_env.sleep(timedelta(minutes=2))
            state = await settled(handle)
            [failure] = state.failures
            assert failure.error.startswith("notify pager to team:revoked: ")
            assert "HTTP 401" in failure.error
            statuses = {a.recipient: a.status for a in state.alerts}
            assert statuses == {"team:revoked": "failed", "team:on-call": "triggered"}
            assert pagerduty.actions() == [("trigger", f"case-{ticket}/pager/team:on-call")]
            await handle.execute_update(EscalationWorkflow.resolve, Resolve(by="ana"))
            await handle.result()
