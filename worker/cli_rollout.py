"""`opsflow rollout ...`: the change owner's command line for phased rollouts."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Annotated, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

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
    from rich.console import Group
    from temporalio.client import Client

    from client.rollout_read import PendingActivity
    from client.settings import Settings
    from definitions.models import RolloutSpec
    from workflows.rollout_model import RolloutStatus

app = typer.Typer(
    name="rollout",
    help="Phased change rollouts: start, watch, approve, pause, promote, abort, retry.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)

ChangeId = Annotated[str, typer.Argument(help="The change id, e.g. CHG-1042.")]
Approver = Annotated[str, typer.Option("--approver", help="Who approves (a group member).")]
ReasonOption = Annotated[str, typer.Option("--reason", help="Why, for the ledger.")]


def _link(settings: Settings, client: Client, change_id: str) -> str:
    from client.temporal import workflow_ui_url
    from workflows.rollout_model import rollout_workflow_id

    return workflow_ui_url(settings, client.namespace, rollout_workflow_id(change_id))


def _model(model: type[BaseModel], **fields: Any) -> BaseModel:
    from pydantic import ValidationError

    try:
        return model(**fields)
    except ValidationError as exc:
        error = exc.errors()[0]
        field = ".".join(str(part) for part in error["loc"]) or "value"
        raise fail(f"--{field.replace('_', '-')}: {error['msg']}") from None


def _local(moment: datetime, timezone: str | None) -> str:
    zone = timezone or "UTC"
    try:
        local = moment.astimezone(ZoneInfo(zone))
    except (ZoneInfoNotFoundError, ValueError):
        zone, local = "UTC", moment.astimezone(UTC)
    return f"{local:%a %d %b %H:%M} {zone}"


def status_line(status: RolloutStatus, timezone: str | None = None) -> str:
    """One line: state, phase and why it is where it is (`timezone`: the plan's windows')."""
    phase = status.current
    where = (
        f"phase {status.phase_index + 1} of {len(status.phases)} ({phase.name})" if phase else ""
    )
    paused = ""
    if status.paused:
        paused = f" (paused: {status.pause_reason})" if status.pause_reason else " (paused)"
    reason = ""
    if status.state == "held" and status.hold_reason:
        reason = f": {status.hold_reason}; promote, resume or abort"
    elif status.state == "waiting_window":
        when = _local(status.next_window, timezone) if status.next_window else "now"
        reason = f": the next change window opens {when}"
    elif status.state == "frozen" and status.frozen_reason:
        reason = f": {status.frozen_reason}"
    elif status.state == "rolling_back" and status.rollback_reason:
        reason = f": {status.rollback_reason}"
    elif status.ended_reason:
        reason = f": {status.ended_reason}"
    elif status.state == "baking" and phase is not None:
        now = datetime.now(UTC)
        left = max(phase.bake_total - phase.bake.spent(now), timedelta(0))
        ends = phase.bake.moment_reaching(phase.bake_total)
        until = f", ends {_local(ends, timezone)}" if ends else " (paused: the bake clock stops)"
        reason = f": {_span(left)} of {_span(phase.bake_total)} bake left{until}"
    elif status.state == "awaiting_approval" and status.approval_since is not None:
        reason = f": waiting for approval since {_local(status.approval_since, timezone)}"
    return f"rollout of {status.change.change_id}: {status.state}{paused}, {where}{reason}"


def _span(span: timedelta) -> str:
    minutes = int(span.total_seconds() // 60)
    days, rest = divmod(minutes, 24 * 60)
    return (f"{days}d " if days else "") + f"{rest // 60}h {rest % 60:02d}m"


async def _plan(settings: Settings, ref: str) -> RolloutSpec | None:
    """The pinned plan `ref` (NAME@VERSION) from the app database; None when unavailable."""
    from store.db import create_engine, session_factory
    from store.registry import get

    name, _, version = ref.partition("@")
    if not version.isdigit():
        return None
    engine = create_engine(settings.database)
    try:
        pinned = await get(session_factory(engine), name, int(version))
    except Exception:  # the status still shows, in UTC
        return None
    finally:
        await engine.dispose()
    return pinned.rollout if pinned.kind == "rollout" else None


async def _timezone(settings: Settings, client: Client, status: RolloutStatus) -> str | None:
    """The plan's timezone: asked of the rollout itself, else read from the registry."""
    from client.rollout_read import rollout_timezone

    return await _timezone_or_plan(
        settings, await rollout_timezone(client, status.change.change_id), status
    )


