"""`opsflow case ...`: open, steer and inspect escalation cases."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Annotated, Any
from zoneinfo import ZoneInfo

import typer

from definitions.errors import OpsflowError
from worker.cli_support import (
    By,
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
    from temporalio.client import Client

    from client.case_read import CaseView
    from client.settings import Settings
    from definitions.calendar import BusinessCalendar
    from store.ledger_read import Step
    from workflows.escalation_model import EscalationStatus as CaseStatus

app = typer.Typer(
    name="case",
    help="Open, steer and inspect escalation cases (workflow id case-<ticket>).",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)

Ticket = Annotated[str, typer.Argument(help="The ticket id, e.g. T-1042.")]
CASE_STATES = ("open", "paused", "acknowledged", "stuck", "resolved")
"""The states a case's own workflow reports (search attribute OpsState); `stuck`: an action
failed and waits for a person."""
# Written this much after it fell due, a step says so (a worker was down, a timer caught up).
LATE_WRITE = timedelta(minutes=1)


def _link(settings: Settings, client: Client, ticket: str) -> str:
    from client.temporal import workflow_ui_url
    from workflows.escalation_model import case_workflow_id

    return workflow_ui_url(settings, client.namespace, case_workflow_id(ticket))


def _level(status: CaseStatus) -> int:
    return status.visits[-1].level if status.visits and not status.visits[-1].ended_at else 0


def _status_line(status: CaseStatus) -> str:
    return (
        f"case {status.case.ticket_id}: {status.state}, {status.case.priority}, "
        f"stage {status.case.stage}, level {_level(status)}, policy {status.definition}"
    )


def _view_line(view: CaseView) -> str:
    """The one line of `case show` for a case read from its search attributes."""
    known = view.last_known
    reason = f" ({view.reason})" if view.reason else ""
    state = view.state.replace("_", " ")
    return (
        f"case {view.ticket_id}: {state}{reason}, {known.get('priority') or '?'}, "
        f"stage {known.get('stage') or '?'}, level {known.get('level') or 0}, "
        f"policy {known.get('policy') or '?'}"
    )


def _command(ticket: str, update: str, argument: BaseModel | None, as_json: bool) -> None:
    from client.case_commands import command_case
    from client.temporal import connect

    settings = settings_or_exit()

    async def main() -> tuple[CaseStatus, str]:
        client = await connect(settings)
        status = await command_case(client, ticket, update, argument)
        return status, _link(settings, client, ticket)

    status, link = run(main)
    if as_json:
        print_json({"ticket": ticket, "state": status.model_dump(mode="json"), "url": link})
        return
    console.print(_status_line(status), highlight=False)
    console.print(f"  {link}", highlight=False)


def _model(model: type[BaseModel], **fields: Any) -> BaseModel:
    """Build a command; a bad value is one line naming the field."""
    from pydantic import ValidationError

    try:
        return model(**fields)
    except ValidationError as exc:
        error = exc.errors()[0]
        field = ".".join(str(part) for part in error["loc"])
        message = str(error["msg"]).removeprefix("Value error, ")
        raise fail(f"--{field.replace('_', '-')}: {message}" if field else message) from None


def _who(by: str) -> str:
    """`--by`, stripped; blank is refused like a missing option would be."""
    if not by.strip():
        raise fail("--by: say who does it (a name or an agent id)")
    return by.strip()


@app.command("open")
def open_command(
    ticket: Annotated[str, typer.Option("--ticket", help="Ticket id, e.g. T-1042.")],
    customer: Annotated[str, typer.Option("--customer", help="Customer id, e.g. C-0017.")],
    by: By,
    priority: Annotated[str, typer.Option("--priority", help="p1 (most urgent) .. p4.")] = "p3",
    stage: Annotated[str, typer.Option("--stage", help="Journey stage of the case.")] = "support",
    channel: Annotated[str, typer.Option("--channel", help="Where it came in.")] = "email",
    subject: Annotated[str, typer.Option("--subject", help="The ticket's subject.")] = "",
    policy: Annotated[
        str | None,
        typer.Option("--policy", help="NAME or NAME@VERSION; default: the first that matches."),
    ] = None,
    unknown_customer: Annotated[
        bool,
        typer.Option(
            "--unknown-customer",
            help="Open it for a customer the CRM does not know: no profile, messages use "
            "the customer's id where the name would go.",
        ),
    ] = False,
    as_json: JsonOption = False,
) -> None:
    """Open a case: start its escalation workflow (an open or resolved ticket starts nothing;
    one whose workflow failed or was terminated starts afresh)."""
    from activities.backends import Backends
    from activities.settings import load_adapter_settings
    from client.case_open import check_customer, choose_policy, open_case
    from client.case_read import parse_policy_ref
    from client.temporal import connect
    from store.db import create_engine, session_factory
    from workflows.escalation_model import CaseInfo

    settings = settings_or_exit()
    who = _who(by)
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

    async def main() -> tuple[str, dict[str, Any]]:
        engine = create_engine(settings.database)
        try:
            sessions = session_factory(engine)
            backends = Backends.from_settings(load_adapter_settings(), sessions)
            profile = await check_customer(
                backends.crm, case.customer_id, allow_unknown=unknown_customer
            )
            pinned = await choose_policy(sessions, case, profile, policy)
            client = await connect(settings)
            # With the sandbox ticketing backend the case's ticket is created there if missing.
            opened = await open_case(
                client, settings.task_queue, case, pinned, ticketing=backends.ticketing, by=who
            )
        finally:
            await engine.dispose()
        link = _link(settings, client, ticket)
        shown = opened.existing or opened.previous
        return link, {
            "ticket": ticket,
            "started": opened.started,
            "policy": opened.policy,
            "message": opened.message(),
            "existing": shown.as_json() if shown else None,
            "url": link,
        }

    link, result = run(main)
    if as_json:
        print_json(result)
        return
    console.print(result["message"], highlight=False)
    console.print(f"  {link}", highlight=False)


@app.command("ack")
def acknowledge(ticket: Ticket, by: By, as_json: JsonOption = False) -> None:
    """Acknowledge a case: escalation stops and the first response counts as given."""
    from activities.escalation_contracts import Acknowledge

    _command(ticket, "acknowledge", _model(Acknowledge, by=_who(by)), as_json)


@app.command()
def reply(
    ticket: Ticket,
    by: By,
    internal: Annotated[
        bool, typer.Option("--internal", help="An internal note: no SLA metric counts it.")
    ] = False,
    as_json: JsonOption = False,
) -> None:
    """Record an agent's reply to the requester: the first response, the next reply and an
    update, as a public comment in the ticketing system would."""
    from workflows.escalation_model import AgentReply

    _command(ticket, "agent_reply", _model(AgentReply, by=_who(by), public=not internal), as_json)


@app.command("requester-reply")
def requester_reply(
    ticket: Ticket,
    by: Annotated[
        str,
        typer.Option(
            "--by", help="The requester who wrote (recorded in the ledger).", show_default=False
        ),
    ],
    as_json: JsonOption = False,
) -> None:
    """Record a message from the requester: a next-reply target starts if none waits."""
    from workflows.escalation_model import RequesterReply

    _command(ticket, "requester_reply", _model(RequesterReply, by=_who(by)), as_json)


@app.command()
def pause(
    ticket: Ticket,
    by: By,
    reason: Annotated[str, typer.Option("--reason")] = "waiting on the customer",
    as_json: JsonOption = False,
) -> None:
    """Stop the SLA clocks while the case waits on the customer."""
    from workflows.escalation_model import Pause

    _command(ticket, "pause", _model(Pause, reason=reason, by=_who(by)), as_json)


@app.command()
def resume(ticket: Ticket, by: By, as_json: JsonOption = False) -> None:
    """Restart the SLA clocks with the budget that was left."""
    from workflows.escalation_model import Resume

    _command(ticket, "resume", _model(Resume, by=_who(by)), as_json)


@app.command()
def priority(
    ticket: Ticket,
    to: Annotated[str, typer.Argument(help="p1 .. p4")],
    by: By,
    as_json: JsonOption = False,
) -> None:
    """Change the priority; the clocks use the new SLA and keep the time already spent."""
    from workflows.escalation_model import SetPriority

    _command(ticket, "set_priority", _model(SetPriority, priority=to, by=_who(by)), as_json)


@app.command()
def stage(
    ticket: Ticket,
    to: Annotated[str, typer.Argument(help="Journey stage")],
    by: By,
    as_json: JsonOption = False,
) -> None:
    """Change the journey stage; the clocks use that stage's SLA."""
    from workflows.escalation_model import SetStage

    _command(ticket, "set_stage", _model(SetStage, stage=to, by=_who(by)), as_json)


