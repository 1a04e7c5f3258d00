"""Business calendars and the pure arithmetic the SLA clocks run on.

A calendar is an IANA timezone, weekly working hours (or `24x7`) and holidays. Holidays may
be explicit dates and/or a country's public holidays; the country's dates are computed when
the definition is *loaded* (last year to three years ahead) and kept in `resolved_holidays`,
so the arithmetic below never calls the `holidays` package: it is pure and deterministic,
safe in workflow code (no I/O, no clock), and gives the same answer on replay.

Every method takes and returns timezone-aware datetimes; results are in UTC. Working hours
are wall-clock times in the calendar's timezone, so a DST change moves them with the clock.
"""

from __future__ import annotations

import itertools
import re
from datetime import UTC, date, datetime, time, timedelta
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, field_validator, model_validator

WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
ALWAYS = "24x7"
HOLIDAY_YEARS_BEFORE = 1
HOLIDAY_YEARS_AFTER = 3
_MAX_SEARCH_DAYS = 40_000
"""add_business_time/next_open give up after this many days (a calendar that never opens)."""
_DAY_CACHE_SIZE = 4_096

_RANGE = re.compile(r"^(\d{2}):(\d{2})-(\d{2}):(\d{2})$")
_COUNTRY = re.compile(r"^[A-Z]{2}$")

Interval = tuple[datetime, datetime]


def _parse_day_keys(key: str) -> list[int]:
    """`mon-fri` -> [0..4], `sat,sun` -> [5, 6], `wed` -> [2]."""
    days: list[int] = []
    for part in key.lower().replace(" ", "").split(","):
        first, _, last = part.partition("-")
        if first not in WEEKDAYS or (last and last not in WEEKDAYS):
            raise ValueError(
                f"{key[:30]!r} is not a day or day range: use mon..sun, e.g. mon-fri or sat,sun"
            )
        start = WEEKDAYS.index(first)
        end = WEEKDAYS.index(last) if last else start
        if end < start:
            raise ValueError(f"{key[:30]!r}: a day range runs forward, e.g. mon-fri")
        days.extend(range(start, end + 1))
    return days


def _parse_range(text: str) -> tuple[int, int]:
    """`08:00-18:00` as minutes since local midnight; the end may be `24:00`."""
    match = _RANGE.match(text.strip())
    if not match:
        raise ValueError(f"{text[:30]!r} is not a time range such as 08:00-18:00")
    h1, m1, h2, m2 = (int(n) for n in match.groups())
    if h1 > 23 or m1 > 59 or m2 > 59 or h2 > 24 or (h2 == 24 and m2 != 0):
        raise ValueError(f"{text!r} has a time that does not exist")
    start, end = h1 * 60 + m1, h2 * 60 + m2
    if end <= start:
        raise ValueError(
            f"{text!r} ends before it starts: split a night shift at midnight "
            "(22:00-24:00 on one day, 00:00-06:00 on the next)"
        )
    return start, end


def _format_range(start: int, end: int) -> str:
    return f"{start // 60:02d}:{start % 60:02d}-{end // 60:02d}:{end % 60:02d}"


def _country_holidays(country: str, subdivision: str | None, years: list[int]) -> list[date]:
    import holidays  # load time only: workflow code never reaches this (resolved_holidays)

    try:
        found = holidays.country_holidays(country, subdiv=subdivision, years=years)
    except NotImplementedError:
        where = f"{country}/{subdivision}" if subdivision else country
        raise ValueError(f"no public holidays are known for {where!r}") from None
    return sorted(found.keys())


class Holidays(BaseModel):
    model_config = ConfigDict(extra="forbid")

    country: str | None = Field(
        None, description="ISO 3166 country code whose public holidays are closed (e.g. DE)."
    )
    subdivision: str | None = Field(
        None, description="Region within the country whose extra holidays apply (e.g. BY)."
    )
    dates: list[date] = Field(
        default_factory=list, description="Extra closed dates (YYYY-MM-DD), local to the calendar."
    )

    @field_validator("country")
    @classmethod
    def _check_country(cls, value: str | None) -> str | None:
        if value is not None and not _COUNTRY.match(value):
            raise ValueError(f"{value[:20]!r} is not a two-letter country code such as DE")
        return value


