"""Non-printable characters in a definition file: refused at file:line:col with the code
point, like every other bad input; `read_documents` never raises (issue 16, item 3)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from definitions.loader import MAX_CHARACTER_PROBLEMS, load_file, read_documents, validate_document

OPSFLOW = str(Path(sys.executable).parent / "opsflow")
NAUGHTY = (
    Path(__file__).resolve().parents[3] / "shared" / "fixtures" / "hostile" / "naughty-strings.json"
)

VALID = """\
apiVersion: opsflow/v1
kind: escalation
metadata:
  name: tiny-policy
  owner: support-operations
  description: A small policy.
spec:
  priorities: [p1]
  calendar: 24x7
  slas:
    - priority: p1
      first_response: 15m
      resolution: 4h
  levels:
    - after: 10m
      actions:
        - type: notify
          channel: slack
          to: [assignee]
          template: sla-warning
"""
OWNER_LINE, OWNER_COLUMN = 5, 10  # where `support-operations` starts

REFUSED = {
    "\x1b": "U+001B (ESC)",
    "\x00": "U+0000 (NUL)",
    "\x07": "U+0007 (BEL)",
    "\x0b": "U+000B (VT)",
    "\x0c": "U+000C (FF)",
    "\x7f": "U+007F (DEL)",
    "\x85": "U+0085 (NEL, a C1 control)",
    "\x9b": "U+009B (a C1 control)",
    "\u2028": "U+2028 (LINE SEPARATOR)",
    "\u202e": "U+202E (RIGHT-TO-LEFT OVERRIDE)",
    "\ufffe": "U+FFFE (a noncharacter)",
    "\uffff": "U+FFFF (a noncharacter)",
}


def test_the_valid_file_loads() -> None:
    documents, problems = read_documents(VALID.encode(), "p.yaml")
    assert problems == []
    assert validate_document(documents[0])[1] == []


def test_a_pasted_colour_code_in_owner_is_refused_at_its_position() -> None:
    raw = VALID.replace("support-operations", "\x1b[31msupport-operations\x1b[0m").encode()
    documents, problems = read_documents(raw, "p.yaml")
    assert documents == []
    assert [(p.line, p.column) for p in problems] == [
        (OWNER_LINE, OWNER_COLUMN),
        (OWNER_LINE, OWNER_COLUMN + len("\x1b[31msupport-operations")),
    ]
    assert str(problems[0]).startswith("p.yaml:5:10: the non-printable character U+001B (ESC)")
    assert "colour code" in problems[0].message


@pytest.mark.parametrize("character", list(REFUSED), ids=[v.split()[0] for v in REFUSED.values()])
@pytest.mark.parametrize("where", ["plain", "double-quoted", "single-quoted", "comment", "key"])
def test_each_non_printable_character_is_refused_wherever_it_is(character: str, where: str) -> None:
    text, column = {
        "plain": (f"  owner: ops{character}team\n", 13),
        "double-quoted": (f'  owner: "ops{character}team"\n', 14),
        "single-quoted": (f"  owner: 'ops{character}team'\n", 14),
        "comment": (f"  owner: ops  # who{character}\n", 20),
        "key": (f"  own{character}er: ops\n", 6),
    }[where]
    raw = VALID.replace("  owner: support-operations\n", text).encode()
    documents, problems = read_documents(raw, "p.yaml")
    assert documents == []
    assert len(problems) == 1
    assert (problems[0].line, problems[0].column) == (OWNER_LINE, column)
    assert REFUSED[character] in problems[0].message


def test_tabs_line_endings_and_ordinary_unicode_still_load() -> None:
    text = VALID.replace("A small policy.", '"Équipe 日本 support 🚀, tab\there"').replace(
        "\n", "\r\n"
    )
    documents, problems = read_documents(text.encode(), "p.yaml")
    assert problems == []
    assert documents[0].data["metadata"]["description"] == "Équipe 日本 support 🚀, tab\there"


def test_many_bad_characters_are_reported_up_to_a_bound() -> None:
    raw = (VALID + "".join(f"# {n}\x7f\n" for n in range(100))).encode()
    documents, problems = read_documents(raw, "p.yaml")
    assert documents == []
    assert len(problems) == MAX_CHARACTER_PROBLEMS
    first_comment_line = VALID.count("\n") + 1
    assert [p.line for p in problems[:2]] == [first_comment_line, first_comment_line + 1]


@pytest.mark.parametrize("command", ["validate", "lint"])
def test_the_command_line_reports_one_line_per_character_not_a_traceback(
    tmp_path: Path, command: str
) -> None:
    path = tmp_path / "policy.yaml"
    path.write_bytes(VALID.replace("support-operations", "\x1b[31mops\x7f\x85").encode())
    result = subprocess.run(
        [OPSFLOW, "defs", command, str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
        env={**os.environ, "NO_COLOR": "1"},
    )
    assert "Traceback" not in result.stderr + result.stdout
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert lines == [
        f"{path}:5:10: the non-printable character U+001B (ESC) (a pasted terminal colour "
        "code?); remove it or write it as an escape",
        f"{path}:5:18: the non-printable character U+007F (DEL); remove it or write it as an "
        "escape",
        f"{path}:5:19: the non-printable character U+0085 (NEL, a C1 control); remove it or "
        "write it as an escape",
        "3 problems",
    ]
    assert "\x1b" not in result.stderr  # nothing from the file reaches the terminal raw


YAMLISH = st.sampled_from(
    [*":-[]{},#&*!|>'\"%@`?\n\t \r", "\x1b", "\x7f", "\x85", "\ufffe", "\u2028", "é", "🚀"]
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(raw=st.binary(max_size=300))
def test_read_documents_never_raises_on_bytes(raw: bytes) -> None:
    _, problems = read_documents(raw, "f.yaml")
    for problem in problems:
        assert problem.line >= 1 and problem.column >= 1 and problem.file == "f.yaml"


@settings(max_examples=300, deadline=None)
@given(text=st.lists(st.one_of(YAMLISH, st.text(max_size=3)), max_size=80).map("".join))
def test_read_documents_never_raises_on_yaml_like_text(text: str) -> None:
    _, problems = read_documents(text.encode("utf-8", "surrogatepass"), "f.yaml")
    for problem in problems:
        assert problem.line >= 1 and problem.column >= 1


@settings(max_examples=200, deadline=None)
@given(
    offset=st.integers(min_value=0, max_value=len(VALID)),
    character=st.sampled_from(list(REFUSED)),
)
def test_the_reported_position_is_where_the_character_is(offset: int, character: str) -> None:
    text = VALID[:offset] + character + VALID[offset:]
    documents, problems = read_documents(text.encode(), "f.yaml")
    assert documents == []
    line = VALID.count("\n", 0, offset) + 1
    column = offset - (VALID.rfind("\n", 0, offset) + 1) + 1
    assert (problems[0].line, problems[0].column) == (line, column)
    assert REFUSED[character] in problems[0].message


@pytest.mark.skipif(not NAUGHTY.exists(), reason="hostile corpus not present")
def test_naughty_strings_as_definition_text_load_or_are_refused_with_a_position(
    tmp_path: Path,
) -> None:
    """Each of the Big List of Naughty Strings, written escaped (any string can be) and raw,
    as a definition's description: it loads with the exact value, or is refused at a position
    with a reason; nothing raises."""
    strings = json.loads(NAUGHTY.read_text())
    loaded = refused = 0
    for naughty in strings:
        escaped = VALID.replace("A small policy.", json.dumps(naughty))
        path = tmp_path / "n.yaml"
        path.write_text(escaped, encoding="utf-8", errors="surrogatepass")
        result = load_file(path, "n.yaml")
        if result.definitions:
            assert result.definitions[0].definition.metadata.description == naughty
            loaded += 1
        else:
            assert result.problems and all(p.line >= 1 for p in result.problems)
            refused += 1
        raw = VALID.replace("A small policy.", naughty)
        documents, problems = read_documents(raw.encode("utf-8", "surrogatepass"), "raw.yaml")
        assert documents or problems
    assert loaded > 400 and refused > 0  # most are ordinary text; controls are refused
