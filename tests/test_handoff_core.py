"""The handoff's decision core, without Temporal: which phase comes next, which queue, when to
look for an agent again, what a command is refused with, how the case and the callback turn out.
"""

from __future__ import annotations

import ast
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from activities.customer_contracts import CustomerProfile
from activities.handoff_contracts import QueueInfo, Reservation
from definitions.events import BotHandoffRequested, BotTurn, EventEnvelope, TicketUpdated
from definitions.models import HandoffSpec, Route
from tests.definition_support import pinned as pinned_policy
from tests.escalation_support import policy_document
from tests.handoff_support import start_input, turn_event
from tests.test_workflow_fingerprints import fingerprints
from workflows import handoff_core as core
from workflows import handoff_routing as routing
from workflows.handoff_hours import schedule_callback
from workflows.handoff_model import HandoffState, Offer, Trigger, Turn
from workflows.handoff_packet import COMMENT_CHARS, build_packet, conversation_context
from workflows.handoff_triggers import TRANSCRIPT_BYTES, TRANSCRIPT_HEAD_TURNS, keep_turn

MONDAY_10 = datetime(2026, 12, 7, 10, 0, tzinfo=UTC)
SUNDAY_10 = datetime(2026, 12, 6, 10, 0, tzinfo=UTC)


def _spec(**overrides: Any) -> HandoffSpec:
    return start_input(**overrides).definition.handoff


def _profile(
    tier: str = "standard", language: str = "en", timezone: str = "UTC"
) -> CustomerProfile:
    return CustomerProfile(
        id="C-1",
        name="Ana",
        tier=tier,
        segment="smb",
        lifetime_value=Decimal("100"),
        language=language,
        timezone=timezone,
    )


def _state(phase: str = "bot", **fields: Any) -> HandoffState:
    state = HandoffState(conversation_id="conv-1", customer_id="C-1", definition="d@1")
    state.state = phase  # type: ignore[assignment]
    for name, value in fields.items():
        setattr(state, name, value)
    return state


def _queue(**fields: Any) -> QueueInfo:
    info: dict[str, Any] = {
        "id": "support",
        "name": "Support",
        "timezone": "UTC",
        "hours": {"mon-fri": "09:00-17:00"},
        "skills": ["general"],
        "depth": 2,
        "staffed": 3,
        "free_slots": 1,
        "estimated_wait_seconds": 120,
    }
    info.update(fields)
    return QueueInfo(**info)


def _queued(spec: HandoffSpec, now: datetime = MONDAY_10, **fields: Any) -> HandoffState:
    state = _state("requested", queue="support", requested_at=now, **fields)
    move = routing.queued(state, spec, now)
    core.change_phase(state, move.phase, move.why, now)
    return state


def _offered_to(state: HandoffState, agent: str, now: datetime = MONDAY_10) -> Offer:
    reservation = Reservation(agent_id=agent, name=agent.title(), skills=["billing"])
    offer, move = routing.offer(state, reservation, len(state.offers) + 1, _spec(), now)
    core.change_phase(state, move.phase, move.why, now)
    return offer


# --- commands: what is refused, and what each does --------------------------------------------


def test_only_the_agent_offered_to_may_answer() -> None:
    state = _queued(_spec())
    assert core.offer_refusal(state, "ana") == "the conversation is queued: no offer is open"
    _offered_to(state, "ana")
    assert core.offer_refusal(state, "ana") is None
    assert core.offer_refusal(state, "ben") == "the conversation is offered to ana, not to ben"
    move = core.accept(state, "ana", MONDAY_10 + timedelta(seconds=30))
    assert (move.phase, move.why) == ("active", "accepted by ana")
    assert move.detail == {"agent": "ana", "waited_seconds": 30.0}
    core.change_phase(state, move.phase, move.why, MONDAY_10)
    assert core.offer_refusal(state, "ana") == "already accepted by ana"


def test_an_agent_cannot_take_a_conversation_the_vendor_routes() -> None:
    state = _queued(_spec(), routing="vendor", ticket_id="T-9")
    assert core.offer_refusal(state, "ana") == (
        "the vendor routes this conversation: assign ticket T-9 there"
    )


