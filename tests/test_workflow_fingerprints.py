"""The commands each workflow function can issue, in source order, against a committed baseline.

A workflow's history is the list of commands it issued (activities, timers, child workflows,
patches, search-attribute upserts, continue-as-new); a run in flight replays today's code
against that list. So any change to which commands a function issues, or their order, must
be deliberate: this test reads the workflow modules (not running them), lists each function's
commands, opsflow's own wrappers included (`call`, `ledger`, `run_actions`), and compares
them with the baseline in tests/fingerprints/, one file per kind (the module name before its
first underscore: rollout.py and rollout_core.py both go to rollout.json).

When it fails, the message says what changed and what to do. Updating the baseline of one
kind (or of every kind with `1`):
    OPSFLOW_UPDATE_FINGERPRINTS=rollout .venv/bin/pytest tests/test_workflow_fingerprints.py
"""

from __future__ import annotations

import ast
import difflib
import json
import os
from pathlib import Path

from workflows.releases import RELEASES

ROOT = Path(__file__).resolve().parent.parent
WORKFLOW_MODULES = sorted((ROOT / "workflows").glob("*.py"))
BASELINES = Path(__file__).resolve().parent / "fingerprints"

# workflow.<name>(...) calls that put a command into the history.
WORKFLOW_COMMANDS = {
    "execute_activity": "activity",
    "start_activity": "activity",
    "execute_activity_method": "activity",
    "start_activity_method": "activity",
    "execute_local_activity": "local-activity",
    "start_local_activity": "local-activity",
    "execute_child_workflow": "child",
    "start_child_workflow": "child",
    "sleep": "timer",
    "continue_as_new": "continue-as-new",
    "upsert_search_attributes": "upsert-search-attributes",
    "upsert_memo": "upsert-memo",
    "patched": "patch",
    "deprecate_patch": "patch",
}
# opsflow's wrappers in workflows/actions.py, each one or more activities.
WRAPPERS = {"call", "ledger", "ledger_batch", "run_actions", "run_actions_independently"}

HOW_TO_CHANGE = """
The commands these workflow functions issue changed. Runs already in flight replay today's
code against the commands they recorded, so a different command or order breaks them
(a non-determinism error, the run stuck on a failing workflow task).

  - For behaviour that must change for running workflows too, keep the old path and branch:
        if has_change("what-changed"):  # workflows/releases.py
            ...new commands...
        else:
            ...old commands...
    (the next release lists it; once no run predates a change, its old path can go).
  - Record a history of the new path (OPSFLOW_RECORD_HISTORIES=1) so tests/test_replay.py
    covers it.
  - Then accept the new fingerprint in the same commit:
        OPSFLOW_UPDATE_FINGERPRINTS=<kind> .venv/bin/pytest tests/test_workflow_fingerprints.py
"""


def _first_argument(node: ast.Call) -> str:
    if not node.args:
        return ""
    first = node.args[0]
    if isinstance(first, ast.Constant) and isinstance(first.value, str):
        return first.value
    return ast.unparse(first)


class _Commands(ast.NodeVisitor):
    """The command-issuing calls of one function body, in evaluation order (arguments
    before the call), plus the calls of sibling functions that may issue commands."""

    def __init__(self) -> None:
        self.found: list[str] = []

    def visit_FunctionDef(self, node: ast.FunctionDef) -> None:
        # A nested function (a task body) belongs to its enclosing function, in place.
        for statement in node.body:
            self.visit(statement)

    visit_AsyncFunctionDef = visit_FunctionDef  # type: ignore[assignment]

    def visit_Call(self, node: ast.Call) -> None:
        self.generic_visit(node)
        func = node.func
        if isinstance(func, ast.Attribute):
            owner = func.value
            if isinstance(owner, ast.Name) and owner.id == "workflow":
                kind = WORKFLOW_COMMANDS.get(func.attr)
                if kind == "patch" or kind in ("activity", "local-activity", "child"):
                    self.found.append(f"{kind}:{_first_argument(node)}")
                elif kind is not None:
                    self.found.append(kind)
                elif func.attr == "wait_condition" and any(
                    k.arg == "timeout" for k in node.keywords
                ):
                    self.found.append("timer:wait_condition")
            elif isinstance(owner, ast.Name) and owner.id == "asyncio" and func.attr == "sleep":
                self.found.append("timer")
            elif func.attr in ("signal", "cancel") and "external" in ast.unparse(owner):
                self.found.append(f"external-{func.attr}")
            elif isinstance(owner, ast.Name) and owner.id == "self":
                self.found.append(f"-> {func.attr}")
        elif isinstance(func, ast.Name):
            if func.id == "call":
                self.found.append(f"activity:{_first_argument(node)}")
            elif func.id == "has_change":  # workflows/releases.py: a patch, or its release's
                self.found.append(f"patch:{_first_argument(node)}")
            elif func.id in WRAPPERS:
                self.found.append(func.id)
            else:
                self.found.append(f"-> {func.id}")


def _functions(tree: ast.Module) -> dict[str, ast.FunctionDef | ast.AsyncFunctionDef]:
    functions: dict[str, ast.FunctionDef | ast.AsyncFunctionDef] = {}
    for node in tree.body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            functions[node.name] = node
        elif isinstance(node, ast.ClassDef):
            for item in node.body:
                if isinstance(item, ast.FunctionDef | ast.AsyncFunctionDef):
                    functions[f"{node.name}.{item.name}"] = item
    return functions


