"""`opsflow simulate FILE`: what an escalation policy would do with a case, in skipped time,
before it goes live (see worker/simulate.py for how time and the scratch stack work)."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import typer

from worker.cli_support import (
    JsonOption,
    case_from_options,
    console,
    fail,
    print_json,
    run,
    settings_or_exit,
)

if TYPE_CHECKING:
    from rich.table import Table

SHOWN_MESSAGES = 3
"""Messages a timeline row shows (a rollback notifies every exposed customer)."""
_OPENED = re.compile(r"(?P<moment>\d{4}-\d{2}-\d{2}[ T]\d{2}:\d{2}(:\d{2})?)\s+(?P<zone>\S+)")


def parse_opened(text: str) -> datetime:
    """`2026-12-04 16:55 Europe/Berlin`, or ISO 8601 with an offset."""
    found = _OPENED.fullmatch(text.strip())
    try:
        if found:
            local = datetime.fromisoformat(found["moment"].replace(" ", "T"))
            return local.replace(tzinfo=ZoneInfo(found["zone"])).astimezone(UTC)
        moment = datetime.fromisoformat(text.strip())
    except (ValueError, ZoneInfoNotFoundError) as exc:
        raise fail(f'--opened: {exc}; write e.g. "2026-12-04 16:55 Europe/Berlin"') from None
    if moment.tzinfo is None:
        raise fail('--opened: give a timezone, e.g. "2026-12-04 16:55 Europe/Berlin"')
    return moment.astimezone(UTC)


def simulate(
    definition: Annotated[
        Path, typer.Argument(help="A YAML file with one escalation policy (need not be deployed).")
    ],
    priority: Annotated[str, typer.Option("--priority", help="p1 to p4.")] = "p2",
    stage: Annotated[str, typer.Option("--stage", help="The case's stage.")] = "support",
    customer: Annotated[
        str, typer.Option("--customer", help="A sandbox customer, C-0001 to C-0060.")
    ] = "C-0002",
    opened: Annotated[
        str | None,
        typer.Option(
            "--opened",
            help='When the case opens, e.g. "2026-12-04 16:55 Europe/Berlin" (default: now).',
        ),
    ] = None,
    events: Annotated[
        Path | None,
        typer.Option(
            "--events",
            help='JSON Lines of what happens, e.g. {"at": "+20m", "command": "acknowledge", '
            '"by": "ana"}. A case: acknowledge, pause, resume, priority, stage, '
            "ticket_status, reassign, resolve. A rollout: approve, reject, pause, resume, "
            'promote, abort, and degrade ({"metric": "csat", "value": 2.1}). A recovery rule '
            "set: the CloudEvents it reacts to, each with its time. A handoff: turn "
            '({"text": ..., "intent": ...}), accept, decline, resolve, return_to_bot, '
            "customer_left.",
        ),
    ] = None,
    span: Annotated[
        str, typer.Option("--for", help="How long after opening to simulate (at most 60d).")
    ] = "3d",
    outside_windows: Annotated[
        bool,
        typer.Option(
            "--outside-windows",
            help="A rollout: let phases start outside the plan's change windows.",
        ),
    ] = False,
    replay_since: Annotated[
        str | None,
        typer.Option(
            "--replay-since",
            help="Backtest instead: re-run the cases opened in this last stretch (30d) under "
            "the file, with their recorded commands, and compare with what happened.",
        ),
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Run an escalation policy's, rollout plan's or recovery rule set's real workflow in
    skipped time on an embedded test server with sandbox backends in a scratch database, and
    print the timeline: each warning, level, phase, rule fired, action, notification
    (rendered) and breach or rollback, in local time."""
    from client.logging import configure_logging
    from definitions.duration import parse_duration
    from worker.simulate import (
        ROLLOUT_COMMANDS,
        load_definition,
        read_script,
        simulate_escalation,
    )

    # The timeline is the output: the simulated worker's own log lines (a cancelled
    # activity at the end, say) are not.
    configure_logging(settings_or_exit().log_format, "critical")

    if not definition.exists():
        raise fail(f"no such file: {definition}")
    if replay_since is not None:
        _backtest(definition, replay_since, as_json)
        return
    try:
        horizon = parse_duration(span)
    except ValueError as exc:
        raise fail(f"--for: {exc}") from None
    # Default: a moment just ahead, so the test server (starting now) need not shift it.
    moment = parse_opened(opened) if opened else datetime.now(UTC) + timedelta(minutes=1)
    given_zone = _OPENED.fullmatch(opened.strip()) if opened else None
    loaded = run_sync(lambda: load_definition(definition))
    if loaded.kind == "rollout":
        script = run_sync(lambda: read_script(events, ROLLOUT_COMMANDS)) if events else []
        _rollout(loaded, moment, script, horizon, outside_windows, given_zone, as_json)
        return
    if loaded.kind == "recovery":
        _recovery(loaded, events, horizon, as_json)
        return
    if loaded.kind == "handoff":
        _handoff(loaded, moment, events, horizon, customer, as_json)
        return
    script = run_sync(lambda: read_script(events)) if events else []
    case = {
        "ticket_id": "T-SIM-1",
        "customer_id": customer,
        "priority": priority,
        "stage": stage,
        "subject": "Simulated case",
        "channel": "email",
    }
    case_from_options(case, moment)
    result = run(lambda: simulate_escalation(loaded, case, moment, script, horizon))
    # Moments in the zone the opening was given in, else the calendar's.
    shown_zone = given_zone["zone"] if given_zone else result.timezone
    if as_json:
        print_json({**result.as_json(), "calendar_timezone": result.timezone})
        return
    zone = ZoneInfo(shown_zone)
    local_open = result.case.opened_at.astimezone(zone)
    console.print(
        f"{result.policy}: a {priority} case at stage {stage} for {customer}, opened "
        f"{local_open:%a %Y-%m-%d %H:%M} {shown_zone} (calendar: {result.timezone})"
        + _shifted(result.shifted_weeks),
        highlight=False,
    )
    table = _timeline_table(result.timeline, zone)
    state = ", ".join(
        f"{name} {'met' if c['met'] else 'breached' if c['breached'] else 'running'}"
        for name, c in result.as_json()["clocks"].items()
    )
    console.print(table)
    console.print(f"at the end: {state}", highlight=False)


