"""What the PagerDuty and Opsgenie importers share: strict JSON in, field access that names
the field it refuses, the text and names opsflow accepts, weekly on-call windows as calendar
hours, and the escalation and schedule documents they write.

Pure data: bytes and dicts in, definition dicts (and their YAML) out, no clock (the caller
passes `now`), no I/O.
"""

from __future__ import annotations

import json
import re
import unicodedata
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml

from definitions.calendar import WEEKDAYS
from definitions.duration import format_duration
from definitions.models import API_VERSION

MAX_JSON_BYTES = 5_000_000
MAX_JSON_DEPTH = 64
"""API responses nest fewer than 10 levels; Python's json recurses once per level."""
MAX_INT_DIGITS = 30
FIRST_YEAR, LAST_YEAR = 1970, 2200
"""Timestamps outside these years are typos (and near year 9999 time zone arithmetic
overflows)."""

FIRST_LEVEL_AFTER = timedelta(seconds=1)
"""Both vendors notify their first rule when the alert opens; an opsflow level needs a
positive delay, so the first one fires a second after the case opens."""
IMPORT_ORDER = 10_000
"""Imported policies are tried after every other policy until someone gives them a match."""
MIN_RESOLUTION = timedelta(days=1)
PRIORITIES = ["p1", "p2", "p3", "p4"]
TEMPLATE = "case-escalated"
WEEK_MINUTES = 7 * 24 * 60
DAY_MINUTES = 24 * 60

_NAME = re.compile(r"^[a-z][a-z0-9-]{0,61}[a-z0-9]$")
# An address opsflow's schedules and recipients take as a person (definitions/schedule.py).
_EMAIL = re.compile(
    r"^[A-Za-z0-9][A-Za-z0-9_.+-]{0,63}@[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,63}$"
)
# Characters the loader refuses anywhere in a file (controls, bidi marks, separators,
# unassigned and private-use code points): vendor text never carries them into the YAML.
_REFUSED_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"})


class ImportRefused(ValueError):
    """Input the importer cannot read: one line naming the file or field and why."""


# --- strict JSON ---------------------------------------------------------------------------


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise ImportRefused(f"the key {key[:40]!r} appears twice in one object")
        result[key] = value
    return result


def _no_constant(name: str) -> Any:
    raise ImportRefused(f"{name} is not a JSON number")


def _bounded_int(text: str) -> int:
    if len(text.lstrip("-")) > MAX_INT_DIGITS:
        raise ImportRefused(f"the number {text[:20]}... has more than {MAX_INT_DIGITS} digits")
    return int(text)


def _finite_float(text: str) -> float:
    value = float(text)
    if value in (float("inf"), float("-inf")):
        raise ImportRefused(f"the number {text[:40]} is out of range")
    return value


def _depth(text: str) -> int:
    """The deepest nesting of arrays and objects, brackets inside strings not counted."""
    depth = deepest = 0
    in_string = escaped = False
    for character in text:
        if in_string:
            if escaped:
                escaped = False
            elif character == "\\":
                escaped = True
            elif character == '"':
                in_string = False
        elif character == '"':
            in_string = True
        elif character in "[{":
            depth += 1
            deepest = max(deepest, depth)
            if deepest > MAX_JSON_DEPTH:
                break
        elif character in "]}":
            depth -= 1
    return deepest


def _check_text(value: Any) -> None:
    if isinstance(value, str):
        if "\x00" in value:
            raise ImportRefused("U+0000 is not allowed in text")
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise ImportRefused("a lone surrogate escape in text") from None
    elif isinstance(value, dict):
        for key, item in value.items():
            _check_text(key)
            _check_text(item)
    elif isinstance(value, list):
        for item in value:
            _check_text(item)


def read_json(raw: bytes, file: str) -> Any:
    """One API response from a file's bytes: UTF-8 without a byte-order mark, unique keys,
    finite numbers, bounded size and depth; ImportRefused naming the file otherwise."""
    try:
        return _read_json(raw)
    except ImportRefused as exc:
        raise ImportRefused(f"{file}: {exc}") from None


