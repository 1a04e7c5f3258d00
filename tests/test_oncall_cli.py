"""`opsflow oncall show` and `opsflow oncall override` against a real app database (SQLite and
PostgreSQL) with the catalog's support-primary schedule deployed."""

from __future__ import annotations

import json
import shutil
from datetime import datetime
from pathlib import Path

import pytest
import typer

from store.registry import CATALOG_DIR, deploy_folder
from tests.cli_support import CommandLine
from tests.conftest import AppDb
from worker.cli_oncall import parse_time

# Monday 7 December 2026 in Berlin: the weekly turn (jack's since 09:00) and the weekday day
# shift (dev's, 09:00-17:00) of definitions/catalog/schedule/support-primary.yaml.
MONDAY_NOON = "2026-12-07T12:00"


@pytest.fixture
async def oncall_cli(app_db: AppDb, tmp_path: Path) -> CommandLine:
    folder = tmp_path / "schedules"
    shutil.copytree(CATALOG_DIR / "schedule", folder)
    (folder / "night-desk.yaml").write_text(
        (folder / "support-primary.yaml")
        .read_text()
        .replace("name: support-primary", "name: night-desk")
        .replace("timezone: Europe/Berlin", "timezone: America/New_York")
    )
    await deploy_folder(app_db.sessions, folder)
    return CommandLine(
        {
            "OPSFLOW_DATABASE_URL": app_db.url.render_as_string(hide_password=False),
            "OPSFLOW_DATA_DIR": str(tmp_path / "data"),
            "OPSFLOW_LOG_FORMAT": "json",
            "OPSFLOW_LOG_LEVEL": "error",
            "NO_COLOR": "1",
            "COLUMNS": "80",
        }
    )


async def test_show_says_who_is_on_call_and_who_is_next(oncall_cli: CommandLine) -> None:
    (shown,) = (
        await oncall_cli.ok("oncall", "show", "support-primary", "--at", MONDAY_NOON, "--json")
    ).json()
    assert shown["on_call"] == "dev" and shown["source"] == "weekday-days"
    assert shown["at"] == "2026-12-07T11:00:00+00:00"
    assert shown["next"] == {"user": "jack", "at": "2026-12-07T16:00:00+00:00"}
    text = (await oncall_cli.ok("oncall", "show", "support-primary", "--at", MONDAY_NOON)).stdout
    assert text.splitlines() == [
        "support-primary (Europe/Berlin, at Mon 2026-12-07 12:00)",
        "  on call   dev (weekday-days)",
        "  next      jack from Mon 2026-12-07 17:00 (in 5h)",
    ]
    # The file's own override: katrin over Christmas, whatever the rotation says.
    (christmas,) = (
        await oncall_cli.ok(
            "oncall", "show", "support-primary", "--at", "2026-12-25 10:00 Europe/Berlin", "--json"
        )
    ).json()
    assert (christmas["on_call"], christmas["source"]) == ("katrin", "override")


async def test_show_without_a_schedule_lists_every_schedule_each_in_its_timezone(
    oncall_cli: CommandLine,
) -> None:
    shown = (await oncall_cli.ok("oncall", "show", "--at", MONDAY_NOON, "--json")).json()
    assert [s["schedule"] for s in shown] == ["night-desk", "support-primary"]
    # A time without an offset is each schedule's own wall time.
    assert [s["at"] for s in shown] == ["2026-12-07T17:00:00+00:00", "2026-12-07T11:00:00+00:00"]
    text = (await oncall_cli.ok("oncall", "show", "--at", MONDAY_NOON)).stdout
    assert "night-desk (America/New_York, at Mon 2026-12-07 12:00)" in text
    assert all(len(line) <= 80 for line in text.splitlines()), text


