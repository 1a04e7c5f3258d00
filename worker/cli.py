"""The `opsflow` command line.

`opsflow --help`, `opsflow --version` and every command's help answer at once, without
importing Temporal, SQLAlchemy, the settings or the workflows: the commands of the other
worker/cli_*.py modules are listed by name and short help from the tables below, and a
module is imported only when one of its commands runs or shows its help (`LazyCommand`).
Every command imports what it needs inside its function (tests/test_cli_help.py checks that
help imports none of it).
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import MutableMapping
from typing import Annotated, Any

import typer
from typer._click import Command, Context  # typer 0.29 ships its own click
from typer.core import TyperCommand, TyperGroup

from worker.cli_support import (
    SETTINGS_EXIT_CODE,
    console,
    fail,
    forget_json,
    run,
    settings_or_exit,
)

# The commands of the other modules, in the order `opsflow --help` lists them (the first two
# before the commands defined here, the groups after them): "module:attribute" of a Typer
# app or a command function, and the short help the listing shows, which is the first
# paragraph of that app's help or that function's docstring, kept here so that the listing
# imports nothing (tests/test_cli_help.py checks that the two agree).
LISTED_FIRST: dict[str, tuple[str, str]] = {
    "stuck": (
        "worker.cli_stuck:stuck",
        "Every run that needs a person: failing activities, failed runs, failing workflow\n"
        "tasks, overdue approvals and handoffs, inbox events stuck; each with its reason and its\n"
        "Temporal UI link.",
    ),
    "simulate": (
        "worker.cli_simulate:simulate",
        "Run an escalation policy's, rollout plan's or recovery rule set's real workflow in\n"
        "skipped time on an embedded test server with sandbox backends in a scratch database, "
        "and\nprint the timeline: each warning, level, phase, rule fired, action, notification"
        "\n(rendered) and breach or rollback, in local time.",
    ),
}
LISTED_LAST: dict[str, tuple[str, str]] = {
    "case": (
        "worker.cli_case:app",
        "Open, steer and inspect escalation cases (workflow id case-<ticket>).",
    ),
    "sandbox": (
        "worker.cli_sandbox:app",
        "Look at the sandbox backends: tickets, notifications, customers and flags.",
    ),
    "defs": (
        "worker.cli_defs:app",
        "Validate, lint, deploy, import and read definitions (escalation, rollout, recovery, "
        "handoff, schedule).",
    ),
    "events": ("worker.cli_events:app", "Send events to the intake and inspect its inbox."),
    "rollout": (
        "worker.cli_rollout:app",
        "Phased change rollouts: start, watch, approve, pause, promote, abort, retry.",
    ),
    "recovery": (
        "worker.cli_recovery:app",
        "Service recovery: one workflow per customer (workflow id customer-<id>).",
    ),
    "handoff": (
        "worker.cli_handoff:app",
        "Start, steer and inspect bot-to-human handoffs (workflow id handoff-<conversation>).",
    ),
    "agents": (
        "worker.cli_agents:app",
        "The sandbox presence backend's agents: skills, languages, status and load.",
    ),
    "oncall": (
        "worker.cli_oncall:app",
        "On-call schedules: who is on call now and next, and overrides.",
    ),
}


class LazyCommand(TyperCommand):
    """A command of another module, listed by its name and short help; the module is imported
    and its click command built (as `app.add_typer` / `app.command` would) the first time the
    command is run, shows its help or is looked into (`commands`)."""

    def __init__(self, name: str, target: str, short_help: str) -> None:
        super().__init__(name=name, help=short_help)
        self.target = target
        self._loaded: Command | None = None

    def load(self) -> Command:
        if self._loaded is None:
            module, attribute = self.target.split(":")
            found = getattr(importlib.import_module(module), attribute)
            holder = typer.Typer(add_completion=False, rich_markup_mode="rich")
            if isinstance(found, typer.Typer):
                holder.add_typer(found, name=self.name)
                group = typer.main.get_command(holder)
                assert isinstance(group, TyperGroup) and self.name is not None
                self._loaded = group.commands[self.name]
            else:  # a command function: a Typer of one command builds that command alone
                holder.command(self.name)(found)
                self._loaded = typer.main.get_command(holder)
        return self._loaded

    def make_context(
        self,
        info_name: str | None,
        args: list[str],
        parent: Context | None = None,
        **extra: Any,
    ) -> Context:
        # The group invokes whatever command the context holds: the loaded one.
        return self.load().make_context(info_name, args, parent=parent, **extra)

    @property
    def commands(self) -> MutableMapping[str, Command]:
        """A group's subcommands (for tests and tools that walk the tree); a single command
        has none (AttributeError, as for any command)."""
        loaded = self.load()
        if not isinstance(loaded, TyperGroup):
            raise AttributeError("commands")
        return loaded.commands


class LazyGroup(TyperGroup):
    """The top-level group: its own commands plus a LazyCommand for each of the others."""

    def __init__(self, **attrs: Any) -> None:
        super().__init__(**attrs)

        def lazy(table: dict[str, tuple[str, str]]) -> dict[str, Command]:
            return {name: LazyCommand(name, *entry) for name, entry in table.items()}

        self.commands = {**lazy(LISTED_FIRST), **self.commands, **lazy(LISTED_LAST)}


app = typer.Typer(
    name="opsflow",
    cls=LazyGroup,
    help="Durable customer-operations workflows on Temporal: escalations, rollouts, "
    "service recovery and bot-to-human handoffs.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)


def _version(value: bool) -> None:
    if value:
        import importlib.metadata

        console.print(f"opsflow {importlib.metadata.version('opsflow')}")
        raise typer.Exit()


@app.callback()
def main(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Print the version."),
    ] = False,
) -> None:
    """Settings come from OPSFLOW_* and TEMPORAL_* environment variables (see README)."""
    forget_json()  # each command's own --json decides the shape of its errors


@app.command()
def dev() -> None:
    """Run everything locally: Temporal dev server with UI, app database, sandbox and worker."""
    from worker.dev import run_dev

    settings = settings_or_exit()
    run(lambda: run_dev(settings, console))


@app.command()
def worker() -> None:
    """Run a worker against the configured Temporal cluster or Temporal Cloud."""
    from client.temporal import connect
    from worker.metrics import metrics_url, runtime_for
    from worker.runner import run_worker, stop_on_signals

    settings = settings_or_exit()

    async def main() -> None:
        runtime = runtime_for(settings, settings.metrics_address)
        if settings.metrics_address:
            console.print(f"metrics on {metrics_url(settings.metrics_address)}", highlight=False)
        stop = stop_on_signals()
        client = await connect(settings, runtime=runtime)
        await run_worker(client, settings, stop)

    run(main)


@app.command()
def intake() -> None:
    """Run the event intake alone (HTTP on OPSFLOW_INTAKE_HOST:OPSFLOW_INTAKE_PORT)."""
    from intake.serve import address, run_intake
    from worker.dev import ensure_port_free
    from worker.metrics import metrics_url, runtime_for
    from worker.runner import stop_on_signals

    settings = settings_or_exit()
    if not settings.intake_sources:
        raise fail("OPSFLOW_INTAKE_SOURCES is empty: no sender could sign an event")

    async def main() -> None:
        ensure_port_free(
            settings.intake_host, settings.intake_port, "event intake", "OPSFLOW_INTAKE_PORT"
        )
        runtime = runtime_for(settings, settings.metrics_address)
        stop = stop_on_signals()
        metrics = (
            f", metrics on {metrics_url(settings.metrics_address)}"
            if settings.metrics_address
            else ""
        )
        console.print(
            f"event intake on {address(settings)} (docs at {address(settings)}/docs), "
            f"senders: {', '.join(sorted(settings.intake_sources))}{metrics}",
            highlight=False,
        )
        await run_intake(settings, stop, runtime=runtime)

    run(main, uvloop=True)


@app.command("codec-server")
def codec_server() -> None:
    """Serve /encode and /decode so the Temporal UI and CLI can read encrypted payloads."""
    from worker.codec_server import codec_token, codec_url, start_codec_server, token_source
    from worker.dev import ensure_port_free
    from worker.runner import stop_on_signals

    settings = settings_or_exit()
    keys = settings.payload_keyring
    if keys is None:
        raise fail("OPSFLOW_PAYLOAD_KEYS is not set: the codec server has no key to decrypt with")

    async def main() -> None:
        ensure_port_free(
            settings.codec_host, settings.codec_port, "codec server", "OPSFLOW_CODEC_PORT"
        )
        stop = stop_on_signals()
        token = codec_token(settings)
        server = await start_codec_server(settings, keys, token, stop)
        console.print(
            f"codec server on {codec_url(settings)} for the UI at {settings.codec_origin}, "
            f"keys {', '.join(keys.ids())} (encrypting with {keys.current_id}), "
            f"token {token_source(settings)}",
            highlight=False,
        )
        await server

    run(main, uvloop=True)


@app.command()
def migrate() -> None:
    """Upgrade the app database to the newest schema."""
    from store.migrate import upgrade

    settings = settings_or_exit()
    try:
        upgrade(settings.database)
    except Exception as exc:  # one line, whatever the driver raised
        raise fail(
            "migrating the app database (OPSFLOW_DATABASE_URL="
            f"{settings.database.render_as_string(hide_password=True)}) failed: "
            f"{str(exc).splitlines()[0]}"
        ) from None
    console.print(
        f"app database at {settings.database.render_as_string(hide_password=True)} is up to date"
    )


def entry() -> None:
    """The `opsflow` console script.

    Ends the process with os._exit once output is flushed: the Temporal SDK's native threads
    can abort a normal interpreter shutdown ("Fatal Python error ... finalizing",
    temporalio/sdk-python#300), which would turn a successful command into a crash.
    """
    try:
        app()
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except Exception as exc:
        # A settings class read later than start (AdapterSettings in an activity's process,
        # say) still ends in one line naming the variable, never a traceback.
        message = _bad_setting(exc)
        if message is None:
            raise
        fail(message)
        code = SETTINGS_EXIT_CODE
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def _bad_setting(exc: Exception) -> str | None:
    """The line for a settings error (opsflow's, pydantic-settings' or a validation error);
    None for any other exception. The classes are imported here, not at the top: an error of
    theirs comes from a command that has imported them already."""
    from pydantic import ValidationError
    from pydantic_settings import SettingsError as PydanticSettingsError

    from activities.environment import SettingsError

    if not isinstance(exc, SettingsError | PydanticSettingsError | ValidationError):
        return None
    reason = " ".join(str(exc).split())
    if isinstance(exc, SettingsError):
        return f"bad setting: {reason}"
    return f"bad setting: {reason[:300]}"