async def _timezone_or_plan(
    settings: Settings, asked: str | None, status: RolloutStatus
) -> str | None:
    """The timezone the rollout answered (`asked`), else its plan's in the registry."""
    if asked is not None:
        return asked
    spec = await _plan(settings, status.plan)
    return spec.windows.timezone if spec else None


def status_view(
    status: RolloutStatus,
    timezone: str | None = None,
    pending: list[PendingActivity] | None = None,
) -> Group:
    """The status; `pending`: the activities it waits on, shown when one fails or retries."""
    from rich.console import Group
    from rich.table import Table

    phases = Table(title=f"change {status.change.change_id} ({status.plan})", title_justify="left")
    for column in ("#", "phase", "percent", "customers", "applied", "verdict", "checks"):
        phases.add_column(column, overflow="fold")
    for number, phase in enumerate(status.phases, start=1):
        checks = "; ".join(
            f"{c.metric} {c.verdict}"
            + (f" ({c.readings[-1].value:.3g})" if c.readings and c.readings[-1].value else "")
            for c in phase.checks
        )
        marker = "▶ " if number - 1 == status.phase_index and not status.finished else ""
        size = phase.exposed_total if phase.exposed_total is not None else phase.cohort_size
        phases.add_row(
            f"{marker}{number}",
            phase.name,
            f"{phase.percent:g}%",
            str(size),
            phase.applied_at.strftime("%Y-%m-%d %H:%M") if phase.applied_at else "",
            phase.verdict + (" (reverted)" if phase.reverted else ""),
            checks,
        )
    approvals = ", ".join(f"{a.approver} ({a.stage})" for a in status.approvals) or "none"
    failing = [f"[red]retrying[/red] {p.line()}" for p in pending or [] if p.failing]
    return Group(
        status_line(status, timezone),
        *failing,
        f"owner {status.change.owner}, risk {status.risk}, attempt {status.attempt}, "
        f"approvals: {approvals}",
        phases,
    )


@app.command()
def start(
    plan: Annotated[str, typer.Argument(help="Rollout plan: NAME or NAME@VERSION.")],
    change: Annotated[str, typer.Option("--change", help="The change id.")],
    owner: Annotated[str, typer.Option("--owner", help="Who owns the change.")],
    reason: Annotated[str, typer.Option("--reason", help="Why the change is made.")],
    ticket: Annotated[str | None, typer.Option("--ticket", help="Linked ticket.")] = None,
    outside_windows: Annotated[
        bool,
        typer.Option(
            "--outside-windows",
            help="Let phases start outside the plan's change windows (not in a blackout); "
            "the approvers approve that too.",
        ),
    ] = False,
    as_json: JsonOption = False,
) -> None:
    """Start the rollout of a change under a deployed plan (`--owner` is who starts it)."""
    from client.rollouts import start_rollout
    from client.temporal import connect
    from store.db import create_engine, session_factory
    from store.registry import get, latest
    from workflows.rollout_model import ChangeRequest

    settings = settings_or_exit()
    request = _model(
        ChangeRequest,
        change_id=change,
        owner=owner,
        reason=reason,
        ticket_id=ticket,
        outside_windows=outside_windows,
    )
    assert isinstance(request, ChangeRequest)

    async def main() -> None:
        if not owner.strip():
            raise OpsflowError("--owner: say who owns the change")
        engine = create_engine(settings.database)
        try:
            name, _, version = plan.partition("@")
            sessions = session_factory(engine)
            if version and not version.isdigit():
                raise OpsflowError(f"bad plan version {version!r}: use NAME@NUMBER")
            pinned = await (
                get(sessions, name, int(version)) if version else latest(sessions, name)
            )
        finally:
            await engine.dispose()
        client = await connect(settings)
        started = await start_rollout(client, settings.task_queue, request, pinned)
        if as_json:
            print_json(
                {
                    "change": change,
                    "started": started.started,
                    "plan": started.plan,
                    "not_applied": [
                        "--" + field.replace("_", "-") for field in started.not_applied(request)
                    ],
                    "url": _link(settings, client, change),
                }
            )
            return
        if started.started:
            console.print(f"rollout of {change} started under {pinned.ref}", highlight=False)
        else:
            other = f" (not {pinned.ref})" if started.plan != pinned.ref else ""
            console.print(
                f"rollout of {change} is already running under {started.plan}{other}; "
                "nothing new started",
                highlight=False,
            )
            if started.running is not None:
                for field in started.not_applied(request):
                    option = "--" + field.replace("_", "-")
                    mine = getattr(started.running, field)
                    console.print(
                        f"  {option} not applied: the running rollout keeps {mine!r}",
                        highlight=False,
                    )
            else:
                console.print(
                    "  its owner and reason could not be read; the given ones were not applied",
                    highlight=False,
                )
        console.print(f"  {_link(settings, client, change)}", highlight=False)

    run(main)


