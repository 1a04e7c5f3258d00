"""The vendor fault matrix (issue 22 item 2): every vendor adapter, driven through its
activity (and the outbox, where the effect's idempotency lives), against a local server
speaking the vendor's protocol that misbehaves once in one way; then Temporal's retry,
played here as the same activity run again with the same idempotency key.

What README.md ("Vendor adapters") and DESIGN.md ("Errors are classified", "Every effect is
idempotent") promise, and what each row checks:

- a 4xx fails at once: a non-retryable ApplicationError whose message names the vendor;
- a 429 is retried after its Retry-After, given in seconds or as an HTTP date;
- a 5xx, a hang, a trickle, a reset and a garbled 2xx are retried with backoff;
- a retried success is one effect at the vendor (counted per idempotency key), and the
  recorded result is returned afterwards without another request; where the README
  documents at-least-once (Slack incoming webhooks, SMTP) the duplicate is asserted.

HTTP faults hit the first request of the effect; SMTP gets the same faults in SMTP's terms.
"""

from __future__ import annotations

import asyncio
import base64
import email.utils
import socket
import struct
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from email import message_from_bytes
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult
from pydantic import BaseModel
from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment, WorkflowEnvironment
from temporalio.worker import UnsandboxedWorkflowRunner, Worker

from activities.adapters.hubspot import HubSpotCrm, note_token
from activities.adapters.pagerduty import PagerDutyNotifier
from activities.adapters.prometheus import PrometheusMetrics
from activities.adapters.slack import SlackNotifier
from activities.adapters.smtp_email import SmtpNotifier
from activities.adapters.webhook import SignedWebhook, WebhookNotifier, verify
from activities.adapters.zendesk import ZendeskTicketing
from activities.backends import Backends
from activities.crm import CrmActivities
from activities.deps import ActivityDeps
from activities.metrics import MetricsActivities
from activities.models import (
    AddNote,
    Channel,
    CreateTicket,
    MessageSent,
    MetricCohort,
    NoteAdded,
    ReadMetric,
    SendMessage,
    Ticket,
)
from activities.notify import NotifyActivities
from activities.settings import DEFAULT_PROMQL, DEFAULT_PROMQL_SAMPLES
from activities.ticketing import TicketingActivities
from tests.activities.conftest import Handler, Reply, Seen, Sessions, VendorServer
from tests.devstack_support import free_port
from tests.escalation_support import FakePagerDuty
from worker.assembly import activity_functions

env = ActivityEnvironment()
TIMEOUT = 0.5  # the adapters' HTTP (and SMTP) timeout in this module
HANG = 5.0  # a hanging vendor answers after this long (cut short when its server stops)
DRIP = 0.4  # a trickling vendor sends a byte this often: each read is in time, the whole is not
WINDOW_END = datetime(2026, 3, 2, 12, tzinfo=UTC)


# --- faults: how the vendor answers the first request of the effect ----------------------------


@dataclass(frozen=True)
class Fault:
    instead: Callable[[], Reply] | None = None
    """The vendor refuses before acting and answers this."""
    garble: Callable[[Reply], Reply] | None = None
    """The vendor acts, then its answer goes wrong like this."""


def _200(body: bytes, **headers: str) -> Callable[[Reply], Reply]:
    """The vendor's answer as a 200 with `body` (its own 201 or 202 too: any 2xx)."""

    def garble(reply: Reply) -> Reply:
        more = {name.replace("_", "-"): value for name, value in headers.items()}
        return replace(reply, status=200, body=body, headers={**reply.headers, **more})

    return garble


def _http_date_in(seconds: int) -> str:
    return email.utils.format_datetime(datetime.now(UTC) + timedelta(seconds=seconds), True)


