"""A burst of events to one customer is decided in chunks, a bounded number of rules'
conditions each, every chunk an activation of its own: decided in one, a few thousand events
ran past the SDK's 2 s deadlock detection, and the task failed again on every retry (the
customer wedged). Every
event still counts once, in arrival order. The dev-server version at thousands of events is
tests/test_limits.py."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest
from temporalio.api.enums.v1 import EventType
from temporalio.client import WorkflowHandle
from temporalio.testing import WorkflowEnvironment

from tests.conftest import AppDb
from tests.definition_support import pinned
from tests.escalation_support import keep_history
from tests.recovery_support import catalog_document, recovery_worker, send, survey, view
from workflows.recovery import CONDITIONS_PER_TASK

EVENTS = 400


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_a_burst_is_decided_in_bounded_tasks_and_counted_once(
    workflow_env: WorkflowEnvironment, app_db: AppDb
) -> None:
    rules = [pinned(catalog_document())]
    customer = "C-BURST-1"
    # Every event is sent before a worker runs: the run finds all of them at once.
    queue = f"recovery-burst-{uuid.uuid4()}"
    handle = await send(workflow_env, queue, customer, survey(customer, 5, comment="0"), rules)
    await asyncio.gather(
        *(handle.signal("event", survey(customer, 5, comment=f"{i}")) for i in range(1, EVENTS))
    )
    async with recovery_worker(workflow_env, app_db, queue):
        await _all_counted(workflow_env, handle)
        history = await handle.fetch_history()
        kinds = [e.event_type for e in history.events]
        # Between two chunks, the local activity's marker, not a timer (a timer of 1 ms took
        # the server about a second): a survey answer costs 2 of the catalog's conditions, so
        # 400 are 8 chunks of CONDITIONS_PER_TASK conditions.
        between_chunks = [
            e
            for e in history.events
            if e.marker_recorded_event_attributes.marker_name == "core_local_activity"
        ]
        assert len(between_chunks) == 2 * EVENTS // CONDITIONS_PER_TASK - 1
        assert EventType.EVENT_TYPE_TIMER_STARTED not in kinds
        await keep_history(handle, "recovery-chunks-in-one-task")


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_a_stream_continues_as_new_carrying_what_it_has_not_decided(
    workflow_env: WorkflowEnvironment, app_db: AppDb
) -> None:
    """A stream that never lets the queue empty still continues as new (between two chunks,
    here past 100 history events), and the new run decides the events the old one had not:
    each counted once, none refused."""
    rules = [pinned(catalog_document())]
    customer = "C-STREAM-1"
    async with recovery_worker(workflow_env, app_db) as queue:
        first = await send(
            workflow_env,
            queue,
            customer,
            survey(customer, 5, comment="0"),
            rules,
            max_history_events=100,
        )
        await asyncio.gather(
            *(first.signal("event", survey(customer, 5, comment=f"{i}")) for i in range(1, EVENTS))
        )
        latest = workflow_env.client.get_workflow_handle(first.id)
        await _all_counted(workflow_env, latest)
        assert (await latest.describe()).run_id != first.result_run_id
        await keep_history(
            workflow_env.client.get_workflow_handle(first.id, run_id=first.result_run_id),
            "recovery-continue-mid-stream",
        )


async def _all_counted(env: WorkflowEnvironment, handle: WorkflowHandle[Any, Any]) -> None:
    """Wait (skipping time) until the customer's workflow has counted every event."""
    for _ in range(200):
        status = await view(handle)
        if status.state.events_seen == EVENTS:
            break
        await env.sleep(1)
    assert status.state.events_seen == EVENTS