@app.command()
def status(
    change_id: ChangeId,
    as_json: JsonOption = False,
    watch: Annotated[bool, typer.Option("--watch", help="Refresh every 2 seconds.")] = False,
) -> None:
    """Phases, cohorts, checks and verdicts of a rollout."""
    import asyncio

    from client.rollout_read import pending_activities, rollout_state, rollout_timezone
    from client.temporal import connect

    settings = settings_or_exit()

    async def main() -> None:
        client = await connect(settings)
        if as_json:
            current, pending = await asyncio.gather(
                rollout_state(client, change_id), pending_activities(client, change_id)
            )
            shown = current.model_dump(mode="json")
            shown["pending_activities"] = [p.as_json() for p in pending]
            print_json(shown)
            return
        # The three round trips at once.
        current, pending, asked = await asyncio.gather(
            rollout_state(client, change_id),
            pending_activities(client, change_id),
            rollout_timezone(client, change_id),
        )
        timezone = await _timezone_or_plan(settings, asked, current)
        if not watch:
            console.print(status_view(current, timezone, pending))
            console.print(f"  {_link(settings, client, change_id)}", highlight=False)
            return
        console.print(f"  {_link(settings, client, change_id)}", highlight=False)
        from rich.live import Live  # only --watch refreshes

        view = status_view(current, timezone, pending)
        with Live(view, console=console, refresh_per_second=1) as live:
            while not current.finished:
                await asyncio.sleep(2)
                current = await rollout_state(client, change_id)
                pending = await pending_activities(client, change_id)
                live.update(status_view(current, timezone, pending))

    run(main)


def _command(change_id: str, update: str, argument: BaseModel | None, as_json: bool) -> None:
    from client.rollouts import command_rollout, retry_rollout
    from client.temporal import connect

    settings = settings_or_exit()

    async def main() -> None:
        client = await connect(settings)
        if update == "retry":  # an ended change (e.g. rolled back) gets a new run
            retried = await retry_rollout(client, settings.task_queue, change_id, argument)
            result = retried.status
        else:
            result = await command_rollout(client, change_id, update, argument)
        if as_json:
            print_json(
                {
                    "change": change_id,
                    "state": result.model_dump(mode="json"),
                    "url": _link(settings, client, change_id),
                }
            )
            return
        console.print(
            status_line(result, await _timezone(settings, client, result)), highlight=False
        )
        console.print(f"  {_link(settings, client, change_id)}", highlight=False)

    run(main)


def _who(option: str, value: str) -> str:
    """Who gives the command, stripped; blank is refused like a missing option would be."""
    if not value.strip():
        raise fail(f"{option}: say who does it (a name)")
    return value.strip()


MOVE_ON_WAIT = 5.0
"""Seconds `approve` waits for the rollout to act on the approval that completed a stage."""


async def approval_outcome(
    client: Client,
    change_id: str,
    result: RolloutStatus,
    required: int | None,
    timezone: str | None = None,
    wait: float = MOVE_ON_WAIT,
) -> str:
    """What an approval did, in one line: how many of how many, and where the rollout went.

    `result` is the state the update returned (before the workflow acted on it); when the
    approval completed its stage, wait up to `wait` seconds for the rollout to move on."""
    import asyncio

    from client.rollout_read import rollout_state

    stage = result.approvals[-1].stage if result.approvals else "start"
    given = sum(1 for a in result.approvals if a.stage == stage)
    if stage == "start":
        needed: int | None = result.approvals_needed
    else:
        needed = 1 if result.risk == "emergency" else required
    count = f"{given} of {needed}" if needed else str(given)
    what = "the start" if stage == "start" else f"the gate after phase {stage}"
    if needed is None or given < needed:
        missing = f"; {needed - given} more needed" if needed else ""
        return f"approved {what} ({count}){missing}"
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait
    current = result
    while current.state == "awaiting_approval" and current.approval_for in (stage, None):
        if loop.time() >= deadline:
            return f"approved {what} ({count}); the rollout continues"
        await asyncio.sleep(0.2)
        current = await rollout_state(client, change_id)
    return f"approved {what} ({count}); {status_line(current, timezone)}"