FAULTS: dict[str, Fault] = {
    "429-retry-after-seconds": Fault(
        instead=lambda: Reply(429, {"error": "rate limited"}, {"Retry-After": "7"})
    ),
    "429-retry-after-http-date": Fault(
        instead=lambda: Reply(429, {"error": "rate limited"}, {"Retry-After": _http_date_in(30)})
    ),
    "500-then-200": Fault(instead=lambda: Reply(500, {"error": "internal error"})),
    "hang-past-timeout": Fault(garble=lambda reply: replace(reply, delay=HANG)),
    "trickle-past-timeout": Fault(garble=lambda reply: replace(reply, drip=DRIP)),
    "200-malformed-json": Fault(
        garble=_200(b'{"status": "success", "id": 12', Content_Type="application/json")
    ),
    "200-json-nested-too-deep": Fault(
        garble=_200(b"[" * 100_000 + b"]" * 100_000, Content_Type="application/json")
    ),
    "200-undecodable-gzip": Fault(
        garble=_200(
            b"\x00 not gzip at all", Content_Type="application/json", Content_Encoding="gzip"
        )
    ),
    "401": Fault(instead=lambda: Reply(401, {"error": "Couldn't authenticate you"})),
    "404": Fault(instead=lambda: Reply(404, {"error": "RecordNotFound"})),
    "reset-mid-response": Fault(garble=lambda reply: replace(reply, reset=True)),
}


def inject(handler: Handler, target: Callable[[Seen], bool], fault: Fault) -> Handler:
    """`handler` with `fault` on the first request `target` picks."""
    fired = False

    def handle(seen: Seen) -> Reply:
        nonlocal fired
        if fired or not target(seen):
            return handler(seen)
        fired = True
        if fault.instead is not None:
            return fault.instead()
        assert fault.garble is not None
        return fault.garble(handler(seen))

    return handle


# --- what each row expects -------------------------------------------------------------------


@dataclass(frozen=True)
class Expect:
    error: str | None
    """The ApplicationError type of the first attempt; None: it succeeds."""
    retryable: bool = True
    delay: tuple[float, float] | None = None
    """Bounds of `next_retry_delay` in seconds; None: no delay, the retry policy's backoff."""
    effects: int = 1
    """Effects at the vendor for the key once done (after the retry, if one is due)."""
    says: str = ""
    """Words the error message has, after the vendor's name."""


EXPECTED: dict[str, Expect] = {
    "429-retry-after-seconds": Expect("RateLimited", delay=(7, 7), says="HTTP 429"),
    "429-retry-after-http-date": Expect("RateLimited", delay=(25, 30), says="HTTP 429"),
    "500-then-200": Expect("VendorUnavailable", says="HTTP 500"),
    "hang-past-timeout": Expect("VendorUnavailable", says="timed out"),
    "trickle-past-timeout": Expect("VendorUnavailable", says="timed out"),
    "200-malformed-json": Expect("VendorProtocolError", says="not JSON"),
    "200-json-nested-too-deep": Expect("VendorProtocolError", says="not JSON"),
    "200-undecodable-gzip": Expect("VendorProtocolError", says="could not be decoded"),
    "401": Expect("VendorAuthFailed", retryable=False, effects=0, says="credentials refused"),
    "404": Expect("NotFound", retryable=False, effects=0, says="HTTP 404 not found"),
    "reset-mid-response": Expect("VendorUnavailable"),
}
ACTED_THEN_LOST = ("hang-past-timeout", "trickle-past-timeout", "reset-mid-response")
GARBLED_2XX = ("200-malformed-json", "200-json-nested-too-deep", "200-undecodable-gzip")

# Where an adapter differs from the rule, and why (README "Vendor adapters").
OVERRIDES: dict[tuple[str, str], Expect] = {
    # Incoming webhooks take no key and cannot read the channel: at-least-once.
    **{
        ("slack-webhook", fault): Expect("VendorUnavailable", effects=2)
        for fault in ACTED_THEN_LOST
    },
    # Receivers answer 2xx with any body (Slack: "ok"); the status is the contract.
    **{("slack-webhook", fault): Expect(None) for fault in GARBLED_2XX},
    **{("webhook", fault): Expect(None) for fault in GARBLED_2XX},
}


# --- the vendors ------------------------------------------------------------------------------


class Rig:
    """One adapter: its fake vendor, the activity that drives it, and the effects it saw."""

    system: str
    """The vendor's name as the adapter's errors give it."""
    outbox = True
    """The call goes through the outbox: once done, it never reaches the vendor again."""

    def __init__(self, key: str) -> None:
        self.key = key
        self.effects: Counter[str] = Counter()
        """Effects the vendor made, per idempotency key (as the vendor dedups)."""
        self.requests: Counter[str] = Counter()
        """Requests to the effect's endpoint, per idempotency key they carried."""
        self.url = ""

    def server(self, handler: Handler) -> VendorServer:
        """The fake vendor's server, answering with `handler` (started by the caller)."""
        return VendorServer(handler)

    def handle(self, seen: Seen) -> Reply:
        raise NotImplementedError

    def target(self, seen: Seen) -> bool:
        """The effect's own request, which the fault hits."""
        raise NotImplementedError

    async def call(self, sessions: Sessions, folder: Path) -> BaseModel:
        raise NotImplementedError

    def done(self, result: BaseModel) -> None:
        """Check the activity's result."""


