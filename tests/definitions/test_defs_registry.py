"""The registry and `opsflow defs`: deploy is idempotent, versions are immutable."""

from __future__ import annotations

import json
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from typer.testing import CliRunner

from definitions.errors import OpsflowError
from store import registry
from store.db import create_engine, session_factory
from store.migrate import upgrade
from store.registry import CATALOG_DIR, DefinitionNotFound, DefinitionProblems
from worker.cli import app

BROKEN = Path(__file__).parent / "broken"


@pytest.fixture
async def sessions(tmp_path: Path) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    url = make_url(f"sqlite:///{tmp_path / 'registry.db'}")
    upgrade(url)
    engine = create_engine(url)
    yield session_factory(engine)
    await engine.dispose()


def _copy_catalog(tmp_path: Path) -> Path:
    folder = tmp_path / "defs"
    shutil.copytree(CATALOG_DIR, folder)
    return folder


async def test_deploy_twice_creates_no_new_version(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    first = await registry.deploy_folder(sessions, CATALOG_DIR, deployed_by="test")
    assert {r.status for r in first} == {"created"}
    assert len(first) == 7
    second = await registry.deploy_folder(sessions, CATALOG_DIR)
    assert {r.status for r in second} == {"unchanged"}
    assert [r.version for r in second] == [1] * 7
    assert len(await registry.list_versions(sessions)) == 7


async def test_changed_content_becomes_a_new_version_and_old_runs_keep_theirs(
    sessions: async_sessionmaker[AsyncSession], tmp_path: Path
) -> None:
    folder = _copy_catalog(tmp_path)
    await registry.deploy_folder(sessions, folder)
    v1 = await registry.latest(sessions, "support")
    path = folder / "escalation" / "support.yaml"
    path.write_text(path.read_text().replace("resolution: 4h", "resolution: 3h", 1))
    results = {r.name: r for r in await registry.deploy_folder(sessions, folder)}
    assert results["support"].status == "created" and results["support"].version == 2
    assert results["renewal"].status == "unchanged"
    v2 = await registry.latest(sessions, "support")
    assert v2.version == 2 and v2.content_hash != v1.content_hash
    assert (await registry.get(sessions, "support", 1)) == v1
    assert v1.escalation.slas[0].resolution.total_seconds() == 4 * 3600
    assert [v.version for v in await registry.list_versions(sessions, "support")] == [1, 2]

    # Going back to version 1's content cannot silently leave version 2 the newest.
    path.write_text(path.read_text().replace("resolution: 3h", "resolution: 4h", 1))
    with pytest.raises(OpsflowError, match="has the content of version 1"):
        await registry.deploy_folder(sessions, folder)


async def test_only_layout_changes_deploy_nothing(
    sessions: async_sessionmaker[AsyncSession], tmp_path: Path
) -> None:
    folder = _copy_catalog(tmp_path)
    await registry.deploy_folder(sessions, folder)
    path = folder / "handoff" / "chat-handoff.yaml"
    path.write_text(
        "# reformatted\n"
        + path.read_text().replace("  offer_timeout: 45s\n", "  offer_timeout:   45s   # seconds\n")
    )
    results = await registry.deploy_folder(sessions, folder)
    assert {r.status for r in results} == {"unchanged"}


async def test_a_bad_folder_deploys_nothing(
    sessions: async_sessionmaker[AsyncSession], tmp_path: Path
) -> None:
    folder = _copy_catalog(tmp_path)
    shutil.copy(BROKEN / "05-level-beyond-sla.yaml", folder / "bad.yaml")
    with pytest.raises(DefinitionProblems) as caught:
        await registry.deploy_folder(sessions, folder)
    assert "bad.yaml:12:14: spec.levels[0].after:" in str(caught.value)
    assert await registry.list_versions(sessions) == []


async def test_latest_of_kind_and_missing(sessions: async_sessionmaker[AsyncSession]) -> None:
    await registry.deploy_folder(sessions, CATALOG_DIR)
    escalations = await registry.latest_of_kind(sessions, "escalation")
    assert [p.name for p in escalations] == [
        "onboarding",
        "renewal",
        "support",
    ]
    with pytest.raises(DefinitionNotFound):
        await registry.latest(sessions, "nope")
    with pytest.raises(DefinitionNotFound):
        await registry.get(sessions, "support", 7)


# --- the command line ----------------------------------------------------------------------

runner = CliRunner()


def test_cli_validate_and_lint_the_catalog() -> None:
    for command in ("validate", "lint"):
        result = runner.invoke(app, ["defs", command])
        assert result.exit_code == 0, result.output
        assert "ok: 7 definitions in 7 files" in result.output


def test_cli_reports_every_problem_one_per_line() -> None:
    paths = [str(BROKEN / "01-duration-words.yaml"), str(BROKEN / "44-second-document-bad.yaml")]
    result = runner.invoke(app, ["defs", "validate", *paths])
    assert result.exit_code == 1
    lines = result.stderr.strip().splitlines()
    assert lines[0].endswith(
        "01-duration-words.yaml:12:14: spec.levels[0].after: '30 minutes' is not a duration: "
        "write e.g. 90s, 15m, 4h, 2d, 1h30m or PT15M"
    )
    assert "44-second-document-bad.yaml:25:54: spec.slas[0].resolution:" in lines[1]
    assert lines[-1] == "2 problems"
    assert "Traceback" not in result.output


def test_cli_hostile_folder_never_tracebacks() -> None:
    hostile = Path(__file__).resolve().parents[3] / "shared" / "fixtures" / "hostile"
    if not hostile.exists():
        pytest.skip("hostile corpus not present")
    result = runner.invoke(app, ["defs", "lint", str(hostile)])
    assert result.exit_code == 1
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert "\x1b" not in result.stderr  # control characters from the files are escaped


def test_cli_schema_is_json() -> None:
    result = runner.invoke(app, ["defs", "schema"])
    assert result.exit_code == 0
    schema = json.loads(result.stdout)
    assert "EscalationDefinition" in schema["$defs"]


def test_cli_deploy_list_show_diff(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPSFLOW_DATABASE_URL", f"sqlite:///{tmp_path / 'cli.db'}")
    folder = _copy_catalog(tmp_path)
    first = runner.invoke(app, ["defs", "deploy", str(folder), "--json", "--by", "ana"])
    assert first.exit_code == 0, first.output
    assert {row["status"] for row in json.loads(first.stdout)} == {"created"}
    again = runner.invoke(app, ["defs", "deploy", str(folder), "--json"])
    assert {row["status"] for row in json.loads(again.stdout)} == {"unchanged"}

    path = folder / "escalation" / "support.yaml"
    path.write_text(path.read_text().replace("warn_at: [50, 80]", "warn_at: [50, 75, 90]", 1))
    assert runner.invoke(app, ["defs", "deploy", str(folder)]).exit_code == 0

    listed = json.loads(runner.invoke(app, ["defs", "list", "--json"]).stdout)
    assert {row["name"]: row["version"] for row in listed}["support"] == 2
    shown = json.loads(runner.invoke(app, ["defs", "show", "support@1", "--json"]).stdout)
    assert shown["body"]["spec"]["by_priority"]["p1"]["warn_at"] == [50, 80]
    assert shown["deployed_by"] == "ana"

    diff = runner.invoke(app, ["defs", "diff", "support", "1", "2"], terminal_width=200)
    assert diff.exit_code == 0
    assert "--- support@1" in diff.stdout and "+++ support@2" in diff.stdout
    assert "-      - 80" in diff.stdout and "+      - 75" in diff.stdout

    missing = runner.invoke(app, ["defs", "show", "support@9"])
    assert missing.exit_code == 1 and "has no version 9" in missing.stderr
