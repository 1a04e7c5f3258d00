"""The handoff workflow's pure decisions: triggers, routing, the context packet, callback slots.

No I/O and no clock: every function takes the moment it decides for.
"""

from __future__ import annotations

import re
import unicodedata
from datetime import datetime, timedelta
from typing import Any

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from activities.handoff_contracts import TicketBrief
    from activities.models import CustomerProfile
    from definitions.calendar import BusinessCalendar
    from definitions.conditions import ConditionError, evaluate
    from definitions.models import HandoffTriggers, Route
    from workflows.handoff_model import ContextPacket, HandoffStatus, Trigger, Turn

ASK_INTENTS = frozenset(
    {"human_agent", "agent", "human", "talk_to_human", "talk_to_agent", "speak_to_agent", "person"}
)
# Lower-case phrases that mean "let me talk to a person", in the languages opsflow ships.
# Kept for runs recorded before triggers matched by meaning (substrings: "persona" matched
# "personal"); new runs use `asks_for_person`.
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
    """The substring matcher of runs recorded before `asks_for_person` (replay only)."""
    if turn.intent and turn.intent.lower() in ASK_INTENTS:
        return True
    text = turn.text.lower()
    return any(phrase in text for phrase in ASK_PHRASES)


# --- asking for a person, by meaning ------------------------------------------------------
#
# Text is compared as words: NFKC, casefolded, accents dropped, split at anything that is not
# a letter or digit ("quelqu'un" is the words quelqu + un, "l'agent" is l + agent). A phrase
# matches whole words in sequence, so "person" is not in "personal", "human" not in
# "inhuman" or "humanitarian". German compounds are matched by their head, the last part
# ("Servicemitarbeiter" is a Mitarbeiter; "Personalausweis" is an Ausweis).
#
# A person word asks for a person when the customer also asks for something (want, need,
# bitte, s'il vous plaît, quiero, ...) or says little else ("Agent bitte", "HUMAN!!").
# "Someone" words (someone, jemand, quelqu'un, alguien, customer service) ask only with a
# word of talking (talk, sprechen, parler, hablar): "someone used my card" does not. A
# negation shortly before, in the same clause, cancels ("I don't need an agent"); so does a
# known compound that names something else ("human resources", "travel agent").

