"""`opsflow defs ...`: check, deploy, import and read definitions.

validate and lint print every problem as `file:line:col: path: message` on stderr and exit 1;
deploy, list, show and diff use the app database from the settings; import reads files only.
"""

from __future__ import annotations

import difflib
import json
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from worker.cli_support import (
    JsonOption,
    case_from_options,
    console,
    fail,
    print_json,
    settings_or_exit,
    show_rows,
    with_database,
)

if TYPE_CHECKING:
    from client.cases import PolicyCandidate
    from definitions.loader import LoadedDefinition, Problem
    from store.registry import VersionInfo
    from worker.cli_support import Sessions

app = typer.Typer(
    name="defs",
    help="Validate, lint, deploy, import and read definitions (escalation, rollout, recovery, "
    "handoff, schedule).",
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


def shadow_warnings(definitions: list[LoadedDefinition]) -> list[str]:
    """`file:line:col: spec.order: warning: …` for each escalation policy that another
    policy, tried before it, always takes the cases of."""
    from definitions.selection import NamedPolicy, shadowed

    escalations = {d.name: d for d in definitions if d.kind == "escalation"}
    never = shadowed(
        [NamedPolicy(name, d.definition.spec) for name, d in escalations.items()]  # type: ignore[arg-type]
    )
    return [
        printable(
            str(escalations[name].source.problem(("spec", "order"), f"warning: {name} {why}"))
        )
        for name, why in sorted(never.items())
    ]


def _check(paths: list[Path] | None, *, with_lint: bool) -> None:
    from store.registry import CATALOG_DIR, DefinitionProblems, check_folder

    chosen = paths or [CATALOG_DIR]
    for path in chosen:
        if not path.exists():
            raise fail(f"no such file or folder: {printable(str(path))}")
    try:
        definitions = check_folder(chosen, with_lint=with_lint)
    except DefinitionProblems as exc:
        raise _report(exc.problems) from None
    if with_lint:
        from definitions.lint import lint_warnings
        from store.registry import templates_for

        # What lint accepts but a person should know (a timeout that pays with no human,
        # a policy that can never be chosen): printed, not refused.
        accepted = lint_warnings(definitions, templates=templates_for(chosen[0]))
        for warning in [*(printable(str(p)) for p in accepted), *shadow_warnings(definitions)]:
            typer.echo(warning, err=True)
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
    from definitions.selection import NamedPolicy, shadowed
    from store.migrate import upgrade
    from store.registry import CATALOG_DIR, DefinitionProblems, deploy_folder, latest_of_kind

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

    async def deployed_policies(sessions: Sessions) -> list[NamedPolicy]:
        return [
            NamedPolicy(p.name, p.escalation) for p in await latest_of_kind(sessions, "escalation")
        ]

    # What is live now, this folder's and earlier deployments' together, decides selection.
    for name, why in sorted(shadowed(with_database(settings, deployed_policies)).items()):
        typer.echo(f"warning: escalation policy {name} {why}", err=True)


@app.command()
def explain(
    customer: Annotated[
        str | None, typer.Option("--customer", help="The customer id, e.g. C-0017.")
    ] = None,
    priority: Annotated[str | None, typer.Option("--priority", help="p1 to p4.")] = None,
    stage: Annotated[str, typer.Option("--stage", help="The case's stage.")] = "support",
    ticket: Annotated[str, typer.Option("--ticket", help="The ticket id.")] = "T-EXPLAIN",
    channel: Annotated[str | None, typer.Option("--channel", help="chat, email, …")] = None,
    subject: Annotated[str | None, typer.Option("--subject", help="The ticket subject.")] = None,
    case_file: Annotated[
        Path | None,
        typer.Option(
            "--file",
            help="A JSON file with the case instead of the options: ticket_id, customer_id, "
            "priority, stage, channel, subject.",
        ),
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Which escalation policy would take a case, and why: every deployed policy in
    selection order, whether it covers the priority, each clause of its match with its
    value for this ticket and customer (from the CRM), and the one chosen."""
    from rich.markup import escape
    from rich.table import Table

    from activities.backends import Backends
    from activities.settings import load_adapter_settings
    from client.cases import check_customer, explain_policies

    fields: dict[str, Any] = {
        "ticket_id": ticket,
        "customer_id": customer,
        "priority": priority,
        "stage": stage,
        "channel": channel,
        "subject": subject,
    }
    if case_file is not None:
        try:
            given = json.loads(case_file.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise fail(f"--file: cannot read {printable(str(case_file))}: {exc}") from None
        if not isinstance(given, dict):
            raise fail("--file: give a JSON object with ticket_id, customer_id, priority, …")
        fields.update(given)
    case = case_from_options(fields, datetime.now(UTC))
    settings = settings_or_exit()

    async def work(sessions: Sessions) -> tuple[bool, list[PolicyCandidate]]:
        backends = Backends.from_settings(load_adapter_settings(), sessions)
        profile = await check_customer(backends.crm, case.customer_id, allow_unknown=True)
        return profile is not None, await explain_policies(sessions, case, profile)

    known, candidates = with_database(settings, work)
    if as_json:
        print_json(
            {
                "case": case.model_dump(mode="json", exclude={"opened_at"}),
                "customer_known": known,
                "candidates": [c.as_json() for c in candidates],
                "chosen": next((c.ref for c in candidates if c.chosen), None),
            }
        )
        return
    table = Table(title=f"policies for {case.priority} at stage {case.stage}", title_justify="left")
    for column in ("order", "policy", "covers", "match", "clauses", "result"):
        table.add_column(column, overflow="fold")
    for c in candidates:
        clauses = "; ".join(f"{x.clause} → {x.value}" for x in c.clauses)
        if c.chosen:
            result = "[bold green]chosen[/]"
        elif c.refusal:
            result = "skipped"
        elif c.matched is None:
            result = "not evaluable"
        elif c.matched:
            result = "matches (an earlier one took it)"
        else:
            result = "no match"
        table.add_row(
            str(c.order),
            c.ref,
            "yes" if c.refusal is None else "no",
            escape(c.match),
            escape(clauses),
            result,
        )
    console.print(table)
    if not known:
        console.print(f"{case.customer_id} is not in the CRM: customer.* has only the id")
    chosen = next((c.ref for c in candidates if c.chosen), None)
    console.print(
        f"chosen: {chosen}" if chosen else "no deployed policy takes this case", highlight=False
    )


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
    from store.registry import list_versions

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
    import yaml

    return yaml.safe_dump(document, sort_keys=False, allow_unicode=True, width=100)


@app.command()
def show(
    ref: Annotated[str, typer.Argument(help="NAME or NAME@VERSION (default: the newest).")],
    as_json: JsonOption = False,
) -> None:
    """Print a deployed definition as YAML (or JSON)."""
    from rich.syntax import Syntax

    from store.registry import body, list_versions

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
    header = (
        f"# {info.name}@{info.version} ({info.kind}) sha256:{info.content_hash[:12]} "
        f"deployed {info.deployed_at:%Y-%m-%d %H:%M} by {printable(info.deployed_by or '-')}"
    )
    text = _as_yaml(document)
    if not console.is_terminal:
        # Piped or redirected: the YAML exactly as dumped, never wrapped, so it loads again.
        typer.echo(f"{header}\n{text}", nl=False)
        return
    console.print(header, highlight=False, markup=False)
    console.print(Syntax(printable(text), "yaml", theme="ansi_dark", word_wrap=True))


@app.command()
def diff(
    name: Annotated[str, typer.Argument(help="Definition name.")],
    old: Annotated[int, typer.Argument(help="Older version.", min=1)],
    new: Annotated[int, typer.Argument(help="Newer version.", min=1)],
) -> None:
    """A unified diff of two deployed versions' YAML."""
    from rich.syntax import Syntax

    from store.registry import body

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
    from definitions.models import json_schema

    typer.echo(json.dumps(json_schema(), indent=2, ensure_ascii=False))


VENDORS = ("pagerduty", "opsgenie")


@app.command("import")
def import_command(
    vendor: Annotated[str, typer.Argument(metavar="VENDOR", help="pagerduty or opsgenie.")],
    files: Annotated[
        list[Path],
        typer.Argument(
            metavar="FILE",
            help="The vendor's API answers as JSON: escalation policies and schedules (and "
            "users, for their emails); one answer per file or a JSON list of them.",
        ),
    ],
    out: Annotated[
        Path,
        typer.Option(
            "--out", metavar="DIR", help="Where to write (escalation/ and schedule/ below it)."
        ),
    ] = Path("."),
    force: Annotated[
        bool, typer.Option("--force", help="Replace definition files that exist already.")
    ] = False,
    as_json: JsonOption = False,
) -> None:
    """Write definitions from PagerDuty or Opsgenie escalation policies and schedules.

    Every file is checked by the definitions loader before any is written.
    Prints a warning line per thing that could not be carried over (and why),
    then the files written."""
    from definitions.importers.common import MAX_JSON_BYTES, ImportRefused, read_json, to_yaml
    from definitions.importers.opsgenie import import_opsgenie
    from definitions.importers.pagerduty import import_pagerduty
    from definitions.loader import read_documents, validate_document

    if vendor not in VENDORS:
        raise fail(f"VENDOR: {printable(vendor)!r} is not {' or '.join(VENDORS)}")
    payloads: list[tuple[str, Any]] = []
    try:
        for file in files:
            try:
                with file.open("rb") as handle:
                    raw = handle.read(MAX_JSON_BYTES + 1)
            except OSError as exc:
                raise fail(
                    f"FILE: cannot read {printable(str(file))}: {exc.strerror or exc}"
                ) from None
            payloads.append((printable(str(file)), read_json(raw, printable(str(file)))))
        convert = import_pagerduty if vendor == "pagerduty" else import_opsgenie
        result = convert(payloads, now=datetime.now(UTC))
    except ImportRefused as exc:
        raise fail(printable(str(exc))) from None
    if not result.definitions:
        why = [printable(line) for line in result.lines()]
        if as_json:  # one {"error": ...} line, the reasons in it
            raise fail(f"nothing to write: no escalation or schedule could be imported: {why}")
        for line in why:
            typer.echo(f"warning: {line}", err=True)
        raise fail("nothing to write: no escalation or schedule could be imported")

    # Every file is checked by the loader before any is written: all or nothing.
    planned: list[tuple[Path, str]] = []
    problems: list[Problem] = []
    for definition in result.definitions:
        path = out / definition.kind / f"{definition.name}.yaml"
        text = to_yaml(definition)
        documents, found = read_documents(text.encode("utf-8"), str(path))
        problems += found
        for document in documents:
            problems += validate_document(document)[1]
        planned.append((path, text))
    if problems:
        for problem in problems:
            typer.echo(printable(str(problem)), err=True)
        raise fail(f"the imported definitions do not validate ({plural(len(problems), 'problem')})")
    existing = [path for path, _ in planned if path.exists()]
    if existing and not force:
        raise fail(
            f"{printable(str(existing[0]))} exists already: pass --force to replace it "
            "(nothing was written)"
        )
    for path, text in planned:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
        except OSError as exc:
            raise fail(
                f"--out: cannot write {printable(str(path))}: {exc.strerror or exc}"
            ) from None
    written = [
        {"file": str(path), "kind": d.kind, "name": d.name, "source": d.source}
        for (path, _), d in zip(planned, result.definitions, strict=True)
    ]
    if as_json:
        print_json({"written": written, "not_carried_over": result.lines()})
        return
    for line in result.lines():
        typer.echo(f"warning: {printable(line)}", err=True)
    for row in written:
        # One line per file, never wrapped: scripts and people read the paths whole.
        typer.echo(
            f"wrote {printable(row['file'])} ({row['kind']} {row['name']}, from "
            f"{printable(row['source'])})"
        )
