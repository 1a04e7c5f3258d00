"""`opsflow rollout ...`: the change owner's command line for phased rollouts."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

import typer
from pydantic import BaseModel, ValidationError
from rich.console import Group
from rich.live import Live
from rich.table import Table
from temporalio.client import Client

from definitions.registry import get, latest
from store.db import create_engine, session_factory
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
from worker.rollouts import (
    command_rollout,
    list_rollouts,
    rollout_state,
    start_rollout,
)
from worker.settings import Settings
from worker.temporal import connect, workflow_ui_url
from workflows.rollout_model import (
    ChangeRequest,
    Decision,
    Reason,
    RolloutStatus,
    rollout_workflow_id,
)

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
    return workflow_ui_url(settings, client.namespace, rollout_workflow_id(change_id))


def _model(model: type[BaseModel], **fields: Any) -> BaseModel:
    try:
        return model(**fields)
    except ValidationError as exc:
        error = exc.errors()[0]
        field = ".".join(str(part) for part in error["loc"]) or "value"
        raise fail(f"--{field.replace('_', '-')}: {error['msg']}") from None


def status_line(status: RolloutStatus) -> str:
    phase = status.current
    where = (
        f"phase {status.phase_index + 1} of {len(status.phases)} ({phase.name})" if phase else ""
    )
    paused = " (paused)" if status.paused else ""
    reason = f": {status.ended_reason}" if status.ended_reason else ""
    return f"rollout of {status.change.change_id}: {status.state}{paused}, {where}{reason}"


def status_view(status: RolloutStatus) -> Group:
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
    return Group(
        status_line(status),
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
) -> None:
    """Start the rollout of a change under a deployed plan."""
    settings = settings_or_exit()
    request = _model(ChangeRequest, change_id=change, owner=owner, reason=reason, ticket_id=ticket)
    assert isinstance(request, ChangeRequest)

    async def main() -> None:
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
        verb = "started" if started.started else "is already running"
        console.print(f"rollout of {change} {verb} under {pinned.ref}", highlight=False)
        console.print(f"  {_link(settings, client, change)}", highlight=False)

    run(main)


@app.command()
def status(
    change_id: ChangeId,
    as_json: JsonOption = False,
    watch: Annotated[bool, typer.Option("--watch", help="Refresh every 2 seconds.")] = False,
) -> None:
    """Phases, cohorts, checks and verdicts of a rollout."""
    settings = settings_or_exit()

    async def main() -> None:
        client = await connect(settings)
        current = await rollout_state(client, change_id)
        if as_json:
            print_json(current.model_dump(mode="json"))
            return
        if not watch:
            console.print(status_view(current))
            console.print(f"  {_link(settings, client, change_id)}", highlight=False)
            return
        console.print(f"  {_link(settings, client, change_id)}", highlight=False)
        with Live(status_view(current), console=console, refresh_per_second=1) as live:
            while not current.finished:
                await asyncio.sleep(2)
                current = await rollout_state(client, change_id)
                live.update(status_view(current))

    run(main)


def _command(change_id: str, update: str, argument: BaseModel | None = None) -> None:
    settings = settings_or_exit()

    async def main() -> None:
        client = await connect(settings)
        result = await command_rollout(client, change_id, update, argument)
        console.print(status_line(result), highlight=False)
        console.print(f"  {_link(settings, client, change_id)}", highlight=False)

    run(main)


@app.command()
def approve(change_id: ChangeId, approver: Approver, reason: ReasonOption = "") -> None:
    """Approve the start of a rollout or a phase gate."""
    _command(change_id, "approve", _model(Decision, approver=approver, reason=reason))


@app.command()
def reject(change_id: ChangeId, approver: Approver, reason: ReasonOption = "") -> None:
    """Reject: before the start it ends the rollout; at a gate it rolls back."""
    _command(change_id, "reject", _model(Decision, approver=approver, reason=reason))


@app.command()
def pause(change_id: ChangeId, reason: ReasonOption = "") -> None:
    """Pause: no bake, window or deadline clock runs until resume."""
    _command(change_id, "pause", _model(Reason, reason=reason))


@app.command()
def resume(change_id: ChangeId) -> None:
    """Resume a paused rollout, or keep baking a held one."""
    _command(change_id, "resume")


@app.command()
def promote(
    change_id: ChangeId,
    full: Annotated[bool, typer.Option("--full", help="Skip to 100% (needs --approver).")] = False,
    approver: Annotated[str | None, typer.Option("--approver", help="For --full.")] = None,
    reason: ReasonOption = "",
) -> None:
    """End the current bake now (or roll a frozen rollout forward); --full skips to 100%."""
    if not full:
        _command(change_id, "promote")
        return
    if not approver:
        raise fail("--full needs --approver: skipping to 100% must be approved")
    _command(change_id, "promote_full", _model(Decision, approver=approver, reason=reason))


@app.command()
def abort(change_id: ChangeId, reason: ReasonOption = "") -> None:
    """Abort and roll back (a frozen rollout: accept it as it stands)."""
    _command(change_id, "abort", _model(Reason, reason=reason))


@app.command()
def retry(change_id: ChangeId) -> None:
    """After an abort: start again from the first phase with the same cohorts."""
    _command(change_id, "retry")


@app.command("list")
def list_command(as_json: JsonOption = False) -> None:
    """Rollouts, newest first."""
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
