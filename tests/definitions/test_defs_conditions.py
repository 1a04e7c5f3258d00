from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Any

import pytest

from definitions.conditions import (
    ESCALATION_MATCH,
    RECOVERY_TRIGGER,
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
