"""Durations as operations engineers write them: `90s`, `15m`, `4h`, `2d`, `1h30m`, `PT15M`.

Parsed into `timedelta`; serialised back in the compact form (`1d2h30m`), so a definition
survives a round trip through JSON (Temporal payloads, the registry) unchanged.
"""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Annotated, Any

from pydantic import BeforeValidator, PlainSerializer, WithJsonSchema

MAX_DURATION = timedelta(days=3660)
"""Ten years: longer is a typo (`900d`) more often than an intent."""

_UNITS = (("d", 86_400), ("h", 3_600), ("m", 60), ("s", 1))
# Each component at most 7 digits: big enough for `604800s`, small enough to parse instantly.
_COMPACT = re.compile(r"^(?:(\d{1,7})d)?(?:(\d{1,7})h)?(?:(\d{1,7})m)?(?:(\d{1,7})s)?$")
_ISO = re.compile(
    r"^P(?:(\d{1,7})W)?(?:(\d{1,7})D)?(?:T(?:(\d{1,7})H)?(?:(\d{1,7})M)?(?:(\d{1,7})S)?)?$"
)
_ISO_CALENDAR_UNITS = re.compile(r"^P(?:\d+Y|\d+M)")

DURATION_PATTERN = r"^(\d+d)?(\d+h)?(\d+m)?(\d+s)?$|^P(\d+W)?(\d+D)?(T(\d+H)?(\d+M)?(\d+S)?)?$"


def parse_duration(text: str) -> timedelta:
    """`text` as a positive timedelta; ValueError with a readable message otherwise."""
    value = text.strip()
    seconds: int | None = None
    compact = _COMPACT.match(value)
    if compact and value:
        seconds = sum(
            int(number) * unit
            for number, (_, unit) in zip(compact.groups(), _UNITS, strict=True)
            if number
        )
    else:
        iso = _ISO.match(value.upper())
        if iso and value.upper() not in ("P", "PT") and not value.upper().endswith("T"):
            weeks, days, hours, minutes, secs = (int(n) if n else 0 for n in iso.groups())
            seconds = (((weeks * 7 + days) * 24 + hours) * 60 + minutes) * 60 + secs
        elif _ISO_CALENDAR_UNITS.match(value.upper()):
            raise ValueError(
                f"{value[:40]!r}: years and months have no fixed length; use days (P30D)"
            )
    if seconds is None:
        raise ValueError(
            f"{value[:40]!r} is not a duration: write e.g. 90s, 15m, 4h, 2d, 1h30m or PT15M"
        )
    duration = timedelta(seconds=seconds)
    if duration <= timedelta(0):
        raise ValueError("a duration must be longer than zero")
    if duration > MAX_DURATION:
        raise ValueError(f"{value[:40]!r} is longer than {MAX_DURATION.days} days")
    return duration


def format_duration(duration: timedelta) -> str:
    """The compact form: `1d2h30m`; whole seconds only (sub-second parts are dropped)."""
    remaining = int(duration.total_seconds())
    if remaining <= 0:
        return "0s"
    parts = []
    for suffix, unit in _UNITS:
        count, remaining = divmod(remaining, unit)
        if count:
            parts.append(f"{count}{suffix}")
    return "".join(parts)


def _coerce(value: Any) -> timedelta:
    if isinstance(value, timedelta):
        if value <= timedelta(0):
            raise ValueError("a duration must be longer than zero")
        return value
    if isinstance(value, str):
        return parse_duration(value)
    if isinstance(value, bool | int | float):
        # A bare number has no unit; `90` could mean seconds or minutes.
        raise ValueError(f"{value!r} has no unit: write e.g. {value}s, {value}m or {value}h")
    raise ValueError("a duration must be a string such as 15m, 4h or PT15M")


Duration = Annotated[
    timedelta,
    BeforeValidator(_coerce),
    PlainSerializer(format_duration, return_type=str),
    WithJsonSchema(
        {
            "type": "string",
            "pattern": DURATION_PATTERN,
            "description": "A duration: 90s, 15m, 4h, 2d, 1h30m, or ISO 8601 (PT15M, P1D).",
            "examples": ["15m", "4h", "1h30m", "PT15M"],
        }
    ),
]
"""A positive duration; in YAML `90s`, `15m`, `4h`, `2d`, `1h30m` or ISO 8601 `PT15M`."""
