"""The plain-Temporal baseline for bench/recovery.py: one workflow per customer that takes the
same `event` signals and calls the same activities for the same events as opsflow's Recovery
workflow under the catalog's rules, written by hand as one would without opsflow (the rules
are code: low CSAT with a ladder, three contacts in seven days, SLA breach with an apology
cap, an episode that inhibits lesser rules)."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta
from typing import Any

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from activities.customer_contracts import CustomerProfile
    from activities.models import (
        AddNote,
        CreateTicket,
        GetCustomer,
        LedgerAppend,
        MessageSent,
        NoteAdded,
        SendMessage,
        Ticket,
    )
    from bench.harness import serve_baseline
    from definitions.events import EventEnvelope

TIMEOUT = timedelta(seconds=30)
WEEK = timedelta(days=7)


@workflow.defn(name="PlainRecovery")
class PlainRecovery:
    def __init__(self) -> None:
        self.queue: list[EventEnvelope] = []
        self.seen: set[str] = set()
        self.contacts: list[datetime] = []
        self.apologies: list[datetime] = []
        self.breaches: set[str] = set()
        self.episode_open = False
        self.rung = 0
        self.profile: CustomerProfile | None = None
        self.steps = 0
        self.customer = ""

    async def _activity(self, name: str, arg: Any, result_type: type[Any]) -> Any:
        return await workflow.execute_activity(
            name, arg, result_type=result_type, start_to_close_timeout=TIMEOUT
        )

    async def _ledger(self, step: str, detail: dict[str, Any]) -> None:
        info = workflow.info()
        self.steps += 1
        await self._activity(
            "ledger.append",
            LedgerAppend(
                idempotency_key=f"{info.workflow_id}/{self.steps}-{step}/ledger",
                workflow_id=info.workflow_id,
                run_id=info.run_id,
                kind="plain-recovery",
                subject=self.customer,
                step=f"{self.steps}-{step}",
                detail=detail,
                at=workflow.now(),
            ),
            int,
        )

    def _key(self, what: str) -> str:
        return f"{workflow.info().workflow_id}/{self.steps}-{what}"

    async def _apology(self) -> None:
        await self._activity(
            "notify.send",
            SendMessage(
                idempotency_key=self._key("apology"),
                channel="email",
                recipient=f"customer:{self.customer}",
                template="apology",
                context={"customer": {"name": self.profile.name if self.profile else ""}},
            ),
            MessageSent,
        )
        self.apologies.append(workflow.now())

    async def _ticket(self, queue: str, subject: str, tags: list[str]) -> None:
        await self._activity(
            "ticketing.create_ticket",
            CreateTicket(
                idempotency_key=self._key(queue),
                customer_id=self.customer,
                subject=subject,
                priority="p2",
                queue=queue,
                tags=tags,
            ),
            Ticket,
        )

    async def _note(self, text: str) -> None:
        await self._activity(
            "crm.add_note",
            AddNote(idempotency_key=self._key("note"), customer_id=self.customer, body=text),
            NoteAdded,
        )

    async def _handle(self, event: EventEnvelope) -> None:
        now = workflow.now()
        data = event.data
        if self.profile is None:
            self.profile = await self._activity(
                "crm.get_customer", GetCustomer(customer_id=self.customer), CustomerProfile
            )
        if event.type == "survey.responded" and int(data["score"]) <= 2:
            if not self.episode_open:
                self.episode_open = True
                await self._ledger("low-csat-fired", {"event": event.key})
                await self._apology()
                await self._ticket("support", "Recovery - low CSAT", ["plain", "recovery"])
            else:
                self.rung += 1
                await self._ledger("low-csat-laddered", {"event": event.key, "rung": self.rung})
                if self.rung == 1:
                    await self._ticket("callbacks", "Call the customer back", ["callback"])
        elif event.type == "contact.received":
            self.contacts = [t for t in self.contacts if t > now - WEEK] + [now]
            if len(self.contacts) >= 3:
                self.contacts = []
                if self.episode_open:
                    await self._ledger("repeat-contacts-inhibited", {"event": event.key})
                else:
                    self.episode_open = True
                    await self._ledger("repeat-contacts-fired", {"event": event.key})
                    await self._ticket("callbacks", "Call the customer back", ["callback"])
                    await self._note("Three contacts within a week; callback scheduled.")
        elif event.type == "sla.breached":
            key = f"{data['ticket_id']}:{data['sla']}"
            if key not in self.breaches:
                self.breaches.add(key)
                self.episode_open = True
                await self._ledger("sla-breached-fired", {"event": event.key})
                if not [t for t in self.apologies if t > now - WEEK]:
                    await self._apology()
                await self._note(f"SLA breach on case {data['ticket_id']}; apology sent.")
        elif event.type == "sentiment.scored":
            tier = self.profile.tier if self.profile else ""
            if tier == "vip" and float(data["score"]) < -0.6:
                await self._ledger("vip-negative-sentiment-shadow", {"event": event.key})

    @workflow.run
    async def run(self) -> None:
        while True:
            await workflow.wait_condition(lambda: bool(self.queue))
            # whom the events are about: the workflow id also names the side that sent them
            self.customer = self.customer or str(self.queue[0].data["customer_id"])
            while self.queue:
                event = self.queue.pop(0)
                if event.key in self.seen:
                    continue
                self.seen.add(event.key)
                await self._handle(event)

    @workflow.signal
    def event(self, event: EventEnvelope) -> None:
        self.queue.append(event)

    @workflow.query
    def events_seen(self) -> int:
        return len(self.seen)


if __name__ == "__main__":
    # The sandbox loads a workflow from its module by name: never hand it one from __main__.
    from bench.baseline_recovery import PlainRecovery as by_name

    asyncio.run(serve_baseline([by_name]))