def test_a_decline_puts_the_conversation_back_in_the_queue() -> None:
    state = _queued(_spec())
    offer = _offered_to(state, "ana")
    move = core.decline(state, "ana", "on a call")
    assert (move.phase, move.why) == ("queued", "declined by ana: on a call")
    assert (offer.outcome, offer.reason) == ("declined", "on a call")


def test_nothing_is_taken_before_the_start_or_after_the_end() -> None:
    assert core.refusal_if_over(None) == "the conversation has not started yet"
    ended = _state("resolved")
    assert core.refusal_if_over(ended) == "conversation conv-1 has already ended (resolved)"
    assert core.offer_refusal(ended, "ana") == core.refusal_if_over(ended)
    assert core.resolve_refusal(ended) == core.refusal_if_over(ended)


def test_only_an_active_conversation_is_resolved_and_the_bot_cannot_get_it_back_twice() -> None:
    assert core.resolve_refusal(_state("queued")) == (
        "the conversation is queued: only an active conversation can be resolved"
    )
    assert core.resolve_refusal(_state("active", agent="ana")) is None
    assert core.return_to_bot_refusal(_state("bot")) == "the bot has the conversation already"
    assert core.return_to_bot_refusal(_state("queued")) is None


@pytest.mark.parametrize(
    ("phase", "ends_as"),
    [("active", "resolved"), ("bot", "returned_to_bot"), ("queued", "abandoned")],
)
def test_when_the_customer_leaves(phase: str, ends_as: str) -> None:
    state = _state(phase)
    move = core.customer_left(state, "customer left the chat")
    assert (move.phase, move.why, move.detail) == (
        ends_as,
        "customer left the chat",
        {"by": "customer"},
    )
    assert state.ended_by == "customer"


def test_leaving_withdraws_the_open_offer() -> None:
    state = _queued(_spec())
    offer = _offered_to(state, "ana")
    assert core.customer_left(state, "gone").phase == "abandoned"
    assert offer.outcome == "withdrawn"


def test_who_resolves_and_returns_to_the_bot() -> None:
    active = _state("active", agent="ana")
    assert core.resolve(active, None).detail == {"by": "ana"}
    assert core.resolve(_state("active", agent="ana"), "lead").why == "resolved by lead"
    back = core.return_to_bot(_state("active", agent="ana"), None, "answered")
    assert (back.phase, back.why, back.detail) == ("returned_to_bot", "answered", {"by": "ana"})


# --- phases ---------------------------------------------------------------------------------


def test_a_phase_change_is_recorded_and_ends_the_wait_once_a_person_has_it() -> None:
    state = _queued(_spec())
    assert core.change_phase(state, "offered", "offered to ana", MONDAY_10) is None
    waited = core.change_phase(state, "active", "accepted", MONDAY_10 + timedelta(minutes=3))
    assert waited == 180.0
    assert [t.state for t in state.history] == ["queued", "offered", "active"]
    assert state.ended_at is None
    core.change_phase(state, "resolved", "done", MONDAY_10 + timedelta(hours=1))
    assert (state.ended_at, state.end_reason) == (MONDAY_10 + timedelta(hours=1), "done")


def test_what_is_due_next_is_the_offer_then_the_queue_s_wait() -> None:
    spec = _spec()
    state = _queued(spec)
    assert core.next_deadline(state) == MONDAY_10 + spec.max_wait
    offer = _offered_to(state, "ana")
    assert core.next_deadline(state) == offer.expires_at == MONDAY_10 + spec.offer_timeout
    assert core.next_deadline(_state("active")) is None


def test_the_one_line_says_what_it_waits_for_and_until_when() -> None:
    state = _queued(_spec(), queue_depth=4)
    assert core.describe(state, MONDAY_10, None) == (
        "queued for an agent; 4 waiting in support; overflow or callback at 10:10 UTC"
    )
    _offered_to(state, "ana")
    assert core.describe(state, MONDAY_10, None) == (
        "offered to agent ana (billing) until 10:00 UTC, first offer; 4 waiting in support"
    )


