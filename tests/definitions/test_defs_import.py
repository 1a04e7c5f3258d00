"""`opsflow defs import`: PagerDuty and Opsgenie escalation policies and schedules, as their
APIs answer them, become opsflow definitions that the loader and lint accept, with one line
for each thing that could not be carried over.

The fixtures in import_fixtures/ are written from the vendors' API references:

- PagerDuty REST API v2, Escalation Policies (GET /escalation_policies/{id}:
  `escalation_rules[]` with `escalation_delay_in_minutes`, `targets[]` of type
  `user_reference`/`schedule_reference`, `escalation_rule_assignment_strategy`, `num_loops`,
  `on_call_handoff_notifications`, `services`, `teams`):
  https://developer.pagerduty.com/api-reference/b3A6Mjc0ODEyNQ-create-an-escalation-policy and
  the provider's field reference
  https://raw.githubusercontent.com/PagerDuty/terraform-provider-pagerduty/master/website/docs/r/escalation_policy.html.markdown
  ("num_loops: the number of times the escalation policy will repeat after reaching the end
  of its escalation"; "escalation_delay_in_minutes: the number of minutes before an
  unacknowledged incident escalates away from this rule");
- PagerDuty Schedules (GET /schedules/{id}: `time_zone`, `schedule_layers[]` with `start`,
  `end`, `rotation_virtual_start` ("the effective start time of the layer; this can be
  before the start time of the schedule"), `rotation_turn_length_seconds`, `users[]`,
  `restrictions[]` of type `daily_restriction`/`weekly_restriction` with
  `start_time_of_day`, `duration_seconds`, `start_day_of_week` (ISO 8601, 1 is Monday);
  `overrides_subschedule.rendered_schedule_entries`):
  https://docs.blinkops.com/docs/integrations/pagerduty/actions/get-schedule (the API's
  example response) and https://www.mintlify.com/PagerDuty/pagerduty-mcp-server/tools/schedules/create-schedule;
- Opsgenie Escalation API (`rules[]` with `condition` if-not-acked/if-not-closed,
  `notifyType`, `delay.timeAmount`, `recipient` of type user/schedule/team, `repeat` with
  `waitInterval`, `count`, `resetRecipientStates`, `closeAlertAfterAll`):
  https://docs.opsgenie.com/docs/escalation-api and its schema
  https://raw.githubusercontent.com/api-evangelist/opsgenie/refs/heads/main/json-schema/opsgenie-escalation-schema.json;
- Opsgenie Schedule and Schedule Rotation API (`timezone`, `rotations[]` with `startDate`,
  `endDate`, `type` daily/weekly/hourly, `length`, `participants[]` of type
  user/team/escalation/none, `timeRestriction` of type `time-of-day` (`restriction`) or
  `weekday-and-time-of-day` (`restrictions[]`)): https://docs.opsgenie.com/docs/schedule-rotation-api
  and, for how rotations combine, https://support.atlassian.com/opsgenie/docs/build-an-on-call-schedule/
  ("when an alert is escalated through the schedule, all on-call users in all the different
  rotations are notified (cumulative)").
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Callable
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from definitions.importers.common import (
    ImportRefused,
    ImportResult,
    hours,
    read_json,
    to_yaml,
    weekly_window,
)
from definitions.importers.opsgenie import import_opsgenie
from definitions.importers.pagerduty import import_pagerduty
from definitions.lint import lint
from definitions.loader import LoadedDefinition, load_paths
from definitions.schedule import Rota
from store.registry import TEMPLATES_DIR

FIXTURES = Path(__file__).parent / "import_fixtures"
HOSTILE_JSON = Path(__file__).resolve().parents[3] / "shared" / "fixtures" / "hostile" / "json"
NOW = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)
PAGERDUTY_FILES = (
    "pagerduty_escalation_policy.json",
    "pagerduty_schedule.json",
    "pagerduty_users.json",
)
OPSGENIE_FILES = ("opsgenie_escalation.json", "opsgenie_schedule.json")
BERLIN = ZoneInfo("Europe/Berlin")

Importer = Callable[..., ImportResult]


def payloads(*names: str) -> list[tuple[str, Any]]:
    return [(name, read_json((FIXTURES / name).read_bytes(), name)) for name in names]


def written(result: ImportResult, folder: Path) -> dict[str, LoadedDefinition]:
    """Write the import as `opsflow defs import` does and load it back with the loader."""
    for definition in result.definitions:
        path = folder / definition.kind / f"{definition.name}.yaml"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(to_yaml(definition), encoding="utf-8")
    loaded = load_paths([folder])
    assert loaded.problems == [], "\n".join(map(str, loaded.problems))
    return {d.name: d for d in loaded.definitions}


def recipients(level: Any) -> list[str]:
    return [to for action in level.actions for to in action.to]


# --- PagerDuty -----------------------------------------------------------------------------


@pytest.fixture
def pagerduty(tmp_path: Path) -> tuple[ImportResult, dict[str, LoadedDefinition]]:
    result = import_pagerduty(payloads(*PAGERDUTY_FILES), now=NOW)
    return result, written(result, tmp_path)


def test_pagerduty_policy_becomes_levels_at_cumulative_delays(
    pagerduty: tuple[ImportResult, dict[str, LoadedDefinition]],
) -> None:
    """Rule 1 pages at once, rule 2 after rule 1's 15 minutes, rule 3 after 15 + 20; a
    schedule target is `oncall:<schedule>`, a user their email (from GET /users); num_loops
    is repeat."""
    _, loaded = pagerduty
    policy = loaded["support-escalation"].definition.spec
    assert [level.after for level in policy.levels] == [  # type: ignore[union-attr]
        timedelta(seconds=1),
        timedelta(minutes=15),
        timedelta(minutes=35),
    ]
    assert [recipients(level) for level in policy.levels] == [  # type: ignore[union-attr]
        ["oncall:support-primary"],
        ["oncall:support-secondary", "dave@example.com"],
        ["henry@example.com"],  # the escalation_policy_reference is not carried over
    ]
    assert policy.repeat == 2  # type: ignore[union-attr]
    assert policy.calendar.hours == "24x7"  # type: ignore[union-attr]
    assert {(t.priority, t.first_response) for t in policy.slas} == {  # type: ignore[union-attr]
        (p, timedelta(hours=3, minutes=15)) for p in ("p1", "p2", "p3", "p4")
    }
    assert policy.order == 10_000  # type: ignore[union-attr]
    metadata = loaded["support-escalation"].definition.metadata
    assert metadata.owner == "Support Operations"
    assert metadata.labels == {"imported-from": "pagerduty", "pagerduty-id": "pt20ypa"}


def test_pagerduty_schedule_layers_reversed_rotated_and_restricted(
    pagerduty: tuple[ImportResult, dict[str, LoadedDefinition]],
) -> None:
    """PagerDuty lists the highest-priority layer first; opsflow's later layer wins. The
    weekly layer, edited on 2 March mid-turn, keeps its handoffs on rotation_virtual_start
    (Mondays 09:00): it starts at that turn's handoff with the person whose turn it was."""
    _, loaded = pagerduty
    spec = loaded["support-primary"].definition.spec
    assert spec.timezone == "Europe/Berlin"  # type: ignore[union-attr]
    layers = spec.layers  # type: ignore[union-attr]
    assert [layer.name for layer in layers] == [
        "weekly-primary",
        "weekday-business-hours",
        "night-shift",
    ]
    weekly, days, nights = layers
    assert weekly.start == datetime(2026, 3, 2, 9, 0)
    assert weekly.turn == timedelta(weeks=1)
    # 8 weeks after 5 January: the third person's turn (8 mod 3 = 2).
    assert weekly.users == ["carol@example.com", "alice@example.com", "bob@example.com"]
    assert weekly.restrictions is None
    assert (days.start, days.turn) == (datetime(2026, 1, 5, 9, 0), timedelta(days=1))
    assert days.restrictions == {d: ["09:00-17:00"] for d in ("mon", "tue", "wed", "thu", "fri")}
    assert nights.users == ["frank@example.com", "grace@example.com"]
    # 22:00 for ten hours, every day: split at midnight.
    assert nights.restrictions == {
        d: ["00:00-08:00", "22:00-24:00"] for d in ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
    }
    # The override that has not ended yet; the one in November is past.
    overrides = spec.overrides  # type: ignore[union-attr]
    assert [(o.user, o.from_, o.to) for o in overrides] == [
        ("frank@example.com", datetime(2026, 12, 24, 0, 0), datetime(2026, 12, 27, 0, 0))
    ]


