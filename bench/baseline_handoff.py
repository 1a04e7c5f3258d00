"""The plain-Temporal baseline for bench/handoff.py: the same handoff path (request, route,
queue, offer, accept, resolve) with the same activity calls, written by hand as one would
without opsflow: no definition, no triggers or routes to evaluate, a small state. It waits in
line as an expert would with these activities: the reservation names the workflow and its
place in line, a released agent wakes it (signal `agent_free`), and it looks again on its own
every `fallback_seconds` in case a wake-up was lost."""

from __future__ import annotations

import asyncio
import contextlib
from datetime import timedelta
from typing import Any

from temporalio import workflow
from temporalio.exceptions import ApplicationError

with workflow.unsafe.imports_passed_through():
    from activities import search_attributes as sa
    from activities.customer_contracts import CustomerProfile
    from activities.handoff_contracts import (
        AgentReleased,
        BotAction,
        BotActionSent,
        OpenTickets,
        PickAgent,
        QueueInfo,
        QueueRequest,
        ReleaseAgent,
        Reservation,
        TicketBrief,
    )
    from activities.models import (
        AddComment,
        CommentAdded,
        CreateTicket,
        GetCustomer,
        LedgerAppend,
        MessageSent,
        SendMessage,
        Ticket,
        UpdateTicket,
    )
    from bench.harness import serve_baseline
    from definitions.events import EventEnvelope

TIMEOUT = timedelta(seconds=30)


