"""The recovery decision core on its own (no Temporal): what an event or a due moment does,
what a person's command is refused with and what it does, and what people are shown.

Every test drives `RecoveryEngine` with the shipped catalog rule set and explicit times, as
the workflow does with `workflow.now()`."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest

from activities.customer_contracts import CustomerProfile
from definitions.common import CreditAction, NotifyAction, ScheduleCallbackAction
from tests.definition_support import pinned
from tests.recovery_support import catalog_document, event, survey, variant
from workflows.recovery_context import Plan
from workflows.recovery_core import RecoveryEngine
from workflows.recovery_model import (
    MEMORY_STEP,
    Approve,
    RecoveryRules,
    RecoveryState,
    Reject,
    RulesDigest,
    SilenceCommand,
    Unsilence,
    offered_rules,
    rules_digest,
)

# A Monday in March: Berlin (the catalog's calendar) is UTC+1.
AT = datetime(2026, 3, 2, 10, tzinfo=UTC)
CUSTOMER = "C-0040"
LOW_CSAT = "service-recovery/low-csat"
REQUESTER = "customer-experience"  # the catalog's owner asks for its credits


def _engine(document: dict[str, Any] | None = None) -> RecoveryEngine:
    rules = [pinned(document or catalog_document())]
    return RecoveryEngine(RecoveryState(customer_id=CUSTOMER), rules)


def _low(engine: RecoveryEngine, ticket: str, at: datetime) -> list[Plan]:
    return engine.on_event(survey(CUSTOMER, 1, at, ticket=ticket), at)


def _steps(plans: list[Plan]) -> list[str]:
    return [p.step for p in plans]


def _awaiting_credit() -> RecoveryEngine:
    """Three low scores about three tickets: apology, then a callback, then a credit of
    80 EUR above the gate's 50, which waits for cx-leads."""
    engine = _engine()
    _low(engine, "T-1", AT)
    _low(engine, "T-2", AT + timedelta(minutes=1))
    _low(engine, "T-3", AT + timedelta(minutes=2))
    assert engine.state.waiting_approvals()
    return engine


# --- events ----------------------------------------------------------------------------------


def test_a_low_score_opens_an_episode_with_an_apology_and_a_ticket() -> None:
    engine = _engine()
    [plan] = _low(engine, "T-1", AT)
    assert plan.decision is not None and plan.decision.rule == LOW_CSAT
    assert plan.decision.outcome == "fired" and plan.step == "d1-fired"
    assert [a.type for a in plan.actions] == ["notify", "create_ticket"]
    episode = engine.state.open_episode()
    assert episode is not None and episode.contact == "T-1"
    assert episode.follow_up_at == AT + timedelta(days=3)
    assert plan.ticket_id == "T-1" and plan.context["episode"] == {"id": 1}


def test_the_same_event_twice_decides_once() -> None:
    engine = _engine()
    envelope = survey(CUSTOMER, 1, AT, ticket="T-1", event_id="s-1")
    assert engine.on_event(envelope, AT)
    assert engine.on_event(envelope, AT + timedelta(minutes=5)) == []
    assert engine.state.events_seen == 1


def test_repeated_failures_in_one_episode_climb_the_ladder_to_a_gated_credit() -> None:
    engine = _engine()
    _low(engine, "T-1", AT)
    [callback] = _low(engine, "T-2", AT + timedelta(minutes=1))
    assert callback.decision is not None and callback.decision.outcome == "laddered"
    assert [type(a) for a in callback.actions] == [ScheduleCallbackAction]
    decision, request = _low(engine, "T-3", AT + timedelta(minutes=2))
    assert decision.actions == [] and decision.decision is not None
    assert decision.decision.gated == ["credit 80 EUR"]
    assert request.step == "approval-1-requested" and request.notice == "request"
    assert request.approval is not None and request.approval.group == "cx-leads"
    assert request.approval.deadline == AT + timedelta(minutes=2, hours=4)


def test_a_silenced_rule_is_suppressed_with_who_silenced_it() -> None:
    engine = _engine()
    command = SilenceCommand(by="lead", rule="low-csat", duration=timedelta(days=1))
    engine.add_silence(engine.silence_of(command, AT))
    [plan] = _low(engine, "T-1", AT + timedelta(hours=1))
    assert plan.decision is not None and plan.decision.suppressed_by == "silence"
    assert plan.actions == [] and "silenced by lead" in (plan.decision.reason or "")
    assert engine.state.tally[LOW_CSAT] == {"silence": 1}


# --- due moments -----------------------------------------------------------------------------


