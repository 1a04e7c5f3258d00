"""Zendesk's comment events reach the case's SLA clocks through the real intake app (signed
webhooks, the inbox, the relay's router).

Zendesk's webhook reference ("Ticket events", developer.zendesk.com/api-reference/webhooks/
event-types/ticket-events, event type `zen:event-type:ticket.comment_added`, "Comment
created") gives the comment in `event.comment`: its `id`, `body`, `is_public` (false for an
internal note) and `author` with `id`, `name` and `is_staff` (an agent or admin). Zendesk's SLA
policies ("Defining and using SLA policies", support.zendesk.com) start a next reply target at
the oldest unanswered end-user comment and meet it with the next public agent comment; the
first public agent comment is the first reply. An internal note is neither."""

from __future__ import annotations

import time
import uuid
from datetime import timedelta
from typing import Any

import httpx
import pytest
from temporalio.testing import WorkflowEnvironment

from intake import inbox
from intake.app import Intake
from intake.signatures import zendesk_signature
from tests.conftest import AppDb
from tests.definition_support import pinned
from tests.escalation_support import (
    about_at,
    add_ticket,
    case,
    escalation_worker,
    new_ticket_id,
    policy_document,
    settled,
    skip_to,
)
from tests.intake_support import ZENDESK_SECRET, encode, http, make_intake
from workflows.escalation import EscalationInput, EscalationWorkflow, case_workflow_id

pytestmark = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)

AGENT = "8447388090495"
REQUESTER = "8447388090494"


def comment_added(ticket: str, author: str, *, staff: bool, public: bool) -> dict[str, Any]:
    """A `ticket.comment_added` webhook as Zendesk's reference shows one."""
    return {
        "type": "zen:event-type:ticket.comment_added",
        "account_id": 22129848,
        "id": str(uuid.uuid4()),
        "time": "2026-11-23T09:14:00.123456789Z",
        "zendesk_event_version": "2022-11-06",
        "subject": f"zen:ticket:{ticket}",
        "detail": {"id": ticket, "requester_id": REQUESTER, "status": "OPEN", "priority": "HIGH"},
        "event": {
            "comment": {
                "id": str(uuid.uuid4().int % 10**12),
                "body": "Any news on my invoice?" if not staff else "We are on it.",
                "is_public": public,
                "author": {"id": author, "is_staff": staff, "name": "Someone"},
            }
        },
    }


async def post_zendesk(
    client: httpx.AsyncClient, document: Any, *, seconds_later: int = 0
) -> httpx.Response:
    body = encode(document)
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + seconds_later))
    headers = {
        "content-type": "application/json",
        "x-zendesk-webhook-signature": zendesk_signature(ZENDESK_SECRET, stamp, body),
        "x-zendesk-webhook-signature-timestamp": stamp,
    }
    return await client.post("/v1/webhooks/zendesk", content=body, headers=headers)


async def test_a_comment_maps_by_its_author_and_visibility(app_db: AppDb) -> None:
    """Zendesk's "Comment created" event: a public comment by staff (`author.is_staff`) is
    the agent's public reply, a public comment by anyone else is the end user writing in,
    and an internal note (`is_public: false`) is kept in the inbox, rejected with the
    reason and answered 202, so Zendesk does not send it again."""
    async with http(make_intake(app_db)) as client:
        expected = [
            (comment_added("35436", AGENT, staff=True, public=True), {"public_reply_by": AGENT}),
            (
                comment_added("35436", REQUESTER, staff=False, public=True),
                {"requester_reply_by": REQUESTER},
            ),
        ]
        for document, fields in expected:
            response = await post_zendesk(client, document)
            assert response.status_code == 202, response.text
            [answered] = response.json()["events"]
            assert (answered["type"], answered["status"]) == ("ticket.updated", "accepted")
            [row] = await inbox.find(app_db.sessions, document["id"])
            assert {k: v for k, v in row.data.items() if v is not None} == {
                "ticket_id": "35436",
                "customer_id": REQUESTER,
                **fields,
            }

        note = comment_added("35436", AGENT, staff=True, public=False)
        response = await post_zendesk(client, note)
        assert response.status_code == 202, response.text
        [answered] = response.json()["events"]
        assert answered["status"] == "rejected"
        assert "an internal note counts for no metric" in answered["outcome"]
        [row] = await inbox.find(app_db.sessions, note["id"])
        assert (row.type, row.subject, row.data) == (note["type"], "35436", note)

        # Without `is_public` nothing says whether the requester saw it: refused, not guessed.
        unclear = comment_added("35436", AGENT, staff=True, public=True)
        del unclear["event"]["comment"]["is_public"]
        response = await post_zendesk(client, unclear)
        assert response.status_code == 422
        assert "event.comment.is_public: missing" in response.json()["detail"]
        assert await inbox.find(app_db.sessions, unclear["id"]) == []