def _shifted(weeks: int) -> str:
    if not weeks:
        return ""
    return f" (simulated {weeks} week{'s' if weeks > 1 else ''} later)"


def _timeline_table(timeline: list[Any], zone: ZoneInfo) -> Table:
    from rich.markup import escape
    from rich.table import Table

    table = Table(title_justify="left", show_lines=False)
    for column in ("when", "step", "what"):
        table.add_column(column, overflow="fold")
    for entry in timeline:
        what = _describe(entry.detail)
        for message in entry.messages[:SHOWN_MESSAGES]:
            text = message["subject"] or message["body"].strip().splitlines()[0][:120]
            what += f"\n→ {message['channel']} to {message['to']}: {text}"
        if len(entry.messages) > SHOWN_MESSAGES:
            what += f"\n→ … {len(entry.messages) - SHOWN_MESSAGES} more (--json has them all)"
        table.add_row(f"{entry.at.astimezone(zone):%a %d %b %H:%M}", entry.step, escape(what))
    return table


def _rollout(
    loaded: Any,
    moment: datetime,
    script: list[Any],
    horizon: Any,
    outside_windows: bool,
    given_zone: re.Match[str] | None,
    as_json: bool,
) -> None:
    from worker.simulate import simulate_rollout

    result = run(
        lambda: simulate_rollout(loaded, moment, script, horizon, outside_windows=outside_windows)
    )
    if as_json:
        print_json(result.as_json())
        return
    shown_zone = given_zone["zone"] if given_zone else result.timezone
    zone = ZoneInfo(shown_zone)
    console.print(
        f"{result.plan}: a change started {moment.astimezone(zone):%a %Y-%m-%d %H:%M} "
        f"{shown_zone}" + _shifted(result.shifted_weeks),
        highlight=False,
    )
    console.print(_timeline_table(result.timeline, zone))
    phases = ", ".join(
        f"{p['name']} {p['verdict']}" + (" (reverted)" if p["reverted"] else "")
        for p in result.as_json()["phases"]
    )
    console.print(f"at the end: {result.final.state}; {phases}", highlight=False)


