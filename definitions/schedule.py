"""On-call schedules (`kind: schedule`) and who is on call at an instant.

A schedule has an IANA timezone, layers and overrides. A layer rotates its users, each for
one `turn`, from its first handoff (`start`, local wall time); `restrictions` limit it to
local windows (the same syntax as a calendar's `hours`; the rotation runs on underneath, as
in PagerDuty). A later layer wins wherever it has someone on call; an override wins over
every layer, and a later override over an earlier one.

Handoffs across a DST change: a turn of whole days (`1d`, `1w`) hands off at the same local
wall time every time (so a turn across the change is 23 or 25 hours long); any other turn
(`12h`, `8h`) is an exact duration from the first handoff. A first handoff in the spring-forward
gap (02:30 in Berlin) happens when the clock reads 03:30 that day.

Everything here is pure (no clock, no I/O): `opsflow oncall show`, the notify activity and
lint compute the same answer for the same instant.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    BeforeValidator,
    Field,
    PlainSerializer,
    PrivateAttr,
    StringConstraints,
    ValidationError,
    WithJsonSchema,
    field_validator,
    model_validator,
)

from definitions.calendar import BusinessCalendar
from definitions.common import Duration, Name, OpsModel

ONCALL_PREFIX = "oncall:"
"""An escalation recipient `oncall:<schedule>`: the person on call when the level fires."""
DAY = timedelta(days=1)
MAX_LAYERS = 20
MAX_USERS = 200
MAX_OVERRIDES = 500
MAX_STEPS = 100_000
"""Boundaries next_change walks at most (a 5-minute turn for a year is about 100,000)."""

_WEEKS = re.compile(r"^\s*(\d{1,3})\s*w\s*$")
_LOCAL = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2})?$")


def _weeks(value: Any) -> Any:
    """`1w` (not an opsflow Duration elsewhere) is seven days here."""
    if isinstance(value, str):
        match = _WEEKS.match(value)
        if match:
            return f"{int(match.group(1)) * 7}d" if int(match.group(1)) else "0s"
    return value


Turn = Annotated[
    Duration,
    BeforeValidator(_weeks),
    WithJsonSchema(
        {
            "type": "string",
            "description": "Each person's turn: 1w, 1d, 12h, 8h (an opsflow Duration, or "
            "weeks). Whole days hand off at the same local wall time.",
            "examples": ["1w", "1d", "12h"],
        }
    ),
]


def _local_datetime(value: Any) -> Any:
    """`YYYY-MM-DDTHH:MM` with no offset: a wall time in the schedule's timezone."""
    if isinstance(value, datetime):
        if value.tzinfo is not None:
            raise ValueError("give the local time without an offset: the schedule's timezone")
        return value
    text = value.strip() if isinstance(value, str) else ""
    if not _LOCAL.match(text):
        if isinstance(value, str) and re.search(r"(Z|[+-]\d{2}:?\d{2})$", text):
            raise ValueError(
                f"{text[:40]!r} has an offset: give the local time (2026-01-05T09:00); "
                "the schedule's timezone applies"
            )
        raise ValueError(
            f"{str(value)[:40]!r} is not a local time: write YYYY-MM-DDTHH:MM, e.g. "
            "2026-01-05T09:00"
        )
    try:
        return datetime.fromisoformat(text)
    except ValueError as exc:
        raise ValueError(f"{text!r} does not exist ({exc})") from None


LocalDateTime = Annotated[
    datetime,
    BeforeValidator(_local_datetime),
    PlainSerializer(lambda moment: moment.isoformat(timespec="minutes"), return_type=str),
    WithJsonSchema(
        {
            "type": "string",
            "pattern": _LOCAL.pattern,
            "description": "Local wall time in the schedule's timezone, e.g. 2026-01-05T09:00.",
        }
    ),
]
Person = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.@+-]{0,199}$")]
"""A person: a directory id (`ana`) or an email address."""


def check_timezone(value: str) -> str:
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise ValueError(
            f"{value[:60]!r} is not an IANA timezone such as Europe/Berlin or UTC"
        ) from None
    return value