def deps(sessions: Sessions, folder: Path, **backends: Any) -> ActivityDeps:
    sandbox = Backends.sandbox(sessions)
    notifiers = {**sandbox.notifiers, **backends.pop("notifiers", {})}
    fields: dict[str, Any] = {
        "crm": sandbox.crm,
        "credits": sandbox.credits,
        "ticketing": sandbox.ticketing,
        "changes": sandbox.changes,
        "metrics": sandbox.metrics,
        "presence": sandbox.presence,
        "notifiers": notifiers,
    }
    return ActivityDeps(
        sessions=sessions, backends=Backends(**(fields | backends)), template_folder=folder
    )


def message(key: str, channel: Channel) -> SendMessage:
    return SendMessage(
        idempotency_key=key,
        channel=channel,
        recipient="ops@example.com" if channel == "email" else "on-call",
        template="page",
        context={"case": {"id": "42"}},
        severity="critical",
    )


class Zendesk(Rig):
    """POST /api/v2/tickets.json with `Idempotency-Key`: the same key answers the ticket made
    the first time (Zendesk's documented behaviour), so the ticket count per key is the
    effect count."""

    system = "zendesk"
    AUTH = "Basic " + base64.b64encode(b"ops@example.com/token:T0KEN").decode()

    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.tickets: dict[str, dict[str, Any]] = {}

    def target(self, seen: Seen) -> bool:
        return (seen.method, seen.path) == ("POST", "/api/v2/tickets.json")

    def handle(self, seen: Seen) -> Reply:
        if seen.headers.get("authorization") != self.AUTH:
            return Reply(401, {"error": "Couldn't authenticate you"})
        if not self.target(seen):
            return Reply(404, {"error": "InvalidEndpoint"})
        key = seen.headers.get("idempotency-key", "")
        self.requests[key] += 1
        if key not in self.tickets:
            self.effects[key] += 1
            number = 100 + len(self.tickets)
            self.tickets[key] = {"id": number, "status": "new", **seen.json()["ticket"]}
        return Reply(201, {"ticket": self.tickets[key]})

    async def call(self, sessions: Sessions, folder: Path) -> BaseModel:
        zendesk = ZendeskTicketing(self.url, "ops@example.com", "T0KEN", timeout=TIMEOUT)
        activities = TicketingActivities(deps(sessions, folder, ticketing=zendesk))
        request = CreateTicket(
            idempotency_key=self.key, customer_id="C-0001", subject="Refund", priority="p2"
        )
        return await env.run(activities.create_ticket, request)

    def done(self, result: BaseModel) -> None:
        assert isinstance(result, Ticket) and result.id == "100" and result.priority == "p2"


class HubSpot(Rig):
    """POST /crm/v3/objects/notes creates a note every time (no idempotency key); a note is
    found again by the `ref opsflow<hash>` token through POST .../notes/search."""

    system = "hubspot"

    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.notes: list[tuple[str, str]] = []  # (id, body)

    def target(self, seen: Seen) -> bool:
        return (seen.method, seen.path) == ("POST", "/crm/v3/objects/notes")

    def handle(self, seen: Seen) -> Reply:
        if seen.headers.get("authorization") != "Bearer pat-123":
            return Reply(401, {"status": "error", "category": "INVALID_AUTHENTICATION"})
        if (seen.method, seen.path) == ("POST", "/crm/v3/objects/notes/search"):
            [group] = seen.json()["filterGroups"]
            token = group["filters"][0]["value"]
            hits = [{"id": id_} for id_, body in self.notes if token in body.split()]
            return Reply(200, {"total": len(hits), "results": hits})
        if not self.target(seen):
            return Reply(404, {"status": "error", "category": "OBJECT_NOT_FOUND"})
        body = seen.json()["properties"]["hs_note_body"]
        key = self.key if note_token(self.key) in body.split() else "(other)"
        self.requests[key] += 1
        self.effects[key] += 1
        self.notes.append((str(9000 + len(self.notes)), body))
        return Reply(201, {"id": self.notes[-1][0], "properties": {"hs_note_body": body}})

    async def call(self, sessions: Sessions, folder: Path) -> BaseModel:
        crm = CrmActivities(
            deps(sessions, folder, crm=HubSpotCrm(self.url, "pat-123", timeout=TIMEOUT))
        )
        return await env.run(
            crm.add_note, AddNote(idempotency_key=self.key, customer_id="7", body="Called back")
        )

    def done(self, result: BaseModel) -> None:
        assert isinstance(result, NoteAdded) and result.note_id == "9000"


