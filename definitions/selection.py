"""Which escalation policy takes a case: the order policies are tried in, why each one
matched or not, and which policies can never be chosen.

Policies are tried by `spec.order` (lowest first), then by name; the first that covers the
case's priority and whose `match` holds takes it. A policy after one that matches every case
of its priorities can never be chosen: `shadowed` finds those, for lint and deploy.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from celpy import celtypes

from definitions.conditions import Activation, ConditionError, evaluate, evaluate_value
from definitions.models import EscalationSpec


@dataclass(frozen=True)
class NamedPolicy:
    name: str
    spec: EscalationSpec


def in_selection_order(policies: Sequence[NamedPolicy]) -> list[NamedPolicy]:
    return sorted(policies, key=lambda p: (p.spec.order, p.name))


def split_clauses(expression: str) -> list[str]:
    """The top-level operands of a CEL expression joined by one operator, all `&&` or all
    `||` (outside brackets and strings), each as written; the whole expression when it has
    none or mixes both (`a && b || c`: its clauses alone would misstate how they combine)."""
    clauses: list[str] = []
    operators: set[str] = set()
    depth, start, quote, index = 0, 0, "", 0
    while index < len(expression):
        char = expression[index]
        if quote:
            if char == "\\":
                index += 1
            elif char == quote:
                quote = ""
        elif char in "\"'":
            quote = char
        elif char in "([{":
            depth += 1
        elif char in ")]}":
            depth -= 1
        elif depth == 0 and expression.startswith(("&&", "||"), index):
            operators.add(expression[index : index + 2])
            clauses.append(expression[start:index].strip())
            start = index + 2
            index += 1
        index += 1
    clauses.append(expression[start:].strip())
    if len(clauses) == 1 or len(operators) > 1:
        return [expression.strip()]
    return [clause for clause in clauses if clause]


@dataclass(frozen=True)
class ClauseResult:
    clause: str
    value: str
    """`true`, `false`, another CEL value, or `error: …`."""


def explain_match(expression: str, activation: Mapping[str, Any]) -> list[ClauseResult]:
    """Each clause of `expression` with what it gave for `activation`."""
    results: list[ClauseResult] = []
    values = Activation(activation)  # converted once for every clause
    for clause in split_clauses(expression):
        try:
            value = evaluate_value(clause, values)
        except ConditionError as exc:
            results.append(ClauseResult(clause, f"error: {exc}"))
            continue
        is_bool = isinstance(value, bool | celtypes.BoolType)
        results.append(ClauseResult(clause, str(bool(value)).lower() if is_bool else repr(value)))
    return results


def matches_every_case(spec: EscalationSpec) -> bool:
    """Whether `match` holds whatever the ticket and customer: it reads neither (evaluating
    it without them succeeds) and is true."""
    try:
        return evaluate(spec.match, {})
    except ConditionError:
        return False


def shadowed(policies: Sequence[NamedPolicy]) -> dict[str, str]:
    """Policy name -> why it can never be chosen: for each of its priorities, a policy
    tried before it matches every case."""
    found: dict[str, str] = {}
    ordered = in_selection_order(policies)
    for position, policy in enumerate(ordered):
        takers: dict[str, str] = {}
        for earlier in ordered[:position]:
            if matches_every_case(earlier.spec):
                for priority in earlier.spec.priorities:
                    takers.setdefault(priority, earlier.name)
        if all(priority in takers for priority in policy.spec.priorities):
            names = sorted({takers[p] for p in policy.spec.priorities})
            first = min(p.spec.order for p in ordered if p.name in names)
            found[policy.name] = (
                f"can never be chosen: {', '.join(names)} (tried first, order {first}) takes "
                f"every case of its priorities; give this policy a spec.order below {first} "
                "or narrow their match"
            )
    return found
