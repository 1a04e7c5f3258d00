"""Lint finds what breaks at run time (issue 19 item 5).

- a condition that reads a field its variables do not have (`ticket.priorty`) is reported at
  its file:line:col with the closest name;
- a template that reads an attribute its context does not have (`{{ case.subjct }}`) is
  reported at the template's file:line:col, naming the action that uses it and where;
- schema problems of the documents the schema refuses and lint problems of the others come
  in one run, sorted by file and line.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from definitions.conditions import field_references
from definitions.lint import lint
from definitions.loader import Problem, load_paths
from definitions.templates import TemplateProblem, attribute_paths
from store.registry import CATALOG_DIR, TEMPLATES_DIR, DefinitionProblems, check_folder

LANGUAGES = ("de", "en", "es", "fr")

ESCALATION = """\
apiVersion: opsflow/v1
kind: escalation
metadata:
  name: {name}
  owner: qa
spec:
  match: {match}
  priorities: [p2]
  calendar: 24x7
  slas:
    - {{priority: p2, first_response: 1h, resolution: 8h}}
  levels:
    - after: 30m
      actions:
        - {{type: notify, channel: email, to: [assignee], template: {template}}}
        - {{type: update_ticket, comment: {comment}}}
"""


def escalation(
    name: str = "typo",
    match: str = "'true'",
    template: str = "case-escalated",
    comment: str = "'Taken over.'",
) -> str:
    return ESCALATION.format(name=name, match=match, template=template, comment=comment)


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """A definitions folder with its own templates/: a copy of the catalog's."""
    shutil.copytree(TEMPLATES_DIR, tmp_path / "templates")
    return tmp_path


def write_template(folder: Path, name: str, text: str) -> None:
    for language in LANGUAGES:
        (folder / "templates" / f"{name}.{language}.j2").write_text(text, encoding="utf-8")


def problems_in(*paths: Path) -> list[Problem]:
    try:
        check_folder(list(paths))
    except DefinitionProblems as exc:
        return exc.problems
    return []


def catalog_document(kind: str, name: str) -> dict[str, Any]:
    path = CATALOG_DIR / kind / f"{name}.yaml"
    document: dict[str, Any] = yaml.safe_load(path.read_text(encoding="utf-8"))
    return document


def lint_changed(
    tmp_path: Path, kind: str, name: str, change: Callable[[dict[str, Any]], None]
) -> list[str]:
    """Lint a catalog definition after `change`, as `path: message` lines."""
    document = catalog_document(kind, name)
    change(document)
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(document, sort_keys=False), encoding="utf-8")
    result = load_paths([path])
    assert result.problems == []
    known = {d.name: d.kind for d in load_paths([CATALOG_DIR]).definitions}
    return [
        f"{p.path}: {p.message}"
        for p in lint(result.definitions, templates=TEMPLATES_DIR, known=known)
    ]


# --- conditions ----------------------------------------------------------------------------


def test_a_typo_in_a_condition_field_is_reported_at_its_column_with_the_closest_name(
    folder: Path,
) -> None:
    path = folder / "typo.yaml"
    path.write_text(escalation(match='\'ticket.priorty == "p1" && customer.tier == "vip"\''))
    assert [str(p) for p in problems_in(folder)] == [
        f"{path}:7:18: spec.match: ticket has no field 'priorty'; did you mean 'priority'?"
    ]


def test_a_field_with_no_close_name_lists_the_fields_there_are(folder: Path) -> None:
    path = folder / "typo.yaml"
    path.write_text(escalation(match="'customer.shoe_size == 42'"))
    [problem] = problems_in(folder)
    assert (problem.line, problem.column, problem.path) == (7, 20, "spec.match")
    assert problem.message == (
        "customer has no field 'shoe_size'; it has id, name, tier, segment, lifetime_value, "
        "language, timezone, country, account_manager, journey_stage"
    )