# --- events ---------------------------------------------------------------------------------


def test_an_event_is_read_once_and_only_for_its_conversation() -> None:
    state = _state("bot", customer_id=None)
    first = turn_event("conv-1", "C-7", "hello")
    received = core.receive(state, first)
    assert isinstance(received.event, BotTurn) and received.new_customer
    assert state.customer_id == "C-7"
    assert core.receive(state, first) == core.Received()  # a repeat
    other = core.receive(state, turn_event("conv-2", "C-7", "hello"))
    assert (other.event, other.note) == (None, "event for another conversation ignored")
    bad = EventEnvelope(id="x", source="s", type="bot.turn", subject="conv-1", data={})
    assert (core.receive(state, bad).note or "").startswith("event bot.turn ignored: ")


def test_asking_for_a_person_requests_one_while_the_bot_has_it() -> None:
    state = _state("bot")
    turn = BotTurn(conversation_id="conv-1", customer_id="C-1", text="I want a human")
    decision = core.read_bot_event(state, turn, _spec(), MONDAY_10)
    assert decision.move is not None and decision.move.phase == "requested"
    assert decision.move.why == "the customer asked for a person (human)"
    assert state.trigger is not None and state.requested_at == MONDAY_10
    queued = _state("queued")
    assert core.read_bot_event(queued, turn, _spec(), MONDAY_10).move is None
    assert len(queued.turns) == 1  # the transcript still grows


def test_the_bot_s_own_request_merges_its_transcript_and_is_ignored_when_switched_off() -> None:
    request = BotHandoffRequested.model_validate(
        {
            "conversation_id": "conv-1",
            "customer_id": "C-1",
            "reason": "cannot help",
            "transcript": [{"from": "customer", "text": "hi"}, {"from": "bot", "text": "hello"}],
            "tried": ["faq"],
        }
    )
    state = _state("bot", seen_events=["a", "b"])
    state.turns.append(Turn(speaker="customer", text="hi"))
    off = _spec(triggers={"customer_asks": True, "bot_requests": False})
    decision = core.read_bot_event(state, request, off, MONDAY_10)
    assert [t.text for t in state.turns] == ["hi", "hello"] and state.attempts == ["faq"]
    assert decision.move is None and decision.ledger == core.LedgerEntry(
        "ignored-request-2", {"reason": "cannot help", "why": "bot_requests is off"}
    )
    on = core.read_bot_event(_state("bot"), request, _spec(), MONDAY_10)
    assert on.move is not None and (on.move.phase, on.move.why) == ("requested", "cannot help")


def test_two_thousand_turns_are_carried_whole() -> None:
    state = _state("bot", transcript_by_size=True)
    spec = _spec()
    for i in range(2_000):
        text = f"turn {i}: my invoice for March shows a line I do not recognise"
        speaker = "customer" if i % 2 else "bot"
        turn = BotTurn(conversation_id="conv-1", customer_id="C-1", text=text, speaker=speaker)
        core.read_bot_event(state, turn, spec, MONDAY_10)
    assert len(state.turns) == 2_000 and state.turns_omitted == 0
    assert [t.text.split(":")[0] for t in state.turns] == [f"turn {i}" for i in range(2_000)]
    assert conversation_context(state)["turns"] == 2_000


def test_runs_from_before_the_bound_by_size_keep_their_last_500_turns() -> None:
    state = _state("bot")  # transcript_by_size False: a run recorded before the patch
    for i in range(600):
        keep_turn(state, Turn(speaker="customer", text=f"turn {i}"))
    assert [t.text for t in state.turns] == [f"turn {i}" for i in range(100, 600)]
    assert state.turns_omitted == 0


