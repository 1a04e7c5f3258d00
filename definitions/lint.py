"""Lint: the mistakes a schema cannot see, each reported at the field that causes it.

- escalation: levels strictly later than the one before and reachable before the longest
  resolution SLA; an SLA (for any stage, `*`) for every priority the policy handles; no two
  SLAs for the same priority and stage; warn_at below 100 and increasing;
- rollout: phase percentages increasing, the last reaching every customer at 100; bake
  longer than the analysis interval; at least one open change window in the next 30 days;
  known metrics;
- recovery: known event types and journey stages; conditions, dedup keys and inline texts
  read only fields the event type has (the event contract, definitions/events.py); a credit
  that needs approval has a gate;
- handoff: no route after one that catches everything; route languages spoken by the queue;
  the escalation policy exists and is an escalation;
- schedule: someone on call at every instant of the next 30 days (the first gap is reported
  with its start and end); every `oncall:<name>` recipient names a schedule;
- everywhere: every referenced template (in every language, using only the variables its
  kind offers), queue and definition exists; in every business calendar no break overlaps
  another key's break on the same day or lies outside the opening hours, and no override
  repeats a date of holidays.dates;
- fields: every field a condition reads exists on its variable where it runs, and every
  attribute path a template or inline text reads exists in its context (the shapes below,
  the runtime's own), each reported with the closest name; a template's problem is reported
  at its line in the template file, naming the field that uses the template.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from definitions.calendar import BusinessCalendar, calendar_findings
from definitions.common import (
    AssignAction,
    CreateTicketAction,
    CreditAction,
    CrmNoteAction,
    NotifyAction,
    ScheduleCallbackAction,
    SetPriorityAction,
    StartAction,
    UpdateTicketAction,
)
from definitions.conditions import field_references, selected_fields
from definitions.directory import (
    EVENT_TYPES,
    JOURNEY_STAGES,
    LANGUAGES,
    METRICS,
    QUEUES,
    TEMPLATE_VARIABLES,
    Kind,
)
from definitions.duration import format_duration
from definitions.events import EVENT_TYPES as CONTRACT
from definitions.loader import LoadedDefinition, PathKey, Problem
from definitions.models import (
    ANY_STAGE,
    Cohort,
    CustomerNotice,
    EscalationSpec,
    FollowUp,
    HandoffSpec,
    RecoveryRule,
    RecoverySpec,
    RecoveryStep,
    RolloutSpec,
    Route,
    Trigger,
)
from definitions.schedule import Rota, ScheduleSpec, schedule_name
from definitions.templates import (
    AttributePath,
    TemplateProblem,
    attribute_paths,
    undeclared_variables,
)

WINDOW_LOOKAHEAD_DAYS = 30
COVERAGE_LOOKAHEAD_DAYS = 30
# Action types a kind's workflow cannot run, and why: lint refuses them where they are
# written, so no action is skipped silently at run time (tests/test_escalation_actions.py runs
# every other one).
NOT_RUN: dict[Kind, dict[str, str]] = {
    "escalation": {},
    "recovery": {"start": "a recovery rule already runs in the customer's recovery workflow"},
    "handoff": {"start": "a handoff hands the case to its escalation_policy; start nothing else"},
    "rollout": {
        kind: "a rollback's recovery acts per customer, and a customer has no ticket or "
        "workflow to act on here"
        for kind in ("assign", "set_priority", "update_ticket", "start")
    },
    "schedule": {},  # a schedule has no actions
}
# Kinds whose runs have no approval gate: a credit above its approval limit would never pay.
NO_APPROVAL_GATE = ("escalation", "handoff", "rollout")
# Recipients an escalation case cannot resolve (it has no owner, approvers or single agent).
ESCALATION_RECIPIENTS_REFUSED = ("owner", "approvers", "agent")
# What every event offers besides its type's data, and what a stall timer's event offers.
ENVELOPE_FIELDS = ("id", "source", "type", "time")
STALL_FIELDS = ("type", "stage", "since", "customer_id")
_EVENT_FIELD = re.compile(r"\bevent\.([A-Za-z_]\w*)")
TEMPLATE_SUFFIX = ".j2"
_SUBJECT = "Subject:"

# --- what conditions and templates see ---------------------------------------------------
# The fields of each variable as the runtime builds it; tests/definitions/test_defs_shapes.py
# holds each one against the code that builds it (definitions/ cannot import that code). A
# variable's shape maps each field to the shape of its value: the fields of a nested
# mapping, or None where lint looks no deeper (text, numbers, lists, free-form maps such as
# `history.counts_30d`, and whatever another check covers, such as a recovery `event`).
Shape = Mapping[str, "Shape | None"]


def _fields(*names: str) -> dict[str, Shape | None]:
    return dict.fromkeys(names)


CUSTOMER = _fields(  # a CRM profile (activities.customer_contracts.CustomerProfile)
    "id",
    "name",
    "tier",
    "segment",
    "lifetime_value",
    "language",
    "timezone",
    "country",
    "account_manager",
    "journey_stage",
)
TICKET = _fields(  # the case as an escalation's `match` sees it (client.cases.match_context)
    "id", "ticket_id", "customer_id", "priority", "stage", "channel", "subject", "opened_at"
)
HISTORY = _fields(  # a recovery trigger's history (RecoveryEngine.history_context)
    "median_score",
    "scores",
    "low_scores_30d",
    "low_scores_other_contacts_30d",
    "counts_30d",
    "episodes",
    "open_episode",
    "last_outcome",
    "days_since_last_episode",
)
ROUTE_CONVERSATION = _fields(  # what a handoff route reads (handoff_packet.conversation_context)
    "id", "topic", "intents", "trigger", "turns"
)
CONDITION_PLACES: tuple[tuple[type[BaseModel], str, Mapping[str, Shape | None]], ...] = (
    (EscalationSpec, "match", {"ticket": TICKET, "customer": CUSTOMER}),
    (Trigger, "when", {"event": None, "customer": CUSTOMER, "history": HISTORY}),
    (RecoveryRule, "dedup", {"event": None, "customer": CUSTOMER}),
    (Cohort, "when", {"customer": CUSTOMER}),
    (RecoveryStep, "when", {"customer": CUSTOMER}),
    (Route, "when", {"conversation": ROUTE_CONVERSATION, "customer": CUSTOMER}),
)
"""Each condition field, and the variables it sees (a recovery `event` is checked against
its event type by `_event_fields`)."""

CALLBACK = _fields(  # handoff_hours.callback_context
    "date", "time", "weekday", "day", "month", "year", "timezone", "utc"
)
TEMPLATE_CONTEXTS: dict[Kind, Mapping[str, Shape | None]] = {
    # EscalationWorkflow._template_context
    "escalation": {
        "case": _fields(
            "id",
            "ticket_id",
            "subject",
            "priority",
            "stage",
            "channel",
            "state",
            "assignee",
            "queue",
            "opened_at",
            "policy",
        ),
        "customer": CUSTOMER,
        "sla": _fields("name", "label", "budget", "spent", "remaining", "due_at", "percent"),
        "level": _fields("number", "name", "cycle", "of"),
    },
    # the rollback's NotifyPhaseCustomers context, plus each customer's profile
    "rollout": {
        "change": _fields("id", "owner", "reason", "plan", "rollback_reason"),
        "phase": _fields("name", "percent"),
        "customer": CUSTOMER,
    },
    # RecoveryEngine.template_context: `event` is the rule's event (see _message_context);
    # `action` stays empty in a rule's messages (amount and currency reach only the
    # approval notice, whose template is the workflow's own)
    "recovery": {
        "customer": CUSTOMER,
        "event": None,
        "episode": _fields("id"),
        "action": {},
    },
    # HandoffWorkflow._target
    "handoff": {
        "conversation": {"id": None, "topic": None, "callback": CALLBACK},
        "customer": CUSTOMER,
        "agent": _fields("id"),
        "queue": _fields("id", "name"),
        "wait": _fields("minutes"),
    },
    "schedule": {},  # a schedule sends no messages
}
FOLLOW_UP_EVENT = _fields("type")
"""A recovery follow-up survey's `event` (RecoveryEngine._follow_up)."""