class PagerDuty(Rig):
    """tests/escalation_support.FakePagerDuty: alerts fold by dedup_key, so the alerts a key
    opened is the number of distinct dedup_keys its triggers carried."""

    system = "pagerduty"

    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.fake = FakePagerDuty()

    def server(self, handler: Handler) -> VendorServer:
        self.fake.server.handler = handler  # its own server, with the fault in front
        return self.fake.server

    def target(self, seen: Seen) -> bool:
        return (seen.method, seen.path) == ("POST", "/v2/enqueue")

    def handle(self, seen: Seen) -> Reply:
        reply = self.fake._handle(seen)
        if reply.status == 202:
            key = seen.json()["dedup_key"]
            self.requests[key] += 1
            self.effects[key] = 1  # one alert per dedup_key, however often it is triggered
        return reply

    async def call(self, sessions: Sessions, folder: Path) -> BaseModel:
        pager = PagerDutyNotifier("R0UTING", url=self.url, timeout=TIMEOUT)
        notify = NotifyActivities(deps(sessions, folder, notifiers={"pager": pager}))
        return await env.run(notify.send, message(self.key, "pager"))

    def done(self, result: BaseModel) -> None:
        assert isinstance(result, MessageSent) and result.message_id == self.key
        assert self.fake.alerts == {self.key: "triggered"}


class SlackWebApi(Rig):
    """chat.postMessage with the key in the message metadata; conversations.history shows
    the channel's messages, newest first, with their metadata."""

    system = "slack"

    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.messages: list[dict[str, Any]] = []

    def target(self, seen: Seen) -> bool:
        return (seen.method, seen.path) == ("POST", "/api/chat.postMessage")

    def handle(self, seen: Seen) -> Reply:
        if seen.headers.get("authorization") != "Bearer xoxb-1":
            return Reply(200, {"ok": False, "error": "invalid_auth"})
        if (seen.method, seen.path) == ("GET", "/api/conversations.history"):
            return Reply(200, {"ok": True, "messages": list(reversed(self.messages))})
        if not self.target(seen):
            return Reply(404, "unknown_method")
        body = seen.json()
        key = body["metadata"]["event_payload"]["idempotency_key"]
        self.requests[key] += 1
        self.effects[key] += 1
        self.messages.append({"ts": f"1700000000.00{len(self.messages)}", **body})
        return Reply(200, {"ok": True, "channel": "C0PS", "ts": self.messages[-1]["ts"]})

    async def call(self, sessions: Sessions, folder: Path) -> BaseModel:
        slack = SlackNotifier(
            bot_token="xoxb-1", channel="C0PS", api_url=self.url + "/api", timeout=TIMEOUT
        )
        notify = NotifyActivities(deps(sessions, folder, notifiers={"chat": slack}))
        return await env.run(notify.send, message(self.key, "chat"))

    def done(self, result: BaseModel) -> None:
        assert isinstance(result, MessageSent)
        assert result.message_id == "slack-C0PS-1700000000.000"


class SlackWebhook(Rig):
    """An incoming webhook: POST {"text": ...}, answered `ok`; no key, every post a message."""

    system = "slack"
    PATH = "/services/T000/B000/XXXX"

    def target(self, seen: Seen) -> bool:
        return (seen.method, seen.path) == ("POST", self.PATH)

    def handle(self, seen: Seen) -> Reply:
        if not self.target(seen):
            return Reply(404, "no_service")
        if set(seen.json()) != {"text"}:
            return Reply(400, "invalid_payload")
        self.requests[self.key] += 1  # the only message of the test: it carries no key
        self.effects[self.key] += 1
        return Reply(200, "ok")

    async def call(self, sessions: Sessions, folder: Path) -> BaseModel:
        slack = SlackNotifier(self.url + self.PATH, timeout=TIMEOUT)
        notify = NotifyActivities(deps(sessions, folder, notifiers={"chat": slack}))
        return await env.run(notify.send, message(self.key, "chat"))

    def done(self, result: BaseModel) -> None:
        assert isinstance(result, MessageSent) and result.message_id.startswith("slack-")


