"""`opsflow case ...`: open, steer and inspect escalation cases."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

import typer
from pydantic import BaseModel, ValidationError
from rich.panel import Panel
from rich.table import Table
from sqlalchemy import select
from temporalio.client import Client
from temporalio.service import RPCError, RPCStatusCode

from activities.backends import Backends
from activities.settings import load_adapter_settings
from store.db import create_engine, session_factory
from store.models import LedgerEntry
from worker.cases import choose_policy, command_case, open_case, parse_policy_ref
from worker.cli_support import (
    JsonOption,
    console,
    fail,
    print_json,
    run,
    settings_or_exit,
    show_rows,
)
from worker.errors import OpsflowError
from worker.settings import Settings
from worker.temporal import connect, workflow_ui_url
from workflows import search_attributes as sa
from workflows.escalation import (
    Acknowledge,
    CaseInfo,
    CaseStatus,
    EscalationWorkflow,
    Pause,
    Reassign,
    Resolve,
    SetPriority,
    SetStage,
    case_workflow_id,
)

app = typer.Typer(
    name="case",
    help="Open, steer and inspect escalation cases (workflow id case-<ticket>).",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)

Ticket = Annotated[str, typer.Argument(help="The ticket id, e.g. T-1042.")]
By = Annotated[str, typer.Option("--by", help="Who does it (agent or person).")]


def _link(settings: Settings, client: Client, ticket: str) -> str:
    return workflow_ui_url(settings, client.namespace, case_workflow_id(ticket))


def _status_line(status: CaseStatus) -> str:
    level = status.visits[-1].level if status.visits and not status.visits[-1].ended_at else 0
    return (
        f"case {status.case.ticket_id}: {status.state}, {status.case.priority}, "
        f"stage {status.case.stage}, level {level}, policy {status.definition}"
    )


def _command(ticket: str, update: str, argument: BaseModel | None = None) -> None:
    settings = settings_or_exit()

    async def main() -> None:
        client = await connect(settings)
        status = await command_case(client, ticket, update, argument)
        console.print(_status_line(status), highlight=False)
        console.print(f"  {_link(settings, client, ticket)}", highlight=False)

    run(main)


def _model(model: type[BaseModel], **fields: Any) -> BaseModel:
    """Build a command; a bad value is one line naming the field."""
    try:
        return model(**fields)
    except ValidationError as exc:
        error = exc.errors()[0]
        field = ".".join(str(part) for part in error["loc"])
        message = str(error["msg"]).removeprefix("Value error, ")
        raise fail(f"--{field.replace('_', '-')}: {message}" if field else message) from None


@app.command("open")
def open_command(
    ticket: Annotated[str, typer.Option("--ticket", help="Ticket id, e.g. T-1042.")],
    customer: Annotated[str, typer.Option("--customer", help="Customer id, e.g. C-0017.")],
    priority: Annotated[str, typer.Option("--priority", help="p1 (most urgent) .. p4.")] = "p3",
    stage: Annotated[str, typer.Option("--stage", help="Journey stage of the case.")] = "support",
    channel: Annotated[str, typer.Option("--channel", help="Where it came in.")] = "email",
    subject: Annotated[str, typer.Option("--subject", help="The ticket's subject.")] = "",
    policy: Annotated[
        str | None,
        typer.Option("--policy", help="NAME or NAME@VERSION; default: the first that matches."),
    ] = None,
) -> None:
    """Open a case: start its escalation workflow (opening the same ticket again is a no-op)."""
    settings = settings_or_exit()
    case = _model(
        CaseInfo,
        ticket_id=ticket,
        customer_id=customer,
        priority=priority,
        stage=stage,
        channel=channel,
        subject=subject or None,
        opened_at=datetime.now(UTC),
    )
    assert isinstance(case, CaseInfo)
    if policy is not None:
        try:
            parse_policy_ref(policy)
        except OpsflowError as exc:
            raise fail(f"--policy: {exc}") from None

    async def main() -> None:
        engine = create_engine(settings.database)
        try:
            sessions = session_factory(engine)
            backends = Backends.from_settings(load_adapter_settings(), sessions)
            try:
                profile = await backends.crm.get_customer(case.customer_id)
            except Exception:  # an unknown customer still gets a case, matched on the ticket
                profile = None
            pinned = await choose_policy(sessions, case, profile, policy)
            client = await connect(settings)
            # With the sandbox ticketing backend the case's ticket is created there if missing.
            opened = await open_case(
                client, settings.task_queue, case, pinned, ticketing=backends.ticketing
            )
        finally:
            await engine.dispose()
        verb = "opened" if opened.started else "is already open (nothing started)"
        console.print(f"case {ticket} {verb} under {opened.policy}", highlight=False)
        console.print(f"  {_link(settings, client, ticket)}", highlight=False)

    run(main)


@app.command("ack")
def acknowledge(ticket: Ticket, by: By) -> None:
    """Acknowledge a case: escalation stops and the first response counts as given."""
    _command(ticket, "acknowledge", _model(Acknowledge, by=by))


@app.command()
def pause(
    ticket: Ticket,
    reason: Annotated[str, typer.Option("--reason")] = "waiting on the customer",
) -> None:
    """Stop the SLA clocks while the case waits on the customer."""
    _command(ticket, "pause", _model(Pause, reason=reason))


@app.command()
def resume(ticket: Ticket) -> None:
    """Restart the SLA clocks with the budget that was left."""
    _command(ticket, "resume")


@app.command()
def priority(ticket: Ticket, to: Annotated[str, typer.Argument(help="p1 .. p4")]) -> None:
    """Change the priority; the clocks use the new SLA and keep the time already spent."""
    _command(ticket, "set_priority", _model(SetPriority, priority=to))


@app.command()
def stage(ticket: Ticket, to: Annotated[str, typer.Argument(help="Journey stage")]) -> None:
    """Change the journey stage; the clocks use that stage's SLA."""
    _command(ticket, "set_stage", _model(SetStage, stage=to))


