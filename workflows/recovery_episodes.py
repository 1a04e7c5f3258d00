"""Episodes of the recovery core: the follow-up survey an episode sends, its answer (recovered,
or handed to a person with a ticket telling the story), and closing.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from activities.models import CreateTicket
from definitions.common import NotifyAction
from workflows.recovery_context import HandOver, Plan, RecoveryBasis
from workflows.recovery_model import Episode, EpisodeStatus


class EpisodeDecisions(RecoveryBasis):
    """Follow-ups, their answers, hand-overs and closing an episode."""

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

    def handover_ticket(self, handover: HandOver, step: str, workflow_id: str) -> CreateTicket:
        """The ticket that puts a not-recovered episode in a person's queue."""
        return CreateTicket(
            idempotency_key=f"{workflow_id}/{step}",
            customer_id=self.state.customer_id,
            subject=handover.subject,
            description=handover.description,
            priority=handover.priority,
            queue=handover.queue,
            tags=["opsflow", "recovery", "not-recovered"],
        )

    def note_handover_ticket(self, episode_id: int, ticket_id: str) -> None:
        episode = next((e for e in self.state.episodes if e.id == episode_id), None)
        if episode is not None:
            episode.handover_ticket = ticket_id