PERSON_WORDS = (
    # en
    "human", "humans", "human being", "real person", "live person",
    "actual person", "real human", "agent", "an agent", "live agent", "representative",
    "rep", "operator", "advisor", "adviser", "manager", "supervisor",
    # de
    "mensch", "menschen", "echte person", "echten person", "agent", "agenten", "agentin",
    "vorgesetzten", "vorgesetzte", "vorgesetzter",
    # fr
    "humain", "humaine", "un humain", "une vraie personne", "une personne reelle",
    "conseiller", "conseillere", "operateur", "operatrice", "agent", "responsable",
    "superviseur",
    # es
    "humano", "humana", "persona real", "una persona real", "agente", "asesor", "asesora",
    "operador", "operadora", "representante", "gerente", "supervisor", "encargado",
)  # fmt: skip
SOMEONE_WORDS = (
    "someone", "somebody", "anyone", "anybody", "customer service", "customer support",
    "support team", "a person", "support",
    "jemand", "jemanden", "jemandem", "eine person", "einer person", "kundenservice",
    "kundendienst",
    "quelqu un", "une personne", "service client", "le service client",
    "alguien", "una persona", "servicio al cliente", "atencion al cliente",
)  # fmt: skip
GERMAN_HEADS = (
    "mitarbeiter", "mitarbeiterin", "mitarbeitern", "berater", "beraterin", "beratern",
    "bearbeiter", "bearbeiterin", "ansprechpartner", "ansprechpartnerin",
)  # fmt: skip
"""German person nouns matched at the end of a compound (Kundenberater, Servicemitarbeiter)."""
TALK_CUES = (
    "talk", "speak", "chat", "connect", "transfer", "put me through", "reach",
    "sprechen", "reden", "verbinden", "verbinde", "durchstellen", "anrufen", "erreichen",
    "parler", "passer", "passez", "joindre", "discuter", "rappeler", "contacter",
    "hablar", "comunicar", "comunicarme", "pasar", "pasame", "atender", "atienda",
    "charlar", "contactar", "llamar", "llameme",
)  # fmt: skip
REQUEST_CUES = (
    "want", "wanna", "need", "get me", "give me", "let me", "can i", "could i", "may i",
    "please", "pls", "plz", "prefer", "request", "escalate", "is there", "are there",
    "ich will", "mochte", "mochten", "brauche", "bitte", "hatte gern", "gerne", "kann ich",
    "konnte ich", "gibt es",
    "veux", "voudrais", "voudrait", "souhaite", "souhaiterais", "besoin", "svp",
    "s il vous plait", "s il te plait", "merci de", "je peux", "puis je", "y a t il",
    "quiero", "quisiera", "necesito", "por favor", "puedo", "podria", "hay",
)  # fmt: skip
NEGATIONS = frozenset(
    {
        "not", "no", "never", "without", "dont", "don", "doesn", "didn", "nobody",
        "nicht", "kein", "keine", "keinen", "keinem", "ohne", "nie", "niemand",
        "ne", "n", "pas", "jamais", "sans", "aucun", "aucune",
        "nunca", "sin", "ningun", "ninguna", "nadie",
    }
)  # fmt: skip
NOT_A_PERSON = (
    "human resources", "human error", "human rights", "human nature", "travel agent",
    "account manager", "password manager", "property manager", "download manager",
    "estate agent", "real estate agent", "secret agent", "user agent", "insurance agent",
    "agent immobilier", "agent de voyage", "agente de viajes", "agente inmobiliario",
    "agente de seguros", "recursos humanos", "ressources humaines", "droits de l homme",
    "derechos humanos",
)  # fmt: skip
FILLER = frozenset(
    {
        "a", "an", "the", "real", "live", "actual", "please", "pls", "plz", "now", "right",
        "away", "asap", "thanks", "thank", "you", "hello", "hi", "hey", "ok", "okay", "yes",
        "just", "only", "talk", "speak", "to", "with", "me", "i", "want",
        "ein", "eine", "einen", "einem", "bitte", "jetzt", "sofort", "danke", "hallo", "ja",
        "mit", "echten", "echte", "einer",
        "un", "une", "le", "la", "l", "vrai", "vraie", "svp", "s", "il", "vous", "plait",
        "maintenant", "merci", "bonjour", "oui", "tout", "de", "suite",
        "una", "el", "ya", "ahora", "gracias", "hola", "por", "favor", "si", "con",
    }
)  # fmt: skip
"""Words that may stand around a person word alone and still make it a request."""
NEGATION_REACH = 5
"""How many words before a person word a negation cancels it."""
CONFIDENT = 0.8
"""A bot intent this confident, other than asking for a person, rules out a bare word."""
_CLAUSES = re.compile(
    r"[.,;:!?\u00bf\u00a1()\[\]\n]+|\s[-\u2013\u2014]\s|\b(?:but|aber|mais|pero|sondern)\b"
)  # sentence and clause marks, dashes between words, and "but"


def words(text: str) -> list[str]:
    """`text` as comparable words: NFKC, casefolded, accents dropped, split at non-letters."""
    folded = unicodedata.normalize("NFKC", text).casefold()
    plain = "".join(
        c for c in unicodedata.normalize("NFKD", folded) if not unicodedata.combining(c)
    )
    return _WORD.findall(plain)


_WORD = re.compile(r"[^\W_]+")


Phrases = dict[str, tuple[tuple[str, ...], ...]]
"""Phrases (tuples of words) by their first word, the longest first."""


def _phrases(entries: tuple[str, ...]) -> Phrases:
    unique = {tuple(words(entry)) for entry in entries}
    ordered = sorted(unique, key=lambda p: (-len(p), p))
    index: dict[str, list[tuple[str, ...]]] = {}
    for phrase in ordered:
        index.setdefault(phrase[0], []).append(phrase)
    return {first: tuple(phrases) for first, phrases in index.items()}