def fingerprints() -> dict[str, list[str]]:
    """Qualified function name -> its commands and its calls of command-issuing functions."""
    raw: dict[str, list[str]] = {}
    for path in WORKFLOW_MODULES:
        module = path.stem
        for name, function in _functions(ast.parse(path.read_text(encoding="utf-8"))).items():
            visitor = _Commands()
            visitor.visit_FunctionDef(function)  # type: ignore[arg-type]
            raw[f"{module}.{name}"] = visitor.found

    def resolve(qualified: str, token: str) -> str | None:
        """`-> name` becomes the qualified callee when it is a workflow function, else None."""
        callee = token.removeprefix("-> ")
        module, _, rest = qualified.partition(".")
        owner = rest.rpartition(".")[0]
        for candidate in (f"{module}.{owner}.{callee}", f"{module}.{callee}"):
            if candidate in raw:
                return candidate
        matches = [q for q in raw if q.split(".", 1)[1] == callee]
        return matches[0] if len(matches) == 1 else None

    # A function issues commands if it does, or calls one that does (a fixed point).
    issuing = {q for q, tokens in raw.items() if any(not t.startswith("-> ") for t in tokens)}
    changed = True
    while changed:
        changed = False
        for qualified, tokens in raw.items():
            if qualified in issuing:
                continue
            if any(resolve(qualified, t) in issuing for t in tokens if t.startswith("-> ")):
                issuing.add(qualified)
                changed = True

    result: dict[str, list[str]] = {}
    for qualified in sorted(issuing):
        kept: list[str] = []
        for token in raw[qualified]:
            if not token.startswith("-> "):
                kept.append(token)
            elif (callee := resolve(qualified, token)) in issuing:
                kept.append(f"-> {callee}")
        result[qualified] = kept
    # What each release's marker stands for: adding a change to a release already out would
    # change the path its runs replay, so the list is part of the baseline too.
    result["releases.RELEASES"] = [
        f"release:{release}: {' '.join(sorted(changes))}" for release, changes in RELEASES
    ]
    return result


def _kind(qualified: str) -> str:
    """The baseline file a function belongs to: its module's name before the first `_`."""
    return qualified.split(".", 1)[0].split("_", 1)[0]


def _baseline() -> dict[str, list[str]]:
    baseline: dict[str, list[str]] = {}
    for path in sorted(BASELINES.glob("*.json")):
        baseline.update(json.loads(path.read_text(encoding="utf-8")))
    return baseline


def _write_baseline(current: dict[str, list[str]], kinds: set[str] | None) -> None:
    """Rewrite the baseline of `kinds` (every kind when None) from `current`."""
    BASELINES.mkdir(exist_ok=True)
    every_kind = {_kind(q) for q in current} | {p.stem for p in BASELINES.glob("*.json")}
    for kind in sorted(every_kind if kinds is None else kinds):
        own = {q: tokens for q, tokens in current.items() if _kind(q) == kind}
        path = BASELINES / f"{kind}.json"
        if own:
            path.write_text(json.dumps(own, indent=1) + "\n", encoding="utf-8")
        else:
            path.unlink(missing_ok=True)


def test_workflow_commands_match_the_baseline() -> None:
    current = fingerprints()
    update = os.environ.get("OPSFLOW_UPDATE_FINGERPRINTS", "")
    if update:
        _write_baseline(current, None if update == "1" else set(update.split(",")))
    baseline = _baseline()
    if current == baseline:
        return
    changes: list[str] = []
    for name in sorted(set(current) | set(baseline)):
        before, after = baseline.get(name, []), current.get(name, [])
        if before != after:
            changes.append(f"{name}:")
            changes += [
                f"    {line}"
                for line in difflib.unified_diff(before, after, "baseline", "now", lineterm="")
            ]
    raise AssertionError("\n".join(changes) + "\n" + HOW_TO_CHANGE)


def test_the_fingerprint_sees_every_kind_of_command() -> None:
    """The reader finds what it claims to: a command added anywhere shows up."""
    found = fingerprints()
    every = [token for tokens in found.values() for token in tokens]
    assert any(t.startswith("activity:ledger.append") for t in every)
    assert "continue-as-new" in every and "upsert-search-attributes" in every
    assert any(t.startswith("patch:") for t in every)
    assert any(t.startswith("child:") for t in every)
    assert "ledger" in every and "run_actions" in every
    for kind in ("escalation", "rollout", "recovery", "handoff"):
        assert any(name.startswith(f"{kind}.") and ".run" in name for name in found), kind


def test_workflows_ask_for_changes_through_releases() -> None:
    """`workflow.patched` is called in workflows/releases.py alone: a change asked for
    directly would never be gathered into a release, and cost every new run a marker."""
    direct = [
        f"{path.name}:{node.lineno}"
        for path in WORKFLOW_MODULES
        if path.name != "releases.py"
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr in ("patched", "deprecate_patch")
    ]
    assert not direct, f"use workflows.releases.has_change, not workflow.patched: {direct}"
