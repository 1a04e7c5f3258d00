"""The service-recovery decision core: pure, deterministic, shared by the workflow and backtest.

`RecoveryEngine` owns one customer's `RecoveryState` and the pinned rule sets. It is fed
events (`on_event`) and the passage of time (`on_time`), and returns `Plan`s: what to record
and which actions to run. It never performs I/O and never reads a clock: `now` is always
given, by `workflow.now()` in the workflow and by the event times in a backtest, so the same
events give the same decisions in both.

Suppression follows Alertmanager: silence (rule or customer, until a time), dedup key per
rule, inhibition (while an episode is open, lower-severity rules only add to it), cooldown per
rule, frequency caps per action class across all rules. Every suppressed trigger is recorded
with its reason.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any, Literal
from zoneinfo import ZoneInfo

from pydantic import BaseModel, Field

from definitions.calendar import BusinessCalendar
from definitions.common import (
    Action,
    CreateTicketAction,
    CreditAction,
    NotifyAction,
    ScheduleCallbackAction,
)
from definitions.conditions import ConditionError, evaluate, evaluate_value
from definitions.events import EventEnvelope
from definitions.models import PinnedDefinition, RecoveryRule, RecoverySpec
from workflows.recovery_model import (
    ApprovalStatus,
    Decision,
    Episode,
    EpisodeStatus,
    PendingApproval,
    RecoveryState,
    ScoreEntry,
    Silence,
    StallWatch,
    SuppressedBy,
)

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


def _action_class(action: Action) -> str | None:
    if isinstance(
        action, NotifyAction | CreditAction | CreateTicketAction | ScheduleCallbackAction
    ):
        return action.class_
    return None


def _describe_action(action: Action) -> str:
    if isinstance(action, CreditAction):
        return f"credit {action.amount} {action.currency}"
    if isinstance(action, NotifyAction):
        return f"notify {action.template} to {', '.join(action.to)}"
    if isinstance(action, CreateTicketAction):
        return f"ticket in {action.queue} ({action.priority})"
    if isinstance(action, ScheduleCallbackAction):
        return f"callback via {action.queue} within {action.within}"
    return action.type


def _keep_last(items: list[Any], limit: int) -> None:
    if len(items) > limit:
        del items[: len(items) - limit]


class RecoveryEngine:
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

    # --- bookkeeping ---------------------------------------------------------------------

    def _prune(self, now: datetime) -> None:
        s = self.state
        for key in [k for k, at in s.seen.items() if at < now - SEEN_RETENTION]:
            del s.seen[key]
        for kind in list(s.recent):
            s.recent[kind] = [t for t in s.recent[kind] if t > now - HISTORY_RETENTION]
            if not s.recent[kind]:
                del s.recent[kind]
        within = {r.id: r.rule.trigger.within for r in self.rules}
        for rule_id in list(s.windows):
            span = within.get(rule_id)
            s.windows[rule_id] = [t for t in s.windows[rule_id] if span and t > now - span]
            if not s.windows[rule_id]:
                del s.windows[rule_id]
        for rule_id in list(s.dedup):
            s.dedup[rule_id] = {k: t for k, t in s.dedup[rule_id].items() if t > now}
            if not s.dedup[rule_id]:
                del s.dedup[rule_id]
        s.cooldowns = {k: t for k, t in s.cooldowns.items() if t > now}
        longest = {c.class_: c.per for r in self.rules for c in r.spec.caps}
        for cls in list(s.caps):
            per = longest.get(cls, timedelta(0))
            s.caps[cls] = [t for t in s.caps[cls] if t > now - per]
            if not s.caps[cls]:
                del s.caps[cls]
        s.silences = [x for x in s.silences if x.until > now]
        s.stalls = {k: w for k, w in s.stalls.items() if not w.fired}
        closed = [e for e in s.episodes if e.status != "open"]
        if len(closed) > MAX_EPISODES:
            drop = {e.id for e in closed[: len(closed) - MAX_EPISODES]}
            s.episodes = [e for e in s.episodes if e.id not in drop]
        done = [a for a in s.approvals if a.status != "waiting"]
        if len(done) > MAX_APPROVALS:
            drop = {a.id for a in done[: len(done) - MAX_APPROVALS]}
            s.approvals = [a for a in s.approvals if a.id not in drop]

    def _record(self, decision: Decision) -> None:
        s = self.state
        counts = s.tally.setdefault(decision.rule, {})
        key = decision.outcome if decision.suppressed_by is None else decision.suppressed_by
        counts[key] = counts.get(key, 0) + 1
        target = s.suppressed if decision.outcome == "suppressed" else s.decisions
        target.append(decision)
        _keep_last(target, MAX_LOG)

    def idle(self, now: datetime) -> bool:
        """Nothing left to wait for: no windows, cooldowns, episodes, approvals or timers."""
        self._prune(now)
        s = self.state
        return not (
            s.windows
            or s.dedup
            or s.cooldowns
            or s.caps
            or s.silences
            or s.stalls
            or s.open_episode()
            or s.waiting_approvals()
        )

    def next_wake(self) -> datetime | None:
        s = self.state
        moments: list[datetime] = [w.due for w in s.stalls.values() if not w.fired]
        moments += [a.deadline for a in s.waiting_approvals()]
        moments += [a.remind_at for a in s.waiting_approvals() if a.remind_at and not a.reminded]
        episode = s.open_episode()
        if episode is not None and episode.handed_over_at is None:
            moments.append(episode.expires_at)
            if episode.follow_up_at and episode.follow_up_sent_at is None:
                moments.append(episode.follow_up_at)
        return min(moments) if moments else None

    # --- events --------------------------------------------------------------------------

    def on_event(self, event: EventEnvelope, now: datetime) -> list[Plan]:
        """Decide on one event; a repeat of an event already seen gives nothing."""
        s = self.state
        if event.key in s.seen:
            return []
        self._prune(now)
        at = min(event.time, now) if event.time else now
        s.seen[event.key] = now
        if len(s.seen) > MAX_SEEN:
            for key in list(s.seen)[: len(s.seen) - MAX_SEEN]:
                del s.seen[key]
        s.events_seen += 1
        kind = self._type(event.type)
        recent = s.recent.setdefault(kind, [])
        recent.append(at)
        _keep_last(recent, MAX_RECENT_PER_TYPE)
        ctx = event_context(event, self.legacy_names)
        plans: list[Plan] = []
        if kind == STAGE_CHANGED and isinstance(ctx.get("to_stage"), str):
            s.stage, s.stage_since = ctx["to_stage"], at
            s.stalls.clear()
            self._watch_stalls(ctx["to_stage"], at)
        if kind == SURVEY:
            plans += self._follow_up_answer(ctx, now)
        activation = {
            "event": ctx,
            "customer": self.customer_context(),
            "history": self.history_context(now, ctx.get("ticket_id")),
        }
        if kind == SURVEY:
            self._record_score(ctx, at)
        for loaded in self.rules:
            trigger = loaded.rule.trigger
            if trigger.event is None or self._type(trigger.event) != kind:
                continue
            try:
                if not evaluate(trigger.when, activation):
                    continue
            except ConditionError as exc:
                plans += self._suppress(loaded, ctx, event.key, now, "condition_error", str(exc))
                continue
            if trigger.count > 1 and trigger.within is not None:
                window = s.windows.setdefault(loaded.id, [])
                window.append(at)
                window[:] = [t for t in window if t > at - trigger.within]
                if len(window) < trigger.count:
                    continue
                del s.windows[loaded.id]  # counted once: the next trigger needs fresh events
            plans += self._consider(loaded, ctx, event.key, now, ctx.get("ticket_id"))
        return plans

    def _record_score(self, ctx: dict[str, Any], at: datetime) -> None:
        score, scale = ctx.get("score"), ctx.get("scale", 5)
        if not isinstance(score, int) or not isinstance(scale, int) or scale < 1:
            return
        if ctx.get("survey", "csat") != "csat":
            return  # NPS (0..10) answers another question
        ticket = ctx.get("ticket_id")
        entry = ScoreEntry(
            at=at, score=score * 5 / scale, ticket=ticket if isinstance(ticket, str) else None
        )
        self.state.scores.append(entry)
        _keep_last(self.state.scores, MAX_SCORES)

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

    def _follow_up_answer(self, ctx: dict[str, Any], now: datetime) -> list[Plan]:
        episode = self.state.open_episode()
        score = ctx.get("score")
        if episode is None or episode.follow_up_sent_at is None or not isinstance(score, int):
            return []
        if episode.tied:
            if episode.handed_over_at is not None:
                return []  # a person has it; their close decides
            ticket = ctx.get("ticket_id")
            if (ticket if isinstance(ticket, str) else None) != episode.contact:
                return []  # a survey about another contact is no answer to this follow-up
        spec = self._spec_of(episode.ref)
        follow_up = spec.follow_up if spec else None
        recovered_at = follow_up.recovered_at if follow_up else 4
        status: EpisodeStatus = "recovered" if score >= recovered_at else "not_recovered"
        by = f"follow-up survey scored {score}"
        if status == "not_recovered" and episode.tied:
            queue = follow_up.not_recovered_queue if follow_up else "cx-review"
            return [self._hand_over(episode, queue, now, score, ctx.get("comment"))]
        return self._close(episode, status, now, by, score)

    def _hand_over(
        self, episode: Episode, queue: str, now: datetime, score: int, comment: Any
    ) -> Plan:
        """A person takes an episode the follow-up says did not recover: a ticket in `queue`
        with the episode's story; it stays open (no expiry) until they close it."""
        episode.handed_over_at, episode.handed_over_to, episode.score = now, queue, score
        lines = [
            f"Customer {self.state.customer_id}: the follow-up survey of recovery episode "
            f"{episode.id} scored {score}, so the recovery did not work and needs a person.",
            f"Opened {episode.opened_at.isoformat(timespec='minutes')} by {episode.opened_by} "
            f"({episode.ref}), about ticket {episode.contact or '(none)'}.",
        ]
        if isinstance(comment, str) and comment.strip():
            lines.append(f"The customer wrote: {comment.strip()[:1000]}")
        taken = [d for d in self.state.decisions if d.episode == episode.id]
        if taken:
            lines.append("What was done:")
            for d in taken:
                done = ", ".join(d.actions + [f"{g} (approval)" for g in d.gated]) or "nothing"
                lines.append(f"- {d.at.isoformat(timespec='minutes')} {d.rule}: {done}")
        approvals = [a for a in self.state.approvals if a.episode == episode.id]
        for a in approvals:
            lines.append(f"- credit of {a.amount} {a.currency}: {a.status}")
        lines.append(
            f"Events: {', '.join(episode.events[-10:]) or '(none)'}. When done, close it: "
            f"opsflow recovery close {self.state.customer_id} --outcome recovered|not_recovered "
            "--by <you>"
        )
        handover = HandOver(
            episode=episode.id,
            queue=queue,
            subject=f"Not recovered - follow-up scored {score} (episode {episode.id})",
            description="\n".join(lines),
        )
        detail = {
            "episode": episode.id,
            "outcome": "handed_over",
            "score": score,
            "queue": queue,
            "contact": episode.contact,
        }
        return Plan(
            "handover",
            f"episode-{episode.id}-handed-over",
            detail,
            episode.ref,
            context=self.template_context({"type": "handover"}, episode),
            ticket_id=episode.contact,
            handover=handover,
        )

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

    def _close(
        self, episode: Episode, status: EpisodeStatus, now: datetime, by: str, score: int | None
    ) -> list[Plan]:
        episode.status, episode.closed_at, episode.closed_by = status, now, by
        episode.score = score
        detail = {"episode": episode.id, "outcome": status, "by": by, "score": score}
        return [Plan("episode_closed", f"episode-{episode.id}-{status}", detail, episode.ref)]

    def close_episode(self, now: datetime, status: EpisodeStatus, by: str) -> list[Plan]:
        episode = self.state.open_episode()
        if episode is None:
            return []
        return self._close(episode, status, now, by, None)

    # --- time ----------------------------------------------------------------------------

    def on_time(self, now: datetime) -> list[Plan]:
        """Stalls, follow-ups, episode expiry and approval timeouts that are due at `now`."""
        s = self.state
        plans: list[Plan] = []
        for watch in list(s.stalls.values()):
            if watch.fired or watch.due > now:
                continue
            watch.fired = True
            loaded = next((r for r in self.rules if r.id == watch.rule), None)
            if loaded is None:
                continue
            ctx = {
                "type": STALLED,
                "stage": watch.stage,
                "since": watch.since.isoformat(),
                "customer_id": s.customer_id,
            }
            plans += self._consider(loaded, ctx, None, now, None)
        episode = s.open_episode()
        if (
            episode is not None
            and episode.follow_up_at
            and episode.follow_up_sent_at is None
            and episode.follow_up_at <= now
        ):
            plans.append(self._follow_up(episode, now))
        if episode is not None and episode.handed_over_at is None and episode.expires_at <= now:
            why = "no answer to the follow-up" if episode.follow_up_sent_at else "timed out"
            plans += self._close(episode, "expired", now, why, None)
        for approval in s.waiting_approvals():
            if approval.deadline <= now:
                plans += self._approval_timeout(approval, now)
            elif approval.remind_at and not approval.reminded and approval.remind_at <= now:
                approval.reminded = True
                detail = {"approval": approval.id, "group": approval.group}
                plans.append(
                    Plan(
                        "approval",
                        f"approval-{approval.id}-reminder-{int(approval.escalated)}",
                        detail,
                        approval.ref,
                        notice="reminder",
                        approval=approval,
                    )
                )
        self._prune(now)
        return plans

    def _follow_up(self, episode: Episode, now: datetime) -> Plan:
        episode.follow_up_sent_at = now
        spec = self._spec_of(episode.ref)
        follow_up = spec.follow_up if spec else None
        if follow_up is None:
            return Plan("follow_up", f"episode-{episode.id}-follow-up", {"episode": episode.id})
        survey = NotifyAction(
            type="notify", channel=follow_up.channel, to=["customer"], template=follow_up.template
        )
        return Plan(
            "follow_up",
            f"episode-{episode.id}-follow-up",
            {"episode": episode.id, "template": follow_up.template},
            episode.ref,
            [survey],
            self.template_context({"type": "follow_up"}, episode),
        )

    # --- approvals -----------------------------------------------------------------------

    def _approval_timeout(self, approval: PendingApproval, now: datetime) -> list[Plan]:
        if approval.on_timeout == "escalate" and not approval.escalated:
            approval.escalated = True
            approval.group = approval.escalate_to or approval.group
            approval.members = []
            approval.approved_by = []
            approval.deadline = now + approval.timeout
            approval.remind_at = (
                now + (approval.remind_at - approval.requested_at) if (approval.remind_at) else None
            )
            approval.reminded = False
            detail = {"approval": approval.id, "escalated_to": approval.group}
            return [
                Plan(
                    "approval",
                    f"approval-{approval.id}-escalated",
                    detail,
                    approval.ref,
                    notice="request" if self.approver_notices else None,
                    approval=approval,
                )
            ]
        if approval.on_timeout == "approve_reduced" and approval.reduced_amount is not None:
            amount = min(approval.reduced_amount, approval.amount)
            return self.decide_approval(
                approval, "approved_reduced", "timeout", now, amount, "timed out"
            )
        return self.decide_approval(approval, "skipped", "timeout", now, None, "timed out")

    def approval_refusal(self, approval_id: int | None, by: str) -> str | None:
        """Why `by` may not decide the approval (None: they may)."""
        approval = self.state.approval(approval_id)
        if approval is None:
            which = f"approval {approval_id}" if approval_id is not None else "approval"
            return f"no {which} is waiting for customer {self.state.customer_id}"
        if by == approval.requested_by:
            return f"{by} requested this credit and cannot approve it"
        if approval.members and by not in approval.members:
            return f"{by} is not in the approver group {approval.group}"
        if by in approval.approved_by:
            return f"{by} has already approved; it needs {approval.required} different approvers"
        return None

    def add_approval(
        self,
        approval: PendingApproval,
        by: str,
        now: datetime,
        amount: Decimal | None,
        note: str | None,
    ) -> list[Plan] | None:
        """Count `by`'s approval; the plans when more approvers are still needed, None when
        this one completes it (the caller then decides the approval)."""
        if len(approval.approved_by) + 1 >= approval.required:
            approval.approved_by.append(by)
            return None
        approval.approved_by.append(by)
        detail = {
            "approval": approval.id,
            "approved_by": by,
            "approvals": len(approval.approved_by),
            "required": approval.required,
            "note": note,
        }
        step = f"approval-{approval.id}-approved-{len(approval.approved_by)}"
        return [Plan("approval", step, detail, approval.ref)]

    def decide_approval(
        self,
        approval: PendingApproval,
        status: ApprovalStatus,
        by: str,
        now: datetime,
        amount: Decimal | None,
        note: str | None,
    ) -> list[Plan]:
        approval.status, approval.decided_by, approval.decided_at = status, by, now
        approval.note = note
        detail: dict[str, Any] = {
            "approval": approval.id,
            "rule": approval.rule,
            "status": status,
            "by": by,
            "requested": f"{approval.amount} {approval.currency}",
        }
        if status not in ("approved", "approved_reduced") or amount is None:
            return [Plan("approval", f"approval-{approval.id}-{status}", detail, approval.ref)]
        approval.applied_amount = amount
        detail["applied"] = f"{amount} {approval.currency}"
        credit = CreditAction(
            type="credit", amount=amount, currency=approval.currency, reason=approval.reason
        )
        self._use_caps(approval.rule, [credit], now, class_name="credit")
        episode = next((e for e in self.state.episodes if e.id == approval.episode), None)
        context = self.template_context(
            {"type": "approval"}, episode, {"amount": str(amount), "currency": approval.currency}
        )
        return [Plan("credit", approval.step, detail, approval.ref, [credit], context)]

    # --- the decision --------------------------------------------------------------------

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

    def _suppress(
        self,
        loaded: LoadedRule,
        ctx: dict[str, Any],
        key: str | None,
        now: datetime,
        by: SuppressedBy,
        reason: str,
        episode: Episode | None = None,
    ) -> list[Plan]:
        decision = self._decision(
            loaded,
            ctx,
            key,
            now,
            outcome="suppressed",
            suppressed_by=by,
            reason=reason,
            episode=episode.id if episode else None,
        )
        self._record(decision)
        detail = decision.model_dump(mode="json")
        return [
            Plan("decision", f"d{decision.seq}-suppressed", detail, loaded.ref, decision=decision)
        ]

    def _silenced(self, rule_id: str, now: datetime) -> Silence | None:
        for silence in self.state.silences:
            if silence.until > now and silence.rule in (None, rule_id):
                return silence
        return None

    def _cap_of(self, loaded: LoadedRule, class_name: str) -> tuple[int, timedelta] | None:
        for cap in loaded.spec.caps:
            if cap.class_ == class_name:
                return cap.max, cap.per
        return None

    def _capped(self, loaded: LoadedRule, action: Action, now: datetime) -> str | None:
        class_name = _action_class(action)
        if class_name is None:
            return None
        cap = self._cap_of(loaded, class_name)
        if cap is None:
            return None
        limit, per = cap
        used = [t for t in self.state.caps.get(class_name, []) if t > now - per]
        if len(used) >= limit:
            return f"cap {class_name}: {limit} per {per}, used {len(used)}"
        return None

    def _use_caps(
        self, rule_id: str, actions: list[Action], now: datetime, class_name: str | None = None
    ) -> None:
        for action in actions:
            name = _action_class(action) or class_name
            if name is not None:
                self.state.caps.setdefault(name, []).append(now)

    def _consider(
        self,
        loaded: LoadedRule,
        ctx: dict[str, Any],
        key: str | None,
        now: datetime,
        ticket_id: Any,
    ) -> list[Plan]:
        s = self.state
        rule = loaded.rule
        silence = self._silenced(loaded.id, now)
        if silence is not None:
            scope = "the customer" if silence.rule is None else "the rule"
            why = f"{scope} is silenced by {silence.by} until {silence.until.isoformat()}"
            return self._suppress(loaded, ctx, key, now, "silence", why + f": {silence.reason}")
        if rule.dedup:
            try:
                dedup = str(
                    evaluate_value(rule.dedup, {"event": ctx, "customer": self.customer_context()})
                )
            except ConditionError as exc:
                return self._suppress(loaded, ctx, key, now, "condition_error", f"dedup: {exc}")
            keys = s.dedup.setdefault(loaded.id, {})
            if dedup in keys:
                return self._suppress(
                    loaded, ctx, key, now, "dedup", f"dedup key {dedup!r} already triggered"
                )
            keys[dedup] = now + DEDUP_RETENTION
            if len(keys) > MAX_DEDUP_PER_RULE:
                for old in list(keys)[: len(keys) - MAX_DEDUP_PER_RULE]:
                    del keys[old]
        episode = s.open_episode()
        rung = 0
        actions: list[Action]
        if episode is not None and loaded.id in episode.rungs and not loaded.shadow:
            rung = episode.rungs[loaded.id]
            if rung > len(rule.ladder):
                why = f"the ladder of episode {episode.id} is exhausted ({len(rule.ladder)} steps)"
                return self._suppress(loaded, ctx, key, now, "ladder_exhausted", why, episode)
            actions = list(rule.ladder[rung - 1].actions)
        else:
            if episode is not None and rule.severity > episode.severity:
                if key is not None and not loaded.shadow:
                    episode.events.append(key)
                    _keep_last(episode.events, 50)
                why = (
                    f"episode {episode.id} is open (severity {episode.severity}); "
                    f"severity {rule.severity} only adds to it"
                )
                return self._suppress(loaded, ctx, key, now, "inhibition", why, episode)
            until = s.cooldowns.get(loaded.id)
            if until is not None and until > now:
                why = f"cooling down until {until.isoformat()}"
                return self._suppress(loaded, ctx, key, now, "cooldown", why, episode)
            actions = list(rule.actions)
        capped = [(a, cap) for a in actions if (cap := self._capped(loaded, a, now))]
        kept = [a for a in actions if all(a is not c for c, _ in capped)]
        if actions and not kept:
            return self._suppress(loaded, ctx, key, now, "cap", capped[0][1], episode)
        gated: list[CreditAction] = []
        if rule.approval is not None:
            gated = [
                a
                for a in kept
                if isinstance(a, CreditAction)
                and a.approval_above is not None
                and a.amount > a.approval_above
            ]
            kept = [a for a in kept if all(a is not g for g in gated)]
        if loaded.shadow:
            decision = self._decision(
                loaded,
                ctx,
                key,
                now,
                outcome="shadow",
                reason="shadow mode: would have acted",
                rung=rung,
                actions=[_describe_action(a) for a in kept + gated],
                capped=[f"{_describe_action(a)}: {why}" for a, why in capped],
            )
            if rule.cooldown:
                s.cooldowns[loaded.id] = now + rule.cooldown
            self._record(decision)
            detail = decision.model_dump(mode="json")
            return [
                Plan("decision", f"d{decision.seq}-shadow", detail, loaded.ref, decision=decision)
            ]
        # Live: act, inside an episode.
        if episode is None:
            s.episode_count += 1
            follow_up = loaded.spec.follow_up
            asks = follow_up is not None and (rule.follow_up or not self.episode_contacts)
            episode = Episode(
                id=s.episode_count,
                opened_at=now,
                opened_by=loaded.id,
                ref=loaded.ref,
                severity=rule.severity,
                follow_up_at=now + follow_up.after if follow_up and asks else None,
                expires_at=now + loaded.spec.episode_timeout,
                contact=ticket_id if isinstance(ticket_id, str) and self.episode_contacts else None,
                tied=self.episode_contacts,
            )
            s.episodes.append(episode)
        elif (
            episode.tied
            and rule.follow_up
            and loaded.spec.follow_up is not None
            and episode.follow_up_at is None
        ):
            # A rule that reaches the customer acts in an episode that only asked a person to
            # look: now the customer is asked, too.
            episode.follow_up_at = now + loaded.spec.follow_up.after
        episode.severity = min(episode.severity, rule.severity)
        episode.rungs[loaded.id] = rung + 1
        if key is not None:
            episode.events.append(key)
            _keep_last(episode.events, 50)
        if rung == 0 and rule.cooldown:
            s.cooldowns[loaded.id] = now + rule.cooldown
        self._use_caps(loaded.id, kept, now)
        decision = self._decision(
            loaded,
            ctx,
            key,
            now,
            outcome="fired" if rung == 0 else "laddered",
            episode=episode.id,
            rung=rung,
            actions=[_describe_action(a) for a in kept],
            capped=[f"{_describe_action(a)}: {why}" for a, why in capped],
            gated=[_describe_action(g) for g in gated],
        )
        self._record(decision)
        plans = [
            Plan(
                "decision",
                f"d{decision.seq}-{decision.outcome}",
                decision.model_dump(mode="json"),
                loaded.ref,
                kept,
                self.template_context(ctx, episode),
                ticket_id if isinstance(ticket_id, str) else None,
                decision,
            )
        ]
        for credit in gated:
            plans.append(self._request_approval(loaded, episode, credit, decision, now))
        return plans

    def _request_approval(
        self,
        loaded: LoadedRule,
        episode: Episode,
        credit: CreditAction,
        decision: Decision,
        now: datetime,
    ) -> Plan:
        gate = loaded.rule.approval
        assert gate is not None
        s = self.state
        s.approval_count += 1
        approval = PendingApproval(
            id=s.approval_count,
            rule=loaded.id,
            ref=loaded.ref,
            episode=episode.id,
            step=f"d{decision.seq}-credit-{s.approval_count}",
            amount=credit.amount,
            currency=credit.currency,
            reason=credit.reason,
            group=gate.approvers,
            members=list(gate.members),
            requested_by=gate.requester or loaded.owner,
            requested_at=now,
            deadline=now + gate.timeout,
            on_timeout=gate.on_timeout,
            escalate_to=gate.escalate_to,
            reduced_amount=gate.reduced_amount,
            timeout=gate.timeout,
            required=gate.required,
            channel=gate.channel,
            remind_at=now + gate.timeout - (gate.remind_before or gate.timeout / 4)
            if self.approver_notices
            else None,
        )
        s.approvals.append(approval)
        detail = approval.model_dump(mode="json")
        return Plan(
            "approval",
            f"approval-{approval.id}-requested",
            detail,
            loaded.ref,
            notice="request" if self.approver_notices else None,
            approval=approval,
        )

    def silence(self, silence: Silence) -> None:
        self.state.silences = [x for x in self.state.silences if x.rule != silence.rule]
        self.state.silences.append(silence)

    def unsilence(self, rule: str | None) -> bool:
        before = len(self.state.silences)
        self.state.silences = [x for x in self.state.silences if x.rule != rule]
        return len(self.state.silences) != before

    def rule_ids(self) -> list[str]:
        return [r.id for r in self.rules]


