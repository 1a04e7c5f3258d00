"""On-call schedules: validation with file:line errors, who is on call across DST changes
(Europe/Berlin, America/New_York), restrictions and overrides, and what lint says."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from definitions.lint import lint, lint_warnings
from definitions.loader import load_paths
from definitions.models import PinnedDefinition
from definitions.schedule import Override, Rota, ScheduleSpec
from store.registry import CATALOG_DIR, TEMPLATES_DIR
from tests.definition_support import pinned

BERLIN = ZoneInfo("Europe/Berlin")
NEW_YORK = ZoneInfo("America/New_York")


def spec(timezone: str, *layers: dict[str, Any], overrides: Any = ()) -> ScheduleSpec:
    return ScheduleSpec.model_validate(
        {"timezone": timezone, "layers": list(layers), "overrides": list(overrides)}
    )


def local(zone: ZoneInfo, text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=zone)


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


# --- validation ------------------------------------------------------------------------------

DOCUMENT = """\
apiVersion: opsflow/v1
kind: schedule
metadata:
  name: broken
  owner: support
spec:
  timezone: Europe/Berlyn
  layers:
    - name: weekly
      start: "2026-01-05T09:00"
      turn: 0w
      users: []
    - name: days
      start: "2026-01-05T09:00+01:00"
      turn: 1d
      users: [dave]
  overrides:
    - user: frank
      from: "2026-12-27T00:00"
      to: "2026-12-24T00:00"
