"""The context packet the agent reads first, and what route conditions and templates see of
the customer and the conversation.

Pure: no Temporal, no I/O, no clock.
"""

from __future__ import annotations

from typing import Any

from activities.customer_contracts import CustomerProfile
from activities.handoff_contracts import TicketBrief
from workflows.handoff_model import ContextPacket, HandoffState, Trigger, Turn
from workflows.handoff_triggers import TRANSCRIPT_HEAD_TURNS


def customer_context(profile: CustomerProfile | None, customer_id: str) -> dict[str, Any]:
    """What route conditions and templates see as `customer`."""
    if profile is None:
        return {
            "id": customer_id,
            "name": "",
            "language": "en",
            "tier": "standard",
            "segment": "",
            "timezone": "UTC",
            "country": "",
        }
    data: dict[str, Any] = profile.model_dump(mode="json")
    data["lifetime_value"] = float(profile.lifetime_value)
    data["country"] = profile.country or ""
    return data


def conversation_context(status: HandoffState) -> dict[str, Any]:
    intents = [t.intent for t in status.turns if t.intent and t.speaker == "customer"]
    return {
        "id": status.conversation_id,
        "topic": status.topic or "",
        "intents": intents,
        "trigger": status.trigger.kind if status.trigger else "",
        "turns": len(status.turns) + status.turns_omitted,
    }


def sentiment_trend(turns: list[Turn]) -> list[float]:
    return [t.sentiment for t in turns if t.sentiment is not None and t.speaker == "customer"]


def summary(status: HandoffState, trigger: Trigger, tickets: list[TicketBrief]) -> str:
    profile = status.profile
    who = (
        f"{profile.name} ({profile.tier} {profile.segment} customer, speaks {profile.language}, "
        f"{profile.timezone})"
        if profile
        else f"Customer {status.customer_id}"
    )
    topic = f"about {status.topic}" if status.topic else "without a clear topic"
    first = next((t.text for t in status.turns if t.speaker == "customer"), "")
    said = f' and first wrote "{first[:160]}"' if first else ""
    tried = (
        f" The bot tried {', '.join(status.attempts)} without resolving it."
        if status.attempts
        else " The bot had nothing more to offer."
    )
    trend = sentiment_trend(status.turns)
    mood = ""
    if len(trend) >= 2:
        direction = "fell" if trend[-1] < trend[0] else "rose" if trend[-1] > trend[0] else "held"
        mood = f" Sentiment {direction} from {trend[0]:.2f} to {trend[-1]:.2f}."
    elif trend:
        mood = f" Sentiment {trend[-1]:.2f}."
    open_note = f" {len(tickets)} other open ticket(s)." if tickets else ""
    count = len(status.turns) + status.turns_omitted
    turns = "1 turn" if count == 1 else f"{count} turns"
    return (
        f"{who} chatted {topic} for {turns}{said}.{tried}{mood}{open_note} "
        f"Handed to a person because {trigger.detail}."
    )


def build_packet(
    status: HandoffState, trigger: Trigger, tickets: list[TicketBrief], items: list[str]
) -> ContextPacket:
    packet = ContextPacket(
        conversation_id=status.conversation_id,
        customer_id=status.customer_id or "",
        trigger=trigger,
        transcript=list(status.turns) if "transcript" in items else [],
        turns_omitted=status.turns_omitted if "transcript" in items else 0,
        intents=[t.intent for t in status.turns if t.intent and t.speaker == "customer"]
        if "intents" in items
        else [],
        attempts=list(status.attempts) if "attempts" in items else [],
        profile=status.profile if "profile" in items else None,
        open_tickets=tickets if "open_tickets" in items else [],
        sentiment_trend=sentiment_trend(status.turns) if "sentiment" in items else [],
        summary=summary(status, trigger, tickets) if "summary" in items else "",
    )
    packet.text = render_packet(packet)
    return packet


def render_packet(packet: ContextPacket) -> str:
    """The packet as an internal ticket comment: what the agent reads first."""
    lines = [f"Chat handoff for conversation {packet.conversation_id}", ""]
    if packet.summary:
        lines += ["Summary", packet.summary, ""]
    lines += [f"Trigger: {packet.trigger.kind} ({packet.trigger.detail})", ""]
    if packet.profile is not None:
        p = packet.profile
        lines += [
            "Customer profile",
            f"- {p.name} ({p.id}), tier {p.tier}, segment {p.segment}",
            f"- lifetime value {p.lifetime_value}, language {p.language}, timezone {p.timezone}",
            f"- journey stage {p.journey_stage or '-'}, account manager {p.account_manager or '-'}",
            "",
        ]
    if packet.open_tickets:
        lines.append("Open tickets")
        lines += [f"- {t.id} [{t.status}, {t.priority}] {t.subject}" for t in packet.open_tickets]
        lines.append("")
    if packet.intents:
        lines += ["Intents detected: " + ", ".join(packet.intents), ""]
    if packet.attempts:
        lines += ["What the bot tried: " + ", ".join(packet.attempts), ""]
    if packet.sentiment_trend:
        lines += ["Sentiment trend: " + " → ".join(f"{s:.2f}" for s in packet.sentiment_trend), ""]
    if packet.transcript:
        lines.append("Transcript")
        lines += transcript_lines(packet, COMMENT_CHARS - sum(len(line) + 1 for line in lines))
    return "\n".join(lines).strip()[:COMMENT_CHARS]


COMMENT_CHARS = 50_000
"""The longest comment the packet becomes (ticketing systems cap a comment's body)."""


def transcript_lines(packet: ContextPacket, room: int) -> list[str]:
    """One line a turn (a very long turn cut to LINE_CHARS); when they do not fit in `room`
    characters, the opening turns (up to a quarter of it) and as many of the latest as fit,
    with a line saying how many are left out between them."""

    def line(turn: Turn) -> str:
        at = f"{turn.at:%H:%M} " if turn.at else ""
        text = f"- {at}{turn.speaker}: {turn.text}"
        return text if len(text) <= LINE_CHARS else text[: LINE_CHARS - 1] + "…"

    every = [line(turn) for turn in packet.transcript]
    omitted = packet.turns_omitted
    if omitted == 0 and sum(len(text) + 1 for text in every) <= room:
        return every
    room -= 80  # the line saying what is left out
    head: list[str] = []
    for text in every[:TRANSCRIPT_HEAD_TURNS]:
        if len(text) + 1 > room // 4 - sum(len(kept) + 1 for kept in head):
            break
        head.append(text)
    room -= sum(len(text) + 1 for text in head)
    tail: list[str] = []
    for text in reversed(every[len(head) :]):
        if len(text) + 1 > room:
            break
        tail.append(text)
        room -= len(text) + 1
    tail.reverse()
    left_out = omitted + len(every) - len(head) - len(tail)
    if left_out == 0:
        return head + tail
    return [*head, f"- … {left_out} turns left out here", *tail]


LINE_CHARS = 2_000
"""A turn's longest line in the comment."""
