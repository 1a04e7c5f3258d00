"""`opsflow handoff ...`: start, steer and inspect bot-to-human handoffs (handoff-<id>)."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from worker.cli_support import (
    JsonOption,
    console,
    fail,
    print_json,
    run,
    settings_or_exit,
    show_rows,
    with_database,
)

if TYPE_CHECKING:
    from pydantic import BaseModel
    from temporalio.client import Client

    from client.settings import Settings
    from definitions.events import TranscriptLine
    from worker.cli_support import Sessions
    from workflows.handoff_model import HandoffInput, HandoffStatus

app = typer.Typer(
    name="handoff",
    help="Start, steer and inspect bot-to-human handoffs (workflow id handoff-<conversation>).",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)

Conversation = Annotated[str, typer.Argument(help="The conversation id, e.g. CONV-1042.")]
MAX_TRANSCRIPT_BYTES = 1_000_000
MAX_TRANSCRIPT_LINES = 500
STATES = (
    "bot",
    "requested",
    "queued",
    "offered",
    "active",
    "resolved",
    "returned_to_bot",
    "callback_scheduled",
    "abandoned",
)


def _link(settings: Settings, client: Client, conversation: str) -> str:
    from client.temporal import workflow_ui_url
    from workflows.handoff_model import handoff_workflow_id

    return workflow_ui_url(settings, client.namespace, handoff_workflow_id(conversation))


def _status_line(status: HandoffStatus) -> str:
    parts = [f"conversation {status.conversation_id}: {status.state}"]
    if status.queue:
        parts.append(f"queue {status.queue}")
    if status.current_offer is not None:
        offer = status.current_offer
        parts.append(
            f"offered to {offer.agent_id} until {offer.expires_at:%H:%M:%S} (offer {offer.number})"
        )
    if status.routing == "vendor" and status.state == "queued":
        group = f"group {status.vendor_group}" if status.vendor_group else "its group"
        parts.append(f"routed by the ticketing vendor ({group}), waiting for an assignee")
    if status.agent:
        parts.append(f"agent {status.agent}")
    if status.callback_local:
        parts.append(f"callback {status.callback_local}")
    if status.ticket_id:
        parts.append(f"ticket {status.ticket_id}")
    return ", ".join(parts)


def _print_status(status: HandoffStatus, link: str, as_json: bool) -> None:
    if as_json:
        print_json({"state": status.model_dump(mode="json"), "url": link})
        return
    console.print(_status_line(status), highlight=False)
    console.print(f"  {link}", highlight=False, soft_wrap=True)


def _model(model: type[BaseModel], **fields: Any) -> BaseModel:
    """Build a command; a bad value is one line naming the field."""
    from pydantic import ValidationError

    try:
        return model(**fields)
    except ValidationError as exc:
        error = exc.errors()[0]
        field = ".".join(str(part) for part in error["loc"]) or "value"
        raise fail(f"--{field.replace('_', '-')}: {error['msg']}") from None


def _command(conversation: str, update: str, argument: BaseModel | None, as_json: bool) -> None:
    from client.handoffs import command_handoff
    from client.temporal import connect

    settings = settings_or_exit()

    async def main() -> tuple[HandoffStatus, str]:
        client = await connect(settings)
        status = await command_handoff(client, conversation, update, argument)
        return status, _link(settings, client, conversation)

    status, link = run(main)
    _print_status(status, link, as_json)


def read_transcript(path: Path) -> list[TranscriptLine]:
    """A JSON list of {"from": "customer"|"bot", "text": ..., "at": ...}; errors are one line."""
    from pydantic import ValidationError

    from definitions.events import TranscriptLine

    try:
        if path.stat().st_size > MAX_TRANSCRIPT_BYTES:
            raise fail(f"--transcript {path}: larger than {MAX_TRANSCRIPT_BYTES} bytes")
        raw = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise fail(f"--transcript {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise fail(f"--transcript {path}: not UTF-8 text") from None
    except json.JSONDecodeError as exc:
        raise fail(f"--transcript {path}:{exc.lineno}: not JSON ({exc.msg})") from None
    except RecursionError:
        raise fail(f"--transcript {path}: nested too deeply") from None
    if not isinstance(raw, list):
        raise fail(f"--transcript {path}: expected a JSON list of lines")
    if len(raw) > MAX_TRANSCRIPT_LINES:
        raise fail(f"--transcript {path}: more than {MAX_TRANSCRIPT_LINES} lines")
    lines = []
    for n, item in enumerate(raw):
        if not isinstance(item, dict) or item.get("from") not in ("customer", "bot"):
            raise fail(
                f'--transcript {path}: line {n}: expected {{"from": "customer"|"bot", '
                '"text": ..., "at": ...}'
            )
        try:
            lines.append(TranscriptLine.model_validate(item))
        except ValidationError as exc:
            error = exc.errors()[0]
            field = ".".join(str(part) for part in error["loc"]) or "value"
            raise fail(f"--transcript {path}: line {n}, {field}: {error['msg']}") from None
    return lines


@app.command()
def start(
    conversation: Annotated[str, typer.Option("--conversation", help="Conversation id.")],
    customer: Annotated[str, typer.Option("--customer", help="Customer id, e.g. C-0017.")],
    transcript: Annotated[
        Path, typer.Option("--transcript", help="JSON list of {from, text, at}.")
    ],
    reason: Annotated[
        str, typer.Option("--reason", help="Why the bot hands off.")
    ] = "requested from the command line",
    definition: Annotated[
        str | None,
        typer.Option("--definition", help="NAME or NAME@VERSION; default: the deployed one."),
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Hand a bot conversation to a person: a `bot.handoff_requested` event, by
    signal-with-start (a running conversation receives it as its next event)."""
    from pydantic import ValidationError

    from client.handoffs import handoff_request_event, handoff_start_input, signal_with_start
    from client.temporal import connect
    from workflows.handoff_model import HandoffStatus

    settings = settings_or_exit()
    lines = read_transcript(transcript)
    try:
        event = handoff_request_event(conversation, customer, reason, lines)
    except ValidationError as exc:
        error = exc.errors()[0]
        field = ".".join(str(part) for part in error["loc"]) or "value"
        raise fail(f"--{field.replace('_', '-')}: {error['msg']}") from None

    async def pinned(sessions: Sessions) -> HandoffInput:
        return await handoff_start_input(sessions, definition)

    start_input = with_database(settings, pinned)

    async def main() -> tuple[HandoffStatus | None, str]:
        client = await connect(settings)
        handle = await signal_with_start(client, settings.task_queue, start_input, event)
        status: HandoffStatus | None = None
        try:
            status = await handle.query("state", result_type=HandoffStatus)
        except Exception:  # no worker has run it yet: the start itself succeeded
            status = None
        return status, _link(settings, client, conversation)

    status, link = run(main)
    if as_json:
        print_json(
            {
                "conversation": conversation,
                "definition": start_input.definition.ref,
                "state": status.model_dump(mode="json") if status else None,
                "url": link,
            }
        )
        return
    console.print(
        f"handoff requested for conversation {conversation} under {start_input.definition.ref}"
        + (f" ({status.state})" if status else ""),
        highlight=False,
    )
    console.print(f"  {link}", highlight=False, soft_wrap=True)


