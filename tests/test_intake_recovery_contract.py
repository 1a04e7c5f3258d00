"""The recovery catalog, the definitions directory and the intake's routes speak the event
contract (definitions/events.py); rule sets pinned before it keep their meaning."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import yaml

from definitions import directory
from definitions.events import EVENT_TYPES as CONTRACT
from definitions.events import EXAMPLES, EventEnvelope
from intake.router import ENTITY_ROUTES, RECOVERY
from tests.definition_support import pinned
from tests.recovery_support import catalog_document
from workflows.recovery_core import RecoveryEngine
from workflows.recovery_model import RecoveryState

AT = datetime(2026, 11, 23, 10, tzinfo=UTC)


def test_recovery_event_types_are_the_routed_contract_types() -> None:
    routed = {name for name, route in ENTITY_ROUTES.items() if route is RECOVERY}
    assert set(directory.EVENT_TYPES) == routed
    assert set(directory.EVENT_TYPES) <= set(CONTRACT)


def test_the_catalog_triggers_on_contract_types_only() -> None:
    for rule in catalog_document()["spec"]["rules"]:
        event = rule["trigger"].get("event")
        assert event is None or event in CONTRACT, rule["name"]


def _old_catalog() -> dict[str, Any]:
    """The catalog as it was pinned before the contract names (survey.completed etc.)."""
    text = yaml.safe_dump(catalog_document())
    text = text.replace("survey.responded", "survey.completed")
    text = text.replace('event.source + "/" + event.id', "event.survey_id")
    text = text.replace("event.ticket_id", "event.case_id")
    document: dict[str, Any] = yaml.safe_load(text)
    return document


def _survey(score: int) -> EventEnvelope:
    data = {**EXAMPLES["survey.responded"], "score": score}
    return EventEnvelope(
        id="s1", source="crm", type="survey.responded", subject="C-0017", time=AT, data=data
    )


def test_contract_rules_fire_without_aliases() -> None:
    engine = RecoveryEngine(RecoveryState(customer_id="C-0017"), [pinned(catalog_document())])
    [plan] = engine.on_event(_survey(1), AT)
    assert plan.decision is not None
    assert plan.decision.rule == "service-recovery/low-csat"
    # One failure per contact: the key is the ticket the survey is about.
    assert list(engine.state.dedup["service-recovery/low-csat"]) == ["ticket/T-1042"]


def test_rules_pinned_before_the_contract_need_the_legacy_names() -> None:
    old = pinned(_old_catalog())
    strict = RecoveryEngine(RecoveryState(customer_id="C-0017"), [old])
    assert strict.on_event(_survey(1), AT) == []
    legacy = RecoveryEngine(RecoveryState(customer_id="C-0017"), [old], legacy_names=True)
    [plan] = legacy.on_event(_survey(1), AT)
    assert plan.decision is not None and plan.decision.outcome == "fired"
