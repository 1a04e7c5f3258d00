"""Workflow releases (workflows/releases.py): a new run records its release's one marker; a
worker with `workflow_releases` off records each change's own, as an opsflow from before
releases did, and today's code replays both."""

from __future__ import annotations

import pytest
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Replayer

from activities.deps import ActivityDeps
from client.settings import Settings
from tests.conftest import AppDb
from tests.escalation_support import add_ticket, new_ticket_id, start_case
from tests.helpers import NEWEST_RELEASE, patches_taken
from worker.assembly import WORKFLOWS, build_worker
from workflows.escalation import EscalationWorkflow, Resolve
from workflows.releases import RELEASES
from workflows.sandbox import WORKFLOW_RUNNER


def test_the_settings_read_workflow_releases(monkeypatch: pytest.MonkeyPatch) -> None:
    assert Settings().workflow_releases
    monkeypatch.setenv("OPSFLOW_WORKFLOW_RELEASES", "false")
    assert not Settings().workflow_releases


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
@pytest.mark.parametrize("releases", [True, False], ids=["releases", "each-change-apart"])
async def test_a_new_case_records_its_release_or_each_change(
    workflow_env: WorkflowEnvironment, app_db: AppDb, releases: bool
) -> None:
    ticket = new_ticket_id()
    await add_ticket(app_db, ticket)
    queue = f"releases-{ticket}"
    settings = Settings(task_queue=queue, workflow_releases=releases)
    async with build_worker(workflow_env.client, settings, ActivityDeps(sessions=app_db.sessions)):
        handle = await start_case(workflow_env, queue, ticket)
        await handle.execute_update(EscalationWorkflow.resolve, Resolve(by="ana"))
        await handle.result()
    history = await handle.fetch_history()
    taken = patches_taken(history)
    if releases:
        assert taken == [NEWEST_RELEASE]
    else:
        # The changes a case opened and resolved at once asks for, each under its own id.
        assert NEWEST_RELEASE not in taken
        assert {"escalation-concurrent-actions", "escalation-sla-metrics"} <= set(taken)
        assert set(taken) <= RELEASES[0][1]
    # Either history replays on today's code.
    replayer = Replayer(
        workflows=list(WORKFLOWS),
        data_converter=pydantic_data_converter,
        workflow_runner=WORKFLOW_RUNNER,
    )
    await replayer.replay_workflow(history)