@app.command()
def reassign(
    ticket: Ticket,
    by: By,
    queue: Annotated[str | None, typer.Option("--queue")] = None,
    agent: Annotated[str | None, typer.Option("--agent")] = None,
    as_json: JsonOption = False,
) -> None:
    """Move the case to a queue or an agent."""
    from workflows.escalation_model import Reassign

    if (queue is None) == (agent is None):
        raise fail("give exactly one of --queue or --agent")
    command = _model(Reassign, queue=queue, agent=agent, by=_who(by))
    _command(ticket, "reassign", command, as_json)


@app.command()
def resolve(ticket: Ticket, by: By, as_json: JsonOption = False) -> None:
    """Resolve the case; the workflow completes with its SLA summary."""
    from activities.escalation_contracts import Resolve

    _command(ticket, "resolve", _model(Resolve, by=_who(by)), as_json)


@app.command()
def migrate(
    to: Annotated[
        str,
        typer.Option(
            "--to", metavar="NAME@VERSION", help="The policy version to move to, e.g. support@4."
        ),
    ],
    by: By,
    ticket: Annotated[
        str | None, typer.Option("--case", help="One case, by its ticket id (T-1042).")
    ] = None,
    query: Annotated[
        str | None,
        typer.Option(
            "--query",
            help="Every running case a Temporal visibility query finds, e.g. "
            "'OpsDefinition=\"support@3\"'.",
        ),
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Show the old and new deadlines; change nothing.")
    ] = False,
    rate: Annotated[
        float,
        typer.Option("--rate", min=0.1, max=100.0, help="At most this many cases per second."),
    ] = 5.0,
    as_json: JsonOption = False,
) -> None:
    """Move running cases to another policy version: each SLA clock takes the new targets
    and calendar and keeps the time spent and any pause; shows each clock's old and new due
    moment. Cases already on the version are skipped, so a migration can be run again."""
    from client.case_migrate import (
        CaseMigration,
        PolicyVersions,
        cases_matching,
        migrate_case,
        migrate_cases,
        migration_target,
    )
    from client.temporal import connect
    from store.db import create_engine, session_factory

    settings = settings_or_exit()
    who = _who(by)
    if (ticket is None) == (query is None):
        raise fail("give exactly one of --case or --query")
    done: list[CaseMigration] = []
    links: list[str] = []

    def shown(result: CaseMigration, link: str) -> None:
        done.append(result)
        links.append(link)
        if as_json:
            return
        if result.outcome == "skipped":
            line = f"skipped ({result.reason})"
        elif result.outcome == "refused":
            stays = f", stays on {result.source}" if result.source else ""
            line = f"refused{stays} ({result.reason})"
        else:
            line = f"{result.source} → {result.target}: {result.outcome}"
        console.print(f"case {result.ticket_id}: {line}", highlight=False, markup=False)
        for clock in result.clocks:
            budget = f"{_duration(clock.old_budget)} → {_duration(clock.new_budget)}"
            old_due = _when(clock.old_due, result.old_timezone) or clock.state
            new_due = _when(clock.new_due, result.new_timezone) or clock.state
            console.print(
                f"  {clock.name.replace('_', ' ')}: {clock.state}, {_duration(clock.spent)} "
                f"spent; budget {budget}; due {old_due} → {new_due}",
                highlight=False,
                markup=False,
            )
        if result.outcome != "skipped":
            console.print(f"  {link}", highlight=False, markup=False)

    async def main() -> str:
        engine = create_engine(settings.database)
        try:
            sessions = session_factory(engine)
            try:
                target = await migration_target(sessions, to)
            except OpsflowError as exc:
                raise OpsflowError(f"--to: {exc}") from None
            versions = PolicyVersions(sessions)
            client = await connect(settings)
            if ticket is not None:
                result = await migrate_case(
                    client, versions, ticket, target, by=who, dry_run=dry_run
                )
                if result.outcome == "refused":
                    stays = f" stays on {result.source}" if result.source else " not migrated"
                    raise OpsflowError(f"case {ticket}{stays}: {result.reason}")
                shown(result, _link(settings, client, ticket))
                return target.ref
            assert query is not None
            tickets = await cases_matching(client, query)
            async for result in migrate_cases(
                client, versions, tickets, target, by=who, dry_run=dry_run, rate=rate
            ):
                shown(result, _link(settings, client, result.ticket_id))
            return target.ref
        finally:
            await engine.dispose()

    target_ref = run(main)
    counts: dict[str, int] = {}
    for result in done:
        counts[result.outcome] = counts.get(result.outcome, 0) + 1
    if as_json:
        print_json(
            {
                "to": target_ref,
                "dry_run": dry_run,
                "cases": [
                    {**result.as_json(), "url": link}
                    for result, link in zip(done, links, strict=True)
                ],
                "counts": counts,
            }
        )
    elif query is not None:
        order = ("migrated", "would migrate", "skipped", "refused")
        tally = ", ".join(f"{counts[o]} {o}" for o in order if o in counts) or "no running case"
        note = "; dry run, nothing changed" if dry_run else ""
        console.print(f"{tally} (query {query}){note}", highlight=False, markup=False)
    refused = counts.get("refused", 0)
    if refused:
        then = "nothing changed" if dry_run else "the others are done"
        raise fail(f"{refused} of {len(done)} cases refused (each says why); {then}")