class ScheduleLayer(OpsModel):
    """One rotation: its users take turns from the first handoff on."""

    name: Name
    start: LocalDateTime = Field(description="The first handoff, local time.")
    turn: Turn
    users: list[Person] = Field(description="People in rotation order (directory ids, emails).")
    restrictions: dict[str, str | list[str]] | None = Field(
        None,
        description="The local windows the layer covers (mon-fri: 09:00-17:00), the syntax "
        "of a calendar's hours; none: always.",
    )

    @field_validator("users")
    @classmethod
    def _someone(cls, value: list[str]) -> list[str]:
        if not value:
            raise ValueError("a layer needs at least one user")
        if len(value) > MAX_USERS:
            raise ValueError(f"more than {MAX_USERS} users in one layer")
        return value

    @field_validator("restrictions")
    @classmethod
    def _windows(
        cls, value: dict[str, str | list[str]] | None
    ) -> dict[str, str | list[str]] | None:
        if value is None:
            return None
        try:
            calendar = BusinessCalendar(hours=value)
        except ValidationError as exc:
            message = str(exc.errors()[0]["msg"]).removeprefix("Value error, ")
            raise ValueError(message.replace("the calendar is never open", "no window")) from None
        assert isinstance(calendar.hours, dict)
        return calendar.hours

    @property
    def wall_clock(self) -> bool:
        """Whole-day turns hand off at the same local wall time across DST changes."""
        return self.turn % DAY == timedelta(0)


class ScheduleOverride(OpsModel):
    """`user` is on call from `from` to `to` (local times), over every layer."""

    user: Person
    from_: LocalDateTime = Field(alias="from")
    to: LocalDateTime

    @model_validator(mode="after")
    def _ordered(self) -> ScheduleOverride:
        if self.to <= self.from_:
            raise ValueError(
                f"to ({self.to.isoformat(timespec='minutes')}) is not after from "
                f"({self.from_.isoformat(timespec='minutes')})"
            )
        return self


class ScheduleSpec(OpsModel):
    timezone: str = Field(description="IANA timezone of the handoffs, restrictions, overrides.")
    layers: Annotated[list[ScheduleLayer], Field(min_length=1, max_length=MAX_LAYERS)] = Field(
        description="A later layer wins wherever it has someone on call."
    )
    overrides: Annotated[list[ScheduleOverride], Field(max_length=MAX_OVERRIDES)] = Field(
        default_factory=list, description="Fixed overrides (the CLI adds more at run time)."
    )

    _zone: ZoneInfo = PrivateAttr()
    _restrictions: tuple[BusinessCalendar | None, ...] = PrivateAttr()

    @field_validator("timezone")
    @classmethod
    def _check_timezone(cls, value: str) -> str:
        return check_timezone(value)

    @field_validator("layers")
    @classmethod
    def _distinct_names(cls, value: list[ScheduleLayer]) -> list[ScheduleLayer]:
        seen: set[str] = set()
        for layer in value:
            if layer.name in seen:
                raise ValueError(f"two layers are named {layer.name!r}")
            seen.add(layer.name)
        return value

    @model_validator(mode="after")
    def _prepare(self) -> ScheduleSpec:
        self._zone = ZoneInfo(self.timezone)
        self._restrictions = tuple(
            None
            if layer.restrictions is None
            else BusinessCalendar(timezone=self.timezone, hours=layer.restrictions)
            for layer in self.layers
        )
        return self

    @property
    def zone(self) -> ZoneInfo:
        return self._zone

    def instant(self, local: datetime) -> datetime:
        """A local wall time of the schedule as a UTC instant (a time in the spring-forward
        gap counts as the same time after it: 02:30 is 03:30)."""
        return local.replace(tzinfo=self._zone).astimezone(UTC)

    # --- one layer ---------------------------------------------------------------------------

    def handoff(self, index: int, k: int) -> datetime:
        """The UTC instant layer `index`'s turn `k` starts (turn 0 at the first handoff)."""
        layer = self.layers[index]
        if layer.wall_clock:
            return self.instant(layer.start + k * layer.turn)
        return self.instant(layer.start) + k * layer.turn

    def turn_at(self, index: int, at: datetime) -> int:
        """The turn of layer `index` that `at` falls in (negative before the first handoff)."""
        layer = self.layers[index]
        at = at.astimezone(UTC)
        if layer.wall_clock:
            local = at.astimezone(self._zone).replace(tzinfo=None)
            k = (local - layer.start) // layer.turn
        else:
            k = (at - self.instant(layer.start)) // layer.turn
        # Wall-clock arithmetic is off by one turn at most near a DST change: settle it.
        while self.handoff(index, k) > at:
            k -= 1
        while self.handoff(index, k + 1) <= at:
            k += 1
        return k

    def layer_user(self, index: int, at: datetime) -> str | None:
        """Who layer `index` has on call at `at`: None before its first handoff and outside
        its restrictions."""
        k = self.turn_at(index, at)
        if k < 0:
            return None
        restriction = self._restrictions[index]
        if restriction is not None and not restriction.is_open(at):
            return None
        users = self.layers[index].users
        return users[k % len(users)]

    def layer_boundary(self, index: int, at: datetime) -> datetime:
        """The next instant after `at` where layer `index`'s answer may change."""
        candidates = [self.handoff(index, max(self.turn_at(index, at) + 1, 0))]
        restriction = self._restrictions[index]
        if restriction is not None:
            close = restriction.next_close(at)
            if close is not None:
                candidates.append(close)
            else:
                opening = restriction.next_open(at)
                if opening > at:
                    candidates.append(opening)
        return min(c for c in candidates if c > at)

    # --- the whole schedule -----------------------------------------------------------------

    def fixed_overrides(self) -> list[Override]:
        return [Override(o.user, self.instant(o.from_), self.instant(o.to)) for o in self.overrides]