def _pagerduty_on_call(at: datetime) -> str | None:
    """Who PagerDuty has on call, from the fixture's own fields: the override, else the first
    layer (the highest) whose restriction covers `at`; a layer's user is
    users[whole turns since rotation_virtual_start mod len(users)]."""
    here = at.astimezone(BERLIN).replace(tzinfo=None)
    if datetime(2026, 12, 24) <= here < datetime(2026, 12, 27):
        return "frank@example.com"

    def turn(start: datetime, length: timedelta, users: list[str]) -> str:
        return users[((here - start) // length) % len(users)]

    if here.time() >= time(22) or here.time() < time(8):
        return (
            turn(datetime(2026, 1, 5, 22), timedelta(days=1), ["frank", "grace"]) + "@example.com"
        )
    if here.weekday() < 5 and time(9) <= here.time() < time(17):
        return turn(datetime(2026, 1, 5, 9), timedelta(days=1), ["dave", "erin"]) + "@example.com"
    return (
        turn(datetime(2026, 1, 5, 9), timedelta(weeks=1), ["alice", "bob", "carol"])
        + "@example.com"
    )


def test_pagerduty_schedule_puts_the_same_people_on_call(
    pagerduty: tuple[ImportResult, dict[str, LoadedDefinition]],
) -> None:
    """Every half hour of December 2026 (overrides and restriction edges included), the
    imported schedule has the person PagerDuty's layers have."""
    _, loaded = pagerduty
    rota = Rota(loaded["support-primary"].definition.spec)  # type: ignore[arg-type]
    moment = datetime(2026, 12, 1, tzinfo=BERLIN)
    while moment < datetime(2027, 1, 1, tzinfo=BERLIN):
        assert rota.on_call(moment) == _pagerduty_on_call(moment), moment
        moment += timedelta(minutes=30)


def test_pagerduty_lines_say_what_was_not_carried_over(
    pagerduty: tuple[ImportResult, dict[str, LoadedDefinition]],
) -> None:
    result, _ = pagerduty
    assert result.lines() == [
        "schedule support-primary: layer 'Weekly primary (before March)' ended "
        "2026-03-02T10:30: history, left out",
        "escalation support-escalation: SLA targets: the vendor has none; written "
        "first_response 3h15m (when its escalation has run its course) and resolution 1d for "
        "p1-p4 on a 24x7 clock: set your own",
        "escalation support-escalation: rule 2: schedule PSEC001 (Support Secondary) is not in "
        "these files: written as oncall:support-secondary; import its GET /schedules/PSEC001 "
        "answer too",
        "escalation support-escalation: rule 3: target escalation_policy_reference PDBFALL "
        "(Database Fallback) not carried over: an opsflow level notifies people and schedules, "
        "not another policy",
        "escalation support-escalation: rule 1: PagerDuty notifies it when the incident "
        "triggers; an opsflow level needs a delay, so level 1 fires 1s after the case opens",
        "escalation support-escalation: num_loops 2: PagerDuty starts the next loop 30m (rule "
        "3's delay) after the last rule; opsflow starts the next cycle when the last level "
        "fires, so each loop comes 30m sooner",
        "escalation support-escalation: on_call_handoff_notifications 'if_has_services': "
        "opsflow does not notify people of their on-call handoffs",
        "escalation support-escalation: services (Checkout API, Payments API) use this policy "
        'there; opsflow chooses a policy by its match, so it is written with match "true" at '
        "order 10000, after every other policy; give it a match for the cases it should take "
        "(or open cases with --policy)",
    ]
    # The same lines head each written file, as comments.
    policy = next(d for d in result.definitions if d.kind == "escalation")
    assert "# - rule 3: target escalation_policy_reference PDBFALL" in to_yaml(policy)


def test_pagerduty_import_lints_but_for_the_schedule_left_behind(
    pagerduty: tuple[ImportResult, dict[str, LoadedDefinition]],
) -> None:
    """Lint finds only what a line already said: the secondary schedule was not imported."""
    _, loaded = pagerduty
    problems = lint(list(loaded.values()), templates=TEMPLATES_DIR, today=date(2026, 12, 7))
    assert [(p.path, p.message) for p in problems] == [
        (
            "spec.levels[1].actions[0].to[0]",
            "no schedule named 'support-secondary' (oncall:support-secondary)",
        )
    ]


def test_pagerduty_round_robin_rule(tmp_path: Path) -> None:
    """A rule with escalation_rule_assignment_strategy round_robin pages one of its targets
    per incident, in turn: the level's round_robin."""
    data = payloads(*PAGERDUTY_FILES)
    policy = copy.deepcopy(data[0][1])
    rule = policy["escalation_policy"]["escalation_rules"][1]
    rule["escalation_rule_assignment_strategy"] = {"type": "round_robin"}
    erin = {"id": "PERIN01", "type": "user_reference", "summary": "Erin Walsh"}
    rule["targets"] = [*rule["targets"][1:], erin]
    result = import_pagerduty([("policy.json", policy), *data[1:]], now=NOW)
    level = written(result, tmp_path)["support-escalation"].definition.spec.levels[1]  # type: ignore[union-attr]
    assert level.round_robin is True
    assert recipients(level) == ["dave@example.com", "erin@example.com"]


def test_pagerduty_users_without_email_are_left_out_with_a_line(tmp_path: Path) -> None:
    """Without GET /users, the references carry no email: each person is one line, and a
    layer or rule left with no one is left out too."""
    result = import_pagerduty(payloads(*PAGERDUTY_FILES[:2]), now=NOW)
    lines = result.lines()
    assert lines[0] == "pagerduty_schedule.json: schedule: not imported: no layer is left to write"
    assert (
        "escalation support-escalation: rule 2: user PLEAD07 (Dave Lopez) has no email in these "
        "files, left out: add the GET /users answer (or the policy with include[]=targets) to "
        "the files"
    ) in lines
    assert "escalation support-escalation: rule 3: nothing in it opsflow can notify; left out" in (
        lines
    )
    policy = written(result, tmp_path)["support-escalation"].definition.spec
    assert [recipients(level) for level in policy.levels] == [  # type: ignore[union-attr]
        ["oncall:support-primary"],
        ["oncall:support-secondary"],
    ]


def test_an_unreadable_policy_is_left_out_and_the_rest_imported(tmp_path: Path) -> None:
    data = payloads(*PAGERDUTY_FILES)
    broken = copy.deepcopy(data[0][1])
    del broken["escalation_policy"]["escalation_rules"][0]["escalation_delay_in_minutes"]
    result = import_pagerduty([("policy.json", broken), *data[1:]], now=NOW)
    assert [d.name for d in result.definitions] == ["support-primary"]
    assert result.lines()[0] == (
        "policy.json: escalation_policy: not imported: escalation_policy.escalation_rules[0]"
        ".escalation_delay_in_minutes: expected a whole number, found nothing"
    )
    written(result, tmp_path)


def test_a_weekly_restriction_wraps_past_sunday() -> None:
    """PagerDuty's weekly_restriction from Sunday 20:00 for 16 hours ends Monday 12:00."""
    assert hours(weekly_window(6 * 24 * 60 + 20 * 60, 16 * 60)) == {
        "mon": "00:00-12:00",
        "sun": "20:00-24:00",
    }
    assert hours(weekly_window(0, 7 * 24 * 60)) is None


def test_a_schedule_and_a_policy_of_one_name_get_two_names(tmp_path: Path) -> None:
    data = payloads(*PAGERDUTY_FILES)
    policy = copy.deepcopy(data[0][1])
    policy["escalation_policy"]["name"] = "Support Primary"
    result = import_pagerduty([("policy.json", policy), *data[1:]], now=NOW)
    assert sorted(written(result, tmp_path)) == ["support-primary", "support-primary-escalation"]


# --- Opsgenie ------------------------------------------------------------------------------


@pytest.fixture
def opsgenie(tmp_path: Path) -> tuple[ImportResult, dict[str, LoadedDefinition]]:
    result = import_opsgenie(payloads(*OPSGENIE_FILES), now=NOW)
    return result, written(result, tmp_path)


def test_opsgenie_rules_become_levels_at_their_own_delays(
    opsgenie: tuple[ImportResult, dict[str, LoadedDefinition]],
) -> None:
    """Opsgenie counts each rule's delay from the alert: rules 2 and 3 (5 minutes) are one
    level; rule 4 (notifyType next: the next person in the rotation) is left out; a team
    recipient is `team:<name>`; repeat.count is repeat."""
    _, loaded = opsgenie
    policy = loaded["payments-escalation"].definition.spec
    assert [(level.after, level.name, recipients(level)) for level in policy.levels] == [  # type: ignore[union-attr]
        (timedelta(seconds=1), "rule 1", ["oncall:payments-schedule"]),
        (timedelta(minutes=5), "rules 2, 3", ["sam@example.com", "team:payments-leads"]),
        (timedelta(minutes=20), "rule 5", ["priya@example.com"]),
    ]
    assert policy.repeat == 2  # type: ignore[union-attr]
    # (20m to the last rule + 10m waitInterval) x 3 passes.
    assert policy.slas[0].first_response == timedelta(minutes=90)  # type: ignore[union-attr]
    assert loaded["payments-escalation"].definition.metadata.owner == "payments"


def test_opsgenie_rotations_become_layers(
    opsgenie: tuple[ImportResult, dict[str, LoadedDefinition]],
) -> None:
    """startDate (UTC) becomes the local first handoff; hourly x 12 a 12h turn; a
    weekday-and-time-of-day restriction per weekday and a time-of-day one across midnight
    become restrictions; a team and a `none` participant are left out."""
    _, loaded = opsgenie
    spec = loaded["payments-schedule"].definition.spec
    assert spec.timezone == "America/New_York"  # type: ignore[union-attr]
    assert [
        (layer.name, layer.start, layer.turn, layer.users, layer.restrictions)
        for layer in spec.layers  # type: ignore[union-attr]
    ] == [
        (
            "weekly-primary",
            datetime(2026, 1, 5, 9, 0),
            timedelta(weeks=1),
            ["alice@example.com", "bob@example.com", "carol@example.com"],
            None,
        ),
        (
            "business-hours-backup",
            datetime(2026, 1, 5, 9, 0),
            timedelta(days=1),
            ["dave@example.com", "erin@example.com"],
            {d: ["09:00-17:00"] for d in ("mon", "tue", "wed", "thu", "fri")},
        ),
        (
            "nights",
            datetime(2026, 1, 4, 22, 0),
            timedelta(hours=12),
            ["frank@example.com", "grace@example.com"],
            {
                d: ["00:00-06:00", "22:00-24:00"]
                for d in ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
            },
        ),
    ]


def test_opsgenie_lines_say_what_was_not_carried_over(
    opsgenie: tuple[ImportResult, dict[str, LoadedDefinition]],
) -> None:
    result, _ = opsgenie
    schedule = "schedule payments-schedule: "
    escalation = "escalation payments-escalation: "
    assert result.lines() == [
        f"{schedule}rotation 'Business hours backup': participant team payments_leads not "
        "carried over: an opsflow layer rotates people, not teams or escalations",
        f"{schedule}rotation 'Nights': participant 2 is 'none' (a turn with no one on call); "
        "opsflow has no empty turn, so the rotation is shorter by one turn",
        f"{schedule}rotation 'Holiday cover 2025' ended 2026-01-02T09:00: history, left out",
        f"{schedule}layers weekly-primary and business-hours-backup are both on call mon-fri "
        "09:00-17:00: Opsgenie notifies the people on call in both; opsflow pages only the one "
        "of business-hours-backup (the later layer wins)",
        f"{schedule}layers weekly-primary and nights are both on call mon-sun 00:00-06:00 and "
        "22:00-24:00: Opsgenie notifies the people on call in both; opsflow pages only the one "
        "of nights (the later layer wins)",
        f"{escalation}SLA targets: the vendor has none; written first_response 1h30m (when its "
        "escalation has run its course) and resolution 1d for p1-p4 on a 24x7 clock: set your "
        "own",
        f"{escalation}rule 3: notifyType 'admins' not carried over: opsflow notifies "
        "team:payments-leads as it is",
        f"{escalation}rule 4: notifyType 'next' (the next person in the rotation) not carried "
        "over: oncall:payments-schedule is the person on call now; left out",
        f"{escalation}rule 5: condition 'if-not-closed' not carried over: opsflow levels stop "
        "when the case is acknowledged (if-not-acked)",
        f"{escalation}rule 1: Opsgenie notifies at once (delay 0); an opsflow level needs a "
        "delay, so level 1 fires 1s after the case opens",
        f"{escalation}repeat.waitInterval 10m not carried over: opsflow starts the next cycle "
        "when the last level fires, so each pass comes 10m sooner",
        f"{escalation}repeat.closeAlertAfterAll not carried over: opsflow does not close a case "
        "when its escalation has run out",
        f'{escalation}selection: it is written with match "true" at order 10000, after every '
        "other policy; give it a match for the cases it should take (or open cases with "
        "--policy)",
    ]


def test_opsgenie_import_lints_clean(
    opsgenie: tuple[ImportResult, dict[str, LoadedDefinition]],
) -> None:
    """The escalation names the schedule imported with it; the weekly layer covers the whole
    week, so no coverage gap."""
    _, loaded = opsgenie
    assert lint(list(loaded.values()), templates=TEMPLATES_DIR, today=date(2026, 12, 7)) == []


def test_opsgenie_users_named_by_id_come_from_the_users_answer(tmp_path: Path) -> None:
    data = payloads(*OPSGENIE_FILES)
    escalation = copy.deepcopy(data[0][1])
    del escalation["data"]["rules"][1]["recipient"]["username"]
    users = {
        "data": [{"id": "2a7f9c1e-3b4d-4e5f-8a9b-0c1d2e3f4a5b", "username": "sam@example.com"}]
    }
    result = import_opsgenie([("e.json", escalation), data[1], ("users.json", users)], now=NOW)
    policy = written(result, tmp_path)["payments-escalation"].definition.spec
    assert recipients(policy.levels[1])[0] == "sam@example.com"  # type: ignore[union-attr]


# --- input that is not an API answer -------------------------------------------------------


@pytest.mark.parametrize("importer", [import_pagerduty, import_opsgenie])
def test_other_json_is_refused_naming_the_file(importer: Importer) -> None:
    with pytest.raises(ImportRefused, match=r"^notes\.json: not an? (PagerDuty|Opsgenie) API"):
        importer([("notes.json", {"title": "on-call notes"})], now=NOW)


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b'{"escalation_policy": {}, "escalation_policy": {}}', "appears twice"),
        (b'{"num_loops": NaN}', "NaN is not a JSON number"),
        (b"[" * 100 + b"]" * 100, "nested deeper than 64"),
        (b"\xef\xbb\xbf{}", "byte-order mark"),
        (b'{"a": "\\u0000"}', "U+0000"),
        (b"", "empty"),
    ],
)
def test_strict_json(raw: bytes, message: str) -> None:
    with pytest.raises(ImportRefused, match=re.escape(message)):
        read_json(raw, "x.json")


