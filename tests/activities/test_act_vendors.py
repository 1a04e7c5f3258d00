"""Each vendor adapter against a local server speaking the vendor's documented protocol."""

from __future__ import annotations

import base64
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from email import message_from_bytes
from pathlib import Path

import pytest
from aiosmtpd.controller import Controller
from sqlalchemy import select
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities.adapters.hubspot import HubSpotCrm
from activities.adapters.pagerduty import PagerDutyNotifier
from activities.adapters.prometheus import PrometheusMetrics
from activities.adapters.slack import SlackNotifier
from activities.adapters.smtp_email import SmtpNotifier
from activities.adapters.webhook import SignedWebhook, WebhookChanges, WebhookNotifier, verify
from activities.adapters.zendesk import ZendeskTicketing
from activities.backends import Backends
from activities.changes import ChangeActivities
from activities.crm import CrmActivities
from activities.deps import ActivityDeps
from activities.errors import parse_retry_after
from activities.metrics import MetricsActivities
from activities.models import (
    AddComment,
    AddNote,
    ApplyChange,
    CohortSpec,
    CreateTicket,
    GetCustomer,
    GetTicket,
    MetricCohort,
    ReadMetric,
    SelectCohort,
    SendMessage,
    UpdateTicket,
)
from activities.notify import NotifyActivities
from activities.settings import DEFAULT_PROMQL, DEFAULT_PROMQL_SAMPLES
from activities.ticketing import TicketingActivities
from store.models import OutboxEntry
from tests.activities.conftest import Reply, Seen, Sessions, VendorServer
from tests.devstack_support import free_port

env = ActivityEnvironment()
Start = Callable[[Callable[[Seen], Reply]], VendorServer]


def deps_with(sessions: Sessions, folder: Path, **overrides: object) -> ActivityDeps:
    sandbox = Backends.sandbox(sessions)
    notifiers = dict(sandbox.notifiers)
    notifiers.update(overrides.pop("notifiers", {}))  # type: ignore[call-overload]
    fields = {
        "crm": sandbox.crm,
        "credits": sandbox.credits,
        "ticketing": sandbox.ticketing,
        "changes": sandbox.changes,
        "metrics": sandbox.metrics,
        "presence": sandbox.presence,
        "notifiers": notifiers,
    } | overrides
    return ActivityDeps(
        sessions=sessions,
        backends=Backends(**fields),
        template_folder=folder,  # type: ignore[arg-type]
    )


def page(key: str = "case-1/page") -> SendMessage:
    return SendMessage(
        idempotency_key=key,
        channel="pager",
        recipient="on-call",
        template="page",
        context={"case": {"id": "1"}},
        severity="critical",
    )


# --- PagerDuty: dedup_key, error classes, and the outbox under a lost response ---------------


def pagerduty_server(
    start: Start, script: list[Reply] | None = None
) -> tuple[VendorServer, dict[str, int]]:
    alerts: dict[str, int] = {}
    queue = list(script or [])

    def handle(seen: Seen) -> Reply:
        assert (seen.method, seen.path) == ("POST", "/v2/enqueue")
        if queue:
            return queue.pop(0)
        event = seen.json()
        if event.get("routing_key") != "R0UTING" or event.get("event_action") != "trigger":
            return Reply(400, {"status": "invalid event", "errors": ["bad routing_key"]})
        assert event["payload"]["severity"] in ("critical", "error", "warning", "info")
        assert event["payload"]["summary"] and event["payload"]["source"] == "opsflow"
        alerts[event["dedup_key"]] = alerts.get(event["dedup_key"], 0) + 1
        return Reply(
            202,
            {"status": "success", "message": "Event processed", "dedup_key": event["dedup_key"]},
        )

    return start(handle), alerts


