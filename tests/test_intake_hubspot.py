"""HubSpot webhooks through the real intake app (signature v3): a contact's lifecycle stage
change maps to `journey.stage_changed` in every documented shape, and whatever the receiver
cannot map is recorded in the inbox `rejected` with the reason, never acknowledged and
dropped (issue 16, item 5)."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from client.settings import Settings
from intake import inbox
from intake.signatures import hubspot_signature
from store.db import create_engine, session_factory
from store.migrate import upgrade
from tests.conftest import AppDb
from tests.intake_support import HUBSPOT_SECRET, encode, http, make_intake
from worker.cli import app

URL = "http://testserver/v1/webhooks/hubspot"
OCCURRED_MS = 1_795_425_240_000  # 2026-11-23T09:14:00Z
OCCURRED = "2026-11-23T09:14:00+00:00"


def hubspot_event(**fields: Any) -> dict[str, Any]:
    """One event of a batch as HubSpot's webhooks documentation lists its fields."""
    return {
        "subscriptionId": 2_400_001,
        "portalId": 62_515,
        "appId": 1_160_452,
        "occurredAt": OCCURRED_MS,
        "attemptNumber": 0,
        "changeSource": "CRM_UI",
        **fields,
    }


def stage_change(event_id: int, contact: int, stage: str, **shape: Any) -> dict[str, Any]:
    return hubspot_event(
        eventId=event_id,
        objectId=contact,
        propertyName="lifecyclestage",
        propertyValue=stage,
        **shape,
    )


async def post_hubspot(
    client: httpx.AsyncClient, batch: Any, *, stamp: str | None = None
) -> httpx.Response:
    body = encode(batch)
    stamp = stamp or str(int(time.time() * 1000))
    headers = {
        "content-type": "application/json",
        "x-hubspot-request-timestamp": stamp,
        "x-hubspot-signature-v3": hubspot_signature(HUBSPOT_SECRET, "POST", URL, body, stamp),
    }
    return await client.post("/v1/webhooks/hubspot", content=body, headers=headers)


async def test_a_lifecycle_stage_change_maps_in_every_documented_shape(app_db: AppDb) -> None:
    batch = [
        # legacy subscriptions: the kind in subscriptionType
        stage_change(101, 5001, "customer", subscriptionType="contact.propertyChange"),
        # the same kind named eventType, as HubSpot's subscription API names it
        stage_change(102, 5002, "opportunity", eventType="contact.propertyChange"),
        # generic webhooks: one kind for every object, contacts being objectTypeId 0-1
        stage_change(
            103,
            5003,
            "salesqualifiedlead",
            subscriptionType="object.propertyChange",
            objectTypeId="0-1",
        ),
    ]
    async with http(make_intake(app_db)) as client:
        response = await post_hubspot(client, batch)
    assert response.status_code == 202, response.text
    answered = response.json()["events"]
    assert [(e["id"], e["type"], e["subject"], e["status"]) for e in answered] == [
        ("101", "journey.stage_changed", "5001", "accepted"),
        ("102", "journey.stage_changed", "5002", "accepted"),
        ("103", "journey.stage_changed", "5003", "accepted"),
    ]
    rows = sorted(await inbox.listing(app_db.sessions), key=lambda r: r.event_id)
    assert [(r.data, r.time and r.time.isoformat()) for r in rows] == [
        ({"customer_id": "5001", "from_stage": None, "to_stage": "customer"}, OCCURRED),
        ({"customer_id": "5002", "from_stage": None, "to_stage": "opportunity"}, OCCURRED),
        ({"customer_id": "5003", "from_stage": None, "to_stage": "salesqualifiedlead"}, OCCURRED),
    ]
    assert await inbox.listing(app_db.sessions, ["rejected"]) == []


UNMAPPED: list[tuple[dict[str, Any], str, str]] = [
    (
        hubspot_event(eventId=201, subscriptionType="contact.creation", objectId=5101),
        "hubspot:contact.creation",
        "not mapped to an opsflow event: HubSpot contact.creation (only a contact's "
        "lifecyclestage change maps: journey.stage_changed)",
    ),
    (
        hubspot_event(
            eventId=202,
            eventType="contact.propertyChange",
            objectId=5102,
            propertyName="email",
            propertyValue="ana@example.com",
        ),
        "hubspot:contact.propertyChange",
        "HubSpot contact.propertyChange of 'email' (only a contact's lifecyclestage",
    ),
    (
        stage_change(203, 7001, "customer", subscriptionType="object.propertyChange")
        | {"objectTypeId": "0-2"},  # a company's lifecycle stage: no customer journey
        "hubspot:object.propertyChange",
        "object.propertyChange of 'lifecyclestage' on objectTypeId '0-2'",
    ),
    (
        stage_change(204, 5104, "sales qualified", subscriptionType="contact.propertyChange"),
        "hubspot:contact.propertyChange",
        "not mapped to an opsflow event: data.to_stage: String should match pattern",
    ),
    (
        hubspot_event(eventId=205, subscriptionType="contact.propertyChange")
        | {"propertyName": "lifecyclestage", "propertyValue": "lead"},  # no objectId
        "hubspot:contact.propertyChange",
        "not mapped to an opsflow event: objectId: missing",
    ),
    (
        {"objectId": 5106, "propertyName": "lifecyclestage", "propertyValue": "lead"},
        "hubspot:unknown",
        "it has neither subscriptionType nor eventType",
    ),
]


