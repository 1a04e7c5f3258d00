"""The recovery core's basis: the rule sets as loaded rules, what conditions, dedup keys and
templates see (`event`, `customer`, `history`), the plans the core returns, and
`RecoveryBasis`, the part of the engine every topic shares (the state, the rules, the decision
log).

The engine (`RecoveryEngine`, workflows/recovery_core.py) is built from topic modules on this
basis: recovery_triggers.py (a rule's trigger through suppression to actions),
recovery_approvals.py (the approval gate of costly credits), recovery_episodes.py (follow-ups,
hand-overs, closing) and recovery_status.py (what people are shown). All of it is pure: no
I/O, no clock (`now` is always given).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal
from zoneinfo import ZoneInfo

from definitions.calendar import BusinessCalendar
from definitions.common import (
    Action,
    CreateTicketAction,
    CreditAction,
    NotifyAction,
    ScheduleCallbackAction,
)
from definitions.events import EventEnvelope
from definitions.models import PinnedDefinition, RecoveryRule, RecoverySpec
from workflows.recovery_model import Decision, Episode, PendingApproval, RecoveryState, StallWatch

SURVEY = "survey.responded"
STAGE_CHANGED = "journey.stage_changed"
STALLED = "journey.stalled"

# Bounds that keep the state (and so every continue-as-new input) small.
SEEN_RETENTION = timedelta(days=7)
MAX_SEEN = 2_000
HISTORY_RETENTION = timedelta(days=30)
MAX_RECENT_PER_TYPE = 200
DEDUP_RETENTION = timedelta(days=30)
MAX_DEDUP_PER_RULE = 500
MAX_LOG = 100
MAX_EPISODES = 20
MAX_APPROVALS = 20
MAX_SCORES = 50
BASELINE_SCORES = 10  # history.median_score: the median of the last this many scores
BASELINE_MIN = 3  # fewer scores than this: no baseline (median_score -1.0)
LOW_SCORE = 2.0  # on the 1..5 scale: what history.low_scores_* count


# Rule sets written before the catalog followed the event contract (definitions/events.py)
# named the survey event `survey.completed` and read `event.survey_id` and, on sla.breached,
# `event.case_id`. Lint refuses those names now; only runs that started before the change
# (recorded histories included) read them, through `legacy_names` (the workflow's patch
# "recovery-contract-names"). Remove with the patch once no such run is open.
LEGACY_EVENT_NAMES = {"survey.completed": SURVEY}


@dataclass
class Plan:
    """What the workflow does for one decision: record it, then run `actions`."""

    kind: Literal["decision", "follow_up", "episode_closed", "credit", "approval", "handover"]
    step: str
    detail: dict[str, Any]
    ref: str | None = None
    actions: list[Action] = field(default_factory=list)
    context: dict[str, Any] = field(default_factory=dict)
    ticket_id: str | None = None
    decision: Decision | None = None
    notice: Literal["request", "reminder"] | None = None
    """Tell the approval's approvers (on its channel) that it waits for them."""
    approval: PendingApproval | None = None
    handover: HandOver | None = None
    """Open a ticket for a person (the episode did not recover) and note it in the episode."""


@dataclass(frozen=True)
class HandOver:
    """The ticket that hands an episode to a person, with everything they need to know."""

    episode: int
    queue: str
    subject: str
    description: str
    priority: Literal["p1", "p2", "p3", "p4"] = "p2"


@dataclass(frozen=True)
class Record:
    """A ledger entry the workflow writes as it is: a person's command (silence, unsilence), a
    switch of rule sets, or the state a run leaves for the customer's next run."""

    step: str
    detail: dict[str, Any]


@dataclass(frozen=True)
class LoadedRule:
    id: str
    ref: str
    owner: str
    spec: RecoverySpec
    rule: RecoveryRule

    @property
    def shadow(self) -> bool:
        return self.rule.mode == "shadow" or self.spec.mode == "shadow"


def load_rules(rule_sets: list[PinnedDefinition]) -> list[LoadedRule]:
    loaded = []
    for pinned in rule_sets:
        spec = pinned.recovery
        owner = pinned.definition.metadata.owner
        for rule in spec.rules:
            loaded.append(LoadedRule(f"{pinned.name}/{rule.name}", pinned.ref, owner, spec, rule))
    return loaded