async def test_pagerduty_retries_and_retry_after(
    sessions: Sessions, template_folder: Path, vendor: Start
) -> None:
    server, alerts = pagerduty_server(
        vendor,
        [
            Reply(429, {"status": "throttled"}, {"Retry-After": "7"}),
            Reply(500, "oops"),
            Reply(202, b"<html>proxy</html>"),
        ],
    )
    pager = PagerDutyNotifier("R0UTING", url=server.url, timeout=2)
    notify = NotifyActivities(deps_with(sessions, template_folder, notifiers={"pager": pager}))
    with pytest.raises(ApplicationError) as throttled:
        await env.run(notify.send, page())
    assert throttled.value.type == "RateLimited" and not throttled.value.non_retryable
    assert throttled.value.next_retry_delay == timedelta(seconds=7)
    with pytest.raises(ApplicationError) as failed:
        await env.run(notify.send, page())
    assert failed.value.type == "VendorUnavailable" and not failed.value.non_retryable
    with pytest.raises(ApplicationError) as garbled:
        await env.run(notify.send, page())
    assert garbled.value.type == "VendorProtocolError" and not garbled.value.non_retryable
    sent = await env.run(notify.send, page())
    assert sent.message_id == "case-1/page" and alerts == {"case-1/page": 1}
    assert (await env.run(notify.send, page())) == sent  # recorded: no fifth request
    assert len(server.seen) == 4


async def test_pagerduty_rejects_are_non_retryable(
    sessions: Sessions, template_folder: Path, vendor: Start
) -> None:
    server, _ = pagerduty_server(vendor)
    pager = PagerDutyNotifier("WRONG", url=server.url, timeout=2)
    notify = NotifyActivities(deps_with(sessions, template_folder, notifiers={"pager": pager}))
    with pytest.raises(ApplicationError) as caught:
        await env.run(notify.send, page())
    assert caught.value.non_retryable and caught.value.type == "VendorRejected"
    assert "HTTP 400" in str(caught.value) and "bad routing_key" in str(caught.value)


async def test_vendor_outbox_activity_killed_after_effect_pages_once(
    sessions: Sessions, template_folder: Path, vendor: Start
) -> None:
    """PagerDuty accepts the event but the answer never arrives (the attempt times out, as if
    the worker died): the outbox row stays pending, the retry sends the same dedup_key, and
    PagerDuty (here: its documented dedup) keeps one alert."""
    delivered: dict[str, int] = {}

    def handle(seen: Seen) -> Reply:
        key = seen.json()["dedup_key"]
        delivered[key] = delivered.get(key, 0) + 1
        slow = delivered[key] == 1
        return Reply(202, {"status": "success", "dedup_key": key}, delay=1.0 if slow else 0)

    server = vendor(handle)
    pager = PagerDutyNotifier("R0UTING", url=server.url, timeout=0.3)
    notify = NotifyActivities(deps_with(sessions, template_folder, notifiers={"pager": pager}))
    with pytest.raises(ApplicationError) as lost:
        await env.run(notify.send, page("case-7/page"))
    assert lost.value.type == "VendorUnavailable" and "timed out" in str(lost.value)
    async with sessions() as session:
        row = await session.scalar(select(OutboxEntry))
    assert row is not None and (row.status, row.attempts) == ("pending", 1)
    sent = await env.run(notify.send, page("case-7/page"))
    again = await env.run(notify.send, page("case-7/page"))
    assert sent == again and sent.message_id == "case-7/page"
    # Two deliveries of the same dedup_key (one alert at PagerDuty), none after the record.
    assert delivered == {"case-7/page": 2} and len(server.seen) == 2
    async with sessions() as session:
        row = await session.scalar(select(OutboxEntry))
    assert row is not None and (row.status, row.attempts) == ("done", 2)


# --- Zendesk -------------------------------------------------------------------------------


