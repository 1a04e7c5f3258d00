"""Calendar rules, one test each, as definitions/README.md states them (issue 16, item 7):
per-date overrides (a half day, a closed day, extra Saturday hours), breaks, dates, and the
arithmetic of zendesk/biz (zero at a closed instant, business days) with opsflow's
closing-instant rule. The arithmetic rules are shown on a plain weekly calendar (the kind the
catalog has always had) and again with breaks.
"""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from pydantic import ValidationError

from definitions.calendar import BusinessCalendar
from definitions.lint import lint
from definitions.loader import read_documents, validate_document
from definitions.models import Blackout, RolloutSpec

BERLIN = ZoneInfo("Europe/Berlin")
TEMPLATES = Path(__file__).resolve().parents[2] / "definitions" / "catalog" / "templates"


def berlin(*args: int) -> datetime:
    return datetime(*args, tzinfo=BERLIN)  # type: ignore[misc]


@pytest.fixture(scope="module")
def desk() -> BusinessCalendar:
    """Berlin weekdays 08:00-18:00 with lunch 12:00-13:00; a half day on Christmas Eve,
    New Year's Eve closed, a Saturday of extra hours, German holidays (26 Dec opened)."""
    return BusinessCalendar.model_validate(
        {
            "timezone": "Europe/Berlin",
            "hours": {"mon-fri": "08:00-18:00"},
            "breaks": {"mon-fri": "12:00-13:00"},
            "overrides": {
                "2026-12-24": "09:00-12:00",
                "2026-12-31": "closed",
                "2026-11-28": "10:00-14:00",
                "2026-12-26": ["10:00-12:00"],
                "2026-12-22": "10:00-14:00",
            },
            "holidays": {"country": "DE", "dates": ["2026-12-30"]},
        }
    )


@pytest.fixture(scope="module")
def plain() -> BusinessCalendar:
    """Berlin weekdays 08:00-18:00: no overrides, no breaks."""
    return BusinessCalendar.model_validate(
        {"timezone": "Europe/Berlin", "hours": {"mon-fri": "08:00-18:00"}}
    )


def hours_on(calendar: BusinessCalendar, day: date) -> list[tuple[str, str]]:
    return [
        (a.astimezone(BERLIN).strftime("%H:%M"), b.astimezone(BERLIN).strftime("%H:%M"))
        for a, b in calendar.open_intervals(day)
    ]


def test_an_override_gives_a_date_its_own_hours(desk: BusinessCalendar) -> None:
    assert hours_on(desk, date(2026, 12, 24)) == [("09:00", "12:00")]  # a Thursday
    assert desk.add_business_time(berlin(2026, 12, 23, 17, 0), timedelta(hours=2)) == berlin(
        2026, 12, 24, 10, 0
    )


def test_an_override_can_close_a_day(desk: BusinessCalendar) -> None:
    assert desk.open_intervals(date(2026, 12, 31)) == ()
    assert not desk.is_open(berlin(2026, 12, 31, 10, 0))


def test_an_override_adds_hours_on_a_closed_weekday(desk: BusinessCalendar) -> None:
    saturday = date(2026, 11, 28)
    assert hours_on(desk, saturday) == [("10:00", "14:00")]
    assert hours_on(desk, date(2026, 12, 5)) == []  # other Saturdays stay closed
    assert desk.next_open(berlin(2026, 11, 27, 19, 0)) == berlin(2026, 11, 28, 10, 0)


def test_an_override_wins_over_a_holiday(desk: BusinessCalendar) -> None:
    assert date(2026, 12, 26) in desk.resolved_holidays  # 2. Weihnachtstag
    assert hours_on(desk, date(2026, 12, 26)) == [("10:00", "12:00")]
    assert hours_on(desk, date(2026, 12, 25)) == []  # a holiday without override


def test_breaks_are_cut_out_of_the_hours(desk: BusinessCalendar) -> None:
    tuesday = date(2026, 12, 1)
    assert hours_on(desk, tuesday) == [("08:00", "12:00"), ("13:00", "18:00")]
    assert not desk.is_open(berlin(2026, 12, 1, 12, 30))
    assert desk.add_business_time(berlin(2026, 12, 1, 11, 30), timedelta(hours=1)) == berlin(
        2026, 12, 1, 13, 30
    )
    assert desk.business_time_between(
        berlin(2026, 12, 1, 11, 0), berlin(2026, 12, 1, 14, 0)
    ) == timedelta(hours=2)


