"""PagerDuty escalation policies and schedules (REST API v2 JSON) as opsflow definitions.

Reads what these calls answer, in any number of files, each one response or a JSON list of
them: `GET /escalation_policies/{id}` (`{"escalation_policy": ...}`; with
`include[]=targets` its users carry their emails), `GET /escalation_policies`,
`GET /schedules/{id}` (`{"schedule": ...}`), and `GET /users` / `GET /users/{id}` for the
emails of the people a schedule or policy names by reference only.

- A policy's `escalation_rules[]` become levels: rule 1 notifies at once, rule k after the
  delays of the rules before it (`after` cumulative); a `user_reference` target becomes the
  user's email, a `schedule_reference` `oncall:<schedule name>`; `num_loops` is `repeat`; a
  rule's `escalation_rule_assignment_strategy` `round_robin` is the level's `round_robin`.
- A schedule's `schedule_layers[]` become layers: PagerDuty lists the highest-priority layer
  first and opsflow's later layer wins, so their order is reversed; the turn is
  `rotation_turn_length_seconds`, handoffs align on `rotation_virtual_start`, and
  `daily_restriction`/`weekly_restriction` become the layer's `restrictions`.

Everything else that cannot be carried over is one line in the result's notes.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from definitions.duration import format_duration
from definitions.importers.common import (
    DAY_MINUTES,
    FIRST_LEVEL_AFTER,
    WEEK_MINUTES,
    ImportedDefinition,
    ImportRefused,
    ImportResult,
    Level,
    Names,
    Windows,
    as_list,
    as_object,
    aware,
    clean_label,
    clean_text,
    email,
    escalation_body,
    first_handoff,
    int_field,
    layer,
    list_field,
    local,
    local_text,
    metadata,
    moment_field,
    once,
    rotated,
    schedule_body,
    selection_note,
    sla_note,
    slug,
    text_field,
    union,
    unique_layer_name,
    weekly_window,
    zone_field,
)

VENDOR = "PagerDuty"
MAX_REPEAT = 10
# Response keys (and an object's own `type`) -> what they hold.
_SINGLE = {"escalation_policy": "policy", "schedule": "schedule", "user": "user"}
_LISTS = {"escalation_policies": "policy", "schedules": "schedule", "users": "user"}


@dataclass
class _Input:
    policies: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    schedules: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    users: list[dict[str, Any]] = field(default_factory=list)

    def add(self, what: str, value: Any, where: str) -> None:
        item = as_object(value, where)
        if what == "policy":
            self.policies.append((where, item))
        elif what == "schedule":
            self.schedules.append((where, item))
        else:
            self.users.append(item)


def _collect(data: Any, where: str, found: _Input) -> None:
    """Sort one response (or a list of responses) into policies, schedules and users."""
    if isinstance(data, list):
        for index, item in enumerate(data):
            _collect(item, f"{where}[{index}]", found)
        return
    if not isinstance(data, dict):
        raise ImportRefused(f"{where}: not a PagerDuty API response (expected an object)")
    recognised = False
    for key, what in _SINGLE.items():
        if key in data:
            found.add(what, data[key], f"{where}: {key}")
            recognised = True
    for key, what in _LISTS.items():
        if key in data:
            for index, item in enumerate(as_list(data[key], f"{where}: {key}")):
                found.add(what, item, f"{where}: {key}[{index}]")
            recognised = True
    if not recognised and data.get("type") in _SINGLE:  # the inner object saved on its own
        found.add(_SINGLE[data["type"]], data, where)
        recognised = True
    if not recognised:
        raise ImportRefused(
            f"{where}: not a PagerDuty API response: expected escalation_policy, "
            "escalation_policies, schedule, schedules, user or users"
        )


def import_pagerduty(payloads: Sequence[tuple[str, Any]], *, now: datetime) -> ImportResult:
    """Definitions from PagerDuty API responses: `payloads` are (file name, parsed JSON);
    `now` decides which layers have ended and which overrides are past."""
    found = _Input()
    for file, data in payloads:
        _collect(data, file, found)
    if not found.policies and not found.schedules:
        raise ImportRefused(
            "no escalation policy or schedule in the files (users alone give nothing to write)"
        )
    return _Importer(found, now).run()


@dataclass
class _Person:
    email: str | None
    label: str


class _Importer:
    def __init__(self, found: _Input, now: datetime) -> None:
        self.found = found
        self.now = now
        self.result = ImportResult()
        self.names = Names()
        self.emails: dict[str, str] = {}
        for user in found.users:
            self._remember(user)
        for _, policy in found.policies:
            for rule in policy.get("escalation_rules") or []:
                for target in (rule.get("targets") or []) if isinstance(rule, dict) else []:
                    self._remember(target)
        self.schedule_names: dict[str, str] = {}
        """PagerDuty schedule id -> the name its definition is written under."""

    def _remember(self, user: Any) -> None:
        if isinstance(user, dict) and isinstance(user.get("id"), str):
            address = email(user.get("email"))
            if address:
                self.emails[user["id"]] = address

    def run(self) -> ImportResult:
        # Schedules are named first: a policy's oncall:<name> names what a schedule of these
        # files is written as.
        schedules = [
            (where, schedule, self._name(schedule, f"pagerduty-schedule-{index}", "schedule"))
            for index, (where, schedule) in enumerate(
                once(self.found.schedules, self.result.notes), 1
            )
        ]
        for _, schedule, name in schedules:
            if isinstance(schedule.get("id"), str):
                self.schedule_names[schedule["id"]] = name
        for where, schedule, name in schedules:
            self._guarded(where, self._schedule, schedule, name)
        for index, (where, policy) in enumerate(once(self.found.policies, self.result.notes), 1):
            name = self._name(policy, f"pagerduty-policy-{index}", "escalation")
            self._guarded(where, self._policy, policy, name)
        return self.result

    def _name(self, item: dict[str, Any], fallback: str, kind: str) -> str:
        return self.names.claim(
            slug(str(item.get("name") or item.get("summary") or "")), fallback, kind
        )

    def _guarded(
        self,
        where: str,
        convert: Callable[[dict[str, Any], str], ImportedDefinition],
        item: dict[str, Any],
        name: str,
    ) -> None:
        """One policy or schedule the importer cannot read is left out with its reason; the
        others are still written."""
        try:
            definition = convert(item, name)
        except ImportRefused as exc:
            self.result.notes.append(f"{where}: not imported: {exc}")
            return
        self.result.definitions.append(definition)

    def _person(self, reference: dict[str, Any]) -> _Person:
        user_id = reference.get("id")
        label = clean_label(str(reference.get("summary") or reference.get("name") or ""), 80)
        shown = f"{clean_label(str(user_id), 40)} ({label})" if label else clean_label(str(user_id))
        address = email(reference.get("email")) or (
            self.emails.get(user_id) if isinstance(user_id, str) else None
        )
        return _Person(address, shown)

    # --- escalation policies ---------------------------------------------------------------

    def _policy(self, policy: dict[str, Any], name: str) -> ImportedDefinition:
        where = "escalation_policy"
        policy_id = clean_label(str(policy.get("id") or "?"), 40)
        title = clean_label(text_field(policy, "name", where, required=False) or name, 120)
        notes: list[str] = []
        missing_people: set[str] = set()
        levels: list[Level] = []
        elapsed = timedelta(0)
        rules = list_field(policy, "escalation_rules", where)
        if not rules:
            raise ImportRefused(f"{where}.escalation_rules: the policy has no rules")
        last_delay = timedelta(0)
        for number, raw_rule in enumerate(rules, start=1):
            at = f"{where}.escalation_rules[{number - 1}]"
            rule = as_object(raw_rule, at)
            delay = timedelta(minutes=int_field(rule, "escalation_delay_in_minutes", at))
            recipients = self._recipients(rule, number, at, notes, missing_people)
            after = elapsed if number > 1 else FIRST_LEVEL_AFTER
            elapsed += delay
            last_delay = delay
            strategy = rule.get("escalation_rule_assignment_strategy")
            round_robin = isinstance(strategy, dict) and strategy.get("type") == "round_robin"
            if not recipients:
                notes.append(f"rule {number}: nothing in it opsflow can notify; left out")
                continue
            if levels and after <= levels[-1].after:
                levels[-1].recipients += [r for r in recipients if r not in levels[-1].recipients]
                notes.append(
                    f"rule {number} fires together with the rule before it (no delay between "
                    f"them): merged into level {len(levels)}"
                )
                continue
            levels.append(Level(after, f"rule {number}", recipients, round_robin))
        if not levels:
            raise ImportRefused("no rule has a target opsflow can notify")
        if rules and levels[0].name == "rule 1":
            notes.append(
                f"rule 1: {VENDOR} notifies it when the incident triggers; an opsflow level "
                f"needs a delay, so level 1 fires {format_duration(FIRST_LEVEL_AFTER)} after the "
                "case opens"
            )
        loops = int_field(policy, "num_loops", where, default=0)
        repeat = min(loops, MAX_REPEAT)
        if loops > MAX_REPEAT:
            notes.append(f"num_loops {loops}: opsflow repeats at most {MAX_REPEAT} times")
        # PagerDuty loops back to rule 1 when the last rule's delay has run out; opsflow's
        # next cycle starts when the last level fires (its cycle is the last level's after).
        if repeat and last_delay:
            notes.append(
                f"num_loops {loops}: {VENDOR} starts the next loop {format_duration(last_delay)} "
                f"(rule {len(rules)}'s delay) after the last rule; opsflow starts the next cycle "
                f"when the last level fires, so each loop comes {format_duration(last_delay)} "
                "sooner"
            )
        handoffs = policy.get("on_call_handoff_notifications")
        if isinstance(handoffs, str) and handoffs:
            notes.append(
                f"on_call_handoff_notifications {clean_label(handoffs, 40)!r}: opsflow does not "
                "notify people of their on-call handoffs"
            )
        services = [
            clean_label(str(s.get("summary") or s.get("id")), 80)
            for s in list_field(policy, "services", where)
            if isinstance(s, dict)
        ]
        notes.append(selection_note(services))
        owner = _team_owner(policy, where, "policy", notes)
        meta = metadata(
            name,
            owner,
            clean_text(text_field(policy, "description", where, required=False)),
            {"imported-from": "pagerduty", "pagerduty-id": policy_id.lower()[:200] or "unknown"},
        )
        body = escalation_body(meta, levels, repeat, elapsed * (1 + repeat))
        notes.insert(0, sla_note(body))
        return ImportedDefinition(
            "escalation",
            name,
            f"{VENDOR} escalation policy {policy_id} ({title})",
            body,
            notes,
        )

    def _recipients(
        self,
        rule: dict[str, Any],
        number: int,
        where: str,
        notes: list[str],
        missing_people: set[str],
    ) -> list[str]:
        recipients: list[str] = []
        for index, raw in enumerate(list_field(rule, "targets", where)):
            target = as_object(raw, f"{where}.targets[{index}]")
            kind = str(target.get("type") or "")
            target_id = clean_label(str(target.get("id") or "?"), 40)
            label = clean_label(str(target.get("summary") or target.get("name") or ""), 80)
            shown = f"{target_id} ({label})" if label else target_id
            recipient: str | None = None
            if kind in ("user_reference", "user"):
                person = self._person(target)
                recipient = person.email
                if recipient is None and person.label not in missing_people:
                    missing_people.add(person.label)
                    notes.append(_missing_email(person.label, f"rule {number}"))
            elif kind in ("schedule_reference", "schedule"):
                schedule = self.schedule_names.get(str(target.get("id")))
                if schedule is None:
                    schedule = slug(label) or slug(f"pagerduty-{target_id}")
                    notes.append(
                        f"rule {number}: schedule {shown} is not in these files: written as "
                        f"oncall:{schedule}; import its GET /schedules/{target_id} answer too"
                    )
                recipient = f"oncall:{schedule}"
            elif kind == "escalation_policy_reference":
                notes.append(
                    f"rule {number}: target escalation_policy_reference {shown} not carried "
                    "over: an opsflow level notifies people and schedules, not another policy"
                )
            else:
                notes.append(
                    f"rule {number}: target {clean_label(kind, 40) or 'without a type'} {shown} "
                    "not carried over: only users and schedules are"
                )
            if recipient is not None and recipient not in recipients:
                recipients.append(recipient)
        return recipients

    # --- schedules -------------------------------------------------------------------------

    def _schedule(self, schedule: dict[str, Any], name: str) -> ImportedDefinition:
        where = "schedule"
        schedule_id = clean_label(str(schedule.get("id") or "?"), 40)
        title = clean_label(text_field(schedule, "name", where, required=False) or name, 120)
        zone = zone_field(schedule, "time_zone", where)
        if "schedule_layers" not in schedule:
            raise ImportRefused(
                "the schedule has no schedule_layers (GET /schedules lists them without): "
                f"export GET /schedules/{schedule_id}"
            )
        notes: list[str] = []
        missing_people: set[str] = set()
        written: list[dict[str, Any]] = []
        taken: set[str] = set()
        raw_layers = list_field(schedule, "schedule_layers", where)
        # PagerDuty lists the highest-priority layer first; opsflow's later layer wins.
        for index in reversed(range(len(raw_layers))):
            at = f"{where}.schedule_layers[{index}]"
            converted = self._layer(
                as_object(raw_layers[index], at), at, zone, taken, notes, missing_people
            )
            if converted is not None:
                written.append(converted)
        if not written:
            raise ImportRefused("no layer is left to write")
        overrides = self._overrides(schedule, zone, notes, missing_people)
        owner = _team_owner(schedule, where, "schedule", notes)
        meta = metadata(
            name,
            owner,
            clean_text(text_field(schedule, "description", where, required=False)),
            {"imported-from": "pagerduty", "pagerduty-id": schedule_id.lower()[:200] or "unknown"},
        )
        return ImportedDefinition(
            "schedule",
            name,
            f"{VENDOR} schedule {schedule_id} ({title})",
            schedule_body(meta, zone.key, written, overrides),
            notes,
        )

    def _layer(
        self,
        raw: dict[str, Any],
        where: str,
        zone: ZoneInfo,
        taken: set[str],
        notes: list[str],
        missing_people: set[str],
    ) -> dict[str, Any] | None:
        title = clean_label(str(raw.get("name") or where.rsplit(".", 1)[-1]), 80)
        about = f"layer {title!r}"
        end_text = raw.get("end")
        if end_text:
            end = moment_field(raw, "end", where)
            if end <= self.now:
                notes.append(f"{about} ended {local_text(local(end, zone))}: history, left out")
                return None
            notes.append(
                f"{about} ends {local_text(local(end, zone))}: an opsflow layer has no end; "
                "remove it then"
            )
        # PagerDuty: "the value cannot exceed one year in seconds".
        turn_seconds = int_field(
            raw, "rotation_turn_length_seconds", where, low=1, high=366 * 86_400
        )
        turn = timedelta(seconds=turn_seconds)
        if turn_seconds % 60:
            turn = timedelta(minutes=max(1, round(turn_seconds / 60)))
            notes.append(
                f"{about}: a turn of {turn_seconds}s written as {format_duration(turn)} "
                "(opsflow counts whole minutes)"
            )
        users: list[str] = []
        for index, entry in enumerate(list_field(raw, "users", where)):
            holder = as_object(entry, f"{where}.users[{index}]")
            reference = as_object(holder.get("user", holder), f"{where}.users[{index}].user")
            person = self._person(reference)
            if person.email is not None:
                users.append(person.email)
            elif person.label not in missing_people:
                missing_people.add(person.label)
                notes.append(_missing_email(person.label, about))
        if not users:
            notes.append(f"{about}: no user opsflow can page; left out")
            return None
        virtual_start = moment_field(raw, "rotation_virtual_start", where)
        start = moment_field(raw, "start", where)
        # Handoffs fall on rotation_virtual_start plus whole turns: the layer starts at the
        # handoff of the turn under way at its start, with the user whose turn that is.
        handoff, turns = first_handoff(virtual_start, start, turn, zone)
        if handoff != local(start, zone) and aware(start, zone) > self.now:
            notes.append(
                f"{about} starts {local_text(local(start, zone))}, within a turn: written to "
                f"start at that turn's handoff {local_text(handoff)} (an opsflow layer starts "
                "at a handoff)"
            )
        windows = self._restrictions(raw, where, about, notes)
        name = unique_layer_name(slug(title), len(taken) + 1, taken)
        return layer(name, handoff, turn, rotated(users, turns), windows)

    def _restrictions(
        self, raw: dict[str, Any], where: str, about: str, notes: list[str]
    ) -> Windows | None:
        windows: Windows = []
        restrictions = list_field(raw, "restrictions", where)
        for index, item in enumerate(restrictions):
            at = f"{where}.restrictions[{index}]"
            restriction = as_object(item, at)
            kind = text_field(restriction, "type", at)
            start = _time_of_day(text_field(restriction, "start_time_of_day", at), at)
            seconds = int_field(restriction, "duration_seconds", at, low=1, high=7 * 86_400)
            minutes = seconds // 60
            if seconds % 60:
                minutes = max(1, round(seconds / 60))
                notes.append(f"{about}: a restriction of {seconds}s rounded to whole minutes")
            if kind == "daily_restriction":
                for day in range(7):
                    windows += weekly_window(day * DAY_MINUTES + start, min(minutes, DAY_MINUTES))
            elif kind == "weekly_restriction":
                day = int_field(restriction, "start_day_of_week", at, low=1, high=7)
                windows += weekly_window((day - 1) * DAY_MINUTES + start, minutes)
            else:
                raise ImportRefused(
                    f"{at}.type: {clean_label(kind, 40)!r} is not daily_restriction or "
                    "weekly_restriction"
                )
        if not restrictions:
            return None
        merged = union(windows)
        return None if merged == [(0, WEEK_MINUTES)] else merged

    def _overrides(
        self,
        schedule: dict[str, Any],
        zone: ZoneInfo,
        notes: list[str],
        missing_people: set[str],
    ) -> list[dict[str, str]]:
        """Overrides rendered in `overrides_subschedule` (GET /schedules/{id} with since and
        until) that have not ended yet."""
        subschedule = schedule.get("overrides_subschedule")
        if not isinstance(subschedule, dict):
            return []
        where = "schedule.overrides_subschedule"
        written: list[dict[str, str]] = []
        for index, item in enumerate(list_field(subschedule, "rendered_schedule_entries", where)):
            at = f"{where}.rendered_schedule_entries[{index}]"
            entry = as_object(item, at)
            start, end = moment_field(entry, "start", at), moment_field(entry, "end", at)
            if end <= self.now:
                continue
            person = self._person(as_object(entry.get("user"), f"{at}.user"))
            if person.email is None:
                if person.label not in missing_people:
                    missing_people.add(person.label)
                    notes.append(_missing_email(person.label, "an override"))
                continue
            written.append(
                {
                    "user": person.email,
                    "from": local_text(local(start, zone)),
                    "to": local_text(local(end, zone)),
                }
            )
        return written


def _missing_email(person: str, where: str) -> str:
    return (
        f"{where}: user {person} has no email in these files, left out: add the GET /users "
        "answer (or the policy with include[]=targets) to the files"
    )


def _time_of_day(text: str, where: str) -> int:
    """`08:30:00` as minutes since midnight."""
    parts = text.strip().split(":")
    try:
        hour, minute = int(parts[0]), int(parts[1]) if len(parts) > 1 else 0
    except ValueError:
        hour = minute = -1
    if not (0 <= hour <= 23 and 0 <= minute <= 59):
        raise ImportRefused(
            f"{where}.start_time_of_day: {clean_label(text, 20)!r} is not a time such as 08:00:00"
        )
    return hour * 60 + minute


def _team_owner(document: dict[str, Any], where: str, what: str, notes: list[str]) -> str:
    """The owner of an imported policy or schedule: its first named team, else a placeholder
    (with a line saying so)."""
    teams = [
        clean_label(str(t.get("summary") or t.get("name") or ""), 200)
        for t in list_field(document, "teams", where)
        if isinstance(t, dict)
    ]
    owner = next((t for t in teams if t), "")
    if not owner:
        owner = "imported from PagerDuty"
        notes.append(f"owner: the {what} has no team; written as {owner!r}")
    return owner