def unknown_field(
    shapes: Mapping[str, Shape | None], variable: str, fields: Sequence[str]
) -> tuple[int, str] | None:
    """The first of `fields` (read in turn on `variable`) that its shape lacks: its index
    and a message with the closest known name; None when every field is known or unchecked."""
    shape = shapes.get(variable)
    owner = variable
    for depth, name in enumerate(fields):
        if shape is None:
            return None
        if name not in shape:
            if not shape:
                return depth, f"{owner} has no field {name!r}: it is empty here"
            close = difflib.get_close_matches(name, list(shape), n=1)
            hint = f"did you mean {close[0]!r}?" if close else f"it has {', '.join(shape)}"
            return depth, f"{owner} has no field {name!r}; {hint}"
        shape = shape[name]
        owner = f"{owner}.{name}"
    return None


def _text_column(line: str, reference: AttributePath, depth: int) -> int:
    """Where `reference` (up to its field at `depth`) starts on its line (1-based), or 1
    when it cannot be found there."""
    pattern = re.escape(reference.variable)
    for field_name in reference.fields[: depth + 1]:
        name = re.escape(field_name)
        pattern += rf"\s*(?:\.\s*{name}\b|\[\s*['\"]{name}['\"]\s*\])"
    match = re.search(rf"(?<![\w.]){pattern}", line)
    return match.start() + 1 if match else 1