async def test_zendesk_tickets_and_comments(
    sessions: Sessions, template_folder: Path, vendor: Start
) -> None:
    tickets: dict[int, dict[str, object]] = {}
    by_key: dict[str, int] = {}
    expected_auth = "Basic " + base64.b64encode(b"ops@example.com/token:T0KEN").decode()

    def handle(seen: Seen) -> Reply:
        if seen.headers.get("authorization") != expected_auth:
            return Reply(401, {"error": "Couldn't authenticate you"})
        if (seen.method, seen.path) == ("POST", "/api/v2/tickets.json"):
            key = seen.headers["idempotency-key"]
            if key not in by_key:
                ticket = seen.json()["ticket"]
                assert ticket["comment"]["public"] is False and ticket["priority"] == "high"
                number = 100 + len(tickets)
                tickets[number] = {"id": number, "status": "new", **ticket}
                by_key[key] = number
            return Reply(201, {"ticket": tickets[by_key[key]]})
        number = int(seen.path.rsplit("/", 1)[1].removesuffix(".json"))
        if number not in tickets:
            return Reply(404, {"error": "RecordNotFound"})
        if seen.method == "GET":
            return Reply(200, {"ticket": tickets[number]})
        change = seen.json()["ticket"]
        if "comment" in change:
            return Reply(
                200,
                {
                    "ticket": tickets[number],
                    "audit": {"id": 9, "events": [{"id": 555, "type": "Comment", "public": True}]},
                },
            )
        tags = list(tickets[number].get("tags", [])) + change.pop("additional_tags", [])  # type: ignore[call-overload]
        tickets[number].update(change, tags=tags)
        return Reply(200, {"ticket": tickets[number]})

    server = vendor(handle)
    zendesk = ZendeskTicketing(server.url, "ops@example.com", "T0KEN", timeout=2)
    ticketing = TicketingActivities(deps_with(sessions, template_folder, ticketing=zendesk))
    create = CreateTicket(
        idempotency_key="case-3/create",
        customer_id="C-0003",
        subject="Refund",
        priority="p2",
        queue="billing",
        stage="triage",
    )
    ticket = await env.run(ticketing.create_ticket, create)
    assert (ticket.id, ticket.priority, ticket.queue, ticket.stage) == (
        "100",
        "p2",
        "billing",
        "triage",
    )
    assert ticket.customer_id == "C-0003"
    updated = await env.run(
        ticketing.update_ticket,
        UpdateTicket(
            idempotency_key="case-3/up",
            ticket_id="100",
            status="on_hold",
            priority="p1",
            add_tags=["vip"],
        ),
    )
    assert (updated.status, updated.priority) == ("on_hold", "p1") and "vip" in updated.tags
    assert tickets[100]["status"] == "hold"
    comment = await env.run(
        ticketing.add_comment,
        AddComment(idempotency_key="case-3/c1", ticket_id="100", body="We are on it", public=True),
    )
    assert comment.comment_id == "555"
    assert (await env.run(ticketing.get_ticket, GetTicket(ticket_id="100"))).priority == "p1"
    with pytest.raises(ApplicationError) as missing:
        await env.run(ticketing.get_ticket, GetTicket(ticket_id="999"))
    assert missing.value.type == "NotFound" and missing.value.non_retryable
    with pytest.raises(ApplicationError) as bad_id:
        await env.run(ticketing.get_ticket, GetTicket(ticket_id="T-1"))
    assert bad_id.value.non_retryable and len(server.seen) == 5
    wrong = ZendeskTicketing(server.url, "ops@example.com", "nope", timeout=2)
    with pytest.raises(ApplicationError) as refused:
        await wrong.get_ticket("100")
    assert refused.value.type == "VendorAuthFailed" and refused.value.non_retryable


async def test_zendesk_comment_stored_but_timed_out_is_not_posted_twice(
    sessions: Sessions, template_folder: Path, vendor: Start
) -> None:
    """Zendesk stores the comment but its answer arrives after the request timed out (as if
    the worker died): the retry finds the comment by the key in its audit metadata and posts
    nothing more; a retry whose first attempt never reached Zendesk posts it once."""
    audits: list[dict[str, object]] = []
    posts: list[str] = []

    def handle(seen: Seen) -> Reply:
        if (seen.method, seen.path) == ("GET", "/api/v2/tickets/100/audits.json"):
            assert seen.query["sort_order"] == ["desc"]
            return Reply(200, {"audits": list(reversed(audits)), "meta": {"has_more": False}})
        assert (seen.method, seen.path) == ("PUT", "/api/v2/tickets/100.json")
        change = seen.json()["ticket"]
        posts.append(change["comment"]["body"])
        audit = {
            "id": 900 + len(audits),
            "ticket_id": 100,
            "metadata": {"system": {}, "custom": change.get("metadata", {})},
            "events": [{"id": 700 + len(audits), "type": "Comment", "body": posts[-1]}],
        }
        audits.append(audit)
        slow = len(posts) == 1
        return Reply(200, {"ticket": {"id": 100}, "audit": audit}, delay=1.0 if slow else 0)

    server = vendor(handle)
    zendesk = ZendeskTicketing(server.url, "ops@example.com", "T0KEN", timeout=0.3)
    ticketing = TicketingActivities(deps_with(sessions, template_folder, ticketing=zendesk))
    comment = AddComment(idempotency_key="case-3/c1", ticket_id="100", body="We are on it")
    with pytest.raises(ApplicationError) as lost:
        await env.run(ticketing.add_comment, comment)
    assert lost.value.type == "VendorUnavailable" and not lost.value.non_retryable
    added = await env.run(ticketing.add_comment, comment)
    assert added.comment_id == "700" and posts == ["We are on it"]
    assert audits[0]["metadata"] == {"system": {}, "custom": {"opsflow_key": "case-3/c1"}}
    assert (await env.run(ticketing.add_comment, comment)) == added  # recorded by the outbox
    # The first attempt of another comment does not look (no extra request); its key differs.
    other = AddComment(idempotency_key="case-3/c2", ticket_id="100", body="Fixed")
    assert (await env.run(ticketing.add_comment, other)).comment_id == "701"
    methods = [seen.method for seen in server.seen]
    assert methods == ["PUT", "GET", "PUT"] and posts == ["We are on it", "Fixed"]