# --- backtest --------------------------------------------------------------------------------


class BacktestReport(BaseModel):
    events: int
    customers: int
    rules: dict[str, dict[str, int]]
    approvals: dict[str, int] = Field(default_factory=dict)
    episodes: dict[str, int] = Field(default_factory=dict)


def _customer_of(event: EventEnvelope) -> str | None:
    customer = event.data.get("customer_id")
    return customer if isinstance(customer, str) else None


def backtest(
    rule_sets: list[PinnedDefinition],
    events: list[EventEnvelope],
    customers: dict[str, dict[str, Any]] | None = None,
    until: datetime | None = None,
) -> BacktestReport:
    """Run the rules over past events in skipped time: each customer's engine sees its events
    at their times, and timers (stalls, follow-ups, approval timeouts) fire between them."""
    engines: dict[str, RecoveryEngine] = {}
    timed = sorted((e for e in events if e.time is not None), key=lambda e: e.time or 0)
    for event in timed:
        customer = _customer_of(event)
        if customer is None or event.time is None:
            continue
        engine = engines.get(customer)
        if engine is None:
            state = RecoveryState(customer_id=customer, customer=(customers or {}).get(customer))
            engine = engines[customer] = RecoveryEngine(state, rule_sets)
        _advance(engine, event.time)
        engine.on_event(event, event.time)
    end = until or (timed[-1].time if timed and timed[-1].time else None)
    if end is not None:
        for engine in engines.values():
            _advance(engine, end)
    report = BacktestReport(events=len(timed), customers=len(engines), rules={})
    for engine in engines.values():
        for rule, counts in engine.state.tally.items():
            mine = report.rules.setdefault(rule, {})
            for name, n in counts.items():
                mine[name] = mine.get(name, 0) + n
        for approval in engine.state.approvals:
            report.approvals[approval.status] = report.approvals.get(approval.status, 0) + 1
        for episode in engine.state.episodes:
            report.episodes[episode.status] = report.episodes.get(episode.status, 0) + 1
    for loaded in load_rules(rule_sets):
        report.rules.setdefault(loaded.id, {})
    return report


def _advance(engine: RecoveryEngine, to: datetime) -> None:
    while (wake := engine.next_wake()) is not None and wake <= to:
        engine.on_time(wake)