async def test_an_event_no_opsflow_type_maps_is_recorded_rejected(app_db: AppDb) -> None:
    """Zendesk's other ticket events (here "Tags changed", `zen:event-type:ticket.tags_changed`)
    are kept as they came, rejected with the reason, as HubSpot's are: answered 202 once and
    200 when Zendesk sends the same event again, never acknowledged and dropped."""
    tags = {
        "type": "zen:event-type:ticket.tags_changed",
        "id": str(uuid.uuid4()),
        "time": "2026-11-23T09:14:00Z",
        "subject": "zen:ticket:35436",
        "detail": {"id": "35436", "requester_id": REQUESTER},
        "event": {"tags": {"added": ["vip"], "removed": []}},
    }
    async with http(make_intake(app_db)) as client:
        first = await post_zendesk(client, tags)
        assert first.status_code == 202, first.text
        [answered] = first.json()["events"]
        assert answered["status"] == "rejected"
        assert "Zendesk ticket.tags_changed: only ticket.created" in answered["outcome"]
        # a retry is signed anew, with its own timestamp
        again = await post_zendesk(client, tags, seconds_later=1)
        assert again.status_code == 200
        assert again.json()["events"][0]["duplicate"] is True
    rejected = await inbox.listing(app_db.sessions, ["rejected"])
    assert [(r.event_id, r.type, r.data) for r in rejected] == [(tags["id"], tags["type"], tags)]


async def settle(intake: Intake) -> None:
    assert intake.relay is not None
    _settled, reachable = await intake.relay.drain_once()
    assert reachable


async def test_comments_start_and_meet_the_next_reply(
    workflow_env: WorkflowEnvironment, app_db: AppDb
) -> None:
    """Zendesk's next reply time, driven by its comment webhooks: the requester's public
    comment starts a target, an internal note leaves it running, and the agent's next public
    comment meets it (and, being the first public agent comment, the first reply too)."""
    ticket = new_ticket_id()
    await add_ticket(app_db, ticket)
    slas = [{"priority": "p2", "first_response": "2h", "next_reply": "1h", "resolution": "1d"}]
    policy = pinned(policy_document(slas=slas, priorities=["p2"]))
    async with escalation_worker(workflow_env, app_db) as queue:
        opened = await workflow_env.get_current_time()
        handle = await workflow_env.client.start_workflow(
            EscalationWorkflow.run,
            EscalationInput(case=case(ticket, opened, priority="p2"), policy=policy),
            id=case_workflow_id(ticket),
            task_queue=queue,
        )
        assert (await settled(handle)).clocks["next_reply"].status == "waiting"
        intake = make_intake(app_db, workflow_env.client, queue)
        async with http(intake) as client:
            await skip_to(workflow_env, opened + timedelta(minutes=10))
            asked = comment_added(ticket, REQUESTER, staff=False, public=True)
            assert (await post_zendesk(client, asked)).status_code == 202
            await settle(intake)
            [row] = await inbox.find(app_db.sessions, asked["id"])
            assert (row.status, row.outcome) == ("delivered", "case updated: requester_reply")
            waiting = (await settled(handle)).clocks["next_reply"]
            assert (waiting.status, waiting.cycle) == ("running", 1)
            assert waiting.due == about_at(opened + timedelta(minutes=10 + 60))

            await skip_to(workflow_env, opened + timedelta(minutes=20))
            note = comment_added(ticket, AGENT, staff=True, public=False)
            assert (await post_zendesk(client, note)).status_code == 202
            await settle(intake)
            state = await settled(handle)
            assert state.clocks["next_reply"].status == "running"
            assert state.clocks["first_response"].status == "running"

            await skip_to(workflow_env, opened + timedelta(minutes=30))
            answer = comment_added(ticket, AGENT, staff=True, public=True)
            assert (await post_zendesk(client, answer)).status_code == 202
            await settle(intake)
            [row] = await inbox.find(app_db.sessions, answer["id"])
            assert (row.status, row.outcome) == ("delivered", "case updated: agent_reply")
            state = await settled(handle)
        answered_at = about_at(opened + timedelta(minutes=30))
        assert state.clocks["next_reply"].status == "met"
        assert state.clocks["next_reply"].met_at == answered_at
        assert state.clocks["first_response"].met_at == answered_at
        assert state.acknowledged_by == AGENT
        await handle.terminate("test over")