def _recovery(loaded: Any, events: Path | None, horizon: Any, as_json: bool) -> None:
    from client.recovery import read_events
    from worker.simulate import simulate_recovery

    if events is None:
        raise fail(
            "--events: a recovery rule set needs the events to react to (JSON Lines of "
            "CloudEvents with a time each, as `opsflow recovery backtest` reads)"
        )
    envelopes = run_sync(lambda: read_events(events))
    result = run(lambda: simulate_recovery(loaded, envelopes, horizon))
    if as_json:
        print_json(result.as_json())
        return
    console.print(
        f"{result.rules}: {len(envelopes)} events for {len(result.customers)} customers"
        + _shifted(result.shifted_weeks),
        highlight=False,
    )
    console.print(_timeline_table(result.timeline, ZoneInfo("UTC")))
    for customer, shown in result.as_json()["customers"].items():
        decided = "; ".join(
            f"{rule}: " + ", ".join(f"{outcome} {n}" for outcome, n in counts.items())
            for rule, counts in shown["tally"].items()
        )
        console.print(f"{customer}: {decided or 'no rule applied'}", highlight=False)


def _handoff(
    loaded: Any, moment: datetime, events: Path | None, horizon: Any, customer: str, as_json: bool
) -> None:
    from worker.simulate import HANDOFF_COMMANDS, read_script, simulate_handoff

    if events is None:
        raise fail(
            '--events: a handoff needs the conversation: {"at": "+0s", "command": "turn", '
            '"text": "I want a human"} lines, then the agents\' accept, resolve, ...'
        )
    script = run_sync(lambda: read_script(events, HANDOFF_COMMANDS))
    result = run(lambda: simulate_handoff(loaded, moment, script, horizon, customer=customer))
    if as_json:
        print_json(result.as_json())
        return
    console.print(
        f"{result.definition}: a conversation of {customer}" + _shifted(result.shifted_weeks),
        highlight=False,
    )
    console.print(_timeline_table(result.timeline, ZoneInfo("UTC")))
    where = f", queue {result.final.queue}" if result.final.queue else ""
    who = f", agent {result.final.agent}" if result.final.agent else ""
    console.print(f"at the end: {result.final.state}{where}{who}", highlight=False)


def _describe(detail: dict[str, Any]) -> str:
    event = detail.get("event")
    if isinstance(event, dict):
        return f"{event.get('sla')} breached (budget {event.get('budget_seconds', 0) // 60} min)"
    text = ", ".join(f"{k}={v}" for k, v in detail.items() if v not in (None, "", [], {}))
    return text[:240]


def run_sync(work: Any) -> Any:
    """Run `work`, turning an OpsflowError into the command's one-line failure."""
    from definitions.errors import OpsflowError
    from store.registry import DefinitionProblems

    try:
        return work()
    except DefinitionProblems as exc:
        raise fail(
            str(exc).splitlines()[0]
            + (" (and more: run opsflow defs lint)" if len(exc.problems) > 1 else "")
        ) from None
    except OpsflowError as exc:
        raise fail(str(exc)) from None


def _backtest(definition: Path, since_text: str, as_json: bool) -> None:
    from rich.table import Table

    from definitions.duration import parse_duration
    from store.db import create_engine, session_factory
    from worker.backtest import backtest_escalation, read_past_cases
    from worker.simulate import MAX_HORIZON, load_definition

    try:
        back = parse_duration(since_text)
    except ValueError as exc:
        raise fail(f"--replay-since: {exc}") from None
    if back > MAX_HORIZON:
        raise fail(f"--replay-since: at most {MAX_HORIZON.days}d (one skipped-time run)")
    settings = settings_or_exit()
    loaded = run_sync(lambda: load_definition(definition))
    if loaded.kind != "escalation":
        raise fail(f"--replay-since backtests escalation policies; {definition} is a {loaded.kind}")
    until = datetime.now(UTC)
    since = until - back

    async def main() -> Any:
        engine = create_engine(settings.database)  # read only: the recorded cases
        try:
            past, dropped = await read_past_cases(session_factory(engine), since, loaded.name)
        finally:
            await engine.dispose()
        result = await backtest_escalation(loaded, past, since, until)
        result.skipped[:0] = dropped
        return result

    result = run(main)
    if as_json:
        print_json(result.as_json())
        return
    console.print(
        f"{result.cases} cases opened since {since:%Y-%m-%d %H:%M} UTC, re-run under "
        f"{result.policy} with their recorded commands",
        highlight=False,
    )
    table = Table(title_justify="left")
    for column in ("priority", "breaches", "levels fired", "notifications"):
        table.add_column(column)
    for priority, row in result.as_json()["per_priority"].items():
        then, now = row["recorded"], row["simulated"]
        table.add_row(
            priority,
            *(f"{then[k]} → {now[k]}" for k in ("breaches", "levels", "notifications")),
        )
    console.print(table)
    console.print("recorded → simulated", highlight=False)
    for line in result.skipped:
        console.print(f"skipped {line}", highlight=False)