_PERSON = _phrases(PERSON_WORDS)
_SOMEONE = _phrases(SOMEONE_WORDS)
_TALK = _phrases(TALK_CUES)
_REQUEST = _phrases(REQUEST_CUES)
_NOT_A_PERSON = _phrases(NOT_A_PERSON)


def _at(tokens: list[str], start: int, phrase: tuple[str, ...]) -> bool:
    return tuple(tokens[start : start + len(phrase)]) == phrase


def _phrase_at(tokens: list[str], start: int, phrases: Phrases) -> tuple[str, ...] | None:
    return next((p for p in phrases.get(tokens[start], ()) if _at(tokens, start, p)), None)


def _has(tokens: list[str], phrases: Phrases) -> bool:
    return any(_phrase_at(tokens, i, phrases) for i in range(len(tokens)))


def _inside_other_name(tokens: list[str], start: int, end: int) -> bool:
    """Whether tokens[start:end] is part of a compound naming something else (none of
    those is longer than four words)."""
    for first in range(max(0, start - 3), start + 1):
        for phrase in _NOT_A_PERSON.get(tokens[first], ()):
            if first + len(phrase) >= end and _at(tokens, first, phrase):
                return True
    return False


def _mentions(clause: list[str]) -> list[tuple[int, int, str]]:
    """(start, end, kind) of each person or someone word in a clause."""
    found: list[tuple[int, int, str]] = []
    i = 0
    while i < len(clause):
        kind, phrase = "person", _phrase_at(clause, i, _PERSON)
        if phrase is None:
            kind, phrase = "someone", _phrase_at(clause, i, _SOMEONE)
        if phrase is None and clause[i].endswith(GERMAN_HEADS):
            kind, phrase = "person", (clause[i],)
        if phrase is None:
            i += 1
            continue
        found.append((i, i + len(phrase), kind))
        i += len(phrase)
    return found


def _normal_intent(intent: str) -> str:
    return "_".join(words(intent))


def asks_for_person(
    text: str,
    intent: str | None = None,
    confidence: float | None = None,
    ask_intents: frozenset[str] = ASK_INTENTS,
) -> str | None:
    """What says the customer asks for a person (`intent human_agent`, the words "agent",
    "quelqu un"), or None. By the bot's intent first, then by the words (see above)."""
    if intent and _normal_intent(intent) in ask_intents:
        return f"intent {intent}"
    everything = words(text)
    asking = _has(everything, _REQUEST) or _has(everything, _TALK)
    talking = _has(everything, _TALK)
    bot_knows_better = (
        intent is not None and confidence is not None and confidence >= CONFIDENT
    )  # the bot understood something else, with confidence: a bare word is not enough
    for part in _CLAUSES.split(unicodedata.normalize("NFKC", text).casefold()):
        clause = words(part)
        for start, end, kind in _mentions(clause):
            if _inside_other_name(clause, start, end):
                continue
            if NEGATIONS.intersection(clause[max(0, start - NEGATION_REACH) : start]):
                continue
            said = " ".join(clause[start:end])
            if kind == "someone":
                if talking:
                    return said
                continue
            alone = all(t in FILLER or t in clause[start:end] for t in everything)
            if asking or (alone and not bot_knows_better):
                return said
    return None


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
    status: HandoffStatus,
    turn: Turn,
    triggers: HandoffTriggers,
    now: datetime,
    by_meaning: bool = True,
) -> Trigger | None:
    """The reason this customer turn hands the conversation to a person, if any.
    `by_meaning=False`: the substring matcher, for runs recorded before."""
    if turn.speaker != "customer":
        return None
    if triggers.customer_asks:
        if by_meaning:
            ask_intents = ASK_INTENTS | {_normal_intent(i) for i in triggers.ask_intents}
            said = asks_for_person(turn.text, turn.intent, turn.confidence, ask_intents)
            if said is not None:
                detail = f"the customer asked for a person ({said})"
                return Trigger(kind="customer_asks", detail=detail[:200], at=now)
        elif customer_asks(turn):
            detail = "the customer asked for a person"
            return Trigger(kind="customer_asks", detail=detail, at=now)
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