@app.command()
def reassign(
    ticket: Ticket,
    queue: Annotated[str | None, typer.Option("--queue")] = None,
    agent: Annotated[str | None, typer.Option("--agent")] = None,
    by: Annotated[str, typer.Option("--by")] = "opsflow",
) -> None:
    """Move the case to a queue or an agent."""
    if (queue is None) == (agent is None):
        raise fail("give exactly one of --queue or --agent")
    _command(ticket, "reassign", _model(Reassign, queue=queue, agent=agent, by=by))


@app.command()
def resolve(ticket: Ticket, by: By) -> None:
    """Resolve the case; the workflow completes with its SLA summary."""
    _command(ticket, "resolve", _model(Resolve, by=by))


@app.command()
def show(ticket: Ticket, as_json: JsonOption = False) -> None:
    """The case's live state and its timeline from the ledger."""
    settings = settings_or_exit()

    async def main() -> tuple[CaseStatus, list[LedgerEntry], str]:
        client = await connect(settings)
        handle = client.get_workflow_handle_for(EscalationWorkflow.run, case_workflow_id(ticket))
        try:
            status = await handle.query(EscalationWorkflow.state)
        except RPCError as exc:
            if exc.status == RPCStatusCode.NOT_FOUND:
                raise OpsflowError(f"there is no case for ticket {ticket}") from None
            raise
        engine = create_engine(settings.database)
        try:
            async with session_factory(engine)() as session:
                timeline = list(
                    await session.scalars(
                        select(LedgerEntry)
                        .where(LedgerEntry.workflow_id == case_workflow_id(ticket))
                        .order_by(LedgerEntry.at, LedgerEntry.id)
                    )
                )
        finally:
            await engine.dispose()
        return status, timeline, _link(settings, client, ticket)

    status, timeline, link = run(main)
    if as_json:
        print_json(
            {
                "state": status.model_dump(mode="json"),
                "timeline": [
                    {"at": e.at.isoformat(), "step": e.step, "detail": e.detail} for e in timeline
                ],
                "url": link,
            }
        )
        return
    clocks = Table(title="SLA clocks", title_justify="left")
    for column in ("sla", "budget", "state", "runs out at", "breached at"):
        clocks.add_column(column)
    for clock in status.clocks.values():
        state = "met" if clock.met_at else ("running" if clock.running else "paused")
        clocks.add_row(
            clock.name,
            str(clock.budget),
            state,
            _when(clock.due),
            _when(clock.breached_at),
        )
    steps = Table(title="Timeline", title_justify="left")
    for column in ("at", "step", "detail"):
        steps.add_column(column, overflow="fold")
    for entry in timeline:
        steps.add_row(_when(entry.at), entry.step, _short(entry.detail))
    failed = "".join(f"\nfailed at {f.step} ({_when(f.at)}): {f.error}" for f in status.failures)
    console.print(Panel(_status_line(status) + failed + f"\n{link}", title=f"case {ticket}"))
    console.print(clocks)
    console.print(steps)


def _when(moment: datetime | None) -> str:
    return moment.astimezone().strftime("%Y-%m-%d %H:%M:%S %Z") if moment else ""


def _short(detail: dict[str, Any]) -> str:
    text = ", ".join(f"{k}={v}" for k, v in detail.items() if k != "event")
    return text[:160]


@app.command("list")
def list_cases(
    as_json: JsonOption = False,
    state: Annotated[
        str | None, typer.Option("--state", help="open, paused, acknowledged or resolved")
    ] = None,
    closed: Annotated[bool, typer.Option("--closed", help="Include resolved cases.")] = False,
    limit: Annotated[int, typer.Option("--limit", min=1, max=10_000)] = 100,
) -> None:
    """Cases, newest first, from the Temporal visibility store."""
    settings = settings_or_exit()
    if state is not None and state not in ("open", "paused", "acknowledged", "resolved"):
        raise fail(f"--state: unknown state {state!r}: use open, paused, acknowledged or resolved")
    query = 'OpsKind = "escalation"'
    if state:
        query += f' AND OpsState = "{state}"'
    if not closed and state != "resolved":
        query += ' AND ExecutionStatus = "Running"'

    async def main() -> list[dict[str, Any]]:
        client = await connect(settings)
        rows = []
        async for execution in client.list_workflows(query, limit=limit):
            attributes = execution.typed_search_attributes
            rows.append(
                {
                    "ticket": attributes.get(sa.OPS_CASE_ID),
                    "customer": attributes.get(sa.OPS_CUSTOMER_ID),
                    "priority": attributes.get(sa.OPS_PRIORITY),
                    "stage": attributes.get(sa.OPS_STAGE),
                    "state": attributes.get(sa.OPS_STATE),
                    "level": attributes.get(sa.OPS_LEVEL),
                    "policy": attributes.get(sa.OPS_DEFINITION),
                    "opened": _when(execution.start_time),
                    "workflow_id": execution.id,
                }
            )
        return rows

    rows = run(main)
    show_rows(
        rows,
        ["ticket", "customer", "priority", "stage", "state", "level", "policy", "opened"],
        "cases",
        as_json,
    )
