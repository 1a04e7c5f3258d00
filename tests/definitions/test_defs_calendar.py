"""Business-time arithmetic: DST, weekends, holidays, 24x7, and its invariants."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import holidays
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from definitions.calendar import BusinessCalendar

BERLIN = ZoneInfo("Europe/Berlin")


def berlin(*args: int) -> datetime:
    return datetime(*args, tzinfo=BERLIN)  # type: ignore[misc]


@pytest.fixture(scope="module")
def office() -> BusinessCalendar:
    # Weekdays 08:00-18:00 Berlin, German public holidays plus Christmas Eve 2025.
    return BusinessCalendar.model_validate(
        {
            "timezone": "Europe/Berlin",
            "hours": {"mon-fri": "08:00-18:00"},
            "holidays": {"country": "DE", "dates": ["2025-12-24"]},
        }
    )


@pytest.fixture(scope="module")
def split_shift() -> BusinessCalendar:
    return BusinessCalendar.model_validate(
        {
            "timezone": "America/New_York",
            "hours": {"mon-fri": ["09:00-12:00", "13:00-17:00"], "sat": "10:00-14:00"},
        }
    )


def test_hours_are_normalised_per_day(office: BusinessCalendar) -> None:
    assert office.hours == {d: ["08:00-18:00"] for d in ("mon", "tue", "wed", "thu", "fri")}
    assert date(2025, 12, 25) in office.resolved_holidays
    assert date(2025, 12, 24) in office.resolved_holidays


def test_within_one_day(office: BusinessCalendar) -> None:
    start = berlin(2025, 3, 4, 9, 0)  # a Tuesday
    assert office.business_time_between(start, berlin(2025, 3, 4, 17, 30)) == timedelta(
        hours=8, minutes=30
    )
    assert office.add_business_time(start, timedelta(hours=2)) == berlin(2025, 3, 4, 11, 0)


def test_across_a_night(office: BusinessCalendar) -> None:
    start = berlin(2025, 3, 4, 17, 0)
    assert office.add_business_time(start, timedelta(hours=2)) == berlin(2025, 3, 5, 9, 0)
    assert office.business_time_between(start, berlin(2025, 3, 5, 9, 0)) == timedelta(hours=2)


def test_across_a_weekend(office: BusinessCalendar) -> None:
    friday = berlin(2025, 3, 7, 16, 0)
    assert office.add_business_time(friday, timedelta(hours=3)) == berlin(2025, 3, 10, 9, 0)
    assert office.business_time_between(friday, berlin(2025, 3, 10, 9, 0)) == timedelta(hours=3)
    assert not office.is_open(berlin(2025, 3, 8, 12, 0))
    assert office.next_open(berlin(2025, 3, 8, 12, 0)) == berlin(2025, 3, 10, 8, 0)


def test_across_christmas_holidays(office: BusinessCalendar) -> None:
    # Tue 23 Dec 17:00; 24 (explicit), 25, 26 (public) closed, 27/28 weekend.
    start = berlin(2025, 12, 23, 17, 0)
    assert office.add_business_time(start, timedelta(hours=2)) == berlin(2025, 12, 29, 9, 0)
    assert office.business_time_between(start, berlin(2025, 12, 29, 9, 0)) == timedelta(hours=2)
    assert office.next_open(berlin(2025, 12, 24, 10, 0)) == berlin(2025, 12, 29, 8, 0)


def test_dst_spring_forward_night_does_not_count(office: BusinessCalendar) -> None:
    # Clocks go forward on Sunday 30 March 2025; working hours stay 08:00-18:00 local.
    friday = berlin(2025, 3, 28, 17, 0)
    monday = office.add_business_time(friday, timedelta(hours=2))
    assert monday == berlin(2025, 3, 31, 9, 0)
    assert monday.utcoffset() is not None
    assert monday.astimezone(UTC) == datetime(2025, 3, 31, 7, 0, tzinfo=UTC)


def test_dst_on_a_24x7_calendar_counts_real_hours() -> None:
    always = BusinessCalendar.model_validate(
        {"timezone": "Europe/Berlin", "hours": "24x7", "holidays": {"dates": ["2025-12-25"]}}
    )
    # The night of 29-30 March 2025 is 23 hours long from midnight to midnight.
    assert always.business_time_between(berlin(2025, 3, 30, 0, 0), berlin(2025, 3, 31, 0, 0)) == (
        timedelta(hours=23)
    )
    # Autumn: 26 October is 25 hours long.
    assert always.business_time_between(berlin(2025, 10, 26, 0, 0), berlin(2025, 10, 27, 0, 0)) == (
        timedelta(hours=25)
    )
    # A holiday on a 24x7 calendar is closed.
    assert always.business_time_between(
        berlin(2025, 12, 24, 12, 0), berlin(2025, 12, 26, 12, 0)
    ) == (timedelta(hours=24))


def test_plain_24x7_is_wall_clock() -> None:
    always = BusinessCalendar.model_validate("24x7")
    start = datetime(2025, 1, 1, tzinfo=UTC)
    assert always.always_open
    assert always.add_business_time(start, timedelta(days=3)) == start + timedelta(days=3)
    assert always.business_time_between(start, start + timedelta(hours=5)) == timedelta(hours=5)
    assert always.is_open(start)


def test_split_shift_and_saturday(split_shift: BusinessCalendar) -> None:
    ny = ZoneInfo("America/New_York")
    friday = datetime(2025, 6, 6, 11, 0, tzinfo=ny)
    # 1 h Friday morning, 4 h afternoon, then Saturday 10:00 + 1 h.
    assert split_shift.add_business_time(friday, timedelta(hours=6)) == datetime(
        2025, 6, 7, 11, 0, tzinfo=ny
    )
    assert not split_shift.is_open(datetime(2025, 6, 6, 12, 30, tzinfo=ny))
    assert split_shift.next_close(datetime(2025, 6, 6, 10, 0, tzinfo=ny)) == datetime(
        2025, 6, 6, 12, 0, tzinfo=ny
    )


def test_end_before_start_is_zero_and_naive_is_refused(office: BusinessCalendar) -> None:
    assert office.business_time_between(berlin(2025, 3, 5, 12, 0), berlin(2025, 3, 4, 12, 0)) == (
        timedelta(0)
    )
    with pytest.raises(ValueError, match="timezone-aware"):
        office.is_open(datetime(2025, 3, 4, 12, 0))


def test_a_year_is_fast(office: BusinessCalendar) -> None:
    start = berlin(2025, 1, 1, 0, 0)
    total = office.business_time_between(start, berlin(2026, 1, 1, 0, 0))
    # 261 weekdays in 2025, minus 9 national holidays on weekdays and Christmas Eve.
    closed = set(holidays.country_holidays("DE", years=2025)) | {date(2025, 12, 24)}
    days = [date(2025, 1, 1) + timedelta(days=n) for n in range(365)]
    working = [d for d in days if d.weekday() < 5 and d not in closed]
    assert len(working) == 251
    assert total == timedelta(hours=10 * len(working))


@pytest.mark.parametrize(
    ("calendar", "message"),
    [
        ({"timezone": "Mars/Olympus"}, "not an IANA timezone"),
        ({"hours": {"mon-fri": "18:00-08:00"}}, "ends before it starts"),
        (
            {"hours": {"mon-fri": "08:00-12:00", "wed": "13:00-14:00"}},
            "wed is given more than once",
        ),
        ({"hours": {"funday": "08:00-12:00"}}, "not a day or day range"),
        ({"hours": {"mon": ["08:00-12:00", "11:00-13:00"]}}, "overlap"),
        ({"hours": {}}, "never open"),
        ({"hours": {"mon": "25:00-26:00"}}, "does not exist"),
        ({"holidays": {"country": "XX"}}, "no public holidays are known"),
        ({"holidays": {"country": "de"}}, "two-letter country code"),
    ],
)
def test_bad_calendars_are_refused(calendar: dict[str, object], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        BusinessCalendar.model_validate(calendar)


def test_norway_stays_a_country() -> None:
    calendar = BusinessCalendar.model_validate(
        {
            "timezone": "Europe/Oslo",
            "hours": {"mon-fri": "08:00-16:00"},
            "holidays": {"country": "NO"},
        }
    )
    assert date(2026, 5, 17) in calendar.resolved_holidays  # Constitution Day


def test_pinned_form_never_recomputes_holidays(office: BusinessCalendar) -> None:
    dumped = office.model_dump(mode="json")
    again = BusinessCalendar.model_validate(dumped)
    assert again.resolved_holidays == office.resolved_holidays
    assert again.business_time_between(
        berlin(2025, 12, 23, 17, 0), berlin(2025, 12, 29, 9, 0)
    ) == timedelta(hours=2)


moments = st.datetimes(
    min_value=datetime(2025, 1, 1), max_value=datetime(2027, 12, 31), timezones=st.just(BERLIN)
)
durations = st.integers(min_value=0, max_value=60 * 24 * 20).map(lambda m: timedelta(minutes=m))


@settings(max_examples=150, deadline=None)
@given(moments, durations)
def test_add_then_measure_gives_the_duration_back(
    office: BusinessCalendar, start: datetime, duration: timedelta
) -> None:
    end = office.add_business_time(start, duration)
    assert end >= start
    assert office.business_time_between(start, end) == duration
    if duration > timedelta(0):
        # The deadline always falls in working time (or exactly at a closing time).
        assert office.is_open(end - timedelta(microseconds=1))


@settings(max_examples=150, deadline=None)
@given(moments, moments, moments)
def test_business_time_is_additive(
    office: BusinessCalendar, a: datetime, b: datetime, c: datetime
) -> None:
    first, middle, last = sorted((a, b, c))
    assert office.business_time_between(first, last) == office.business_time_between(
        first, middle
    ) + office.business_time_between(middle, last)
    assert office.business_time_between(first, last) <= last - first


@settings(max_examples=100, deadline=None)
@given(moments)
def test_next_open_is_open_and_nothing_is_open_before_it(
    office: BusinessCalendar, at: datetime
) -> None:
    opens = office.next_open(at)
    assert office.is_open(opens)
    assert office.business_time_between(at, opens) == timedelta(0)
