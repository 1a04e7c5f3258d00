"""Every `case`, `rollout` and `recovery` subcommand, enumerated from the command line itself:
each takes `--json` and answers an error as `{"error": ...}` (one line on stderr, exit 1);
each that changes something requires who does it (`--by`; `--approver` for approvals,
`--owner` for a rollout's start) and passes it to the workflow, so the ledger says who."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from temporalio.testing import WorkflowEnvironment

from definitions.registry import CATALOG_DIR, deploy_folder
from tests.cli_support import CommandLine, options_of, subcommands, who_option
from tests.conftest import AppDb
from tests.escalation_support import escalation_worker, new_ticket_id

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
    "show": (False, ["T-404"]),
    "list": (False, ["--state", "bogus"]),
}
GROUPS = {"case": CASE}


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
    async with escalation_worker(dev_env, app_db) as queue:
        yield CommandLine.against(dev_env, app_db.url, queue, tmp_path)


@SQLITE
@pytest.mark.parametrize("group", sorted(GROUPS))
async def test_every_subcommand_answers_errors_in_one_shape(cli: CommandLine, group: str) -> None:
    for name, (changes, args) in GROUPS[group].items():
        command = subcommands(group)[name]
        who = who_option(command)
        given = [who.opts[0], "ana"] if who is not None else []
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