async def test_zendesk_callback_ticket_is_a_task_with_its_due_time(
    sessions: Sessions, template_folder: Path, vendor: Start
) -> None:
    from tests.handoff_support import FakeZendesk

    fake = FakeZendesk({12: "Callbacks"})
    server = vendor(fake)
    fake.base_url = server.url
    ticketing = TicketingActivities(deps_with(sessions, template_folder, ticketing=fake.adapter()))
    due = datetime(2026, 11, 30, 8, 0, tzinfo=UTC)  # 09:00 in Paris
    ticket = await env.run(
        ticketing.create_ticket,
        CreateTicket(
            idempotency_key="handoff-C1/callback-0",
            customer_id="C-0003",
            subject="Call back C-0003",
            priority="p2",
            queue="callbacks",
            due_at=due,
        ),
    )
    sent = server.seen[-1].json()["ticket"]
    assert (sent["type"], sent["due_at"]) == ("task", "2026-11-30T08:00:00Z")
    assert "queue_callbacks" in sent["tags"]
    assert ticket.due_at == due and ticket.queue == "callbacks"
    plain = await env.run(
        ticketing.create_ticket,
        CreateTicket(idempotency_key="case-9/create", customer_id="C-0003", subject="No due"),
    )
    assert "type" not in server.seen[-1].json()["ticket"] and plain.due_at is None


async def test_zendesk_group_routing_finds_the_group_by_name_across_pages(
    sessions: Sessions, template_folder: Path, vendor: Start
) -> None:
    from activities.handoff_contracts import AssignGroup, QueueRequest
    from activities.presence import PresenceActivities
    from tests.handoff_support import FakeZendesk

    fake = FakeZendesk({11: "Support", 12: "Billing", 13: "Tier 2", 14: "VIP desk"}, page_size=2)
    server = vendor(fake)
    fake.base_url = server.url
    zendesk = fake.adapter()
    presence = PresenceActivities(deps_with(sessions, template_folder, ticketing=zendesk))
    ticketing = TicketingActivities(deps_with(sessions, template_folder, ticketing=zendesk))

    # With Zendesk, the vendor routes: the queue's hours from the queue table, no estimate.
    info = await env.run(presence.queue_info, QueueRequest(queue="billing", skills=["billing"]))
    assert (info.routing, info.vendor, info.estimated_wait_seconds) == ("vendor", "zendesk", None)
    assert info.timezone == "Europe/Berlin" and info.hours == {"mon-fri": "08:00-18:00"}

    ticket = await env.run(
        ticketing.create_ticket,
        CreateTicket(
            idempotency_key="handoff-C2/ticket",
            customer_id="C-0003",
            subject="Chat",
            queue="tier-2",
        ),
    )
    assigned = await env.run(
        presence.assign_group,
        AssignGroup(idempotency_key="handoff-C2/group-tier-2", ticket_id=ticket.id, queue="tier-2"),
    )
    assert (assigned.group, assigned.backend) == ("13", "zendesk")  # "Tier 2", on page 2
    put = server.seen[-1]
    assert (put.method, put.path) == ("PUT", f"/api/v2/tickets/{ticket.id}.json")
    assert put.json()["ticket"] == {"group_id": 13, "assignee_id": None, "status": "open"}
    assert fake.group_reads == 2  # both pages, through the relative path of `next_page`
    assert all(seen.path.startswith("/api/") for seen in server.seen)

    # The same key again is the outbox's recorded answer; another queue reads no groups again.
    seen_before = len(server.seen)
    again = await env.run(
        presence.assign_group,
        AssignGroup(idempotency_key="handoff-C2/group-tier-2", ticket_id=ticket.id, queue="tier-2"),
    )
    assert again == assigned and len(server.seen) == seen_before
    billing = await env.run(
        presence.assign_group,
        AssignGroup(
            idempotency_key="handoff-C2/group-billing", ticket_id=ticket.id, queue="billing"
        ),
    )
    assert billing.group == "12" and fake.group_reads == 2
    assert fake.tickets[int(ticket.id)]["group_id"] == 12

    # No group for the queue: refused at once, nothing changed.
    with pytest.raises(ApplicationError) as missing:
        await env.run(
            presence.assign_group,
            AssignGroup(
                idempotency_key="handoff-C2/group-x", ticket_id=ticket.id, queue="onboarding"
            ),
        )
    assert missing.value.non_retryable and "no Zendesk group" in str(missing.value)
    assert fake.tickets[int(ticket.id)]["group_id"] == 12

    # The sandbox ticketing backend has no vendor groups: opsflow offers agents itself.
    sandbox = PresenceActivities(deps_with(sessions, template_folder))
    assert (await env.run(sandbox.queue_info, QueueRequest(queue="billing"))).routing == "opsflow"
    with pytest.raises(ApplicationError) as no_vendor:
        await env.run(
            sandbox.assign_group,
            AssignGroup(idempotency_key="handoff-C3/group", ticket_id="T-1", queue="billing"),
        )
    assert no_vendor.value.non_retryable