def _walk(value: Any, path: PathKey) -> Iterator[tuple[Any, PathKey]]:
    """Every model inside `value` with its path (YAML keys, i.e. field aliases)."""
    if isinstance(value, BaseModel):
        yield value, path
        for name, info in type(value).model_fields.items():
            yield from _walk(getattr(value, name), (*path, info.alias or name))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _walk(item, (*path, index))
    elif isinstance(value, dict):  # by_priority: keyed by priority
        for key, item in value.items():
            yield from _walk(item, (*path, key))


@dataclass(frozen=True)
class _AttributeFinding:
    """An attribute path a template or text reads that its context lacks."""

    reference: AttributePath
    depth: int
    """Index of the first unknown field in `reference.fields`."""
    column: int
    message: str

    @property
    def path(self) -> str:
        return ".".join((self.reference.variable, *self.reference.fields[: self.depth + 1]))


@dataclass
class _TemplateCheck:
    folder: Path
    cache: dict[tuple[str, str], list[str]] = field(default_factory=dict)
    attributes: dict[tuple[str, str], list[Problem]] = field(default_factory=dict)

    def attribute_findings(
        self, source: str, shapes: Mapping[str, Shape | None]
    ) -> list[_AttributeFinding]:
        """Each attribute path in `source` that `shapes` lacks (a source that does not parse
        has none: source_problems reports it)."""
        try:
            references = attribute_paths(source)
        except TemplateProblem:
            return []
        lines = source.splitlines()
        findings: list[_AttributeFinding] = []
        for reference in references:
            found = unknown_field(shapes, reference.variable, reference.fields)
            if found is None:
                continue
            line = lines[reference.line - 1] if 0 < reference.line <= len(lines) else ""
            findings.append(
                _AttributeFinding(
                    reference, found[0], _text_column(line, reference, found[0]), found[1]
                )
            )
        return findings

    def attribute_problems(
        self, name: str, label: str, shapes: Mapping[str, Shape | None]
    ) -> list[Problem]:
        """Attribute paths the template `name` reads (in every language) that the context
        `shapes` (named `label`) lacks, each at its line in the template file."""
        key = (name, label)
        if key not in self.attributes:
            problems: list[Problem] = []
            for language in LANGUAGES:
                path = self.folder / f"{name}.{language}{TEMPLATE_SUFFIX}"
                try:
                    text = path.read_text(encoding="utf-8")
                except (OSError, UnicodeDecodeError):
                    continue  # a missing or unreadable file is reported by file_problems
                if text.startswith(_SUBJECT):  # blanked, so columns stay those of the file
                    text = " " * len(_SUBJECT) + text[len(_SUBJECT) :]
                problems.extend(
                    Problem(str(path), f.reference.line, f.column, f.path, f.message)
                    for f in self.attribute_findings(text, shapes)
                )
            self.attributes[key] = problems
        return self.attributes[key]

    def variables(self, source: str) -> set[str]:
        return undeclared_variables(source)

    def source_problems(self, source: str, allowed: frozenset[str], what: str) -> list[str]:
        try:
            used = self.variables(source)
        except Exception as exc:  # TemplateSyntaxError, TemplateProblem: one readable line
            return [f"{what}: {str(exc).splitlines()[0][:160] if str(exc) else type(exc).__name__}"]
        unknown = sorted(used - allowed)
        if unknown:
            return [
                f"{what} uses unknown variable {name!r}; here you may use "
                f"{', '.join(sorted(allowed))}"
                for name in unknown
            ]
        return []

    def file_problems(self, name: str, kind: Kind) -> list[str]:
        key = (name, kind)
        if key not in self.cache:
            self.cache[key] = self._check_files(name, kind)
        return self.cache[key]

    def _check_files(self, name: str, kind: Kind) -> list[str]:
        problems: list[str] = []
        paths = {lang: self.folder / f"{name}.{lang}{TEMPLATE_SUFFIX}" for lang in LANGUAGES}
        if not any(path.is_file() for path in paths.values()):
            return [f"no template named {name!r} ({name}.<language>{TEMPLATE_SUFFIX})"]
        for language, path in paths.items():
            if not path.is_file():
                problems.append(f"template {name!r} has no {language} version ({path.name})")
                continue
            try:
                text = path.read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as exc:
                problems.append(f"cannot read template {path.name}: {exc}")
                continue
            if text.startswith(_SUBJECT):
                subject, _, body = text.partition("\n")
                text = subject[len(_SUBJECT) :] + "\n" + body
            problems.extend(
                self.source_problems(text, TEMPLATE_VARIABLES[kind], f"template {path.name}")
            )
        return problems