@workflow.defn(name="PlainHandoff")
class PlainHandoff:
    def __init__(self) -> None:
        self.inbox: list[EventEnvelope] = []
        self.state = "bot"
        self.transitions = 0
        self.agent: str | None = None
        self.offered_at: str | None = None
        self.accepted = False
        self.resolved = False
        self.customer = ""
        self.agent_free = False

    async def _call(self, activity: str, arg: Any, result_type: Any) -> Any:
        return await workflow.execute_activity(
            activity, arg, result_type=result_type, start_to_close_timeout=TIMEOUT
        )

    async def _transition(self, state: str, detail: dict[str, Any]) -> None:
        self.state = state
        self.transitions += 1
        workflow.upsert_search_attributes([sa.OPS_STATE.value_set(state)])
        info = workflow.info()
        step = f"transition-{self.transitions}-{state}"
        await self._call(
            "ledger.append",
            LedgerAppend(
                idempotency_key=f"{info.workflow_id}/{step}/ledger",
                workflow_id=info.workflow_id,
                run_id=info.run_id,
                kind="plain-handoff",
                subject=self.customer,
                step=step,
                detail={"state": state, **detail},
                at=workflow.now(),
            ),
            int,
        )

    @workflow.run
    async def run(self, args: dict[str, Any]) -> str:
        queue, skills = str(args["queue"]), list(args["skills"])
        fallback = timedelta(seconds=float(args["fallback_seconds"]))
        offer_timeout = timedelta(seconds=float(args["offer_timeout_seconds"]))
        key = workflow.info().workflow_id
        await workflow.wait_condition(lambda: bool(self.inbox))
        data = self.inbox.pop(0).data
        conversation, customer = str(data["conversation_id"]), str(data["customer_id"])
        self.customer = customer
        await self._transition("bot", {})
        profile: CustomerProfile = await self._call(
            "crm.get_customer", GetCustomer(customer_id=customer), CustomerProfile
        )
        await self._transition("requested", {"reason": data.get("reason", "")})
        tickets: list[TicketBrief] = await self._call(
            "presence.open_tickets",
            OpenTickets(customer_id=customer, exclude_tag="handoff"),
            list[TicketBrief],
        )
        languages = [profile.language]
        info: QueueInfo = await self._call(
            "presence.queue_info",
            QueueRequest(
                queue=queue, skills=skills, languages=languages, exclude_conversation=conversation
            ),
            QueueInfo,
        )
        lines = [f"{t['from']}: {t['text']}" for t in data.get("transcript", [])]
        lines += [f"open ticket {t.id}: {t.subject}" for t in tickets]
        ticket: Ticket = await self._call(
            "ticketing.create_ticket",
            CreateTicket(
                idempotency_key=f"{key}/ticket",
                customer_id=customer,
                subject="Chat handoff",
                priority="p2",
                queue=queue,
                tags=["opsflow", "handoff", f"conversation:{conversation}"],
                channel="chat",
                stage="support",
            ),
            Ticket,
        )
        await self._call(
            "ticketing.add_comment",
            AddComment(
                idempotency_key=f"{key}/context-packet",
                ticket_id=ticket.id,
                body="\n".join(lines) or "handoff",
            ),
            CommentAdded,
        )
        await self._call(
            "handoff.bot_action",
            BotAction(
                idempotency_key=f"{key}/bot-stop_replying",
                conversation_id=conversation,
                customer_id=customer,
                action="stop_replying",
                reason="a person takes over",
            ),
            BotActionSent,
        )
        await self._call(
            "notify.send",
            SendMessage(
                idempotency_key=f"{key}/customer-notice",
                channel="chat",
                recipient=f"customer:{customer}",
                template="handoff-waiting",
                context={
                    "conversation": {"id": conversation, "topic": ""},
                    "customer": {"name": profile.name},
                    "queue": {"id": info.id, "name": info.name},
                    "wait": {"minutes": (info.estimated_wait_seconds or 0) // 60},
                },
                severity="info",
            ),
            MessageSent,
        )
        await self._transition("queued", {"queue": queue, "ticket": ticket.id})
        waiting_since = workflow.now()
        searches = 0
        while True:
            searches += 1
            self.agent_free = False  # a wake-up from now on means: look again
            reservation: Reservation = await self._call(
                "presence.reserve_agent",
                PickAgent(
                    idempotency_key=f"{key}/offer-1-search-{searches}",
                    conversation_id=conversation,
                    queue=queue,
                    skills=skills,
                    languages=languages,
                    workflow_id=key,
                    waiting_since=waiting_since,
                ),
                Reservation,
            )
            if reservation.agent_id is not None:
                break
            with contextlib.suppress(TimeoutError):
                await workflow.wait_condition(lambda: self.agent_free, timeout=fallback)
        self.agent = reservation.agent_id
        self.offered_at = workflow.now().isoformat()
        await self._transition("offered", {"agent": self.agent})
        try:
            await workflow.wait_condition(lambda: self.accepted, timeout=offer_timeout)
        except TimeoutError:
            await self._release(key, "release-1")
            raise ApplicationError("the bench's offer timed out", non_retryable=True) from None
        await self._call(
            "ticketing.update_ticket",
            UpdateTicket(
                idempotency_key=f"{key}/ticket-1-assign",
                ticket_id=ticket.id,
                assignee=self.agent,
                status="open",
            ),
            Ticket,
        )
        await workflow.wait_condition(lambda: self.resolved)
        await self._release(key, "release-active")
        return self.state

    async def _release(self, key: str, step: str) -> None:
        assert self.agent is not None
        await self._call(
            "presence.release_agent",
            ReleaseAgent(idempotency_key=f"{key}/{step}", agent_id=self.agent),
            AgentReleased,
        )

    @workflow.signal
    def event(self, envelope: EventEnvelope) -> None:
        self.inbox.append(envelope)

    @workflow.signal(name="agent_free")
    def wake(self) -> None:
        self.agent_free = True

    @workflow.query
    def offer(self) -> dict[str, Any]:
        return {"state": self.state, "agent": self.agent, "offered_at": self.offered_at}

    @workflow.update
    async def accept(self, agent: str) -> None:
        self.accepted = True
        await self._transition("active", {"agent": agent})

    @accept.validator
    def _validate_accept(self, agent: str) -> None:
        if self.state != "offered" or agent != self.agent:
            raise ApplicationError(f"not offered to {agent}")

    @workflow.update
    async def resolve(self) -> None:
        await self._transition("resolved", {"by": "bench"})
        self.resolved = True

    @resolve.validator
    def _validate_resolve(self) -> None:
        if self.state != "active":
            raise ApplicationError("only an active conversation can be resolved")


if __name__ == "__main__":
    # The sandbox loads a workflow from its module by name: never hand it one from __main__.
    from bench.baseline_handoff import PlainHandoff as by_name

    asyncio.run(serve_baseline([by_name]))
