"""The shipped catalog: clean under lint, valid under the JSON Schema, and round-trippable."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import jsonschema
import pytest

from definitions.directory import QUEUES
from definitions.lint import lint
from definitions.loader import LoadedDefinition, load_paths
from definitions.models import PinnedDefinition, json_schema
from store.registry import CATALOG_DIR, TEMPLATES_DIR
from store.seed import QUEUES as SEEDED_QUEUES
from tests.definition_support import pinned_loaded


@pytest.fixture(scope="module")
def catalog() -> list[LoadedDefinition]:
    result = load_paths([CATALOG_DIR])
    assert result.problems == []
    return result.definitions


def test_catalog_has_every_kind_and_the_promised_policies(catalog: list[LoadedDefinition]) -> None:
    names = {d.name: d.kind for d in catalog}
    kinds = {"escalation", "rollout", "recovery", "handoff", "schedule"}
    assert {k for k in names.values()} == kinds
    for name in ("support", "onboarding", "renewal"):
        assert names[name] == "escalation"
    support = next(d for d in catalog if d.name == "support").definition.spec
    assert support.priorities == ["p1", "p2", "p3", "p4"]  # type: ignore[union-attr]


@pytest.mark.parametrize("today", [date(2026, 1, 15), date(2026, 11, 23), date(2027, 3, 1)])
def test_catalog_lints_clean(catalog: list[LoadedDefinition], today: date) -> None:
    assert lint(catalog, templates=TEMPLATES_DIR, today=today) == []


def test_json_schema_validates_every_catalog_document(catalog: list[LoadedDefinition]) -> None:
    schema = json_schema()
    validator = jsonschema.Draft202012Validator(schema)
    validator.check_schema(schema)
    for loaded in catalog:
        errors = list(validator.iter_errors(loaded.source.data))
        assert errors == [], f"{loaded.name}: {errors[0].message if errors else ''}"


def test_json_schema_refuses_unknown_fields(catalog: list[LoadedDefinition]) -> None:
    validator = jsonschema.Draft202012Validator(json_schema())
    document = dict(catalog[0].source.data)
    document["spec"] = {**document["spec"], "levls": []}
    assert not validator.is_valid(document)


def test_pinned_definitions_survive_a_json_round_trip(catalog: list[LoadedDefinition]) -> None:
    for loaded in catalog:
        pinned = pinned_loaded(loaded)
        again = PinnedDefinition.model_validate_json(pinned.model_dump_json())
        assert again == pinned
        assert again.ref == f"{loaded.name}@1"


def test_typed_accessors_and_sla_lookup(catalog: list[LoadedDefinition]) -> None:
    by_name = {d.name: d for d in catalog}
    p2 = PinnedDefinition(
        name="support",
        version=3,
        content_hash="x",
        kind="escalation",
        definition=by_name["support"].definition,
    )
    spec = p2.escalation
    renewal = spec.sla_for("p2", "renewal")
    default = spec.sla_for("p2", "active")
    assert renewal is not None and renewal.resolution == timedelta(hours=6)
    assert default is not None and default.resolution == timedelta(hours=8)
    assert spec.sla_for("p1", "active") is not None and spec.sla_for("p1", "renewal") is not None
    assert spec.calendar_for("p1").timezone == "UTC" and spec.levels_for("p1")[0].after == (
        timedelta(minutes=10)
    )
    assert spec.calendar_for("p3").timezone == "Europe/Berlin"
    assert spec.levels_for("p3") == spec.levels and spec.pause_statuses_for("p1") == ["pending"]
    with pytest.raises(TypeError, match="not rollout"):
        _ = p2.rollout


def test_rollout_change_calendar_closes_blackouts(catalog: list[LoadedDefinition]) -> None:
    rollout = next(d for d in catalog if d.kind == "rollout").definition.spec
    calendar = rollout.change_calendar()  # type: ignore[union-attr]
    in_blackout = datetime(2026, 12, 15, 10, 0, tzinfo=UTC)  # a Tuesday
    assert not calendar.is_open(in_blackout)
    assert calendar.next_open(in_blackout).date() >= date(2027, 1, 6)


def test_directory_queues_match_the_seeded_sandbox() -> None:
    seeded = {queue[0]: tuple(queue[3]) for queue in SEEDED_QUEUES}
    assert {k: set(v) for k, v in QUEUES.items()} == {k: set(v) for k, v in seeded.items()}


def test_content_hash_ignores_layout() -> None:
    from definitions.loader import read_documents

    a, _ = read_documents(b"a: 1\nb: [x, y]\n", "a.yaml")
    b, _ = read_documents(b"# comment\nb:\n  - x\n  - y\na: 1\n", "b.yaml")
    assert a[0].content_hash() == b[0].content_hash()


def test_payloads_of_one_version_share_one_validated_copy(
    catalog: list[LoadedDefinition],
) -> None:
    """Every case of a policy carries it in its input: the worker keeps one copy per version
    (name, version and content hash), not one per case; another hash is another copy."""
    loaded = next(d for d in catalog if d.name == "support")
    pinned = pinned_loaded(loaded)
    payload = pinned.model_dump_json()
    first = PinnedDefinition.model_validate_json(payload)
    assert PinnedDefinition.model_validate_json(payload) is first
    edited = PinnedDefinition.model_validate_json(
        payload.replace(loaded.content_hash, "0" * len(loaded.content_hash))
    )
    assert edited is not first and edited == first.model_copy(
        update={"content_hash": "0" * len(loaded.content_hash)}
    )
    # Built in code (a test, the registry) it is its own object, as any model.
    assert PinnedDefinition.model_validate(pinned.model_dump()) is not first
