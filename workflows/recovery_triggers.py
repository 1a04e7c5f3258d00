"""A rule's trigger, from the event (or the stall) to what is done: the suppression pipeline of
the recovery core.

Suppression follows Alertmanager: silence (rule or customer, until a time), dedup key per
rule, inhibition (while an episode is open, lower-severity rules only add to it), cooldown per
rule, frequency caps per action class across all rules. Every suppressed trigger is recorded
with its reason. A trigger that acts does so inside an episode (opened by it when none is
open; a repeat climbs the rule's ladder), and a credit above the gate asks for approval.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from definitions.common import Action, CreditAction
from definitions.conditions import ConditionError, evaluate_value
from workflows.recovery_approvals import ApprovalDecisions
from workflows.recovery_context import (
    DEDUP_RETENTION,
    MAX_DEDUP_PER_RULE,
    LoadedRule,
    Plan,
    action_class,
    describe_action,
    keep_last,
)
from workflows.recovery_model import Episode, Silence, SuppressedBy


class TriggerDecisions(ApprovalDecisions):
    """What a rule that triggered does: suppressed with a reason, shadowed, or acted on."""

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
        class_name = action_class(action)
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
            self.conditions_evaluated += 1
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
                    keep_last(episode.events, 50)
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
                actions=[describe_action(a) for a in kept + gated],
                capped=[f"{describe_action(a)}: {why}" for a, why in capped],
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
            keep_last(episode.events, 50)
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
            actions=[describe_action(a) for a in kept],
            capped=[f"{describe_action(a)}: {why}" for a, why in capped],
            gated=[describe_action(g) for g in gated],
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

    def silence(self, silence: Silence) -> None:
        self.state.silences = [x for x in self.state.silences if x.rule != silence.rule]
        self.state.silences.append(silence)

    def unsilence(self, rule: str | None) -> bool:
        before = len(self.state.silences)
        self.state.silences = [x for x in self.state.silences if x.rule != rule]
        return len(self.state.silences) != before
