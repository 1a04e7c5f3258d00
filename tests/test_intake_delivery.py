"""Accepted means delivered (issue 13): a Temporal that cannot be reached, however the
connection fails, keeps events `pending`; a bug while routing retries with backoff and is
rejected with the reason only after the last attempt; `opsflow events requeue` sends a
rejected event again and the ledger says who did."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import cast

import pytest
from sqlalchemy import select, update
from sqlalchemy.engine import make_url

from activities.recovery_pacing import CustomerBusy
from client.settings import Settings
from client.temporal import connect
from definitions.events import EventEnvelope
from intake import inbox
from intake.relay import Relay
from intake.router import Delivery, Router, TemporalLink
from store.db import create_engine, session_factory
from store.migrate import upgrade
from store.models import InboxEvent, LedgerEntry
from tests.conftest import AppDb
from tests.devstack_support import free_port, opsflow, opsflow_env, refused, succeeds
from tests.intake_support import cloud_event, http, make_intake, post_event


async def rows(db: AppDb) -> list[InboxEvent]:
    async with db.sessions() as session:
        return list(await session.scalars(select(InboxEvent).order_by(InboxEvent.id)))


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_temporal_refusing_connections_keeps_events_pending(app_db: AppDb) -> None:
    """client.temporal.connect turns the SDK's connect error into an OpsflowError; the intake
    must take that as "unreachable", not reject the events (they were lost for good)."""
    settings = Settings(temporal_address=f"127.0.0.1:{free_port()}")  # nothing listens there
    intake = make_intake(app_db)
    intake.link = TemporalLink(lambda: connect(settings))
    assert intake.relay is not None
    intake.relay.router.link = intake.link
    events = [
        cloud_event("contact.received", {"customer_id": "C-0001", "channel": "phone"})
        for _ in range(3)
    ]
    async with http(intake) as client:
        for event in events:
            assert (await post_event(client, event)).status_code == 202
    for _ in range(2):  # and again: still waiting, attempts not used up by the outage
        assert await intake.relay.drain_once() == (0, False)
    stored = await rows(app_db)
    assert [r.status for r in stored] == ["pending", "accepted", "accepted"]
    assert (stored[0].outcome or "").startswith("waiting for Temporal: cannot reach Temporal at")
    assert {r.attempts for r in stored} == {0}
    assert await inbox.any_waiting(app_db.sessions)


class BuggyRouter:
    """Delivers every event, except that routing the ones in `broken` raises (a bug)."""

    def __init__(self, broken: set[str]) -> None:
        self.broken = broken
        self.delivered: list[str] = []

    async def deliver(self, event: EventEnvelope) -> Delivery:
        if event.id in self.broken:
            raise KeyError(f"no route table entry for {event.id}")
        self.delivered.append(event.id)
        return Delivery("delivered", "signalled", f"customer-{event.subject}")


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def envelope(event_id: str, subject: str) -> EventEnvelope:
    return EventEnvelope(
        id=event_id,
        source="crm",
        type="contact.received",
        subject=subject,
        data={"customer_id": subject, "channel": "phone"},
    )


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_a_bug_retries_with_backoff_in_order_then_rejects_with_the_reason(
    app_db: AppDb,
) -> None:
    await inbox.record(
        app_db.sessions,
        [envelope("a1", "C-0001"), envelope("b1", "C-0002"), envelope("a2", "C-0001")],
    )
    router = BuggyRouter({"a1"})
    clock = Clock()
    relay = Relay(
        app_db.sessions,
        cast(Router, router),
        max_failures=3,
        failure_backoff=10,
        clock=clock,
    )

    async def by_id() -> dict[str, InboxEvent]:
        return {r.event_id: r for r in await rows(app_db)}

    # a1 fails: pending, one attempt counted; a2 waits behind it; the other subject goes on
    assert await relay.drain_once() == (1, True)
    assert router.delivered == ["b1"]
    stored = await by_id()
    assert (stored["a1"].status, stored["a1"].attempts) == ("pending", 1)
    assert "attempt 1 of 3, next in 10s" in (stored["a1"].outcome or "")
    assert "KeyError" in (stored["a1"].outcome or "")
    assert stored["a2"].status == "accepted"

    # within the backoff nothing of that subject is tried
    clock.now += 9
    assert await relay.drain_once() == (0, True)
    assert (await by_id())["a1"].attempts == 1
    clock.now += 2
    assert await relay.drain_once() == (0, True)
    stored = await by_id()
    assert (stored["a1"].attempts, stored["a2"].status) == (2, "accepted")
    assert "next in 20s" in (stored["a1"].outcome or "")

    # the third failure gives up on a1 with the reason; a2 then goes, in order
    clock.now += 21
    assert await relay.drain_once() == (2, True)
    stored = await by_id()
    assert stored["a1"].status == "rejected"
    assert stored["a1"].attempts == 3
    assert (stored["a1"].outcome or "").startswith("routing failed 3 times: KeyError(")
    assert router.delivered == ["b1", "a2"]
    assert not await inbox.any_waiting(app_db.sessions)

    # fixed: requeued by someone, delivered once, and the ledger says who
    router.broken.clear()
    requeued = await inbox.requeue(app_db.sessions, by="ana", event_id="a1")
    assert [r.event_id for r in requeued] == ["a1"]
    stored = await by_id()
    assert (stored["a1"].status, stored["a1"].attempts) == ("pending", 0)
    assert (stored["a1"].outcome or "").startswith("requeued by ana; was rejected: routing failed")
    assert await relay.drain_once() == (1, True)
    assert router.delivered == ["b1", "a2", "a1"]
    assert (await by_id())["a1"].status == "delivered"
    async with app_db.sessions() as session:
        [entry] = (await session.scalars(select(LedgerEntry))).all()
    assert (entry.kind, entry.step, entry.subject) == ("intake", "event-requeued", "C-0001")
    assert entry.detail["by"] == "ana"
    assert entry.detail["event_id"] == "a1"
    assert entry.detail["rejected_for"].startswith("routing failed 3 times")


class BusyRouter:
    """Delivers every event, but holds the subjects in `busy` (a customer whose workflow has
    a long backlog of undecided events)."""

    def __init__(self, busy: set[str], backlog: int | None = 1_000) -> None:
        self.busy = busy
        self.backlog = backlog
        self.delivered: list[str] = []

    async def deliver(self, event: EventEnvelope) -> Delivery:
        if event.subject in self.busy:
            raise CustomerBusy(f"customer-{event.subject}", self.backlog)
        self.delivered.append(event.id)
        return Delivery("delivered", "signalled", f"customer-{event.subject}")


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_a_busy_customer_s_events_wait_in_order_without_using_attempts(
    app_db: AppDb,
) -> None:
    """Held, not failed: no attempt counted, the pause doubling while the customer's
    workflow does not answer, its events left out of the reads so that the batch goes to the
    others."""
    await inbox.record(
        app_db.sessions,
        [
            envelope("a1", "C-0001"),
            envelope("a2", "C-0001"),
            envelope("a3", "C-0001"),
            envelope("b1", "C-0002"),
        ],
    )
    router = BusyRouter({"C-0001"}, backlog=None)
    clock = Clock()
    relay = Relay(app_db.sessions, cast(Router, router), batch=2, busy_backoff=2, clock=clock)
    assert await relay.drain_once() == (0, True)  # reads a1, a2: held
    assert await relay.drain_once() == (1, True)  # reads past C-0001: b1 goes
    assert router.delivered == ["b1"]
    for pause in (2, 4):  # busy again each time: the pause doubles
        clock.now += pause - 0.5
        assert await relay.drain_once() == (0, True)  # still held: not even asked
        clock.now += 0.5
        await relay.drain_once()
    stored = {r.event_id: r for r in await rows(app_db)}
    assert (stored["a1"].status, stored["a1"].attempts) == ("pending", 0)
    assert stored["a1"].outcome == "customer-C-0001 did not answer: its next events wait"
    assert {stored["a2"].status, stored["a3"].status} == {"accepted"}
    router.busy.clear()
    clock.now += 8
    while await inbox.any_waiting(app_db.sessions):
        await relay.drain_once()
    assert router.delivered == ["b1", "a1", "a2", "a3"]


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_a_customer_deciding_its_backlog_is_asked_again_after_the_same_pause(
    app_db: AppDb,
) -> None:
    await inbox.record(app_db.sessions, [envelope("a1", "C-0001")])
    router = BusyRouter({"C-0001"}, backlog=1_000)
    clock = Clock()
    relay = Relay(app_db.sessions, cast(Router, router), busy_backoff=2, clock=clock)
    for _ in range(3):
        await relay.drain_once()
        clock.now += 1.9
        assert await relay.drain_once() == (0, True)  # held: not asked
        clock.now += 0.1
    router.busy.clear()
    assert await relay.drain_once() == (1, True)
    assert router.delivered == ["a1"]


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_requeue_refuses_what_is_not_rejected(app_db: AppDb) -> None:
    await inbox.record(app_db.sessions, [envelope("x1", "C-0001")])
    with pytest.raises(inbox.NothingToRequeue, match="is accepted, not rejected"):
        await inbox.requeue(app_db.sessions, by="ana", event_id="x1")
    with pytest.raises(inbox.NothingToRequeue, match="no event 'nope'"):
        await inbox.requeue(app_db.sessions, by="ana", event_id="nope")


async def test_events_requeue_command(tmp_path: Path) -> None:
    """`opsflow events requeue --rejected --since` as a user runs it: --by is required, only
    rejections in the window go back, --json lists them, the ledger records who."""
    url = make_url(f"sqlite:///{tmp_path / 'opsflow.db'}")
    upgrade(url)
    engine = create_engine(url)
    sessions = session_factory(engine)
    try:
        await inbox.record(sessions, [envelope(f"r{n}", f"C-000{n}") for n in range(1, 4)])
        listed = await rows(AppDb(url, sessions))
        await inbox.mark_many(
            sessions,
            [inbox.Settled(r.id, "rejected", "Temporal refused: test", None) for r in listed],
        )
        long_ago = datetime.now(UTC) - timedelta(days=3)
        async with sessions() as session, session.begin():
            await session.execute(
                update(InboxEvent).where(InboxEvent.event_id == "r1").values(delivered_at=long_ago)
            )
        env = opsflow_env(data_dir=tmp_path)
        missing_by = opsflow(
            "events", "requeue", "--rejected", "--since", "1d", env=env, cwd=tmp_path
        )
        assert missing_by.returncode == 2 and "--by" in missing_by.stderr
        no_window = refused("events", "requeue", "--rejected", "--by", "ana", env=env, cwd=tmp_path)
        assert "--since" in no_window
        bad_since = refused(
            "events",
            "requeue",
            "--rejected",
            "--since",
            "yesterday",
            "--by",
            "ana",
            env=env,
            cwd=tmp_path,
        )
        assert "--since 'yesterday'" in bad_since
        out = succeeds(
            "events",
            "requeue",
            "--rejected",
            "--since",
            "1d",
            "--by",
            "ana",
            "--json",
            env=env,
            cwd=tmp_path,
        )
        requeued = json.loads(out)["requeued"]
        assert sorted(e["id"] for e in requeued) == ["r2", "r3"]
        assert {e["status"] for e in requeued} == {"pending"}
        again = refused("events", "requeue", "r2", "--by", "ana", env=env, cwd=tmp_path)
        assert "is pending, not rejected" in again
        one = succeeds("events", "requeue", "r1", "--by", "bo", env=env, cwd=tmp_path)
        assert "requeued: contact.received r1" in one
        async with sessions() as session:
            entries = (await session.scalars(select(LedgerEntry).order_by(LedgerEntry.id))).all()
        assert [(e.detail["event_id"], e.detail["by"]) for e in entries] == [
            ("r2", "ana"),
            ("r3", "ana"),
            ("r1", "bo"),
        ]
    finally:
        await engine.dispose()