@pytest.mark.parametrize("character", ["x", '"', "\x01", "é"])
def test_a_transcript_past_its_bound_keeps_its_start_and_latest_turns_under_two_mb(
    character: str,
) -> None:
    """Turns of 20,000 characters (the longest an event takes, JSON escaping included) with
    the longest intent: the state keeps the opening turns and the latest, counts the rest,
    and the state with its context packet stays below Temporal's 2 MB payload limit."""
    state = _state("bot", transcript_by_size=True)
    start = datetime(2026, 12, 7, 9, 0, tzinfo=UTC)
    for i in range(200):
        text = f"{i:04d} " + character * 19_995
        at = start + timedelta(seconds=i)
        keep_turn(state, Turn(speaker="customer", text=text, at=at, intent="i" * 500))
    kept = [int(t.text[:4]) for t in state.turns]
    assert kept[0] == 0 and kept == sorted(kept)
    assert kept[-1] == 199 and kept == sorted(kept)
    assert state.turns_omitted == 200 - len(kept) > 0
    assert state.transcript_bytes <= TRANSCRIPT_BYTES
    trigger = Trigger(kind="customer_asks", detail="asked", at=MONDAY_10)
    state.context = build_packet(state, trigger, [], ["transcript", "summary", "intents"])
    assert len(state.model_dump_json().encode()) < 1_900_000
    text = state.context.text
    assert len(text) <= COMMENT_CHARS
    assert "0199 " in text  # the latest turn
    assert "for 200 turns" in state.context.summary
    assert " turns left out here" in text
    assert conversation_context(state)["turns"] == 200


def test_a_bot_s_transcript_does_not_bring_back_turns_left_out() -> None:
    state = _state("bot", transcript_by_size=True)
    start = datetime(2026, 12, 7, 9, 0, tzinfo=UTC)
    for i in range(100):
        at = start + timedelta(seconds=i)
        keep_turn(state, Turn(speaker="customer", text=f"{i:04d} " + "x" * 19_995, at=at))
    assert state.turns_omitted > 0 and state.omitted_through is not None
    count = len(state.turns)
    first_left_out = TRANSCRIPT_HEAD_TURNS  # the turn after the opening ones
    request = BotHandoffRequested.model_validate(
        {
            "conversation_id": "conv-1",
            "customer_id": "C-1",
            "reason": "cannot help",
            "transcript": [
                {
                    "from": "customer",
                    "text": f"{first_left_out:04d} " + "x" * 19_995,
                    "at": (start + timedelta(seconds=first_left_out)).isoformat(),
                },
                {
                    "from": "bot",
                    "text": "a new line",
                    "at": (start + timedelta(hours=1)).isoformat(),
                },
            ],
        }
    )
    core.read_bot_event(state, request, _spec(), MONDAY_10)
    assert len(state.turns) <= count + 1
    assert state.turns[-1].text == "a new line"
    assert not any(t.text.startswith(f"{first_left_out:04d} ") for t in state.turns)


def test_a_long_transcript_in_the_comment_keeps_its_start_and_its_end() -> None:
    state = _state("bot", transcript_by_size=True)
    for i in range(2_000):
        keep_turn(state, Turn(speaker="customer", text=f"turn {i}: " + "y" * 60))
    trigger = Trigger(kind="customer_asks", detail="asked", at=MONDAY_10)
    packet = build_packet(state, trigger, [], ["transcript"])
    assert len(packet.transcript) == 2_000 and packet.turns_omitted == 0
    lines = packet.text.splitlines()
    assert len(packet.text) <= COMMENT_CHARS
    assert "turn 0: " in packet.text and "turn 1999: " in packet.text
    assert any(line.startswith("- … ") and "turns left out here" in line for line in lines)


def test_the_vendor_s_assignee_ends_the_wait_only_when_the_vendor_routes() -> None:
    assigned = TicketUpdated(ticket_id="T-9", assignee="zd-ana")
    vendor = _queued(_spec(), routing="vendor", ticket_id="T-9", vendor_group="42")
    decision = core.vendor_assignment(vendor, assigned, MONDAY_10 + timedelta(minutes=2))
    assert decision.move is not None and decision.move.phase == "active"
    assert decision.move.why == "assigned to zd-ana in the vendor's group 42"
    assert vendor.agent == "zd-ana" and vendor.offers[-1].outcome == "accepted"
    ours = _queued(_spec(), ticket_id="T-9")
    assert core.vendor_assignment(ours, assigned, MONDAY_10).note == (
        "ticket.updated ignored: not waiting for the vendor"
    )
    other_ticket = TicketUpdated(ticket_id="T-1", assignee="zd-ana")
    assert core.vendor_assignment(vendor, other_ticket, MONDAY_10) == core.Decision()


