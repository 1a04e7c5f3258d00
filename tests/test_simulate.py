"""`opsflow simulate`: a policy's real workflow in skipped time on an embedded test server,
with sandbox backends in a scratch database; nothing configured is touched."""

from __future__ import annotations

import json
from datetime import date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from typer.testing import CliRunner

from store.registry import CATALOG_DIR
from worker.cli import app

SUPPORT = CATALOG_DIR / "escalation" / "support.yaml"
BERLIN = ZoneInfo("Europe/Berlin")


def _next_friday() -> date:
    today = datetime.now(BERLIN).date() + timedelta(days=1)
    return today + timedelta(days=(4 - today.weekday()) % 7)


def _simulate(tmp_path: Path, *args: str) -> dict[str, object]:
    database = tmp_path / "configured.db"
    env = {
        "OPSFLOW_DATABASE_URL": f"sqlite:///{database}",
        "OPSFLOW_TEMPORAL_ADDRESS": "127.0.0.1:1",  # nothing listens: it must not be needed
        "OPSFLOW_DATA_DIR": str(tmp_path),
        "COLUMNS": "200",
    }
    result = CliRunner().invoke(app, ["simulate", str(SUPPORT), *args, "--json"], env=env)
    assert result.exit_code == 0, (result.stdout, result.stderr)
    assert not database.exists(), "the simulation touched the configured database"
    assert result.stderr == "", result.stderr  # no log lines
    shown: dict[str, object] = json.loads(result.stdout)
    return shown


def _local_moments(shown: dict[str, object]) -> dict[str, str]:
    timeline = shown["timeline"]
    assert isinstance(timeline, list)
    return {
        entry["step"]: datetime.fromisoformat(entry["at"]).astimezone(BERLIN).strftime("%a %H:%M")
        for entry in timeline
    }


def test_a_p3_opened_friday_evening_breaches_on_monday_business_time(tmp_path: Path) -> None:
    friday = _next_friday()
    shown = _simulate(
        tmp_path, "--priority", "p3", "--opened", f"{friday} 16:55 Europe/Berlin", "--for", "4d"
    )
    moments = _local_moments(shown)
    # Berlin desk hours, weekdays 08:00-18:00: 1h05 on Friday, the rest of the 4h on Monday.
    assert moments["opened"] == "Fri 16:55"
    assert moments["warn-first_response-80"] == "Mon 10:07"  # 80 % of 4h = 3h12
    assert moments["breach-first_response"] == "Mon 10:55"
    assert moments["level-1-cycle-0"] == "Mon 10:55"  # after 4h of business time
    breach = next(e for e in shown["timeline"] if e["step"] == "breach-first_response")  # type: ignore[union-attr]
    assert [m["to"] for m in breach["messages"]] == ["team:support-leads"]
    assert "breached" in breach["messages"][0]["subject"]


def test_a_p1_acknowledged_at_twenty_minutes_and_a_past_friday(tmp_path: Path) -> None:
    script = tmp_path / "events.jsonl"
    script.write_text('{"at": "+20m", "command": "acknowledge", "by": "ana"}\n')
    last_friday = _next_friday() - timedelta(days=14)  # in the past: simulated weeks later
    shown = _simulate(
        tmp_path,
        "--priority",
        "p1",
        "--opened",
        f"{last_friday} 16:55 Europe/Berlin",
        "--for",
        "1h",
        "--events",
        str(script),
    )
    assert shown["shifted_weeks"] >= 2  # type: ignore[operator]
    moments = _local_moments(shown)
    # P1: 24x7, first response 15 minutes, warnings at 50 and 80 %, a page after 5 minutes.
    assert moments["opened"] == "Fri 16:55"
    assert moments["breach-first_response"] == "Fri 17:10"
    assert moments["acknowledge"] == "Fri 17:15"
    assert shown["timeline"][0]["at"].startswith(str(last_friday))  # type: ignore[index]
    assert shown["clocks"]["first_response"]["breached"] is True  # type: ignore[index]