def event_context(event: EventEnvelope, legacy_names: bool = False) -> dict[str, Any]:
    """What conditions, dedup keys and templates see as `event`: the type's data fields and
    the envelope's id, source, type and time."""
    context: dict[str, Any] = dict(event.data)
    context.update(
        type=event.type,
        id=event.id,
        source=event.source,
        time=event.time.isoformat() if event.time else None,
    )
    if legacy_names:
        if context["type"] == "sla.breached" and "ticket_id" in context:
            context.setdefault("case_id", context["ticket_id"])
        if context["type"] == SURVEY:
            context.setdefault("survey_id", event.id)
    return context


def business_days_after(
    calendar: BusinessCalendar, since: datetime, span: timedelta, *, in_hours: bool = True
) -> datetime:
    """`since` plus `span` where each whole day is a business day (a day the calendar opens
    at all, holidays skipped), at the same local time; the rest of `span` is business time.
    On a 24x7 calendar this is plain `since + span`. `in_hours` (runs since the patch
    "recovery-stalls-in-hours"): the calendar's rule, which lands in business hours; before,
    an out-of-hours time of day was kept."""
    if in_hours:
        return calendar.business_days_after(since, span)
    if calendar.always_open:
        return since + span
    zone = ZoneInfo(calendar.timezone)
    local = since.astimezone(zone)
    day = local.date()
    for _ in range(span.days):
        day += timedelta(days=1)
        while not calendar.open_intervals(day):
            day += timedelta(days=1)
    moment = datetime.combine(day, local.time(), tzinfo=zone).astimezone(since.tzinfo)
    rest = span - timedelta(days=span.days)
    return calendar.add_business_time(moment, rest) if rest else moment


def action_class(action: Action) -> str | None:
    if isinstance(
        action, NotifyAction | CreditAction | CreateTicketAction | ScheduleCallbackAction
    ):
        return action.class_
    return None


def describe_action(action: Action) -> str:
    if isinstance(action, CreditAction):
        return f"credit {action.amount} {action.currency}"
    if isinstance(action, NotifyAction):
        return f"notify {action.template} to {', '.join(action.to)}"
    if isinstance(action, CreateTicketAction):
        return f"ticket in {action.queue} ({action.priority})"
    if isinstance(action, ScheduleCallbackAction):
        return f"callback via {action.queue} within {action.within}"
    return action.type


def keep_last(items: list[Any], limit: int) -> None:
    if len(items) > limit:
        del items[: len(items) - limit]


