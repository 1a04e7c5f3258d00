"""Business calendars and the pure arithmetic the SLA clocks run on.

A calendar is an IANA timezone, weekly working hours (or `24x7`) and holidays. Holidays may
be explicit dates and/or a country's public holidays; the country's dates are computed when
the definition is *loaded* (last year to three years ahead) and kept in `resolved_holidays`,
so the arithmetic below never calls the `holidays` package: it is pure and deterministic,
safe in workflow code (no I/O, no clock), and gives the same answer on replay.

Every method takes and returns timezone-aware datetimes; results are in UTC. Working hours
are wall-clock times in the calendar's timezone, so a DST change moves them with the clock.

A day's open intervals: the date's `overrides` entry if it has one (it wins over the weekly
hours and over holidays; `closed` or `[]` closes the day), else nothing on a holiday, else the
weekly `hours`; then the weekday's `breaks` are cut out.

The arithmetic follows zendesk/biz, the engine behind Zendesk's and Zammad's business-hour
clocks, with one deliberate difference (definitions/README.md, *Business calendars*):

- open intervals are half-open: a calendar open 08:00-18:00 is open at 08:00, closed at 18:00;
- adding zero at a closed instant gives the next opening (biz: `time(0, :hours).after(t)`);
- a budget that runs out exactly when the calendar closes is due at that closing instant: the
  earliest instant by which the budget has elapsed. biz (since 1.8.2, zendesk/biz#139) answers
  the next opening instead; `next_open(due)` is biz's answer. Kept because the clocks of
  running escalations already fire at closing instants, and a workflow replaying its history
  must compute the same timers; and a breach is then stamped when the budget ran out;
- business days (`add_business_days`): the n-th later day that has any open time, at the same
  local time of day, then the next moment in business hours (biz's day semantics), so the
  result is always in business hours.
"""

from __future__ import annotations

import itertools
import re
from datetime import UTC, date, datetime, time, timedelta
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PrivateAttr,
    field_validator,
    model_validator,
)

WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
ALWAYS = "24x7"
HOLIDAY_YEARS_BEFORE = 1
HOLIDAY_YEARS_AFTER = 3
_MAX_SEARCH_DAYS = 40_000
"""add_business_time/next_open give up after this many days (a calendar that never opens)."""
_DAY_CACHE_SIZE = 4_096

_RANGE = re.compile(r"^(\d{2}):(\d{2})-(\d{2}):(\d{2})$")
_ISO_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
CLOSED = "closed"
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


Minutes = tuple[tuple[int, int], ...]


def parse_ranges(where: str, ranges: str | list[str]) -> list[tuple[int, int]]:
    """One entry's ranges (`"08:00-12:00"` or a list of them), sorted; overlaps refused."""
    texts = [ranges] if isinstance(ranges, str) else ranges
    parsed = sorted(_parse_range(text) for text in texts)
    for (first_start, first_end), (start, end) in itertools.pairwise(parsed):
        if start < first_end:
            prefix = f"{where}: " if where else ""
            raise ValueError(
                f"{prefix}time ranges overlap ({_format_range(first_start, first_end)} and "
                f"{_format_range(start, end)})"
            )
    return parsed


def _subtract(ranges: Minutes, cuts: Minutes) -> Minutes:
    """`ranges` with every minute of `cuts` removed (both sorted, minutes of one day)."""
    result: list[tuple[int, int]] = []
    for start, end in ranges:
        pieces = [(start, end)]
        for cut_start, cut_end in cuts:
            pieces = [
                piece
                for low, high in pieces
                for piece in ((low, min(high, cut_start)), (max(low, cut_end), high))
                if piece[1] > piece[0]
            ]
        result.extend(pieces)
    return tuple(result)


def _override_ranges(value: str | list[str]) -> list[str]:
    if value == CLOSED or value == []:
        return []
    if isinstance(value, str) and value.strip().lower() == CLOSED:
        return []
    return value if isinstance(value, list) else [value]


def _override_value(value: str | list[str]) -> list[str]:
    """One date's hours, normalised (`closed` is `[]`); checked per entry so an error points
    at the date's own line."""
    ranges = _override_ranges(value)
    try:
        parsed = parse_ranges("", ranges) if ranges else []
    except ValueError as exc:
        raise ValueError(f"{exc}; or `closed` for a closed day") from None
    return [_format_range(start, end) for start, end in parsed]


def _break_value(value: str | list[str]) -> str | list[str]:
    parse_ranges("", value)  # per entry, so an error points at the entry's own line
    return value


