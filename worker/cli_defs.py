"""`opsflow defs ...`: check, deploy and read definitions.

validate and lint print every problem as `file:line:col: path: message` on stderr and exit 1;
deploy, list, show and diff use the app database from the settings.
"""

from __future__ import annotations

import difflib
import json
import re
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml
from rich.syntax import Syntax

from definitions.loader import Problem
from definitions.models import json_schema
from store.migrate import upgrade
from store.registry import (
    CATALOG_DIR,
    DefinitionProblems,
    VersionInfo,
    body,
    check_folder,
    deploy_folder,
    list_versions,
)
from worker.cli_support import (
    JsonOption,
    Sessions,
    console,
    fail,
    print_json,
    settings_or_exit,
    show_rows,
    with_database,
)

app = typer.Typer(
    name="defs",
    help="Validate, lint, deploy and read definitions (escalation, rollout, recovery, handoff).",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)

PathsArgument = Annotated[
    list[Path] | None,
    typer.Argument(help="Files or folders of YAML definitions (default: the shipped catalog)."),
]
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")


def plural(count: int, noun: str) -> str:
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


def printable(text: str) -> str:
    """Control characters from a file never reach the terminal raw (no ANSI injection)."""
    return _CONTROL.sub(lambda m: f"\\u{ord(m.group()):04x}", text)


def _report(problems: list[Problem]) -> typer.Exit:
    for problem in problems:
        typer.echo(printable(str(problem)), err=True)
    noun = "problem" if len(problems) == 1 else "problems"
    typer.echo(f"{len(problems)} {noun}", err=True)
    return typer.Exit(1)


def _check(paths: list[Path] | None, *, with_lint: bool) -> None:
    chosen = paths or [CATALOG_DIR]
    for path in chosen:
        if not path.exists():
            raise fail(f"no such file or folder: {printable(str(path))}")
    try:
        definitions = check_folder(chosen, with_lint=with_lint)
    except DefinitionProblems as exc:
        raise _report(exc.problems) from None
    files = len({loaded.source.file for loaded in definitions})
    console.print(
        f"ok: {plural(len(definitions), 'definition')} in {plural(files, 'file')}", highlight=False
    )


@app.command()
def validate(paths: PathsArgument = None) -> None:
    """Check definitions against the schema (YAML, fields, durations, conditions)."""
    _check(paths, with_lint=False)


@app.command("lint")
def lint_command(paths: PathsArgument = None) -> None:
    """Validate, then check what the schema cannot: ordering, reachability, references."""
    _check(paths, with_lint=True)


@app.command()
def deploy(
    path: Annotated[
        Path | None, typer.Argument(help="Folder or file (default: the catalog).")
    ] = None,
    by: Annotated[str | None, typer.Option("--by", help="Who deploys (recorded).")] = None,
    as_json: JsonOption = False,
) -> None:
    """Store a new version of every definition whose content changed (idempotent)."""
    target = path or CATALOG_DIR
    if not target.exists():
        raise fail(f"no such file or folder: {printable(str(target))}")
    settings = settings_or_exit()
    try:
        upgrade(settings.database)
    except Exception as exc:  # one line, whatever the driver raised
        raise fail(f"cannot migrate the app database: {str(exc).splitlines()[0][:200]}") from None

    async def work(sessions: Sessions) -> list[dict[str, Any]]:
        try:
            results = await deploy_folder(sessions, target, deployed_by=by)
        except DefinitionProblems as exc:
            raise _report(exc.problems) from None
        return [
            {
                "name": r.name,
                "kind": r.kind,
                "version": r.version,
                "status": r.status,
                "content_hash": r.content_hash,
            }
            for r in results
        ]

    rows = with_database(settings, work)
    show_rows(rows, ["name", "kind", "version", "status"], "deployed", as_json)