def _read_json(raw: bytes) -> Any:
    if len(raw) > MAX_JSON_BYTES:
        raise ImportRefused(f"larger than {MAX_JSON_BYTES // 1_000_000} MB")
    if raw.startswith(b"\xef\xbb\xbf"):
        raise ImportRefused("starts with a byte-order mark; save it as plain UTF-8")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ImportRefused(f"not valid UTF-8 (byte {exc.start})") from None
    if not text.strip():
        raise ImportRefused("empty; give the JSON an API call answered")
    if _depth(text) > MAX_JSON_DEPTH:
        raise ImportRefused(f"nested deeper than {MAX_JSON_DEPTH} levels")
    try:
        value = json.loads(
            text,
            object_pairs_hook=_no_duplicates,
            parse_constant=_no_constant,
            parse_int=_bounded_int,
            parse_float=_finite_float,
        )
    except json.JSONDecodeError as exc:
        raise ImportRefused(
            f"not JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
        ) from None
    except RecursionError:
        raise ImportRefused(f"nested deeper than {MAX_JSON_DEPTH} levels") from None
    _check_text(value)
    return value


# --- reading fields ------------------------------------------------------------------------


def as_object(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ImportRefused(f"{where}: expected an object, found {_kind_of(value)}")
    return value


def as_list(value: Any, where: str) -> list[Any]:
    if not isinstance(value, list):
        raise ImportRefused(f"{where}: expected a list, found {_kind_of(value)}")
    return value


def _kind_of(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "text"
    return "a list" if isinstance(value, list) else "an object"


def text_field(data: dict[str, Any], key: str, where: str, *, required: bool = True) -> str:
    value = data.get(key)
    if value is None and not required:
        return ""
    if not isinstance(value, str) or (required and not value.strip()):
        found = "nothing" if value is None else _kind_of(value)
        raise ImportRefused(f"{where}.{key}: expected text, found {found}")
    return value


def int_field(
    data: dict[str, Any],
    key: str,
    where: str,
    *,
    default: int | None = None,
    low: int = 0,
    high: int = 1_000_000,
) -> int:
    """A whole number from `low` to `high` (delays, counts and lengths: no vendor allows
    more than a million of anything here, and arithmetic on more could overflow)."""
    value = data.get(key, default)
    if value is None and default is not None:
        return default
    if isinstance(value, bool) or not isinstance(value, int):
        found = "nothing" if value is None else _kind_of(value)
        raise ImportRefused(f"{where}.{key}: expected a whole number, found {found}")
    if not low <= value <= high:
        raise ImportRefused(f"{where}.{key}: {value} is not from {low} to {high}")
    return value


def list_field(data: dict[str, Any], key: str, where: str) -> list[Any]:
    value = data.get(key)
    return [] if value is None else as_list(value, f"{where}.{key}")


def moment_field(data: dict[str, Any], key: str, where: str) -> datetime:
    """An ISO 8601 timestamp (`2026-01-05T09:00:00+01:00`, `...Z`)."""
    value = text_field(data, key, where)
    try:
        moment = datetime.fromisoformat(value.strip())
    except ValueError:
        raise ImportRefused(
            f"{where}.{key}: {clean_label(value, 40)!r} is not a timestamp such as "
            "2026-01-05T09:00:00Z"
        ) from None
    if not FIRST_YEAR <= moment.year <= LAST_YEAR:
        raise ImportRefused(f"{where}.{key}: {moment.year} is not from {FIRST_YEAR} to {LAST_YEAR}")
    return moment


def zone_field(data: dict[str, Any], key: str, where: str) -> ZoneInfo:
    value = text_field(data, key, where)
    try:
        return ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise ImportRefused(
            f"{where}.{key}: {clean_label(value, 60)!r} is not an IANA timezone such as "
            "Europe/Berlin"
        ) from None


# --- text and names ------------------------------------------------------------------------


def clean_text(value: str, limit: int = 4_000) -> str:
    """Vendor text as an opsflow description: what the loader refuses becomes a space."""
    kept = "".join(
        " " if unicodedata.category(c) in _REFUSED_CATEGORIES and c != "\n" else c for c in value
    )
    return kept.strip()[:limit]


def clean_label(value: str, limit: int = 200) -> str:
    """Vendor text on one line (a label, a name in a message)."""
    return " ".join(clean_text(value, 10 * limit).split())[:limit]


def slug(value: str) -> str:
    """A vendor name as an opsflow name: `Engineering Escalation Policy` ->
    `engineering-escalation-policy`; empty when nothing usable is left."""
    ascii_text = unicodedata.normalize("NFKD", value).encode("ascii", "ignore").decode()
    words = re.sub(r"[^a-z0-9]+", "-", ascii_text.lower()).strip("-")
    words = words[:63].rstrip("-")
    if words and not words[0].isalpha():
        words = f"x-{words}"[:63].rstrip("-")
    return words if _NAME.match(words) else ""


def email(value: Any) -> str | None:
    """A plausible email address (directory id) or None."""
    if not isinstance(value, str):
        return None
    candidate = value.strip()
    return candidate if len(candidate) <= 200 and _EMAIL.match(candidate) else None


class Names:
    """Definition names, unique across one import (the loader refuses a name used twice)."""

    def __init__(self) -> None:
        self.taken: set[str] = set()

    def claim(self, preferred: str, fallback: str, suffix: str) -> str:
        base = preferred or fallback
        name = base
        if name in self.taken:
            name = f"{base[: 62 - len(suffix)]}-{suffix}"
        number = 2
        while name in self.taken:
            name = f"{base[:58]}-{number}"
            number += 1
        self.taken.add(name)
        return name


def once(
    items: list[tuple[str, dict[str, Any]]], notes: list[str]
) -> list[tuple[str, dict[str, Any]]]:
    """Each policy or schedule once, by its vendor id: one exported twice (two files, or a
    list answer and a single one) is used as first found, with a line for the other."""
    seen: dict[str, str] = {}
    kept: list[tuple[str, dict[str, Any]]] = []
    for where, item in items:
        item_id = item.get("id")
        if isinstance(item_id, str) and item_id in seen:
            notes.append(
                f"{where}: {clean_label(item_id, 60)} is also in {seen[item_id]}; that one is used"
            )
            continue
        if isinstance(item_id, str):
            seen[item_id] = where
        kept.append((where, item))
    return kept


# --- weekly windows ------------------------------------------------------------------------

Windows = list[tuple[int, int]]
"""Minutes of the week, Monday 00:00 = 0, half-open, sorted, not overlapping."""

DAY_NAMES = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")


def weekly_window(start: int, minutes: int) -> Windows:
    """The window `minutes` long from minute `start` of the week, wrapping past Sunday."""
    if minutes >= WEEK_MINUTES:
        return [(0, WEEK_MINUTES)]
    start %= WEEK_MINUTES
    end = start + minutes
    if end <= WEEK_MINUTES:
        return [(start, end)]
    return [(0, end - WEEK_MINUTES), (start, WEEK_MINUTES)]


def union(windows: Iterable[tuple[int, int]]) -> Windows:
    merged: Windows = []
    for start, end in sorted(windows):
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        else:
            merged.append((start, end))
    return merged


def intersection(first: Windows, second: Windows) -> Windows:
    return union(
        (max(a, c), min(b, d)) for a, b in first for c, d in second if max(a, c) < min(b, d)
    )


def _clock(minute: int) -> str:
    return f"{minute // 60:02d}:{minute % 60:02d}"


def _per_day(windows: Windows) -> list[list[tuple[int, int]]]:
    days: list[list[tuple[int, int]]] = [[] for _ in WEEKDAYS]
    for start, end in windows:
        cursor = start
        while cursor < end:
            day = cursor // DAY_MINUTES
            day_end = min(end, (day + 1) * DAY_MINUTES)
            days[day].append((cursor - day * DAY_MINUTES, day_end - day * DAY_MINUTES))
            cursor = day_end
    return [union(ranges) for ranges in days]


def hours(windows: Windows) -> dict[str, str | list[str]] | None:
    """Windows as a calendar's `hours` (`{"mon-fri": "09:00-17:00"}`), consecutive days with
    the same ranges under one key; None for the whole week (no restriction)."""
    if union(windows) == [(0, WEEK_MINUTES)]:
        return None
    days = _per_day(windows)
    result: dict[str, str | list[str]] = {}
    day = 0
    while day < len(days):
        last = day
        while last + 1 < len(days) and days[last + 1] == days[day]:
            last += 1
        if days[day]:
            key = WEEKDAYS[day] if last == day else f"{WEEKDAYS[day]}-{WEEKDAYS[last]}"
            texts = [f"{_clock(start)}-{_clock(end)}" for start, end in days[day]]
            result[key] = texts[0] if len(texts) == 1 else texts
        day = last + 1
    return result


def describe(windows: Windows) -> str:
    """`mon-fri 09:00-17:00, sat 10:00-14:00` (or `all week`)."""
    written = hours(windows)
    if written is None:
        return "all week"
    return ", ".join(
        f"{days} {ranges if isinstance(ranges, str) else ' and '.join(ranges)}"
        for days, ranges in written.items()
    )


# --- moments -------------------------------------------------------------------------------


def local(moment: datetime, zone: ZoneInfo) -> datetime:
    """The wall-clock time in `zone` (naive); a naive moment is taken as already local."""
    if moment.tzinfo is None:
        return moment
    return moment.astimezone(zone).replace(tzinfo=None)


def local_text(moment: datetime) -> str:
    """`2026-01-05T09:00`, the form a schedule's start, override and handoff take."""
    return moment.strftime("%Y-%m-%dT%H:%M")


def first_handoff(
    aligned: datetime, start: datetime, turn: timedelta, zone: ZoneInfo
) -> tuple[datetime, int]:
    """The handoff (local wall time) of the turn under way at `start`, handoffs falling on
    `aligned` plus whole turns, and how many turns after `aligned` it is. Whole-day turns
    hand off at the same wall time across DST changes, others after exact durations (as
    opsflow's schedules count them)."""
    if turn % timedelta(days=1) == timedelta(0):
        wall_aligned, wall_start = local(aligned, zone), local(start, zone)
        turns = (wall_start - wall_aligned) // turn
        return wall_aligned + turn * turns, turns
    exact_aligned, exact_start = aware(aligned, zone), aware(start, zone)
    turns = (exact_start - exact_aligned) // turn
    return local(exact_aligned + turn * turns, zone), turns


def aware(moment: datetime, zone: ZoneInfo) -> datetime:
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=zone)


def rotated(users: list[str], turns: int) -> list[str]:
    """The rotation order as it stands `turns` handoffs later."""
    if not users:
        return users
    shift = turns % len(users)
    return users[shift:] + users[:shift]


# --- the documents -------------------------------------------------------------------------


@dataclass
class Level:
    after: timedelta
    name: str
    recipients: list[str]
    round_robin: bool = False


@dataclass
class ImportedDefinition:
    kind: str
    name: str
    source: str
    """Where it came from, e.g. `PagerDuty escalation policy PT20YPA (Engineering)`."""
    body: dict[str, Any]
    notes: list[str] = field(default_factory=list)
    """What could not be carried over, one line each (without the definition's prefix)."""


@dataclass
class ImportResult:
    definitions: list[ImportedDefinition] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    """Lines about the input that belong to no written definition (one left out whole)."""

    def lines(self) -> list[str]:
        """Every line of what could not be carried over, each naming what it is about."""
        return [
            *self.notes,
            *(f"{d.kind} {d.name}: {n}" for d in self.definitions for n in d.notes),
        ]


def metadata(name: str, owner: str, description: str, labels: dict[str, str]) -> dict[str, Any]:
    result: dict[str, Any] = {"name": name, "owner": owner}
    if description:
        result["description"] = description
    result["labels"] = labels
    return result


def escalation_body(
    meta: dict[str, Any], levels: list[Level], repeat: int, first_response: timedelta
) -> dict[str, Any]:
    """An escalation policy for every priority on a 24x7 clock (the vendors' delays are wall
    time); the SLA targets are placeholders a person sets (the vendors have none)."""
    first_response = max(first_response, levels[-1].after + timedelta(minutes=1))
    resolution = max(first_response, MIN_RESOLUTION)
    written_levels: list[dict[str, Any]] = []
    for level in levels:
        entry: dict[str, Any] = {"after": format_duration(level.after), "name": level.name}
        if level.round_robin:
            entry["round_robin"] = True
        entry["actions"] = [
            {"type": "notify", "channel": "pager", "to": level.recipients, "template": TEMPLATE}
        ]
        written_levels.append(entry)
    return {
        "apiVersion": API_VERSION,
        "kind": "escalation",
        "metadata": meta,
        "spec": {
            "order": IMPORT_ORDER,
            "match": "true",
            "priorities": PRIORITIES,
            "calendar": "24x7",
            "slas": [
                {
                    "priority": priority,
                    "first_response": format_duration(first_response),
                    "resolution": format_duration(resolution),
                }
                for priority in PRIORITIES
            ],
            "levels": written_levels,
            "repeat": repeat,
        },
    }


def sla_note(body: dict[str, Any]) -> str:
    target = body["spec"]["slas"][0]
    return (
        "SLA targets: the vendor has none; written first_response "
        f"{target['first_response']} (when its escalation has run its course) and resolution "
        f"{target['resolution']} for p1-p4 on a 24x7 clock: set your own"
    )


def selection_note(services: list[str] | None = None) -> str:
    """How the imported policy is chosen; `services`: what chose it at the vendor."""
    chosen = (
        f"services ({', '.join(services)}) use this policy there; opsflow chooses a policy by "
        "its match, so it is"
        if services
        else "selection: it is"
    )
    return (
        f'{chosen} written with match "true" at order {IMPORT_ORDER}, after every other '
        "policy; give it a match for the cases it should take (or open cases with --policy)"
    )


def schedule_body(
    meta: dict[str, Any],
    timezone: str,
    layers: list[dict[str, Any]],
    overrides: list[dict[str, str]],
) -> dict[str, Any]:
    spec: dict[str, Any] = {"timezone": timezone, "layers": layers}
    if overrides:
        spec["overrides"] = overrides
    return {"apiVersion": API_VERSION, "kind": "schedule", "metadata": meta, "spec": spec}


def layer(
    name: str, start: datetime, turn: timedelta, users: list[str], windows: Windows | None
) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "name": name,
        "start": local_text(start),
        "turn": format_duration(turn),
        "users": users,
    }
    restricted = hours(windows) if windows is not None else None
    if restricted is not None:
        entry["restrictions"] = restricted
    return entry


