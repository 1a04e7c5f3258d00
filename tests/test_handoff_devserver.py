"""One handoff end to end on `opsflow dev`: signed `bot.turn` / `bot.handoff_requested`
events through the running intake's HTTP API, then the agent's side through `opsflow
handoff`, and the escalation case it hands over to.

The customer is a VIP (the VIP desk is open around the clock, its one agent is ines), so
the run does not depend on the time of day. Waiting is done with the Temporal client (a
query is milliseconds; each `opsflow` process costs a Python start-up); what a person sees
is checked through the command line.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter

from client.handoffs import handoff_for_ticket
from tests.devstack_support import DevStack, opsflow_env, start_dev, succeeds
from tests.handoff_support import bot_event, intake_ready, post_signed
from workflows.escalation import EscalationStatus as CaseStatus
from workflows.handoff_model import HandoffStatus

pytestmark = pytest.mark.devserver

CUSTOMER = "C-0005"  # a seeded VIP: tier trigger, VIP desk (24x7), agent ines


async def _inbox_outcome(database: Path, event_id: str, seconds: float = 30) -> tuple[str, ...]:
    """(status, outcome, target) of the event in the intake's inbox once the relay settled it."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        with contextlib.closing(sqlite3.connect(database)) as db:
            found = db.execute(
                "SELECT status, outcome, target FROM inbox_events WHERE event_id = ?", (event_id,)
            ).fetchone()
        if found is not None and found[0] not in ("accepted", "pending"):
            return tuple(found)
        await asyncio.sleep(0.1)
    raise AssertionError(f"event {event_id} was not settled: {found}")


async def _until(client: Client, workflow_id: str, check: Any, seconds: float = 60) -> Any:
    deadline = time.monotonic() + seconds
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = await client.get_workflow_handle(workflow_id).query(
                "state", result_type=HandoffStatus
            )
            if check(last):
                return last
        except Exception:  # not started yet: the relay delivers asynchronously
            pass
        await asyncio.sleep(0.1)
    raise AssertionError(f"{workflow_id} never got there: {last.state if last else 'absent'}")


async def test_bot_events_through_the_intake_then_accept_and_resolve_through_the_cli(
    tmp_path: Path, ports: tuple[int, int], stacks: list[DevStack]
) -> None:
    began = time.monotonic()
    stack = start_dev(tmp_path, *ports)
    stacks.append(stack)
    stack.wait_for("Press Ctrl-C to stop")
    ready = time.monotonic()
    env = opsflow_env(stack, tmp_path)
    secret = (tmp_path / "intake-dev-secret").read_text().strip()
    conversation = f"CONV-E2E-{uuid.uuid4().hex[:6]}"
    workflow_id = f"handoff-{conversation}"

    def ok(*args: str) -> str:
        return succeeds(*args, env=env, cwd=tmp_path)

    turn = {"conversation_id": conversation, "customer_id": CUSTOMER}
    greeting = bot_event(
        "bot.turn", {**turn, "text": "Mi factura de marzo está mal", "intent": "billing"},
        conversation,
    )  # fmt: skip
    bot_reply = bot_event(
        "bot.turn",
        {**turn, "text": "Aquí tiene la guía de facturas", "speaker": "bot", "intent": "faq:inv"},
        conversation,
    )
    request = bot_event(
        "bot.handoff_requested",
        {**turn, "reason": "the invoice guide did not help", "tried": ["faq:invoices"]},
        conversation,
    )
    async with httpx.AsyncClient(base_url=stack.intake, timeout=30) as http:
        await intake_ready(http)
        first = await post_signed(http, secret, greeting)
        assert first.status_code == 202, first.text
        batch = await post_signed(http, secret, [bot_reply, request])
        assert batch.status_code == 202, batch.text
        again = await post_signed(http, secret, greeting)  # a re-delivery counts once
        assert again.status_code == 200, again.text
        # A bad signature changes nothing.
        forged = await http.post(
            "/v1/events/dev",
            content=json.dumps(greeting).encode(),
            headers={
                "content-type": "application/cloudevents+json",
                "webhook-id": "msg_forged",
                "webhook-timestamp": str(int(time.time())),
                "webhook-signature": "v1,AAAA",
            },
        )
        assert forged.status_code == 401

    client = await Client.connect(stack.grpc, data_converter=pydantic_data_converter)
    offered: HandoffStatus = await _until(
        client, workflow_id, lambda s: s.state == "offered" and len(s.turns) >= 2
    )
    routed = time.monotonic()
    assert offered.customer_id == CUSTOMER and offered.trigger is not None
    assert offered.trigger.kind == "tier"  # a VIP's first turn hands over at once
    assert [t.text for t in offered.turns].count("Mi factura de marzo está mal") == 1

    shown = json.loads(ok("handoff", "show", conversation, "--json"))["state"]
    assert shown["state"] == "offered" and shown["queue"] == "vip"
    agent = shown["offers"][-1]["agent_id"]
    assert agent == "ines"  # the VIP desk's only agent: skills vip, speaks Spanish
    assert "Mi factura de marzo está mal" in shown["context"]["text"]
    ticket = shown["ticket_id"]
    assert ticket

    # A vendor's `ticket.updated` for the handoff's ticket (no case yet) goes through the
    # intake to the handoff waiting on that ticket, found by OpsCaseId. With the sandbox
    # presence backend opsflow routes itself, so an assignee from elsewhere changes nothing.
    for _ in range(100):
        if await handoff_for_ticket(client, ticket) == workflow_id:
            break
        await asyncio.sleep(0.1)
    assert await handoff_for_ticket(client, "T-NONE") is None
    vendor = bot_event("ticket.updated", {"ticket_id": ticket, "assignee": "90210"}, ticket)
    async with httpx.AsyncClient(base_url=stack.intake, timeout=30) as http:
        assert (await post_signed(http, secret, vendor)).status_code == 202
    assert await _inbox_outcome(tmp_path / "opsflow.db", vendor["id"]) == (
        "delivered",
        "signalled event (ticket.updated)",
        workflow_id,
    )

    accepted = json.loads(ok("handoff", "accept", conversation, "--agent", agent, "--json"))
    assert accepted["state"]["state"] == "active" and accepted["state"]["agent"] == agent
    assert workflow_id in accepted["url"]

    # The escalation case starts, its first-response clock counting from the request.
    status = await _until(client, workflow_id, lambda s: s.case_workflow_id is not None)
    assert status.case_workflow_id == f"case-{ticket}"
    case_handle = client.get_workflow_handle(f"case-{ticket}")
    case: CaseStatus | None = None
    for _ in range(100):
        try:
            case = await case_handle.query("state", result_type=CaseStatus)
            break
        except Exception:
            await asyncio.sleep(0.1)
    assert case is not None, f"case-{ticket} never started"
    assert case.case.ticket_id == ticket and case.case.customer_id == CUSTOMER
    assert case.case.channel == "chat" and case.definition.startswith("support@")
    assert status.requested_at is not None and case.case.opened_at == status.requested_at

    resolved = json.loads(ok("handoff", "resolve", conversation, "--by", agent, "--json"))
    assert resolved["state"]["state"] == "resolved"
    final = await client.get_workflow_handle(workflow_id, result_type=HandoffStatus).result()
    assert final.state == "resolved"
    path = ["bot", "requested", "queued", "offered", "active", "resolved"]
    assert [t.state for t in final.history] == path
    done = time.monotonic()
    assert stack.stop() == 0
    print(
        f"\nhandoff e2e: dev stack up {ready - began:.1f} s, events to offer "
        f"{routed - ready:.1f} s, CLI part {done - routed:.1f} s"
    )
