"""PagerDuty follows the case: every page of a case to one recipient triggers the same alert
(one dedup_key), `case ack` acknowledges it and `case resolve` resolves it, against a local
server speaking PagerDuty's Events API v2."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

import pytest
from temporalio.testing import ActivityEnvironment, WorkflowEnvironment

from activities.adapters.pagerduty import PagerDutyNotifier
from activities.backends import Backends
from activities.deps import ActivityDeps
from activities.models import PagerEvent
from activities.notify import NotifyActivities
from tests.conftest import AppDb
from tests.definition_support import pinned
from tests.escalation_support import (
    FakePagerDuty,
    add_ticket,
    case,
    escalation_worker,
    eventually,
    keep_history,
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


def _paging_policy() -> dict[str, object]:
    page = {
        "type": "notify",
        "channel": "pager",
        "to": ["team:on-call"],
        "template": "case-escalated",
    }
    return policy_document(
        priorities=["p1"],
        slas=[{"priority": "p1", "first_response": "1h", "resolution": "4h"}],
        warn_at=[],
        on_warning=[],
        levels=[
            {"after": "5m", "name": "on call", "actions": [page]},
            {"after": "10m", "name": "tier 2", "actions": [{"type": "assign", "queue": "tier-2"}]},
        ],
        repeat=1,
    )


async def test_pages_trigger_one_alert_that_ack_and_resolve_follow(
    workflow_env: WorkflowEnvironment, app_db: AppDb
) -> None:
    ticket = new_ticket_id()
    await add_ticket(app_db, ticket)
    with FakePagerDuty() as pagerduty:
        async with escalation_worker(workflow_env, app_db, pagerduty=pagerduty) as queue:
            opened_at = await workflow_env.get_current_time()
            handle = await workflow_env.client.start_workflow(
                EscalationWorkflow.run,
                EscalationInput(case=case(ticket, opened_at), policy=pinned(_paging_policy())),
                id=case_workflow_id(ticket),
                task_queue=queue,
            )
            # Level 1 pages at 5m and again in the second cycle at 15m: one alert.
            await workflow_env.sleep(timedelta(minutes=16))
            state = await settled(handle)
            assert state.levels_fired == 3
            key = f"case-{ticket}/pager/team:on-call"
            assert pagerduty.actions() == [("trigger", key), ("trigger", key)]
            assert [(a.dedup_key, a.status) for a in state.alerts] == [(key, "triggered")]

            await handle.execute_update(EscalationWorkflow.acknowledge, Acknowledge(by="ana"))

            async def acknowledged() -> bool:
                return pagerduty.alerts.get(key) == "acknowledged"

            await eventually(acknowledged, "the alert acknowledged at PagerDuty")
            assert [a.status for a in (await settled(handle)).alerts] == ["acknowledged"]
            await handle.execute_update(EscalationWorkflow.resolve, Resolve(by="ana"))
            await handle.result()
            await keep_history(handle, "escalation-pagerduty-lifecycle")
    assert pagerduty.actions() == [
        ("trigger", key),
        ("trigger", key),
        ("acknowledge", key),
        ("resolve", key),
    ]
    assert pagerduty.alerts == {key: "resolved"}


async def test_pager_event_activity_sends_once_and_sandbox_has_nothing_to_follow(
    app_db: AppDb,
) -> None:
    env = ActivityEnvironment()
    sandbox = Backends.sandbox(app_db.sessions)
    with FakePagerDuty() as pagerduty:
        pager = PagerDutyNotifier(pagerduty.routing_key, url=pagerduty.url, timeout=5)
        backends = replace(sandbox, notifiers={**sandbox.notifiers, "pager": pager})
        notify = NotifyActivities(ActivityDeps(sessions=app_db.sessions, backends=backends))
        event = PagerEvent(
            idempotency_key="case-1/pager-resolve/0", dedup_key="k", action="resolve"
        )
        first = await env.run(notify.pager_event, event)
        again = await env.run(notify.pager_event, event)
        assert first == again and first.followed and first.backend == "pagerduty"
        assert pagerduty.actions() == [("resolve", "k")]  # the outbox sent it once
    on_sandbox = NotifyActivities(ActivityDeps(sessions=app_db.sessions, backends=sandbox))
    result = await env.run(on_sandbox.pager_event, event)
    assert not result.followed and result.backend == "sandbox"