def test_the_follow_up_survey_is_sent_when_due() -> None:
    engine = _engine()
    _low(engine, "T-1", AT)
    assert engine.on_time(AT + timedelta(days=2)) == []
    [plan] = engine.on_time(AT + timedelta(days=3))
    assert plan.kind == "follow_up" and plan.step == "episode-1-follow-up"
    [survey_action] = plan.actions
    assert isinstance(survey_action, NotifyAction)
    assert survey_action.template == "recovery-survey" and survey_action.to == ["customer"]


def test_a_good_follow_up_answer_closes_the_episode_as_recovered() -> None:
    engine = _engine()
    _low(engine, "T-1", AT)
    engine.on_time(AT + timedelta(days=3))
    answered = AT + timedelta(days=4)
    plans = engine.on_event(survey(CUSTOMER, 5, answered, ticket="T-1"), answered)
    assert _steps(plans) == ["episode-1-recovered"]
    assert engine.state.open_episode() is None


def test_a_survey_about_another_ticket_does_not_answer_the_follow_up() -> None:
    engine = _engine()
    _low(engine, "T-1", AT)
    engine.on_time(AT + timedelta(days=3))
    answered = AT + timedelta(days=4)
    assert engine.on_event(survey(CUSTOMER, 5, answered, ticket="T-9"), answered) == []
    assert engine.state.open_episode() is not None


def test_a_low_follow_up_answer_hands_the_episode_to_a_person() -> None:
    engine = _engine()
    _low(engine, "T-1", AT)
    engine.on_time(AT + timedelta(days=3))
    answered = AT + timedelta(days=4)
    envelope = survey(CUSTOMER, 2, answered, ticket="T-1", comment="still broken")
    handover = next(p for p in engine.on_event(envelope, answered) if p.kind == "handover")
    assert handover.step == "episode-1-handed-over" and handover.handover is not None
    assert handover.handover.queue == "cx-review"
    assert "The customer wrote: still broken" in handover.handover.description
    request = engine.handover_ticket(handover.handover, handover.step, "customer-C-0040")
    assert request.idempotency_key == "customer-C-0040/episode-1-handed-over"
    assert request.queue == "cx-review" and "not-recovered" in request.tags
    engine.note_handover_ticket(1, "TK-77")
    # A person has it now: it does not expire, and the UI says who has it.
    assert engine.next_wake() is None
    assert engine.ops_state(answered, acting=False) == "with_person"
    assert "with cx-review (ticket TK-77) until a person closes it" in engine.details(answered)


def test_an_unanswered_approval_is_reminded_then_escalated_then_skipped() -> None:
    engine = _awaiting_credit()
    asked = AT + timedelta(minutes=2)
    [reminder] = engine.on_time(asked + timedelta(hours=3))
    assert reminder.step == "approval-1-reminder-0" and reminder.notice == "reminder"
    [escalated] = engine.on_time(asked + timedelta(hours=4))
    assert escalated.step == "approval-1-escalated" and escalated.notice == "request"
    assert escalated.detail == {"approval": 1, "escalated_to": "cx-managers"}
    [reminder] = engine.on_time(asked + timedelta(hours=7))
    assert reminder.step == "approval-1-reminder-1"
    [skipped] = engine.on_time(asked + timedelta(hours=8))
    assert skipped.step == "approval-1-skipped" and skipped.actions == []


def test_a_stalled_stage_fires_after_business_days() -> None:
    engine = _engine()
    moved = {"customer_id": CUSTOMER, "to_stage": "onboarding"}
    engine.on_event(event("journey.stage_changed", moved, AT), AT)
    due = engine.next_wake()
    # Five business days from Monday 11:00 Berlin: the next Monday, same time.
    assert due == AT + timedelta(days=7)
    [plan] = engine.on_time(due)
    assert plan.decision is not None and plan.decision.rule == "service-recovery/onboarding-stalled"
    assert plan.decision.event_type == "journey.stalled"


# --- people's commands -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("command", "refusal"),
    [
        (Approve(by=REQUESTER), f"{REQUESTER} requested this credit and cannot approve it"),
        (Approve(by="lead", approval_id=7), f"no approval 7 is waiting for customer {CUSTOMER}"),
        (
            Approve(by="lead", amount=Decimal("100")),
            "cannot approve more than the 80 EUR requested",
        ),
    ],
)
def test_an_approval_is_refused_with_the_reason(command: Approve, refusal: str) -> None:
    assert _awaiting_credit().approve_refusal(command) == refusal