@dataclass(frozen=True)
class Override:
    """`user` on call over every layer from `start` to `end` (aware instants, end excluded)."""

    user: str
    start: datetime
    end: datetime


@dataclass(frozen=True)
class Change:
    """From `at` on, `user` is on call (None: nobody)."""

    at: datetime
    user: str | None


@dataclass(frozen=True)
class Shift:
    start: datetime
    end: datetime
    user: str | None


class Rota:
    """A schedule with its overrides (the file's first, then the stored ones in the order they
    were made: a later one wins), answering who is on call when."""

    def __init__(self, spec: ScheduleSpec, overrides: Iterable[Override] = ()) -> None:
        self.spec = spec
        self.overrides: Sequence[Override] = [
            Override(o.user, o.start.astimezone(UTC), o.end.astimezone(UTC))
            for o in (*spec.fixed_overrides(), *overrides)
        ]

    def on_call(self, at: datetime) -> str | None:
        """The person on call at `at` (aware), or None when no one is."""
        return self.covered_by(at)[0]

    def covered_by(self, at: datetime) -> tuple[str | None, str | None]:
        """(who is on call at `at`, why: `override` or the layer's name); (None, None) in a
        gap."""
        at = _utc(at)
        for override in reversed(self.overrides):
            if override.start <= at < override.end:
                return override.user, "override"
        for index in reversed(range(len(self.spec.layers))):
            user = self.spec.layer_user(index, at)
            if user is not None:
                return user, self.spec.layers[index].name
        return None, None

    def _boundary(self, at: datetime) -> datetime:
        candidates = [self.spec.layer_boundary(i, at) for i in range(len(self.spec.layers))]
        for override in self.overrides:
            candidates += [m for m in (override.start, override.end) if m > at]
        return min(candidates)

    def next_change(
        self, at: datetime, *, within: timedelta = timedelta(days=366)
    ) -> Change | None:
        """The first instant after `at` when someone else (or no one) is on call, and who;
        None when nothing changes within `within`."""
        at = _utc(at)
        current = self.on_call(at)
        moment = at
        for _ in range(MAX_STEPS):
            moment = self._boundary(moment)
            if moment - at > within:
                return None
            user = self.on_call(moment)
            if user != current:
                return Change(moment, user)
        return None

    def shifts(self, start: datetime, end: datetime) -> list[Shift]:
        """Who is on call from `start` to `end`, as consecutive shifts (None: a gap)."""
        start, end = _utc(start), _utc(end)
        found: list[Shift] = []
        moment, user = start, self.on_call(start)
        while moment < end:
            change = self.next_change(moment, within=end - moment)
            if change is None or change.at >= end:
                found.append(Shift(moment, end, user))
                break
            found.append(Shift(moment, change.at, user))
            moment, user = change.at, change.user
        return found

    def gaps(self, start: datetime, end: datetime) -> list[Shift]:
        """The stretches from `start` to `end` when no one is on call."""
        return [shift for shift in self.shifts(start, end) if shift.user is None]


def _utc(moment: datetime) -> datetime:
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError("on-call arithmetic needs timezone-aware datetimes")
    return moment.astimezone(UTC)


def schedule_name(recipient: str) -> str | None:
    """`oncall:support-primary` -> `support-primary`; None for any other recipient."""
    if recipient.startswith(ONCALL_PREFIX):
        return recipient.removeprefix(ONCALL_PREFIX)
    return None
