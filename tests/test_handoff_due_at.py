"""A handoff waiting for a person carries its next deadline in OpsDueAt: the pending offer's
expiry, so `OpsDueAt < "…"` in the UI finds offers about to lapse."""

from __future__ import annotations

from datetime import timedelta

import pytest
from temporalio.common import TypedSearchAttributes

from activities import search_attributes as sa
from tests.conftest import AppDb
from tests.escalation_support import keep_history, next_weekday_at, skip_to
from tests.handoff_support import (
    fresh_env,
    handoff_worker,
    new_conversation,
    send,
    start,
    turn_event,
    wait_for,
)
from tests.helpers import assert_eventually
from workflows.handoff_model import CustomerLeft

pytestmark = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)


async def test_a_pending_offer_is_the_handoffs_due_moment(app_db: AppDb) -> None:
    async with fresh_env() as env, handoff_worker(env, app_db) as queue:
        await skip_to(env, next_weekday_at(await env.get_current_time(), 1, 10, 0))
        conversation = new_conversation()
        handle = await start(
            env,
            queue,
            turn_event(conversation, "HC-ES", "Mi factura está mal", intent="billing"),
        )
        asks = turn_event(
            conversation, "HC-ES", "Quiero hablar con una persona", intent="human_agent"
        )
        await send(env, queue, asks)
        status = await wait_for(env, handle, "offered")
        assert status.current_offer is not None

        async def attributes() -> TypedSearchAttributes:
            return (await handle.describe()).typed_search_attributes

        shown = await assert_eventually(
            attributes, lambda a: a.get(sa.OPS_DUE_AT) is not None, "OpsDueAt set"
        )
        due = shown.get(sa.OPS_DUE_AT)
        assert due is not None
        assert abs(due - status.current_offer.expires_at) < timedelta(seconds=1)
        await keep_history(handle, "handoff-due-at")
        await handle.execute_update("customer_left", CustomerLeft())
