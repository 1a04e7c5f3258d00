"""Every command's help reads as a person's: positionals by name (TICKET), option values by
name (--queue QUEUE), flags without a type; nothing shows Python types or braces, and every
line fits 80 columns."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from activities.adapters import sandbox
from intake import serve
from worker import cli, cli_events, cli_sandbox, cli_stuck, stuck
from worker.cli import app

PYTHON_TYPES = re.compile(r"<(str|bool|int|float|path|datetime|list\[\w+\])>|\{[a-z_]+\}")


def _commands(group: Any, path: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    found = [path]
    if hasattr(group, "commands"):  # a group (typer vendors its own click)
        for name, command in sorted(group.commands.items()):
            if not command.hidden:
                found += _commands(command, (*path, name))
    return found


COMMANDS = _commands(typer.main.get_command(app))


def test_every_command_is_listed() -> None:
    assert ("case", "show") in COMMANDS and ("rollout", "start") in COMMANDS
    assert ("stuck",) in COMMANDS and ("defs", "validate") in COMMANDS


@pytest.mark.parametrize("path", COMMANDS, ids=[" ".join(p) or "opsflow" for p in COMMANDS])
def test_help_reads_as_a_persons(path: tuple[str, ...]) -> None:
    result = CliRunner().invoke(app, [*path, "--help"], env={"COLUMNS": "80"}, terminal_width=80)
    assert result.exit_code == 0, result.output
    text = result.output
    assert not PYTHON_TYPES.search(text), text
    assert all(len(line) <= 80 for line in text.splitlines()), text
    if path and path[-1] == "show" and path[0] == "case":
        assert "Usage: opsflow case show [OPTIONS] TICKET" in " ".join(text.split())


def test_the_listing_shows_each_commands_own_help() -> None:
    """`opsflow --help` lists the other modules' commands from worker/cli.py's table, without
    importing them: each entry is the first paragraph of the command's own help."""
    root: Any = typer.main.get_command(app)
    for name, (_, short_help) in {**cli.LISTED_FIRST, **cli.LISTED_LAST}.items():
        listed = root.commands[name]
        own = listed.load().help.split("\n\n")[0]
        assert short_help == own, f"update {name!r} in worker/cli.py to the command's help"


def test_the_spelled_out_constants_agree() -> None:
    """Help shows these values without importing the modules that define them."""
    assert cli_stuck.KINDS == stuck.KINDS
    assert cli_sandbox.METRICS == sandbox.METRICS
    assert cli_events.DEV_SOURCE == serve.DEV_SOURCE


# What a command's help must not import: Temporal, the database, the web stack, settings,
# logging, and opsflow's parts beyond the command line (pydantic itself typer imports).
HEAVY = (
    "temporalio",
    "sqlalchemy",
    "alembic",
    "fastapi",
    "uvicorn",
    "httpx",
    "yaml",
    "structlog",
    "pydantic_settings",
    "jinja2",
    "celpy",
    "client",
    "store",
    "workflows",
    "activities",
    "intake",
    "migrations",
    "client.settings",
    "client.temporal",
    "client.logging",
)
HELP_IMPORTS = """
import json, sys
from typer.testing import CliRunner
from worker.cli import app

for path in json.loads(sys.argv[1]):
    result = CliRunner().invoke(app, path)
    assert result.exit_code == 0, (path, result.output)
print(json.dumps(sorted(
    name for name in sys.modules if name.split(".")[0] in HEAVY or name in HEAVY
)))
"""


def test_help_imports_nothing_heavy() -> None:
    """`opsflow --version` and every command's help answer at once (issue 21 item 6): they
    import none of the modules a command needs to run."""
    paths = [["--version"], *([*path, "--help"] for path in COMMANDS)]
    out = subprocess.run(
        [sys.executable, "-c", f"HEAVY = {HEAVY!r}\n{HELP_IMPORTS}", json.dumps(paths)],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "COLUMNS": "80"},
    )
    assert json.loads(out.stdout) == []


# The modules `opsflow case show` and `opsflow rollout status` import when they run (the
# command's module, then what its function imports: the Temporal client, the status model,
# the ledger), and
# what these must leave out: the workflow modules, the other roles of a case (opening:
# the CRM and ticketing ports, the policy choice; migrating), starting a rollout, the web
# stack and the live view only `--watch` uses.
READING_MODULES = {
    "case show": (
        "worker.cli_case",
        "client.case_read",
        "client.logging",
        "client.temporal",
        "store.ledger_read",
    ),
    "rollout status": ("worker.cli_rollout", "client.rollout_read", "client.temporal"),
}
NOT_FOR_READING = (
    "workflows.escalation",
    "workflows.escalation_core",
    "workflows.escalation_commands",
    "workflows.escalation_effects",
    "workflows.rollout",
    "workflows.rollout_core",
    "workflows.rollout_effects",
    "client.cases",
    "client.case_open",
    "client.case_migrate",
    "client.rollouts",
    "activities.ports",
    "activities.outbox",
    "activities.models",  # the activity contracts: a case's profile is customer_contracts
    "temporalio.worker",  # the SDK's worker package: the log context is the worker's own
    "fastapi",
    "uvicorn",
    "intake",
    "rich.live",
)
# `case show` reads the embedded stack's ledger with the standard library's sqlite3 (a
# configured database in SQLAlchemy Core; the registry, with the ORM and the async engine,
# only when a case's worker cannot say its calendar);
# `rollout status` reads no database (the registry only when a rollout's worker cannot say
# its plan's timezone), nor the definitions' models (workflows/rollout_pinned.py).
ALSO_NOT_FOR = {
    "case show": ("store.db", "store.models", "sqlalchemy"),
    "rollout status": ("store", "sqlalchemy", "definitions.models", "celpy"),
}
READING_IMPORTS = """
import importlib, json, sys

for module in sys.argv[1].split(","):
    importlib.import_module(module)
print(json.dumps(sorted(
    name for name in sys.modules
    if any(name == avoid or name.startswith(avoid + ".") for avoid in AVOID)
)))
"""


@pytest.mark.parametrize("command", sorted(READING_MODULES))
def test_reading_commands_import_only_what_they_read_with(command: str) -> None:
    """`case show` and `rollout status` answer within their goal (issue 21 item 6): their
    modules leave the workflow modules and the opening side of a case unimported."""
    out = subprocess.run(
        [
            sys.executable,
            "-c",
            f"AVOID = {NOT_FOR_READING + ALSO_NOT_FOR[command]!r}\n{READING_IMPORTS}",
            ",".join(READING_MODULES[command]),
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    assert json.loads(out.stdout) == [], f"`opsflow {command}` imports these"


def test_the_state_query_is_named_as_the_workflows_declare_it() -> None:
    """client/case_read.py queries the escalation's state by name (naming the method would
    import the workflow module): the name is the one the workflow declares."""
    from temporalio import workflow

    from client.case_read import CALENDAR_QUERY, STATE_QUERY
    from workflows.escalation import EscalationWorkflow
    from workflows.rollout import RolloutWorkflow

    for workflow_class in (EscalationWorkflow, RolloutWorkflow):
        definition = workflow._Definition.must_from_class(workflow_class)
        assert STATE_QUERY in definition.queries, workflow_class.__name__
    escalation = workflow._Definition.must_from_class(EscalationWorkflow)
    assert CALENDAR_QUERY in escalation.queries
    from client.rollout_read import TIMEZONE_QUERY

    assert TIMEZONE_QUERY in workflow._Definition.must_from_class(RolloutWorkflow).queries
