"""The service-recovery decision core: pure, deterministic, shared by the workflow, the
backtest and the simulator.

`RecoveryEngine` owns one customer's `RecoveryState` and the pinned rule sets. It is fed
events (`on_event`) and the passage of time (`on_time`), and returns `Plan`s: what to record
and which actions to run. It never performs I/O and never reads a clock: `now` is always
given, by `workflow.now()` in the workflow and by the event times in a backtest, so the same
events give the same decisions in both.

People's commands (approve, reject, silence, unsilence, close) are decided here too: each has
a refusal (None: accepted; else the reason, which the workflow's update validator raises) and
a decision (plans, or the ledger `Record` to write). So are the run's own moments: a switch of
rule sets, the CRM profile's age, the state a run leaves for the next and the input it
continues as new with.

The engine's topics live beside it: recovery_context.py (loaded rules, contexts, plans),
recovery_triggers.py (suppression and actions), recovery_approvals.py (the approval gate),
recovery_episodes.py (follow-ups, hand-overs, closing), recovery_status.py (what people see).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any, Literal

from activities.customer_contracts import CustomerProfile
from definitions.conditions import Activation, ConditionError, evaluate
from definitions.events import EventEnvelope
from definitions.models import PinnedDefinition
from workflows.recovery_context import (
    HISTORY_RETENTION,
    MAX_APPROVALS,
    MAX_EPISODES,
    MAX_RECENT_PER_TYPE,
    MAX_SCORES,
    MAX_SEEN,
    SEEN_RETENTION,
    STAGE_CHANGED,
    STALLED,
    SURVEY,
    Plan,
    Record,
    event_context,
    keep_last,
)
from workflows.recovery_episodes import EpisodeDecisions
from workflows.recovery_model import (
    MEMORY_STEP,
    Approve,
    RecoveryInput,
    RecoveryState,
    Reject,
    ScoreEntry,
    Silence,
    SilenceCommand,
    Unsilence,
    rules_digest,
)
from workflows.recovery_status import StatusViews
from workflows.recovery_triggers import TriggerDecisions

# A customer's CRM profile is read again when older than this (at the next event).
PROFILE_TTL = timedelta(days=1)
# A person silences a rule or the customer for at most this long.
MAX_SILENCE = timedelta(days=365)


class RecoveryEngine(TriggerDecisions, EpisodeDecisions, StatusViews):
    """One customer's recovery decisions: events and due moments in, plans out."""

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
        keep_last(recent, MAX_RECENT_PER_TYPE)
        ctx = event_context(event, self.legacy_names)
        plans: list[Plan] = []
        if kind == STAGE_CHANGED and isinstance(ctx.get("to_stage"), str):
            s.stage, s.stage_since = ctx["to_stage"], at
            s.stalls.clear()
            self._watch_stalls(ctx["to_stage"], at)
        if kind == SURVEY:
            plans += self._follow_up_answer(ctx, now)
        activation = Activation(
            {
                "event": ctx,
                "customer": self.customer_context(),
                "history": self.history_context(now, ctx.get("ticket_id")),
            }
        )
        if kind == SURVEY:
            self._record_score(ctx, at)
        for loaded in self.rules:
            trigger = loaded.rule.trigger
            if trigger.event is None or self._type(trigger.event) != kind:
                continue
            self.conditions_evaluated += 1
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
        keep_last(self.state.scores, MAX_SCORES)

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

    # --- bookkeeping ---------------------------------------------------------------------

    def _prune(self, now: datetime) -> None:
        s = self.state
        for key in [k for k, at in s.seen.items() if at < now - SEEN_RETENTION]:
            del s.seen[key]
        for kind in list(s.recent):
            s.recent[kind] = [t for t in s.recent[kind] if t > now - HISTORY_RETENTION]
            if not s.recent[kind]:
                del s.recent[kind]
        within = self._window_spans()
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
        periods = self._cap_periods()
        for cls in list(s.caps):
            per = periods.get(cls, timedelta(0))
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

    def _window_spans(self) -> dict[str, timedelta | None]:
        return {r.id: r.rule.trigger.within for r in self.rules}

    def _cap_periods(self) -> dict[str, timedelta]:
        return {c.class_: c.per for r in self.rules for c in r.spec.caps}

    def quiet_at(self) -> datetime | None:
        """When the last window entry, dedup key, cooldown, cap count and silence kept now
        expires (`_prune` drops each then), so the run may end; a stall, an approval or an
        episode keeps it longer (each with its own wake-up, `next_wake`). None: none kept."""
        s = self.state
        spans, periods = self._window_spans(), self._cap_periods()
        ends = [t + span for k, ts in s.windows.items() if (span := spans.get(k)) for t in ts]
        ends += [t for keys in s.dedup.values() for t in keys.values()]
        ends += s.cooldowns.values()
        ends += [t + periods.get(c, timedelta(0)) for c, ts in s.caps.items() for t in ts]
        ends += [x.until for x in s.silences]
        return max(ends, default=None)

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

    # --- people's commands ---------------------------------------------------------------

    def approve_refusal(self, command: Approve) -> str | None:
        refusal = self.approval_refusal(command.approval_id, command.by)
        if refusal:
            return refusal
        approval = self.state.approval(command.approval_id)
        if approval is not None and command.amount is not None and command.amount > approval.amount:
            return f"cannot approve more than the {approval.amount} {approval.currency} requested"
        return None

    def approve(self, command: Approve, now: datetime) -> list[Plan]:
        """Count the approval; the credit is applied (at the amount approved) once enough
        approvers agreed."""
        approval = self.state.approval(command.approval_id)
        assert approval is not None  # approve_refusal checked
        amount = command.amount or approval.amount
        status: Literal["approved", "approved_reduced"] = (
            "approved" if amount == approval.amount else "approved_reduced"
        )
        pending = None
        if approval.required > 1:
            pending = self.add_approval(approval, command.by, now, amount, command.note)
        return pending or self.decide_approval(
            approval, status, command.by, now, amount, command.note
        )

    def reject_refusal(self, command: Reject) -> str | None:
        return self.approval_refusal(command.approval_id, command.by)

    def reject(self, command: Reject, now: datetime) -> list[Plan]:
        approval = self.state.approval(command.approval_id)
        assert approval is not None  # reject_refusal checked
        return self.decide_approval(
            approval, "rejected", command.by, now, None, command.reason or None
        )

    def rule_id(self, rule: str | None) -> str | None:
        """A rule as people name it (`<definition>/<rule>`, or `<rule>` when unambiguous)."""
        if rule is None:
            return None
        ids = self.rule_ids()
        if rule in ids:
            return rule
        matches = [r for r in ids if r.split("/", 1)[1] == rule]
        return matches[0] if len(matches) == 1 else rule

    def silence_refusal(self, command: SilenceCommand, now: datetime) -> str | None:
        if (command.until is None) == (command.duration is None):
            return "give exactly one of until or duration"
        until = command.until or now + (command.duration or timedelta(0))
        if until.tzinfo is None:
            return "until needs a timezone"
        if until <= now:
            return f"until {until.isoformat()} is not in the future"
        if until - now > MAX_SILENCE:
            return "a silence lasts at most 365 days"
        rule = self.rule_id(command.rule)
        if rule is not None and rule not in self.rule_ids():
            known = ", ".join(self.rule_ids())
            return f"unknown rule {command.rule!r}; the rules are {known}"
        return None

    def silence_of(self, command: SilenceCommand, now: datetime) -> Silence:
        until = command.until or now + (command.duration or timedelta(0))
        return Silence(
            rule=self.rule_id(command.rule), until=until, by=command.by, reason=command.reason
        )

    def add_silence(self, silence: Silence) -> Record:
        """Silence (replacing the same scope's silence); the ledger entry that records it."""
        self.silence(silence)
        step = f"silence-{self.state.seq}-{len(self.state.silences)}"
        return Record(step, silence.model_dump(mode="json"))

    def unsilence_refusal(self, command: Unsilence, now: datetime) -> str | None:
        rule = self.rule_id(command.rule)
        if not any(x.rule == rule and x.until > now for x in self.state.silences):
            what = f"rule {command.rule}" if command.rule else "the customer"
            return f"{what} is not silenced"
        return None

    def lift_silence(self, command: Unsilence) -> Record:
        self.unsilence(self.rule_id(command.rule))
        step = f"unsilence-{self.state.seq}-{command.rule or 'customer'}"
        return Record(step, {"by": command.by, "rule": command.rule})

    def close_refusal(self) -> str | None:
        if self.state.open_episode() is None:
            return f"customer {self.state.customer_id} has no open episode"
        return None

    # --- the run's own moments -----------------------------------------------------------

    def digest(self) -> list[str]:
        """The rule sets in use, as `RulesDigest` names them."""
        return rules_digest(self.rule_sets)

    def switch_rules(
        self, rule_sets: list[PinnedDefinition], in_use: list[str] | None = None
    ) -> Record | None:
        """Use `rule_sets` from the next event on, and the ledger entry that says so; None when
        they are the ones in use (`in_use`: the digest when the caller asked for them, so
        that a switch meanwhile does not hide this one; default: now)."""
        if rules_digest(rule_sets) == (self.digest() if in_use is None else in_use):
            return None
        before = list(self.state.rule_sets)
        self.set_rules(rule_sets)
        step = f"rules-{self.state.events_seen + 1}"
        return Record(step, {"from": before, "to": self.state.rule_sets})

    def profile_fresh(self, now: datetime) -> bool:
        """Whether the CRM profile read last is recent enough to decide with."""
        s = self.state
        return (
            s.customer is not None
            and s.customer_at is not None
            and now - s.customer_at < PROFILE_TTL
        )

    def set_profile(self, profile: CustomerProfile | None, now: datetime) -> None:
        """What conditions and templates see as `customer` (None: the CRM did not answer, so
        only the id)."""
        s = self.state
        if profile is None:
            s.customer, s.customer_at = {"id": s.customer_id}, now
            return
        data = profile.model_dump(mode="json")
        data["lifetime_value"] = float(profile.lifetime_value)
        s.customer, s.customer_at = data, now

    def recall(self, carried: RecoveryState) -> None:
        """Continue from what the customer's last run left (its state, under this run's rule
        sets)."""
        carried.customer_id = self.state.customer_id
        self.state = carried
        self.set_rules(self.rule_sets)

    def memory(self, run_id: str, n: int) -> Record:
        """The state this run leaves for the customer's next run (the CRM profile excluded:
        the next run reads it afresh)."""
        state = self.state.model_dump(mode="json", exclude={"customer", "customer_at"})
        step = f"{MEMORY_STEP}{run_id}-{n}"
        return Record(step, {"events_seen": self.state.events_seen, "state": state})

    def continued(self, max_history_events: int) -> RecoveryInput:
        """The input of the run this one continues as new with: everything it knows."""
        return RecoveryInput(
            rules=self.rule_sets,
            carried=self.state,
            max_history_events=max_history_events,
            legacy_event_names=self.legacy_names,
        )
