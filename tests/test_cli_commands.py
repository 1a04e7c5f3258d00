"""Every `case`, `rollout` and `recovery` subcommand, enumerated from the command line itself:
each takes `--json` and answers an error as `{"error": ...}` (one line on stderr, exit 1);
each that changes something requires who does it (`--by`; `--approver` for approvals,
`--owner` for a rollout's start) and passes it to the workflow, so the ledger says who."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from activities.deps import ActivityDeps
from store.registry import CATALOG_DIR, deploy_folder
from tests.cli_support import CommandLine, options_of, subcommands, who_option
from tests.conftest import AppDb
from tests.devstack_support import free_port
from tests.escalation_support import ledger_entries, new_ticket_id
from tests.rollout_support import new_change_id
from worker.assembly import activity_functions
from workflows.escalation import EscalationWorkflow
from workflows.recovery import RecoveryWorkflow
from workflows.rollout import RolloutWorkflow
from workflows.sandbox import WORKFLOW_RUNNER

SQLITE = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)

# Per group: each subcommand, whether it changes data, and arguments that make it fail
# (an unknown ticket, change or customer, or a refused value) once its who is given.
CASE = {
    "open": (True, ["--ticket", "T-404", "--customer", "C-9999", "--priority", "p1"]),
    "ack": (True, ["T-404"]),
    "pause": (True, ["T-404"]),
    "resume": (True, ["T-404"]),
    "priority": (True, ["T-404", "p1"]),
    "stage": (True, ["T-404", "support"]),
    "reassign": (True, ["T-404", "--queue", "tier-2"]),
    "resolve": (True, ["T-404"]),
    "reply": (True, ["T-404"]),
    "requester-reply": (True, ["T-404"]),
    "migrate": (True, ["--to", "support@1", "--case", "T-404"]),
    "show": (False, ["T-404"]),
    "list": (False, ["--state", "bogus"]),
}
ROLLOUT = {
    "start": (True, ["no-such-plan", "--change", "CHG-404", "--reason", "test"]),
    "status": (False, ["CHG-404"]),
    "approve": (True, ["CHG-404"]),
    "reject": (True, ["CHG-404"]),
    "pause": (True, ["CHG-404"]),
    "resume": (True, ["CHG-404"]),
    "promote": (True, ["CHG-404"]),
    "abort": (True, ["CHG-404"]),
    "retry": (True, ["CHG-404"]),
    "list": (False, None),
}
RECOVERY = {
    "approve": (True, ["C-404"]),
    "reject": (True, ["C-404"]),
    "silence": (True, ["C-404", "--for", "2d"]),
    "unsilence": (True, ["C-404"]),
    "close": (True, ["C-404", "--outcome", "bogus"]),
    "show": (False, ["C-404"]),
    "list": (False, ["--state", "bogus"]),
    "backtest": (False, ["no-such-rules.yaml", "--events", "no-such-events.jsonl"]),
}
GROUPS: dict[str, dict[str, tuple[bool, list[str] | None]]] = {
    "case": CASE,
    "rollout": ROLLOUT,
    "recovery": RECOVERY,
}
"""None: no argument makes it fail, so it runs against a Temporal that is not there."""


@pytest.mark.parametrize("group", sorted(GROUPS))
def test_every_subcommand_takes_json_and_those_that_change_data_require_who(group: str) -> None:
    table = GROUPS[group]
    commands = subcommands(group)
    assert sorted(commands) == sorted(table), "a new subcommand needs its row here"
    for name, command in commands.items():
        assert "--json" in options_of(command), f"{group} {name} has no --json"
        changes, _ = table[name]
        who = who_option(command)
        if changes:
            assert who is not None and who.required, f"{group} {name} must require --by"
        else:
            assert who is None, f"{group} {name} shows data; it takes no --by"


@pytest.fixture
async def cli(
    dev_env: WorkflowEnvironment, app_db: AppDb, tmp_path: Path
) -> AsyncIterator[CommandLine]:
    await deploy_folder(app_db.sessions, CATALOG_DIR, deployed_by="test")
    queue = f"cli-{uuid.uuid4()}"
    async with Worker(
        dev_env.client,
        task_queue=queue,
        workflows=[EscalationWorkflow, RolloutWorkflow, RecoveryWorkflow],
        workflow_runner=WORKFLOW_RUNNER,
        activities=activity_functions(ActivityDeps(sessions=app_db.sessions)),
    ):
        yield CommandLine.against(dev_env, app_db.url, queue, tmp_path)


@SQLITE
@pytest.mark.parametrize("group", sorted(GROUPS))
async def test_every_subcommand_answers_errors_in_one_shape(cli: CommandLine, group: str) -> None:
    nowhere = CommandLine({**cli.env, "OPSFLOW_TEMPORAL_ADDRESS": f"127.0.0.1:{free_port()}"})
    for name, (changes, given_args) in GROUPS[group].items():
        command = subcommands(group)[name]
        who = who_option(command)
        given = [who.opts[0], "ana"] if who is not None else []
        args = given_args or []
        if given_args is None:
            text = await nowhere.refused(group, name, *given)
            assert "cannot reach Temporal" in text, (name, text)
            as_json = await nowhere.run(group, name, *given, "--json")
            assert as_json.exit_code == 1 and as_json.stdout == "", name
            assert as_json.error_json() == {"error": text.removeprefix("error: ")}, name
            continue
        if changes:
            assert who is not None
            # Without who: a usage error (exit 2) naming the option, nothing sent.
            missing = await cli.run(group, name, *args)
            assert missing.exit_code == 2, (name, missing.stdout, missing.stderr)
            assert who.opts[0] in missing.stderr
        text = await cli.refused(group, name, *args, *given)
        assert text.startswith("error: "), (name, text)
        as_json = await cli.run(group, name, *args, *given, "--json")
        assert as_json.exit_code == 1, (name, as_json.stdout, as_json.stderr)
        assert as_json.stdout == "", name
        assert as_json.error_json() == {"error": text.removeprefix("error: ")}, name


@SQLITE
async def test_case_commands_pass_who_to_the_workflow_and_the_ledger(cli: CommandLine) -> None:
    ticket = new_ticket_id()
    # C-0017 is in its renewal: the renewal policy covers every priority and stage.
    opened = await cli.ok(
        "case", "open", "--ticket", ticket, "--customer", "C-0017", "--priority", "p3",
        "--by", "ana", "--json",
    )  # fmt: skip
    assert opened.json()["started"] is True
    steps = [
        ("pause", "--by", "bo"),
        ("resume", "--by", "cy"),
        ("priority", "p1", "--by", "di"),
        ("stage", "onboarding", "--by", "ed"),
        ("reassign", "--queue", "tier-2", "--by", "fa"),
        ("ack", "--by", "gu"),
        ("resolve", "--by", "ha"),
    ]
    for name, *rest in steps:
        args = [rest[0], *rest[1:]] if name in ("priority", "stage") else rest
        if name in ("priority", "stage"):
            changed = await cli.ok("case", name, ticket, *args, "--json")
        else:
            changed = await cli.ok("case", name, ticket, *args, "--json")
        assert changed.json()["ticket"] == ticket and "state" in changed.json(), name
    timeline = (await cli.ok("case", "show", ticket, "--json")).json()["timeline"]
    who = {entry["step"].split("-", 2)[-1]: entry["detail"].get("by") for entry in timeline}
    assert who["opened"] == "ana"
    assert {
        key: who.get(key)
        for key in ("pause", "resume", "priority", "stage", "reassign", "acknowledge", "resolve")
    } == {
        "pause": "bo",
        "resume": "cy",
        "priority": "di",
        "stage": "ed",
        "reassign": "fa",
        "acknowledge": "gu",
        "resolve": "ha",
    }


@SQLITE
async def test_rollout_commands_pass_who_to_the_workflow_and_the_ledger(
    cli: CommandLine, app_db: AppDb
) -> None:
    change = new_change_id()
    started = await cli.ok(
        "rollout", "start", "new-billing-flow", "--change", change, "--owner", "maria",
        "--reason", "Faster disputes", "--json",
    )  # fmt: skip
    assert started.json()["started"] is True and started.json()["plan"] == "new-billing-flow@1"
    for _ in range(300):  # the impact assessment runs first
        state = (await cli.ok("rollout", "status", change, "--json")).json()["state"]
        if state == "awaiting_approval":
            break
        await asyncio.sleep(0.2)
    assert state == "awaiting_approval"
    paused = await cli.ok("rollout", "pause", change, "--by", "bo", "--reason", "freeze", "--json")
    assert paused.json()["state"]["paused"] is True
    await cli.ok("rollout", "resume", change, "--by", "cy")
    aborted = await cli.ok("rollout", "abort", change, "--by", "di", "--json")
    assert aborted.json()["state"]["aborted"] is True
    refused = await cli.run("rollout", "promote", change, "--by", "ed", "--json")
    assert refused.exit_code == 1 and "refused promote" in refused.error_json()["error"]
    who = {
        entry.step.split("-", 3)[-1]: entry.detail.get("by")
        for entry in await ledger_entries(app_db, f"rollout-{change}")
        if "-command-" in entry.step
    }
    assert who == {"pause": "bo", "resume": "cy", "abort": "di"}
    status = (await cli.ok("rollout", "status", change, "--json")).json()
    assert status["change"]["change_id"] == change
    listed = (await cli.ok("rollout", "list", "--json")).json()
    assert change in [row["change"] for row in listed]
