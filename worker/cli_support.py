"""What every `opsflow` command shares: one-line errors, settings, the database, output.

Importing it is cheap (typer and rich's console): `opsflow --help` and every command's help
import this module, so the settings, the database, Temporal and the logging setup are
imported by the functions that use them, when a command runs.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.markup import escape

from definitions.errors import OpsflowError
from worker.cli_help import use_plain_metavars

if TYPE_CHECKING:
    from datetime import datetime

    from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
    from temporalio.service import RPCError

    from client.settings import Settings
    from workflows.escalation_model import CaseInfo

    Sessions = async_sessionmaker[AsyncSession]

use_plain_metavars()

T = TypeVar("T")

console = Console()
err_console = Console(stderr=True)

_json_errors = False
"""Whether the running command was given `--json`: its errors are then JSON too."""


def _remember_json(value: bool) -> bool:
    """`--json`'s callback: click calls it for every command that has the option, given or
    not, so the flag always belongs to the command that runs."""
    global _json_errors
    _json_errors = bool(value)
    return value


def forget_json() -> None:
    """Before a command's options are read (the root callback): no `--json` seen yet."""
    _remember_json(False)


JsonOption = Annotated[
    bool,
    typer.Option(
        "--json",
        help='Print JSON instead of text; an error is {"error": ...} on stderr.',
        callback=_remember_json,
    ),
]
By = Annotated[
    str, typer.Option("--by", help="Who does it (recorded in the ledger).", show_default=False)
]


def json_requested() -> bool:
    """True while the running command was given `--json`."""
    return _json_errors


# The options that give a case's fields under another name.
_CASE_OPTIONS = {"customer_id": "--customer", "ticket_id": "--ticket"}


def case_from_options(fields: dict[str, Any], opened_at: datetime) -> CaseInfo:
    """The case that command options describe; a bad value is the command's one-line
    failure naming the option (`--priority: Input should be 'p1', ...`)."""
    from pydantic import ValidationError

    from workflows.escalation_model import CaseInfo

    try:
        return CaseInfo.model_validate({**fields, "opened_at": opened_at})
    except ValidationError as exc:
        error = exc.errors()[0]
        where = ".".join(str(part) for part in error["loc"]) or "case"
        raise fail(f"{_CASE_OPTIONS.get(where, f'--{where}')}: {error['msg']}") from None


def fail(message: str) -> typer.Exit:
    """Print one error line on stderr: readable text, or `{"error": ...}` for a command
    given `--json`, so scripts get the same shape from every command. The caller raises the
    returned Exit (status 1)."""
    if json_requested():
        typer.echo(json.dumps({"error": message}, ensure_ascii=False), err=True)
    else:
        # The message is text, not markup: a value such as "[/path]" must print as it is.
        err_console.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
    return typer.Exit(1)


def describe_rpc_error(exc: RPCError) -> str:
    """A Temporal RPC failure in one line a person can act on."""
    from temporalio.service import RPCStatusCode

    text = exc.message or str(exc)
    first = text.splitlines()[0][:200] if text else ""
    if exc.status == RPCStatusCode.DEADLINE_EXCEEDED:
        return f"Temporal did not answer in time ({first or 'deadline exceeded'})"
    if exc.status == RPCStatusCode.UNAVAILABLE:
        return f"Temporal is unavailable ({first}); is `opsflow dev` or the cluster running?"
    return f"Temporal refused the request ({exc.status.name.lower()}: {first})"


SETTINGS_EXIT_CODE = 2


def settings_or_exit() -> Settings:
    """Every setting, validated before the command does anything; a bad one is one line, exit 2."""
    from activities.environment import SettingsError
    from client.logging import configure_logging
    from client.settings import load_all_settings

    try:
        settings = load_all_settings()
    except SettingsError as exc:
        fail(f"bad setting: {exc}")
        raise typer.Exit(SETTINGS_EXIT_CODE) from None
    configure_logging(settings.log_format, settings.log_level)
    return settings


def run(main: Callable[[], Awaitable[T]], *, uvloop: bool = False) -> T:
    """Run a command's coroutine: OpsflowError and database errors become one line, exit 1.

    `uvloop`: on uvloop's event loop (installed with uvicorn[standard]), for the HTTP intake,
    whose every request is event-loop work."""

    import asyncio

    async def wrapped() -> T:
        return await main()

    loop_factory: Callable[[], asyncio.AbstractEventLoop] | None = None
    if uvloop:
        import uvloop as fast_loop

        loop_factory = fast_loop.new_event_loop
    try:
        with asyncio.Runner(loop_factory=loop_factory) as runner:
            return runner.run(wrapped())
    except KeyboardInterrupt:
        raise typer.Exit(130) from None
    except Exception as exc:
        message = _error_line(exc)
        if message is None:
            raise
        raise fail(message) from None


def _error_line(exc: Exception) -> str | None:
    """The one line `run` prints for an OpsflowError, a Temporal RPC failure or a database
    error; None for anything else, which goes on as it is. An RPCError or SQLAlchemyError can
    only have been raised once its module was imported, so neither is imported here."""
    if isinstance(exc, OpsflowError):
        return str(exc)
    if "temporalio.service" in sys.modules:
        from temporalio.service import RPCError

        if isinstance(exc, RPCError):
            return describe_rpc_error(exc)
    database_errors: tuple[type[Exception], ...] = ()
    if "sqlalchemy.exc" in sys.modules:
        from sqlalchemy.exc import SQLAlchemyError

        database_errors += (SQLAlchemyError,)
    if "sqlite3" in sys.modules:  # the embedded database read without SQLAlchemy
        import sqlite3

        database_errors += (sqlite3.Error,)
    if isinstance(exc, database_errors):
        first = str(exc).splitlines()[0][:200]
        return f"cannot use the app database ({first}); run `opsflow migrate` first"
    return None


def with_database(settings: Settings, work: Callable[[Sessions], Awaitable[T]]) -> T:
    """Run `work` with a session factory on the configured app database."""
    from store.db import create_engine, session_factory

    async def main() -> T:
        engine = create_engine(settings.database)
        try:
            return await work(session_factory(engine))
        finally:
            await engine.dispose()

    return run(main)


def print_json(data: Any) -> None:
    typer.echo(json.dumps(data, default=str, ensure_ascii=False, indent=2))


def show_rows(
    rows: Sequence[dict[str, Any]], columns: Sequence[str], title: str, as_json: bool
) -> None:
    """Rows as a rich table, or as a JSON list with `--json`."""
    if as_json:
        print_json(list(rows))
        return
    from rich.table import Table

    table = Table(title=f"{title} ({len(rows)})", title_justify="left")
    for column in columns:
        table.add_column(column, overflow="fold")
    for row in rows:
        table.add_row(*("" if row.get(c) is None else str(row[c]) for c in columns))
    console.print(table)
