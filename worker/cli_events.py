"""`opsflow events`: send, replay and inspect events going through the intake."""

from __future__ import annotations

import json
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from worker.cli_support import (
    By,
    JsonOption,
    console,
    fail,
    print_json,
    settings_or_exit,
    show_rows,
    with_database,
)

if TYPE_CHECKING:
    import httpx

    from client.settings import Settings
    from worker.cli_support import Sessions

# intake.serve.DEV_SOURCE, the default of --source, spelled out: importing the intake server
# loads FastAPI, which help does without (tests/test_cli_help.py checks the two agree).
DEV_SOURCE = "dev"

app = typer.Typer(help="Send events to the intake and inspect its inbox.", no_args_is_help=True)

SourceOption = Annotated[
    str, typer.Option("--source", help="Sender to sign as (a key of OPSFLOW_INTAKE_SOURCES).")
]
UrlOption = Annotated[
    str | None,
    typer.Option("--url", help="Intake base address; default http://<intake_host>:<intake_port>."),
]


def _secret(settings: Settings, source: str) -> str:
    from intake.serve import dev_secret

    if source in settings.intake_sources:
        return settings.intake_sources[source]
    if source == DEV_SOURCE and (settings.data_dir / "intake-dev-secret").exists():
        return dev_secret(settings.data_dir)
    raise fail(
        f"no secret for sender {source!r}: add it to OPSFLOW_INTAKE_SOURCES "
        "(or run `opsflow dev` for the `dev` sender)"
    )


def _post(url: str, source: str, secret: str, document: Any, batch: bool = False) -> httpx.Response:
    import httpx

    from intake.signatures import standard_signature

    body = json.dumps(document, ensure_ascii=False).encode()
    message_id = f"msg_{uuid.uuid4().hex}"
    stamp = int(time.time())
    headers = {
        "content-type": "application/cloudevents-batch+json"
        if batch
        else "application/cloudevents+json",
        "webhook-id": message_id,
        "webhook-timestamp": str(stamp),
        "webhook-signature": standard_signature(secret, message_id, stamp, body),
    }
    try:
        return httpx.post(f"{url}/v1/events/{source}", content=body, headers=headers, timeout=30)
    except httpx.HTTPError as exc:
        raise fail(f"cannot reach the intake at {url}: {exc}") from None


def _explain(response: httpx.Response) -> str:
    try:
        problem = response.json()
    except ValueError:
        return f"HTTP {response.status_code}"
    return f"HTTP {response.status_code}: {problem.get('detail') or problem}"


@app.command()
def send(
    event_type: Annotated[str, typer.Argument(metavar="TYPE", help="e.g. ticket.created")],
    data: Annotated[str, typer.Option("--data", help="The event's data as a JSON object.")],
    subject: Annotated[str | None, typer.Option("--subject", help="Entity it is about.")] = None,
    event_id: Annotated[str | None, typer.Option("--id", help="Event id; default random.")] = None,
    source: SourceOption = DEV_SOURCE,
    url: UrlOption = None,
    as_json: JsonOption = False,
) -> None:
    """Send one event, signed like any sender (Standard Webhooks)."""
    from definitions.events import EVENT_TYPES
    from intake.serve import address

    settings = settings_or_exit()
    if event_type not in EVENT_TYPES:
        raise fail(f"unknown event type {event_type!r}: one of {', '.join(EVENT_TYPES)}")
    try:
        payload = json.loads(data)
    except ValueError as exc:
        raise fail(f"--data is not JSON: {exc}") from None
    document: dict[str, Any] = {
        "specversion": "1.0",
        "id": event_id or f"evt-{uuid.uuid4().hex[:12]}",
        "source": source,
        "type": event_type,
        "time": datetime.now(UTC).isoformat(),
        "data": payload,
    }
    if subject:
        document["subject"] = subject
    response = _post(url or address(settings), source, _secret(settings, source), document)
    if response.status_code not in (200, 202):
        raise fail(_explain(response))
    if as_json:
        print_json(response.json())
        return
    for event in response.json()["events"]:
        verb = "accepted" if response.status_code == 202 else "already received"
        console.print(
            f"{verb}: {event['type']} {event['id']} about {event['subject']} "
            f"({event['status']}{': ' + event['outcome'] if event.get('outcome') else ''})",
            highlight=False,
        )


