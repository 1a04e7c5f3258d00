"""The shapes lint checks conditions and templates against are the runtime's own.

definitions/ cannot import the code that builds what a condition or a template sees (it is
the bottom layer), so lint keeps those shapes as data (definitions/lint.py). Each test here
builds the real context with the runtime's own function or model and compares its fields,
so a field added to, renamed in or dropped from the runtime fails here until lint agrees.
"""

from __future__ import annotations

import ast
import typing
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel, WithJsonSchema
from temporalio import workflow

import definitions.common
import definitions.models
from activities.adapters.sandbox import _CONDITION_COLUMNS
from activities.customer_contracts import CustomerProfile
from client.cases import match_context
from definitions.directory import TEMPLATE_VARIABLES
from definitions.events import EVENT_TYPES as CONTRACT
from definitions.events import EventEnvelope
from definitions.lint import (
    CALLBACK,
    CONDITION_PLACES,
    CUSTOMER,
    FOLLOW_UP_EVENT,
    HISTORY,
    ROUTE_CONVERSATION,
    TEMPLATE_CONTEXTS,
    TICKET,
    Shape,
    _event_offer,
)
from definitions.loader import load_paths
from definitions.models import PinnedDefinition, Trigger
from store.registry import CATALOG_DIR
from tests.definition_support import pinned_loaded
from workflows import rollout_effects
from workflows.escalation import EscalationWorkflow
from workflows.escalation_model import CaseInfo, LevelVisit
from workflows.escalation_pinned import EscalationInput as OpenCase
from workflows.handoff import HandoffWorkflow
from workflows.handoff_hours import callback_context
from workflows.handoff_model import HandoffInput, HandoffStatus
from workflows.handoff_packet import conversation_context, customer_context
from workflows.recovery_context import event_context
from workflows.recovery_core import RecoveryEngine
from workflows.recovery_model import Episode, RecoveryState

NOW = datetime(2026, 6, 1, 9, 30, tzinfo=UTC)
PROFILE = CustomerProfile(
    id="C-0001",
    name="Ada",
    tier="gold",
    segment="smb",
    lifetime_value=Decimal("1200.50"),
    language="de",
    timezone="Europe/Berlin",
    country="DE",
    account_manager="am-1",
    journey_stage="active",
)
CASE = CaseInfo(
    ticket_id="T-1", customer_id="C-0001", priority="p2", channel="email", opened_at=NOW
)


def _catalog(kind: str, name: str) -> PinnedDefinition:
    [loaded] = load_paths([CATALOG_DIR / kind / f"{name}.yaml"]).definitions
    return pinned_loaded(loaded)


def fields_of(shape: Shape | None) -> set[str]:
    assert shape is not None
    return set(shape)


def same_shape(value: Mapping[str, Any], shape: Shape) -> None:
    """`value` has exactly the fields of `shape`, nested mappings the nested fields."""
    assert set(value) == set(shape)
    for name, inner in shape.items():
        if inner is not None:
            assert isinstance(value[name], Mapping), name
            same_shape(value[name], inner)


# --- conditions ----------------------------------------------------------------------------


def test_customer_is_the_crm_profile_everywhere() -> None:
    assert set(CUSTOMER) == set(CustomerProfile.model_fields)
    # what a rollout cohort's `when` reads: the sandbox CRM's condition columns
    assert set(CUSTOMER) == {column.key for column in _CONDITION_COLUMNS}
    # an escalation's match and a handoff route
    assert set(match_context(CASE, PROFILE)["customer"]) == set(CUSTOMER)
    assert set(customer_context(PROFILE, "C-0001")) == set(CUSTOMER)
    # a customer the CRM does not know has fewer fields, never others
    assert set(match_context(CASE, None)["customer"]) <= set(CUSTOMER)
    assert set(customer_context(None, "C-0404")) <= set(CUSTOMER)


def test_ticket_is_what_an_escalation_match_sees() -> None:
    assert set(match_context(CASE, PROFILE)["ticket"]) == set(TICKET)


def test_history_is_what_a_recovery_trigger_sees() -> None:
    engine = RecoveryEngine(
        RecoveryState(customer_id="C-0001"), [_catalog("recovery", "service-recovery")]
    )
    assert set(engine.history_context(NOW)) == set(HISTORY)


def test_route_conversation_is_what_a_route_sees() -> None:
    status = HandoffStatus(conversation_id="conv-1", customer_id="C-0001", definition="x@1")
    assert set(conversation_context(status)) == set(ROUTE_CONVERSATION)


def _cel_variables(annotation: Any) -> tuple[str, ...] | None:
    """The variables of a condition type (`condition(...)` documents them in its schema)."""
    prefix = "A CEL expression over "
    for meta in getattr(annotation, "__metadata__", ()):
        if isinstance(meta, WithJsonSchema) and isinstance(meta.json_schema, dict):
            description = str(meta.json_schema.get("description", ""))
            if description.startswith(prefix):
                return tuple(description[len(prefix) : -1].split(", "))
    for argument in typing.get_args(annotation):
        found = _cel_variables(argument)
        if found is not None:
            return found
    return None