async def test_what_cannot_be_mapped_is_recorded_rejected_with_the_reason(
    app_db: AppDb,
) -> None:
    mapped = stage_change(200, 5100, "customer", subscriptionType="contact.propertyChange")
    batch = [item for item, _type, _reason in UNMAPPED] + [mapped]
    async with http(make_intake(app_db)) as client:
        response = await post_hubspot(client, batch)
        assert response.status_code == 202, response.text
        answered = response.json()["events"]
        assert "ignored" not in response.json()
        assert [e["status"] for e in answered] == ["rejected"] * len(UNMAPPED) + ["accepted"]
        for event, (_item, kind, reason) in zip(answered, UNMAPPED, strict=False):
            assert event["type"] == kind and reason in event["outcome"], event

        rejected = {r.event_id: r for r in await inbox.listing(app_db.sessions, ["rejected"])}
        assert len(rejected) == len(UNMAPPED)
        for (item, kind, reason), row in zip(UNMAPPED, [*rejected.values()][::-1], strict=True):
            assert (row.type, row.data, row.delivered_at is not None) == (kind, item, True)
            assert row.outcome is not None and reason in row.outcome
        without_id = rejected[answered[5]["id"]]
        assert without_id.event_id.startswith("digest-") and without_id.subject == "5106"
        assert rejected["201"].subject == "5101" and rejected["201"].time is not None

        # HubSpot retries with a new timestamp: the same events, answered with what was
        # recorded (none of them twice, the one without an eventId included)
        retried = await post_hubspot(client, batch, stamp=str(int(time.time() * 1000) + 1))
        assert retried.status_code == 200, retried.text
        assert [e["duplicate"] for e in retried.json()["events"]] == [True] * len(batch)
        assert [e["id"] for e in retried.json()["events"]] == [e["id"] for e in answered]
        assert len(await inbox.listing(app_db.sessions)) == len(batch)


async def test_a_batch_of_only_unmapped_events_is_recorded_and_not_replayable(
    app_db: AppDb,
) -> None:
    batch = [hubspot_event(eventId=301, subscriptionType="deal.creation", objectId=9)]
    stamp = str(int(time.time() * 1000))
    async with http(make_intake(app_db)) as client:
        first = await post_hubspot(client, batch, stamp=stamp)
        assert first.status_code == 202, first.text
        assert first.json()["events"][0]["status"] == "rejected"
        # before, such a request was answered `ignored` and nothing marked it as received
        replay = await post_hubspot(client, batch, stamp=stamp)
        assert replay.status_code == 401 and "replayed" in replay.json()["detail"]


def test_opsflow_events_list_rejected_shows_the_refused_hubspot_event(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPSFLOW_DATA_DIR", str(tmp_path))
    monkeypatch.delenv("OPSFLOW_DATABASE_URL", raising=False)
    monkeypatch.setenv("OPSFLOW_LOG_FORMAT", "json")
    url = Settings().database
    upgrade(url)

    async def receive() -> None:
        engine = create_engine(url)
        try:
            intake = make_intake(AppDb(url, session_factory(engine)))
            async with http(intake) as client:
                batch = [hubspot_event(eventId=401, subscriptionType="contact.merge", objectId=7)]
                assert (await post_hubspot(client, batch)).status_code == 202
        finally:
            await engine.dispose()

    asyncio.run(receive())
    listed = CliRunner().invoke(app, ["events", "list", "--rejected", "--json"])
    assert listed.exit_code == 0, listed.output
    [row] = json.loads(listed.output)
    assert (row["id"], row["source"], row["type"], row["status"]) == (
        "401",
        "hubspot",
        "hubspot:contact.merge",
        "rejected",
    )
    assert row["outcome"].startswith("not mapped to an opsflow event: HubSpot contact.merge")