@app.command()
def replay(
    file: Annotated[
        Path, typer.Argument(exists=True, dir_okay=False, help="One CloudEvent per line.")
    ],
    source: SourceOption = DEV_SOURCE,
    url: UrlOption = None,
) -> None:
    """Send every event of a JSON Lines file, in order; re-sent events change nothing."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    from intake.serve import address

    settings = settings_or_exit()
    secret = _secret(settings, source)
    base = url or address(settings)
    lines = [line for line in file.read_text().splitlines() if line.strip()]
    counts = {"accepted": 0, "already received": 0, "refused": 0}
    refusals: list[str] = []
    with Progress(
        TextColumn("[bold]replaying"), BarColumn(), MofNCompleteColumn(), console=console
    ) as progress:
        task = progress.add_task("replay", total=len(lines))
        for number, line in enumerate(lines, start=1):
            try:
                document = json.loads(line)
            except ValueError as exc:
                counts["refused"] += 1
                refusals.append(f"line {number}: not JSON ({exc})")
                progress.advance(task)
                continue
            if isinstance(document, dict):
                document.setdefault("source", source)
            response = _post(base, source, secret, document)
            if response.status_code == 202:
                counts["accepted"] += 1
            elif response.status_code == 200:
                counts["already received"] += 1
            else:
                counts["refused"] += 1
                refusals.append(f"line {number}: {_explain(response)}")
            progress.advance(task)
    console.print(", ".join(f"{n} {what}" for what, n in counts.items()), highlight=False)
    for refusal in refusals[:20]:
        console.print(f"  [red]{refusal}[/]", highlight=False)
    if counts["refused"]:
        raise typer.Exit(1)


COLUMNS = ["id", "source", "type", "subject", "status", "target", "outcome", "received_at"]


@app.command("list")
def list_events(
    pending: Annotated[
        bool, typer.Option("--pending", help="Only events not yet delivered (the backlog).")
    ] = False,
    rejected: Annotated[bool, typer.Option("--rejected", help="Only refused events.")] = False,
    limit: Annotated[int, typer.Option("--limit", min=1, max=10_000)] = 200,
    as_json: JsonOption = False,
) -> None:
    """The newest events in the inbox."""
    from intake import inbox

    settings = settings_or_exit()
    statuses: list[str] = []
    if pending:
        statuses.extend(inbox.WAITING)
    if rejected:
        statuses.append("rejected")

    async def work(sessions: Sessions) -> list[dict[str, Any]]:
        return [inbox.describe(r) for r in await inbox.listing(sessions, statuses, limit)]

    rows = with_database(settings, work)
    title = "pending events" if pending else "rejected events" if rejected else "events"
    show_rows(rows, COLUMNS, title, as_json)


@app.command()
def show(
    event_id: Annotated[str, typer.Argument(metavar="ID")],
    source: Annotated[str | None, typer.Option("--source", help="Sender, when ids clash.")] = None,
    as_json: JsonOption = False,
) -> None:
    """One event: where it went, when, and the outcome (the reason when rejected)."""
    from intake import inbox

    settings = settings_or_exit()

    async def work(sessions: Sessions) -> list[dict[str, Any]]:
        rows = await inbox.find(sessions, event_id, source)
        return [{**inbox.describe(r), "data": r.data} for r in rows]

    rows = with_database(settings, work)
    if not rows:
        raise fail(f"no event {event_id!r} in the inbox")
    if as_json:
        print_json(rows if len(rows) > 1 else rows[0])
        return
    for row in rows:
        for key, value in row.items():
            if key != "data":
                console.print(
                    f"[bold]{key:>12}[/] {'' if value is None else value}", highlight=False
                )
        console.print(
            f"[bold]{'data':>12}[/] {json.dumps(row['data'], ensure_ascii=False)}", highlight=False
        )


def _moment(since: str) -> datetime:
    """`--since`: a duration back from now (`2h`, `30m`, `1d`) or an RFC 3339 time."""
    from definitions.duration import parse_duration

    try:
        return datetime.now(UTC) - parse_duration(since)
    except ValueError:
        pass
    try:
        moment = datetime.fromisoformat(since.strip().replace("Z", "+00:00"))
    except ValueError:
        raise fail(
            f"--since {since[:60]!r} is neither a duration (2h, 30m, 1d) nor a time "
            "(2026-11-23T10:00:00+01:00)"
        ) from None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


@app.command()
def requeue(
    by: By,
    event_id: Annotated[
        str | None, typer.Argument(metavar="[ID]", help="The rejected event to send again.")
    ] = None,
    rejected: Annotated[
        bool, typer.Option("--rejected", help="Every event rejected since --since.")
    ] = False,
    since: Annotated[
        str | None,
        typer.Option(
            "--since",
            help="With --rejected: rejected since this long ago (2h, 1d) or since a time "
            "(RFC 3339; UTC when it has no offset).",
        ),
    ] = None,
    source: Annotated[
        str | None, typer.Option("--source", help="Only this sender's events (ids may clash).")
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Send rejected events again once the cause is fixed; the ledger records who did."""
    from intake import inbox

    settings = settings_or_exit()
    if not by.strip():
        raise fail("--by must name who requeues")
    if (event_id is None) == (not rejected):
        raise fail("give either an event ID or --rejected --since <duration or time>")
    if rejected and since is None:
        raise fail("--rejected needs --since, e.g. --since 2h: which rejections to send again")
    if event_id is not None and since is not None:
        raise fail("--since goes with --rejected, not with an event ID")
    moment = _moment(since) if since is not None else None

    async def work(sessions: Sessions) -> list[dict[str, Any]]:
        try:
            found = await inbox.requeue(
                sessions,
                by=by.strip()[:200],
                event_id=event_id,
                source=source,
                rejected_since=moment,
            )
        except inbox.NothingToRequeue as exc:
            raise fail(str(exc)) from None
        return [inbox.describe(r) for r in found]

    rows = with_database(settings, work)
    if as_json:
        print_json({"requeued": rows})
        return
    if not rows:
        console.print("no rejected events to requeue", highlight=False)
        return
    for row in rows:
        console.print(
            f"requeued: {row['type']} {row['id']} from {row['source']} about {row['subject']}",
            highlight=False,
        )
    console.print(
        f"{len(rows)} event(s) pending again; the intake's relay delivers them within seconds "
        "(`opsflow events list --pending`)",
        highlight=False,
    )


@app.command()
def schema() -> None:
    """The JSON Schema of every event type's data, with an example each."""
    from definitions.events import event_schemas_with_examples

    print_json(event_schemas_with_examples())
