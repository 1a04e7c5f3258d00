"""`opsflow stuck`: every run that needs a person, one line each (logic in worker/stuck.py)."""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING, Annotated

import typer

from worker.cli_support import JsonOption, console, fail, print_json, run, settings_or_exit

if TYPE_CHECKING:
    from worker.stuck import StuckReport

# worker.stuck.KINDS for the help of --kind, spelled out: importing worker.stuck loads Temporal
# and SQLAlchemy, which help does without (tests/test_cli_help.py checks the two agree).
KINDS = ("escalation", "rollout", "recovery", "handoff", "inbox")


def _duration(option: str, text: str) -> timedelta:
    from definitions.duration import parse_duration

    if text.strip() in ("0", "0s", "0m"):
        return timedelta(0)
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise fail(f"{option} {text[:60]!r}: {exc} (e.g. 90s, 15m, 2h, 1d)") from None


def stuck(
    kind: Annotated[
        list[str] | None,
        typer.Option(
            "--kind",
            help=f"Only these ({', '.join(KINDS)}); repeat for several. Default: all.",
            show_default=False,
        ),
    ] = None,
    older_than: Annotated[
        str,
        typer.Option(
            "--older-than",
            help="How long an approval, a handoff or an inbox event must be overdue or "
            "waiting before it counts (0 for at once).",
        ),
    ] = "5m",
    within: Annotated[
        str,
        typer.Option(
            "--within",
            help="How far back to look for runs that failed, were terminated or timed out, "
            "and activities given up.",
        ),
    ] = "1d",
    as_json: JsonOption = False,
) -> None:
    """Every run that needs a person: failing activities, failed runs, failing workflow
    tasks, overdue approvals and handoffs, inbox events stuck; each with its reason and its
    Temporal UI link."""
    from rich.markup import escape
    from rich.table import Table

    from client.temporal import connect, workflow_ui_url
    from definitions.duration import format_duration
    from store.db import create_engine, session_factory
    from worker.stuck import StuckQuery, find_stuck, kinds_from

    settings = settings_or_exit()
    try:
        kinds = kinds_from(kind or [])
    except ValueError as exc:
        raise fail(str(exc)) from None
    query = StuckQuery(
        kinds=kinds,
        older_than=_duration("--older-than", older_than),
        within=_duration("--within", within),
        task_queue=settings.task_queue,
    )

    async def main() -> StuckReport:
        engine = create_engine(settings.database)
        try:
            client = await connect(settings)
            return await find_stuck(
                client,
                session_factory(engine),
                query,
                lambda workflow_id: workflow_ui_url(settings, client.namespace, workflow_id),
            )
        finally:
            await engine.dispose()

    report = run(main)
    if as_json:
        print_json(
            {
                "count": len(report.runs),
                "runs": [r.as_json() for r in report.runs],
                "partial": report.partial,
            }
        )
        return
    if not report.runs:
        console.print(
            f"nothing stuck (task queue {settings.task_queue}; waiting longer than "
            f"{format_duration(query.older_than) if query.older_than else '0s'}, failures "
            f"within {format_duration(query.within) if query.within else '0s'})",
            highlight=False,
        )
    else:
        table = Table(title=f"needs a person ({len(report.runs)})", title_justify="left")
        for column in ("kind", "run", "reason", "since", "detail"):
            table.add_column(column, overflow="fold")
        table.add_column("Temporal UI", no_wrap=True)  # a link stays whole, to copy or click
        for r in report.runs:
            table.add_row(
                r.kind,
                escape(r.subject),
                f"[bold red]{escape(r.reason)}[/]",
                r.since.strftime("%Y-%m-%d %H:%M:%S UTC") if r.since else "",
                escape(r.detail),
                f"[link={r.url}]{escape(r.url)}[/link]" if r.url else "",
            )
        console.print(table)
    for note in report.partial:
        console.print(f"[yellow]partial:[/] {escape(note)}", highlight=False)