def test_breaks_apply_to_overridden_days_too(desk: BusinessCalendar) -> None:
    assert hours_on(desk, date(2026, 12, 22)) == [("10:00", "12:00"), ("13:00", "14:00")]


def test_zero_added_at_a_closed_instant_is_the_next_opening(plain: BusinessCalendar) -> None:
    zero = timedelta(0)
    assert plain.add_business_time(berlin(2026, 12, 5, 9, 0), zero) == berlin(2026, 12, 7, 8, 0)
    assert plain.add_business_time(berlin(2026, 12, 1, 7, 0), zero) == berlin(2026, 12, 1, 8, 0)
    # The closing instant is closed (intervals are half-open), so zero there is the next day.
    assert plain.add_business_time(berlin(2026, 12, 1, 18, 0), zero) == berlin(2026, 12, 2, 8, 0)
    open_now = berlin(2026, 12, 1, 9, 17)
    assert plain.add_business_time(open_now, zero) == open_now
    assert plain.add_business_time(berlin(2026, 12, 1, 8, 0), zero) == berlin(2026, 12, 1, 8, 0)


def test_zero_added_in_a_break_is_the_breaks_end(desk: BusinessCalendar) -> None:
    assert desk.add_business_time(berlin(2026, 12, 1, 12, 15), timedelta(0)) == berlin(
        2026, 12, 1, 13, 0
    )


def test_a_budget_that_runs_out_at_closing_time_is_due_at_the_closing_instant(
    plain: BusinessCalendar, desk: BusinessCalendar
) -> None:
    start = berlin(2026, 12, 1, 16, 0)
    assert plain.add_business_time(start, timedelta(hours=2)) == berlin(2026, 12, 1, 18, 0)
    due = desk.add_business_time(start, timedelta(hours=2))
    assert due == berlin(2026, 12, 1, 18, 0)  # not Wednesday 08:00
    assert not desk.is_open(due)  # the closing instant itself is the first closed one
    assert desk.business_time_between(start, due) == timedelta(hours=2)
    # The same at the start of a break: due at 12:00, not at 13:00.
    assert desk.add_business_time(berlin(2026, 12, 1, 11, 0), timedelta(hours=1)) == berlin(
        2026, 12, 1, 12, 0
    )
    # One second more is due one second after the next opening.
    assert desk.add_business_time(start, timedelta(hours=2, seconds=1)) == berlin(
        2026, 12, 2, 8, 0, 1
    )
    # zendesk/biz answers the next opening here (README); that is next_open of the due time,
    # and also what adding zero to the due time gives.
    assert desk.next_open(due) == berlin(2026, 12, 2, 8, 0)
    assert desk.add_business_time(due, timedelta(0)) == berlin(2026, 12, 2, 8, 0)


def test_business_days_keep_the_time_of_day_and_skip_closed_days(
    desk: BusinessCalendar,
) -> None:
    assert desk.add_business_days(berlin(2026, 12, 4, 15, 0), 2) == berlin(2026, 12, 8, 15, 0)
    # Wed 23 Dec 10:00: +1 is the half day of the 24th at 10:00; +2 skips 25th (holiday),
    # 26th is open (override) 10:00-12:00.
    assert desk.add_business_days(berlin(2026, 12, 23, 10, 0), 1) == berlin(2026, 12, 24, 10, 0)
    assert desk.add_business_days(berlin(2026, 12, 23, 10, 0), 2) == berlin(2026, 12, 26, 10, 0)


def test_business_days_land_in_business_hours(plain: BusinessCalendar) -> None:
    # Friday 20:00 + 1 business day: Monday 20:00 is closed, so the next opening, Tue 08:00.
    friday_evening = berlin(2026, 12, 4, 20, 0)
    landed = plain.business_days_after(friday_evening, timedelta(days=1))
    assert landed == berlin(2026, 12, 8, 8, 0)
    assert plain.is_open(landed)
    # The rest of the span is business time.
    assert plain.business_days_after(friday_evening, timedelta(days=1, hours=2)) == berlin(
        2026, 12, 8, 10, 0
    )
    # Days count by date (as in biz): Saturday 01:00 + 1 day is Monday, due before Friday's.
    assert plain.business_days_after(berlin(2026, 12, 5, 1, 0), timedelta(days=1)) == berlin(
        2026, 12, 7, 8, 0
    )


