"""`opsflow case migrate` against a dev server: a dry run shows each clock's old and new due
moment and changes nothing; applying moves the case through its workflow and the ledger
says who; a bulk migration by visibility query skips what is already moved, refuses what the
new version does not cover, and can be run again."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from activities.deps import ActivityDeps
from definitions.loader import load_file
from store.registry import CATALOG_DIR, deploy, deploy_folder
from tests.cli_support import CommandLine
from tests.conftest import AppDb
from tests.escalation_support import new_ticket_id, policy_document
from worker.assembly import activity_functions
from workflows.escalation import EscalationWorkflow
from workflows.sandbox import WORKFLOW_RUNNER

pytestmark = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)


def _policy(name: str, slas: list[dict[str, str]]) -> dict[str, Any]:
    document = policy_document(
        match="false",
        priorities=[sla["priority"] for sla in slas],
        slas=slas,
        warn_at=[95],
        levels=[{"after": "6h", "actions": [{"type": "assign", "queue": "tier-2"}]}],
        repeat=0,
    )
    document["metadata"]["name"] = name
    return document


async def _deploy(db: AppDb, folder: Path, document: dict[str, Any]) -> None:
    path = folder / f"{document['metadata']['name']}.yaml"
    path.write_text(yaml.safe_dump(document), encoding="utf-8")
    loaded = load_file(path)
    assert not loaded.problems, loaded.problems
    await deploy(db.sessions, loaded.definitions, deployed_by="test")


@pytest.fixture
async def cli(
    dev_env: WorkflowEnvironment, app_db: AppDb, tmp_path: Path
) -> AsyncIterator[CommandLine]:
    await deploy_folder(app_db.sessions, CATALOG_DIR, deployed_by="test")
    queue = f"migrate-{uuid.uuid4()}"
    async with Worker(
        dev_env.client,
        task_queue=queue,
        workflows=[EscalationWorkflow],
        workflow_runner=WORKFLOW_RUNNER,
        activities=activity_functions(ActivityDeps(sessions=app_db.sessions)),
    ):
        yield CommandLine.against(dev_env, app_db.url, queue, tmp_path)


def _at(text: str) -> datetime:
    return datetime.fromisoformat(text)


async def test_migrate_one_case_dry_run_then_apply_then_in_bulk(
    cli: CommandLine, app_db: AppDb, dev_env: WorkflowEnvironment, tmp_path: Path
) -> None:
    # A policy of this test's own (the dev server is shared): v2 halves P1's first response
    # and P2's, and drops P3.
    name = f"mig-{uuid.uuid4().hex[:8]}"
    v1, v2 = f"{name}@1", f"{name}@2"
    await _deploy(
        app_db,
        tmp_path,
        _policy(
            name,
            [
                {"priority": "p1", "first_response": "1h", "resolution": "4h"},
                {"priority": "p2", "first_response": "2h", "resolution": "8h"},
                {"priority": "p3", "first_response": "4h", "resolution": "1d"},
            ],
        ),
    )
    await _deploy(
        app_db,
        tmp_path,
        _policy(
            name,
            [
                {"priority": "p1", "first_response": "30m", "resolution": "4h"},
                {"priority": "p2", "first_response": "1h", "resolution": "8h"},
            ],
        ),
    )
    tickets = {priority: new_ticket_id() for priority in ("p1", "p2", "p3")}
    for priority, ticket in tickets.items():
        await cli.ok(
            "case", "open", "--ticket", ticket, "--customer", "C-0002", "--priority", priority,
            "--policy", v1, "--by", "ana",
        )  # fmt: skip
    one = tickets["p1"]

    # Dry run: the deadlines under both versions (24x7: 30 minutes sooner), nothing sent.
    text = await cli.ok("case", "migrate", "--to", v2, "--case", one, "--dry-run", "--by", "ana")
    assert f"case {one}: {v1} → {v2}: would migrate" in text.stdout
    assert "first response: running" in text.stdout and "budget 1h 00m → 0h 30m" in text.stdout
    dry = (
        await cli.ok(
            "case", "migrate", "--to", v2, "--case", one, "--dry-run", "--by", "ana", "--json"
        )
    ).json()
    assert dry["to"] == v2 and dry["dry_run"] is True and dry["counts"] == {"would migrate": 1}
    [planned] = dry["cases"]
    assert (planned["from"], planned["outcome"], planned["reason"]) == (v1, "would migrate", None)
    first = planned["clocks"]["first_response"]
    assert (first["old_budget_seconds"], first["new_budget_seconds"]) == (3600, 1800)
    assert _at(first["old_due"]) - _at(first["new_due"]) == timedelta(minutes=30)
    resolution = planned["clocks"]["resolution"]
    assert resolution["old_due"] == resolution["new_due"]  # 4h in both
    shown = (await cli.ok("case", "show", one, "--json")).json()
    assert shown["state"]["definition"] == v1
    assert "migrate" not in [entry["step"] for entry in shown["timeline"]]

    # Applied: through the workflow; its new deadline is the one the dry run showed.
    applied = (
        await cli.ok("case", "migrate", "--to", v2, "--case", one, "--by", "lena", "--json")
    ).json()
    [moved] = applied["cases"]
    assert (moved["from"], moved["to"], moved["outcome"]) == (v1, v2, "migrated")
    assert moved["url"].endswith(f"/workflows/case-{one}")
    new_due = _at(moved["clocks"]["first_response"]["new_due"])
    assert abs(new_due - _at(first["new_due"])) < timedelta(seconds=30)
    shown = (await cli.ok("case", "show", one, "--json")).json()
    assert shown["state"]["definition"] == v2
    assert _at(shown["state"]["clocks"]["first_response"]["due"]) == new_due
    [entry] = [e for e in shown["timeline"] if e["step"] == "migrate"]
    assert entry["detail"] == {"from": v1, "to": v2, "by": "lena"}

    # One case refused: one line, the case stays where it was.
    p3 = tickets["p3"]
    refused = await cli.refused("case", "migrate", "--to", v2, "--case", p3, "--by", "ana")
    assert refused == (
        f"error: case {p3} stays on {v1}: {v2} does not cover priority p3 (it covers p1, p2)"
    )

    # In bulk, by visibility query: the moved case is skipped, P2 moves, P3 is refused.
    query = "OpsCaseId IN (" + ", ".join(f'"{t}"' for t in tickets.values()) + ")"
    await _listed(dev_env, query, 3)
    bulk = ("case", "migrate", "--to", v2, "--query", query, "--by", "ana", "--json")
    outcome = await cli.run(*bulk, "--dry-run")
    assert outcome.exit_code == 1
    assert outcome.error_json() == {
        "error": "1 of 3 cases refused (each says why); nothing changed"
    }
    plan = {case["ticket"]: case for case in outcome.json()["cases"]}
    assert {t: plan[t]["outcome"] for t in tickets.values()} == {
        one: "skipped",
        tickets["p2"]: "would migrate",
        p3: "refused",
    }
    assert plan[one]["reason"] == f"already on {v2}"
    outcome = await cli.run(*bulk, "--rate", "20")
    assert outcome.exit_code == 1
    done = {case["ticket"]: case["outcome"] for case in outcome.json()["cases"]}
    assert done == {one: "skipped", tickets["p2"]: "migrated", p3: "refused"}
    assert outcome.json()["counts"] == {"skipped": 1, "migrated": 1, "refused": 1}
    # Run again (resumable): everything that could move has.
    outcome = await cli.run(*bulk)
    done = {case["ticket"]: case["outcome"] for case in outcome.json()["cases"]}
    assert done == {one: "skipped", tickets["p2"]: "skipped", p3: "refused"}
    text = await cli.run(*bulk[:-1])
    assert f"case {tickets['p2']}: skipped (already on {v2})" in text.stdout
    assert f"case {p3}: refused, stays on {v1} ({v2} does not cover priority p3" in text.stdout
    assert "2 skipped, 1 refused" in text.stdout

    # What --to and the options must be.
    no_version = await cli.refused("case", "migrate", "--to", name, "--case", one, "--by", "ana")
    assert f"--to: name the version to migrate to, e.g. {name}@2" in no_version
    rollout = await cli.refused(
        "case", "migrate", "--to", "new-billing-flow@1", "--case", one, "--by", "ana"
    )
    assert "not an escalation policy" in rollout
    both = await cli.refused("case", "migrate", "--to", v2, "--by", "ana")
    assert "give exactly one of --case or --query" in both
    bad_query = await cli.refused("case", "migrate", "--to", v2, "--query", "((", "--by", "ana")
    assert bad_query.startswith("error: --query: Temporal cannot run this query")
    for ticket in tickets.values():
        await cli.ok("case", "resolve", ticket, "--by", "ana")


async def _listed(env: WorkflowEnvironment, query: str, count: int) -> None:
    """Wait until visibility shows `count` runs for `query` (it lags the start a moment)."""
    for _ in range(200):
        found = [w async for w in env.client.list_workflows(query)]
        if len(found) >= count:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"visibility did not list {count} runs for {query}")