HOSTILE = sorted(HOSTILE_JSON.glob("*.json")) if HOSTILE_JSON.is_dir() else []


@pytest.mark.skipif(not HOSTILE, reason="the shared hostile corpus is not here")
@pytest.mark.parametrize("path", HOSTILE, ids=[p.name for p in HOSTILE])
@pytest.mark.parametrize("importer", [import_pagerduty, import_opsgenie])
def test_hostile_json_is_refused_with_one_line(path: Path, importer: Importer) -> None:
    """JSONTestSuite's bodies (../shared/fixtures/hostile/json): each is refused with a
    one-line reason naming the file, never another exception."""
    with pytest.raises(ImportRefused) as refused:
        importer([(path.name, read_json(path.read_bytes(), path.name))], now=NOW)
    assert str(refused.value).startswith(path.name)
    assert "\n" not in str(refused.value)


def test_vendor_text_never_breaks_the_yaml(tmp_path: Path) -> None:
    """Names and descriptions with controls, bidi overrides and line separators become
    printable text; the files still load."""
    data = payloads(*PAGERDUTY_FILES)
    policy = copy.deepcopy(data[0][1])
    policy["escalation_policy"]["name"] = "Support \u202eEscalation\x1b[31m"
    policy["escalation_policy"]["description"] = "line one\u2028line two\u200f"
    result = import_pagerduty([("policy.json", json.loads(json.dumps(policy))), *data[1:]], now=NOW)
    loaded = written(result, tmp_path)
    assert loaded["support-escalation-31m"].definition.metadata.description == ("line one line two")


