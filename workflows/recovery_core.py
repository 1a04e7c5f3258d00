"""The service-recovery decision core: pure, deterministic, shared by the workflow, the
backtest and the simulator.

`RecoveryEngine` owns one customer's `RecoveryState` and the pinned rule sets. It is fed
events (`on_event`) and the passage of time (`on_time`), and returns `Plan`s: what to record
and which actions to run. It never performs I/O and never reads a clock: `now` is always
given, by `workflow.now()` in the workflow and by the event times in a backtest, so the same
events give the same decisions in both.

The engine's topics live beside it: recovery_context.py (loaded rules, contexts, plans),
recovery_triggers.py (suppression and actions), recovery_approvals.py (the approval gate),
recovery_episodes.py (follow-ups, hand-overs, closing).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from definitions.conditions import ConditionError, evaluate
from definitions.events import EventEnvelope
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
    event_context,
    keep_last,
)
from workflows.recovery_episodes import EpisodeDecisions
from workflows.recovery_model import (
    ScoreEntry,
)
from workflows.recovery_triggers import TriggerDecisions


class RecoveryEngine(TriggerDecisions, EpisodeDecisions):
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