# --- HubSpot ------------------------------------------------------------------------------------


async def test_hubspot_profile_paged_cohort_and_note(
    sessions: Sessions, template_folder: Path, vendor: Start
) -> None:
    contacts = [
        {
            "id": str(n),
            "properties": {
                "firstname": f"F{n}",
                "lastname": "L",
                "email": f"{n}@x.io",
                "opsflow_tier": "vip" if n % 3 == 0 else "standard",
                "opsflow_segment": "smb",
                "total_revenue": str(n * 10),
                "hs_language": "de" if n % 2 else "en",
            },
        }
        for n in range(1, 251)
    ]
    notes: list[dict[str, object]] = []

    def handle(seen: Seen) -> Reply:
        if seen.headers.get("authorization") != "Bearer pat-123":
            return Reply(401, {"status": "error", "category": "INVALID_AUTHENTICATION"})
        if seen.path == "/crm/v3/objects/contacts":
            start = int(seen.query.get("after", ["0"])[0])
            limit = int(seen.query["limit"][0])
            body: dict[str, object] = {"results": contacts[start : start + limit]}
            if start + limit < len(contacts):
                body["paging"] = {"next": {"after": str(start + limit)}}
            return Reply(200, body)
        if seen.path.startswith("/crm/v3/objects/contacts/"):
            wanted = seen.path.rsplit("/", 1)[1]
            found = [c for c in contacts if c["id"] == wanted]
            return Reply(200, found[0]) if found else Reply(404, {"message": "not found"})
        if (seen.method, seen.path) == ("POST", "/crm/v3/objects/notes"):
            note = seen.json()
            assert note["properties"]["hs_note_body"] and note["properties"]["hs_timestamp"]
            assert note["associations"][0]["types"][0]["associationTypeId"] == 202
            notes.append(note)
            return Reply(201, {"id": str(9000 + len(notes))})
        return Reply(404, {})

    server = vendor(handle)
    hubspot = HubSpotCrm(server.url, "pat-123", timeout=2)
    crm = CrmActivities(deps_with(sessions, template_folder, crm=hubspot))
    profile = await env.run(crm.get_customer, GetCustomer(customer_id="3"))
    assert (profile.name, profile.tier, profile.language) == ("F3 L", "vip", "de")
    cohort = await env.run(
        crm.select_cohort,
        SelectCohort(cohort=CohortSpec(seed="s", percent=50, tiers=["vip"], languages=["de"])),
    )
    assert cohort.eligible == len([n for n in range(1, 251) if n % 3 == 0 and n % 2])
    assert 0 < cohort.size < cohort.eligible
    assert sum(1 for s in server.seen if s.path == "/crm/v3/objects/contacts") == 3
    note = AddNote(idempotency_key="cust-3/note", customer_id="3", body="Called back")
    assert (await env.run(crm.add_note, note)).note_id == "9001"
    await env.run(crm.add_note, note)
    assert len(notes) == 1


