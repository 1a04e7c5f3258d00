"""The notify activity's on-call recipients: `oncall:<schedule>` is the person on call when the
level fired (not when a retry runs), stored overrides included, reached through the sandbox
directory or paged through PagerDuty with the request's keys; a `round_robin` level sends
each case to the next of its targets, and a retry to the same one. Against the catalog's
support-primary schedule, deployed in a real app database (SQLite and PostgreSQL)."""

from __future__ import annotations

import asyncio
import dataclasses
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import select
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities.adapters.pagerduty import PagerDutyNotifier
from activities.backends import Backends
from activities.deps import ActivityDeps
from activities.models import SendMessage
from activities.notify import NotifyActivities
from activities.oncall_contracts import LevelMessage, RoundRobin
from store import oncall
from store.models import RoundRobinCounter, SandboxNotification
from store.registry import CATALOG_DIR, deploy_folder
from tests.conftest import AppDb
from tests.escalation_support import FakePagerDuty

BERLIN = ZoneInfo("Europe/Berlin")
# support-primary on Monday 7 December 2026: eva's weekly turn ends at 09:00, when the day
# shift (dev, 09:00-17:00) starts; at 17:00 the weekly turn that began at 09:00 (jack's) shows.
WEEKLY_HANDOFF = datetime(2026, 12, 7, 9, tzinfo=BERLIN)
DAY_SHIFT_ENDS = datetime(2026, 12, 7, 17, tzinfo=BERLIN)
SECOND = timedelta(seconds=1)


@pytest.fixture
async def notify(app_db: AppDb, template_folder: Path) -> NotifyActivities:
    await deploy_folder(app_db.sessions, CATALOG_DIR / "schedule")
    deps = ActivityDeps(
        sessions=app_db.sessions,
        backends=Backends.sandbox(app_db.sessions),
        template_folder=template_folder,
    )
    return NotifyActivities(deps)


def level_message(key: str, **fields: Any) -> LevelMessage:
    values: dict[str, Any] = {
        "idempotency_key": key,
        "channel": "pager",
        "recipient": "oncall:support-primary",
        "template": "page",
        "context": {"case": {"id": "T-1"}},
        **fields,
    }
    return LevelMessage(**values)


async def sent_to(app_db: AppDb, key: str) -> str:
    async with app_db.sessions() as session:
        recipient = await session.scalar(
            select(SandboxNotification.recipient).where(SandboxNotification.idempotency_key == key)
        )
    assert recipient is not None, key
    return recipient


def retried_later(env: ActivityEnvironment, at: datetime) -> ActivityEnvironment:
    """An environment whose activity was first scheduled at `at` (on attempt 3)."""
    env.info = dataclasses.replace(env.info, scheduled_time=at, attempt=3)
    return env


async def test_a_level_firing_at_a_handoff_pages_who_was_on_call_when_it_fired(
    app_db: AppDb, notify: NotifyActivities
) -> None:
    # The activities run (or are retried) long after the handoff; the due moment decides.
    env = retried_later(ActivityEnvironment(), DAY_SHIFT_ENDS + timedelta(hours=3))
    cases = {
        "case-1/level-1-cycle-0/0/0": WEEKLY_HANDOFF - SECOND,
        "case-2/level-1-cycle-0/0/0": WEEKLY_HANDOFF,
        "case-3/level-1-cycle-0/0/0": DAY_SHIFT_ENDS - SECOND,
        "case-4/level-1-cycle-0/0/0": DAY_SHIFT_ENDS,
    }
    for key, fired_at in cases.items():
        await env.run(notify.send, level_message(key, fired_at=fired_at))
    assert [await sent_to(app_db, key) for key in cases] == [
        "agent:eva",
        "agent:dev",
        "agent:dev",
        "agent:jack",
    ]


async def test_without_the_due_moment_the_first_scheduled_time_decides(
    app_db: AppDb, notify: NotifyActivities
) -> None:
    env = retried_later(ActivityEnvironment(), WEEKLY_HANDOFF - SECOND)
    plain = SendMessage(
        idempotency_key="case-5/l/0",
        channel="pager",
        recipient="oncall:support-primary",
        template="page",
        context={"case": {"id": "T-1"}},
    )
    await env.run(notify.send, plain)
    assert await sent_to(app_db, "case-5/l/0") == "agent:eva"


