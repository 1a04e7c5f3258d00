"""The inbox under load: group commit of requests, batched marks, and what a crash between
a delivery and its mark does (the event is delivered again, harmlessly)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any, cast

import pytest
from sqlalchemy import select

from definitions.events import EventEnvelope
from intake import inbox
from intake.relay import Relay
from intake.router import Delivery, Router, TemporalUnavailable
from store.models import InboxEvent
from tests.conftest import AppDb
from tests.intake_support import cloud_event, encode, http, make_intake, signed_headers


def envelope(n: int, subject: str = "C-0001") -> EventEnvelope:
    return EventEnvelope(
        id=f"evt-{n}",
        source="crm",
        type="contact.received",
        subject=subject,
        data={"customer_id": subject, "channel": "phone"},
    )


async def rows(db: AppDb) -> list[InboxEvent]:
    async with db.sessions() as session:
        return list(await session.scalars(select(InboxEvent).order_by(InboxEvent.id)))


class FakeRouter:
    """Records what was delivered, in order; can be told to find Temporal gone."""

    def __init__(self) -> None:
        self.delivered: list[tuple[str, str]] = []
        self.unreachable = False

    async def deliver(self, event: EventEnvelope) -> Delivery:
        if self.unreachable:
            raise TemporalUnavailable("Temporal is stopped (test)")
        await asyncio.sleep(0.001 * (hash(event.id) % 3))  # subjects interleave
        self.delivered.append((event.subject, event.id))
        return Delivery("delivered", f"signalled ({event.type})", f"customer-{event.subject}")


def relay_with(db: AppDb, router: FakeRouter, **options: Any) -> Relay:
    return Relay(db.sessions, cast(Router, router), **options)


async def test_concurrent_requests_share_transactions_and_all_commit(app_db: AppDb) -> None:
    writer = inbox.Writer(app_db.sessions)
    try:
        answers = await asyncio.gather(
            *(writer.accept("crm", f"msg-{n}", "1700000000", [envelope(n)]) for n in range(40))
        )
    finally:
        await writer.close()
    assert all(answer[0].new for answer in answers)
    assert writer.transactions < 40  # requests queued together were written together
    stored = await rows(app_db)
    # in the order the requests arrived, each with its own signed request recorded
    assert [r.event_id for r in stored] == [f"evt-{n}" for n in range(40)]
    assert [r.webhook_id for r in stored] == [f"msg-{n}" for n in range(40)]
    assert [answer[0].row.id for answer in answers] == [r.id for r in stored]


async def test_a_replay_or_a_repeated_event_in_the_same_batch(app_db: AppDb) -> None:
    writer = inbox.Writer(app_db.sessions)
    try:
        first, replay, repeat = await asyncio.gather(
            writer.accept("crm", "msg-a", "1700000000", [envelope(1)]),
            writer.accept("crm", "msg-a", "1700000000", [envelope(1)]),
            writer.accept("crm", "msg-b", "1700000000", [envelope(1)]),
            return_exceptions=True,
        )
        assert isinstance(first, list) and first[0].new
        assert isinstance(replay, inbox.Replayed)
        assert isinstance(repeat, list) and not repeat[0].new
        assert repeat[0].row.id == first[0].row.id
        # and later, in a transaction of its own
        with pytest.raises(inbox.Replayed):
            await writer.accept("crm", "msg-a", "1700000000", [envelope(2)])
    finally:
        await writer.close()
    assert [r.event_id for r in await rows(app_db)] == ["evt-1"]


async def test_a_replayed_webhook_id_is_401_even_when_sent_concurrently(app_db: AppDb) -> None:
    intake = make_intake(app_db)
    body = encode(cloud_event("survey.responded", {"customer_id": "C-0001", "score": 2}))
    headers = signed_headers(body)
    async with http(intake) as client:
        answers = await asyncio.gather(
            *(client.post("/v1/events/crm", content=body, headers=headers) for _ in range(4))
        )
    assert sorted(a.status_code for a in answers) == [202, 401, 401, 401]
    assert all("replayed" in a.json()["detail"] for a in answers if a.status_code == 401)
    assert len(await rows(app_db)) == 1


async def test_batched_marks_keep_each_subjects_order(app_db: AppDb) -> None:
    subjects = [f"C-{n:04d}" for n in range(1, 6)]
    events = [envelope(n, subjects[n % 5]) for n in range(60)]
    await inbox.record(app_db.sessions, events)
    router = FakeRouter()
    relay = relay_with(app_db, router, concurrency=4, mark_batch=7)
    transactions: list[int] = []
    original = relay.marks

    async def counting(settled: Sequence[inbox.Settled]) -> None:
        transactions.append(len(settled))
        await original(settled)

    relay.marks = counting
    settled, reachable = await relay.drain_once()
    assert (settled, reachable) == (60, True)
    assert sum(transactions) == 60 and len(transactions) < 60
    for subject in subjects:
        in_inbox = [e.id for e in events if e.subject == subject]
        assert [i for s, i in router.delivered if s == subject] == in_inbox
    stored = await rows(app_db)
    assert {r.status for r in stored} == {"delivered"}
    assert all(r.attempts == 1 and r.delivered_at is not None for r in stored)
    assert not await inbox.any_waiting(app_db.sessions)


async def test_a_crash_between_delivery_and_mark_only_delivers_again(app_db: AppDb) -> None:
    events = [envelope(n, f"C-{n % 3 + 1:04d}") for n in range(9)]
    await inbox.record(app_db.sessions, events)
    router = FakeRouter()
    relay = relay_with(app_db, router)

    async def crash(_settled: Sequence[inbox.Settled]) -> None:
        raise ConnectionError("the process died before the mark was written")

    relay.marks = crash
    with pytest.raises(ConnectionError):
        await relay.drain_once()
    assert len(router.delivered) == 9
    assert {r.status for r in await rows(app_db)} == {"accepted"}  # nothing marked
    relay.marks = lambda settled: inbox.mark_many(app_db.sessions, settled)
    assert await relay.drain_once() == (9, True)
    # every event delivered twice, in order per subject both times, then marked once
    assert sorted(router.delivered) == sorted([(e.subject, e.id) for e in events] * 2)
    stored = await rows(app_db)
    assert {r.status for r in stored} == {"delivered"}
    assert {r.attempts for r in stored} == {1}


async def test_unreachable_temporal_marks_pending_in_one_transaction(app_db: AppDb) -> None:
    await inbox.record(app_db.sessions, [envelope(n, f"C-{n:04d}") for n in range(5)])
    router = FakeRouter()
    router.unreachable = True
    relay = relay_with(app_db, router, concurrency=1)
    assert await relay.drain_once() == (0, False)
    statuses = [r.status for r in await rows(app_db)]
    assert statuses[0] == "pending" and set(statuses[1:]) == {"accepted"}
    assert await inbox.any_waiting(app_db.sessions)