def _stamped(entry: Step) -> str:
    """When the step happened; a step caught up after an outage also says when it was written."""
    if entry.written_at - entry.at < LATE_WRITE:
        return _when(entry.at)
    return f"{_when(entry.at)} (written {_when(entry.written_at)})"


@app.command()
def show(ticket: Ticket, as_json: JsonOption = False) -> None:
    """The case's state and its timeline from the ledger: live when a worker answers within
    a second, else the state it last recorded; a failed or terminated case says why."""
    from client.case_read import read_case
    from client.temporal import connect
    from store.ledger_read import timeline as ledger_timeline
    from workflows.escalation_model import case_workflow_id

    settings = settings_or_exit()

    async def main() -> tuple[CaseView, list[Step], BusinessCalendar | None, str]:
        client = await connect(settings)
        view = await read_case(client, ticket)
        calendar = await _calendar_of(client, settings, ticket, view.live)
        # A blocking read, briefly: here so that a database error is one line, as in `run`.
        timeline = ledger_timeline(
            settings.embedded_database or settings.database, case_workflow_id(ticket)
        )
        return view, timeline, calendar, _link(settings, client, ticket)

    view, timeline, calendar, link = run(main)
    status = view.live
    if as_json:
        print_json(
            {
                "case": view.as_json(),
                "state": status.model_dump(mode="json") if status else None,
                "clocks": _time_left(status, calendar) if status and calendar else None,
                "timeline": [
                    {
                        "at": e.at.isoformat(),
                        "written_at": e.written_at.isoformat(),
                        "step": e.step,
                        "detail": e.detail,
                    }
                    for e in timeline
                ],
                "url": link,
            }
        )
        return
    from rich.panel import Panel
    from rich.table import Table

    steps = Table(title="Timeline", title_justify="left")
    for column in ("at", "step", "detail"):
        steps.add_column(column, overflow="fold")
    for entry in timeline:
        steps.add_row(_stamped(entry), entry.step, _short(entry.detail))
    if status is None:
        console.print(Panel(_view_line(view) + f"\n{link}", title=f"case {ticket}"))
        console.print(steps)
        return
    now = datetime.now(UTC)
    zone = calendar.timezone if calendar else None
    business = f" ({zone} business time)" if zone else ""
    clocks = Table(title=f"SLA clocks{business}", title_justify="left")
    for column in ("sla", "budget", "state", "spent", "left", "runs out at", "breached at"):
        clocks.add_column(column)
    for clock in status.clocks.values():
        measured = clock.active and calendar is not None
        left = clock.remaining(now, calendar) if measured and calendar else None
        spent = clock.spent(now, calendar) if calendar else clock.spent_before
        target = f" #{clock.cycle}" if clock.cycle else ""
        clocks.add_row(
            clock.name + target,
            _duration(clock.budget),
            "waiting"
            if clock.waiting
            else _clock_state(clock.met_at, clock.breached_at, clock.running),
            "" if clock.waiting else _duration(spent),
            _duration(left) if left is not None else "",
            _when(clock.due, zone),
            _when(clock.breached_at, zone),
        )
    failed = "".join(f"\nfailed at {f.step} ({_when(f.at)}): {f.error}" for f in status.failures)
    console.print(Panel(_status_line(status) + failed + f"\n{link}", title=f"case {ticket}"))
    console.print(clocks)
    console.print(steps)


