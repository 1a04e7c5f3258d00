"""The intake's HTTP contract without Temporal: who may send, what is recorded, what is
refused, and ≥ 40 hostile requests each answered with a problem document."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from intake.signatures import zendesk_signature
from store.models import InboxEvent
from tests.conftest import AppDb
from tests.intake_support import (
    SECRET,
    cloud_event,
    encode,
    http,
    make_intake,
    post_event,
    signed_headers,
)

HOSTILE = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "hostile"
TICKET = {"ticket_id": "T-1042", "customer_id": "C-0001", "priority": "p2"}


async def inbox_count(db: AppDb) -> int:
    async with db.sessions() as session:
        return int(await session.scalar(select(func.count(InboxEvent.id))) or 0)


async def test_accepted_once_then_200_with_the_original_outcome(app_db: AppDb) -> None:
    intake = make_intake(app_db)
    event = cloud_event("survey.responded", {"customer_id": "C-0001", "score": 2})
    async with http(intake) as client:
        first = await post_event(client, event)
        assert first.status_code == 202, first.text
        assert first.json()["events"][0]["status"] == "accepted"
        # the relay finds Temporal unreachable: the event waits, nothing lost
        assert intake.relay is not None
        settled, reachable = await intake.relay.drain_once()
        assert (settled, reachable) == (0, False)
        again = await post_event(client, event)
        assert again.status_code == 200
        answer = again.json()["events"][0]
        assert answer["duplicate"] is True
        assert answer["status"] == "pending"
        assert "Temporal is stopped" in answer["outcome"]
    assert await inbox_count(app_db) == 1


async def test_binary_mode_and_batches(app_db: AppDb) -> None:
    intake = make_intake(app_db)
    async with http(intake) as client:
        body = encode(TICKET)
        headers = signed_headers(body, content_type="application/json")
        headers |= {
            "ce-specversion": "1.0",
            "ce-id": "bin-1",
            "ce-source": "crm",
            "ce-type": "ticket.created",
            "ce-time": "2026-11-23T09:14:00Z",
        }
        response = await client.post("/v1/events/crm", content=body, headers=headers)
        assert response.status_code == 202, response.text
        assert response.json()["events"][0]["subject"] == "T-1042"
        batch = [
            cloud_event("survey.responded", {"customer_id": "C-0001", "score": 1}),
            cloud_event(
                "bot.turn", {"conversation_id": "CV-1", "customer_id": "C-0001", "text": "hi"}
            ),
        ]
        body = encode(batch)
        response = await client.post(
            "/v1/events/crm",
            content=body,
            headers=signed_headers(body, content_type="application/cloudevents-batch+json"),
        )
        assert response.status_code == 202, response.text
        assert [e["type"] for e in response.json()["events"]] == ["survey.responded", "bot.turn"]
    assert await inbox_count(app_db) == 3


async def test_unsigned_and_replayed_requests_are_401_and_record_nothing(
    app_db: AppDb,
) -> None:
    intake = make_intake(app_db)
    event = cloud_event("ticket.created", TICKET)
    body = encode(event)
    async with http(intake) as client:
        cases: list[tuple[str, dict[str, str], str]] = [
            ("nobody", signed_headers(body), "unknown sender"),
            ("crm", {"content-type": "application/cloudevents+json"}, "missing webhook-id"),
            ("crm", signed_headers(body, secret="whsec_d3Jvbmc="), "no webhook-signature"),
            ("crm", signed_headers(body, timestamp=int(time.time()) - 600), "5 minutes"),
            ("a%20b%00", signed_headers(body), "unknown sender"),
        ]
        for source, headers, detail in cases:
            response = await client.post(f"/v1/events/{source}", content=body, headers=headers)
            assert response.status_code == 401, (source, response.text)
            assert response.headers["content-type"] == "application/problem+json"
            assert detail in response.json()["detail"]
        assert await inbox_count(app_db) == 0
        headers = signed_headers(body)
        assert (
            await client.post("/v1/events/crm", content=body, headers=headers)
        ).status_code == 202
        replay = await client.post("/v1/events/crm", content=body, headers=headers)
        assert replay.status_code == 401
        assert "replayed" in replay.json()["detail"]
        tampered = dict(headers)
        other = encode(cloud_event("ticket.created", TICKET, id="evt-other"))
        replay = await client.post("/v1/events/crm", content=other, headers=tampered)
        assert replay.status_code == 401
    assert await inbox_count(app_db) == 1


async def test_zendesk_webhook_is_mapped_and_recorded(app_db: AppDb) -> None:
    intake = make_intake(app_db)
    payload = {
        "type": "zen:event-type:ticket.status_changed",
        "id": "zd-evt-1",
        "time": "2026-11-23T09:14:00Z",
        "subject": "zen:ticket:35436",
        "detail": {"id": "35436", "requester_id": "C-0001", "status": "PENDING"},
        "event": {"previous": "OPEN", "current": "PENDING"},
    }
    body = encode(payload)
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    headers = {
        "content-type": "application/json",
        "x-zendesk-webhook-signature": zendesk_signature(intake.sources["zendesk"], stamp, body),
        "x-zendesk-webhook-signature-timestamp": stamp,
    }
    async with http(intake) as client:
        response = await client.post("/v1/webhooks/zendesk", content=body, headers=headers)
        assert response.status_code == 202, response.text
        event = response.json()["events"][0]
        assert (event["type"], event["subject"], event["source"]) == (
            "ticket.updated",
            "35436",
            "zendesk",
        )
        bad = await client.post("/v1/webhooks/zendesk", content=body + b" ", headers=headers)
        assert bad.status_code == 401


async def test_health_and_docs(app_db: AppDb) -> None:
    async with http(make_intake(app_db)) as client:
        assert (await client.get("/healthz")).json() == {"status": "ok"}
        ready = await client.get("/readyz")
        assert ready.status_code == 503
        assert ready.json() == {"status": "not ready", "database": True, "temporal": False}
        assert (await client.get("/docs")).status_code == 200
        paths = (await client.get("/openapi.json")).json()["paths"]
        assert "/v1/events/{source}" in paths


# --- hostile requests --------------------------------------------------------------------


def _corpus_files() -> list[tuple[str, bytes]]:
    folder = HOSTILE / "json"
    return [(p.name, p.read_bytes()) for p in sorted(folder.glob("*.json"))]


def _event_with(data: Any, **attrs: Any) -> bytes:
    return encode(cloud_event("ticket.created", data, **attrs))


def _without(attribute: str) -> bytes:
    event = cloud_event("ticket.created", TICKET)
    del event[attribute]
    return encode(event)


def _hostile_bodies() -> list[tuple[str, bytes, str, set[int]]]:
    """(name, body, content type, acceptable statuses)."""
    structured = "application/cloudevents+json"
    cases: list[tuple[str, bytes, str, set[int]]] = []
    for name, body in _corpus_files():
        # Every JSONTestSuite body is not a CloudEvent: refused either as bad JSON (400)
        # or as not an event object (422); `{}`-like ones are 422.
        cases.append((f"corpus:{name}", body, structured, {400, 422}))
    naughty = json.loads((HOSTILE / "naughty-strings.json").read_text())
    strings = naughty["strings"] if isinstance(naughty, dict) else naughty
    unsafe = set(" '\"<>{}();$\\/|&*%#!,=\t\n")
    candidates = [s for s in strings if isinstance(s, str) and unsafe & set(s)]
    picked = candidates[:: max(1, len(candidates) // 12)][:12]
    for index, text in enumerate(picked):
        # naughty text in a free-text field is fine; as an id it must be refused
        cases.append(
            (
                f"naughty-id:{index}",
                _event_with({**TICKET, "ticket_id": text}),
                structured,
                {400, 422},
            )
        )
    generated: list[tuple[str, bytes, str, set[int]]] = [
        ("too large", b'{"a":"' + b"x" * (1024 * 1024 + 10) + b'"}', structured, {413}),
        ("deep objects", b'{"a":' * 100_000 + b"1" + b"}" * 100_000, structured, {400, 413}),
        ("deep arrays", b"[" * 1000 + b"]" * 1000, structured, {400}),
        ("open array object", b'[{"":' * 50_000 + b"\n", structured, {400}),
        ("5000-digit integer", b'{"n": ' + b"9" * 5000 + b"}", structured, {400}),
        ("exponent bomb", b"[1e" + b"9" * 100 + b"]", structured, {400}),
        (
            "many duplicate keys",
            b"{" + b",".join([b'"type":"x"'] * 10_000) + b"}",
            structured,
            {400},
        ),
        ("null byte in data", _event_with({**TICKET, "subject": "a\u0000b"}), structured, {400}),
        (
            "lone surrogate",
            _event_with({**TICKET, "subject": "\ud800"}).replace(b"\\ud800", b"\\ud800"),
            structured,
            {400},
        ),
        ("rtl override id", _event_with({**TICKET, "ticket_id": "T-\u202e1"}), structured, {422}),
        (
            "sql in id",
            _event_with({**TICKET, "ticket_id": "1'; DROP TABLE inbox_events;--"}),
            structured,
            {422},
        ),
        (
            "template in customer",
            _event_with({**TICKET, "customer_id": "{{7*7}}"}),
            structured,
            {422},
        ),
        ("wrong type priority", _event_with({**TICKET, "priority": 1}), structured, {422}),
        ("unknown field", _event_with({**TICKET, "extra": True}), structured, {422}),
        ("missing customer", _event_with({"ticket_id": "T-1"}), structured, {422}),
        ("unknown type", encode(cloud_event("ticket.exploded", TICKET)), structured, {422}),
        ("wrong spec version", _event_with(TICKET, specversion="0.3"), structured, {422}),
        ("no id", _without("id"), structured, {422}),
        ("no spec version", _without("specversion"), structured, {422}),
        ("no type", _without("type"), structured, {422}),
        ("numeric id", _event_with(TICKET, id=42), structured, {422}),
        ("empty id", _event_with(TICKET, id=""), structured, {422}),
        ("other source", _event_with(TICKET, source="zendesk"), structured, {422}),
        ("bad time", _event_with(TICKET, time="yesterday"), structured, {422}),
        ("data not object", encode(cloud_event("ticket.created", [1, 2])), structured, {422}),
        ("utf-16 body", _event_with(TICKET).decode().encode("utf-16"), structured, {400}),
        ("bom body", b"\xef\xbb\xbf" + _event_with(TICKET), structured, {400}),
        (
            "latin-1 body",
            json.dumps(
                cloud_event("ticket.created", {**TICKET, "subject": "café"}), ensure_ascii=False
            ).encode("latin-1"),
            structured,
            {400},
        ),
        ("empty body", b"", structured, {400}),
        ("wrong content type", _event_with(TICKET), "text/plain", {415}),
        ("form content type", b"a=1", "application/x-www-form-urlencoded", {415}),
        ("binary without headers", encode(TICKET), "application/json", {422}),
        (
            "batch with one bad event",
            encode(
                [
                    cloud_event("ticket.created", TICKET),
                    cloud_event("survey.responded", {"customer_id": "C-1", "score": 9}),
                ]
            ),
            "application/cloudevents-batch+json",
            {422},
        ),
        ("empty batch", b"[]", "application/cloudevents-batch+json", {422}),
        ("batch not array", _event_with(TICKET), "application/cloudevents-batch+json", {422}),
        (
            "batch repeats id",
            encode([cloud_event("ticket.created", TICKET, id="x")] * 2),
            "application/cloudevents-batch+json",
            {422},
        ),
        (
            "NaN score",
            b'{"specversion":"1.0","id":"n","source":"crm","type":"sentiment.scored",'
            b'"data":{"customer_id":"C-1","score":NaN}}',
            structured,
            {400},
        ),
    ]
    return cases + generated


async def test_hostile_requests_get_problem_documents(app_db: AppDb) -> None:
    intake = make_intake(app_db)
    cases = _hostile_bodies()
    assert len(cases) >= 40
    async with http(intake) as client:
        for name, body, content_type, statuses in cases:
            headers = signed_headers(body, content_type=content_type)
            response = await client.post("/v1/events/crm", content=body, headers=headers)
            assert response.status_code in statuses, (name, response.status_code, response.text)
            assert response.headers["content-type"] == "application/problem+json", name
            problem = response.json()
            assert problem["status"] == response.status_code
            assert problem["type"].startswith("https://opsflow.dev/problems/")
            assert problem["detail"], name
            if response.status_code == 422:
                assert problem["errors"][0]["field"], name
        # still healthy, nothing recorded, a good event still goes in
        assert (await client.get("/healthz")).status_code == 200
        assert await inbox_count(app_db) == 0
        assert (await post_event(client, cloud_event("ticket.created", TICKET))).status_code == 202


async def test_field_named_in_the_problem(app_db: AppDb) -> None:
    async with http(make_intake(app_db)) as client:
        response = await post_event(
            client, cloud_event("survey.responded", {"customer_id": "C-1", "score": 9})
        )
        assert response.status_code == 422
        assert response.json()["errors"][0]["field"] == "data"
        assert "outside 1..5" in response.json()["detail"]
        wide = {"customer_id": "C-1", "score": 900, "scale": 1000}
        response = await post_event(client, cloud_event("survey.responded", wide))
        assert response.status_code == 422
        assert response.json()["errors"][0]["field"] == "data.scale"
        response = await post_event(
            client, cloud_event("ticket.created", {**TICKET, "priority": "p9"})
        )
        assert response.json()["errors"][0]["field"] == "data.priority"
        for attribute in ("id", "specversion", "source", "type"):
            event = cloud_event("ticket.created", TICKET)
            del event[attribute]
            response = await post_event(client, event)
            assert response.status_code == 422, attribute
            assert response.json()["errors"][0] == {"field": attribute, "message": "required"}
        assert await inbox_count(app_db) == 0


@pytest.mark.parametrize("path", ["/v1/nowhere", "/v1/events"])
async def test_unknown_paths_are_problems(app_db: AppDb, path: str) -> None:
    async with http(make_intake(app_db)) as client:
        response = await client.post(path, content=b"{}")
        assert response.status_code in (404, 405)
        assert response.headers["content-type"] == "application/problem+json"


def test_secret_is_a_standard_webhooks_secret() -> None:
    assert SECRET.startswith("whsec_")