async def test_an_override_is_stored_and_wins_over_the_rotation(oncall_cli: CommandLine) -> None:
    stored = (
        await oncall_cli.ok(
            "oncall",
            "override",
            "support-primary",
            "--user",
            "ana",
            "--from",
            "2026-12-07T13:00",
            "--to",
            "2026-12-07T15:30+01:00",
            "--by",
            "lead@example.com",
            "--json",
        )
    ).json()
    assert (stored["from"], stored["to"]) == (
        "2026-12-07T12:00:00+00:00",
        "2026-12-07T14:30:00+00:00",
    )
    assert stored["by"] == "lead@example.com"
    (during,) = (
        await oncall_cli.ok(
            "oncall", "show", "support-primary", "--at", "2026-12-07T13:30", "--json"
        )
    ).json()
    assert (during["on_call"], during["source"]) == ("ana", "override")
    assert during["next"] == {"user": "dev", "at": "2026-12-07T14:30:00+00:00"}
    assert [o["user"] for o in during["overrides"]] == ["ana"]
    text = (
        await oncall_cli.ok(
            "oncall",
            "override",
            "support-primary",
            "--user",
            "bernd",
            "--from",
            "2026-12-07T14:00",
            "--to",
            "2026-12-07T14:15",
            "--by",
            "lead",
        )
    ).stdout
    assert text.startswith("bernd is on call for support-primary from Mon 2026-12-07 14:00 to")
    (later,) = (
        await oncall_cli.ok(
            "oncall", "show", "support-primary", "--at", "2026-12-07T14:05", "--json"
        )
    ).json()
    assert later["on_call"] == "bernd"  # the later override wins where they overlap
    assert later["next"] == {"user": "ana", "at": "2026-12-07T13:15:00+00:00"}
    shown = (
        await oncall_cli.ok("oncall", "show", "support-primary", "--at", "2026-12-07T14:05")
    ).stdout
    assert "  override  bernd Mon 2026-12-07 14:00 to Mon 2026-12-07 14:15" in shown.splitlines()


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_bad_input_is_one_line_naming_the_option(oncall_cli: CommandLine) -> None:
    good = ["--user", "ana", "--from", "2026-12-07T13:00", "--to", "2026-12-07T14:00"]
    missing = await oncall_cli.refused("oncall", "override", "no-such", *good, "--by", "lead")
    assert "SCHEDULE: no schedule named 'no-such' is deployed" in missing
    bad_from = [*good[:3], "next tuesday", *good[4:]]
    refused = await oncall_cli.refused(
        "oncall", "override", "support-primary", *bad_from, "--by", "x"
    )
    assert "--from 'next tuesday' is not a time" in refused
    backwards = [*good[:3], "2026-12-07T15:00", *good[4:]]
    refused = await oncall_cli.refused(
        "oncall", "override", "support-primary", *backwards, "--by", "x"
    )
    assert "--to '2026-12-07T14:00' is not after --from '2026-12-07T15:00'" in refused
    refused = await oncall_cli.refused(
        "oncall", "override", "support-primary", "--user", "a b", *good[2:], "--by", "x"
    )
    assert "--user 'a b' is not a directory id or email address" in refused
    refused = await oncall_cli.refused("oncall", "show", "--at", "soon")
    assert "--at 'soon' is not a time" in refused
    outcome = await oncall_cli.run("oncall", "show", "no-such", "--json")
    assert outcome.exit_code == 1
    assert outcome.error_json() == {"error": "SCHEDULE: no schedule named 'no-such' is deployed"}
    (shown,) = (await oncall_cli.ok("oncall", "show", "support-primary", "--json")).json()
    assert shown["overrides"] == []  # nothing refused was stored


NAUGHTY = (
    Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "hostile" / "naughty-strings.json"
)


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_hostile_arguments_are_refused_in_one_line_or_answered(
    oncall_cli: CommandLine,
) -> None:
    if not NAUGHTY.exists():
        pytest.skip("hostile corpus not present")
    strings: list[str] = json.loads(NAUGHTY.read_text())
    for text in strings:
        try:
            moment = parse_time("--at", text)
        except typer.Exit:
            continue
        assert isinstance(moment, datetime)
    later = ("--to", "2027-01-01T00:00", "--by", "x", "--json")
    for text in strings[::8]:  # every kind of string, each one command line at a time
        for args in (
            ("oncall", "show", text, "--json"),
            ("oncall", "show", "support-primary", "--at", text, "--json"),
            ("oncall", "override", "support-primary", "--user", text, "--from", text, *later),
        ):
            outcome = await oncall_cli.run(*args)
            assert outcome.exit_code in (0, 1, 2), (args, outcome.stderr)
            if outcome.exit_code == 1:
                assert "error" in outcome.error_json(), (args, outcome.stderr)
            else:
                assert "Traceback" not in outcome.stderr