def test_business_days_that_land_in_a_break_move_to_its_end(desk: BusinessCalendar) -> None:
    assert desk.add_business_days(berlin(2026, 12, 1, 12, 30), 1) == berlin(2026, 12, 2, 13, 0)


def test_always_open_calendars_keep_plain_arithmetic() -> None:
    always = BusinessCalendar.model_validate("24x7")
    start = datetime(2026, 3, 28, 12, 0, tzinfo=UTC)
    assert always.add_business_time(start, timedelta(0)) == start
    assert always.business_days_after(start, timedelta(days=2)) == start + timedelta(days=2)
    lunch = BusinessCalendar.model_validate({"hours": "24x7", "breaks": {"sun": "00:00-06:00"}})
    assert not lunch.always_open
    assert lunch.next_open(datetime(2026, 3, 29, 1, 0, tzinfo=UTC)) == datetime(
        2026, 3, 29, 6, 0, tzinfo=UTC
    )


def test_the_pinned_form_round_trips(desk: BusinessCalendar) -> None:
    dumped = desk.model_dump(mode="json")
    assert dumped["overrides"]["2026-12-31"] == []
    assert dumped["breaks"]["mon"] == ["12:00-13:00"]
    again = BusinessCalendar.model_validate(dumped)
    for day in (date(2026, 12, 22), date(2026, 12, 24), date(2026, 12, 26), date(2026, 12, 31)):
        assert again.open_intervals(day) == desk.open_intervals(day)


@pytest.mark.parametrize(
    ("calendar", "message"),
    [
        (
            {"hours": {"mon": "08:00-18:00"}, "overrides": {"2026-13-01": "closed"}},
            "'2026-13-01' does not exist (month must be in 1..12)",
        ),
        (
            {"hours": {"mon": "08:00-18:00"}, "overrides": {"24.12.2026": "closed"}},
            "'24.12.2026' is not a date: write YYYY-MM-DD",
        ),
        (
            {"hours": {"mon": "08:00-18:00"}, "holidays": {"dates": [1767225600]}},
            "'1767225600' is not a date: write YYYY-MM-DD",
        ),
        (
            {"hours": {"mon": "08:00-18:00"}, "holidays": {"dates": ["2026-12-24T10:00"]}},
            "'2026-12-24T10:00' is not a date",
        ),
        ({"hours": {"mon": "08:00-18:00"}, "overrides": {"2026-12-24": "half"}}, "`closed`"),
        (
            {"hours": {"mon": "08:00-18:00"}, "overrides": {"2026-12-24": ["09-12"]}},
            "not a time range",
        ),
        (
            {
                "hours": {"mon": "08:00-18:00"},
                "overrides": {"2026-12-24": ["09:00-12:00", "11:00-13:00"]},
            },
            "time ranges overlap (09:00-12:00 and 11:00-13:00); or `closed`",
        ),
        (
            {"hours": {"mon": "08:00-18:00"}, "breaks": {"mon": ["12:00-13:00", "12:30-14:00"]}},
            "time ranges overlap (12:00-13:00 and 12:30-14:00)",
        ),
        ({"hours": {"mon": "08:00-18:00"}, "breaks": {"lunch": "12:00-13:00"}}, "not a day"),
    ],
)
def test_bad_overrides_and_breaks_are_refused(calendar: dict[str, object], message: str) -> None:
    with pytest.raises(ValidationError, match=re.escape(message)):
        BusinessCalendar.model_validate(calendar)


POLICY = """\
apiVersion: opsflow/v1
kind: escalation
metadata:
  name: desk-policy
  owner: support-operations
spec:
  priorities: [p2]
  calendar:
    timezone: Europe/Berlin
    hours:
      mon-thu: "08:00-18:00"
      fri: "08:00-12:00"
    breaks:
      mon-fri: "12:00-13:00"
      wed: "12:30-13:30"
      sat: "10:00-10:30"
    overrides:
      "2026-12-24": "09:00-12:00"
    holidays:
      dates: [2026-12-24]
  slas:
    - priority: p2
      first_response: 4h
      resolution: 2d
  levels:
    - after: 1h
      actions:
        - type: notify
          channel: slack
          to: [assignee]
          template: sla-warning
"""