@dataclass
class _Linter:
    loaded: LoadedDefinition
    kinds: Mapping[str, str]
    templates: _TemplateCheck
    today: date
    now: datetime
    problems: list[Problem] = field(default_factory=list)
    warnings: list[Problem] = field(default_factory=list)
    template_users: dict[Problem, list[str]] = field(default_factory=dict)
    """Problems in template files, each with the fields that use the template."""

    def report(self, path: PathKey, message: str) -> None:
        self.problems.append(self.loaded.source.problem(path, message))

    def report_in_text(self, path: PathKey, line: int, column: int | None, message: str) -> None:
        """A problem inside the text at `path` (a condition, an inline template): at its own
        column when the text is on one line of the file, else at the text."""
        problem = self.loaded.source.problem(path, message)
        start = self.loaded.source.inline_starts.get(path)
        if start is not None and line == 1 and column is not None:
            problem = replace(problem, column=start + column - 1)
        self.problems.append(problem)

    def warn(self, path: PathKey, message: str) -> None:
        """Worth a second look, but the definition is accepted (printed, never refused)."""
        self.warnings.append(self.loaded.source.problem(path, message))

    def run(self) -> list[Problem]:
        definition = self.loaded.definition
        spec = definition.spec
        kind: Kind = definition.kind
        self._references(spec, kind)
        self._conditions(spec)
        self._calendars(spec)
        if isinstance(spec, EscalationSpec):
            self._escalation(spec)
        elif isinstance(spec, RolloutSpec):
            self._rollout(spec)
        elif isinstance(spec, RecoverySpec):
            self._recovery(spec)
        elif isinstance(spec, HandoffSpec):
            self._handoff(spec)
        elif isinstance(spec, ScheduleSpec):
            self._schedule(spec)
        return self.problems

    # --- references shared by every kind --------------------------------------------------

    def _queue(self, queue: str | None, path: PathKey) -> None:
        if queue is not None and queue not in QUEUES:
            self.report(path, f"unknown queue {queue!r}; known: {', '.join(QUEUES)}")

    def _definition(self, name: str, path: PathKey, kind: str | None = None) -> None:
        found = self.kinds.get(name)
        if found is None:
            self.report(path, f"no definition named {name!r}")
        elif kind is not None and found != kind:
            self.report(path, f"{name!r} is a {found} definition, not {kind}")

    def _on_call_recipients(self, model: NotifyAction, path: PathKey) -> None:
        for number, recipient in enumerate(model.to):
            name = schedule_name(recipient)
            if name is None:
                continue
            found = self.kinds.get(name)
            if found is None:
                self.report((*path, "to", number), f"no schedule named {name!r} ({recipient})")
            elif found != "schedule":
                article = "an" if found[:1] in "aeiou" else "a"
                self.report(
                    (*path, "to", number),
                    f"{name!r} is {article} {found} definition, not a schedule ({recipient})",
                )

    def _message_context(
        self, kind: Kind, model: BaseModel, path: PathKey
    ) -> tuple[str, Mapping[str, Shape | None]]:
        """What the messages of `model` (at `path`) see, and a name for that context: a
        kind's context, where a recovery's `event` is the rule's event (its type's fields,
        or a stall's), and a follow-up's `event` only its type."""
        context = TEMPLATE_CONTEXTS[kind]
        spec = self.loaded.definition.spec
        if not isinstance(spec, RecoverySpec):
            return kind, context
        if isinstance(model, FollowUp):
            return "recovery follow-up", {**context, "event": FOLLOW_UP_EVENT}
        if len(path) > 2 and path[1] == "rules" and isinstance(path[2], int):
            offer = _event_offer(spec.rules[path[2]].trigger)
            if offer is not None:
                what, offered = offer
                return f"recovery {what}", {**context, "event": _fields(*offered)}
        return kind, context

    def _template_attributes(self, model: BaseModel, template: str, path: PathKey) -> None:
        label, shapes = self._message_context(self.loaded.definition.kind, model, path)
        user = self.loaded.source.problem((*path, "template"), "")
        where = f"{user.path} at {user.file}:{user.line}:{user.column}"
        for problem in self.templates.attribute_problems(template, label, shapes):
            users = self.template_users.setdefault(problem, [])
            if where not in users:
                users.append(where)

    def _conditions(self, spec: BaseModel) -> None:
        """Every field a condition reads exists on its variable (`ticket.priorty`: did you
        mean 'priority'?), at its column."""
        for model, path in _walk(spec, ("spec",)):
            for owner, name, shapes in CONDITION_PLACES:
                expression = getattr(model, name, None) if isinstance(model, owner) else None
                if not isinstance(expression, str):
                    continue
                for reference in field_references(expression):
                    found = unknown_field(shapes, reference.variable, reference.fields)
                    if found is not None:
                        depth, message = found
                        self.report_in_text(
                            (*path, name), reference.line, reference.columns[depth], message
                        )

    def _references(self, spec: BaseModel, kind: Kind) -> None:
        allowed = TEMPLATE_VARIABLES[kind]
        for model, path in _walk(spec, ("spec",)):
            if isinstance(model, NotifyAction | CustomerNotice | FollowUp):
                for message in self.templates.file_problems(model.template, kind):
                    self.report((*path, "template"), message)
                self._template_attributes(model, model.template, path)
            if isinstance(model, NotifyAction):
                self._on_call_recipients(model, path)
            if isinstance(model, AssignAction | CreateTicketAction | ScheduleCallbackAction):
                self._queue(model.queue, (*path, "queue"))
            if isinstance(model, StartAction):
                # What `start` can start is a customer's recovery (activities/starts.py).
                target_kind = "recovery" if kind == "escalation" else None
                self._definition(model.definition, (*path, "definition"), target_kind)
            self._runs(model, path, kind)
            inline: list[tuple[str, str | None]] = []
            if isinstance(model, UpdateTicketAction):
                inline.append(("comment", model.comment))
            if isinstance(model, CrmNoteAction):
                inline.append(("text", model.text))
            shapes = self._message_context(kind, model, path)[1]
            if isinstance(model, CrmNoteAction):  # its `event.<field>` reads: _event_fields
                shapes = {**shapes, "event": None}
            for key, source in inline:
                if source is not None:
                    for message in self.templates.source_problems(source, allowed, "the text"):
                        self.report((*path, key), message)
                    for finding in self.templates.attribute_findings(source, shapes):
                        self.report_in_text(
                            (*path, key), finding.reference.line, finding.column, finding.message
                        )

    def _calendars(self, spec: BaseModel) -> None:
        """Every business calendar: overlapping breaks, breaks outside the hours, overrides
        of listed holidays (calendar_findings), each at its line."""
        for model, path in _walk(spec, ("spec",)):
            if not isinstance(model, BusinessCalendar):
                continue
            raw: Any = self.loaded.source.data
            for part in path:
                if isinstance(raw, dict):
                    raw = raw.get(part)
                elif isinstance(raw, list) and isinstance(part, int) and part < len(raw):
                    raw = raw[part]
                else:
                    raw = None
            for where, message in calendar_findings(model, raw):
                self.report((*path, *where), message)

    def _runs(self, model: BaseModel, path: PathKey, kind: Kind) -> None:
        """Refuse an action this kind's workflow would not run (or would skip)."""
        action_types = (
            NotifyAction,
            AssignAction,
            SetPriorityAction,
            UpdateTicketAction,
            CrmNoteAction,
            CreditAction,
            CreateTicketAction,
            ScheduleCallbackAction,
            StartAction,
        )
        if not isinstance(model, action_types):
            return
        why = NOT_RUN[kind].get(model.type)
        if why is not None:
            self.report((*path, "type"), f"a {kind} cannot run `{model.type}`: {why}")
        if (
            isinstance(model, CreditAction)
            and kind in NO_APPROVAL_GATE
            and model.approval_above is not None
            and model.amount > model.approval_above
        ):
            self.report(
                (*path, "amount"),
                f"a credit of {model.amount} {model.currency} is above its approval limit, "
                f"and a {kind} has no approval gate: it would never be paid",
            )
        if isinstance(model, NotifyAction) and kind == "escalation":
            for number, name in enumerate(model.to):
                if name in ESCALATION_RECIPIENTS_REFUSED:
                    self.report(
                        (*path, "to", number),
                        f"a case has no {name!r} to notify; use assignee, account_manager, "
                        "customer, queue:<id>, team:<name> or an address",
                    )

    # --- per kind --------------------------------------------------------------------------

    def _escalation(self, spec: EscalationSpec) -> None:
        seen: dict[tuple[str, str], int] = {}
        for index, target in enumerate(spec.slas):
            key = (target.priority, target.stage)
            if key in seen:
                self.report(
                    ("spec", "slas", index),
                    f"a second SLA for {target.priority} at stage {target.stage!r} "
                    f"(first: slas[{seen[key]}])",
                )
            seen[key] = index
            if target.stage != ANY_STAGE and target.stage not in JOURNEY_STAGES:
                self.report(
                    ("spec", "slas", index, "stage"),
                    f"unknown journey stage {target.stage!r}; known: {', '.join(JOURNEY_STAGES)}",
                )
            if target.priority not in spec.priorities:
                self.report(
                    ("spec", "slas", index, "priority"),
                    f"{target.priority} is not among the policy's priorities, so this SLA "
                    "never applies",
                )
        for priority in spec.priorities:
            if (priority, ANY_STAGE) not in seen:
                self.report(
                    ("spec", "slas"),
                    f"no SLA for {priority} at stage '*': every priority the policy handles "
                    "needs one that covers any stage",
                )
        previous = 0
        for index, percent in enumerate(spec.warn_at):
            if percent >= 100:
                self.report(
                    ("spec", "warn_at", index),
                    f"{percent}: a warning must come before the breach (below 100)",
                )
            elif percent <= previous:
                self.report(
                    ("spec", "warn_at", index), f"{percent} is not above the warning before it"
                )
            previous = max(previous, percent)
        longest = max(
            (t.resolution for t in spec.slas if t.priority in spec.priorities), default=None
        )
        self._levels(spec.levels, ("spec", "levels"), longest)
        for priority, plan in spec.by_priority.items():
            where: PathKey = ("spec", "by_priority", priority)
            if priority not in spec.priorities:
                self.report(where, f"{priority} is not among the policy's priorities")
            if plan.levels is not None:
                own = max((t.resolution for t in spec.slas if t.priority == priority), default=None)
                self._levels(plan.levels, (*where, "levels"), own)

    def _levels(self, levels: list[Any], at: PathKey, longest: timedelta | None) -> None:
        before = None
        for index, level in enumerate(levels):
            path = (*at, index, "after")
            if before is not None and level.after <= before:
                self.report(
                    path,
                    f"level {index + 1} fires after {format_duration(level.after)}, not later than "
                    f"level {index} ({format_duration(before)})",
                )
            if longest is not None and level.after >= longest:
                self.report(
                    path,
                    f"level {index + 1} fires after {format_duration(level.after)}, when every "
                    f"resolution SLA (longest {format_duration(longest)}) has breached: "
                    "it can never be reached in time",
                )
            before = level.after if before is None else max(before, level.after)

    def _rollout(self, spec: RolloutSpec) -> None:
        previous = 0.0
        for index, phase in enumerate(spec.phases):
            path = ("spec", "phases", index)
            if phase.cohort.percent <= previous:
                self.report(
                    (*path, "cohort", "percent"),
                    f"{phase.cohort.percent:g}% does not increase on the phase before "
                    f"({previous:g}%)",
                )
            previous = max(previous, phase.cohort.percent)
            if phase.bake <= spec.analysis.interval:
                self.report(
                    (*path, "bake"),
                    f"bake {format_duration(phase.bake)} is not longer than the analysis "
                    f"interval ({format_duration(spec.analysis.interval)}): no check would run",
                )
            for number, check in enumerate(phase.checks):
                if check.metric not in METRICS:
                    self.report(
                        (*path, "checks", number, "metric"),
                        f"unknown metric {check.metric!r}; known: {', '.join(METRICS)}",
                    )
        last = spec.phases[-1]
        if last.cohort.percent != 100 or last.cohort.when is not None:
            self.report(
                ("spec", "phases", len(spec.phases) - 1, "cohort"),
                "the last phase must reach every customer: percent 100 and no `when`",
            )
        if spec.impact.risk != "emergency" and not self._window_opens(spec):
            self.report(
                ("spec", "windows"),
                f"no open change window in the next {WINDOW_LOOKAHEAD_DAYS} days "
                "(hours, holidays and blackouts together)",
            )

    def _window_opens(self, spec: RolloutSpec) -> bool:
        calendar = spec.change_calendar()
        for offset in range(WINDOW_LOOKAHEAD_DAYS + 1):
            if calendar.open_intervals(self.today + timedelta(days=offset)):
                return True
        return False

    def _recovery(self, spec: RecoverySpec) -> None:
        if spec.follow_up is not None:
            self._queue(
                spec.follow_up.not_recovered_queue, ("spec", "follow_up", "not_recovered_queue")
            )
        names: dict[str, int] = {}
        for index, rule in enumerate(spec.rules):
            path = ("spec", "rules", index)
            if rule.name in names:
                self.report((*path, "name"), f"a second rule named {rule.name!r}")
            names[rule.name] = index
            trigger = rule.trigger
            if trigger.event is not None and trigger.event not in EVENT_TYPES:
                self.report(
                    (*path, "trigger", "event"),
                    f"unknown event type {trigger.event!r}; known: {', '.join(EVENT_TYPES)}",
                )
            self._event_fields(rule, path)
            if trigger.stall is not None and trigger.stall.stage not in JOURNEY_STAGES:
                self.report(
                    (*path, "trigger", "stall", "stage"),
                    f"unknown journey stage {trigger.stall.stage!r}",
                )
            for model, model_path in _walk(rule, path):
                if (
                    isinstance(model, CreditAction)
                    and model.approval_above is not None
                    and model.amount > model.approval_above
                    and rule.approval is None
                ):
                    self.report(
                        model_path,
                        f"a credit of {model.amount} {model.currency} is above its approval "
                        "limit, but the rule has no approval gate",
                    )
            self._auto_approval(rule, path)

    def _auto_approval(self, rule: RecoveryRule, path: PathKey) -> None:
        """Warn where a gate pays by itself: `on_timeout: approve_reduced`."""
        gate = rule.approval
        if gate is None or gate.on_timeout != "approve_reduced":
            return
        currencies = sorted(
            {m.currency for m, _ in _walk(rule, path) if isinstance(m, CreditAction)}
        )
        amount = f"{gate.reduced_amount} {'/'.join(currencies)}".strip()
        self.warn(
            (*path, "approval", "on_timeout"),
            f"approve_reduced pays {amount} when nobody answers within "
            f"{format_duration(gate.timeout)}, with no human involved; `skip` or `escalate` "
            "keeps a person in the loop",
        )

    def _event_fields(self, rule: RecoveryRule, path: PathKey) -> None:
        """Refuse `event.<field>` reads the triggering event cannot satisfy."""
        trigger = rule.trigger
        offer = _event_offer(trigger)
        if offer is None:
            return  # reported as an unknown event type
        what, offered = offer
        reads: list[tuple[PathKey, str]] = [
            ((*path, "trigger", "when"), f) for f, _ in selected_fields(trigger.when, "event")
        ]
        if rule.dedup is not None:
            reads += [((*path, "dedup"), f) for f, _ in selected_fields(rule.dedup, "event")]
        for model_, model_path in _walk(rule, path):
            if isinstance(model_, CrmNoteAction):
                reads += [((*model_path, "text"), f) for f in _EVENT_FIELD.findall(model_.text)]
        for where, name in reads:
            if name not in offered:
                self.report(
                    where,
                    f"{what} has no field {name!r}; it has {', '.join(offered)}",
                )

    def _handoff(self, spec: HandoffSpec) -> None:
        catch_all: int | None = None
        for index, route in enumerate(spec.routes):
            path = ("spec", "routes", index)
            if catch_all is not None:
                self.report(
                    path,
                    f"route {route.name!r} can never be reached: route "
                    f"{spec.routes[catch_all].name!r} before it takes every conversation",
                )
            elif route.catches_all:
                catch_all = index
            self._queue(route.queue, (*path, "queue"))
            spoken = QUEUES.get(route.queue, ())
            for number, language in enumerate(route.languages):
                if route.queue in QUEUES and language not in spoken:
                    self.report(
                        (*path, "languages", number),
                        f"queue {route.queue!r} has no agents for {language!r}",
                    )
        self._queue(spec.overflow_queue, ("spec", "overflow_queue"))
        self._definition(spec.escalation_policy, ("spec", "escalation_policy"), "escalation")
        if spec.offer_timeout >= spec.max_wait:
            self.report(("spec", "offer_timeout"), "the offer timeout is not shorter than max_wait")
        if spec.relax_after is not None and spec.relax_after >= spec.max_wait:
            self.report(("spec", "relax_after"), "relax_after is not shorter than max_wait")

    def _schedule(self, spec: ScheduleSpec) -> None:
        end = self.now + timedelta(days=COVERAGE_LOOKAHEAD_DAYS)
        gaps = Rota(spec).gaps(self.now, end)
        if not gaps:
            return
        first = gaps[0]

        def local(moment: datetime) -> str:
            return moment.astimezone(spec.zone).strftime("%a %Y-%m-%d %H:%M")

        more = f" ({len(gaps) - 1} more after it)" if len(gaps) > 1 else ""
        self.report(
            ("spec", "layers"),
            f"no one is on call from {local(first.start)} to {local(first.end)} "
            f"({spec.timezone}){more} in the next {COVERAGE_LOOKAHEAD_DAYS} days: add a layer "
            "or users that cover it",
        )


