"""How `defs explain` splits a match into the clauses it shows."""

from __future__ import annotations

from definitions.selection import split_clauses


def test_explain_splits_only_clauses_joined_by_one_operator() -> None:
    assert split_clauses('a == "x" && (b || c) && d') == ['a == "x"', "(b || c)", "d"]
    assert split_clauses("a || b") == ["a", "b"]
    assert split_clauses("a && b || c") == ["a && b || c"]  # mixed: shown whole
    assert split_clauses('name == "a && b"') == ['name == "a && b"']