def _calendar_date(value: Any) -> Any:
    """Only YYYY-MM-DD (or a `date`): pydantic alone would also take a datetime or a Unix
    timestamp, and its messages do not say which form is wanted."""
    if isinstance(value, datetime):
        raise ValueError(f"{value.isoformat()!r} has a time of day: give the date, e.g. 2026-12-24")
    if isinstance(value, date):
        return value
    text = value.strip() if isinstance(value, str) else ""
    if _ISO_DATE.match(text):
        try:
            return date.fromisoformat(text)
        except ValueError as exc:
            raise ValueError(f"{text!r} does not exist ({exc})") from None
    raise ValueError(f"{str(value)[:30]!r} is not a date: write YYYY-MM-DD, e.g. 2026-12-24")


CalendarDate = Annotated[date, BeforeValidator(_calendar_date)]
OverrideHours = Annotated[str | list[str], AfterValidator(_override_value)]
BreakRanges = Annotated[str | list[str], AfterValidator(_break_value)]


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
    dates: list[CalendarDate] = Field(
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
    breaks: dict[str, BreakRanges] = Field(
        default_factory=dict,
        description="Closed stretches within the hours, per day (mon-fri: 12:00-13:00); "
        "several keys may name the same day. Breaks apply to overrides too.",
    )
    overrides: dict[CalendarDate, OverrideHours] = Field(
        default_factory=dict,
        description="Hours for one date instead of the weekly ones, e.g. "
        '"2026-12-24": "09:00-12:00", a Saturday\'s extra hours, or `closed`. An override '
        "wins over the weekly hours and over holidays.",
    )
    holidays: Holidays = Field(default_factory=Holidays)
    resolved_holidays: list[date] = Field(
        default_factory=list,
        description="Filled when the definition is loaded: the explicit dates plus the "
        "country's public holidays from last year to three years ahead. Not written by hand.",
    )

    _zone: ZoneInfo = PrivateAttr()
    _week: tuple[Minutes, ...] = PrivateAttr()
    _breaks: tuple[Minutes, ...] = PrivateAttr()
    _overrides: dict[date, Minutes] = PrivateAttr()
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
            parsed = parse_ranges(key, ranges)
            for day in _parse_day_keys(key):
                if day in per_day:
                    raise ValueError(f"{WEEKDAYS[day]} is given more than once")
                per_day[day] = parsed
        if not any(per_day.values()):
            raise ValueError("the calendar is never open: give at least one day's hours")
        return {WEEKDAYS[day]: [_format_range(*r) for r in per_day[day]] for day in sorted(per_day)}

    @field_validator("breaks")
    @classmethod
    def _normalise_breaks(cls, value: dict[str, str | list[str]]) -> dict[str, str | list[str]]:
        # Keys may share days (mon-fri lunch, a longer Friday break): merged per day, in order.
        # Overlaps within one key are refused; across keys lint reports them (lint.py).
        per_day: dict[int, list[tuple[int, int]]] = {}
        for key, ranges in value.items():
            parsed = parse_ranges(f"breaks.{key}", ranges)
            for day in _parse_day_keys(key):
                per_day.setdefault(day, []).extend(parsed)
        merged: dict[str, str | list[str]] = {}
        for day in sorted(per_day):
            union: list[list[int]] = []
            for start, end in sorted(per_day[day]):
                if union and start <= union[-1][1]:
                    union[-1][1] = max(union[-1][1], end)
                else:
                    union.append([start, end])
            merged[WEEKDAYS[day]] = [_format_range(start, end) for start, end in union]
        return merged

    @field_validator("overrides")
    @classmethod
    def _normalise_overrides(
        cls, value: dict[date, str | list[str]]
    ) -> dict[date, str | list[str]]:
        return {day: value[day] for day in sorted(value)}

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
        self._breaks = tuple(
            tuple(parse_ranges(name, self.breaks.get(name, []))) for name in WEEKDAYS
        )
        self._overrides = {
            day: tuple(parse_ranges(day.isoformat(), ranges))
            for day, ranges in self.overrides.items()
        }
        self._closed_days = frozenset(self.resolved_holidays)
        self._day_cache = {}

    # --- arithmetic (pure) ------------------------------------------------------------------

    @property
    def always_open(self) -> bool:
        return (
            self.hours == ALWAYS
            and not self._closed_days
            and not self._overrides
            and not any(self._breaks)
        )

    def day_minutes(self, day: date) -> Minutes:
        """Local date `day`'s open ranges in minutes since midnight: the override, else the
        weekly hours unless it is a holiday, less the weekday's breaks."""
        override = self._overrides.get(day)
        if override is not None:
            ranges = override
        elif day in self._closed_days:
            return ()
        else:
            ranges = self._week[day.weekday()]
        return _subtract(ranges, self._breaks[day.weekday()])

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
        intervals = tuple(
            (self._instant(day, start), self._instant(day, end))
            for start, end in self.day_minutes(day)
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
        start, end = start.astimezone(UTC), end.astimezone(UTC)
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
        """The earliest instant by which `duration` of working time has passed since `start`
        (UTC). Zero at a closed instant is the next opening (as in biz); a budget that runs out
        exactly at a closing time is due at that closing instant (biz: the next opening; see
        the module for why)."""
        _require_aware(start)
        start = start.astimezone(UTC)
        if duration <= timedelta(0):
            return self.next_open(start)
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

    def add_business_days(self, start: datetime, days: int) -> datetime:
        """The `days`-th later local date that has open time, at `start`'s local time of day,
        then the next moment in business hours (biz's day semantics): always open."""
        _require_aware(start)
        start = start.astimezone(UTC)
        if days < 0:
            raise ValueError("business days are counted forward")
        local = start.astimezone(self._zone)
        day = local.date()
        for _ in range(days):
            day += timedelta(days=1)
            for _ in range(_MAX_SEARCH_DAYS):
                if self.open_intervals(day):
                    break
                day += timedelta(days=1)
            else:
                raise ValueError("the calendar does not open again within a hundred years")
        same_time = datetime.combine(day, local.time().replace(tzinfo=None), tzinfo=self._zone)
        return self.next_open(same_time)

    def business_days_after(self, since: datetime, span: timedelta) -> datetime:
        """`span`'s whole days as business days (`add_business_days`), its rest as business
        time: a stall of `2d` started Friday 15:00 is due Tuesday 15:00; in business hours.
        On an always-open calendar this is plain `since + span`."""
        _require_aware(since)
        since = since.astimezone(UTC)
        if self.always_open:
            return (since + span).astimezone(UTC)
        moment = self.add_business_days(since, span.days)
        rest = span - timedelta(days=span.days)
        return self.add_business_time(moment, rest) if rest else moment

    def is_open(self, at: datetime) -> bool:
        _require_aware(at)
        at = at.astimezone(UTC)
        if self.always_open:
            return True
        return any(
            opens <= at < closes for opens, closes in self.open_intervals(self._local_date(at))
        )

    def next_open(self, at: datetime) -> datetime:
        """`at` itself when open, otherwise the next moment the calendar opens (UTC)."""
        _require_aware(at)
        at = at.astimezone(UTC)
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
        at = at.astimezone(UTC)
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


def calendar_findings(calendar: BusinessCalendar, raw: Any) -> list[tuple[tuple[str, ...], str]]:
    """What lint reports about a valid calendar, given also as written (`raw`, the YAML data,
    which keeps the break keys the model merges): (path inside the calendar, message).
    Overlaps within one entry are schema errors already; these are the ones across entries,
    breaks that cannot apply and overrides of listed holidays."""
    if not isinstance(raw, dict):
        return []
    findings: list[tuple[tuple[str, ...], str]] = []
    breaks = raw.get("breaks") or {}
    seen: dict[int, list[tuple[str, tuple[int, int]]]] = {}
    for key, ranges in breaks.items():
        parsed = parse_ranges(key, ranges)
        for day in _parse_day_keys(key):
            for start, end in parsed:
                for other_key, (other_start, other_end) in seen.get(day, []):
                    if start < other_end and other_start < end:
                        findings.append(
                            (
                                ("breaks", key),
                                f"{_format_range(start, end)} on {WEEKDAYS[day]} overlaps "
                                f"{_format_range(other_start, other_end)} of breaks.{other_key}",
                            )
                        )
                # A break also cuts into the overrides on its weekday (a Saturday's extra hours).
                hours = calendar._week[day]
                override_hours = [
                    minutes
                    for when, minutes in calendar._overrides.items()
                    if when.weekday() == day and minutes
                ]
                opened = tuple(sorted(r for minutes in (hours, *override_hours) for r in minutes))
                if _subtract(((start, end),), opened):
                    opening = ", ".join(_format_range(a, b) for a, b in hours) or "closed"
                    also = f" nor an override's on a {WEEKDAYS[day]}" if override_hours else ""
                    findings.append(
                        (
                            ("breaks", key),
                            f"{_format_range(start, end)} on {WEEKDAYS[day]} is not within the "
                            f"opening hours ({opening}){also}: the part outside them has no "
                            "effect",
                        )
                    )
            seen.setdefault(day, []).extend((key, r) for r in parsed)
    listed = set(calendar.holidays.dates)
    for key in raw.get("overrides") or {}:
        try:
            overridden = date.fromisoformat(str(key))
        except ValueError:
            continue
        if overridden in listed:
            findings.append(
                (
                    ("overrides", str(key)),
                    f"{overridden.isoformat()} is also in holidays.dates: the override wins",
                )
            )
    return findings


def _require_aware(*moments: datetime) -> None:
    # Callers then work in UTC: an aware local time in a DST gap or fold compares unequal to
    # every instant of another zone (PEP 495), so local inputs are normalised first.
    for moment in moments:
        if moment.tzinfo is None or moment.utcoffset() is None:
            raise ValueError("calendar arithmetic needs timezone-aware datetimes")