class BusinessCalendar(BaseModel):
    """Working time: an IANA timezone, weekly hours or `24x7`, and holidays."""

    model_config = ConfigDict(extra="forbid")

    timezone: str = Field(
        "UTC", description="IANA timezone of the working hours, e.g. Europe/Berlin."
    )
    hours: Literal["24x7"] | dict[str, str | list[str]] = Field(
        "24x7",
        description="`24x7`, or days (mon, mon-fri, sat,sun) to time ranges (08:00-18:00, "
        "or a list of them). Days not listed are closed.",
    )
    holidays: Holidays = Field(default_factory=Holidays)
    resolved_holidays: list[date] = Field(
        default_factory=list,
        description="Filled when the definition is loaded: the explicit dates plus the "
        "country's public holidays from last year to three years ahead. Not written by hand.",
    )

    _zone: ZoneInfo = PrivateAttr()
    _week: tuple[tuple[tuple[int, int], ...], ...] = PrivateAttr()
    _closed_days: frozenset[date] = PrivateAttr()
    _day_cache: dict[date, tuple[Interval, ...]] = PrivateAttr(default_factory=dict)

    def __eq__(self, other: object) -> bool:
        # Compare what was defined, not the private caches filled by the arithmetic.
        if not isinstance(other, BusinessCalendar):
            return NotImplemented
        return self.__dict__ == other.__dict__

    __hash__ = None  # type: ignore[assignment]

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, data: Any) -> Any:
        # `calendar: 24x7` is short for "always open, in UTC".
        if data == ALWAYS:
            return {"timezone": "UTC", "hours": ALWAYS}
        return data

    @field_validator("timezone")
    @classmethod
    def _check_timezone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError, OSError):
            raise ValueError(
                f"{value[:60]!r} is not an IANA timezone such as Europe/Berlin or UTC"
            ) from None
        return value

    @field_validator("hours")
    @classmethod
    def _normalise_hours(
        cls, value: Literal["24x7"] | dict[str, str | list[str]]
    ) -> Literal["24x7"] | dict[str, str | list[str]]:
        if isinstance(value, str):
            return value
        per_day: dict[int, list[tuple[int, int]]] = {}
        for key, ranges in value.items():
            texts = [ranges] if isinstance(ranges, str) else ranges
            parsed = sorted(_parse_range(text) for text in texts)
            for (_, end), (start, _) in itertools.pairwise(parsed):
                if start < end:
                    raise ValueError(f"{key}: time ranges overlap")
            for day in _parse_day_keys(key):
                if day in per_day:
                    raise ValueError(f"{WEEKDAYS[day]} is given more than once")
                per_day[day] = parsed
        if not any(per_day.values()):
            raise ValueError("the calendar is never open: give at least one day's hours")
        return {WEEKDAYS[day]: [_format_range(*r) for r in per_day[day]] for day in sorted(per_day)}

    @model_validator(mode="after")
    def _resolve(self) -> BusinessCalendar:
        if self.holidays.country and not self.resolved_holidays:
            # Clock read at load time only (never in a workflow): the years to cover.
            this_year = datetime.now(UTC).year
            years = list(
                range(this_year - HOLIDAY_YEARS_BEFORE, this_year + HOLIDAY_YEARS_AFTER + 1)
            )
            public = _country_holidays(self.holidays.country, self.holidays.subdivision, years)
            self.resolved_holidays = sorted(set(public) | set(self.holidays.dates))
        elif self.holidays.dates and not self.resolved_holidays:
            self.resolved_holidays = sorted(set(self.holidays.dates))
        self._prepare()
        return self

    def _prepare(self) -> None:
        self._zone = ZoneInfo(self.timezone)
        if self.hours == ALWAYS:
            self._week = tuple(((0, 1440),) for _ in WEEKDAYS)
        else:
            week: list[tuple[tuple[int, int], ...]] = []
            hours = self.hours
            assert isinstance(hours, dict)  # narrowed: not the 24x7 literal
            for name in WEEKDAYS:
                texts = hours.get(name, [])
                ranges = [texts] if isinstance(texts, str) else texts
                week.append(tuple(_parse_range(text) for text in ranges))
            self._week = tuple(week)
        self._closed_days = frozenset(self.resolved_holidays)
        self._day_cache = {}

    # --- arithmetic (pure) ------------------------------------------------------------------

    @property
    def always_open(self) -> bool:
        return self.hours == ALWAYS and not self._closed_days

    def local_time(self, at: datetime) -> datetime:
        """`at` in the calendar's timezone (for messages and the Temporal UI)."""
        return at.astimezone(self._zone)

    def _local_date(self, at: datetime) -> date:
        return at.astimezone(self._zone).date()

    def _instant(self, day: date, minute: int) -> datetime:
        if minute == 1440:
            day, minute = day + timedelta(days=1), 0
        local = datetime.combine(day, time(minute // 60, minute % 60), tzinfo=self._zone)
        return local.astimezone(UTC)

    def open_intervals(self, day: date) -> tuple[Interval, ...]:
        """The UTC instants the calendar is open on local date `day`."""
        cached = self._day_cache.get(day)
        if cached is not None:
            return cached
        if day in self._closed_days:
            intervals: tuple[Interval, ...] = ()
        else:
            intervals = tuple(
                (self._instant(day, start), self._instant(day, end))
                for start, end in self._week[day.weekday()]
            )
            # Consecutive ranges (24x7 days) touch at midnight; the DST gap can make a
            # local range empty (02:00-02:30 on a spring-forward day).
            intervals = tuple((a, b) for a, b in intervals if b > a)
        if len(self._day_cache) >= _DAY_CACHE_SIZE:
            self._day_cache.clear()
        self._day_cache[day] = intervals
        return intervals

    def business_time_between(self, start: datetime, end: datetime) -> timedelta:
        """Working time from `start` to `end` (zero when `end` is not after `start`)."""
        _require_aware(start, end)
        if end <= start:
            return timedelta(0)
        if self.always_open:
            return end - start
        total = timedelta(0)
        day, last = self._local_date(start), self._local_date(end)
        while day <= last:
            for opens, closes in self.open_intervals(day):
                low, high = max(opens, start), min(closes, end)
                if high > low:
                    total += high - low
            day += timedelta(days=1)
        return total

    def add_business_time(self, start: datetime, duration: timedelta) -> datetime:
        """The instant at which `duration` of working time has passed since `start` (UTC)."""
        _require_aware(start)
        if duration <= timedelta(0):
            return start.astimezone(UTC)
        if self.always_open:
            return (start + duration).astimezone(UTC)
        remaining = duration
        day = self._local_date(start)
        for _ in range(_MAX_SEARCH_DAYS):
            for opens, closes in self.open_intervals(day):
                low = max(opens, start)
                if closes <= low:
                    continue
                available = closes - low
                if remaining <= available:
                    return low + remaining
                remaining -= available
            day += timedelta(days=1)
        raise ValueError("the calendar does not open again within a hundred years")

    def is_open(self, at: datetime) -> bool:
        _require_aware(at)
        if self.always_open:
            return True
        return any(
            opens <= at < closes for opens, closes in self.open_intervals(self._local_date(at))
        )

    def next_open(self, at: datetime) -> datetime:
        """`at` itself when open, otherwise the next moment the calendar opens (UTC)."""
        _require_aware(at)
        if self.always_open:
            return at.astimezone(UTC)
        day = self._local_date(at)
        for _ in range(_MAX_SEARCH_DAYS):
            for opens, closes in self.open_intervals(day):
                if closes > at:
                    return max(opens, at.astimezone(UTC))
            day += timedelta(days=1)
        raise ValueError("the calendar does not open again within a hundred years")

    def next_close(self, at: datetime) -> datetime | None:
        """When the current open stretch ends (None if closed now or always open)."""
        _require_aware(at)
        if self.always_open or not self.is_open(at):
            return None
        day = self._local_date(at)
        end: datetime | None = None
        for _ in range(_MAX_SEARCH_DAYS):
            for opens, closes in self.open_intervals(day):
                if end is None and opens <= at < closes:
                    end = closes
                elif end is not None and opens == end:
                    end = closes  # contiguous across midnight
                elif end is not None and opens > end:
                    return end
            day += timedelta(days=1)
        return end


def _require_aware(*moments: datetime) -> None:
    for moment in moments:
        if moment.tzinfo is None or moment.utcoffset() is None:
            raise ValueError("calendar arithmetic needs timezone-aware datetimes")
