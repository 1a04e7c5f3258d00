"""Two `opsflow worker` processes on one task queue; the one sending a rollback's notices is
killed (SIGKILL) part-way. The survivor takes the notify activity over from its last
heartbeat, not from the first customer: the fake SMTP server counts every message it is
asked to deliver, and the survivor's log counts the customers whose notice it found already
sent (outbox.replayed). Every customer is reverted, told once, credited once, and the VIPs
get one check-in ticket each."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from email import message_from_bytes
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller
from sqlalchemy import select
from temporalio.contrib.pydantic import pydantic_data_converter

from client.rollouts import command_rollout, rollout_state, start_rollout
from store.models import (
    LedgerEntry,
    SandboxCredit,
    SandboxCustomer,
    SandboxFlagExposure,
    SandboxTicket,
)
from tests.chaos.support import (
    Ledger,
    Scenarios,
    Stage,
    TemporalServer,
    Workers,
    eventually,
)
from tests.conftest import AppDb
from tests.definition_support import pinned
from tests.devstack_support import free_port
from tests.rollout_support import add_customers, new_change_id, phase, plan_document
from workflows.rollout_model import ChangeRequest, Reason, RolloutStatus

NOTIFY = "rollout.notify_phase_customers"
VIP_VALUE = 60_000
SECONDS_OF_NOTICES = 24
"""Until the kill, the fake SMTP server paces its answers so the notices take at least this
long: the SDK sends a heartbeat at most every 16 s (0.8 of the 20 s heartbeat timeout), and
the kill must land after one that recorded real progress. The survivor is not paced."""


class FakeSmtp:
    """An SMTP server (aiosmtpd) that records every message it accepts."""

    def __init__(self, pace: float) -> None:
        self.pace = pace
        self.messages: list[tuple[str, str]] = []  # (recipient, Message-ID)
        self.port = free_port()
        self.controller = Controller(self, hostname="127.0.0.1", port=self.port)

    async def handle_DATA(self, server: object, session: object, envelope: Any) -> str:
        mail = message_from_bytes(envelope.content)
        self.messages.append((envelope.rcpt_tos[0], str(mail["Message-ID"])))
        await asyncio.sleep(self.pace)
        return "250 Message accepted"


async def _notifier(temporal: TemporalServer, change_id: str) -> tuple[int, int, dict[str, Any]]:
    """(attempt, worker pid, last recorded heartbeat details) of the running notify activity,
    or (0, 0, {}) while there is none."""
    described = await temporal.client.get_workflow_handle(f"rollout-{change_id}").describe()
    for info in described.raw_description.pending_activities:
        if info.activity_type.name != NOTIFY:
            continue
        details: dict[str, Any] = {}
        if info.heartbeat_details.payloads:
            [details] = pydantic_data_converter.payload_converter.from_payloads(
                list(info.heartbeat_details.payloads)[-1:]
            )
        pid = int(info.last_worker_identity.split("@")[0] or 0)
        return info.attempt, pid, details
    return 0, 0, {}


def _replayed(log: Path, change_id: str) -> int:
    """Notices the worker found already sent (the outbox answered instead of the vendor)."""
    count = 0
    for line in log.read_text(errors="replace").splitlines():
        if '"outbox.replayed"' not in line:
            continue
        entry = json.loads(line)
        key = str(entry.get("idempotency_key", ""))
        if key.startswith(f"rollout-{change_id}/") and key.endswith("/notice"):
            count += 1
    return count


async def worker_killed_during_a_rollback(on: Stage) -> None:
    customers = on.sizes.rollback_customers
    await add_customers(on.db, customers)
    smtp = FakeSmtp(pace=SECONDS_OF_NOTICES / customers)
    await asyncio.to_thread(smtp.controller.start)
    try:
        await _scenario(on, customers, smtp)
    finally:
        await asyncio.to_thread(smtp.controller.stop)


async def _scenario(on: Stage, customers: int, smtp: FakeSmtp) -> None:
    temporal, processes, app_db, ledger = on.temporal, on.processes, on.db, on.ledger
    change_id = new_change_id()
    plan = pinned(
        plan_document(
            impact={"risk": "standard"},
            phases=[phase("everyone", 100, bake="1h", checks=[])],
            rollback={
                "notify": {"channel": "email", "template": "change-rolled-back"},
                "recovery": [
                    {
                        "when": f"customer.lifetime_value >= {VIP_VALUE}.0",
                        "actions": [
                            {"type": "create_ticket", "queue": "vip", "subject": change_id}
                        ],
                    },
                    {
                        "actions": [
                            {
                                "type": "credit",
                                "amount": "5.00",
                                "currency": "EUR",
                                "reason": change_id,
                            }
                        ]
                    },
                ],
            },
        )
    )
    workers = Workers(
        processes,
        temporal,
        app_db.url,
        {
            "OPSFLOW_EMAIL_BACKEND": "smtp",
            "OPSFLOW_SMTP_HOST": "127.0.0.1",
            "OPSFLOW_SMTP_PORT": str(smtp.port),
            "OPSFLOW_SMTP_STARTTLS": "false",
            "OPSFLOW_LOG_LEVEL": "info",  # the survivor's outbox.replayed lines
        },
    )
    pool = {
        p.pid: p for p in await asyncio.gather(workers.start_polling(), workers.start_polling())
    }
    client = temporal.client
    await start_rollout(
        client, workers.queue, ChangeRequest(change_id=change_id, owner="ana", reason="t"), plan
    )

    async def state_is(wanted: str) -> RolloutStatus | None:
        try:
            status = await rollout_state(client, change_id)
        except Exception:
            return None
        return status if status.state == wanted else None

    async def baking() -> bool:
        return await state_is("baking") is not None

    await eventually(baking, f"{customers} customers exposed, baking", within=600)
    await command_rollout(client, change_id, "abort", Reason(reason="chaos"))
    ledger.note("rollout aborted: rolling back")

    # Kill the notifier once a heartbeat has recorded its share of the customers done.
    wanted = max(2, int(customers * on.sizes.rollback_kill_share))
    victim, recorded = 0, dict[str, Any]()

    async def progress_recorded() -> bool:
        nonlocal victim, recorded
        attempt, victim, recorded = await _notifier(temporal, change_id)
        return attempt == 1 and victim in pool and int(recorded.get("customers", 0)) >= wanted

    await eventually(progress_recorded, f"a heartbeat with {wanted} customers done", within=600)
    processes.kill(pool[victim])
    smtp.pace = 0
    sent_at_kill = len(smtp.messages)
    resume_after = int(recorded["customers"])
    [survivor] = [pid for pid in pool if pid != victim]
    ledger.note(
        f"notifier {victim} killed: {sent_at_kill} notices sent, heartbeat recorded "
        f"{resume_after} customers done"
    )

    async def rolled_back() -> bool:
        return await state_is("rolled_back") is not None

    await eventually(rolled_back, "rolled back", within=600)
    done = await rollout_state(client, change_id)
    ledger.note(f"rolled back by worker {survivor}; {len(smtp.messages)} SMTP messages in all")
    ledger.check(
        done.customers_notified == customers and done.customers_reverted == customers,
        f"rollout counts notified {done.customers_notified}, reverted {done.customers_reverted}",
    )

    # The survivor resumed from the heartbeat: it found at most the customers between the
    # recorded heartbeat and the kill already notified, not everyone the victim had told.
    survivor_log = on.folder / f"worker-{list(pool).index(survivor) + 1}.log"
    replayed = _replayed(survivor_log, change_id)
    ledger.note(
        f"survivor replayed {replayed} notices from the outbox "
        f"(from zero it would have been {sent_at_kill})"
    )
    ledger.check(
        replayed <= sent_at_kill - resume_after + 1,
        f"survivor replayed {replayed} notices; resumed from {resume_after} of {sent_at_kill}",
    )
    ledger.check(resume_after > 1, "no heartbeat past the first customer before the kill")

    await _count(app_db, change_id, customers, smtp, ledger)


async def _count(db: AppDb, change_id: str, customers: int, smtp: FakeSmtp, ledger: Ledger) -> None:
    async with db.sessions() as session:
        people = (
            await session.execute(
                select(SandboxCustomer.id, SandboxCustomer.email, SandboxCustomer.lifetime_value)
            )
        ).all()
        exposures = (
            await session.execute(
                select(SandboxFlagExposure.customer_id, SandboxFlagExposure.reverted_at).where(
                    SandboxFlagExposure.change_id == change_id
                )
            )
        ).all()
        credits = Counter(
            (
                await session.scalars(
                    select(SandboxCredit.customer_id).where(SandboxCredit.reason == change_id)
                )
            ).all()
        )
        tickets = Counter(
            (
                await session.scalars(
                    select(SandboxTicket.customer_id).where(SandboxTicket.subject == change_id)
                )
            ).all()
        )
        steps = Counter(
            (
                await session.scalars(
                    select(LedgerEntry.step).where(
                        LedgerEntry.workflow_id == f"rollout-{change_id}"
                    )
                )
            ).all()
        )
    everyone = sorted(customer for customer, _, _ in people)
    email_of = {email: customer for customer, email, _ in people}
    vips = sorted(customer for customer, _, value in people if value >= VIP_VALUE)
    ledger.check(len(everyone) == customers, f"{len(everyone)} customers, not {customers}")

    # A second Message-ID to one customer is a second notice; the same Message-ID again is
    # SMTP's documented at-least-once window (a receiver drops the copy), counted apart.
    ids_per_customer: dict[str, set[str]] = {}
    for to, message_id in smtp.messages:
        ids_per_customer.setdefault(email_of.get(to, to), set()).add(message_id)
    notices = Counter({customer: len(ids) for customer, ids in ids_per_customer.items()})
    resent = len(smtp.messages) - sum(notices.values())
    ledger.effects("notifications", everyone, notices)
    ledger.counts["SMTP requests"] = f"{len(smtp.messages)} ({resent} resent with one Message-ID)"
    ledger.check(resent <= 1, f"{resent} messages re-sent after one kill")
    ledger.effects("credits", everyone, credits)
    ledger.effects("tickets", vips, tickets)
    ledger.effects(
        "flags reverted",
        everyone,
        Counter(customer for customer, reverted_at in exposures if reverted_at is not None),
    )
    live = [customer for customer, reverted_at in exposures if reverted_at is None]
    ledger.check(not live, f"{len(live)} customers still exposed")
    twice = sorted(step for step, count in steps.items() if count > 1)
    ledger.check(not twice, f"ledger steps written twice: {twice[:3]}")
    ledger.counts["ledger rows"] = f"{sum(steps.values())}, none twice" if not twice else "twice"


async def test_worker_killed_during_a_rollback(scenarios: Scenarios) -> None:
    (await scenarios.play(worker_killed_during_a_rollback)).assert_clean()