async def _calendar_of(
    client: Client,
    settings: Settings,
    ticket: str,
    status: CaseStatus | None,
) -> BusinessCalendar | None:
    """The calendar the case's pinned policy gives its priority: remaining time is business
    time, shown in the calendar's timezone. Asked of the case itself (its pinned policy);
    from the registry when its worker predates that query; None when the version is not
    in this registry either."""
    from temporalio.client import WorkflowQueryFailedError, WorkflowQueryRejectedError
    from temporalio.service import RPCError

    from client.case_read import CALENDAR_QUERY, QUERY_TIMEOUT, parse_policy_ref
    from definitions.calendar import BusinessCalendar
    from workflows.escalation_model import case_workflow_id

    if status is None:
        return None
    try:
        calendar: BusinessCalendar = await client.get_workflow_handle(
            case_workflow_id(ticket)
        ).query(CALENDAR_QUERY, result_type=BusinessCalendar, rpc_timeout=QUERY_TIMEOUT)
        return calendar
    except (RPCError, WorkflowQueryFailedError, WorkflowQueryRejectedError):
        pass
    # The registry's pinned version, if it has it (the ORM and engine only on this path).
    from store.db import create_engine, session_factory
    from store.registry import get, latest

    name, version = parse_policy_ref(status.definition)
    engine = create_engine(settings.database)
    sessions = session_factory(engine)
    try:
        pinned = await (get(sessions, name, version) if version else latest(sessions, name))
    except OpsflowError:
        return None
    finally:
        await engine.dispose()
    return pinned.escalation.calendar_for(status.case.priority)


