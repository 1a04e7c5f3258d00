"""`opsflow defs explain`: which escalation policy takes a case and why, in selection order
(`spec.order`); lint and deploy warn about a policy that can never be chosen."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from store.registry import CATALOG_DIR, deploy_folder
from store.seed import seed_sandbox
from tests.cli_support import CommandLine
from tests.conftest import AppDb

pytestmark = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)


@pytest.fixture
async def cli(app_db: AppDb, tmp_path: Path) -> CommandLine:
    await seed_sandbox(app_db.sessions)
    await deploy_folder(app_db.sessions, CATALOG_DIR, deployed_by="test")
    return CommandLine(
        {
            "OPSFLOW_DATABASE_URL": app_db.url.render_as_string(hide_password=False),
            "OPSFLOW_DATA_DIR": str(tmp_path),
            "OPSFLOW_LOG_LEVEL": "error",
            "NO_COLOR": "1",
            "COLUMNS": "200",
        }
    )


async def test_explain_on_the_catalog(cli: CommandLine) -> None:
    renewal = (
        await cli.ok("defs", "explain", "--customer", "C-0017", "--priority", "p2", "--json")
    ).json()
    assert renewal["customer_known"] and renewal["chosen"] == "renewal@1"
    first = renewal["candidates"][0]
    assert (first["policy"], first["order"], first["matched"]) == ("renewal@1", 10, True)
    assert first["clauses"] == [{"clause": 'customer.journey_stage == "renewal"', "value": "true"}]
    assert [c["policy"] for c in renewal["candidates"]] == [
        "renewal@1",
        "onboarding@1",
        "support@1",
    ]

    ordinary = (
        await cli.ok("defs", "explain", "--customer", "C-0002", "--priority", "p1", "--json")
    ).json()
    assert ordinary["chosen"] == "support@1"
    reasons = {c["policy"]: c for c in ordinary["candidates"]}
    assert reasons["renewal@1"]["matched"] is False and not reasons["renewal@1"]["chosen"]
    assert reasons["support@1"]["clauses"] == [{"clause": "true", "value": "true"}]

    table = (await cli.ok("defs", "explain", "--customer", "C-0017", "--priority", "p2")).stdout
    assert "chosen: renewal@1" in table and "matches (an earlier one took it)" in table

    refused = await cli.refused("defs", "explain", "--customer", "C-0017", "--priority", "p9")
    assert refused.startswith("error: --priority:")


async def test_a_policy_that_can_never_be_chosen_is_warned_about(
    cli: CommandLine, tmp_path: Path
) -> None:
    folder = tmp_path / "defs"
    shutil.copytree(CATALOG_DIR, folder)
    renewal = folder / "escalation" / "renewal.yaml"
    renewal.write_text(renewal.read_text().replace("order: 10", "order: 2000"))
    linted = await cli.ok("defs", "lint", str(folder))
    [warning] = [line for line in linted.stderr.splitlines() if "warning" in line]
    assert warning.startswith(f"{renewal}:10:")
    assert "renewal can never be chosen: support (tried first, order 1000)" in warning

    # The catalog as shipped: every policy can be chosen.
    assert "warning" not in (await cli.ok("defs", "lint")).stderr
    deployed = await cli.ok("defs", "deploy", str(folder), "--by", "ana")
    assert "warning: escalation policy renewal can never be chosen" in deployed.stderr


async def test_defs_show_writes_yaml_that_loads_again(cli: CommandLine, tmp_path: Path) -> None:
    """Piped into a file (no terminal), `defs show` is the document itself: it validates,
    loads to the same content and keeps every long line whole."""
    narrow = CommandLine({**cli.env, "COLUMNS": "80"})
    for name in ("support", "chat-handoff", "service-recovery", "new-billing-flow"):
        shown = (await narrow.ok("defs", "show", name)).stdout
        copy = tmp_path / f"{name}.yaml"
        copy.write_text(shown, encoding="utf-8")
        assert "ok: 1 definition in 1 file" in (await cli.ok("defs", "validate", str(copy))).stdout
        stored = (await cli.ok("defs", "show", name, "--json")).json()["body"]
        assert yaml.safe_load(shown) == stored


async def test_lint_prints_what_it_accepts_but_a_person_should_know(
    cli: CommandLine, tmp_path: Path
) -> None:
    """A credit gate whose timeout pays by itself is accepted with a warning at its line."""
    folder = tmp_path / "defs"
    shutil.copytree(CATALOG_DIR, folder)
    rules = folder / "recovery" / "service-recovery.yaml"
    rules.write_text(
        rules.read_text().replace(
            "on_timeout: escalate", "on_timeout: approve_reduced\n        reduced_amount: 25"
        )
    )
    linted = await cli.ok("defs", "lint", str(folder))
    [warning] = [line for line in linted.stderr.splitlines() if "approve_reduced" in line]
    assert warning.startswith(f"{rules}:") and "with no human involved" in warning
    assert "ok: " in linted.stdout