async def test_hubspot_note_stored_but_timed_out_is_found_not_repeated(
    sessions: Sessions, template_folder: Path, vendor: Start
) -> None:
    """HubSpot stores the note but the answer is lost: the retry searches for the note's
    reference token and returns it instead of creating a second note."""
    notes: list[dict[str, object]] = []

    def handle(seen: Seen) -> Reply:
        if (seen.method, seen.path) == ("POST", "/crm/v3/objects/notes/search"):
            [group] = seen.json()["filterGroups"]
            [wanted] = group["filters"]
            assert (wanted["propertyName"], wanted["operator"]) == (
                "hs_note_body",
                "CONTAINS_TOKEN",
            )
            hits = [
                {"id": n["id"]}
                for n in notes
                if wanted["value"] in str(n["properties"]["hs_note_body"]).split()  # type: ignore[index]
            ]
            return Reply(200, {"total": len(hits), "results": hits})
        assert (seen.method, seen.path) == ("POST", "/crm/v3/objects/notes")
        notes.append({"id": str(9000 + len(notes)), **seen.json()})
        return Reply(201, {"id": notes[-1]["id"]}, delay=1.0 if len(notes) == 1 else 0)

    server = vendor(handle)
    crm = CrmActivities(
        deps_with(sessions, template_folder, crm=HubSpotCrm(server.url, "pat-123", timeout=0.3))
    )
    note = AddNote(idempotency_key="cust-3/note", customer_id="3", body="Called back")
    with pytest.raises(ApplicationError) as lost:
        await env.run(crm.add_note, note)
    assert lost.value.type == "VendorUnavailable"
    assert (await env.run(crm.add_note, note)).note_id == "9000"
    assert len(notes) == 1 and [s.path.rsplit("/", 1)[1] for s in server.seen] == [
        "notes",
        "search",
    ]


# --- Slack and the signed webhook --------------------------------------------------------------


async def test_slack_incoming_webhook(
    sessions: Sessions, template_folder: Path, vendor: Start
) -> None:
    posts: list[dict[str, str]] = []

    def handle(seen: Seen) -> Reply:
        if seen.path != "/services/T000/B000/XXXX":
            return Reply(404, "no_service")
        body = seen.json()
        if set(body) != {"text"}:
            return Reply(400, "invalid_payload")
        posts.append(body)
        return Reply(200, "ok")

    server = vendor(handle)
    slack = SlackNotifier(server.url + "/services/T000/B000/XXXX", timeout=2)
    notify = NotifyActivities(deps_with(sessions, template_folder, notifiers={"chat": slack}))
    request = SendMessage(
        idempotency_key="case-5/chat",
        channel="chat",
        recipient="#ops",
        template="page",
        context={"case": {"id": "<!channel>"}},
    )
    sent = await env.run(notify.send, request)
    assert sent.backend == "slack" and sent.message_id.startswith("slack-")
    await env.run(notify.send, request)
    assert len(posts) == 1
    assert "<!channel>" not in posts[0]["text"] and "&lt;!channel&gt;" in posts[0]["text"]
    gone = SlackNotifier(server.url + "/services/other", timeout=2)
    notify = NotifyActivities(deps_with(sessions, template_folder, notifiers={"chat": gone}))
    with pytest.raises(ApplicationError) as caught:
        await env.run(notify.send, request.model_copy(update={"idempotency_key": "k2"}))
    assert caught.value.non_retryable and "no_service" in str(caught.value)