def _event_offer(trigger: Trigger) -> tuple[str, tuple[str, ...]] | None:
    """What a rule's event is called and the fields it has (its type's data fields and the
    envelope's, or a stall's); None for an unknown event type."""
    if trigger.event is None:
        return "a stall", STALL_FIELDS
    model = CONTRACT.get(trigger.event)
    if model is None:
        return None
    data = [info.alias or name for name, info in model.model_fields.items()]
    return f"a {trigger.event} event", (*data, *ENVELOPE_FIELDS)


def _lint_all(
    definitions: list[LoadedDefinition],
    templates: Path,
    known: Mapping[str, str] | None,
    today: date | None,
    now: datetime | None = None,
) -> tuple[list[Problem], list[Problem]]:
    kinds: dict[str, str] = dict(known or {})
    kinds.update({loaded.name: loaded.kind for loaded in definitions})
    check = _TemplateCheck(templates)
    if now is None:
        now = datetime.combine(today, time(0), UTC) if today else datetime.now(UTC)
    day = today or now.astimezone(UTC).date()
    problems: list[Problem] = []
    warnings: list[Problem] = []
    template_users: dict[Problem, list[str]] = {}
    for loaded in definitions:
        linter = _Linter(loaded, kinds, check, day, now, template_users=template_users)
        problems.extend(linter.run())
        warnings.extend(linter.warnings)
    # A template's problem once, at its line in the template, naming who uses the template.
    for problem, users in template_users.items():
        more = f" and {len(users) - 1} more" if len(users) > 1 else ""
        problems.append(replace(problem, message=f"{problem.message} (used by {users[0]}{more})"))
    return sorted(set(problems)), sorted(set(warnings))


def lint(
    definitions: list[LoadedDefinition],
    *,
    templates: Path,
    known: Mapping[str, str] | None = None,
    today: date | None = None,
    now: datetime | None = None,
) -> list[Problem]:
    """Problems beyond the schema; references resolve among `definitions` and `known`.
    `now` (default: the start of `today`, else the clock) starts a schedule's 30 days."""
    return _lint_all(definitions, templates, known, today, now)[0]


def lint_warnings(
    definitions: list[LoadedDefinition],
    *,
    templates: Path,
    known: Mapping[str, str] | None = None,
    today: date | None = None,
    now: datetime | None = None,
) -> list[Problem]:
    """What lint warns about and accepts (a timeout that approves a credit by itself), each
    at its field: `opsflow defs lint` and `deploy` print them and go on."""
    return _lint_all(definitions, templates, known, today, now)[1]
