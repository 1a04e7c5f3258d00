"""Shared set-up for handoff tests: definitions, customers, a worker on the sandbox
backends, and helpers to send bot events and read what the sandbox recorded."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import select, update
from temporalio.client import WorkflowHandle
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from activities.deps import ActivityDeps
from client.handoffs import signal_with_start
from definitions.events import EventEnvelope
from store.models import SandboxAgent, SandboxCustomer, SandboxNotification, SandboxTicket
from tests.conftest import AppDb
from tests.definition_support import pinned
from tests.escalation_support import policy_document
from worker.assembly import activity_functions
from workflows.escalation import EscalationWorkflow
from workflows.handoff import HandoffWorkflow
from workflows.handoff_model import HandoffInput, HandoffStatus
from workflows.sandbox import WORKFLOW_RUNNER

CUSTOMERS = {
    # id: (language, timezone, tier, country)
    "HC-ES": ("es", "Europe/Madrid", "standard", "ES"),
    "HC-EN": ("en", "Europe/London", "standard", "GB"),
    "HC-NY": ("en", "America/New_York", "gold", "US"),
    "HC-DE": ("de", "Europe/Berlin", "standard", "DE"),
    "HC-FR": ("fr", "Europe/Paris", "standard", "FR"),
    "HC-VIP": ("es", "Europe/Madrid", "vip", "ES"),
}


def handoff_document(**spec_overrides: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "triggers": {
            "customer_asks": True,
            "bot_requests": True,
            "low_confidence": {"below": 0.55, "turns": 2},
            "negative_sentiment": {"below": -0.5},
            "topics": ["cancellation", "complaint", "legal", "vulnerability"],
            "tiers": ["vip"],
        },
        "context": [
            "transcript",
            "intents",
            "attempts",
            "profile",
            "open_tickets",
            "sentiment",
            "summary",
        ],
        "routes": [
            {
                "name": "vip",
                "when": 'customer.tier == "vip"',
                "queue": "vip",
                "skills": ["vip"],
                "languages": ["en", "es", "fr"],
            },
            {
                "name": "cancellation",
                "when": 'conversation.topic == "cancellation"',
                "queue": "retention",
                "skills": ["cancellation"],
                "optional_skills": ["retention"],
            },
            {
                "name": "billing",
                "when": 'conversation.topic in ["billing", "refund", "invoice"]',
                "queue": "billing",
                "skills": ["billing"],
                "optional_skills": ["refunds"],
            },
            {
                "name": "technical-de",
                "when": 'conversation.topic in ["technical", "api"] && customer.language == "de"',
                "queue": "technical",
                "skills": ["technical"],
                "languages": ["de"],
            },
            {
                "name": "technical",
                "when": 'conversation.topic in ["technical", "api"]',
                "queue": "technical",
                "skills": ["technical"],
                "optional_skills": ["api"],
            },
            {"name": "general", "queue": "support"},
        ],
        "offer_timeout": "45s",
        "max_offers": 3,
        "relax_after": "2m",
        "max_wait": "10m",
        "max_queue_depth": 25,
        "overflow_queue": "tier-2",
        "notice": {"channel": "chat", "template": "handoff-waiting"},
        "fallback": [{"type": "schedule_callback", "queue": "callbacks", "within": "4h"}],
        "escalation_policy": "test-policy",
    }
    spec.update(spec_overrides)
    return {
        "apiVersion": "opsflow/v1",
        "kind": "handoff",
        "metadata": {"name": "test-handoff", "owner": "digital-care"},
        "spec": spec,
    }


def start_input(**spec_overrides: Any) -> HandoffInput:
    return HandoffInput(
        definition=pinned(handoff_document(**spec_overrides)),
        escalation_policy=pinned(policy_document()),
    )


async def add_customers(db: AppDb) -> None:
    async with db.sessions() as session, session.begin():
        for customer_id, (language, tz, tier, country) in CUSTOMERS.items():
            session.add(
                SandboxCustomer(
                    id=customer_id,
                    name=f"Test {customer_id}",
                    email=f"{customer_id.lower()}@example.com",
                    segment="smb",
                    tier=tier,
                    language=language,
                    timezone=tz,
                    country=country,
                    lifetime_value=Decimal(1200),
                    journey_stage="active",
                )
            )


async def set_agents(db: AppDb, status: str, *agent_ids: str) -> None:
    async with db.sessions() as session, session.begin():
        statement = update(SandboxAgent).values(status=status)
        if agent_ids:
            statement = statement.where(SandboxAgent.id.in_(agent_ids))
        await session.execute(statement)


async def agent(db: AppDb, agent_id: str) -> SandboxAgent:
    async with db.sessions() as session:
        row = await session.get(SandboxAgent, agent_id)
        assert row is not None
        return row


@asynccontextmanager
async def handoff_worker(env: WorkflowEnvironment, db: AppDb) -> AsyncIterator[str]:
    await add_customers(db)
    queue = f"handoff-{uuid.uuid4()}"
    async with Worker(
        env.client,
        task_queue=queue,
        workflows=[HandoffWorkflow, EscalationWorkflow],
        workflow_runner=WORKFLOW_RUNNER,
        activities=activity_functions(ActivityDeps(sessions=db.sessions)),
    ):
        yield queue


def new_conversation() -> str:
    return f"CONV-{uuid.uuid4().hex[:8]}"


def turn_event(conversation: str, customer: str, text: str, **data: Any) -> EventEnvelope:
    return EventEnvelope(
        id=str(uuid.uuid4()),
        source="test-bot",
        type="bot.turn",
        subject=conversation,
        data={"conversation_id": conversation, "customer_id": customer, "text": text, **data},
    )


async def start(
    env: WorkflowEnvironment,
    task_queue: str,
    first: EventEnvelope,
    start: HandoffInput | None = None,
) -> WorkflowHandle[HandoffWorkflow, HandoffStatus]:
    return await signal_with_start(env.client, task_queue, start or start_input(), first)


async def send(
    env: WorkflowEnvironment,
    task_queue: str,
    event: EventEnvelope,
    start: HandoffInput | None = None,
) -> None:
    await signal_with_start(env.client, task_queue, start or start_input(), event)


async def state(handle: WorkflowHandle[Any, Any]) -> HandoffStatus:
    result: HandoffStatus = await handle.query("state", result_type=HandoffStatus)
    return result


async def wait_for(
    env: WorkflowEnvironment, handle: WorkflowHandle[Any, Any], *states: str, limit: int = 200
) -> HandoffStatus:
    """Poll the query until the run is in one of `states` (real time, no skipping)."""
    import asyncio

    for _ in range(limit):
        status = await state(handle)
        if status.state in states:
            return status
        await asyncio.sleep(0.05)
    raise AssertionError(f"still {status.state}, not {states}")


async def notifications(db: AppDb, **where: Any) -> list[SandboxNotification]:
    async with db.sessions() as session:
        statement = select(SandboxNotification).order_by(SandboxNotification.id)
        for name, value in where.items():
            statement = statement.where(getattr(SandboxNotification, name) == value)
        return list(await session.scalars(statement))


async def ticket(db: AppDb, ticket_id: str) -> SandboxTicket:
    from sqlalchemy.orm import selectinload

    async with db.sessions() as session:
        row = await session.scalar(
            select(SandboxTicket)
            .where(SandboxTicket.id == ticket_id)
            .options(selectinload(SandboxTicket.comments))
        )
        assert row is not None
        return row


def local(moment: datetime, zone: str) -> datetime:
    from zoneinfo import ZoneInfo

    return moment.astimezone(ZoneInfo(zone))


async def wait_until(
    handle: WorkflowHandle[Any, Any], check: Any, what: str, limit: int = 200
) -> HandoffStatus:
    """Poll the query until `check(status)` holds (real time, no skipping)."""
    import asyncio

    for _ in range(limit):
        status = await state(handle)
        if check(status):
            return status
        await asyncio.sleep(0.05)
    raise AssertionError(f"never {what}: {status.state}")


@asynccontextmanager
async def fresh_env() -> AsyncIterator[WorkflowEnvironment]:
    """A time-skipping server of its own, for a test whose updates (a refused one, the
    accept that starts a child case) keep the shared server from skipping time afterwards."""
    from temporalio.api.operatorservice.v1 import AddSearchAttributesRequest
    from temporalio.contrib.pydantic import pydantic_data_converter

    from activities.search_attributes import ALL
    from worker.binaries import temporal_test_server

    env = await WorkflowEnvironment.start_time_skipping(
        test_server_existing_path=str(temporal_test_server()),
        data_converter=pydantic_data_converter,
    )
    async with env:
        await env.client.operator_service.add_search_attributes(
            AddSearchAttributesRequest(
                namespace=env.client.namespace,
                search_attributes={key.name: int(key.indexed_value_type) for key in ALL},  # type: ignore[misc]
            )
        )
        yield env


def bot_event(event_type: str, data: dict[str, Any], conversation: str) -> dict[str, Any]:
    """A CloudEvent as the `dev` bot sender posts it to the intake."""
    from datetime import UTC

    return {
        "specversion": "1.0",
        "id": f"evt-{uuid.uuid4().hex[:12]}",
        "source": "dev",
        "type": event_type,
        "subject": conversation,
        "time": datetime.now(UTC).isoformat(),
        "data": data,
    }


async def post_signed(
    http: Any, secret: str, document: dict[str, Any] | list[dict[str, Any]]
) -> Any:
    """POST `document` (one event, or a list: a batch) to `/v1/events/dev`, signed per
    Standard Webhooks with the dev sender's secret; returns the httpx response."""
    import json
    import time

    from intake.signatures import standard_signature

    body = json.dumps(document).encode()
    message_id = f"msg_{uuid.uuid4().hex}"
    stamp = int(time.time())
    batch = isinstance(document, list)
    headers = {
        "content-type": "application/cloudevents-batch+json"
        if batch
        else "application/cloudevents+json",
        "webhook-id": message_id,
        "webhook-timestamp": str(stamp),
        "webhook-signature": standard_signature(secret, message_id, stamp, body),
    }
    return await http.post("/v1/events/dev", content=body, headers=headers)