def test_a_policy_exported_twice_is_imported_once(tmp_path: Path) -> None:
    """The same policy from GET /escalation_policies/{id} and from the list answer."""
    data = payloads(*PAGERDUTY_FILES)
    listed = {"escalation_policies": [data[0][1]["escalation_policy"]], "limit": 25}
    result = import_pagerduty([*data, ("all_policies.json", listed)], now=NOW)
    assert sorted(written(result, tmp_path)) == ["support-escalation", "support-primary"]
    assert result.lines()[0] == (
        "all_policies.json: escalation_policies[0]: PT20YPA is also in "
        "pagerduty_escalation_policy.json: escalation_policy; that one is used"
    )


NAUGHTY = (
    Path(__file__).resolve().parents[3] / "shared" / "fixtures" / "hostile" / "naughty-strings.json"
)


@pytest.mark.skipif(not NAUGHTY.is_file(), reason="the shared hostile corpus is not here")
def test_naughty_vendor_text_always_loads(tmp_path: Path) -> None:
    """Every string of the Big List of Naughty Strings as a policy's, a team's, a
    schedule's and a layer's name and as descriptions: the import writes files the loader
    accepts (names as slugs, texts cleaned), whatever the vendor held."""
    strings = json.loads(NAUGHTY.read_text(encoding="utf-8"))
    data = payloads(*PAGERDUTY_FILES)
    # One rule and one layer each: the loader reads a thousand files.
    template = copy.deepcopy(data[0][1]["escalation_policy"])
    template["escalation_rules"] = template["escalation_rules"][2:]
    template_schedule = copy.deepcopy(data[1][1]["schedule"])
    template_schedule["schedule_layers"] = template_schedule["schedule_layers"][2:3]
    del template_schedule["overrides_subschedule"]
    policies, schedules = [], []
    for number, text in enumerate(strings):
        policy = copy.deepcopy(template)
        policy.update(id=f"P{number}", name=text, description=f"{text}\n{text}")
        policy["teams"] = [{"id": "T", "type": "team_reference", "summary": text}]
        policies.append(policy)
        schedule = copy.deepcopy(template_schedule)
        schedule.update(id=f"S{number}", name=text, description=text)
        schedule["schedule_layers"][0]["name"] = text
        schedules.append(schedule)
    answers = [("policies.json", {"escalation_policies": policies}), data[2]]
    answers.append(("schedules.json", {"schedules": schedules}))
    result = import_pagerduty(answers, now=NOW)
    assert len(result.definitions) == 2 * len(strings)
    loaded = written(result, tmp_path)
    assert len(loaded) == 2 * len(strings)


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("rotation_turn_length_seconds", 10**20, "is not from 1 to 31622400"),
        ("rotation_virtual_start", "9999-12-31T23:59:59+00:00", "9999 is not from 1970 to 2200"),
        ("start", "2026-13-01T00:00:00Z", "is not a timestamp such as 2026-01-05T09:00:00Z"),
        ("users", {"user": "PALICE1"}, "users: expected a list, found an object"),
    ],
)
def test_absurd_values_leave_the_schedule_out_with_a_line(
    field: str, value: Any, message: str
) -> None:
    data = payloads(*PAGERDUTY_FILES)
    schedule = copy.deepcopy(data[1][1])
    schedule["schedule"]["schedule_layers"][0][field] = value
    result = import_pagerduty([data[0], ("schedule.json", schedule), data[2]], now=NOW)
    assert [d.name for d in result.definitions] == ["support-escalation"]
    assert result.lines()[0].startswith("schedule.json: schedule: not imported: ")
    assert message in result.lines()[0]