def test_a_condition_over_several_lines_is_reported_at_its_field(folder: Path) -> None:
    path = folder / "typo.yaml"
    path.write_text(
        escalation(match='|\n    ticket.priority == "p2" &&\n      customer.segmnt == "x"')
    )
    [problem] = problems_in(folder)
    assert (problem.line, problem.path) == (7, "spec.match")
    assert problem.message == "customer has no field 'segmnt'; did you mean 'segment'?"


def _set(path: tuple[str | int, ...], value: Any) -> Callable[[dict[str, Any]], None]:
    def change(document: dict[str, Any]) -> None:
        target: Any = document
        for part in path[:-1]:
            target = target[part]
        target[path[-1]] = value

    return change


@pytest.mark.parametrize(
    ("kind", "name", "where", "condition", "expected"),
    [
        (
            "handoff",
            "chat-handoff",
            ("spec", "routes", 1, "when"),
            'conversation.topc == "cancellation"',
            "spec.routes[1].when: conversation has no field 'topc'; did you mean 'topic'?",
        ),
        (
            "rollout",
            "new-billing-flow",
            ("spec", "rollback", "recovery", 0, "when"),
            "customer.lifetime_valu >= 60000.0",
            "spec.rollback.recovery[0].when: customer has no field 'lifetime_valu'; "
            "did you mean 'lifetime_value'?",
        ),
        (
            "recovery",
            "service-recovery",
            ("spec", "rules", 1, "trigger", "when"),
            "event.score <= 2 && history.medianscore < 4.0",
            "spec.rules[1].trigger.when: history has no field 'medianscore'; "
            "did you mean 'median_score'?",
        ),
        (
            "recovery",
            "service-recovery",
            ("spec", "rules", 1, "dedup"),
            'customer["idd"] + "/" + event.id',
            "spec.rules[1].dedup: customer has no field 'idd'; did you mean 'id'?",
        ),
    ],
)
def test_every_condition_place_checks_its_variables_fields(
    tmp_path: Path,
    kind: str,
    name: str,
    where: tuple[str | int, ...],
    condition: str,
    expected: str,
) -> None:
    assert lint_changed(tmp_path, kind, name, _set(where, condition)) == [expected]


def test_a_rollout_cohort_condition_is_checked(tmp_path: Path) -> None:
    def change(document: dict[str, Any]) -> None:
        document["spec"]["phases"][0]["cohort"]["when"] = 'customer.segement == "internal"'

    [problem] = lint_changed(tmp_path, "rollout", "new-billing-flow", change)
    assert problem == (
        "spec.phases[0].cohort.when: customer has no field 'segement'; did you mean 'segment'?"
    )


@pytest.mark.parametrize(
    "condition",
    [
        # free-form maps and values are not checked below their own level
        'history.counts_30d["survey.responded"] >= 2 && history.counts_30d.anything == 1',
        'event.score <= 2 && customer.name.startsWith("A")',
        # a comprehension's own variable is not the context's, even named like it
        "[1, 2].exists(customer, customer.whatever == 1)",
    ],
)
def test_what_lint_cannot_know_is_not_reported(tmp_path: Path, condition: str) -> None:
    change = _set(("spec", "rules", 1, "trigger", "when"), condition)
    assert lint_changed(tmp_path, "recovery", "service-recovery", change) == []


# --- templates -----------------------------------------------------------------------------


def test_a_bad_template_attribute_is_reported_in_the_template_and_names_the_action(
    folder: Path,
) -> None:
    write_template(folder, "bad-case", "Subject: Case {{ case.id }}\n\nAbout: {{ case.subjct }}\n")
    path = folder / "typo.yaml"
    path.write_text(escalation(template="bad-case"))
    problems = [str(p) for p in problems_in(folder)]
    assert problems == [
        f"{folder}/templates/bad-case.{language}.j2:3:11: case.subjct: case has no field "
        f"'subjct'; did you mean 'subject'? (used by spec.levels[0].actions[0].template at "
        f"{path}:15:68)"
        for language in LANGUAGES
    ]