# --- routing --------------------------------------------------------------------------------


def test_the_first_route_that_fits_the_customer_and_the_topic() -> None:
    routes = list(_spec().routes)
    vip = _state("requested", profile=_profile(tier="vip"))
    assert routing.choose_route(routes, vip)[0].name == "vip"  # type: ignore[union-attr]
    german = _state("requested", profile=_profile(language="de"), topic="api")
    assert routing.choose_route(routes, german)[0].name == "technical-de"  # type: ignore[union-attr]
    plain = _state("requested", profile=_profile(), topic="weather")
    assert routing.choose_route(routes, plain) == (routes[-1], [])


def test_a_route_whose_condition_fails_is_skipped_and_named() -> None:
    broken = Route.model_validate({"name": "odd", "when": "customer.tier > 3", "queue": "x"})
    fallback = Route.model_validate({"name": "general", "queue": "support"})
    assert routing.choose_route([broken, fallback], _state("requested")) == (fallback, ["odd"])


def test_why_a_queue_cannot_take_the_conversation() -> None:
    spec = _spec()
    info = _queue()
    open_calendar = routing.use_queue(_state("requested"), info)
    assert routing.queue_refusal(info, open_calendar, spec, MONDAY_10) is None
    assert routing.queue_refusal(info, open_calendar, spec, SUNDAY_10) == (
        "queue support is closed until Mon 07 Dec 09:00 UTC"
    )
    nobody = _queue(estimated_wait_seconds=None)
    assert routing.queue_refusal(nobody, open_calendar, spec, MONDAY_10) == (
        "no agent in support can take the conversation"
    )
    slow = _queue(estimated_wait_seconds=1500)
    assert routing.queue_refusal(slow, open_calendar, spec, MONDAY_10) == (
        "the estimated wait in support is 25 minutes"
    )
    vendor = _queue(estimated_wait_seconds=None, routing="vendor")
    assert routing.queue_refusal(vendor, open_calendar, spec, MONDAY_10) is None
    assert routing.queue_full(_queue(depth=25), spec) == "25 waiting in support"
    assert routing.queue_full(_queue(depth=24), spec) is None


def test_the_overflow_queue_is_used_once() -> None:
    spec = _spec()
    state = _queued(spec)
    entry = routing.overflow(state, spec, "too long")
    assert entry == core.LedgerEntry(
        "overflow", {"from": "support", "to": "tier-2", "why": "too long"}
    )
    assert routing.overflow(state, spec, "again") is None
    no_overflow = _spec(overflow_queue=None)
    assert routing.overflow(_queued(no_overflow), no_overflow, "x") is None


# --- waiting in the queue -------------------------------------------------------------------


def test_optional_skills_are_dropped_after_relax_after() -> None:
    spec = _spec()
    billing = next(r for r in spec.routes if r.name == "billing")
    state = _queued(spec, route="billing")
    early = routing.check_queue(state, spec, billing, MONDAY_10 + timedelta(minutes=1))
    assert early == routing.QueueCheck(
        relaxed=None, over=None, relax_at=MONDAY_10 + timedelta(minutes=2)
    )
    assert routing.route_skills(state, billing) == ["billing", "refunds"]
    late = routing.check_queue(state, spec, billing, MONDAY_10 + timedelta(minutes=2))
    assert late.relaxed == core.LedgerEntry("relaxed", {"dropped": ["refunds"]})
    assert state.relaxed and late.relax_at is None
    assert routing.route_skills(state, billing) == ["billing"]


