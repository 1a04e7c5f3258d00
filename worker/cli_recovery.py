"""`opsflow recovery ...`: inspect and steer customers' recovery workflows; backtest rules."""

from __future__ import annotations

from datetime import datetime, timedelta
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from definitions.errors import OpsflowError
from worker.cli_support import (
    JsonOption,
    console,
    fail,
    print_json,
    run,
    settings_or_exit,
    show_rows,
)

if TYPE_CHECKING:
    from pydantic import BaseModel

    from workflows.recovery_model import RecoveryStatus

app = typer.Typer(
    name="recovery",
    help="Service recovery: one workflow per customer (workflow id customer-<id>).",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)

Customer = Annotated[str, typer.Argument(help="The customer id, e.g. C-0017.")]
By = Annotated[str, typer.Option("--by", help="Who does it (an approver, a lead).")]
Rule = Annotated[
    str | None, typer.Option("--rule", help="A rule (NAME or DEFINITION/NAME); default: all.")
]
ApprovalId = Annotated[
    int | None, typer.Option("--approval", help="Which approval; default: the oldest waiting.")
]


def _model(model: type[BaseModel], **fields: Any) -> BaseModel:
    from pydantic import ValidationError

    try:
        return model(**fields)
    except ValidationError as exc:
        error = exc.errors()[0]
        field = ".".join(str(part) for part in error["loc"]) or "value"
        raise fail(f"--{field.replace('_', '-')}: {error['msg']}") from None


def status_line(customer: str, view: RecoveryStatus) -> str:
    return f"customer {customer}: {view.ops_state}; {view.details}"


def _command(customer: str, update: str, argument: BaseModel, as_json: bool) -> None:
    from client.recovery import command_customer
    from client.temporal import connect, workflow_ui_url
    from workflows.recovery_model import customer_workflow_id

    settings = settings_or_exit()

    async def main() -> tuple[RecoveryStatus, str]:
        client = await connect(settings)
        view = await command_customer(client, customer, update, argument)
        return view, workflow_ui_url(settings, client.namespace, customer_workflow_id(customer))

    view, link = run(main)
    if as_json:
        print_json(view.model_dump(mode="json"))
        return
    console.print(status_line(customer, view), highlight=False)
    console.print(f"  {link}", highlight=False)


@app.command()
def approve(
    customer: Customer,
    by: By,
    approval: ApprovalId = None,
    amount: Annotated[
        str | None, typer.Option("--amount", help="Approve a smaller amount.")
    ] = None,
    note: Annotated[str | None, typer.Option("--note")] = None,
    as_json: JsonOption = False,
) -> None:
    """Approve a waiting credit (never by the one who requested it)."""
    from workflows.recovery_model import Approve

    value: Decimal | None = None
    if amount is not None:
        try:
            value = Decimal(amount)
        except InvalidOperation:
            raise fail(f"--amount: {amount!r} is not a number") from None
    command = _model(Approve, by=by, approval_id=approval, amount=value, note=note)
    _command(customer, "approve", command, as_json)


@app.command()
def reject(
    customer: Customer,
    by: By,
    approval: ApprovalId = None,
    reason: Annotated[str, typer.Option("--reason")] = "",
    as_json: JsonOption = False,
) -> None:
    """Reject a waiting credit."""
    from workflows.recovery_model import Reject

    _command(
        customer,
        "reject",
        _model(Reject, by=by, approval_id=approval, reason=reason),
        as_json,
    )


@app.command()
def silence(
    customer: Customer,
    by: By,
    rule: Rule = None,
    for_: Annotated[str | None, typer.Option("--for", help="How long, e.g. 2d or 4h.")] = None,
    until: Annotated[str | None, typer.Option("--until", help="ISO 8601 time with a zone.")] = None,
    reason: Annotated[str, typer.Option("--reason")] = "",
    as_json: JsonOption = False,
) -> None:
    """Silence a rule, or the whole customer, until a time."""
    from definitions.duration import parse_duration
    from workflows.recovery_model import SilenceCommand

    if (for_ is None) == (until is None):
        raise fail("give exactly one of --for or --until")
    duration: timedelta | None = None
    moment: datetime | None = None
    try:
        if for_ is not None:
            duration = parse_duration(for_)
        if until is not None:
            moment = datetime.fromisoformat(until)
    except ValueError as exc:
        raise fail(f"--{'for' if for_ else 'until'}: {exc}") from None
    if moment is not None and moment.tzinfo is None:
        raise fail("--until: give a timezone, e.g. 2026-12-01T18:00+01:00")
    command = _model(
        SilenceCommand, by=by, rule=rule, until=moment, duration=duration, reason=reason
    )
    _command(customer, "silence", command, as_json)


@app.command()
def unsilence(customer: Customer, by: By, rule: Rule = None, as_json: JsonOption = False) -> None:
    """Lift a silence."""
    from workflows.recovery_model import Unsilence

    _command(customer, "unsilence", _model(Unsilence, by=by, rule=rule), as_json)


@app.command()
def close(
    customer: Customer,
    by: By,
    outcome: Annotated[
        str, typer.Option("--outcome", help="recovered, not_recovered or closed.")
    ] = "closed",
    as_json: JsonOption = False,
) -> None:
    """Close the customer's open episode (one handed to a person waits for this)."""
    from workflows.recovery_model import CloseEpisode

    _command(customer, "close_episode", _model(CloseEpisode, by=by, outcome=outcome), as_json)


