from __future__ import annotations

from datetime import timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import BaseModel, ValidationError

from definitions.duration import MAX_DURATION, Duration, format_duration, parse_duration

whole_seconds = st.integers(min_value=1, max_value=int(MAX_DURATION.total_seconds())).map(
    lambda s: timedelta(seconds=s)
)


class Holder(BaseModel):
    wait: Duration


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("90s", timedelta(seconds=90)),
        ("15m", timedelta(minutes=15)),
        ("4h", timedelta(hours=4)),
        ("2d", timedelta(days=2)),
        ("1h30m", timedelta(hours=1, minutes=30)),
        ("1d2h3m4s", timedelta(days=1, hours=2, minutes=3, seconds=4)),
        ("PT15M", timedelta(minutes=15)),
        ("P1D", timedelta(days=1)),
        ("P1DT12H", timedelta(days=1, hours=12)),
        ("P2W", timedelta(days=14)),
        ("pt1h", timedelta(hours=1)),
    ],
)
def test_parses_compact_and_iso_forms(text: str, expected: timedelta) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "is not a duration"),
        ("15", "is not a duration"),
        ("1:30", "is not a duration"),
        ("15 minutes", "is not a duration"),
        ("1m1h", "is not a duration"),
        ("P1M", "years and months have no fixed length"),
        ("P1Y", "years and months have no fixed length"),
        ("PT", "is not a duration"),
        ("P", "is not a duration"),
        ("0s", "longer than zero"),
        ("9999d", "longer than 3660 days"),
        ("99999999999999s", "is not a duration"),
    ],
)
def test_refuses_with_a_reason(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_duration(text)


@given(whole_seconds)
def test_format_then_parse_round_trips(duration: timedelta) -> None:
    assert parse_duration(format_duration(duration)) == duration


@given(whole_seconds)
def test_iso_and_compact_forms_agree(duration: timedelta) -> None:
    days, rest = divmod(int(duration.total_seconds()), 86_400)
    hours, rest = divmod(rest, 3_600)
    minutes, seconds = divmod(rest, 60)
    iso = f"P{days}DT{hours}H{minutes}M{seconds}S"
    assert parse_duration(iso) == parse_duration(format_duration(duration)) == duration


@given(st.text(max_size=30))
def test_arbitrary_text_parses_or_raises_value_error(text: str) -> None:
    try:
        result = parse_duration(text)
    except ValueError:
        return
    assert timedelta(0) < result <= MAX_DURATION


@given(whole_seconds)
def test_pydantic_json_round_trip(duration: timedelta) -> None:
    dumped = Holder(wait=duration).model_dump(mode="json")
    assert isinstance(dumped["wait"], str)
    assert Holder.model_validate(dumped).wait == duration


@pytest.mark.parametrize("value", [90, 1.5, True, None, [1]])
def test_non_strings_are_refused(value: object) -> None:
    with pytest.raises(ValidationError):
        Holder.model_validate({"wait": value})