def test_the_wait_in_a_queue_ends_after_max_wait_or_max_offers() -> None:
    spec = _spec()
    state = _queued(spec)
    assert routing.check_queue(state, spec, None, MONDAY_10 + spec.max_wait).over == (
        "no agent accepted within 0:10:00"
    )
    for agent in ("ana", "ben", "cy"):
        _offered_to(state, agent)
    assert routing.check_queue(state, spec, None, MONDAY_10).over == (
        "3 offers in support without an accept"
    )


def test_when_to_look_for_an_agent_again() -> None:
    spec = _spec()
    state = _queued(spec)
    waiting = routing.check_queue(state, spec, None, MONDAY_10)
    assert routing.next_look(state, waiting, MONDAY_10, timedelta(minutes=1)) == timedelta(
        minutes=1
    )
    near_the_end = MONDAY_10 + spec.max_wait - timedelta(seconds=10)
    assert routing.next_look(state, waiting, near_the_end, timedelta(minutes=1)) == timedelta(
        seconds=10
    )
    billing = next(r for r in spec.routes if r.name == "billing")
    relaxing = routing.check_queue(state, spec, billing, MONDAY_10 + timedelta(seconds=90))
    assert routing.next_look(
        state, relaxing, MONDAY_10 + timedelta(seconds=90), timedelta(minutes=1)
    ) == timedelta(seconds=30)


def test_a_search_skips_agents_already_offered_and_keeps_the_place_in_line() -> None:
    spec = _spec()
    state = _queued(spec, queue_skills=["general"])
    _offered_to(state, "ben")
    _offered_to(state, "ana")
    search = routing.agent_search(state, None, True, "handoff-conv-1")
    assert (search.number, search.step) == (3, "offer-3-search-1")
    assert search.exclude == ["ana", "ben"] and search.skills == ["general"]
    assert search.line == {
        "workflow_id": "handoff-conv-1",
        "waiting_since": MONDAY_10,
        "priority": "p2",
    }
    assert routing.agent_search(state, None, False, "handoff-conv-1").line == {}
    assert state.searches == 2  # each search has its own key


def test_an_unanswered_offer_times_out_back_to_the_queue() -> None:
    state = _queued(_spec())
    offer = _offered_to(state, "ana")
    move = routing.offer_timed_out(offer)
    assert (move.phase, move.why) == ("queued", "offer to ana timed out")
    assert offer.outcome == "timed_out"


# --- the case, the callback, the end --------------------------------------------------------


def test_the_case_an_accept_opens() -> None:
    state = _state("active", ticket_id="T-9", topic="billing", requested_at=MONDAY_10)
    case = core.case_to_open(state, pinned_policy(policy_document()), MONDAY_10)
    assert (case.ticket_id, case.priority, case.channel) == ("T-9", "p2", "chat")
    assert (case.subject, case.opened_at) == ("Chat handoff: billing", MONDAY_10)


@pytest.mark.parametrize(
    ("fields", "by", "outcome"),
    [
        ({"state": "resolved", "ended_by": "ana", "agent": "ana"}, "ana", None),
        (
            {"state": "resolved", "ended_by": "customer", "agent": "ana", "end_reason": "bye"},
            "ana",
            "customer left: bye",
        ),
        (
            {"state": "returned_to_bot", "ended_by": "ana", "end_reason": "answered"},
            "ana",
            "returned to bot: answered",
        ),
        ({"state": "abandoned", "ended_by": "customer", "agent": None}, "customer", "abandoned"),
    ],
)
def test_how_the_conversation_s_end_resolves_its_case(
    fields: dict[str, Any], by: str, outcome: str | None
) -> None:
    assert core.case_resolution(_state(**fields)) == (by, outcome)


