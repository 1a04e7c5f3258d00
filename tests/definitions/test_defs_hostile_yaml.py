"""The hostile YAML corpus and the generated bombs: refused with file:line, never a crash."""

from __future__ import annotations

import resource
from pathlib import Path

import pytest

from definitions.loader import MAX_DEPTH, load_file, read_documents

HOSTILE = Path(__file__).resolve().parents[3] / "shared" / "fixtures" / "hostile"
FILES = sorted(HOSTILE.glob("yaml-*.yaml"))
CANARY = "OPSFLOW-YAML-RCE-CANARY"

# What each file must be refused for (a fragment of the first problem's message).
EXPECTED = {
    "01": "alias bomb",
    "02": "alias bomb",
    "03": "alias bomb",
    "04": "more than 100 aliases",
    "05": "cycle",
    "06": "cycle",
    "07": f"nesting deeper than {MAX_DEPTH}",
    "08": f"nesting deeper than {MAX_DEPTH}",
    "09": f"nesting deeper than {MAX_DEPTH}",
    "10": f"nesting deeper than {MAX_DEPTH}",
    "11": "duplicate key 'a'",
    "12": "duplicate key 'foo'",
    "13": "duplicate key 'name'",
    "14": "duplicate key '<<'",
    "15": "apiVersion must be",
    "16": "infinite numbers and NaN are not allowed",
    "17": "apiVersion must be",
    "18": "must be text",
    "19": "!!python/object/apply:os.system is not allowed",
    "20": "!!python/object/new:tuple is not allowed",
    "21": "!!python/object/apply:os.system is not allowed",
    "22": "found character '\\t'",
    "23": "found character '\\t'",
    "24": "no definition in this file",
    "25": "byte order mark",
    "26": "spec.calendar: Field required",
    "27": "UTF-16",
    "28": "not valid UTF-8",
    "29": "longer than 1024",
    "30": "a key of 60000 characters",
    "31": "more than 100 documents",
    "32": "a key must be a plain name",
    "33": "a key must be a plain name",
    "34": "duplicate anchor 'foo'",
    "35": "control character",
    "36": "5000 digits",
    "37": "!!python/name:os.system is not allowed",
}

pytestmark = pytest.mark.skipif(not FILES, reason="hostile corpus not present")


# A bomb that blew up would hang or exhaust memory: the timeout stops a hang without
# turning the test into a speed assertion (speed is measured in bench/, not here).
@pytest.mark.timeout(60)
@pytest.mark.parametrize("path", FILES, ids=[p.stem for p in FILES])
def test_hostile_file_is_refused_clearly(path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    result = load_file(path, path.name)
    assert not result.definitions
    assert result.problems
    number = path.name[5:7]
    assert any(EXPECTED[number] in p.message or EXPECTED[number] in str(p) for p in result.problems)
    for problem in result.problems:
        assert problem.file == path.name and problem.line >= 1 and problem.column >= 1
        assert len(str(problem)) < 400  # never the expanded value
    assert CANARY not in capfd.readouterr().out


def test_multi_document_file_reports_each_bad_document() -> None:
    result = load_file(HOSTILE / "yaml-37-multi-doc-mixed.yaml", "mixed.yaml")
    lines = {p.line for p in result.problems}
    assert 8 in lines and 16 in lines


def test_yaml_12_core_schema_keeps_strings(tmp_path: Path) -> None:
    documents, problems = read_documents(
        b"country: NO\nwhen: 1:30\nmode: 0777\nflag: yes\nreal: true\n", "f.yaml"
    )
    assert not problems
    assert documents[0].data == {
        "country": "NO",
        "when": "1:30",
        "mode": 777,
        "flag": "yes",
        "real": True,
    }


GENERATED = {
    "pyyaml-895-deep-block": "\n".join(["-  " * i for i in range(1100)]),
    "deep-flow": "[" * 1_000_000 + "]" * 1_000_000,
    "12-level-laughs": "\n".join(
        ["a0: &a0 [lol,lol,lol,lol,lol,lol,lol,lol,lol,lol]"]
        + [f"a{i}: &a{i} [" + ",".join([f"*a{i - 1}"] * 10) + "]" for i in range(1, 12)]
    ),
    "100k-aliases": "a: &a x\nb: [" + ",".join(["*a"] * 100_000) + "]\n",
    "10k-definitions": "---\n".join(
        "apiVersion: opsflow/v1\nkind: escalation\nmetadata:\n"
        f"  name: d{i}\n  owner: ops\nspec: {{}}\n"
        for i in range(10_000)
    ),
    "million-keys": "".join(f"k{i}: {i}\n" for i in range(1_000_000)),
    "50mb-scalar": "name: " + "x" * 50_000_000 + "\n",
    "deep-block-mapping": "".join(" " * d + f"k{d}:\n" for d in range(1024))
    + " " * 1024
    + "leaf\n",
}


@pytest.mark.timeout(60)
@pytest.mark.parametrize("name", list(GENERATED))
def test_generated_bombs_are_refused_without_blowing_up(name: str) -> None:
    raw = GENERATED[name].encode()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    documents, problems = read_documents(raw, f"{name}.yaml")
    assert problems and not documents
    grown_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
    assert grown_kib < 300_000  # well under the 50 MB input times a small factor