@app.command()
def show(conversation: Conversation, as_json: JsonOption = False) -> None:
    """The conversation's live state, offers and the context packet the agent starts from."""
    from rich.panel import Panel
    from rich.table import Table

    from client.handoffs import handoff_state
    from client.temporal import connect

    settings = settings_or_exit()

    async def main() -> tuple[HandoffStatus, str]:
        client = await connect(settings)
        return await handoff_state(client, conversation), _link(settings, client, conversation)

    status, link = run(main)
    if as_json:
        _print_status(status, link, True)
        return
    console.print(Panel(_status_line(status) + f"\n{link}", title=f"handoff {conversation}"))
    offers = Table(title="Offers", title_justify="left")
    for column in ("#", "agent", "queue", "offered", "expires", "outcome", "reason"):
        offers.add_column(column, overflow="fold")
    for offer in status.offers:
        offers.add_row(
            str(offer.number),
            offer.agent_id,
            offer.queue,
            _when(offer.offered_at),
            _when(offer.expires_at),
            offer.outcome,
            offer.reason or "",
        )
    console.print(offers)
    steps = Table(title="Transitions", title_justify="left")
    for column in ("at", "state", "why"):
        steps.add_column(column, overflow="fold")
    for transition in status.history:
        steps.add_row(_when(transition.at), transition.state, transition.why)
    console.print(steps)
    if status.context is not None:
        console.print(Panel(status.context.text, title="context packet"), highlight=False)