def test_a_callback_falls_in_the_queue_s_hours_and_the_customer_s_daytime() -> None:
    # Friday 20:30 UTC: the queue opens Monday 09:00 UTC, which is 04:00 in New York; the
    # customer's day starts at 09:00 there (14:00 UTC).
    friday_evening = datetime(2026, 12, 4, 20, 30, tzinfo=UTC)
    state = _state("queued", profile=_profile(timezone="America/New_York"))
    callback = schedule_callback(
        state,
        _queue(hours={"mon-fri": "09:00-17:00"}),
        timedelta(hours=4),
        "closed",
        friday_evening,
    )
    assert callback.slot == datetime(2026, 12, 7, 14, 0, tzinfo=UTC)
    assert state.callback_local == "Mon 07 Dec 09:00 America/New_York"
    assert callback.subject == "Call back C-1 at Mon 07 Dec 09:00 America/New_York"
    assert "Why: closed." in callback.description
    assert core.callback_moved(state, "closed").detail["callback_local"] == state.callback_local


def test_the_end_withdraws_the_open_offer_and_frees_the_agent() -> None:
    state = _queued(_spec(), bot_muted=True, ticket_id="T-9")
    offer = _offered_to(state, "ana")
    core.change_phase(state, "abandoned", "gone", MONDAY_10)
    end = core.ending(state)
    assert end.release_offered is offer and offer.outcome == "withdrawn"
    assert end.close_ticket and end.release_active is None and end.resume_bot is None
    back = _state("returned_to_bot", agent="ana", accepted_at=MONDAY_10, bot_muted=True)
    back.end_reason = "answered"
    end = core.ending(back)
    assert (end.release_active, end.resume_bot, end.close_ticket) == ("ana", "answered", False)
    vendor = _state("resolved", agent="zd-ana", accepted_at=MONDAY_10, routing="vendor")
    assert core.ending(vendor).release_active is None  # the vendor's agent is not ours


def test_a_request_says_what_triggered_it() -> None:
    trigger = Trigger(kind="topic", detail="regulated topic legal", at=MONDAY_10)
    state = _state("requested", trigger=trigger)
    assert core.describe(state, MONDAY_10, None) == "handoff requested (regulated topic legal)"


def test_the_ui_finds_the_conversation_by_its_ticket_once_there_is_one() -> None:
    state = _queued(_spec(), ticket_id="T-9", agent=None)
    found = {update.key.name: update.value for update in core.search_attributes(state)}
    assert found == {
        "OpsKind": "handoff",
        "OpsState": "queued",
        "OpsDefinition": "d@1",
        "OpsCustomerId": "C-1",
        "OpsQueue": "support",
        "OpsCaseId": "T-9",
    }


WORKFLOWS = Path(__file__).resolve().parent.parent / "workflows"
EFFECTS = "handoff_effects"
"""The one handoff module beside the workflow that issues commands (activities, patches)."""


@pytest.mark.parametrize(
    "module",
    sorted(p.stem for p in WORKFLOWS.glob("handoff_*.py") if p.stem != EFFECTS),
)
def test_the_core_never_imports_the_workflow_api(module: str) -> None:
    """The decisions stay testable without Temporal: no `temporalio.workflow` in the model,
    the core or any of its topics (a new topic module is checked without being listed)."""
    source = (WORKFLOWS / f"{module}.py").read_text()
    imported: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            imported |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            imported |= {f"{node.module}.{alias.name}" for alias in node.names}
    assert not {name for name in imported if name.startswith("temporalio.workflow")}


def test_every_effect_is_followed_from_the_workflow() -> None:
    """The fingerprint follows a call into handoff_effects only by a name unique across
    workflows/: an effect it could not follow would drop its commands from the baseline
    without failing. Every effect that issues commands is reached from an entry point."""
    found = fingerprints()
    todo = [
        name
        for name in found
        if name.startswith("handoff.HandoffWorkflow.")
        and not name.rsplit(".", 1)[1].startswith("_")
    ]
    reached: set[str] = set()
    while todo:
        name = todo.pop()
        if name not in reached:
            reached.add(name)
            todo += [token.removeprefix("-> ") for token in found[name] if token.startswith("->")]
    effects = {name for name in found if name.startswith(f"{EFFECTS}.")}
    assert effects, "no effect issues a command: the fingerprint no longer reads handoff_effects"
    assert effects <= reached, sorted(effects - reached)
