"""The context packet the agent reads first, and what route conditions and templates see of
the customer and the conversation.

Pure: no Temporal, no I/O, no clock.
"""

from __future__ import annotations

from typing import Any

from activities.handoff_contracts import TicketBrief
from activities.models import CustomerProfile
from workflows.handoff_model import ContextPacket, HandoffState, Trigger, Turn


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
        "turns": len(status.turns),
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
    turns = "1 turn" if len(status.turns) == 1 else f"{len(status.turns)} turns"
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
        for turn in packet.transcript:
            at = f"{turn.at:%H:%M} " if turn.at else ""
            lines.append(f"- {at}{turn.speaker}: {turn.text}")
    return "\n".join(lines).strip()[:50_000]
