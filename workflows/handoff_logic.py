"""The handoff workflow's pure decisions: triggers, routing, the context packet, callback slots.

No I/O and no clock: every function takes the moment it decides for.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from activities.models import CustomerProfile
    from definitions.calendar import BusinessCalendar
    from definitions.conditions import ConditionError, evaluate
    from definitions.models import HandoffTriggers, Route
    from workflows.handoff_model import ContextPacket, HandoffStatus, TicketBrief, Trigger, Turn

ASK_INTENTS = frozenset(
    {"human_agent", "agent", "human", "talk_to_human", "talk_to_agent", "speak_to_agent", "person"}
)
# Lower-case phrases that mean "let me talk to a person", in the languages opsflow ships.
ASK_PHRASES = (
    "human",
    "a person",
    "real person",
    "an agent",
    "real agent",
    "representative",
    "mensch",
    "mitarbeiter",
    "persona",
    "agente",
    "une personne",
    "un conseiller",
    "quelqu'un",
)
CUSTOMER_HOURS = {"mon-fri": "09:00-20:00", "sat": "10:00-14:00"}
"""When a customer is called back, in their own timezone."""
MAX_TURNS_KEPT = 500


def customer_asks(turn: Turn) -> bool:
    if turn.intent and turn.intent.lower() in ASK_INTENTS:
        return True
    text = turn.text.lower()
    return any(phrase in text for phrase in ASK_PHRASES)


def observe_turn(status: HandoffStatus, turn: Turn, triggers: HandoffTriggers) -> None:
    """Fold a turn into the state: transcript, topic, what the bot tried, confidence streak."""
    status.turns.append(turn)
    del status.turns[:-MAX_TURNS_KEPT]
    if turn.speaker == "bot":
        if turn.intent and turn.intent not in status.attempts:
            status.attempts.append(turn.intent)
        return
    if turn.intent and turn.intent.lower() not in ASK_INTENTS:
        status.topic = turn.intent
    low = triggers.low_confidence
    if low is not None and turn.confidence is not None:
        if turn.confidence < low.below:
            status.low_confidence_streak += 1
        else:
            status.low_confidence_streak = 0


def detect_trigger(
    status: HandoffStatus, turn: Turn, triggers: HandoffTriggers, now: datetime
) -> Trigger | None:
    """The reason this customer turn hands the conversation to a person, if any."""
    if turn.speaker != "customer":
        return None
    if triggers.customer_asks and customer_asks(turn):
        return Trigger(kind="customer_asks", detail="the customer asked for a person", at=now)
    if turn.intent and turn.intent in triggers.topics:
        return Trigger(kind="topic", detail=f"regulated topic {turn.intent}", at=now)
    profile = status.profile
    if profile is not None and profile.tier in triggers.tiers:
        return Trigger(kind="tier", detail=f"{profile.tier} customer", at=now)
    negative = triggers.negative_sentiment
    if negative is not None and turn.sentiment is not None and turn.sentiment < negative.below:
        return Trigger(
            kind="negative_sentiment",
            detail=f"sentiment {turn.sentiment:.2f} below {negative.below:.2f}",
            at=now,
        )
    low = triggers.low_confidence
    if low is not None and status.low_confidence_streak >= low.turns:
        return Trigger(
            kind="low_confidence",
            detail=f"bot confidence below {low.below:.2f} for {status.low_confidence_streak} "
            "turns in a row",
            at=now,
        )
    return None


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


def conversation_context(status: HandoffStatus) -> dict[str, Any]:
    intents = [t.intent for t in status.turns if t.intent and t.speaker == "customer"]
    return {
        "id": status.conversation_id,
        "topic": status.topic or "",
        "intents": intents,
        "trigger": status.trigger.kind if status.trigger else "",
        "turns": len(status.turns),
    }


def choose_route(routes: list[Route], status: HandoffStatus) -> Route | None:
    """The first route whose tiers, languages and condition all hold."""
    customer = customer_context(status.profile, status.customer_id or "")
    activation = {"conversation": conversation_context(status), "customer": customer}
    for route in routes:
        if route.tiers and customer["tier"] not in route.tiers:
            continue
        if route.languages and customer["language"] not in route.languages:
            continue
        try:
            if evaluate(route.when, activation):
                return route
        except ConditionError:
            workflow.logger.warning("route %s could not be evaluated; skipped", route.name)
    return None


def sentiment_trend(turns: list[Turn]) -> list[float]:
    return [t.sentiment for t in turns if t.sentiment is not None and t.speaker == "customer"]


def summary(status: HandoffStatus, trigger: Trigger, tickets: list[TicketBrief]) -> str:
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
    status: HandoffStatus, trigger: Trigger, tickets: list[TicketBrief], items: list[str]
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


def queue_calendar(timezone: str, hours: str | dict[str, str]) -> BusinessCalendar:
    return BusinessCalendar(timezone=timezone, hours=hours)


def customer_calendar(timezone: str) -> BusinessCalendar:
    try:
        return BusinessCalendar(timezone=timezone, hours=CUSTOMER_HOURS)
    except ValueError:
        return BusinessCalendar(timezone="UTC", hours=CUSTOMER_HOURS)


def callback_slot(now: datetime, queue: BusinessCalendar, customer: BusinessCalendar) -> datetime:
    """The first moment from `now` when the queue is open and it is daytime for the customer."""
    moment = now
    for _ in range(60):
        opens = queue.next_open(moment)
        fits = customer.next_open(opens)
        if fits == opens:
            return opens
        moment = fits
    return queue.next_open(now)


def callback_context(moment: datetime, timezone: str) -> dict[str, Any]:
    """The callback time in the customer's timezone, in parts a template can say in the
    customer's language (`weekday` 0 is Monday, `month` 1 is January)."""
    calendar = customer_calendar(timezone)
    local = calendar.local_time(moment)
    return {
        "date": local.date().isoformat(),
        "time": local.strftime("%H:%M"),
        "weekday": local.weekday(),
        "day": local.day,
        "month": local.month,
        "year": local.year,
        "timezone": calendar.timezone,
        "utc": moment.isoformat(),
    }


def format_local(moment: datetime, calendar: BusinessCalendar, with_day: bool = False) -> str:
    local = calendar.local_time(moment)
    return local.strftime("%a %d %b %H:%M" if with_day else "%H:%M")


def minutes(seconds: int | None) -> int:
    if seconds is None:
        return 0
    return max(1, round(seconds / 60))


def remaining(deadline: datetime | None, now: datetime) -> timedelta | None:
    if deadline is None:
        return None
    return max(deadline - now, timedelta(0))