def _version_row(info: VersionInfo) -> dict[str, Any]:
    return {
        "name": info.name,
        "kind": info.kind,
        "version": info.version,
        "content_hash": info.content_hash,
        "deployed_at": info.deployed_at.isoformat(timespec="seconds"),
        "deployed_by": info.deployed_by,
        "source": info.source,
    }


@app.command("list")
def list_command(
    name: Annotated[str | None, typer.Argument(help="Show every version of this one.")] = None,
    as_json: JsonOption = False,
) -> None:
    """Deployed definitions (the newest version of each), or every version of NAME."""
    settings = settings_or_exit()
    versions = with_database(settings, lambda sessions: list_versions(sessions, name))
    if name is None:
        newest: dict[str, VersionInfo] = {}
        for info in versions:
            newest[info.name] = info
        versions = list(newest.values())
    elif not versions:
        raise fail(f"no definition named {printable(name)!r} is deployed")
    rows = [_version_row(info) for info in versions]
    show_rows(
        rows, ["name", "kind", "version", "deployed_at", "deployed_by"], "definitions", as_json
    )


def _parse_ref(ref: str) -> tuple[str, int | None]:
    name, _, version = ref.partition("@")
    if not version:
        return name, None
    if not version.isdigit() or len(version) > 9:
        raise fail(f"bad version in {printable(ref)!r}: write NAME@3")
    return name, int(version)


def _as_yaml(document: Any) -> str:
    return yaml.safe_dump(document, sort_keys=False, allow_unicode=True, width=100)


@app.command()
def show(
    ref: Annotated[str, typer.Argument(help="NAME or NAME@VERSION (default: the newest).")],
    as_json: JsonOption = False,
) -> None:
    """Print a deployed definition as YAML (or JSON)."""
    name, version = _parse_ref(ref)
    settings = settings_or_exit()

    async def work(sessions: Sessions) -> tuple[VersionInfo, dict[str, Any]]:
        versions = await list_versions(sessions, name)
        if not versions:
            raise fail(f"no definition named {printable(name)!r} is deployed")
        chosen = (
            versions[-1]
            if version is None
            else next((v for v in versions if v.version == version), None)
        )
        if chosen is None:
            raise fail(
                f"{printable(name)!r} has no version {version} (newest: {versions[-1].version})"
            )
        return chosen, await body(sessions, name, chosen.version)

    info, document = with_database(settings, work)
    if as_json:
        print_json({**_version_row(info), "body": document})
        return
    console.print(
        f"# {info.name}@{info.version} ({info.kind}) sha256:{info.content_hash[:12]} "
        f"deployed {info.deployed_at:%Y-%m-%d %H:%M} by {info.deployed_by or '-'}",
        highlight=False,
        markup=False,
    )
    console.print(Syntax(printable(_as_yaml(document)), "yaml", theme="ansi_dark", word_wrap=True))


@app.command()
def diff(
    name: Annotated[str, typer.Argument(help="Definition name.")],
    old: Annotated[int, typer.Argument(help="Older version.", min=1)],
    new: Annotated[int, typer.Argument(help="Newer version.", min=1)],
) -> None:
    """A unified diff of two deployed versions' YAML."""
    settings = settings_or_exit()

    async def work(sessions: Sessions) -> tuple[dict[str, Any], dict[str, Any]]:
        return await body(sessions, name, old), await body(sessions, name, new)

    before, after = with_database(settings, work)
    lines = list(
        difflib.unified_diff(
            _as_yaml(before).splitlines(keepends=True),
            _as_yaml(after).splitlines(keepends=True),
            fromfile=f"{name}@{old}",
            tofile=f"{name}@{new}",
        )
    )
    if not lines:
        console.print(f"{name}@{old} and {name}@{new} are the same", highlight=False, markup=False)
        return
    console.print(Syntax(printable("".join(lines)), "diff", theme="ansi_dark", word_wrap=True))


@app.command()
def schema() -> None:
    """Print the JSON Schema of a definition (point your editor's YAML plugin at it)."""
    typer.echo(json.dumps(json_schema(), indent=2, ensure_ascii=False))
