"""Proportionate recovery in the shipped catalog (issue 15, item 4), on the pure engine: one
low score after a good history asks a person (a review ticket, no customer message); a low
score corroborated by another contact's low score acts; a second survey about the same ticket
is recorded, not acted on."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from definitions.common import CreateTicketAction, NotifyAction
from tests.definition_support import pinned
from tests.recovery_support import catalog_document, survey
from workflows.recovery_context import Plan
from workflows.recovery_core import RecoveryEngine
from workflows.recovery_model import RecoveryState

AT = datetime(2026, 3, 2, 10, tzinfo=UTC)
CUSTOMER = "C-0040"


def _actions(plans: list[Plan]) -> list[object]:
    return [a for p in plans for a in p.actions]


def _good_history() -> RecoveryEngine:
    engine = RecoveryEngine(RecoveryState(customer_id=CUSTOMER), [pinned(catalog_document())])
    for n in range(20):
        at = AT + timedelta(days=n)
        assert engine.on_event(survey(CUSTOMER, 5, at, event_id=f"good-{n}"), at) == []
        engine.on_time(at)
    return engine


def _low(engine: RecoveryEngine, ticket: str, day: int, n: int) -> list[Plan]:
    at = AT + timedelta(days=day)
    event = survey(CUSTOMER, 1, at, event_id=f"low-{n}")
    event.data["ticket_id"] = ticket
    return engine.on_event(event, at)


def test_one_low_score_after_twenty_good_ones_opens_a_review_task_and_tells_no_customer() -> None:
    engine = _good_history()
    plans = _low(engine, "T-1", 21, 1)
    actions = _actions(plans)
    assert [p.decision.rule for p in plans if p.decision] == ["service-recovery/low-csat-review"]
    assert not any(isinstance(a, NotifyAction) and "customer" in a.to for a in actions)
    [ticket] = [a for a in actions if isinstance(a, CreateTicketAction)]
    assert ticket.subject.startswith("CX review") and ticket.priority == "p3"


def test_a_second_survey_about_the_same_ticket_is_recorded_not_acted_on() -> None:
    engine = _good_history()
    _low(engine, "T-1", 21, 1)
    again = _low(engine, "T-1", 21, 2)
    assert _actions(again) == []
    assert [p.decision.suppressed_by for p in again if p.decision] == ["dedup"]
    assert engine.state.events_seen == 22


def test_a_corroborating_low_score_about_another_contact_acts() -> None:
    engine = _good_history()
    _low(engine, "T-1", 21, 1)
    plans = _low(engine, "T-2", 22, 2)
    fired = [p.decision.rule for p in plans if p.decision and p.decision.outcome == "fired"]
    assert fired == ["service-recovery/low-csat"]
    apology = [a for a in _actions(plans) if isinstance(a, NotifyAction)]
    assert apology and apology[0].template == "apology" and apology[0].to == ["customer"]


def test_a_first_low_score_without_history_still_acts() -> None:
    engine = RecoveryEngine(RecoveryState(customer_id=CUSTOMER), [pinned(catalog_document())])
    plans = _low(engine, "T-9", 0, 1)
    assert [p.decision.rule for p in plans if p.decision] == ["service-recovery/low-csat"]