class Webhook(Rig):
    """A Standard Webhooks receiver: checks the signature and acts once per `webhook-id`."""

    system = "webhook"
    SECRET = b"s3cret"

    def target(self, seen: Seen) -> bool:
        return (seen.method, seen.path) == ("POST", "/hooks/opsflow")

    def handle(self, seen: Seen) -> Reply:
        if not self.target(seen):
            return Reply(404, {"error": "no such hook"})
        if not verify(self.SECRET, seen.headers, seen.body, now=time.time()):
            return Reply(401, {"error": "bad signature"})
        key = seen.headers["webhook-id"]
        self.requests[key] += 1
        if self.requests[key] == 1:
            self.effects[key] += 1
        return Reply(200, {"received": True, "duplicate": self.requests[key] > 1})

    async def call(self, sessions: Sessions, folder: Path) -> BaseModel:
        hook = SignedWebhook(self.url + "/hooks/opsflow", self.SECRET, timeout=TIMEOUT)
        notify = NotifyActivities(
            deps(sessions, folder, notifiers={"webhook": WebhookNotifier(hook)})
        )
        return await env.run(notify.send, message(self.key, "webhook"))

    def done(self, result: BaseModel) -> None:
        assert isinstance(result, MessageSent) and result.message_id == self.key


class Prometheus(Rig):
    """GET /api/v1/query: reads only, so there is no effect and no outbox; the retry reads
    again and gets the value."""

    system = "prometheus"
    outbox = False

    def target(self, seen: Seen) -> bool:
        return seen.path == "/api/v1/query" and "count_over_time" not in seen.query["query"][0]

    def handle(self, seen: Seen) -> Reply:
        if seen.path != "/api/v1/query":
            return Reply(404, "404 page not found")
        value = "812" if "count_over_time" in seen.query["query"][0] else "4.12"
        vector = {"resultType": "vector", "result": [{"metric": {}, "value": [1, value]}]}
        return Reply(200, {"status": "success", "data": vector})

    async def call(self, sessions: Sessions, folder: Path) -> BaseModel:
        prometheus = PrometheusMetrics(
            self.url, DEFAULT_PROMQL, DEFAULT_PROMQL_SAMPLES, timeout=TIMEOUT
        )
        metrics = MetricsActivities(deps(sessions, folder, metrics=prometheus))
        request = ReadMetric(
            metric="csat",
            cohort=MetricCohort(change_id="CHG-1"),
            window_start=WINDOW_END - timedelta(hours=1),
            window_end=WINDOW_END,
        )
        return await env.run(metrics.read, request)

    def done(self, result: BaseModel) -> None:
        assert result.model_dump() == {
            "metric": "csat",
            "value": 4.12,
            "sample_size": 812,
            "backend": "prometheus",
        }


RIGS: dict[str, type[Rig]] = {
    "zendesk": Zendesk,
    "hubspot": HubSpot,
    "pagerduty": PagerDuty,
    "slack-web-api": SlackWebApi,
    "slack-webhook": SlackWebhook,
    "webhook": Webhook,
    "prometheus": Prometheus,
}


def _expected(rig: str, fault: str) -> Expect:
    expect = OVERRIDES.get((rig, fault), EXPECTED[fault])
    if not RIGS[rig].outbox and expect.effects:
        return replace(expect, effects=0)  # a read: nothing to count at the vendor
    return expect


# Bugs found and left to their owners' files: the row fails as shown until fixed.
KNOWN_BUGS: dict[tuple[str, str], pytest.MarkDecorator] = {}
"""(adapter, fault) pairs that still fail, each marked xfail(strict) with the reason."""


def _cases() -> Iterator[Any]:
    for rig in RIGS:
        for fault in FAULTS:
            marks = KNOWN_BUGS.get((rig, fault), ())
            yield pytest.param(rig, fault, id=f"{rig}-{fault}", marks=marks)