def test_a_template_used_twice_is_reported_once_naming_the_first_use(folder: Path) -> None:
    write_template(folder, "bad-level", "Level {{ level.nmber }}\n")
    first, second = folder / "a.yaml", folder / "b.yaml"
    first.write_text(escalation(name="first", template="bad-level"))
    second.write_text(escalation(name="second", template="bad-level"))
    problems = [p for p in problems_in(folder) if p.file.endswith("bad-level.en.j2")]
    assert [p.message for p in problems] == [
        "level has no field 'nmber'; did you mean 'number'? (used by "
        f"spec.levels[0].actions[0].template at {first}:15:68 and 1 more)"
    ]


def test_a_bad_attribute_in_an_inline_text_is_reported_at_its_column(folder: Path) -> None:
    path = folder / "typo.yaml"
    path.write_text(escalation(comment="'Level {{ level.numbr }} for {{ case.id }}'"))
    assert [str(p) for p in problems_in(folder)] == [
        f"{path}:16:52: spec.levels[0].actions[1].comment: level has no field 'numbr'; "
        "did you mean 'number'?"
    ]


def test_names_a_template_sets_itself_are_not_the_contexts(folder: Path) -> None:
    write_template(
        folder,
        "local-names",
        "{% set case = {'x': 1} %}{{ case.x }}{% for level in [1] %}{{ level.y }}{% endfor %}"
        "{{ customer.name.upper() }}",
    )
    (folder / "typo.yaml").write_text(escalation(template="local-names"))
    assert problems_in(folder) == []


def _notify(template: str) -> dict[str, Any]:
    return {"type": "notify", "channel": "email", "to": ["customer"], "template": template}


def test_a_recovery_rules_templates_see_its_event_type(tmp_path: Path) -> None:
    """A rule's messages see its event's fields; a follow-up survey's event only a type;
    `action` is empty in a rule's messages."""
    templates = tmp_path / "templates"
    shutil.copytree(TEMPLATES_DIR, templates)
    write_template(tmp_path, "scored", "You gave {{ event.score }}, not {{ event.scroe }}.")
    write_template(tmp_path, "paid", "We paid {{ action.amount }}.")
    write_template(tmp_path, "asked", "About {{ event.type }} {{ event.score }}?")
    document = catalog_document("recovery", "service-recovery")
    document["spec"]["rules"][1]["actions"] = [_notify("scored"), _notify("paid")]
    document["spec"]["follow_up"]["template"] = "asked"
    path = tmp_path / "recovery.yaml"
    path.write_text(yaml.safe_dump(document, sort_keys=False), encoding="utf-8")
    messages = sorted({p.message.split(" (used by")[0] for p in problems_in(path)})
    assert messages == [
        "action has no field 'amount': it is empty here",
        "event has no field 'score'; it has type",
        "event has no field 'scroe'; did you mean 'score'?",
    ]


def test_a_handoff_callback_template_is_checked_in_depth(tmp_path: Path) -> None:
    templates = tmp_path / "templates"
    shutil.copytree(TEMPLATES_DIR, templates)
    write_template(
        tmp_path,
        "call-back",
        "{{ conversation.callback.weekday }} {{ conversation.callback.weekdy }}",
    )
    document = catalog_document("handoff", "chat-handoff")
    document["spec"]["fallback"][1]["template"] = "call-back"
    path = tmp_path / "handoff.yaml"
    path.write_text(yaml.safe_dump(document, sort_keys=False), encoding="utf-8")
    known = {d.name: d.kind for d in load_paths([CATALOG_DIR]).definitions}
    result = load_paths([path])
    problems = lint(result.definitions, templates=templates, known=known)
    assert {(p.line, p.column, p.path) for p in problems} == {
        (1, 40, "conversation.callback.weekdy")
    }
    assert problems[0].message.startswith(
        "conversation.callback has no field 'weekdy'; did you mean 'weekday'?"
    )


# --- one pass --------------------------------------------------------------------------


HANDOFF_TO_SUPPORT = textwrap.dedent(
    """\
    apiVersion: opsflow/v1
    kind: handoff
    metadata:
      name: chat
      owner: qa
    spec:
      triggers: {customer_asks: true}
      context: [transcript]
      routes:
        - name: everyone
          queue: support
      offer_timeout: 45s
      max_wait: 10m
      notice: {channel: chat, template: handoff-waiting}
      fallback:
        - {type: schedule_callback, queue: callbacks, within: 4h}
      escalation_policy: broken-policy
    """
)