@app.command()
def show(customer: Customer, as_json: JsonOption = False) -> None:
    """Everything a customer's recovery workflow knows."""
    from rich.table import Table

    from client.recovery import show_customer
    from client.temporal import connect

    settings = settings_or_exit()

    async def main() -> RecoveryStatus:
        return await show_customer(await connect(settings), customer)

    view = run(main)
    if as_json:
        print_json(view.model_dump(mode="json"))
        return
    s = view.state
    console.print(status_line(customer, view), highlight=False)
    console.print(f"  rules: {', '.join(s.rule_sets) or 'none'}; events seen: {s.events_seen}")
    if s.windows:
        console.print("  windows: " + ", ".join(f"{k} {len(v)}" for k, v in s.windows.items()))
    if s.cooldowns:
        console.print(
            "  cooldowns: "
            + ", ".join(f"{k} until {v:%Y-%m-%d %H:%M}" for k, v in s.cooldowns.items())
        )
    for episode in s.episodes[-5:]:
        person = ""
        if episode.handed_over_at is not None and episode.status == "open":
            person = f", not recovered: with {episode.handed_over_to}"
            person += f" (ticket {episode.handover_ticket})" if episode.handover_ticket else ""
        console.print(
            f"  episode {episode.id}: {episode.status}, opened {episode.opened_at:%Y-%m-%d %H:%M} "
            f"by {episode.opened_by}{person}",
            highlight=False,
        )
    for approval in s.approvals[-5:]:
        console.print(
            f"  approval {approval.id}: {approval.amount} {approval.currency} credit, "
            f"{approval.status}, group {approval.group}",
            highlight=False,
        )
    table = Table(title="decisions", title_justify="left")
    for column in ("seq", "at", "rule", "outcome", "reason", "actions"):
        table.add_column(column, overflow="fold")
    merged = sorted(s.decisions + s.suppressed, key=lambda d: d.seq)[-20:]
    for d in merged:
        table.add_row(
            str(d.seq),
            f"{d.at:%Y-%m-%d %H:%M}",
            f"{d.rule} ({d.ref})",
            d.suppressed_by or d.outcome,
            d.reason or "",
            ", ".join(d.actions),
        )
    console.print(table)


@app.command("list")
def list_customers(
    as_json: JsonOption = False,
    state: Annotated[
        str | None,
        typer.Option(
            "--state", help="watching, acting, awaiting_approval, with_person or silenced"
        ),
    ] = None,
    limit: Annotated[int, typer.Option("--limit", min=1, max=10_000)] = 100,
) -> None:
    """Running recovery workflows, newest first."""
    from activities import search_attributes as sa
    from client.temporal import connect

    settings = settings_or_exit()
    states = ("watching", "acting", "awaiting_approval", "with_person", "silenced")
    if state is not None and state not in states:
        raise fail(f"--state: unknown state {state!r}: use {', '.join(states)}")
    query = 'OpsKind = "recovery" AND ExecutionStatus = "Running"'
    if state:
        query += f' AND OpsState = "{state}"'

    async def main() -> list[dict[str, Any]]:
        client = await connect(settings)
        rows = []
        async for execution in client.list_workflows(query, limit=limit):
            attributes = execution.typed_search_attributes
            rows.append(
                {
                    "customer": attributes.get(sa.OPS_CUSTOMER_ID),
                    "state": attributes.get(sa.OPS_STATE),
                    "rules": attributes.get(sa.OPS_DEFINITION),
                    "started": f"{execution.start_time:%Y-%m-%d %H:%M}",
                    "workflow_id": execution.id,
                }
            )
        return rows

    rows = run(main)
    show_rows(rows, ["customer", "state", "rules", "started"], "recovery workflows", as_json)


@app.command("backtest")
def backtest_command(
    rule_file: Annotated[Path, typer.Argument(help="A YAML file with recovery definitions.")],
    events: Annotated[Path, typer.Option("--events", help="Past events, one JSON a line.")],
    profiles: Annotated[
        Path | None,
        typer.Option("--profiles", help="JSON object: customer id -> CRM profile (tier, ...)."),
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Run rules over past events in skipped time: per rule, how often it would fire, be
    suppressed and by what. Nothing is sent and no workflow is started."""
    from rich.table import Table

    from client.recovery import run_backtest

    try:
        report = run_backtest(rule_file, events, profiles)
    except OpsflowError as exc:
        raise fail(str(exc)) from None
    if as_json:
        print_json(report.model_dump(mode="json"))
        return
    columns = (
        "fired",
        "laddered",
        "shadow",
        "silence",
        "dedup",
        "inhibition",
        "cooldown",
        "cap",
        "ladder_exhausted",
        "condition_error",
    )
    table = Table(
        title=f"backtest: {report.events} events, {report.customers} customers",
        title_justify="left",
    )
    table.add_column("rule")
    for column in columns:
        table.add_column(column, justify="right")
    for rule, counts in sorted(report.rules.items()):
        table.add_row(rule, *(str(counts.get(c, 0)) for c in columns))
    console.print(table)
    if report.approvals:
        console.print(
            "approvals: " + ", ".join(f"{k} {v}" for k, v in sorted(report.approvals.items()))
        )
    if report.episodes:
        console.print(
            "episodes: " + ", ".join(f"{k} {v}" for k, v in sorted(report.episodes.items()))
        )
