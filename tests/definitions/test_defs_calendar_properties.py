"""Property tests of calendar arithmetic across DST changes in Europe/Berlin,
America/New_York and Australia/Sydney, with holidays, per-date overrides and breaks
(issue 16, item 7). Moments are drawn anywhere in 2026 and, half the time, within three days
of one of the zone's DST changes."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from definitions.calendar import BusinessCalendar

CALENDARS = {
    "Europe/Berlin": {
        "timezone": "Europe/Berlin",
        "hours": {"mon-fri": "08:00-18:00", "sat": "10:00-14:00"},
        "breaks": {"mon-fri": "12:00-13:00", "fri": "15:00-15:30"},
        "overrides": {
            "2026-03-29": "00:00-04:00",  # spring forward at 02:00: a range with a gap
            "2026-10-25": "01:00-05:00",  # fall back at 03:00: 02:00-03:00 twice
            "2026-12-24": "09:00-12:00",
            "2026-12-31": "closed",
        },
        "holidays": {"country": "DE", "subdivision": "BE", "dates": ["2026-04-06", "2026-12-26"]},
    },
    "America/New_York": {
        "timezone": "America/New_York",
        "hours": {"mon-fri": ["09:00-12:30", "13:00-17:00"], "sun": "22:00-24:00"},
        "breaks": {"mon-fri": "15:00-15:15"},
        "overrides": {
            "2026-03-08": "00:00-06:00",  # spring forward at 02:00
            "2026-11-01": "00:00-06:00",  # fall back at 02:00
            "2026-11-28": "10:00-14:00",  # a Saturday of extra hours
        },
        "holidays": {"country": "US", "dates": ["2026-11-27"]},
    },
    "Australia/Sydney": {
        "timezone": "Australia/Sydney",
        "hours": "24x7",
        "breaks": {"sun": "01:00-04:00", "mon-fri": "12:00-13:00"},  # Sundays: across the DST hour
        "overrides": {"2026-04-05": "02:00-03:30", "2026-12-25": "closed"},
        "holidays": {"country": "AU", "subdivision": "NSW", "dates": ["2026-10-05"]},
    },
}
DST_CHANGES = {
    "Europe/Berlin": [date(2026, 3, 29), date(2026, 10, 25)],
    "America/New_York": [date(2026, 3, 8), date(2026, 11, 1)],
    "Australia/Sydney": [date(2026, 4, 5), date(2026, 10, 4)],
}
ZONES = list(CALENDARS)
BUILT = {zone: BusinessCalendar.model_validate(spec) for zone, spec in CALENDARS.items()}


def test_the_dst_dates_are_real_changes() -> None:
    for zone, days in DST_CHANGES.items():
        tz = ZoneInfo(zone)
        for day in days:
            before = datetime.combine(day, datetime.min.time(), tzinfo=tz).utcoffset()
            after = datetime.combine(day + timedelta(days=1), datetime.min.time(), tzinfo=tz)
            assert before != after.utcoffset(), (zone, day)


def moments(zone: str) -> st.SearchStrategy[datetime]:
    anywhere = st.datetimes(
        min_value=datetime(2026, 1, 1), max_value=datetime(2026, 12, 31), timezones=st.just(UTC)
    )
    near_dst = st.builds(
        # Counted in UTC from local midnight: real instants, none in a DST gap.
        lambda day, minutes: (
            datetime.combine(day, datetime.min.time(), tzinfo=ZoneInfo(zone)).astimezone(UTC)
            + timedelta(minutes=minutes)
        ),
        st.sampled_from(DST_CHANGES[zone]),
        st.integers(min_value=-3 * 1440, max_value=3 * 1440),
    )
    return st.one_of(anywhere, near_dst)


budgets = st.integers(min_value=1, max_value=60 * 60 * 24 * 12).map(
    lambda seconds: timedelta(seconds=seconds)
)


@st.composite
def case(draw: st.DrawFn) -> tuple[BusinessCalendar, datetime]:
    zone = draw(st.sampled_from(ZONES))
    return BUILT[zone], draw(moments(zone))


@settings(max_examples=300, deadline=None)
@given(case(), budgets)
def test_adding_then_measuring_gives_the_budget_back(
    drawn: tuple[BusinessCalendar, datetime], budget: timedelta
) -> None:
    calendar, start = drawn
    due = calendar.add_business_time(start, budget)
    assert due > start
    assert calendar.business_time_between(start, due) == budget
    # The due instant is the earliest: working time right before it, open or a closing time.
    assert calendar.is_open(due - timedelta(microseconds=1))
    assert calendar.business_time_between(start, due - timedelta(microseconds=1)) < budget


@settings(max_examples=200, deadline=None)
@given(case())
def test_zero_is_the_next_opening(drawn: tuple[BusinessCalendar, datetime]) -> None:
    calendar, start = drawn
    opens = calendar.add_business_time(start, timedelta(0))
    assert opens == calendar.next_open(start)
    assert calendar.is_open(opens)
    assert calendar.business_time_between(start, opens) == timedelta(0)
    if calendar.is_open(start):
        assert opens == start


@settings(max_examples=200, deadline=None)
@given(case(), budgets, budgets)
def test_adding_in_two_steps_is_adding_once(
    drawn: tuple[BusinessCalendar, datetime], first: timedelta, second: timedelta
) -> None:
    calendar, start = drawn
    once = calendar.add_business_time(start, first + second)
    assert calendar.add_business_time(calendar.add_business_time(start, first), second) == once
    assert calendar.add_business_time(start, min(first, second)) <= once


@settings(max_examples=200, deadline=None)
@given(
    case(),
    st.integers(min_value=0, max_value=5 * 86_400),
    st.lists(st.integers(min_value=0, max_value=60 * 60 * 24 * 12), min_size=2, max_size=2),
)
def test_adding_and_measuring_are_monotone(
    drawn: tuple[BusinessCalendar, datetime], later_by: int, seconds: list[int]
) -> None:
    calendar, start = drawn
    later = start + timedelta(seconds=later_by)
    small, large = (timedelta(seconds=n) for n in sorted(seconds))
    # A later start is never due earlier, whatever the budget (zero included).
    assert calendar.add_business_time(start, small) <= calendar.add_business_time(later, small)
    # A larger budget is due strictly later: it needs more open time.
    if small < large:
        assert calendar.add_business_time(start, small) < calendar.add_business_time(start, large)
    # Measuring to a later end never gives less, from a later start never more.
    end = later + small
    assert calendar.business_time_between(start, later) <= calendar.business_time_between(
        start, end
    )
    assert calendar.business_time_between(later, end) <= calendar.business_time_between(start, end)


@settings(max_examples=200, deadline=None)
@given(case(), st.lists(st.integers(min_value=0, max_value=20 * 86_400), min_size=2, max_size=2))
def test_measuring_is_additive(
    drawn: tuple[BusinessCalendar, datetime], offsets: list[int]
) -> None:
    calendar, start = drawn
    middle, end = (start + timedelta(seconds=n) for n in sorted(offsets))
    whole = calendar.business_time_between(start, end)
    assert whole == calendar.business_time_between(start, middle) + calendar.business_time_between(
        middle, end
    )
    assert whole <= end - start


@settings(max_examples=200, deadline=None)
@given(case(), st.integers(min_value=0, max_value=15), budgets)
def test_business_days_land_in_business_hours(
    drawn: tuple[BusinessCalendar, datetime], days: int, rest: timedelta
) -> None:
    calendar, start = drawn
    landed = calendar.add_business_days(start, days)
    assert calendar.is_open(landed)
    assert landed >= start
    span = timedelta(days=days) + timedelta(seconds=rest.total_seconds() % 86_400)
    due = calendar.business_days_after(start, span)
    assert due >= landed
    if span.seconds:
        assert calendar.is_open(due - timedelta(microseconds=1))
    else:
        assert calendar.is_open(due)


@pytest.mark.parametrize("zone", ZONES)
def test_the_override_and_break_hours_survive_the_dst_day(zone: str) -> None:
    calendar = BUILT[zone]
    for day in DST_CHANGES[zone]:
        intervals = calendar.open_intervals(day)
        measured = sum((b - a for a, b in intervals), timedelta(0))
        start = datetime.combine(day, datetime.min.time(), tzinfo=ZoneInfo(zone))
        assert calendar.business_time_between(start, start + timedelta(days=2)) >= measured
        assert all(b > a for a, b in intervals)
