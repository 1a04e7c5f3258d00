"""Handoffs through `opsflow handoff` and `opsflow agents`, against `opsflow dev`.

The VIP desk is open around the clock, so the run does not depend on the time of day."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from tests.devstack_support import DevStack, opsflow_env, start_dev, succeeds
from tests.devstack_support import refused as refused_command

pytestmark = pytest.mark.devserver


def test_handoff_and_agents_through_the_command_line(
    tmp_path: Path, ports: tuple[int, int], stacks: list[DevStack]
) -> None:
    stack = start_dev(tmp_path, *ports)
    stacks.append(stack)
    stack.wait_for("Press Ctrl-C to stop")
    env = opsflow_env(stack, tmp_path)

    def ok(*args: str) -> str:
        return succeeds(*args, env=env, cwd=tmp_path)

    def refused(*args: str) -> str:
        return refused_command(*args, env=env, cwd=tmp_path)

    def shown(conversation: str) -> dict[str, Any]:
        state: dict[str, Any] = json.loads(ok("handoff", "show", conversation, "--json"))["state"]
        return state

    def until(conversation: str, *states: str) -> dict[str, Any]:
        for _ in range(200):
            state = shown(conversation)
            if state["state"] in states:
                return state
            time.sleep(0.3)
        raise AssertionError(f"{conversation} is {state['state']}, not {states}")

    agents = json.loads(ok("agents", "list", "--json"))
    assert {a["id"] for a in agents} >= {"ana", "ines", "jack"}
    assert "unknown status 'sleeping'" in refused("agents", "status", "ana", "sleeping")
    assert "agent 'nobody' does not exist" in refused("agents", "status", "nobody", "busy")
    assert "is busy" in ok("agents", "status", "leo", "busy")
    assert "is available" in ok("agents", "status", "leo", "available")

    transcript = tmp_path / "transcript.json"
    transcript.write_text(
        json.dumps(
            [
                {"from": "customer", "text": "My refund never arrived", "at": None},
                {"from": "bot", "text": "Here is the refund guide", "at": None},
            ]
        ),
        encoding="utf-8",
    )
    bad = tmp_path / "bad.json"
    bad.write_text('[{"from": "agent", "text": "hi"}]', encoding="utf-8")
    assert "line 0" in refused(
        "handoff", "start", "--conversation", "CONV-X", "--customer", "C-0005",
        "--transcript", str(bad),
    )  # fmt: skip
    assert "not JSON" in refused(
        "handoff", "start", "--conversation", "CONV-X", "--customer", "C-0005",
        "--transcript", str(stack_file(tmp_path, "{")),
    )  # fmt: skip

    started = ok(
        "handoff", "start", "--conversation", "CONV-CLI-1", "--customer", "C-0005",
        "--transcript", str(transcript), "--reason", "refund flow failed",
    )  # fmt: skip
    assert "handoff requested for conversation CONV-CLI-1 under chat-handoff@1" in started
    assert f"{stack.ui}/namespaces/default/workflows/handoff-CONV-CLI-1" in started

    offered = until("CONV-CLI-1", "offered")
    assert offered["queue"] == "vip" and offered["offers"][0]["agent_id"] == "ines"
    assert offered["trigger"]["kind"] in ("bot_requests", "tier")
    assert "My refund never arrived" in offered["context"]["text"]
    # The offer lasts 45 s and each `opsflow` process is a Python start-up: answer it first.
    assert "offered to ines, not to ana" in refused(
        "handoff", "accept", "CONV-CLI-1", "--agent", "ana"
    )
    accepted = ok("handoff", "accept", "CONV-CLI-1", "--agent", "ines")
    assert "active" in accepted and "agent ines" in accepted
    assert "agent ines" in ok("handoff", "show", "CONV-CLI-1")

    listed = json.loads(ok("handoff", "list", "--json"))
    row = next(r for r in listed if r["conversation"] == "CONV-CLI-1")
    assert row["customer"] == "C-0005" and row["queue"] == "vip"
    assert f"{stack.ui}/namespaces/default/workflows/handoff-CONV-CLI-1" in accepted
    assert "already accepted by ines" in refused(
        "handoff", "accept", "CONV-CLI-1", "--agent", "ines"
    )
    ines = next(a for a in json.loads(ok("agents", "list", "--json")) if a["id"] == "ines")
    assert ines["active_conversations"] == 1
    resolved = json.loads(ok("handoff", "resolve", "CONV-CLI-1", "--by", "ines", "--json"))
    assert resolved["state"]["state"] == "resolved"
    assert "handoff-CONV-CLI-1" in resolved["url"]
    assert "no running handoff" in refused("handoff", "resolve", "CONV-CLI-1")

    # Decline, then give the conversation back to the bot.
    ok(
        "handoff", "start", "--conversation", "CONV-CLI-2", "--customer", "C-0014",
        "--transcript", str(transcript),
    )  # fmt: skip
    second = until("CONV-CLI-2", "offered")
    taker = second["offers"][-1]["agent_id"]
    declined = json.loads(
        ok("handoff", "decline", "CONV-CLI-2", "--agent", taker, "--reason", "lunch", "--json")
    )
    assert declined["state"]["offers"][0]["outcome"] == "declined"
    returned = ok("handoff", "return", "CONV-CLI-2", "--reason", "bot can handle it")
    assert "returned_to_bot" in returned

    assert "no running handoff" in refused("handoff", "accept", "CONV-NONE", "--agent", "ines")
    assert "there is no handoff for conversation CONV-NONE" in refused(
        "handoff", "show", "CONV-NONE"
    )
    assert stack.stop() == 0


def stack_file(folder: Path, text: str) -> Path:
    path = folder / "broken.json"
    path.write_text(text, encoding="utf-8")
    return path