def _time_left(status: CaseStatus, calendar: BusinessCalendar) -> dict[str, dict[str, Any]]:
    """Per clock: business seconds left now (negative: overdue) and the moments in the
    calendar's timezone."""
    now = datetime.now(UTC)

    def local(moment: datetime | None) -> str | None:
        return moment.astimezone(ZoneInfo(calendar.timezone)).isoformat() if moment else None

    return {
        name: {
            "status": clock.status or clock.shown_status(),
            "target": clock.cycle or None,
            "budget_seconds": int(clock.budget.total_seconds()),
            "spent_seconds": int(clock.spent(now, calendar).total_seconds()),
            "remaining_seconds": None
            if not clock.active
            else int(clock.remaining(now, calendar).total_seconds()),
            "due": local(clock.due),
            "breached_at": local(clock.breached_at),
            "timezone": calendar.timezone,
        }
        for name, clock in status.clocks.items()
    }


def _clock_state(met_at: datetime | None, breached_at: datetime | None, running: bool) -> str:
    if met_at is not None:
        return "met late" if breached_at is not None else "met"
    if breached_at is not None:
        return "breached"
    return "running" if running else "paused"


def _when(moment: datetime | None, timezone: str | None = None) -> str:
    """A moment in `timezone` (the calendar's, for SLA moments), else in the local one."""
    if moment is None:
        return ""
    local = moment.astimezone(ZoneInfo(timezone)) if timezone else moment.astimezone()
    return local.strftime("%Y-%m-%d %H:%M:%S %Z")