def test_nothing_to_approve_or_reject_without_a_waiting_approval() -> None:
    engine = _engine()
    no_approval = f"no approval is waiting for customer {CUSTOMER}"
    assert engine.approve_refusal(Approve(by="lead")) == no_approval
    assert engine.reject_refusal(Reject(by="lead")) == no_approval


def test_approving_a_smaller_amount_applies_that_credit() -> None:
    engine = _awaiting_credit()
    command = Approve(by="lead", amount=Decimal("60"))
    assert engine.approve_refusal(command) is None
    [credit] = engine.approve(command, AT + timedelta(hours=1))
    assert credit.kind == "credit" and credit.detail["status"] == "approved_reduced"
    [action] = credit.actions
    assert isinstance(action, CreditAction) and action.amount == Decimal("60")
    assert engine.state.waiting_approvals() == []


def test_two_approvers_are_needed_when_the_gate_asks_for_two() -> None:
    document = variant(
        rule__low_csat={
            "approval": {
                "approvers": "cx-leads",
                "required": 2,
                "timeout": "4h",
                "on_timeout": "skip",
            }
        }
    )
    engine = _engine(document)
    for minute, ticket in enumerate(["T-1", "T-2", "T-3"]):
        _low(engine, ticket, AT + timedelta(minutes=minute))
    [counted] = engine.approve(Approve(by="ana"), AT + timedelta(hours=1))
    assert counted.step == "approval-1-approved-1" and counted.actions == []
    refusal = engine.approve_refusal(Approve(by="ana"))
    assert refusal == "ana has already approved; it needs 2 different approvers"
    [credit] = engine.approve(Approve(by="ben"), AT + timedelta(hours=2))
    assert credit.kind == "credit" and credit.detail["status"] == "approved"


def test_a_rejected_credit_is_recorded_and_not_paid() -> None:
    engine = _awaiting_credit()
    [plan] = engine.reject(Reject(by="lead", reason="goodwill spent"), AT + timedelta(hours=1))
    assert plan.step == "approval-1-rejected" and plan.actions == []
    [approval] = engine.state.approvals
    assert approval.status == "rejected" and approval.note == "goodwill spent"


@pytest.mark.parametrize(
    ("command", "refusal"),
    [
        (SilenceCommand(by="lead"), "give exactly one of until or duration"),
        (
            SilenceCommand(by="lead", until=AT - timedelta(hours=1)),
            f"until {(AT - timedelta(hours=1)).isoformat()} is not in the future",
        ),
        (
            SilenceCommand(by="lead", until=datetime(2026, 3, 3, 10)),
            "until needs a timezone",
        ),
        (
            SilenceCommand(by="lead", duration=timedelta(days=366)),
            "a silence lasts at most 365 days",
        ),
    ],
)
def test_a_silence_is_refused_with_the_reason(command: SilenceCommand, refusal: str) -> None:
    assert _engine().silence_refusal(command, AT) == refusal


def test_a_silence_names_its_rule_as_people_write_it() -> None:
    engine = _engine()
    command = SilenceCommand(by="lead", rule="nope", duration=timedelta(hours=1))
    refusal = engine.silence_refusal(command, AT)
    assert refusal is not None and refusal.startswith("unknown rule 'nope'; the rules are ")
    assert LOW_CSAT in refusal
    short = SilenceCommand(by="lead", rule="low-csat", duration=timedelta(hours=2), reason="x")
    assert engine.silence_refusal(short, AT) is None
    silence = engine.silence_of(short, AT)
    assert silence.rule == LOW_CSAT and silence.until == AT + timedelta(hours=2)
    record = engine.add_silence(silence)
    assert record.step == "silence-0-1" and record.detail["rule"] == LOW_CSAT


def test_unsilencing_what_is_not_silenced_is_refused() -> None:
    engine = _engine()
    assert engine.unsilence_refusal(Unsilence(by="lead"), AT) == "the customer is not silenced"
    refusal = engine.unsilence_refusal(Unsilence(by="lead", rule="low-csat"), AT)
    assert refusal == "rule low-csat is not silenced"
    engine.add_silence(engine.silence_of(SilenceCommand(by="lead", duration=timedelta(1)), AT))
    assert engine.ops_state(AT, acting=False) == "silenced"
    assert engine.unsilence_refusal(Unsilence(by="lead"), AT) is None
    record = engine.lift_silence(Unsilence(by="lead"))
    assert record.step == "unsilence-0-customer" and engine.state.silences == []