@pytest.mark.parametrize(
    ("line", "error"),
    [
        ('{"at": "+20m", "command": "dance"}', "events.jsonl:1: command: 'dance' is not one of"),
        ('{"at": "soon", "command": "acknowledge", "by": "a"}', "events.jsonl:1: at:"),
        ('{"at": "+1h", "command": "acknowledge"}', "events.jsonl:1: by: Field required"),
    ],
)
def test_a_bad_script_line_is_refused_naming_file_line_and_field(
    tmp_path: Path, line: str, error: str
) -> None:
    script = tmp_path / "events.jsonl"
    script.write_text(line + "\n")
    env = {"OPSFLOW_DATA_DIR": str(tmp_path), "COLUMNS": "200"}
    result = CliRunner().invoke(app, ["simulate", str(SUPPORT), "--events", str(script)], env=env)
    assert result.exit_code == 1
    assert error in " ".join(result.stderr.split()), result.stderr


def test_a_backtest_with_no_recorded_cases_says_so(tmp_path: Path) -> None:
    env = {
        "OPSFLOW_DATABASE_URL": f"sqlite:///{tmp_path / 'empty.db'}",
        "OPSFLOW_DATA_DIR": str(tmp_path),
        "COLUMNS": "200",
    }
    assert CliRunner().invoke(app, ["migrate"], env=env).exit_code == 0
    result = CliRunner().invoke(app, ["simulate", str(SUPPORT), "--replay-since", "30d"], env=env)
    assert result.exit_code == 1
    assert "no escalation case was opened since" in result.stderr


def test_a_rollout_with_a_failing_reading_rolls_back_in_the_simulation(tmp_path: Path) -> None:
    script = tmp_path / "rollout.jsonl"
    script.write_text(
        '{"at": "+1m", "command": "approve", "approver": "lena.vogel"}\n'
        '{"at": "+2m", "command": "approve", "approver": "marco.rossi"}\n'
        '{"at": "+30m", "command": "degrade", "metric": "csat", "value": 2.1}\n'
    )
    plan = CATALOG_DIR / "rollout" / "new-billing-flow.yaml"
    env = {
        "OPSFLOW_DATABASE_URL": f"sqlite:///{tmp_path / 'configured.db'}",
        "OPSFLOW_TEMPORAL_ADDRESS": "127.0.0.1:1",
        "OPSFLOW_DATA_DIR": str(tmp_path),
        "COLUMNS": "200",
    }
    # A Tuesday morning inside the plan's change windows and outside its blackouts (a past
    # date: simulated whole weeks later, the blackouts moved along).
    args = ["simulate", str(plan), "--opened", "2026-11-24 10:00 Europe/Berlin", "--for", "3h"]
    result = CliRunner().invoke(app, [*args, "--events", str(script), "--json"], env=env)
    assert result.exit_code == 0, (result.stdout, result.stderr)
    shown = json.loads(result.stdout)
    assert shown["state"] == "rolled_back"
    assert shown["phases"][0] == {"name": "pilot", "verdict": "failed", "reverted": True}
    steps = {entry["step"]: entry for entry in shown["timeline"]}
    assert "a1-phase-1-applied" in steps and "a1-rolled-back" in steps
    asked = steps["a1-approval-start-1"]["messages"]
    assert [m["to"] for m in asked] == ["group:cx-change-board"]
    exposed = steps["a1-phase-1-applied"]["detail"]["total_exposed"]
    assert len(steps["a1-rollback-phase-1"]["messages"]) == exposed > 0  # each told once
    assert not (tmp_path / "configured.db").exists()