def unique_layer_name(preferred: str, number: int, taken: set[str]) -> str:
    name = preferred or f"layer-{number}"
    if name in taken:
        name = f"{name[:55]}-{number}"
    taken.add(name)
    return name


def minutes_of(duration: timedelta) -> int:
    return int(duration.total_seconds() // 60)


# --- YAML ----------------------------------------------------------------------------------


def _comment_lines(definition: ImportedDefinition) -> Iterator[str]:
    yield f"# Imported from {definition.source} by `opsflow defs import`."
    if definition.notes:
        yield "# Not carried over:"
        for note in definition.notes:
            yield f"# - {note}"


# Plain scalars the loader's YAML 1.2 core schema reads as something other than text
# (definitions/loader.py): PyYAML writes `08` or `1E2` unquoted (text under YAML 1.1), which
# would come back as numbers.
_NOT_TEXT_IN_CORE_SCHEMA = re.compile(
    r"^(?:true|True|TRUE|false|False|FALSE|~|null|Null|NULL|"
    r"[-+]?[0-9]+|0o[0-7]+|0x[0-9a-fA-F]+|"
    r"[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?|"
    r"[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$"
)


class _Dumper(yaml.SafeDumper):
    """Text that the loader would read as a number, boolean or null is quoted."""


def _text(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = '"' if _NOT_TEXT_IN_CORE_SCHEMA.match(value) else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _text)


def to_yaml(definition: ImportedDefinition) -> str:
    """The definition as a YAML file, what was not carried over in comments at its top."""
    body = yaml.dump(
        definition.body, Dumper=_Dumper, sort_keys=False, allow_unicode=True, width=100
    )
    return "\n".join([*_comment_lines(definition), body])