def test_lint_reports_overlapping_and_ineffective_calendar_entries_at_their_lines() -> None:
    documents, problems = read_documents(POLICY.encode(), "desk.yaml")
    assert problems == []
    loaded, problems = validate_document(documents[0])
    assert problems == [] and loaded is not None
    found = [
        str(p)
        for p in lint([loaded], templates=TEMPLATES)
        if ".breaks" in p.path or "overrides" in p.path
    ]
    assert found == [
        "desk.yaml:14:16: spec.calendar.breaks.mon-fri: 12:00-13:00 on fri is not within the "
        "opening hours (08:00-12:00): the part outside them has no effect",
        "desk.yaml:15:12: spec.calendar.breaks.wed: 12:30-13:30 on wed overlaps 12:00-13:00 of "
        "breaks.mon-fri",
        "desk.yaml:16:12: spec.calendar.breaks.sat: 10:00-10:30 on sat is not within the "
        "opening hours (closed): the part outside them has no effect",
        "desk.yaml:18:21: spec.calendar.overrides.2026-12-24: 2026-12-24 is also in "
        "holidays.dates: the override wins",
    ]


def test_overlapping_ranges_in_one_entry_are_refused_with_file_and_line() -> None:
    text = POLICY.replace('"2026-12-24": "09:00-12:00"', '"2026-12-24": [09:00-12:00, 11:00-13:00]')
    documents, _ = read_documents(text.encode(), "desk.yaml")
    _, problems = validate_document(documents[0])
    assert [str(p) for p in problems] == [
        "desk.yaml:18:21: spec.calendar.overrides.2026-12-24: time ranges overlap "
        "(09:00-12:00 and 11:00-13:00); or `closed` for a closed day"
    ]


def lint_calendar_findings(text: str) -> list[str]:
    documents, problems = read_documents(text.encode(), "desk.yaml")
    loaded, problems = validate_document(documents[0])
    assert problems == [] and loaded is not None
    return [str(p) for p in lint([loaded], templates=TEMPLATES) if ".calendar." in p.path]


def test_a_break_on_a_day_only_an_override_opens_is_not_reported() -> None:
    # sat is closed weekly, but 28 Nov opens 10:00-14:00: the Saturday break cuts into it.
    opened = POLICY.replace(
        '"2026-12-24": "09:00-12:00"',
        '"2026-12-24": "09:00-12:00"\n      "2026-11-28": 10:00-14:00',
    )
    assert not [line for line in lint_calendar_findings(opened) if "on sat" in line]
    # Beyond the override's hours it still has no effect, and lint says so.
    late = opened.replace('sat: "10:00-10:30"', 'sat: "13:30-14:30"')
    assert [line for line in lint_calendar_findings(late) if "on sat" in line] == [
        "desk.yaml:16:12: spec.calendar.breaks.sat: 13:30-14:30 on sat is not within the "
        "opening hours (closed) nor an override's on a sat: the part outside them has no effect"
    ]


@pytest.mark.parametrize(
    ("written", "problem"),
    [
        (
            '"24.12.2026": closed',
            "desk.yaml:18:21: spec.calendar.overrides.24.12.2026: '24.12.2026' is not a date: "
            "write YYYY-MM-DD, e.g. 2026-12-24",
        ),
        (
            "2026-02-30: closed",
            "desk.yaml:18:19: spec.calendar.overrides.2026-02-30: '2026-02-30' does not exist "
            "(day is out of range for month)",
        ),
    ],
)
def test_a_malformed_date_is_refused_at_its_line(written: str, problem: str) -> None:
    text = POLICY.replace('"2026-12-24": "09:00-12:00"', written)
    documents, _ = read_documents(text.encode(), "desk.yaml")
    _, problems = validate_document(documents[0])
    assert [str(p) for p in problems] == [problem]


def test_rollout_windows_keep_overrides_and_breaks_but_blackouts_win() -> None:
    windows = BusinessCalendar.model_validate(
        {
            "timezone": "Europe/Berlin",
            "hours": {"mon-thu": "09:00-16:00"},
            "breaks": {"mon-thu": "12:00-13:00"},
            "overrides": {"2026-12-05": "10:00-12:00", "2026-12-12": "10:00-12:00"},
        }
    )
    blackout = Blackout(start=date(2026, 12, 11), end=date(2026, 12, 13), reason="freeze")
    rollout = RolloutSpec.model_construct(windows=windows, blackouts=[blackout])
    change = rollout.change_calendar()
    assert change.open_intervals(date(2026, 12, 5))  # the override opens a Saturday
    assert change.open_intervals(date(2026, 12, 12)) == ()  # not inside the blackout
    assert not change.is_open(berlin(2026, 12, 1, 12, 30))  # breaks kept