async def intake_ready(http: Any, seconds: float = 60) -> None:
    """The banner comes before the intake listens: wait until it answers /readyz."""
    import asyncio
    import time

    import httpx

    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            if (await http.get("/readyz")).status_code == 200:
                return
        except httpx.TransportError:
            pass
        await asyncio.sleep(0.1)
    raise AssertionError("the intake never became ready")


class FakeZendesk:
    """Zendesk Support API v2 as far as opsflow's handoffs use it, for a local VendorServer:
    tickets (create with Idempotency-Key, read, update, comment) and groups, listed a page
    of `page_size` at a time with an absolute `next_page` as Zendesk does. Start the server
    with this as its handler, then set `base_url`."""

    EMAIL, TOKEN = "ops@example.com", "T0KEN"

    def __init__(self, groups: dict[int, str], page_size: int = 2) -> None:
        import base64

        self.groups = groups
        self.page_size = page_size
        self.base_url = ""
        self.tickets: dict[int, dict[str, Any]] = {}
        self.by_key: dict[str, int] = {}
        self.group_reads = 0
        self.refused_statuses: set[str] = set()
        self._auth = (
            "Basic " + base64.b64encode(f"{self.EMAIL}/token:{self.TOKEN}".encode()).decode()
        )

    def adapter(self) -> Any:
        from activities.adapters.zendesk import ZendeskTicketing

        return ZendeskTicketing(self.base_url, self.EMAIL, self.TOKEN, timeout=5)

    def __call__(self, seen: Any) -> Any:
        from tests.activities.conftest import Reply

        if seen.headers.get("authorization") != self._auth:
            return Reply(401, {"error": "Couldn't authenticate you"})
        if (seen.method, seen.path) == ("GET", "/api/v2/groups.json"):
            self.group_reads += 1
            number = int(seen.query.get("page", ["1"])[0])
            ordered = sorted(self.groups.items())
            chunk = ordered[(number - 1) * self.page_size : number * self.page_size]
            more = number * self.page_size < len(ordered)
            return Reply(
                200,
                {
                    "groups": [{"id": i, "name": name, "deleted": False} for i, name in chunk],
                    "next_page": f"{self.base_url}/api/v2/groups.json?page={number + 1}"
                    if more
                    else None,
                    "count": len(ordered),
                },
            )
        if (seen.method, seen.path) == ("POST", "/api/v2/tickets.json"):
            key = seen.headers["idempotency-key"]
            if key not in self.by_key:
                number = 100 + len(self.tickets)
                body = dict(seen.json()["ticket"])
                body.pop("comment", None)
                self.tickets[number] = {"id": number, "status": "new", "type": None, **body}
                self.by_key[key] = number
            return Reply(201, {"ticket": self.tickets[self.by_key[key]]})
        if not seen.path.startswith("/api/v2/tickets/"):
            return Reply(404, {"error": "InvalidEndpoint"})
        number = int(seen.path.rsplit("/", 1)[1].removesuffix(".json"))
        if number not in self.tickets:
            return Reply(404, {"error": "RecordNotFound"})
        ticket = self.tickets[number]
        if seen.method == "GET":
            return Reply(200, {"ticket": ticket})
        change = dict(seen.json()["ticket"])
        if "comment" in change:
            ticket.setdefault("comments", []).append(change.pop("comment"))
            audit = {"id": 7, "events": [{"id": 500 + len(ticket["comments"]), "type": "Comment"}]}
            return Reply(200, {"ticket": ticket, "audit": audit})
        if change.get("status") in self.refused_statuses:
            return Reply(422, {"error": "RecordInvalid", "description": "Record validation errors"})
        tags = list(ticket.get("tags", [])) + change.pop("additional_tags", [])
        ticket.update(change, tags=tags)
        return Reply(200, {"ticket": ticket})

    def assign(self, number: int, assignee_id: int) -> None:
        """An agent takes the ticket in Zendesk (what its routing would do)."""
        self.tickets[number]["assignee_id"] = assignee_id