"""


def test_each_mistake_is_named_at_its_line(tmp_path: Path) -> None:
    (tmp_path / "broken.yaml").write_text(DOCUMENT)
    problems = [p.located for p in load_paths([tmp_path]).problems]
    assert problems == [
        "7:13: spec.timezone: 'Europe/Berlyn' is not an IANA timezone such as Europe/Berlin or UTC",
        "11:13: spec.layers[0].turn: a duration must be longer than zero",
        "12:14: spec.layers[0].users: a layer needs at least one user",
        "14:14: spec.layers[1].start: '2026-01-05T09:00+01:00' has an offset: give the local "
        "time (2026-01-05T09:00); the schedule's timezone applies",
        "18:7: spec.overrides[0]: to (2026-12-24T00:00) is not after from (2026-12-27T00:00)",
    ]


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("turn", 12, "has no unit"),
        ("turn", "1 month", "is not a duration"),
        ("start", "2026-02-30T09:00", "does not exist"),
        ("start", "next monday", "is not a local time"),
        ("restrictions", {"mon-fri": "17:00-09:00"}, "ends before it starts"),
        ("restrictions", {"someday": "09:00-17:00"}, "is not a day or day range"),
        ("name", "Weekly Layer", "should match pattern"),
    ],
)
def test_a_bad_layer_field_is_refused(field: str, value: Any, message: str) -> None:
    layer = {"name": "weekly", "start": "2026-01-05T09:00", "turn": "1w", "users": ["ana"]}
    with pytest.raises(ValueError, match=message):
        spec("Europe/Berlin", {**layer, field: value})


def test_a_schedule_round_trips_as_a_pinned_definition() -> None:
    document = yaml.safe_load((CATALOG_DIR / "schedule" / "support-primary.yaml").read_text())
    first = pinned(document)
    again = PinnedDefinition.model_validate_json(first.model_dump_json())
    assert again == first and again.schedule.layers[0].turn == timedelta(weeks=1)


# --- who is on call: DST ----------------------------------------------------------------------


def test_daily_turns_hand_off_at_the_same_wall_time_across_spring_forward_in_berlin() -> None:
    rota = Rota(
        spec(
            "Europe/Berlin",
            {"name": "days", "start": "2026-03-25T09:00", "turn": "1d", "users": ["ana", "ben"]},
        )
    )
    # 28 March 09:00 is 08:00 UTC (CET); 29 March 09:00 is 07:00 UTC (CEST): a 23-hour turn.
    assert rota.on_call(utc("2026-03-28T08:00")) == "ben"
    assert rota.on_call(utc("2026-03-29T06:59")) == "ben"
    assert rota.on_call(utc("2026-03-29T07:00")) == "ana"
    change = rota.next_change(utc("2026-03-28T12:00"))
    assert change is not None and change.user == "ana"
    assert change.at == local(BERLIN, "2026-03-29T09:00") == utc("2026-03-29T07:00")


def test_weekly_turns_hand_off_at_the_same_wall_time_across_fall_back_in_berlin() -> None:
    rota = Rota(
        spec(
            "Europe/Berlin",
            {"name": "weekly", "start": "2026-10-19T09:00", "turn": "1w", "users": ["ana", "ben"]},
        )
    )
    change = rota.next_change(utc("2026-10-20T00:00"))
    # Monday 26 October 09:00 CET is 08:00 UTC: that turn lasted seven days and one hour.
    assert change is not None and (change.at, change.user) == (utc("2026-10-26T08:00"), "ben")
    assert change.at - local(BERLIN, "2026-10-19T09:00") == timedelta(days=7, hours=1)


def test_twelve_hour_turns_are_exact_durations_across_fall_back_in_new_york() -> None:
    rota = Rota(
        spec(
            "America/New_York",
            {"name": "halves", "start": "2026-10-31T08:00", "turn": "12h", "users": ["a", "b"]},
        )
    )
    shifts = rota.shifts(utc("2026-10-31T12:00"), utc("2026-11-02T12:00"))
    assert [(s.start, s.user) for s in shifts] == [
        (utc("2026-10-31T12:00"), "a"),
        (utc("2026-11-01T00:00"), "b"),
        (utc("2026-11-01T12:00"), "a"),  # 07:00 EST: the wall time moved, the length did not
        (utc("2026-11-02T00:00"), "b"),
    ]
    assert all(s.end - s.start == timedelta(hours=12) for s in shifts)


def test_daily_turns_across_spring_forward_in_new_york() -> None:
    rota = Rota(
        spec(
            "America/New_York",
            {"name": "days", "start": "2026-03-01T08:00", "turn": "1d", "users": ["a", "b"]},
        )
    )
    # 8 March 08:00 EDT is 12:00 UTC (the day before, 08:00 EST was 13:00 UTC).
    change = rota.next_change(utc("2026-03-07T14:00"))
    assert change is not None and change.at == utc("2026-03-08T12:00")
    assert rota.on_call(utc("2026-03-08T11:59")) != rota.on_call(utc("2026-03-08T12:00"))


def test_a_handoff_in_the_spring_forward_gap_happens_when_the_clock_reads_an_hour_later() -> None:
    rota = Rota(
        spec(
            "Europe/Berlin",
            {"name": "nights", "start": "2026-03-27T02:30", "turn": "1d", "users": ["a", "b"]},
        )
    )
    change = rota.next_change(utc("2026-03-28T12:00"))
    # 29 March 02:30 does not exist in Berlin: the handoff is at 03:30 CEST (01:30 UTC).
    assert change is not None and change.at == utc("2026-03-29T01:30")
    assert change.at.astimezone(BERLIN).strftime("%H:%M") == "03:30"


# --- layers, restrictions, overrides ----------------------------------------------------------

SUPPORT = spec(
    "Europe/Berlin",
    {"name": "weekly", "start": "2026-01-05T09:00", "turn": "1w", "users": ["al", "bo", "cy"]},
    {
        "name": "weekday-days",
        "start": "2026-01-05T09:00",
        "turn": "1d",
        "users": ["dee", "eve"],
        "restrictions": {"mon-fri": "09:00-17:00"},
    },
    overrides=[{"user": "fay", "from": "2026-12-24T00:00", "to": "2026-12-27T00:00"}],
)


def test_a_later_layer_wins_within_its_restrictions() -> None:
    rota = Rota(SUPPORT)
    # Monday 7 December: the weekly turn is al's from 09:00, the day layer dee's 09:00-17:00.
    assert rota.on_call(local(BERLIN, "2026-12-07T08:59")) == "cy"
    assert rota.on_call(local(BERLIN, "2026-12-07T09:00")) == "dee"
    assert rota.on_call(local(BERLIN, "2026-12-07T17:00")) == "al"
    assert rota.on_call(local(BERLIN, "2026-12-08T10:00")) == "eve"
    assert rota.on_call(local(BERLIN, "2026-12-12T10:00")) == "al"  # Saturday: no day layer
    shifts = rota.shifts(local(BERLIN, "2026-12-07T08:00"), local(BERLIN, "2026-12-08T12:00"))
    assert [(s.start.astimezone(BERLIN).strftime("%d %H:%M"), s.user) for s in shifts] == [
        ("07 08:00", "cy"),
        ("07 09:00", "dee"),
        ("07 17:00", "al"),
        ("08 09:00", "eve"),
    ]


def test_a_fixed_override_wins_and_a_later_stored_override_wins_over_it() -> None:
    assert Rota(SUPPORT).on_call(local(BERLIN, "2026-12-24T10:00")) == "fay"
    stored = Override("gus", local(BERLIN, "2026-12-25T08:00"), local(BERLIN, "2026-12-25T20:00"))
    rota = Rota(SUPPORT, [stored])
    assert rota.on_call(local(BERLIN, "2026-12-25T07:59")) == "fay"
    assert rota.on_call(local(BERLIN, "2026-12-25T08:00")) == "gus"
    change = rota.next_change(local(BERLIN, "2026-12-25T09:00"))
    assert change == type(change)(local(BERLIN, "2026-12-25T20:00").astimezone(UTC), "fay")
    after = rota.next_change(local(BERLIN, "2026-12-26T12:00"))
    # 27 December 00:00 the weekly rotation is back: it is a Sunday, so no day layer.
    assert after is not None and after.at == local(BERLIN, "2026-12-27T00:00")
    assert after.user == "cy"  # the weekly turn that began on Monday 21 December


def test_an_override_across_the_fall_back_change_lasts_its_wall_times() -> None:
    stored = Override("gus", local(BERLIN, "2026-10-24T22:00"), local(BERLIN, "2026-10-25T22:00"))
    shifts = Rota(SUPPORT, [stored]).shifts(
        local(BERLIN, "2026-10-24T21:00"), local(BERLIN, "2026-10-26T00:00")
    )
    gus = [s for s in shifts if s.user == "gus"]
    assert len(gus) == 1 and gus[0].end - gus[0].start == timedelta(hours=25)


# --- properties -------------------------------------------------------------------------------

ZONES = ["Europe/Berlin", "America/New_York", "UTC", "Australia/Lord_Howe"]
instants = st.datetimes(
    min_value=datetime(2026, 1, 1), max_value=datetime(2027, 12, 31), timezones=st.just(UTC)
)


@st.composite
def rotas(draw: st.DrawFn) -> Rota:
    zone = draw(st.sampled_from(ZONES))
    turn = draw(st.sampled_from(["1d", "1w", "2d", "12h", "8h", "90m"]))
    users = draw(st.lists(st.sampled_from(["a", "b", "c", "d"]), min_size=1, max_size=4))
    start = draw(st.datetimes(min_value=datetime(2025, 12, 1), max_value=datetime(2026, 6, 1)))
    layers: list[dict[str, Any]] = [
        {
            "name": "base",
            "start": start.replace(second=0, microsecond=0).isoformat(timespec="minutes"),
            "turn": turn,
            "users": users,
        }
    ]
    if draw(st.booleans()):
        layers.append(
            {
                "name": "days",
                "start": "2026-01-05T09:00",
                "turn": "1d",
                "users": ["x", "y"],
                "restrictions": {"mon-fri": "09:00-17:00", "sat": ["00:00-02:00", "22:00-24:00"]},
            }
        )
    return Rota(spec(zone, *layers))


@settings(max_examples=150, deadline=None)
@given(rotas(), instants)
def test_next_change_is_where_the_answer_changes(rota: Rota, at: datetime) -> None:
    change = rota.next_change(at, within=timedelta(days=30))
    if change is None:
        return
    assert change.at > at
    assert rota.on_call(change.at) == change.user != rota.on_call(at)
    assert rota.on_call(change.at - timedelta(microseconds=1)) == rota.on_call(at)


@settings(max_examples=100, deadline=None)
@given(rotas(), instants)
def test_whole_day_turns_hand_off_at_one_wall_time(rota: Rota, at: datetime) -> None:
    layer = rota.spec.layers[0]
    k = rota.spec.turn_at(0, at)
    assert rota.spec.handoff(0, k) <= at < rota.spec.handoff(0, k + 1)
    if layer.wall_clock:
        zone = rota.spec.zone
        wall = {rota.spec.handoff(0, k + n).astimezone(zone).time() for n in range(3)}
        gap_free = all(
            rota.spec.handoff(0, k + n).astimezone(zone).replace(tzinfo=None)
            == layer.start + (k + n) * layer.turn
            for n in range(3)
        )
        assert len(wall) == 1 or not gap_free
    else:
        assert rota.spec.handoff(0, k + 1) - rota.spec.handoff(0, k) == layer.turn


# --- lint --------------------------------------------------------------------------------------


def _write(folder: Path, name: str, document: dict[str, Any]) -> None:
    (folder / f"{name}.yaml").write_text(yaml.safe_dump(document, sort_keys=False))


def _schedule(name: str, layers: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "apiVersion": "opsflow/v1",
        "kind": "schedule",
        "metadata": {"name": name, "owner": "support"},
        "spec": {"timezone": "Europe/Berlin", "layers": layers},
    }


def test_lint_reports_the_first_gap_in_the_next_30_days(tmp_path: Path) -> None:
    days_only = [
        {
            "name": "days",
            "start": "2026-01-05T09:00",
            "turn": "1d",
            "users": ["ana"],
            "restrictions": {"mon-fri": "09:00-17:00"},
        }
    ]
    _write(tmp_path, "days", _schedule("days", days_only))
    loaded = load_paths([tmp_path]).definitions
    now = local(BERLIN, "2026-12-07T12:00")  # a Monday noon
    (problem,) = lint(loaded, templates=TEMPLATES_DIR, now=now)
    assert problem.located == (
        "9:3: spec.layers: no one is on call from Mon 2026-12-07 17:00 to Tue 2026-12-08 "
        "09:00 (Europe/Berlin) (21 more after it) in the next 30 days: add a layer or users "
        "that cover it"
    )


def test_lint_reports_a_schedule_that_starts_later_and_accepts_full_cover(tmp_path: Path) -> None:
    weekly = [{"name": "weekly", "start": "2027-01-04T09:00", "turn": "1w", "users": ["ana"]}]
    _write(tmp_path, "later", _schedule("later", weekly))
    loaded = load_paths([tmp_path]).definitions
    (problem,) = lint(loaded, templates=TEMPLATES_DIR, today=date(2026, 12, 20))
    assert "from Sun 2026-12-20 01:00 to Mon 2027-01-04 09:00" in problem.message
    assert lint(loaded, templates=TEMPLATES_DIR, today=date(2027, 1, 4)) != []
    assert lint(loaded, templates=TEMPLATES_DIR, now=local(BERLIN, "2027-01-04T09:00")) == []


def test_lint_refuses_an_oncall_recipient_without_a_schedule(tmp_path: Path) -> None:
    policy = yaml.safe_load((CATALOG_DIR / "escalation" / "support.yaml").read_text())
    policy["metadata"]["name"] = "paging"
    level = policy["spec"]["levels"][0]["actions"][0]
    level["to"] = ["oncall:support-primary", "oncall:nobody", "oncall:support"]
    _write(tmp_path, "paging", policy)
    weekly = [{"name": "weekly", "start": "2026-01-05T09:00", "turn": "1w", "users": ["ana"]}]
    _write(tmp_path, "support-primary", _schedule("support-primary", weekly))
    loaded = load_paths([tmp_path]).definitions
    problems = lint(loaded, templates=TEMPLATES_DIR, known={"support": "escalation"})
    assert [(p.path, p.message) for p in problems] == [
        ("spec.levels[0].actions[0].to[1]", "no schedule named 'nobody' (oncall:nobody)"),
        (
            "spec.levels[0].actions[0].to[2]",
            "'support' is an escalation definition, not a schedule (oncall:support)",
        ),
    ]


def test_lint_takes_a_round_robin_level_without_a_warning(tmp_path: Path) -> None:
    """The escalation workflow runs round_robin (tests/test_oncall_round_robin.py)."""
    policy = yaml.safe_load((CATALOG_DIR / "escalation" / "support.yaml").read_text())
    policy["spec"]["by_priority"]["p1"]["levels"][1]["round_robin"] = True
    _write(tmp_path, "support", policy)
    loaded = load_paths([tmp_path]).definitions
    known = {"support-primary": "schedule"}
    assert lint_warnings(loaded, templates=TEMPLATES_DIR, known=known) == []
    assert lint(loaded, templates=TEMPLATES_DIR, known=known) == []