def test_a_recovery_rule_set_reacts_to_an_event_file(tmp_path: Path) -> None:
    """The catalog's rules: one low survey after good ones opens a review, not an apology;
    a second low score about another contact acts (issue 15's proportionate recovery)."""
    start = datetime(2026, 11, 2, 9, 0, tzinfo=ZoneInfo("UTC"))
    lines = [
        {"score": 5, "ticket_id": f"T-{n}", "at": start + timedelta(days=n)} for n in range(4)
    ] + [
        {"score": 1, "ticket_id": "T-10", "at": start + timedelta(days=5)},
        {"score": 1, "ticket_id": "T-11", "at": start + timedelta(days=6)},
    ]
    events = tmp_path / "events.jsonl"
    events.write_text(
        "\n".join(
            json.dumps(
                {
                    "id": f"e-{n}",
                    "source": "crm",
                    "type": "survey.responded",
                    "time": line["at"].isoformat(),  # type: ignore[attr-defined]
                    "data": {
                        "customer_id": "C-0003",
                        "score": line["score"],
                        "ticket_id": line["ticket_id"],
                    },
                }
            )
            for n, line in enumerate(lines)
        )
        + "\n"
    )
    rules = CATALOG_DIR / "recovery" / "service-recovery.yaml"
    env = {"OPSFLOW_DATA_DIR": str(tmp_path), "COLUMNS": "200"}
    args = ["simulate", str(rules), "--events", str(events), "--for", "2d", "--json"]
    result = CliRunner().invoke(app, args, env=env)
    assert result.exit_code == 0, (result.stdout, result.stderr)
    shown = json.loads(result.stdout)
    assert list(shown["customers"]) == ["C-0003"]
    steps = [entry["step"] for entry in shown["timeline"]]
    assert all(step.startswith("C-0003: ") for step in steps)
    assert shown["customers"]["C-0003"]["tally"] == {
        "service-recovery/low-csat-review": {"fired": 1},
        "service-recovery/low-csat": {"fired": 1},
    }
    review, acted = [e for e in shown["timeline"] if e["step"].endswith("-fired")]
    # Shown at the events' own times: the first low score opens a review and tells the
    # customer nothing; the second, about another contact, acts.
    assert review["at"].startswith("2026-11-07") and review["messages"] == []
    assert acted["at"].startswith("2026-11-08") and len(acted["messages"]) == 1


def test_a_handoff_accepted_in_time_ends_with_its_case_closed(tmp_path: Path) -> None:
    script = tmp_path / "chat.jsonl"
    script.write_text(
        '{"at": "+0s", "command": "turn", "text": "My invoice is wrong", "intent": "billing"}\n'
        '{"at": "+1m", "command": "turn", "text": "I want to talk to a human",'
        ' "intent": "human_agent", "confidence": 0.8}\n'
        '{"at": "+1m20s", "command": "accept", "agent": "offered"}\n'
        '{"at": "+10m", "command": "resolve"}\n'
    )
    tuesday = datetime.now(BERLIN).date() + timedelta(days=1)
    tuesday += timedelta(days=(1 - tuesday.weekday()) % 7)
    handoff = CATALOG_DIR / "handoff" / "chat-handoff.yaml"
    env = {"OPSFLOW_DATA_DIR": str(tmp_path), "COLUMNS": "200"}
    args = ["simulate", str(handoff), "--customer", "C-0003", "--for", "1h", "--json"]
    opened = ["--opened", f"{tuesday} 10:00 Europe/Berlin", "--events", str(script)]
    result = CliRunner().invoke(app, [*args, *opened], env=env)
    assert result.exit_code == 0, (result.stdout, result.stderr)
    shown = json.loads(result.stdout)
    assert (shown["state"], shown["queue"]) == ("resolved", "billing")
    steps = [entry["step"] for entry in shown["timeline"]]
    assert "case-opened" in steps and "case-closed" in steps
    assert any(step.endswith("-active") for step in steps)


def test_a_refused_command_says_why_and_a_resolved_case_ends_cleanly(tmp_path: Path) -> None:
    twice = tmp_path / "twice.jsonl"
    twice.write_text(
        '{"at": "+30m", "command": "pause", "by": "ana"}\n'
        '{"at": "+40m", "command": "pause", "by": "ana"}\n'
    )
    env = {"OPSFLOW_DATA_DIR": str(tmp_path), "COLUMNS": "200"}
    refused = CliRunner().invoke(app, ["simulate", str(SUPPORT), "--events", str(twice)], env=env)
    assert refused.exit_code == 1
    assert "--events line 2: pause at +40m was refused" in refused.stderr
    assert "already paused" in refused.stderr

    resolved = tmp_path / "resolved.jsonl"
    resolved.write_text(
        '{"at": "+10m", "command": "acknowledge", "by": "ana"}\n'
        '{"at": "+1h", "command": "resolve", "by": "ana"}\n'
    )
    result = CliRunner().invoke(
        app, ["simulate", str(SUPPORT), "--events", str(resolved), "--json"], env=env
    )
    assert result.exit_code == 0, result.stderr
    assert [e["step"] for e in json.loads(result.stdout)["timeline"]][-1] == "resolve"