@pytest.mark.parametrize(("rig_name", "fault_name"), list(_cases()))
async def test_http_vendor_fault(
    rig_name: str, fault_name: str, sessions: Sessions, template_folder: Path
) -> None:
    key = f"case-{uuid.uuid4().hex[:8]}/step-1"
    rig = RIGS[rig_name](key)
    expect = _expected(rig_name, fault_name)
    with rig.server(inject(rig.handle, rig.target, FAULTS[fault_name])) as server:
        rig.url = server.url
        started = time.monotonic()
        if expect.error is None:
            result = await rig.call(sessions, template_folder)
        else:
            with pytest.raises(ApplicationError) as caught:
                await rig.call(sessions, template_folder)
            error = caught.value
            assert (error.type, error.non_retryable) == (expect.error, not expect.retryable)
            assert error.message.startswith(f"{rig.system} "), error.message
            assert expect.says in error.message, error.message
            if expect.delay is None:
                assert error.next_retry_delay is None
            else:
                assert error.next_retry_delay is not None
                low, high = expect.delay
                assert low <= error.next_retry_delay.total_seconds() <= high
            # A hang or a trickle costs the timeout, not the vendor's time.
            assert time.monotonic() - started < TIMEOUT + 2.0
            if not expect.retryable:  # Temporal does not retry: the vendor never acted
                assert rig.effects == Counter() and len(server.seen) == 1
                return
            result = await rig.call(sessions, template_folder)  # Temporal's retry
        rig.done(result)
        if rig.outbox:
            assert rig.effects == Counter({key: expect.effects}), rig.effects
            assert set(rig.requests) == {key}  # every request to act carried the same key
            before = len(server.seen)
            assert await rig.call(sessions, template_folder) == result  # recorded: no request
            assert len(server.seen) == before
        else:  # a read: the retry reads again (the value, then the sample size), nothing more
            assert len(server.seen) == (3 if expect.error else 2)


# --- a 429's HTTP-date Retry-After, through a real worker on the time-skipping server -----------


@workflow.defn(sandboxed=False)
class CreateTicketOnce:
    @workflow.run
    async def run(self, request: CreateTicket) -> Ticket:
        ticket: Ticket = await workflow.execute_activity(
            "ticketing.create_ticket",
            request,
            result_type=Ticket,
            start_to_close_timeout=timedelta(seconds=10),
            retry_policy=RetryPolicy(
                initial_interval=timedelta(milliseconds=50), maximum_attempts=5
            ),
        )
        return ticket


async def test_worker_waits_out_a_429_retry_after_given_as_an_http_date(
    workflow_env: WorkflowEnvironment, sessions: Sessions, template_folder: Path
) -> None:
    """Temporal schedules the retry at the vendor's date (skipped here), not at the retry
    policy's 50 ms, and the retry creates the one ticket."""
    rig = Zendesk("case-88/create")
    fault = Fault(
        instead=lambda: Reply(429, {"error": "slow down"}, {"Retry-After": _http_date_in(60)})
    )
    with VendorServer(inject(rig.handle, rig.target, fault)) as server:
        rig.url = server.url
        zendesk = ZendeskTicketing(server.url, "ops@example.com", "T0KEN", timeout=2)
        task_queue = f"faults-{uuid.uuid4()}"
        async with Worker(
            workflow_env.client,
            task_queue=task_queue,
            workflows=[CreateTicketOnce],
            activities=activity_functions(deps(sessions, template_folder, ticketing=zendesk)),
            workflow_runner=UnsandboxedWorkflowRunner(),
        ):
            handle = await workflow_env.client.start_workflow(
                CreateTicketOnce.run,
                CreateTicket(idempotency_key=rig.key, customer_id="C-0001", subject="Refund"),
                id=f"wf-{uuid.uuid4()}",
                task_queue=task_queue,
            )
            ticket = await handle.result()
            history = await handle.fetch_history()
    assert ticket.id == "100" and rig.effects == Counter({rig.key: 1})
    assert len(server.seen) == 2
    scheduled, started = (
        next(e for e in history.events if e.HasField(kind))
        for kind in (
            "activity_task_scheduled_event_attributes",
            "activity_task_started_event_attributes",
        )
    )
    assert started.activity_task_started_event_attributes.attempt == 2
    waited = started.event_time.ToDatetime() - scheduled.event_time.ToDatetime()
    assert timedelta(seconds=55) <= waited <= timedelta(seconds=61)  # not the policy's 50 ms


