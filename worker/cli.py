"""The `opsflow` command line."""

from __future__ import annotations

import importlib.metadata
import os
import sys
from typing import Annotated

import typer
from pydantic import ValidationError
from pydantic_settings import SettingsError as PydanticSettingsError

from store.migrate import upgrade
from worker.cli_agents import app as agents_app
from worker.cli_case import app as case_app
from worker.cli_defs import app as defs_app
from worker.cli_events import app as events_app
from worker.cli_handoff import app as handoff_app
from worker.cli_recovery import app as recovery_app
from worker.cli_rollout import app as rollout_app
from worker.cli_sandbox import app as sandbox_app
from worker.cli_simulate import simulate
from worker.cli_stuck import stuck
from worker.cli_support import (
    SETTINGS_EXIT_CODE,
    console,
    fail,
    forget_json,
    run,
    settings_or_exit,
)
from worker.settings import SettingsError

app = typer.Typer(
    name="opsflow",
    help="Durable customer-operations workflows on Temporal: escalations, rollouts, "
    "service recovery and bot-to-human handoffs.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)
app.add_typer(case_app, name="case")
app.add_typer(sandbox_app, name="sandbox")
app.add_typer(defs_app, name="defs")
app.add_typer(events_app, name="events")
app.add_typer(rollout_app, name="rollout")
app.add_typer(recovery_app, name="recovery")
app.add_typer(handoff_app, name="handoff")
app.add_typer(agents_app, name="agents")
app.command("stuck")(stuck)
app.command("simulate")(simulate)


def _version(value: bool) -> None:
    if value:
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
    from worker.metrics import metrics_url, runtime_for
    from worker.runner import run_worker, stop_on_signals
    from worker.temporal import connect

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
    except (SettingsError, PydanticSettingsError, ValidationError) as exc:
        # A settings class read later than start (AdapterSettings in an activity's process,
        # say) still ends in one line naming the variable, never a traceback.
        reason = " ".join(str(exc).split())
        if isinstance(exc, SettingsError):
            fail(f"bad setting: {reason}")
        else:
            fail(f"bad setting: {reason[:300]}")
        code = SETTINGS_EXIT_CODE
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