class RecoveryBasis:
    """One customer's `RecoveryState` and the pinned rule sets, and what every topic of the
    engine reads from them."""

    def __init__(
        self,
        state: RecoveryState,
        rule_sets: list[PinnedDefinition],
        *,
        legacy_names: bool = False,
        stalls_in_hours: bool = True,
    ) -> None:
        self.state = state
        self.legacy_names = legacy_names
        self.stalls_in_hours = stalls_in_hours
        # Approvers are told at once and reminded before the timeout (the workflow turns this
        # off for runs recorded before its patch "recovery-approval-notices").
        self.approver_notices = True
        # New episodes are tied to their contact: only a survey about it answers the
        # follow-up, and a low answer hands the episode to a person (the workflow turns this
        # off for runs recorded before its patch "recovery-episode-contact").
        self.episode_contacts = True
        # Conditions evaluated so far (triggers and dedup keys): the workflow sizes its
        # chunks of events by the work they cost, not by their number.
        self.conditions_evaluated = 0
        self.set_rules(rule_sets)

    def _type(self, event_type: str) -> str:
        if self.legacy_names:
            return LEGACY_EVENT_NAMES.get(event_type, event_type)
        return event_type

    def set_rules(self, rule_sets: list[PinnedDefinition]) -> None:
        self.rule_sets = list(rule_sets)
        self.rules = load_rules(self.rule_sets)
        self.state.rule_sets = [p.ref for p in self.rule_sets]
        known = {r.id for r in self.rules}
        # Stall watches of rules that are gone stop; new stall rules start from the stage.
        for rule_id in [k for k in self.state.stalls if k not in known]:
            del self.state.stalls[rule_id]
        if self.state.stage is not None and self.state.stage_since is not None:
            self._watch_stalls(self.state.stage, self.state.stage_since, only_new=True)

    def _watch_stalls(self, stage: str, since: datetime, *, only_new: bool = False) -> None:
        for loaded in self.rules:
            stall = loaded.rule.trigger.stall
            if stall is None or stall.stage != stage:
                continue
            if only_new and loaded.id in self.state.stalls:
                continue
            due = business_days_after(
                loaded.spec.calendar, since, stall.for_, in_hours=self.stalls_in_hours
            )
            self.state.stalls[loaded.id] = StallWatch(
                rule=loaded.id, stage=stage, since=since, due=due
            )

    def rule_ids(self) -> list[str]:
        return [r.id for r in self.rules]

    def local_time(self, moment: datetime) -> str:
        """`moment` as people read it: in the first rule set's calendar (UTC without rules)."""
        if self.rules:
            calendar = self.rules[0].spec.calendar
            local = calendar.local_time(moment)
            return local.strftime("%a %d %b %H:%M") + f" {calendar.timezone}"
        return moment.strftime("%a %d %b %H:%M UTC")

    # --- contexts ------------------------------------------------------------------------

    def customer_context(self) -> dict[str, Any]:
        return dict(self.state.customer or {"id": self.state.customer_id})

    def history_context(self, now: datetime, ticket: Any = None) -> dict[str, Any]:
        """What `history` offers a trigger; the score fields describe the surveys before the
        event being decided (scores on the 1..5 scale)."""
        s = self.state
        counts = {kind: len(times) for kind, times in s.recent.items()}
        last = s.episodes[-1] if s.episodes else None
        latest = [e.score for e in s.scores[-BASELINE_SCORES:]]
        median = -1.0
        if len(latest) >= BASELINE_MIN:
            ordered = sorted(latest)
            middle = len(ordered) // 2
            median = (
                ordered[middle] if len(ordered) % 2 else (ordered[middle - 1] + ordered[middle]) / 2
            )
        month = now - HISTORY_RETENTION
        low = [e for e in s.scores if e.at > month and e.score <= LOW_SCORE]
        return {
            "median_score": float(median),
            "scores": len(s.scores),
            "low_scores_30d": len(low),
            "low_scores_other_contacts_30d": len(
                [e for e in low if e.ticket is None or e.ticket != ticket]
            ),
            "counts_30d": counts,
            "episodes": s.episode_count,
            "open_episode": s.open_episode() is not None,
            "last_outcome": last.status if last else "",
            "days_since_last_episode": (now - last.opened_at).days if last else -1,
        }

    def template_context(
        self, event: dict[str, Any], episode: Episode | None, action: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        return {
            "customer": self.customer_context(),
            "event": event,
            "episode": {"id": episode.id if episode else 0},
            "action": action or {},
        }

    def _spec_of(self, ref: str) -> RecoverySpec | None:
        """The rule set that opened an episode (or, when it is gone, the first one)."""
        for pinned in self.rule_sets:
            if pinned.ref == ref:
                return pinned.recovery
        name = ref.partition("@")[0]
        for pinned in self.rule_sets:
            if pinned.name == name:
                return pinned.recovery
        return self.rules[0].spec if self.rules else None

    # --- the decision log ----------------------------------------------------------------

    def _decision(
        self, loaded: LoadedRule, ctx: dict[str, Any], key: str | None, now: datetime, **kw: Any
    ) -> Decision:
        self.state.seq += 1
        return Decision(
            seq=self.state.seq,
            at=now,
            rule=loaded.id,
            ref=loaded.ref,
            event=key,
            event_type=str(ctx.get("type", "")),
            **kw,
        )

    def _record(self, decision: Decision) -> None:
        s = self.state
        counts = s.tally.setdefault(decision.rule, {})
        key = decision.outcome if decision.suppressed_by is None else decision.suppressed_by
        counts[key] = counts.get(key, 0) + 1
        target = s.suppressed if decision.outcome == "suppressed" else s.decisions
        target.append(decision)
        keep_last(target, MAX_LOG)
