"""The broken-definition corpus: each file ends with the exact problems it must produce."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest

from definitions.lint import lint
from definitions.loader import load_paths
from store.registry import CATALOG_DIR

BROKEN = Path(__file__).parent / "broken"
FILES = sorted(BROKEN.glob("*.yaml"))
TODAY = date(2026, 6, 1)


@pytest.fixture(scope="module")
def catalog_kinds() -> dict[str, str]:
    return {d.name: d.kind for d in load_paths([CATALOG_DIR]).definitions}


def expected(path: Path) -> list[str]:
    prefix = "# expect: "
    return [
        line[len(prefix) :]
        for line in path.read_text(encoding="utf-8").splitlines()
        if line.startswith(prefix)
    ]


def test_corpus_is_large_enough() -> None:
    assert len(FILES) >= 25
    assert all(expected(path) for path in FILES), "every broken file states what it expects"


@pytest.mark.parametrize("path", FILES, ids=[p.stem for p in FILES])
def test_broken_definition_reports_exact_problems(
    path: Path, catalog_kinds: dict[str, str]
) -> None:
    result = load_paths([path])
    problems = list(result.problems) + lint(
        result.definitions, templates=BROKEN / "templates", known=catalog_kinds, today=TODAY
    )
    assert sorted({p.located for p in problems}) == sorted(expected(path))
    assert all(p.file == str(path) for p in problems)
