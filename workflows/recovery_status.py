"""What the recovery core tells people: the search attribute `OpsState`, the one line of the
Temporal UI (what the run waits for, until when), the status query and the run's summary.
"""

from __future__ import annotations

from datetime import datetime

from workflows.recovery_context import RecoveryBasis
from workflows.recovery_model import OpsState, RecoveryStatus, RecoverySummary


class StatusViews(RecoveryBasis):
    """The state as people see it; nothing here changes it."""

    def next_wake(self) -> datetime | None:
        """The next due moment: a stall, an approval's deadline or reminder, the open
        episode's follow-up or expiry (none while a person has it)."""
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

    def ops_state(self, now: datetime, acting: bool) -> OpsState:
        """`acting` while the workflow carries out plans; then what the customer waits on."""
        if acting:
            return "acting"
        if self.state.waiting_approvals():
            return "awaiting_approval"
        episode = self.state.open_episode()
        if episode is not None and episode.handed_over_at is not None:
            return "with_person"
        if any(x.rule is None and x.until > now for x in self.state.silences):
            return "silenced"
        return "watching"

    def definitions_shown(self) -> str:
        """`OpsDefinition`: the rule sets in use (search attributes hold at most 1000 chars)."""
        return ",".join(self.state.rule_sets)[:1000] or "none"

    def details(self, now: datetime) -> str:
        """The UI's one line: an approval waiting, the open episode, a silence, or what is
        watched and when the next check is."""
        s = self.state
        parts: list[str] = []
        for approval in s.waiting_approvals()[:1]:
            parts.append(
                f"awaiting approval of a {approval.amount} {approval.currency} credit by "
                f"{approval.group} until {self.local_time(approval.deadline)}"
            )
        episode = s.open_episode()
        if episode is not None:
            days = (now - episode.opened_at).days
            since = {0: "since today", 1: "since 1 day"}.get(days, f"since {days} days")
            waiting = ""
            if episode.handed_over_at:
                ticket = f" (ticket {episode.handover_ticket})" if episode.handover_ticket else ""
                waiting = (
                    f", not recovered (follow-up scored {episode.score}): with "
                    f"{episode.handed_over_to}{ticket} until a person closes it"
                )
            elif episode.follow_up_sent_at:
                waiting = ", waiting for the follow-up survey"
            elif episode.follow_up_at:
                waiting = f", follow-up survey at {self.local_time(episode.follow_up_at)}"
            parts.append(f"episode {episode.id} {since}{waiting}")
        silenced = [x for x in s.silences if x.until > now]
        for silence in silenced[:1]:
            what = silence.rule or "customer"
            parts.append(f"{what} silenced until {self.local_time(silence.until)}")
        if not parts:
            wake = self.next_wake()
            windows = ", ".join(f"{k.split('/')[-1]} {len(v)}" for k, v in s.windows.items())
            parts.append(f"watching {len(self.rules)} rules")
            if windows:
                parts.append(f"windows: {windows}")
            if wake is not None:
                parts.append(f"next check {self.local_time(wake)}")
        return "; ".join(parts)

    def status(self, now: datetime, acting: bool) -> RecoveryStatus:
        """The status query: the whole state, plus what the UI shows."""
        return RecoveryStatus(
            state=self.state,
            ops_state=self.ops_state(now, acting),
            details=self.details(now),
            next_wake=self.next_wake(),
        )

    def summary(self) -> RecoverySummary:
        """What a run returns when it ends (nothing pending)."""
        return RecoverySummary(
            customer_id=self.state.customer_id,
            events_seen=self.state.events_seen,
            episodes=self.state.episode_count,
            tally=self.state.tally,
        )
