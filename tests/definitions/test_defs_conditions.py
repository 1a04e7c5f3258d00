from __future__ import annotations

import contextlib
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from definitions import conditions
from definitions.conditions import (
    ESCALATION_MATCH,
    RECOVERY_TRIGGER,
    Activation,
    ConditionError,
    check_condition,
    evaluate,
    evaluate_value,
)

CORPUS = (
    Path(__file__).resolve().parents[3] / "shared" / "fixtures" / "hostile" / "cel-hostile.json"
)


def test_known_variables_and_macro_bindings_compile() -> None:
    expression = 'ticket.tags.exists(t, t == "vip") && customer.tier in ["gold", "vip"]'
    assert check_condition(expression, ESCALATION_MATCH) == expression


def test_unknown_variable_names_its_column() -> None:
    with pytest.raises(ConditionError) as caught:
        check_condition('ticket.priority == "p1" && custmer.tier == "vip"', ESCALATION_MATCH)
    assert caught.value.column == 28
    assert "unknown variable 'custmer'" in str(caught.value)
    assert "customer, ticket" in str(caught.value)


def test_syntax_error_names_its_column() -> None:
    with pytest.raises(ConditionError) as caught:
        check_condition("event.score <= ", RECOVERY_TRIGGER)
    assert caught.value.column is not None
    assert str(caught.value).startswith("syntax error")


@pytest.mark.parametrize(
    ("expression", "message"),
    [
        ("", "empty"),
        ("x" * 1_001, "over 1000 characters"),
        ("(" * 13 + "1" + ")" * 13, "brackets nest 13 deep"),
        (" + ".join(["1"] * 120), "too complex"),
        ("a.map(x, x.map(y, y.map(z, z)))", "nest more than 2 deep"),
    ],
)
def test_cost_bounds_are_refused_at_load(expression: str, message: str) -> None:
    with pytest.raises(ConditionError, match=message):
        check_condition(expression, ["a"])


def test_evaluate_with_plain_data() -> None:
    activation = {
        "event": {"type": "survey.responded", "score": 2},
        "customer": {"tier": "gold", "lifetime_value": 12_000.5},
        "history": {"contacts": [1, 2, 3]},
    }
    assert evaluate("event.score <= 2 && size(history.contacts) >= 3", activation) is True
    assert evaluate('customer.tier == "vip"', activation) is False
    assert evaluate("customer.lifetime_value > 10000.0", activation) is True


def test_an_activation_shared_by_conditions_answers_as_plain_data_does() -> None:
    plain = {
        "event": {"type": "survey.responded", "score": 2, "at": datetime(2026, 6, 1, tzinfo=UTC)},
        "customer": {"tier": "gold", "tags": ["vip"]},
    }
    shared = Activation(plain)
    for expression in (
        "event.score <= 2",
        'customer.tier == "vip"',
        '"vip" in customer.tags && event.at < timestamp("2026-06-02T00:00:00Z")',
        "has(event.ticket_id) && event.ticket_id != null ? event.score > 1 : event.score < 3",
    ):
        assert evaluate(expression, shared) == evaluate(expression, plain), expression
    # Data a condition cannot be given fails every condition, whether it reads it or not
    # (as when every variable was converted for each): a recorded decision replays alike.
    for bad in ({"id": object()}, {"score": 2**63}, {"wait": timedelta(days=10**8)}):
        unreadable = Activation({"event": bad, "customer": {"tier": "gold"}})
        for expression in ("event.id == 1", 'customer.tier == "gold"', "true"):
            with pytest.raises(ConditionError):
                evaluate(expression, unreadable)
            with pytest.raises(ConditionError):
                evaluate(expression, {"event": bad, "customer": {"tier": "gold"}})
    # A condition reading no variable, or one through a leading dot, or one a macro binds.
    assert evaluate("true", shared) is True
    assert evaluate(".event.score == 2", shared) is True
    assert evaluate("[1, 2].exists(x, x == event.score)", shared) is True


def test_evaluate_failures_are_condition_errors() -> None:
    with pytest.raises(ConditionError, match="cannot evaluate"):
        evaluate("event.score <= 2", {"event": {}})
    with pytest.raises(ConditionError, match="not true or false"):
        evaluate("1 + 2", {})


def _corpus() -> list[dict[str, Any]]:
    entries: list[dict[str, Any]] = json.loads(CORPUS.read_text(encoding="utf-8"))["expressions"]
    return entries


@pytest.mark.timeout(120)  # a hang guard: a resource bomb that got through would never end
@pytest.mark.skipif(not CORPUS.exists(), reason="hostile corpus not present")
def test_hostile_cel_corpus_is_refused_or_bounded() -> None:
    refused = 0
    for entry in _corpus():
        expression = entry.get("expr")
        if expression is None:
            expression = eval(entry["generator"], {"__builtins__": {}}, {})
        names = list((entry.get("bindings") or {}).keys())
        try:
            check_condition(expression, names)
            if not names:
                with contextlib.suppress(ConditionError):
                    evaluate_value(expression, {})
        except ConditionError:
            refused += 1
    assert refused > 50  # the parse errors and every resource bomb


PARSED_ALIKE = [
    'ticket.priority == "p1" && customer.tier in ["gold", "platinum"]',
    "event.score <= 2 || (has(event.comment) && size(event.comment) > 0)",
    "history.filter(h, h.type == 'contact.received').size() >= 3",
    "true != false && customer.lifetime_value > 1000.5",
]


def test_the_cached_parser_reads_expressions_as_cel_python_s_own(tmp_path: Path) -> None:
    """The parser built with lark's cache (definitions/conditions.py) and cel-python's own
    give the same trees, when the cache file is written and when it is read back."""
    from celpy.celparser import CELParser

    kept = CELParser.CEL_PARSER
    try:
        CELParser.CEL_PARSER = None
        own = [CELParser().parse(text) for text in PARSED_ALIKE]
        for _ in ("written", "read back"):
            CELParser.CEL_PARSER = None
            with pytest.MonkeyPatch.context() as patch:
                patch.setenv("XDG_CACHE_HOME", str(tmp_path))
                conditions._load_cached_parser()
            assert [CELParser().parse(text) for text in PARSED_ALIKE] == own
            assert conditions_cache_files(tmp_path)
    finally:
        CELParser.CEL_PARSER = kept


def conditions_cache_files(folder: Path) -> list[Path]:
    return list((folder / "opsflow").glob("cel-parser-*.lark"))