async def test_email_goes_to_the_directory_address_and_a_stored_override_wins(
    app_db: AppDb, notify: NotifyActivities
) -> None:
    env = ActivityEnvironment()
    fired_at = WEEKLY_HANDOFF + timedelta(hours=1)
    await env.run(notify.send, level_message("case-6/l/0", channel="email", fired_at=fired_at))
    assert await sent_to(app_db, "case-6/l/0") == "dev@opsflow.example"
    await oncall.add_override(
        app_db.sessions,
        "support-primary",
        "greta@opsflow.example",
        WEEKLY_HANDOFF,
        WEEKLY_HANDOFF + timedelta(hours=2),
        "lead",
    )
    await env.run(notify.send, level_message("case-7/l/0", channel="email", fired_at=fired_at))
    await env.run(notify.send, level_message("case-8/l/0", fired_at=fired_at))
    assert await sent_to(app_db, "case-7/l/0") == "greta@opsflow.example"
    assert await sent_to(app_db, "case-8/l/0") == "agent:greta"  # found by her address


async def test_no_schedule_or_no_one_on_call_is_a_clear_non_retryable_error(
    app_db: AppDb, notify: NotifyActivities
) -> None:
    env = ActivityEnvironment()
    with pytest.raises(ApplicationError) as missing:
        await env.run(notify.send, level_message("c/l/0", recipient="oncall:night-desk"))
    assert missing.value.non_retryable
    assert "no schedule named 'night-desk' is deployed" in str(missing.value)
    before_the_rotation = datetime(2025, 12, 1, tzinfo=UTC)
    with pytest.raises(ApplicationError) as nobody:
        await env.run(notify.send, level_message("c/l/1", fired_at=before_the_rotation))
    assert nobody.value.non_retryable
    assert "no one is on call for schedule 'support-primary'" in str(nobody.value)


async def test_a_page_to_the_person_on_call_uses_the_requests_keys(
    app_db: AppDb, notify: NotifyActivities, template_folder: Path
) -> None:
    sandbox = Backends.sandbox(app_db.sessions)
    with FakePagerDuty() as pagerduty:
        pager = PagerDutyNotifier(pagerduty.routing_key, url=pagerduty.url, timeout=5)
        backends = replace(sandbox, notifiers={**sandbox.notifiers, "pager": pager})
        deps = ActivityDeps(app_db.sessions, backends=backends, template_folder=template_folder)
        paging = NotifyActivities(deps)
        alert = "case-9/pager/oncall:support-primary"
        request = level_message(
            "case-9/level-1-cycle-0/0/0", dedup_key=alert, fired_at=DAY_SHIFT_ENDS
        )
        env = ActivityEnvironment()
        first = await env.run(paging.send, request)
        again = await env.run(paging.send, request)  # a retry: the outbox sends nothing more
    assert first == again and first.backend == "pagerduty"
    assert pagerduty.actions() == [("trigger", alert)]
    assert pagerduty.accepted[0]["payload"]["custom_details"]["recipient"] == "agent:jack"


async def test_round_robin_sends_each_case_to_the_next_target_and_a_retry_to_the_same(
    app_db: AppDb, notify: NotifyActivities
) -> None:
    targets = ["agent:ana", "agent:bernd", "oncall:support-primary"]
    turn = RoundRobin(definition="support", level="p1/1", targets=targets)
    env = ActivityEnvironment()

    def request(case: int) -> LevelMessage:
        key = f"case-{case}/level-1-cycle-0/0/0"
        return level_message(key, round_robin=turn, fired_at=WEEKLY_HANDOFF + timedelta(hours=1))

    for case in range(10):
        await env.run(notify.send, request(case))
    picked = [await sent_to(app_db, request(case).idempotency_key) for case in range(10)]
    assert picked == ["agent:ana", "agent:bernd", "agent:dev"] * 3 + ["agent:ana"]
    # Retries (one racing another) keep each case's pick and move the counter no further.
    await asyncio.gather(*(env.run(notify.send, request(case)) for case in (3, 3, 7)))
    await env.run(notify.send, request(10))
    assert await sent_to(app_db, request(10).idempotency_key) == "agent:bernd"
    # Another level keeps its own turn.
    other = RoundRobin(definition="support", level="p2/1", targets=targets)
    await env.run(notify.send, level_message("case-0/level-1-cycle-1/0/0", round_robin=other))
    assert await sent_to(app_db, "case-0/level-1-cycle-1/0/0") == "agent:ana"
    async with app_db.sessions() as session:
        counters = {
            (c.definition, c.level): c.turns
            for c in await session.scalars(select(RoundRobinCounter))
        }
    assert counters == {("support", "p1/1"): 11, ("support", "p2/1"): 1}