def _when(moment: datetime | None) -> str:
    return moment.astimezone().strftime("%Y-%m-%d %H:%M:%S %Z") if moment else ""


@app.command("list")
def list_handoffs(
    as_json: JsonOption = False,
    state: Annotated[str | None, typer.Option("--state", help=", ".join(STATES))] = None,
    closed: Annotated[bool, typer.Option("--closed", help="Include ended handoffs.")] = False,
    limit: Annotated[int, typer.Option("--limit", min=1, max=10_000)] = 100,
) -> None:
    """Handoffs, newest first, from the Temporal visibility store."""
    from activities import search_attributes as sa
    from client.temporal import connect

    settings = settings_or_exit()
    if state is not None and state not in STATES:
        raise fail(f"--state: unknown state {state!r}: use {', '.join(STATES)}")
    query = 'OpsKind = "handoff"'
    if state:
        query += f' AND OpsState = "{state}"'
    if not closed and state is None:
        query += ' AND ExecutionStatus = "Running"'

    async def main() -> list[dict[str, Any]]:
        client = await connect(settings)
        rows = []
        async for execution in client.list_workflows(query, limit=limit):
            attributes = execution.typed_search_attributes
            rows.append(
                {
                    "conversation": execution.id.removeprefix("handoff-"),
                    "customer": attributes.get(sa.OPS_CUSTOMER_ID),
                    "state": attributes.get(sa.OPS_STATE),
                    "queue": attributes.get(sa.OPS_QUEUE),
                    "agent": attributes.get(sa.OPS_OWNER),
                    "ticket": attributes.get(sa.OPS_CASE_ID),
                    "definition": attributes.get(sa.OPS_DEFINITION),
                    "started": _when(execution.start_time),
                    "workflow_id": execution.id,
                }
            )
        return rows

    rows = run(main)
    show_rows(
        rows,
        ["conversation", "customer", "state", "queue", "agent", "ticket", "definition", "started"],
        "handoffs",
        as_json,
    )


@app.command()
def accept(
    conversation: Conversation,
    agent: Annotated[str, typer.Option("--agent", help="The agent the offer went to.")],
    as_json: JsonOption = False,
) -> None:
    """Accept the open offer: the agent takes the conversation; its escalation case opens,
    acknowledged by the agent (the accept is the case's first response)."""
    from workflows.handoff_model import Accept

    _command(conversation, "accept", _model(Accept, agent=agent), as_json)


@app.command()
def decline(
    conversation: Conversation,
    agent: Annotated[str, typer.Option("--agent", help="The agent the offer went to.")],
    reason: Annotated[str, typer.Option("--reason")] = "declined",
    as_json: JsonOption = False,
) -> None:
    """Decline the open offer: the conversation is offered to someone else."""
    from workflows.handoff_model import Decline

    _command(conversation, "decline", _model(Decline, agent=agent, reason=reason), as_json)


@app.command("return")
def return_to_bot(
    conversation: Conversation,
    by: Annotated[
        str | None, typer.Option("--by", help="Who; default: the conversation's agent.")
    ] = None,
    reason: Annotated[str, typer.Option("--reason")] = "returned to the bot",
    as_json: JsonOption = False,
) -> None:
    """Give the conversation back to the bot; its escalation case closes with that outcome."""
    from workflows.handoff_model import ReturnToBot

    _command(conversation, "return_to_bot", _model(ReturnToBot, by=by, reason=reason), as_json)


@app.command()
def resolve(
    conversation: Conversation,
    by: Annotated[
        str | None, typer.Option("--by", help="Who; default: the conversation's agent.")
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Resolve an active conversation and its escalation case; the agent is free again."""
    from workflows.handoff_model import Resolve

    _command(conversation, "resolve", _model(Resolve, by=by), as_json)
