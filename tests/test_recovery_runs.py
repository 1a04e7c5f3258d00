"""Exactly once across runs of `customer-<id>` (issue 13, item 2), on the dev server.

A recovery run ends when nothing is pending; the relay may deliver an event again after an
intake crash (delivered, not yet marked). The ending run records its state in the ledger and
the next run loads it before its first event, so the duplicate reaching the new run changes
nothing, and a genuinely new event in a later run acts (its step names continue, so its
idempotency keys do not collide with the first run's).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from temporalio.client import WorkflowExecutionStatus, WorkflowHandle
from temporalio.testing import WorkflowEnvironment

from tests.conftest import AppDb
from tests.definition_support import pinned
from tests.escalation_support import ledger_steps
from tests.recovery_support import contact, recovery_worker, sandbox_counts, send, view
from workflows.recovery import RecoveryWorkflow
from workflows.recovery_model import CloseEpisode, customer_workflow_id

pytestmark = [pytest.mark.devserver]
SQLITE = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)


def _note_on_every_contact() -> dict[str, Any]:
    """A rule set that acts on each contact and keeps nothing pending once its episode is
    closed (no dedup, cooldown, caps or follow-up), so the run ends."""
    return {
        "apiVersion": "opsflow/v1",
        "kind": "recovery",
        "metadata": {"name": "note-each-contact", "owner": "customer-experience"},
        "spec": {
            "calendar": "24x7",
            "rules": [
                {
                    "name": "contact-note",
                    "trigger": {"event": "contact.received"},
                    "actions": [{"type": "crm_note", "text": "Contact {{ event.id }}."}],
                }
            ],
        },
    }


async def _eventually(check: Callable[[], Awaitable[bool]], seconds: float = 60) -> None:
    deadline = asyncio.get_running_loop().time() + seconds
    while not await check():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.2)


async def _ended(handle: WorkflowHandle[Any, Any]) -> None:
    async def done() -> bool:
        described = await handle.describe()
        return described.status == WorkflowExecutionStatus.COMPLETED

    await _eventually(done)


async def _close_and_end(handle: WorkflowHandle[Any, Any]) -> None:
    async def has_episode() -> bool:
        shown = await view(handle)
        return shown.state.open_episode() is not None and shown.ops_state != "acting"

    await _eventually(has_episode)
    await handle.execute_update(RecoveryWorkflow.close_episode, CloseEpisode(by="ana"))
    await _ended(handle)


@SQLITE
async def test_a_duplicate_delivery_into_a_new_run_is_not_counted_and_triggers_nothing(
    dev_env: WorkflowEnvironment, app_db: AppDb
) -> None:
    customer = "C-0037"  # seeded (the CRM has a profile); no other test uses it
    workflow_id = customer_workflow_id(customer)
    rules = [pinned(_note_on_every_contact())]
    first = contact(customer, event_id="c-1", source="crm")
    async with recovery_worker(dev_env, app_db) as queue:
        handle = await send(dev_env, queue, customer, first, rules)
        await _close_and_end(handle)
        after_first = await sandbox_counts(app_db, customer, workflow_id)
        assert after_first["notes"] == 1
        steps = await ledger_steps(app_db, workflow_id)

        # The relay delivers the same event again: a new run of customer-<id> starts.
        again = await send(dev_env, queue, customer, first, rules)
        assert again.result_run_id != handle.result_run_id
        await _ended(again)
        result = await again.result()
        assert result.events_seen == 1  # carried from the first run, not counted again
        assert result.episodes == 1
        assert await sandbox_counts(app_db, customer, workflow_id) == after_first
        # Nothing decided, nothing recorded: the ledger has not grown either.
        assert await ledger_steps(app_db, workflow_id) == steps

        # A new event in a third run acts, under step names of its own.
        later = await send(dev_env, queue, customer, contact(customer, event_id="c-2"), rules)
        await _close_and_end(later)
        counts = await sandbox_counts(app_db, customer, workflow_id)
        assert counts["notes"] == 2
        summary = await later.result()
        assert summary.events_seen == 2 and summary.episodes == 2
