"""Issue 14's story on `opsflow dev` with the shipped catalog: a chat handed to a person,
accepted and resolved in time, leaves one case behind, acknowledged and resolved by the
agent, with no breach, no escalation level and no recovery action.

Bot events go through the running intake (signed `bot.*` CloudEvents), the agent's side
through `opsflow handoff accept/resolve`, the case is read with `opsflow case show`. The
customer is a seeded VIP (the VIP desk is open around the clock; its one agent is ines), so
the run does not depend on the time of day. Waiting uses the Temporal client (a query is
milliseconds; each `opsflow` process is a Python start-up); what a person sees is checked
through the command line.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
from temporalio.client import Client, WorkflowExecutionStatus
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.service import RPCError, RPCStatusCode

from tests.devstack_support import DevStack, opsflow_env, start_dev, succeeds
from tests.handoff_support import bot_event, intake_ready, post_signed
from workflows.escalation import CaseSummary
from workflows.handoff_model import HandoffStatus

pytestmark = pytest.mark.devserver

CUSTOMER = "C-0005"  # a seeded VIP: tier trigger, VIP desk (24x7), agent ines
# What an escalating or breached case, or the recovery rule after a breach, would have sent.
ESCALATION_TEMPLATES = {"sla-warning", "case-escalated", "sla-breached", "apology"}


async def _until(client: Client, workflow_id: str, check: Any, seconds: float = 90) -> Any:
    deadline = time.monotonic() + seconds
    last: HandoffStatus | None = None
    while time.monotonic() < deadline:
        try:
            last = await client.get_workflow_handle(workflow_id).query(
                "state", result_type=HandoffStatus
            )
            if check(last):
                return last
        except RPCError:  # not started yet: the relay delivers asynchronously
            pass
        await asyncio.sleep(0.2)
    raise AssertionError(f"{workflow_id} never got there: {last.state if last else 'absent'}")


async def test_a_chat_accepted_and_resolved_in_time_resolves_its_case_and_nothing_escalates(
    tmp_path: Path, ports: tuple[int, int], stacks: list[DevStack]
) -> None:
    stack = start_dev(tmp_path, *ports)
    stacks.append(stack)
    stack.wait_for("Press Ctrl-C to stop")
    env = opsflow_env(stack, tmp_path)
    secret = (tmp_path / "intake-dev-secret").read_text().strip()
    conversation = f"CONV-STORY-{uuid.uuid4().hex[:6]}"
    workflow_id = f"handoff-{conversation}"

    def ok(*args: str) -> Any:
        return json.loads(succeeds(*args, "--json", env=env, cwd=tmp_path))

    turn = {"conversation_id": conversation, "customer_id": CUSTOMER}
    async with httpx.AsyncClient(base_url=stack.intake, timeout=30) as http:
        await intake_ready(http)
        events = [
            bot_event("bot.turn", {**turn, "text": "My March invoice is wrong"}, conversation),
            bot_event(
                "bot.turn",
                {**turn, "text": "Here is our invoice guide", "speaker": "bot"},
                conversation,
            ),
        ]
        accepted = await post_signed(http, secret, events)
        assert accepted.status_code == 202, accepted.text

    client = await Client.connect(stack.grpc, data_converter=pydantic_data_converter)
    offered: HandoffStatus = await _until(client, workflow_id, lambda s: s.state == "offered")
    assert offered.current_offer is not None and offered.current_offer.agent_id == "ines"
    ticket = offered.ticket_id
    assert ticket

    # The agent takes the chat: that is the case's first response, given by ines.
    taken = ok("handoff", "accept", conversation, "--agent", "ines")
    assert taken["state"]["state"] == "active"
    active = await _until(client, workflow_id, lambda s: s.case_acknowledged)
    assert active.case_workflow_id == f"case-{ticket}"
    case = ok("case", "show", ticket)
    assert case["state"]["acknowledged_by"] == "ines", case["state"]
    first = case["state"]["clocks"]["first_response"]
    assert first["met_at"] is not None and first["breached_at"] is None

    # Resolved a few moments later, without --by: the agent who has the chat resolves it.
    done = ok("handoff", "resolve", conversation)
    assert done["state"]["state"] == "resolved"
    handoff = await client.get_workflow_handle(workflow_id, result_type=HandoffStatus).result()
    assert handoff.state == "resolved" and handoff.case_closed
    summary = await client.get_workflow_handle(f"case-{ticket}", result_type=CaseSummary).result()
    assert summary.acknowledged_by == "ines" and summary.resolved_by == "ines"
    assert summary.time_at_level == {}
    assert all(o.met and not o.breached for o in summary.slas), summary.slas

    # What a person sees: the case is over (nothing can fire an hour later), no level, no
    # breach, no warning; no escalation message, no apology, no recovery run.
    shown = ok("case", "show", ticket)
    assert shown["case"]["execution"] == "completed", shown["case"]
    assert shown["case"]["last_known"].get("level") in (0, None)
    steps = [entry["step"] for entry in shown["timeline"]]
    assert not [s for s in steps if s.startswith(("level-", "breach-", "warn-"))], steps
    for command in ("ack", "resolv"):
        entries = [e for e in shown["timeline"] if command in e["step"]]
        assert [e["detail"].get("by") for e in entries] == ["ines"], shown["timeline"]
    sent = ok("sandbox", "notifications", "--limit", "500")
    assert not [n for n in sent if n["template"] in ESCALATION_TEMPLATES], sent
    with pytest.raises(RPCError) as absent:
        await client.get_workflow_handle(f"customer-{CUSTOMER}").describe()
    assert absent.value.status == RPCStatusCode.NOT_FOUND
    described = await client.get_workflow_handle(f"case-{ticket}").describe()
    assert described.status == WorkflowExecutionStatus.COMPLETED
    assert stack.stop() == 0
