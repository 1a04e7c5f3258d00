"""End to end on the time-skipping server: an escalation level naming `oncall:<schedule>` pages
the person on call when the level fires, a rotation's handoff between two levels pages the
next person, and every page of the case to the schedule is one PagerDuty alert (the same
dedup_key as any other recipient's pages)."""

from __future__ import annotations

from datetime import UTC, timedelta
from pathlib import Path

import pytest
import yaml
from temporalio.testing import WorkflowEnvironment

from store.registry import deploy_folder
from tests.conftest import AppDb
from tests.definition_support import pinned
from tests.escalation_support import (
    FakePagerDuty,
    add_ticket,
    case,
    escalation_worker,
    new_ticket_id,
    policy_document,
    settled,
)
from workflows.escalation import EscalationInput as OpenCase
from workflows.escalation import EscalationWorkflow, case_workflow_id

pytestmark = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)


def _page(after: str) -> dict[str, object]:
    return {
        "after": after,
        "actions": [
            {
                "type": "notify",
                "channel": "pager",
                "to": ["oncall:night-desk"],
                "template": "case-escalated",
            }
        ],
    }


async def test_levels_page_whoever_is_on_call_when_each_fires(
    workflow_env: WorkflowEnvironment, app_db: AppDb, tmp_path: Path
) -> None:
    opened_at = await workflow_env.get_current_time()
    # Hourly turns from the minute the case opens: ana until +60m, then bernd.
    start = opened_at.astimezone(UTC).replace(second=0, microsecond=0)
    schedule = {
        "apiVersion": "opsflow/v1",
        "kind": "schedule",
        "metadata": {"name": "night-desk", "owner": "support"},
        "spec": {
            "timezone": "UTC",
            "layers": [
                {
                    "name": "hourly",
                    "start": start.strftime("%Y-%m-%dT%H:%M"),
                    "turn": "1h",
                    "users": ["ana", "bernd"],
                }
            ],
        },
    }
    (tmp_path / "night-desk.yaml").write_text(yaml.safe_dump(schedule))
    await deploy_folder(app_db.sessions, tmp_path)
    policy = policy_document(
        priorities=["p1"],
        slas=[{"priority": "p1", "first_response": "2h", "resolution": "4h"}],
        warn_at=[],
        on_warning=[],
        levels=[_page("5m"), _page("75m")],
        repeat=0,
    )
    ticket = new_ticket_id()
    await add_ticket(app_db, ticket)
    with FakePagerDuty() as pagerduty:
        async with escalation_worker(workflow_env, app_db, pagerduty=pagerduty) as queue:
            handle = await workflow_env.client.start_workflow(
                EscalationWorkflow.run,
                OpenCase(case=case(ticket, opened_at), policy=pinned(policy)),
                id=case_workflow_id(ticket),
                task_queue=queue,
            )
            await workflow_env.sleep(timedelta(minutes=80))
            state = await settled(handle)
    assert state.levels_fired == 2 and state.failures == []
    key = f"case-{ticket}/pager/oncall:night-desk"
    assert pagerduty.actions() == [("trigger", key), ("trigger", key)]
    paged = [event["payload"]["custom_details"]["recipient"] for event in pagerduty.accepted]
    assert paged == ["agent:ana", "agent:bernd"]
