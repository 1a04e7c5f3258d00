"""Reading a bot conversation: what the customer and the bot said, and when it should go to a
person (asking for one, by meaning; a regulated topic; a tier; sentiment; low confidence).

Pure: no Temporal, no I/O, no clock; every function takes the moment it decides for.
"""

from __future__ import annotations

import re
import unicodedata
from datetime import datetime

from definitions.models import HandoffTriggers
from workflows.handoff_model import HandoffState, Trigger, Turn

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
TRANSCRIPT_BYTES = 500_000
"""How much transcript the state carries (each turn as JSON): the state (continue-as-new
input) holds it twice (its turns and the context packet's), and Temporal refuses a payload
over 2 MB. Thousands of chat turns fit whole; a longer conversation keeps its start and its
most recent turns and counts the ones between (`turns_omitted`)."""
LEGACY_TURNS_KEPT = 500
"""What runs from before the bound by size keep: the last 500 turns."""
TRANSCRIPT_HEAD_TURNS = 20
"""The opening turns kept when the middle of a very long conversation is left out: the
agent reads how it started."""


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


def turn_size(turn: Turn) -> int:
    return len(turn.model_dump_json().encode())


def keep_turn(status: HandoffState, turn: Turn) -> None:
    """Append `turn`; past TRANSCRIPT_BYTES, leave out the oldest turns after the opening
    ones (counted in `turns_omitted`, the latest moment left out kept)."""
    status.turns.append(turn)
    if not status.transcript_by_size:  # a run from before the bound by size
        del status.turns[:-LEGACY_TURNS_KEPT]
        return
    status.transcript_bytes += turn_size(turn)
    while status.transcript_bytes > TRANSCRIPT_BYTES and len(status.turns) > 1:
        # the first turn after the opening ones (the newest stays, whatever its size)
        left_out = status.turns.pop(min(TRANSCRIPT_HEAD_TURNS, len(status.turns) - 2))
        status.transcript_bytes -= turn_size(left_out)
        status.turns_omitted += 1
        if left_out.at is not None:
            status.omitted_through = max(status.omitted_through or left_out.at, left_out.at)


def observe_turn(status: HandoffState, turn: Turn, triggers: HandoffTriggers) -> None:
    """Fold a turn into the state: transcript, topic, what the bot tried, confidence streak."""
    keep_turn(status, turn)
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
    status: HandoffState,
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
