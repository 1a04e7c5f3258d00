"""`opsflow agents ...`: the sandbox presence backend's agents (who can be offered a handoff)."""

from __future__ import annotations

import contextlib
import os
from typing import TYPE_CHECKING, Annotated

import typer

from definitions.errors import OpsflowError
from worker.cli_support import (
    JsonOption,
    console,
    print_json,
    settings_or_exit,
    show_rows,
    with_database,
)

if TYPE_CHECKING:
    from activities.handoff_contracts import AgentView
    from client.settings import Settings
    from worker.cli_support import Sessions

app = typer.Typer(
    name="agents",
    help="The sandbox presence backend's agents: skills, languages, status and load.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)


def _handoffs_url(settings: Settings) -> str:
    """The Temporal UI's list of running handoffs (agents are sandbox rows, not workflows)."""
    from client.temporal import workflow_ui_url

    namespace = settings.temporal_namespace or os.environ.get("TEMPORAL_NAMESPACE") or "default"
    base = workflow_ui_url(settings, namespace, "").removesuffix("/")
    return f"{base}?query=OpsKind%3D%22handoff%22"


def _row(view: AgentView) -> dict[str, object]:
    return {
        "id": view.id,
        "name": view.name,
        "team": view.team,
        "skills": ", ".join(view.skills),
        "languages": ", ".join(view.languages),
        "status": view.status,
        "load": f"{view.active_conversations}/{view.capacity}",
        "status_since": view.status_since.isoformat(),
    }


@app.command("list")
def list_command(as_json: JsonOption = False) -> None:
    """Every agent with skills, languages, status and conversations in progress."""
    from activities.adapters.sandbox_presence import SandboxPresence

    settings = settings_or_exit()

    async def every_agent(sessions: Sessions) -> list[AgentView]:
        return await SandboxPresence(sessions).list_agents()

    views = with_database(settings, every_agent)
    if as_json:
        print_json([view.model_dump(mode="json") for view in views])
        return
    show_rows(
        [_row(view) for view in views],
        ["id", "name", "team", "skills", "languages", "status", "load"],
        "agents",
        False,
    )
    console.print(f"  {_handoffs_url(settings)}", highlight=False, soft_wrap=True)


@app.command()
def status(
    agent: Annotated[str, typer.Argument(help="Agent id, e.g. ana.")],
    to: Annotated[str, typer.Argument(help="available, busy or offline")],
    as_json: JsonOption = False,
) -> None:
    """Set an agent available, busy or offline (offline agents are never offered); an agent
    who becomes available goes to the conversation waiting longest that they can take."""
    from temporalio.exceptions import ApplicationError

    from activities.adapters.sandbox_presence import SandboxPresence
    from activities.presence import wake
    from client.temporal import connect

    settings = settings_or_exit()

    async def work(sessions: Sessions) -> AgentView:
        try:
            view, woken = await SandboxPresence(sessions).set_agent_status(agent, to)
        except ApplicationError as exc:
            raise OpsflowError(exc.message) from None
        # Temporal away: the waiting look again by themselves within a minute.
        with contextlib.suppress(OpsflowError):
            if woken:
                await wake(await connect(settings), woken)
        return view

    view = with_database(settings, work)
    if as_json:
        print_json(view.model_dump(mode="json"))
        return
    console.print(
        f"agent {view.id} ({view.name}) is {view.status}, "
        f"{view.active_conversations}/{view.capacity} conversations",
        highlight=False,
    )
    console.print(f"  {_handoffs_url(settings)}", highlight=False, soft_wrap=True)