def _condition_fields() -> dict[tuple[type[BaseModel], str], tuple[str, ...]]:
    found: dict[tuple[type[BaseModel], str], tuple[str, ...]] = {}
    for module in (definitions.models, definitions.common):
        for model in vars(module).values():
            if not (isinstance(model, type) and issubclass(model, BaseModel)):
                continue
            for name, info in model.model_fields.items():
                for candidate in (info.annotation, *info.metadata):
                    variables = _cel_variables(
                        typing.Annotated[str, candidate]
                        if isinstance(candidate, WithJsonSchema)
                        else candidate
                    )
                    if variables is not None:
                        found[(model, info.alias or name)] = variables
    return found


def test_every_condition_field_is_checked_with_its_variables() -> None:
    places = {(owner, name): tuple(shapes) for owner, name, shapes in CONDITION_PLACES}
    declared = _condition_fields()
    assert set(places) == set(declared)
    for key, variables in declared.items():
        assert sorted(places[key]) == sorted(variables), key


# --- templates -----------------------------------------------------------------------------


def test_template_contexts_offer_the_kinds_variables() -> None:
    for kind, variables in TEMPLATE_VARIABLES.items():
        assert set(TEMPLATE_CONTEXTS[kind]) == set(variables)


def test_escalation_template_context(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(workflow, "now", lambda: NOW + timedelta(minutes=20))
    run = EscalationWorkflow(OpenCase(case=CASE, policy=_catalog("escalation", "support")))
    run.status.customer = PROFILE
    run.status.visits.append(LevelVisit(level=1, cycle=0, name="lead", started_at=NOW))
    context = run._template_context(None, 50)
    same_shape(context, TEMPLATE_CONTEXTS["escalation"])


def test_handoff_template_context() -> None:
    run = HandoffWorkflow()
    run._input = HandoffInput(definition=_catalog("handoff", "chat-handoff"))
    run._status = HandoffStatus(
        conversation_id="conv-1",
        customer_id="C-0001",
        definition="chat-handoff@1",
        profile=PROFILE,
        callback_at=NOW,
        queue="support",
        agent="agent-7",
        estimated_wait_seconds=300,
    )
    same_shape(run._target().template_context, TEMPLATE_CONTEXTS["handoff"])
    assert set(callback_context(NOW, "Europe/Berlin")) == set(CALLBACK)


def test_rollout_template_context() -> None:
    """The rollback hands each customer's messages `change` and `phase` (written out in
    the workflow) and the customer's profile (activities/rollback_notify.py)."""
    source = Path(rollout_effects.__file__).read_text(encoding="utf-8")
    contexts = [
        keyword.value
        for node in ast.walk(ast.parse(source))
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Name)
        and node.func.id == "NotifyPhaseCustomers"
        for keyword in node.keywords
        if keyword.arg == "context"
    ]
    assert len(contexts) == 1 and isinstance(contexts[0], ast.Dict)

    def keys(node: ast.expr) -> dict[str, Any]:
        assert isinstance(node, ast.Dict)
        return {
            ast.literal_eval(k): keys(v) if isinstance(v, ast.Dict) else None
            for k, v in zip(node.keys, node.values, strict=True)
            if k is not None
        }

    written = keys(contexts[0])
    expected = dict(TEMPLATE_CONTEXTS["rollout"])
    assert expected.pop("customer") == CUSTOMER
    assert written == {name: dict(shape or {}) for name, shape in expected.items()}


def test_recovery_template_context() -> None:
    engine = RecoveryEngine(
        RecoveryState(customer_id="C-0001", customer={"id": "C-0001"}),
        [_catalog("recovery", "service-recovery")],
    )
    episode = Episode(
        id=3, opened_at=NOW, opened_by="service-recovery/r", ref="x@1", severity=3, expires_at=NOW
    )
    context = engine.template_context({"type": "follow_up"}, episode)
    shape = {**TEMPLATE_CONTEXTS["recovery"], "customer": None, "event": FOLLOW_UP_EVENT}
    same_shape(context, shape)


@pytest.mark.parametrize("event_type", sorted(CONTRACT))
def test_recovery_event_is_the_contract_and_the_envelope(event_type: str) -> None:
    offer = _event_offer(Trigger(event=event_type))
    assert offer is not None
    data = {
        name: None for name, info in CONTRACT[event_type].model_fields.items() if info.is_required()
    }
    envelope = EventEnvelope(
        id="e-1", source="test", type=event_type, subject="C-0001", time=NOW, data=data
    )
    context = event_context(envelope)
    # every field a rule's event may carry (the required ones always do)
    assert set(context) <= set(offer[1])
    model_fields = {info.alias or name for name, info in CONTRACT[event_type].model_fields.items()}
    assert set(offer[1]) == model_fields | {"id", "source", "type", "time"}