# --- SMTP (aiosmtpd): the same faults in SMTP's terms ------------------------------------------


@dataclass
class SmtpVendor:
    """An aiosmtpd handler that misbehaves once, at the step `fault` names."""

    fault: str
    messages: list[bytes] = field(default_factory=list)
    fired: bool = False

    def _once(self, fault: str) -> bool:
        if self.fault != fault or self.fired:
            return False
        self.fired = True
        return True

    async def handle_MAIL(
        self, server: Any, session: Any, envelope: Any, address: str, options: list[str]
    ) -> str:
        if self._once("421-throttled"):  # SMTP's 429: no Retry-After, "try again later"
            return "421 4.7.0 Too many messages, slow down"
        envelope.mail_from = address
        return "250 OK"

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, options: list[str]
    ) -> str:
        if self.fault == "550-unknown-mailbox":
            return "550 5.1.1 mailbox unavailable"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        if self._once("451-then-250"):  # SMTP's 500-then-200
            return "451 4.3.0 Local error in processing, try again"
        if self._once("reset-mid-conversation"):  # before taking responsibility: not kept
            sock = server.transport.get_extra_info("socket")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            server.transport.abort()
            return "250 never sent"
        if self._once("garbled-reply"):  # not an SMTP reply at all: not kept
            return "HTTP/1.1 400 Bad Request"
        self.messages.append(envelope.content)
        if self._once("hang-past-timeout"):  # kept, but the 250 comes too late (RFC 1047)
            await asyncio.sleep(HANG)
        return "250 Message accepted"


def _refuse_login(*_: Any) -> AuthResult:
    return AuthResult(success=False, handled=False)


SMTP_EXPECTED: dict[str, Expect] = {
    "421-throttled": Expect("VendorUnavailable", says="421"),
    "451-then-250": Expect("VendorUnavailable", says="451"),
    "hang-past-timeout": Expect("VendorUnavailable", effects=2, says="could not deliver"),
    "reset-mid-conversation": Expect("VendorUnavailable", says="could not deliver"),
    "garbled-reply": Expect("VendorUnavailable", says="will retry"),
    "535-login-refused": Expect("VendorAuthFailed", retryable=False, effects=0, says="login"),
    "550-unknown-mailbox": Expect("VendorRejected", retryable=False, effects=0, says="550"),
}


@pytest.mark.parametrize("fault_name", list(SMTP_EXPECTED))
async def test_smtp_vendor_fault(
    fault_name: str, sessions: Sessions, template_folder: Path
) -> None:
    expect = SMTP_EXPECTED[fault_name]
    vendor = SmtpVendor(fault_name)
    port = free_port()
    login = fault_name == "535-login-refused"
    controller = Controller(
        vendor,
        hostname="127.0.0.1",
        port=port,
        authenticator=_refuse_login if login else None,
        auth_require_tls=False,
    )
    smtp = SmtpNotifier(
        "127.0.0.1",
        port,
        sender="opsflow <opsflow@example.com>",
        user="ops" if login else None,
        password="wrong" if login else None,
        starttls=False,
        timeout=TIMEOUT,
    )
    notify = NotifyActivities(deps(sessions, template_folder, notifiers={"email": smtp}))
    key = f"case-{uuid.uuid4().hex[:8]}/mail"
    controller.start()
    try:

        async def send() -> MessageSent:
            return await env.run(notify.send, message(key, "email"))

        started = time.monotonic()
        with pytest.raises(ApplicationError) as caught:
            await send()
        error = caught.value
        assert (error.type, error.non_retryable) == (expect.error, not expect.retryable)
        assert error.message.startswith("smtp: ") and expect.says in error.message, error.message
        assert error.next_retry_delay is None  # SMTP has no Retry-After: the policy's backoff
        assert time.monotonic() - started < 2 * TIMEOUT + 2.0  # the reply, then QUIT's
        if not expect.retryable:
            assert vendor.messages == []
            return
        sent = await send()  # Temporal's retry
        assert await send() == sent and len(vendor.messages) == expect.effects
        # A duplicate (the hang: accepted, answer lost) is recognisable: the same Message-ID.
        assert {message_from_bytes(m)["Message-ID"] for m in vendor.messages} == {sent.message_id}
    finally:
        controller.stop()
