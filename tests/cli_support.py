"""Running `opsflow` commands in-process against a test Temporal server and app database.

`CommandLine.run(...)` invokes the real typer app in a thread of its own (each command runs
its own event loop, as from a shell), with the environment a user's shell would have: the
server's address, the app database URL and the task queue a worker of the test polls.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy.engine import URL
from temporalio.testing import WorkflowEnvironment
from typer.main import get_command
from typer.testing import CliRunner

from worker.cli import app


@dataclass
class Outcome:
    exit_code: int
    stdout: str
    stderr: str

    def json(self) -> Any:
        return json.loads(self.stdout)

    def error_json(self) -> Any:
        """The `{"error": ...}` line a command given --json prints on stderr."""
        lines = self.stderr.strip().splitlines()
        assert len(lines) == 1, self.stderr
        return json.loads(lines[0])


@dataclass
class CommandLine:
    env: dict[str, str]

    @classmethod
    def against(
        cls, temporal: WorkflowEnvironment, database: URL, task_queue: str, data_dir: Path
    ) -> CommandLine:
        return cls(
            {
                "OPSFLOW_TEMPORAL_ADDRESS": temporal.client.service_client.config.target_host,
                "OPSFLOW_TEMPORAL_NAMESPACE": temporal.client.namespace,
                "OPSFLOW_DATABASE_URL": database.render_as_string(hide_password=False),
                "OPSFLOW_TASK_QUEUE": task_queue,
                "OPSFLOW_DATA_DIR": str(data_dir),
                "OPSFLOW_LOG_FORMAT": "json",
                "OPSFLOW_LOG_LEVEL": "error",
                "NO_COLOR": "1",
                "COLUMNS": "200",
            }
        )

    async def run(self, *args: str) -> Outcome:
        def invoke() -> Any:
            return CliRunner().invoke(app, list(args), env=self.env)

        result = await asyncio.to_thread(invoke)
        if result.exception is not None and not isinstance(result.exception, SystemExit):
            raise AssertionError(f"opsflow {' '.join(args)} raised") from result.exception
        return Outcome(result.exit_code, result.stdout, result.stderr)

    async def ok(self, *args: str) -> Outcome:
        outcome = await self.run(*args)
        assert outcome.exit_code == 0, (args, outcome.stdout, outcome.stderr)
        return outcome

    async def refused(self, *args: str) -> str:
        """The command fails with exit 1 and one readable line on stderr, no traceback."""
        outcome = await self.run(*args)
        assert outcome.exit_code == 1, (args, outcome.stdout, outcome.stderr)
        assert "Traceback" not in outcome.stderr
        assert len(outcome.stderr.strip().splitlines()) == 1, outcome.stderr
        return outcome.stderr.strip()


# typer ships its own copy of click (typer._click): its commands are used by duck typing.
Command = Any
Option = Any


def who_option(command: Command) -> Option | None:
    """The option naming who acts (`--by`, or `--approver`/`--owner` where that is the who)."""
    options = options_of(command)
    for name in ("--by", "--approver", "--owner"):
        if name in options:
            return options[name]
    return None


def subcommands(group: str) -> dict[str, Command]:
    """The subcommands of `opsflow GROUP`, by name."""
    root: Any = get_command(app)
    return dict(root.commands[group].commands)


def options_of(command: Command) -> dict[str, Option]:
    """The options of a command by each of their names (`--json`, `--by`, ...)."""
    return {
        name: param
        for param in command.params
        if param.param_type_name == "option"
        for name in param.opts
    }


__all__ = ["CommandLine", "Outcome", "options_of", "subcommands", "who_option"]
