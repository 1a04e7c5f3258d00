"""Opsgenie escalations and schedules (REST API v2 JSON) as opsflow definitions.

Reads what these calls answer, in any number of files, each one response or a JSON list of
them: `GET /v2/escalations/{id}` and `GET /v2/escalations` (`{"data": ...}` with `rules[]`),
`GET /v2/schedules/{id}` and `GET /v2/schedules?expand=rotation` (`{"data": ...}` with
`rotations[]`), and `GET /v2/users` for people named by id only.

- An escalation's `rules[]` become levels at their own `delay` (Opsgenie counts every rule's
  delay from the alert's creation, so rules with the same delay are one level); a user
  recipient becomes the user's username (an email), a schedule `oncall:<schedule name>`, a
  team `team:<name>`; `repeat.count` is `repeat`.
- A schedule's `rotations[]` become layers: `type` and `length` the turn, `startDate` the
  first handoff, `participants[]` the users, `timeRestriction` the restrictions. Opsgenie
  notifies the on-call people of *every* rotation on call at once (cumulative); opsflow pages
  the person of the last layer that covers the moment, so each overlap is one line.

Everything else that cannot be carried over is one line in the result's notes.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from itertools import combinations
from typing import Any
from zoneinfo import ZoneInfo

from definitions.duration import format_duration
from definitions.importers.common import (
    DAY_MINUTES,
    DAY_NAMES,
    FIRST_LEVEL_AFTER,
    WEEK_MINUTES,
    ImportedDefinition,
    ImportRefused,
    ImportResult,
    Level,
    Names,
    Windows,
    as_object,
    clean_label,
    clean_text,
    describe,
    email,
    escalation_body,
    int_field,
    intersection,
    layer,
    list_field,
    local,
    local_text,
    metadata,
    moment_field,
    once,
    schedule_body,
    selection_note,
    sla_note,
    slug,
    text_field,
    union,
    unique_layer_name,
    weekly_window,
    zone_field,
)

VENDOR = "Opsgenie"
MAX_REPEAT = 10
_TIME_UNITS = {"minutes": 1, "hours": 60, "days": 24 * 60}
_TURN_UNITS = {
    "hourly": timedelta(hours=1),
    "daily": timedelta(days=1),
    "weekly": timedelta(weeks=1),
}
_ALL_WEEK: Windows = [(0, WEEK_MINUTES)]


@dataclass
class _Input:
    escalations: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    schedules: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    users: list[dict[str, Any]] = field(default_factory=list)


def _sort(item: Any, where: str, found: _Input) -> None:
    data = as_object(item, where)
    if "rules" in data:
        found.escalations.append((where, data))
    elif "rotations" in data or "timezone" in data:
        found.schedules.append((where, data))
    elif "username" in data:
        found.users.append(data)
    elif "participants" in data and "type" in data:
        raise ImportRefused(
            f"{where}: a rotation without its schedule (no timezone): export "
            "GET /v2/schedules/{id}?expand=rotation instead"
        )
    else:
        raise ImportRefused(
            f"{where}: neither an escalation (rules), a schedule (rotations) nor a user (username)"
        )


def _collect(payload: Any, where: str, found: _Input) -> None:
    if isinstance(payload, list):
        for index, item in enumerate(payload):
            _collect(item, f"{where}[{index}]", found)
        return
    if not isinstance(payload, dict) or "data" not in payload:
        raise ImportRefused(
            f"{where}: not an Opsgenie API response (expected an object with data, as "
            "GET /v2/escalations/{id} or GET /v2/schedules/{id} answer)"
        )
    data = payload["data"]
    if isinstance(data, list):
        for index, item in enumerate(data):
            _sort(item, f"{where}: data[{index}]", found)
    else:
        _sort(data, f"{where}: data", found)


def import_opsgenie(payloads: Sequence[tuple[str, Any]], *, now: datetime) -> ImportResult:
    """Definitions from Opsgenie API responses: `payloads` are (file name, parsed JSON);
    `now` decides which rotations have ended."""
    found = _Input()
    for file, payload in payloads:
        _collect(payload, file, found)
    if not found.escalations and not found.schedules:
        raise ImportRefused(
            "no escalation or schedule in the files (users alone give nothing to write)"
        )
    return _Importer(found, now).run()


class _Importer:
    def __init__(self, found: _Input, now: datetime) -> None:
        self.found = found
        self.now = now
        self.result = ImportResult()
        self.names = Names()
        self.usernames: dict[str, str] = {}
        for user in found.users:
            address = email(user.get("username"))
            if address and isinstance(user.get("id"), str):
                self.usernames[user["id"]] = address
        self.schedule_names: dict[str, str] = {}

    def run(self) -> ImportResult:
        written: list[tuple[str, dict[str, Any], str]] = []
        for index, (where, schedule) in enumerate(once(self.found.schedules, self.result.notes)):
            name = self.names.claim(
                slug(str(schedule.get("name") or "")), f"opsgenie-schedule-{index + 1}", "schedule"
            )
            for key in ("id", "name"):
                if isinstance(schedule.get(key), str):
                    self.schedule_names[schedule[key]] = name
            written.append((where, schedule, name))
        for where, schedule, name in written:
            self._guarded(where, self._schedule, schedule, name)
        escalations = once(self.found.escalations, self.result.notes)
        for index, (where, escalation) in enumerate(escalations):
            name = self.names.claim(
                slug(str(escalation.get("name") or "")),
                f"opsgenie-escalation-{index + 1}",
                "escalation",
            )
            self._guarded(where, self._escalation, escalation, name)
        return self.result

    def _guarded(
        self,
        where: str,
        convert: Callable[[dict[str, Any], str], ImportedDefinition],
        item: dict[str, Any],
        name: str,
    ) -> None:
        """One escalation or schedule the importer cannot read is left out with its reason;
        the others are still written."""
        try:
            definition = convert(item, name)
        except ImportRefused as exc:
            self.result.notes.append(f"{where}: not imported: {exc}")
            return
        self.result.definitions.append(definition)

    def _user(self, reference: dict[str, Any]) -> tuple[str | None, str]:
        """(email, how the user is shown in a line)."""
        username = reference.get("username")
        user_id = reference.get("id")
        address = email(username) or (
            self.usernames.get(user_id) if isinstance(user_id, str) else None
        )
        shown = clean_label(str(username or user_id or "?"), 80)
        return address, shown

    # --- escalations -----------------------------------------------------------------------

    def _escalation(self, escalation: dict[str, Any], name: str) -> ImportedDefinition:
        where = "escalation"
        escalation_id = clean_label(str(escalation.get("id") or "?"), 60)
        title = clean_label(str(escalation.get("name") or name), 120)
        notes: list[str] = []
        # Opsgenie counts each rule's delay from the alert: rules of one delay are one level.
        by_delay: dict[timedelta, tuple[list[int], list[str]]] = {}
        rules = list_field(escalation, "rules", where)
        if not rules:
            raise ImportRefused(f"{where}.rules: the escalation has no rules")
        for number, raw in enumerate(rules, start=1):
            at = f"{where}.rules[{number - 1}]"
            rule = as_object(raw, at)
            delay = self._delay(rule, at)
            recipient = self._recipient(rule, number, at, notes)
            condition = rule.get("condition", "if-not-acked")
            if condition != "if-not-acked":
                notes.append(
                    f"rule {number}: condition {clean_label(str(condition), 40)!r} not carried "
                    "over: opsflow levels stop when the case is acknowledged (if-not-acked)"
                )
            if recipient is None:  # _recipient said why
                continue
            numbers, recipients = by_delay.setdefault(max(delay, FIRST_LEVEL_AFTER), ([], []))
            numbers.append(number)
            if recipient not in recipients:
                recipients.append(recipient)
        if not by_delay:
            raise ImportRefused("no rule has a recipient opsflow can notify")
        levels = [
            Level(after, _rules_name(by_delay[after][0]), by_delay[after][1])
            for after in sorted(by_delay)
        ]
        if levels[0].after == FIRST_LEVEL_AFTER:
            notes.append(
                f"{levels[0].name}: {VENDOR} notifies at once (delay 0); an opsflow level needs "
                f"a delay, so level 1 fires {format_duration(FIRST_LEVEL_AFTER)} after the case "
                "opens"
            )
        repeat = self._repeat(escalation, where, notes)
        notes.append(selection_note())
        team = escalation.get("ownerTeam")
        owner = clean_label(str(team.get("name") or ""), 200) if isinstance(team, dict) else ""
        if not owner:
            owner = "imported from Opsgenie"
            notes.append(f"owner: the escalation has no ownerTeam; written as {owner!r}")
        meta = metadata(
            name,
            owner,
            clean_text(text_field(escalation, "description", where, required=False)),
            {"imported-from": "opsgenie", "opsgenie-id": escalation_id.lower()[:200]},
        )
        cycle = levels[-1].after + self._wait(escalation, where)
        body = escalation_body(meta, levels, repeat, cycle * (1 + repeat))
        notes.insert(0, sla_note(body))
        return ImportedDefinition(
            "escalation", name, f"{VENDOR} escalation {escalation_id} ({title})", body, notes
        )

    def _delay(self, rule: dict[str, Any], where: str) -> timedelta:
        raw = rule.get("delay", {"timeAmount": 0})
        if isinstance(raw, int) and not isinstance(raw, bool):  # the v1 shape: minutes
            raw = {"timeAmount": raw}
        delay = as_object(raw, f"{where}.delay")
        amount = int_field(delay, "timeAmount", f"{where}.delay")
        unit = delay.get("timeUnit", "minutes")
        if unit not in _TIME_UNITS:
            raise ImportRefused(
                f"{where}.delay.timeUnit: {clean_label(str(unit), 20)!r} is not minutes, hours "
                "or days"
            )
        return timedelta(minutes=amount * _TIME_UNITS[unit])

    def _recipient(
        self, rule: dict[str, Any], number: int, where: str, notes: list[str]
    ) -> str | None:
        recipient = as_object(rule.get("recipient"), f"{where}.recipient")
        kind = str(recipient.get("type") or "")
        notify_type = rule.get("notifyType", "default")
        shown = clean_label(
            str(recipient.get("name") or recipient.get("username") or recipient.get("id") or "?"),
            80,
        )
        written: str | None = None
        if kind == "user":
            written, shown = self._user(recipient)
            if written is None:
                notes.append(_missing_username(shown, f"rule {number}"))
        elif kind == "schedule":
            written_name = self.schedule_names.get(str(recipient.get("id"))) or (
                self.schedule_names.get(str(recipient.get("name")))
            )
            if written_name is None:
                written_name = slug(shown) or slug(f"opsgenie-{shown}") or "opsgenie-schedule"
                notes.append(
                    f"rule {number}: schedule {shown} is not in these files: written as "
                    f"oncall:{written_name}; import its GET /v2/schedules answer too"
                )
            written = f"oncall:{written_name}"
        elif kind == "team":
            team = slug(shown)
            written = f"team:{team}" if team else None
            if written is None:
                notes.append(f"rule {number}: team {shown} has no name opsflow can use; left out")
        else:
            notes.append(
                f"rule {number}: recipient type {clean_label(kind, 30) or '(none)'!r} not carried "
                "over: only users, schedules and teams are"
            )
        if written is not None and notify_type != "default":
            shown_type = clean_label(str(notify_type), 30)
            if kind == "schedule" and notify_type in ("next", "previous"):
                notes.append(
                    f"rule {number}: notifyType {shown_type!r} (the {notify_type} person in the "
                    f"rotation) not carried over: {written} is the person on call now; left out"
                )
                return None
            notes.append(
                f"rule {number}: notifyType {shown_type!r} not carried over: opsflow notifies "
                f"{written} as it is"
            )
        return written

    def _repeat(self, escalation: dict[str, Any], where: str, notes: list[str]) -> int:
        raw = escalation.get("repeat")
        if raw is None:
            return 0
        repeat = as_object(raw, f"{where}.repeat")
        count = int_field(repeat, "count", f"{where}.repeat", default=0)
        if count > MAX_REPEAT:
            notes.append(f"repeat.count {count}: opsflow repeats at most {MAX_REPEAT} times")
        wait = self._wait(escalation, where)
        # Opsgenie's next pass starts waitInterval after the last rule, its rules at their
        # delays from there; opsflow's next cycle starts when the last level fires.
        if count and wait:
            notes.append(
                f"repeat.waitInterval {format_duration(wait)} not carried over: opsflow starts "
                "the next cycle when the last level fires, so each pass comes "
                f"{format_duration(wait)} sooner"
            )
        if count and repeat.get("closeAlertAfterAll") is True:
            notes.append(
                "repeat.closeAlertAfterAll not carried over: opsflow does not close a case when "
                "its escalation has run out"
            )
        return min(count, MAX_REPEAT)

    def _wait(self, escalation: dict[str, Any], where: str) -> timedelta:
        repeat = escalation.get("repeat")
        if not isinstance(repeat, dict):
            return timedelta(0)
        return timedelta(minutes=int_field(repeat, "waitInterval", f"{where}.repeat", default=0))

    # --- schedules -------------------------------------------------------------------------

    def _schedule(self, schedule: dict[str, Any], name: str) -> ImportedDefinition:
        where = "schedule"
        schedule_id = clean_label(str(schedule.get("id") or "?"), 60)
        title = clean_label(str(schedule.get("name") or name), 120)
        zone = zone_field(schedule, "timezone", where)
        notes: list[str] = []
        if schedule.get("enabled") is False:
            notes.append("the schedule is disabled in Opsgenie; written as a working schedule")
        layers: list[dict[str, Any]] = []
        coverage: list[tuple[str, Windows]] = []
        taken: set[str] = set()
        rotations = list_field(schedule, "rotations", where)
        if not rotations:
            raise ImportRefused(
                f"{where}.rotations: none given (GET /v2/schedules lists them only with "
                "expand=rotation)"
            )
        for index, raw in enumerate(rotations):
            at = f"{where}.rotations[{index}]"
            converted = self._rotation(as_object(raw, at), at, zone, taken, notes)
            if converted is not None:
                written, windows = converted
                layers.append(written)
                coverage.append((written["name"], windows))
        if not layers:
            raise ImportRefused("no rotation is left to write")
        for (first, first_windows), (second, second_windows) in combinations(coverage, 2):
            both = intersection(first_windows, second_windows)
            if both:
                notes.append(
                    f"layers {first} and {second} are both on call {describe(both)}: {VENDOR} "
                    f"notifies the people on call in both; opsflow pages only the one of {second} "
                    "(the later layer wins)"
                )
        team = schedule.get("ownerTeam")
        owner = clean_label(str(team.get("name") or ""), 200) if isinstance(team, dict) else ""
        if not owner:
            owner = "imported from Opsgenie"
            notes.append(f"owner: the schedule has no ownerTeam; written as {owner!r}")
        meta = metadata(
            name,
            owner,
            clean_text(text_field(schedule, "description", where, required=False)),
            {"imported-from": "opsgenie", "opsgenie-id": schedule_id.lower()[:200]},
        )
        return ImportedDefinition(
            "schedule",
            name,
            f"{VENDOR} schedule {schedule_id} ({title})",
            schedule_body(meta, zone.key, layers, []),
            notes,
        )

    def _rotation(
        self,
        rotation: dict[str, Any],
        where: str,
        zone: ZoneInfo,
        taken: set[str],
        notes: list[str],
    ) -> tuple[dict[str, Any], Windows] | None:
        title = clean_label(str(rotation.get("name") or where.rsplit(".", 1)[-1]), 80)
        about = f"rotation {title!r}"
        if rotation.get("endDate"):
            end = moment_field(rotation, "endDate", where)
            if end <= self.now:
                notes.append(f"{about} ended {local_text(local(end, zone))}: history, left out")
                return None
            notes.append(
                f"{about} ends {local_text(local(end, zone))}: an opsflow layer has no end; "
                "remove it then"
            )
        kind = text_field(rotation, "type", where)
        if kind not in _TURN_UNITS:
            raise ImportRefused(
                f"{where}.type: {clean_label(kind, 20)!r} is not hourly, daily or weekly"
            )
        turn = _TURN_UNITS[kind] * int_field(rotation, "length", where, default=1, low=1)
        users: list[str] = []
        for index, raw in enumerate(list_field(rotation, "participants", where)):
            participant = as_object(raw, f"{where}.participants[{index}]")
            kind_of = str(participant.get("type") or "")
            if kind_of == "user":
                address, shown = self._user(participant)
                if address is None:
                    notes.append(_missing_username(shown, about))
                else:
                    users.append(address)
            elif kind_of == "none":
                notes.append(
                    f"{about}: participant {index + 1} is 'none' (a turn with no one on call); "
                    "opsflow has no empty turn, so the rotation is shorter by one turn"
                )
            else:
                shown = clean_label(str(participant.get("name") or participant.get("id")), 80)
                notes.append(
                    f"{about}: participant {clean_label(kind_of, 20) or '?'} {shown} not "
                    "carried over: an opsflow layer rotates people, not teams or escalations"
                )
        if not users:
            notes.append(f"{about}: no user opsflow can page; left out")
            return None
        start = local(moment_field(rotation, "startDate", where), zone)
        windows = self._restriction(rotation, where)
        name = unique_layer_name(slug(title), len(taken) + 1, taken)
        return layer(name, start, turn, users, windows), windows or _ALL_WEEK

    def _restriction(self, rotation: dict[str, Any], where: str) -> Windows | None:
        raw = rotation.get("timeRestriction")
        if raw is None:
            return None
        at = f"{where}.timeRestriction"
        restriction = as_object(raw, at)
        kind = text_field(restriction, "type", at)
        windows: Windows = []
        if kind == "time-of-day":
            daily = as_object(restriction.get("restriction"), f"{at}.restriction")
            start, end = (
                _minute(daily, "start", f"{at}.restriction"),
                _minute(daily, "end", f"{at}.restriction"),
            )
            length = (end - start) % DAY_MINUTES or DAY_MINUTES
            for day in range(7):
                windows += weekly_window(day * DAY_MINUTES + start, length)
        elif kind == "weekday-and-time-of-day":
            entries = list_field(restriction, "restrictions", at)
            for index, item in enumerate(entries):
                entry_at = f"{at}.restrictions[{index}]"
                entry = as_object(item, entry_at)
                start = _day(entry, "startDay", entry_at) * DAY_MINUTES + _minute(
                    entry, "start", entry_at
                )
                end = _day(entry, "endDay", entry_at) * DAY_MINUTES + _minute(
                    entry, "end", entry_at
                )
                windows += weekly_window(start, (end - start) % WEEK_MINUTES or WEEK_MINUTES)
        else:
            raise ImportRefused(
                f"{at}.type: {clean_label(kind, 40)!r} is not time-of-day or "
                "weekday-and-time-of-day"
            )
        merged = union(windows)
        return None if merged == _ALL_WEEK else merged


def _minute(entry: dict[str, Any], prefix: str, where: str) -> int:
    hour = int_field(entry, f"{prefix}Hour", where)
    minute = int_field(entry, f"{prefix}Min", where, default=0)
    if hour > 24 or minute > 59 or (hour == 24 and minute):
        raise ImportRefused(f"{where}: {hour}:{minute:02d} is not a time of day")
    return hour * 60 + minute


def _day(entry: dict[str, Any], key: str, where: str) -> int:
    value = text_field(entry, key, where).strip().lower()
    if value not in DAY_NAMES:
        raise ImportRefused(f"{where}.{key}: {clean_label(value, 20)!r} is not monday to sunday")
    return DAY_NAMES.index(value)


def _rules_name(numbers: list[int]) -> str:
    """`rule 1`, or `rules 2, 3` for the rules one level merges."""
    if len(numbers) == 1:
        return f"rule {numbers[0]}"
    return "rules " + ", ".join(map(str, numbers))


def _missing_username(user: str, where: str) -> str:
    return (
        f"{where}: user {user} has no username (email) in these files, left out: add the "
        "GET /v2/users answer to the files"
    )