@app.command()
def approve(
    change_id: ChangeId, approver: Approver, reason: ReasonOption = "", as_json: JsonOption = False
) -> None:
    """Approve the start of a rollout or a phase gate."""
    from client.rollouts import command_rollout, rollout_state
    from client.temporal import connect
    from workflows.rollout_model import Decision

    settings = settings_or_exit()
    decision = _model(Decision, approver=_who("--approver", approver), reason=reason)

    async def main() -> None:
        client = await connect(settings)
        result = await command_rollout(client, change_id, "approve", decision)
        spec = await _plan(settings, result.plan)
        timezone = spec.windows.timezone if spec else None
        required = spec.approvals.required if spec else None
        line = await approval_outcome(client, change_id, result, required, timezone)
        if as_json:
            current = await rollout_state(client, change_id)
            print_json(
                {
                    "change": change_id,
                    "message": line,
                    "state": current.model_dump(mode="json"),
                    "url": _link(settings, client, change_id),
                }
            )
            return
        console.print(line, highlight=False)
        console.print(f"  {_link(settings, client, change_id)}", highlight=False)

    run(main)


@app.command()
def reject(
    change_id: ChangeId, approver: Approver, reason: ReasonOption = "", as_json: JsonOption = False
) -> None:
    """Reject: before the start it ends the rollout; at a gate it rolls back."""
    from workflows.rollout_model import Decision

    decision = _model(Decision, approver=_who("--approver", approver), reason=reason)
    _command(change_id, "reject", decision, as_json)


@app.command()
def pause(
    change_id: ChangeId, by: By, reason: ReasonOption = "", as_json: JsonOption = False
) -> None:
    """Pause: no bake, window or deadline clock runs until resume."""
    from workflows.rollout_model import Reason

    _command(change_id, "pause", _model(Reason, reason=reason, by=_who("--by", by)), as_json)


@app.command()
def resume(
    change_id: ChangeId, by: By, reason: ReasonOption = "", as_json: JsonOption = False
) -> None:
    """Resume a paused rollout, or keep baking a held one."""
    from workflows.rollout_model import Reason

    _command(change_id, "resume", _model(Reason, reason=reason, by=_who("--by", by)), as_json)


@app.command()
def promote(
    change_id: ChangeId,
    by: By,
    full: Annotated[bool, typer.Option("--full", help="Skip to 100% (needs --approver).")] = False,
    approver: Annotated[str | None, typer.Option("--approver", help="For --full.")] = None,
    reason: ReasonOption = "",
    as_json: JsonOption = False,
) -> None:
    """End the current bake now (or roll a frozen rollout forward); --full skips to 100%."""
    from workflows.rollout_model import Decision, Reason

    who = _who("--by", by)
    if not full:
        _command(change_id, "promote", _model(Reason, reason=reason, by=who), as_json)
        return
    if not approver:
        raise fail("--full needs --approver: skipping to 100% must be approved")
    decision = _model(Decision, approver=_who("--approver", approver), reason=reason)
    _command(change_id, "promote_full", decision, as_json)


@app.command()
def abort(
    change_id: ChangeId, by: By, reason: ReasonOption = "", as_json: JsonOption = False
) -> None:
    """Abort and roll back (a frozen rollout: accept it as it stands)."""
    from workflows.rollout_model import Reason

    _command(change_id, "abort", _model(Reason, reason=reason, by=_who("--by", by)), as_json)


@app.command()
def retry(
    change_id: ChangeId, by: By, reason: ReasonOption = "", as_json: JsonOption = False
) -> None:
    """Run a rolled-back or aborted change again: attempt N+1, same cohorts, fresh approvals."""
    from workflows.rollout_model import Reason

    _command(change_id, "retry", _model(Reason, reason=reason, by=_who("--by", by)), as_json)


@app.command("list")
def list_command(as_json: JsonOption = False) -> None:
    """Rollouts, newest first."""
    from client.rollout_read import list_rollouts
    from client.temporal import connect

    settings = settings_or_exit()

    async def main() -> list[dict[str, Any]]:
        client = await connect(settings)
        rows = await list_rollouts(client)
        for row in rows:
            row["ui"] = _link(settings, client, str(row["change"]))
        return rows

    rows = run(main)
    show_rows(
        rows, ("change", "owner", "state", "stage", "plan", "status", "ui"), "rollouts", as_json
    )
