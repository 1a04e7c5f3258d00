"""A case from open to resolve through the `opsflow case` commands, against `opsflow dev`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.devstack_support import DevStack, opsflow_env, start_dev, succeeds
from tests.devstack_support import refused as refused_command

pytestmark = pytest.mark.devserver


def test_case_lifecycle_through_the_command_line(
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

    open_args = ("case", "open", "--ticket", "T-9001", "--customer", "C-0002", "--priority", "p1")
    opened = ok(*open_args, "--by", "ana")
    assert "case T-9001 opened under support@1" in opened
    assert f"{stack.ui}/namespaces/default/workflows/case-T-9001" in opened
    again = ok(*open_args, "--by", "ana")
    assert "already open" in again

    listed = json.loads(ok("case", "list", "--json"))
    assert [row["ticket"] for row in listed] == ["T-9001"]
    assert listed[0]["policy"] == "support@1" and listed[0]["state"] == "open"

    # The sandbox ticket exists, so reassigning it really moves it.
    assert "T-9001" in ok("case", "reassign", "T-9001", "--queue", "tier-2", "--by", "ana")
    moved = json.loads(ok("case", "show", "T-9001", "--json"))["state"]
    assert moved["queue"] == "tier-2" and moved["failures"] == []
    no_target = refused("case", "reassign", "T-9001", "--by", "ana")
    assert "give exactly one of --queue or --agent" in no_target and "Value error" not in no_target
    assert "known stages: support, onboarding" in refused(
        "case", "stage", "T-9001", "nonsense", "--by", "ana"
    )
    bad_ref = refused(
        "case", "open", "--ticket", "T-9002", "--customer", "C-0002", "--policy", "support@abc",
        "--by", "ana",
    )  # fmt: skip
    assert "--policy" in bad_ref and "NAME@VERSION" in bad_ref and "Traceback" not in bad_ref
    # A customer without a CRM profile is refused unless the opener says so; then
    # onboarding's journey-stage match is no match.
    unknown_args = ("case", "open", "--ticket", "T-2000", "--customer", "C-9999", "--priority")
    assert "C-9999 is not in the CRM" in refused(*unknown_args, "p1", "--by", "ana")
    unknown = ok(*unknown_args, "p1", "--by", "ana", "--unknown-customer")
    assert "case T-2000 opened under support@1" in unknown
    assert "resolved" in ok("case", "resolve", "T-2000", "--by", "ana")

    assert "unknown priority 'p7'" in refused("case", "priority", "T-9001", "p7", "--by", "ana")
    assert "not paused" in refused("case", "resume", "T-9001", "--by", "ana")
    assert "no case for ticket T-404" in refused("case", "ack", "T-404", "--by", "ana")

    assert "paused" in ok("case", "pause", "T-9001", "--reason", "waiting for logs", "--by", "ana")
    assert "open" in ok("case", "resume", "T-9001", "--by", "ana")
    assert "acknowledged" in ok("case", "ack", "T-9001", "--by", "ana")

    shown = json.loads(ok("case", "show", "T-9001", "--json"))
    assert shown["state"]["acknowledged_by"] == "ana"
    # Time left is business time of the P1 calendar (catalog: 24x7, UTC), moments in its zone.
    resolution = shown["clocks"]["resolution"]
    assert resolution["status"] == "running" and resolution["timezone"] == "UTC"
    assert 3 * 3600 < resolution["remaining_seconds"] <= 4 * 3600
    assert resolution["due"].endswith("+00:00")
    assert shown["clocks"]["first_response"]["remaining_seconds"] is None  # met by the ack
    table = ok("case", "show", "T-9001")
    assert "UTC business time" in table and "left" in table
    steps = [entry["step"] for entry in shown["timeline"]]
    assert steps[0] == "opened"
    # Readable steps, each saying who.
    commands = [
        e for e in shown["timeline"] if e["step"] in {"reassign", "pause", "resume", "acknowledge"}
    ]
    assert [e["step"] for e in commands] == ["reassign", "pause", "resume", "acknowledge"]
    assert all(e["detail"].get("by") == "ana" for e in commands), commands
    assert "resolved" in ok("case", "resolve", "T-9001", "--by", "ana")
    assert "already resolved" in refused("case", "resolve", "T-9001", "--by", "ana")
    assert stack.stop() == 0
