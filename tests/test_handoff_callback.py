"""The callback path on the time-skipping server: the callback ticket carries its due time,
and the customer is told, in their own language, when in their own timezone they are called."""

from __future__ import annotations

from datetime import UTC

import pytest

from client.handoffs import handoff_request_event
from tests.conftest import AppDb
from tests.escalation_support import keep_history, ledger_steps, next_weekday_at, skip_to
from tests.handoff_support import (
    fresh_env,
    handoff_worker,
    local,
    new_conversation,
    notifications,
    send,
    start,
    start_input,
    ticket,
    turn_event,
)

pytestmark = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)

FALLBACK_WITH_NOTICE = [
    {"type": "schedule_callback", "queue": "callbacks", "within": "4h"},
    {"type": "notify", "channel": "chat", "to": ["customer"], "template": "handoff-callback"},
]


@pytest.mark.parametrize(
    ("customer", "zone", "words"),
    [
        # Saturday 10:00 UTC: billing and tier-2 are closed; the callbacks queue (Berlin,
        # weekdays 08-18) opens on Monday, and Monday 09:00 is the customer's first hour.
        ("HC-ES", "Europe/Madrid", ("lunes", "de", "a las 09:00", "hora de Europe/Madrid")),
        ("HC-DE", "Europe/Berlin", ("Montag", "um 09:00 Uhr", "Zeitzone Europe/Berlin")),
        ("HC-FR", "Europe/Paris", ("lundi", "à 09 h 00", "heure de Europe/Paris")),
        ("HC-NY", "America/New_York", ("Monday", "at 09:00", "America/New_York time")),
    ],
)
async def test_after_hours_callback_ticket_is_due_and_the_customer_is_told_in_their_language(
    app_db: AppDb, customer: str, zone: str, words: tuple[str, ...]
) -> None:
    definition = start_input(fallback=FALLBACK_WITH_NOTICE)
    async with fresh_env() as env, handoff_worker(env, app_db) as queue:
        await skip_to(env, next_weekday_at(await env.get_current_time(), 5, 10, 0))
        conversation = new_conversation()
        handle = await start(
            env, queue, turn_event(conversation, customer, "my invoice", intent="billing"),
            definition,
        )  # fmt: skip
        await send(
            env, queue, handoff_request_event(conversation, customer, "asks", []), definition
        )
        final = await handle.result()
        assert final.state == "callback_scheduled"
        assert final.callback_at is not None and final.callback_ticket_id is not None
        at = local(final.callback_at, zone)
        assert at.weekday() == 0 and (at.hour, at.minute) == (9, 0)

        # The callback ticket is due at the promised time.
        row = await ticket(app_db, final.callback_ticket_id)
        assert row.due_at is not None
        assert row.due_at.astimezone(UTC) == final.callback_at.astimezone(UTC)
        assert "callback" in row.tags and row.queue == "callbacks"

        # The customer hears it in their own language, with their own local time and date.
        sent = await notifications(
            app_db, recipient=f"customer:{customer}", template="handoff-callback"
        )
        assert len(sent) == 1, [n.template for n in sent]
        notice = sent[0]
        assert notice.channel == "chat"
        assert notice.language == customer_language(customer)
        for word in words:
            assert word in notice.body, (word, notice.body)
        assert str(at.day) in notice.body
        steps = await ledger_steps(app_db, handle.id)
        assert steps[-1].endswith("-callback_scheduled"), steps
        if customer == "HC-ES":
            await keep_history(handle, "handoff-callback-notice")


def customer_language(customer: str) -> str:
    from tests.handoff_support import CUSTOMERS

    return CUSTOMERS[customer][0]