async def test_slack_web_api_retry_finds_the_posted_message_by_its_metadata(
    sessions: Sessions, template_folder: Path, vendor: Start
) -> None:
    """chat.postMessage stored the message but the answer is lost: the retry reads
    conversations.history, finds the key in the message metadata and posts nothing more."""
    messages: list[dict[str, object]] = []

    def handle(seen: Seen) -> Reply:
        if seen.headers.get("authorization") != "Bearer xoxb-1":
            return Reply(200, {"ok": False, "error": "invalid_auth"})
        if (seen.method, seen.path) == ("GET", "/api/conversations.history"):
            assert seen.query["channel"] == ["C0PS"]
            assert seen.query["include_all_metadata"] == ["true"]
            return Reply(200, {"ok": True, "messages": list(reversed(messages))})
        assert (seen.method, seen.path) == ("POST", "/api/chat.postMessage")
        body = seen.json()
        if body["channel"] != "C0PS":
            return Reply(200, {"ok": False, "error": "channel_not_found"})
        messages.append({"ts": f"1700000000.00{len(messages)}", **body})
        slow = len(messages) == 1
        return Reply(
            200, {"ok": True, "channel": "C0PS", "ts": messages[-1]["ts"]}, delay=1.0 if slow else 0
        )

    server = vendor(handle)
    slack = SlackNotifier(
        bot_token="xoxb-1", channel="C0PS", api_url=server.url + "/api", timeout=0.3
    )
    notify = NotifyActivities(deps_with(sessions, template_folder, notifiers={"chat": slack}))
    request = SendMessage(
        idempotency_key="case-5/chat",
        channel="chat",
        recipient="#ops",
        template="page",
        context={"case": {"id": "5"}},
    )
    with pytest.raises(ApplicationError) as lost:
        await env.run(notify.send, request)
    assert lost.value.type == "VendorUnavailable"
    sent = await env.run(notify.send, request)
    assert sent.message_id == "slack-C0PS-1700000000.000" and len(messages) == 1
    metadata = messages[0]["metadata"]
    assert metadata == {
        "event_type": "opsflow_effect",
        "event_payload": {"idempotency_key": "case-5/chat"},
    }
    wrong = SlackNotifier(bot_token="xoxb-1", channel="C0THER", api_url=server.url + "/api")
    notify = NotifyActivities(deps_with(sessions, template_folder, notifiers={"chat": wrong}))
    with pytest.raises(ApplicationError) as refused:
        await env.run(notify.send, request.model_copy(update={"idempotency_key": "k3"}))
    assert refused.value.non_retryable and "channel_not_found" in str(refused.value)


async def test_signed_webhook_notify_and_changes(
    sessions: Sessions, template_folder: Path, vendor: Start
) -> None:
    secret = b"s3cret"
    received: dict[str, dict[str, object]] = {}

    def handle(seen: Seen) -> Reply:
        if not verify(secret, seen.headers, seen.body, now=time.time()):
            return Reply(401, {"error": "bad signature"})
        assert seen.headers["idempotency-key"] == seen.headers["webhook-id"]
        received.setdefault(seen.headers["webhook-id"], seen.json())
        body = seen.json()
        if body["type"] == "change.apply":
            return Reply(
                200,
                {"exposed": len(body["customer_ids"]), "total_exposed": len(body["customer_ids"])},
            )
        return Reply(202, "")

    server = vendor(handle)
    hook = SignedWebhook(server.url + "/hooks/opsflow", secret, timeout=2)
    deps = deps_with(
        sessions,
        template_folder,
        changes=WebhookChanges(hook),
        notifiers={"webhook": WebhookNotifier(hook)},
    )
    sent = await env.run(
        NotifyActivities(deps).send,
        SendMessage(
            idempotency_key="case-6/hook",
            channel="webhook",
            recipient="crm-sync",
            template="page",
            context={"case": {"id": "6"}},
        ),
    )
    assert sent.message_id == "case-6/hook"
    assert received["case-6/hook"]["body"] == "Case 6 breached its SLA.\n"
    applied = await env.run(
        ChangeActivities(deps).apply,
        ApplyChange(
            idempotency_key="rollout-9/phase-1",
            change_id="ch9",
            flag_key="f",
            cohort=CohortSpec(seed="ch9", percent=30),
        ),
    )
    payload = received["rollout-9/phase-1"]
    assert payload["type"] == "change.apply" and applied.exposed == len(payload["customer_ids"])  # type: ignore[arg-type]
    forged = SignedWebhook(server.url + "/hooks/opsflow", b"wrong", timeout=2)
    with pytest.raises(ApplicationError) as caught:
        await forged.post("send", "k", {"type": "x"})
    assert caught.value.type == "VendorAuthFailed" and caught.value.non_retryable


# --- Prometheus ---------------------------------------------------------------------------------


