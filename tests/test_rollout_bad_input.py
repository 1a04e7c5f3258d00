"""Bad input to a running rollout (issue 22 item 4): every update with invalid arguments or
out of order is refused with the reason, and the run is untouched (its state before and after
is the same)."""

from __future__ import annotations

from typing import Any

import pytest
from temporalio.client import WorkflowUpdateFailedError
from temporalio.testing import WorkflowEnvironment

from tests.conftest import AppDb
from tests.definition_support import pinned
from tests.rollout_support import (
    add_customers,
    new_change_id,
    plan_document,
    rollout_worker,
    settled,
    start,
    state,
)
from workflows.rollout_model import Decision, Reason

pytestmark = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)

# (update, argument, what the refusal says) while the rollout awaits its start approval.
REFUSED: list[tuple[str, Any, str]] = [
    ("approve", Decision(approver="mallory"), "mallory"),  # not an approver
    ("approve", {"approver": ""}, "approver"),  # empty: fails validation of the message
    ("approve", {"approver": 42}, "approver"),  # wrong type
    ("approve", {"nobody": "x"}, "approver"),  # missing field
    ("reject", Decision(approver="mallory"), "mallory"),
    ("resume", Reason(reason="x", by="ana"), "not paused"),
    ("promote", Reason(reason="x", by="ana"), ""),
    ("retry", Reason(reason="x", by="ana"), ""),
    ("pause", {"reason": "x" * 5000, "by": "ana"}, "reason"),  # too long
    ("no_such_update", Reason(reason="x"), ""),
]


def _chain(error: BaseException | None) -> str:
    """Every message down the failure's cause chain: a message that does not decode says
    which field in the cause under the SDK's "Failed decoding arguments"."""
    parts: list[str] = []
    while error is not None:
        parts.append(str(error))
        error = getattr(error, "cause", None) or error.__cause__
    return " / ".join(parts)


async def test_every_invalid_update_is_refused_and_changes_nothing(
    workflow_env: WorkflowEnvironment, app_db: AppDb
) -> None:
    await add_customers(app_db)
    plan = pinned(
        plan_document(
            approvals={"group": "cab", "required": 2, "timeout": "4h", "members": ["lena", "marco"]}
        )
    )
    async with rollout_worker(workflow_env, app_db) as queue:
        handle = await start(workflow_env, queue, plan, new_change_id())
        await settled(handle, lambda s: s.state == "awaiting_approval")
        before = (await state(handle)).model_dump()
        for update, argument, reason in REFUSED:
            with pytest.raises((WorkflowUpdateFailedError, Exception)) as refused:
                await handle.execute_update(update, argument)
            text = _chain(refused.value)
            assert reason.lower() in text.lower(), (update, argument, text)
            assert (await state(handle)).model_dump() == before, (update, argument)
        # Still answering commands that are right.
        await handle.execute_update("approve", Decision(approver="lena"))
        assert [a.approver for a in (await state(handle)).approvals] == ["lena"]
        await handle.terminate(reason="test over")