def _duration(span: timedelta) -> str:
    """`3h 05m` of business time; `overdue 12m` once the budget is spent."""
    minutes = int(abs(span).total_seconds() // 60)
    days, rest = divmod(minutes, 24 * 60)
    text = (f"{days}d " if days else "") + f"{rest // 60}h {rest % 60:02d}m"
    return f"overdue {text}" if span < timedelta(0) else text


def _short(detail: dict[str, Any]) -> str:
    text = ", ".join(f"{k}={v}" for k, v in detail.items() if k != "event")
    return text[:160]


@app.command("list")
def list_cases(
    as_json: JsonOption = False,
    state: Annotated[
        str | None,
        typer.Option(
            "--state",
            help="open, paused, acknowledged, resolved, failed, terminated, timed_out, "
            "canceled or failing",
        ),
    ] = None,
    closed: Annotated[bool, typer.Option("--closed", help="Include resolved cases.")] = False,
    limit: Annotated[int, typer.Option("--limit", min=1, max=10_000)] = 100,
) -> None:
    """Cases, newest first, from the Temporal visibility store. Cases whose workflow failed,
    was terminated or keeps failing are listed as such, with the reason."""
    from temporalio.client import WorkflowExecutionStatus

    from activities import search_attributes as sa
    from client.case_read import BROKEN_STATES, CLOSED_STATES
    from client.temporal import connect

    settings = settings_or_exit()
    known = (*CASE_STATES, *sorted(BROKEN_STATES))
    if state is not None and state not in known:
        raise fail(f"--state: unknown state {state!r}: use {', '.join(known)}")
    query = 'OpsKind = "escalation" AND ExecutionStatus != "ContinuedAsNew"'
    if state in CASE_STATES:
        query += f' AND OpsState = "{state}"'
    if state == "resolved":
        query += ' AND ExecutionStatus = "Completed"'
    elif state in CASE_STATES or state == "failing":
        query += ' AND ExecutionStatus = "Running"'
    elif not closed:
        query += ' AND ExecutionStatus != "Completed"'

    async def main() -> list[dict[str, Any]]:
        client = await connect(settings)
        rows: list[dict[str, Any]] = []
        seen: set[str] = set()
        async for execution in client.list_workflows(query, limit=limit):
            if execution.id in seen:  # an older run of a case opened again
                continue
            seen.add(execution.id)
            attributes = execution.typed_search_attributes
            rows.append(
                {
                    "ticket": attributes.get(sa.OPS_CASE_ID),
                    "customer": attributes.get(sa.OPS_CUSTOMER_ID),
                    "priority": attributes.get(sa.OPS_PRIORITY),
                    "stage": attributes.get(sa.OPS_STAGE),
                    "state": CLOSED_STATES.get(execution.status)  # type: ignore[arg-type]
                    or attributes.get(sa.OPS_STATE),
                    "level": attributes.get(sa.OPS_LEVEL),
                    "policy": attributes.get(sa.OPS_DEFINITION),
                    "opened": _when(execution.start_time),
                    "reason": None,
                    "execution": (execution.status or WorkflowExecutionStatus.RUNNING).name.lower(),
                    "workflow_id": execution.id,
                    "run_id": execution.run_id,
                }
            )
        await _explain(client, rows)
        return [row for row in rows if state is None or row["state"] == state]

    rows = run(main)
    show_rows(
        rows,
        ["ticket", "customer", "priority", "stage", "state", "level", "policy", "opened", "reason"],
        "cases",
        as_json,
    )


async def _explain(client: Client, rows: list[dict[str, Any]]) -> None:
    """Fill in why a case's workflow ended (failed, terminated) and mark running cases whose
    workflow task keeps failing; a few requests at a time."""
    import asyncio

    from client.case_read import BROKEN_STATES, close_reason, read_case

    gate = asyncio.Semaphore(16)

    async def one(row: dict[str, Any]) -> None:
        async with gate:
            if row["execution"] == "running":
                view = await read_case(client, str(row["ticket"]), query=False)
                if view.state == "failing":
                    row["state"], row["reason"] = view.state, view.reason
            elif row["state"] in BROKEN_STATES:
                row["reason"] = await close_reason(client, row["workflow_id"], row["run_id"])

    await asyncio.gather(*(one(row) for row in rows))
