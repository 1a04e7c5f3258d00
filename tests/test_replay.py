"""Every recorded history replays against today's workflow code.

A change that alters the commands a workflow issues (activities, timers, order) for runs
already in flight fails here; guard it with `workflow.patched`, or, for a change that is
meant to apply to new runs only, record the histories again (OPSFLOW_RECORD_HISTORIES=1).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from temporalio.client import WorkflowHistory
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import Replayer

from worker.assembly import WORKFLOWS
from workflows.sandbox import WORKFLOW_RUNNER

HISTORIES = sorted((Path(__file__).resolve().parent / "histories").glob("*.json"))


def test_every_workflow_kind_has_recorded_histories() -> None:
    kinds = {path.name.split("-")[0] for path in HISTORIES}
    for workflow_class in WORKFLOWS:
        kind = workflow_class.__name__.removesuffix("Workflow").lower()
        assert kind in kinds, (
            f"no recorded history for {workflow_class.__name__} in tests/histories"
        )


@pytest.mark.parametrize("path", HISTORIES, ids=[p.stem for p in HISTORIES])
async def test_history_replays(path: Path) -> None:
    text = path.read_text(encoding="utf-8")  # noqa: ASYNC240 (a small local file)
    history = WorkflowHistory.from_json(path.stem, text)
    replayer = Replayer(
        workflows=list(WORKFLOWS),
        data_converter=pydantic_data_converter,
        workflow_runner=WORKFLOW_RUNNER,
    )
    await replayer.replay_workflow(history)
