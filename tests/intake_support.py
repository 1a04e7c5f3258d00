"""Shared set-up for the intake tests: signed requests, an intake on a test database."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

import httpx
from temporalio.client import Client

from activities.adapters.sandbox import SandboxCrm, SandboxTicketing
from intake.app import Intake, create_app
from intake.relay import Relay
from intake.router import Router, TemporalLink, TemporalUnavailable
from intake.signatures import standard_signature
from tests.conftest import AppDb

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
ZENDESK_SECRET = "dGhpc19zZWNyZXRfaXNfZm9yX3Rlc3Rpbmdfb25seQ=="
HUBSPOT_SECRET = "yyyyyyyy-yyyy-yyyy-yyyy-yyyyyyyyyyyy"
SOURCES = {"crm": SECRET, "zendesk": ZENDESK_SECRET, "hubspot": HUBSPOT_SECRET}


def cloud_event(event_type: str, data: Any, *, source: str = "crm", **attrs: Any) -> dict[str, Any]:
    return {
        "specversion": "1.0",
        "id": attrs.pop("id", f"evt-{uuid.uuid4().hex[:10]}"),
        "source": source,
        "type": event_type,
        "time": datetime.now(UTC).isoformat(),
        "data": data,
        **attrs,
    }


def signed_headers(
    body: bytes,
    *,
    secret: str = SECRET,
    content_type: str = "application/cloudevents+json",
    message_id: str | None = None,
    timestamp: int | None = None,
) -> dict[str, str]:
    message_id = message_id or f"msg_{uuid.uuid4().hex}"
    timestamp = int(time.time()) if timestamp is None else timestamp
    return {
        "content-type": content_type,
        "webhook-id": message_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": standard_signature(secret, message_id, timestamp, body),
    }


def encode(document: Any) -> bytes:
    return json.dumps(document).encode()


async def unreachable() -> Client:
    raise RuntimeError("Temporal is stopped (test)")


def make_intake(db: AppDb, client: Client | None = None, task_queue: str = "intake-test") -> Intake:
    link = TemporalLink(unreachable, client)
    # Recovery and Handoff have no worker yet: their starts go to a queue nobody polls.
    router = Router(
        link,
        db.sessions,
        task_queue,
        SandboxCrm(db.sessions),
        ticketing=SandboxTicketing(db.sessions),
        entity_task_queue="no-worker",
    )
    relay = Relay(db.sessions, router, concurrency=8)
    return Intake(db.sessions, dict(SOURCES), link, relay, run_relay=False)


@asynccontextmanager
async def http(intake: Intake) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=create_app(intake), raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        yield client


async def post_event(
    client: httpx.AsyncClient, document: Any, source: str = "crm", **kwargs: Any
) -> httpx.Response:
    body = encode(document)
    return await client.post(
        f"/v1/events/{source}", content=body, headers=signed_headers(body, **kwargs)
    )


__all__ = ["TemporalUnavailable"]