async def test_prometheus_instant_queries(
    sessions: Sessions, template_folder: Path, vendor: Start
) -> None:
    def handle(seen: Seen) -> Reply:
        assert seen.path == "/api/v1/query"
        query = seen.query["query"][0]
        if "change=empty" in query:
            return Reply(200, {"status": "success", "data": {"resultType": "vector", "result": []}})
        if "broken(" in query:
            return Reply(400, {"status": "error", "errorType": "bad_data", "error": "parse error"})
        if "count_over_time" in query:
            return Reply(
                200,
                {
                    "status": "success",
                    "data": {
                        "resultType": "vector",
                        "result": [{"metric": {}, "value": [1, "812"]}],
                    },
                },
            )
        assert 'cohort="change=ch1"' in query and "[3600s]" in query
        assert float(seen.query["time"][0]) == WINDOW_END.timestamp()
        return Reply(
            200,
            {
                "status": "success",
                "data": {"resultType": "vector", "result": [{"metric": {}, "value": [1, "4.12"]}]},
            },
        )

    server = vendor(handle)
    queries = DEFAULT_PROMQL | {"broken": "broken({cohort})"}
    prometheus = PrometheusMetrics(server.url, queries, DEFAULT_PROMQL_SAMPLES, timeout=2)
    metrics = MetricsActivities(deps_with(sessions, template_folder, metrics=prometheus))

    def read(metric: str, change: str) -> ReadMetric:
        return ReadMetric(
            metric=metric,
            cohort=MetricCohort(change_id=change),
            window_start=WINDOW_END - timedelta(hours=1),
            window_end=WINDOW_END,
        )

    reading = await env.run(metrics.read, read("csat", "ch1"))
    assert (reading.value, reading.sample_size, reading.backend) == (4.12, 812, "prometheus")
    empty = await env.run(metrics.read, read("csat", "empty"))
    assert (empty.value, empty.sample_size) == (None, 0)
    with pytest.raises(ApplicationError) as bad:
        await env.run(metrics.read, read("broken", "ch1"))
    assert bad.value.non_retryable and "bad_data" in str(bad.value)
    with pytest.raises(ApplicationError) as unknown:
        await env.run(metrics.read, read("nps", "ch1"))
    assert unknown.value.non_retryable


WINDOW_END = datetime(2025, 6, 2, 12, tzinfo=UTC)


def test_retry_after_forms() -> None:
    now = datetime(2025, 6, 2, 12, tzinfo=UTC)
    assert parse_retry_after("120") == timedelta(seconds=120)
    assert parse_retry_after("Mon, 02 Jun 2025 12:00:30 GMT", now=now) == timedelta(seconds=30)
    assert parse_retry_after("soon") is None and parse_retry_after(None) is None


# --- SMTP against aiosmtpd --------------------------------------------------------------------


class _Inbox:
    def __init__(self, refuse: set[str]) -> None:
        self.messages: list[bytes] = []
        self.refuse = refuse

    async def handle_RCPT(
        self,
        server: object,
        session: object,
        envelope: object,
        address: str,
        options: list[str],
    ) -> str:
        if address in self.refuse:
            return "550 5.1.1 mailbox unavailable"
        envelope.rcpt_tos.append(address)  # type: ignore[attr-defined]
        return "250 OK"

    async def handle_DATA(self, server: object, session: object, envelope: object) -> str:
        self.messages.append(envelope.content)  # type: ignore[attr-defined]
        return "250 Message accepted"


async def test_smtp_email_to_customer(sessions: Sessions, template_folder: Path) -> None:
    inbox = _Inbox(refuse={"nobody@example.com"})
    port = free_port()
    controller = Controller(inbox, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        smtp = SmtpNotifier(
            "127.0.0.1", port, sender="Support <support@opsflow.example>", starttls=False, timeout=5
        )
        notify = NotifyActivities(deps_with(sessions, template_folder, notifiers={"email": smtp}))
        request = SendMessage(
            idempotency_key="cust-1/apology",
            channel="email",
            recipient="customer:C-0001",
            template="apology",
            context={"customer": {"name": "Ava"}, "case": {"id": "12"}},
        )
        sent = await env.run(notify.send, request)
        assert (await env.run(notify.send, request)) == sent
        assert len(inbox.messages) == 1
        mail = message_from_bytes(inbox.messages[0])
        assert mail["To"] == "ava.brown.1@example.com" and mail["Subject"] == "Sorry about case 12"
        assert mail["Message-ID"] == sent.message_id
        with pytest.raises(ApplicationError) as refused:
            await env.run(
                notify.send,
                request.model_copy(
                    update={"idempotency_key": "k-refused", "recipient": "nobody@example.com"}
                ),
            )
        assert refused.value.non_retryable and "550" in str(refused.value)
    finally:
        controller.stop()
    with pytest.raises(ApplicationError) as down:
        await env.run(notify.send, request.model_copy(update={"idempotency_key": "k-down"}))
    assert down.value.type == "VendorUnavailable" and not down.value.non_retryable
