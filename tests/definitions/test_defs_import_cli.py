"""`opsflow defs import pagerduty|opsgenie FILE... [--out DIR]`: the files written (each
checked by the loader first, all or nothing), a warning line per thing not carried over,
and one-line errors naming the argument at fault."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from definitions.loader import load_paths
from worker.cli import app

FIXTURES = Path(__file__).parent / "import_fixtures"
PAGERDUTY = [
    str(FIXTURES / name)
    for name in (
        "pagerduty_escalation_policy.json",
        "pagerduty_schedule.json",
        "pagerduty_users.json",
    )
]
OPSGENIE = [str(FIXTURES / name) for name in ("opsgenie_escalation.json", "opsgenie_schedule.json")]

runner = CliRunner()


def test_import_writes_definitions_that_load_and_says_what_was_left(tmp_path: Path) -> None:
    result = runner.invoke(app, ["defs", "import", "pagerduty", *PAGERDUTY, "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == [
        f"wrote {tmp_path}/schedule/support-primary.yaml (schedule support-primary, from "
        "PagerDuty schedule PI7DH85 (Support Primary))",
        f"wrote {tmp_path}/escalation/support-escalation.yaml (escalation support-escalation, "
        "from PagerDuty escalation policy PT20YPA (Support Escalation))",
    ]
    warnings = result.stderr.splitlines()
    assert len(warnings) == 8
    assert all(line.startswith("warning: ") for line in warnings)
    assert (
        "warning: escalation support-escalation: rule 3: target escalation_policy_reference "
        "PDBFALL (Database Fallback) not carried over: an opsflow level notifies people and "
        "schedules, not another policy"
    ) in warnings
    loaded = load_paths([tmp_path])
    assert loaded.problems == []
    assert sorted(d.name for d in loaded.definitions) == ["support-escalation", "support-primary"]


def test_import_json(tmp_path: Path) -> None:
    result = runner.invoke(
        app, ["defs", "import", "opsgenie", *OPSGENIE, "--out", str(tmp_path), "--json"]
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert [(w["kind"], w["name"]) for w in report["written"]] == [
        ("schedule", "payments-schedule"),
        ("escalation", "payments-escalation"),
    ]
    assert report["written"][0]["file"] == str(tmp_path / "schedule" / "payments-schedule.yaml")
    assert len(report["not_carried_over"]) == 13
    assert result.stderr == ""


def test_import_never_replaces_a_file_unless_forced(tmp_path: Path) -> None:
    args = ["defs", "import", "opsgenie", *OPSGENIE, "--out", str(tmp_path)]
    assert runner.invoke(app, args).exit_code == 0
    mine = tmp_path / "escalation" / "payments-escalation.yaml"
    mine.write_text("# edited by hand\n", encoding="utf-8")
    again = runner.invoke(app, args)
    assert again.exit_code == 1
    assert again.stderr.strip() == (
        f"error: {tmp_path}/schedule/payments-schedule.yaml exists already: pass --force to "
        "replace it (nothing was written)"
    )
    assert mine.read_text(encoding="utf-8") == "# edited by hand\n"
    assert runner.invoke(app, [*args, "--force"]).exit_code == 0
    assert mine.read_text(encoding="utf-8").startswith("# Imported from Opsgenie escalation")


def test_import_errors_name_the_argument(tmp_path: Path) -> None:
    def error(*args: str) -> str:
        result = runner.invoke(app, ["defs", "import", *args, "--out", str(tmp_path)])
        assert result.exit_code == 1, result.output
        assert "Traceback" not in result.output
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1, result.stderr
        return lines[0]

    assert error("splunk", *OPSGENIE) == "error: VENDOR: 'splunk' is not pagerduty or opsgenie"
    missing = tmp_path / "missing.json"
    assert error("pagerduty", str(missing)) == (
        f"error: FILE: cannot read {missing}: No such file or directory"
    )
    broken = tmp_path / "broken.json"
    broken.write_text('{"escalation_policy": {', encoding="utf-8")
    assert error("pagerduty", str(broken)).startswith(f"error: {broken}: not JSON: ")
    # Opsgenie answers given as PagerDuty's: refused, naming the file.
    assert error("pagerduty", OPSGENIE[0]) == (
        f"error: {OPSGENIE[0]}: not a PagerDuty API response: expected escalation_policy, "
        "escalation_policies, schedule, schedules, user or users"
    )
    assert list(tmp_path.iterdir()) == [broken]  # nothing written
    # --out naming a file, not a folder.
    into_a_file = runner.invoke(
        app, ["defs", "import", "opsgenie", *OPSGENIE, "--out", str(broken)]
    )
    assert into_a_file.exit_code == 1
    assert into_a_file.stderr.strip() == (
        f"error: --out: cannot write {broken}/schedule/payments-schedule.yaml: Not a directory"
    )
    given_json = runner.invoke(app, ["defs", "import", "splunk", *OPSGENIE, "--json"])
    assert given_json.exit_code == 1
    assert json.loads(given_json.stderr) == {
        "error": "VENDOR: 'splunk' is not pagerduty or opsgenie"
    }


def test_import_with_nothing_importable_writes_nothing(tmp_path: Path) -> None:
    """Without GET /users the schedule has no one to page: it is left out with its lines;
    the policy (its schedules only) is still written."""
    result = runner.invoke(
        app, ["defs", "import", "pagerduty", *PAGERDUTY[1:2], "--out", str(tmp_path)]
    )
    assert result.exit_code == 1
    assert result.stderr.strip().splitlines()[-1] == (
        "error: nothing to write: no escalation or schedule could be imported"
    )
    assert not tmp_path.joinpath("schedule").exists()