def test_schema_and_lint_problems_come_in_one_run_by_file_and_line(folder: Path) -> None:
    """A file the schema refuses next to one that only lint refuses: both in one run, by
    file and line; the handoff naming the refused policy is not told it does not exist."""
    broken = folder / "a-broken.yaml"
    broken.write_text(
        escalation(name="broken-policy").replace(
            "priorities: [p2]", "priorities: [p2]\n  levls: []"
        )
    )
    typo = folder / "b-typo.yaml"
    typo.write_text(escalation(name="typo", match="'ticket.stge == \"renewal\"'"))
    handoff = folder / "c-handoff.yaml"
    handoff.write_text(HANDOFF_TO_SUPPORT)
    problems = problems_in(folder)
    assert [str(p) for p in problems] == [
        f"{broken}:9:3: spec.levls: unknown field",
        f"{typo}:7:18: spec.match: ticket has no field 'stge'; did you mean 'stage'?",
    ]
    assert problems == sorted(problems, key=lambda p: (p.file, p.line, p.column))


def test_defs_lint_prints_them_in_one_run(folder: Path) -> None:
    from typer.testing import CliRunner  # the command line, as an operations engineer runs it

    from worker.cli import app

    broken = folder / "a-broken.yaml"
    broken.write_text(escalation(name="broken").replace("after: 30m", "after: 30 minutes"))
    typo = folder / "b-typo.yaml"
    typo.write_text(escalation(match="'customer.tierr == \"vip\"'"))
    result = CliRunner().invoke(app, ["defs", "lint", str(folder)])
    assert result.exit_code == 1
    assert result.stderr.splitlines() == [
        f"{broken}:13:14: spec.levels[0].after: '30 minutes' is not a duration: write e.g. "
        "90s, 15m, 4h, 2d, 1h30m or PT15M",
        f"{typo}:7:20: spec.match: customer has no field 'tierr'; did you mean 'tier'?",
        "2 problems",
    ]


def test_one_run_reports_the_schema_and_lint_problems_of_one_file(folder: Path) -> None:
    both = folder / "both.yaml"
    both.write_text(
        escalation(name="first", match="'customer.teir == \"vip\"'")
        + "---\n"
        + escalation(name="second").replace("after: 30m", "after: soon")
    )
    assert [p.located for p in problems_in(folder)] == [
        "7:20: spec.match: customer has no field 'teir'; did you mean 'tier'?",
        "30:14: spec.levels[0].after: 'soon' is not a duration: write e.g. 90s, 15m, 4h, 2d, "
        "1h30m or PT15M",
    ]


def test_the_shipped_catalog_lints_clean() -> None:
    assert check_folder([CATALOG_DIR])


# --- hostile input -------------------------------------------------------------------------

HOSTILE = Path(__file__).resolve().parents[3] / "shared" / "fixtures" / "hostile"


@pytest.mark.timeout(120)
@pytest.mark.skipif(not HOSTILE.exists(), reason="hostile corpus not present")
def test_the_hostile_corpora_give_references_or_a_clean_refusal() -> None:
    """Every SSTI payload gives attribute paths or a TemplateProblem; every hostile CEL
    expression gives field references (none when it does not compile); nothing raises."""
    ssti = json.loads((HOSTILE / "jinja-ssti.json").read_text(encoding="utf-8"))
    for entry in ssti["payloads"]:
        with contextlib.suppress(TemplateProblem):
            for path in attribute_paths(entry["payload"]):
                assert path.variable and path.line >= 1
    cel = json.loads((HOSTILE / "cel-hostile.json").read_text(encoding="utf-8"))
    for entry in cel["expressions"]:
        expression = entry.get("expr")
        if expression is None:
            expression = eval(entry["generator"], {"__builtins__": {}}, {})
        for reference in field_references(expression):
            assert len(reference.fields) == len(reference.columns) >= 1
