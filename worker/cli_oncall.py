"""`opsflow oncall ...`: who is on call for each deployed schedule, and overrides."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Annotated, Any
from zoneinfo import ZoneInfo

import typer

from worker.cli_support import (
    By,
    JsonOption,
    console,
    fail,
    print_json,
    settings_or_exit,
    with_database,
)

if TYPE_CHECKING:
    from definitions.models import PinnedDefinition
    from worker.cli_support import Sessions

app = typer.Typer(
    name="oncall",
    help="On-call schedules: who is on call now and next, and overrides.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)

NOW = "now"
_ZONED = re.compile(r"(?P<moment>\d{4}-\d{2}-\d{2}[ T]\d{2}:\d{2}(:\d{2})?)\s+(?P<zone>\S+)")
_TIME_HELP = (
    "2026-12-24T09:00 (the schedule's timezone), 2026-12-24T09:00+01:00, "
    '"2026-12-24 09:00 Europe/Berlin" or now'
)

Schedule = Annotated[str, typer.Argument(metavar="SCHEDULE", help="The schedule's name.")]


def parse_time(option: str, text: str) -> datetime:
    """A command line time: aware (an offset, a zone name, `now`), or naive for a wall time
    in the schedule's own timezone. A bad one is the command's one-line failure."""
    value = text.strip()
    if value.lower() == NOW:
        return datetime.now(UTC)
    try:
        zoned = _ZONED.fullmatch(value)
        if zoned:
            moment = datetime.fromisoformat(zoned["moment"].replace(" ", "T"))
            return moment.replace(tzinfo=ZoneInfo(zoned["zone"])).astimezone(UTC)
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except (ValueError, KeyError, OSError):
        raise fail(f"{option} {text[:60]!r} is not a time; write {_TIME_HELP}") from None
    return moment


def in_zone(moment: datetime, zone: ZoneInfo) -> datetime:
    """A parsed time as UTC: a wall time (no offset) is read in `zone`."""
    if moment.tzinfo is None:
        return moment.replace(tzinfo=zone).astimezone(UTC)
    return moment.astimezone(UTC)


def _local(moment: datetime, zone: ZoneInfo) -> str:
    return moment.astimezone(zone).strftime("%a %Y-%m-%d %H:%M")


def _span(delta: timedelta) -> str:
    """`3h52m`, `2d4h`, `45m`: how long until a change."""
    minutes = max(0, int(delta.total_seconds() // 60))
    days, rest = divmod(minutes, 1440)
    hours, minutes = divmod(rest, 60)
    if days:
        return f"{days}d{hours}h" if hours else f"{days}d"
    if hours:
        return f"{hours}h{minutes}m" if minutes else f"{hours}h"
    return f"{minutes}m"


async def _summary(sessions: Sessions, pinned: PinnedDefinition, at: datetime) -> dict[str, Any]:
    from store import oncall

    spec = pinned.schedule
    moment = in_zone(at, spec.zone)
    rota = await oncall.rota(sessions, pinned, at=moment)
    user, source = rota.covered_by(moment)
    change = rota.next_change(moment)
    stored = await oncall.stored_overrides(sessions, pinned.name, ending_after=moment)
    return {
        "schedule": pinned.name,
        "version": pinned.version,
        "timezone": spec.timezone,
        "at": moment.isoformat(),
        "on_call": user,
        "source": source,
        "next": None if change is None else {"user": change.user, "at": change.at.isoformat()},
        "overrides": [
            {
                "id": o.id,
                "user": o.person,
                "from": o.starts_at.isoformat(),
                "to": o.ends_at.isoformat(),
                "by": o.created_by,
            }
            for o in stored
        ],
    }


def _print_summary(summary: dict[str, Any]) -> None:
    zone = ZoneInfo(summary["timezone"])
    at = datetime.fromisoformat(summary["at"])
    console.print(
        f"[bold]{summary['schedule']}[/] ({summary['timezone']}, at {_local(at, zone)})",
        highlight=False,
    )
    who = summary["on_call"] or "[red]nobody[/]"
    source = f" ({summary['source']})" if summary["source"] else ""
    console.print(f"  on call   {who}{source}", highlight=False)
    change = summary["next"]
    if change is None:
        console.print("  next      no change within a year", highlight=False)
    else:
        when = datetime.fromisoformat(change["at"])
        console.print(
            f"  next      {change['user'] or '[red]nobody[/]'} from {_local(when, zone)} "
            f"(in {_span(when - at)})",
            highlight=False,
        )
    for override in summary["overrides"]:
        start, end = (datetime.fromisoformat(override[k]) for k in ("from", "to"))
        console.print(
            f"  override  {override['user']} {_local(start, zone)} to {_local(end, zone)}",
            highlight=False,
        )
        console.print(f"            by {override['by']}", highlight=False)


@app.command()
def show(
    schedule: Annotated[
        str | None,
        typer.Argument(metavar="[SCHEDULE]", help="One schedule; default: every schedule."),
    ] = None,
    at: Annotated[str, typer.Option("--at", metavar="TIME", help=f"When: {_TIME_HELP}.")] = NOW,
    as_json: JsonOption = False,
) -> None:
    """Who is on call now (or at --at) and who is next and when, per schedule, with the
    overrides stored for it."""
    moment = parse_time("--at", at)
    settings = settings_or_exit()

    async def work(sessions: Sessions) -> list[dict[str, Any]]:
        from store import oncall

        if schedule is not None:
            try:
                found = [await oncall.schedule(sessions, schedule)]
            except oncall.ScheduleNotFound as exc:
                raise fail(f"SCHEDULE: {exc}") from None
        else:
            found = await oncall.schedules(sessions)
        return [await _summary(sessions, pinned, moment) for pinned in found]

    summaries = with_database(settings, work)
    if as_json:
        print_json(summaries)
        return
    if not summaries:
        console.print("no schedule is deployed (opsflow defs deploy FOLDER)", highlight=False)
    for summary in summaries:
        _print_summary(summary)


@app.command()
def override(
    schedule: Schedule,
    user: Annotated[
        str, typer.Option("--user", metavar="USER", help="Who is on call (directory id, email).")
    ],
    from_: Annotated[str, typer.Option("--from", metavar="TIME", help=f"From: {_TIME_HELP}.")],
    to: Annotated[str, typer.Option("--to", metavar="TIME", help="Until (the same forms).")],
    by: By,
    as_json: JsonOption = False,
) -> None:
    """Put USER on call for SCHEDULE from --from to --to, over its rotation and every earlier
    override."""
    from pydantic import TypeAdapter, ValidationError

    from definitions.schedule import Person

    try:
        TypeAdapter(Person).validate_python(user)
    except ValidationError:
        raise fail(f"--user {user[:60]!r} is not a directory id or email address") from None
    start, end = parse_time("--from", from_), parse_time("--to", to)
    settings = settings_or_exit()

    async def work(sessions: Sessions) -> dict[str, Any]:
        from store import oncall

        try:
            pinned = await oncall.schedule(sessions, schedule)
        except oncall.ScheduleNotFound as exc:
            raise fail(f"SCHEDULE: {exc}") from None
        zone = pinned.schedule.zone
        starts_at, ends_at = in_zone(start, zone), in_zone(end, zone)
        if ends_at <= starts_at:
            raise fail(f"--to {to!r} is not after --from {from_!r}")
        stored = await oncall.add_override(sessions, schedule, user, starts_at, ends_at, by)
        return {
            "id": stored.id,
            "schedule": stored.schedule,
            "timezone": pinned.schedule.timezone,
            "user": stored.person,
            "from": stored.starts_at.isoformat(),
            "to": stored.ends_at.isoformat(),
            "by": stored.created_by,
        }

    stored = with_database(settings, work)
    if as_json:
        print_json(stored)
        return
    zone = ZoneInfo(stored["timezone"])
    start_text, end_text = (_local(datetime.fromisoformat(stored[k]), zone) for k in ("from", "to"))
    console.print(
        f"{stored['user']} is on call for {stored['schedule']} from {start_text} to "
        f"{end_text} ({stored['timezone']}), override {stored['id']}",
        highlight=False,
    )