def test_closing_needs_an_open_episode() -> None:
    engine = _engine()
    assert engine.close_refusal() == f"customer {CUSTOMER} has no open episode"
    _low(engine, "T-1", AT)
    assert engine.close_refusal() is None
    [plan] = engine.close_episode(AT + timedelta(days=1), "recovered", "lead")
    assert plan.step == "episode-1-recovered" and plan.detail["by"] == "lead"


# --- what people see -------------------------------------------------------------------------


def test_the_ui_line_says_what_the_run_waits_for_in_the_calendars_time() -> None:
    engine = _awaiting_credit()
    now = AT + timedelta(minutes=3)
    assert engine.ops_state(now, acting=False) == "awaiting_approval"
    assert engine.ops_state(now, acting=True) == "acting"
    assert engine.details(now) == (
        "awaiting approval of a 80 EUR credit by cx-leads until Mon 02 Mar 15:02 "
        "Europe/Berlin; episode 1 since today, follow-up survey at Thu 05 Mar 11:00 "
        "Europe/Berlin"
    )
    status = engine.status(now, acting=False)
    assert status.next_wake == AT + timedelta(minutes=2, hours=3)  # the reminder
    assert status.state is engine.state


def test_a_quiet_customer_shows_what_is_watched() -> None:
    engine = _engine()
    assert engine.details(AT) == "watching 6 rules"
    assert engine.ops_state(AT, acting=False) == "watching"
    assert engine.definitions_shown() == "service-recovery@1"


def test_the_approvers_are_told_how_to_answer() -> None:
    engine = _awaiting_credit()
    [approval] = engine.state.waiting_approvals()
    context = {"customer": {"id": CUSTOMER}}
    [message] = engine.approver_messages(approval, "request", "d3-credit-1", context, "wf")
    assert message.channel == "chat" and message.recipient == "team:cx-leads"
    assert message.idempotency_key == "wf/d3-credit-1/notice/0"
    action = message.context["action"]
    assert action["command"] == f"opsflow recovery approve {CUSTOMER} --approval 1 --by <you>"
    assert action["deadline"] == "Mon 02 Mar 15:02 Europe/Berlin"
    assert message.context["customer"] == {"id": CUSTOMER}


# --- the run's own moments -------------------------------------------------------------------


def test_rule_sets_switch_only_when_they_differ() -> None:
    engine = _engine()
    same = [pinned(catalog_document())]
    assert engine.switch_rules(same) is None
    assert engine.digest() == rules_digest(same)
    newer = [pinned(variant(episode_timeout="10d"), version=2)]
    record = engine.switch_rules(newer)
    assert record is not None and record.step == "rules-1"
    assert record.detail == {"from": ["service-recovery@1"], "to": ["service-recovery@2"]}
    # Asked for while version 1 was in use: still a switch, though version 2 arrived meanwhile.
    assert engine.switch_rules(newer, rules_digest(same)) is not None


def test_the_crm_profile_is_read_again_after_a_day() -> None:
    engine = _engine()
    assert not engine.profile_fresh(AT)
    engine.set_profile(None, AT)
    assert engine.state.customer == {"id": CUSTOMER} and engine.profile_fresh(AT)
    profile = CustomerProfile(
        id=CUSTOMER,
        name="Ada",
        tier="vip",
        segment="smb",
        language="de",
        timezone="Europe/Berlin",
        lifetime_value=Decimal("12.5"),
    )
    engine.set_profile(profile, AT + timedelta(hours=1))
    assert engine.state.customer is not None
    assert engine.state.customer["lifetime_value"] == 12.5
    assert engine.profile_fresh(AT + timedelta(hours=24))
    assert not engine.profile_fresh(AT + timedelta(hours=25))


def test_a_new_run_continues_from_what_the_last_one_left() -> None:
    before = _engine()
    _low(before, "T-1", AT)
    before.set_profile(None, AT)
    record = before.memory("run-1", 1)
    assert record.step == f"{MEMORY_STEP}run-1-1" and record.detail["events_seen"] == 1
    assert "customer" not in record.detail["state"]
    after = _engine()
    after.recall(RecoveryState.model_validate(record.detail["state"]))
    assert after.state.events_seen == 1 and after.state.open_episode() is not None
    assert after.state.customer_id == CUSTOMER
    carried = after.continued(500)
    assert carried.carried is after.state and carried.max_history_events == 500


def test_an_event_signal_offers_a_digest_or_the_rule_sets_or_nothing() -> None:
    rules = [pinned(catalog_document())]
    digest = {"digest": rules_digest(rules)}
    assert offered_rules(digest) == RulesDigest(**digest)
    full = RecoveryRules(rules=rules)
    assert offered_rules(full.model_dump(mode="json")) == full
    assert offered_rules(None) is None
