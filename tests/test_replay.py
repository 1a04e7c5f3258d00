"""Every recorded history replays against today's workflow code.

A change that alters the commands a workflow issues (activities, timers, order) for runs
already in flight fails here; guard it with `workflow.patched`, or, for a change that is
meant to apply to new runs only, record the histories again (OPSFLOW_RECORD_HISTORIES=1).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from temporalio.client import WorkflowHistory
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import Replayer
from temporalio.workflow import NondeterminismError

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


@pytest.mark.parametrize("kind", ["escalation", "handoff", "recovery", "rollout"])
async def test_a_history_that_no_longer_matches_the_code_fails_to_replay(kind: str) -> None:
    """The check has teeth: a history whose first activity is not the one today's code
    schedules (as if the code had reordered its commands) must fail, not pass quietly."""
    path = next(p for p in HISTORIES if p.name.startswith(f"{kind}-"))
    recorded = json.loads(path.read_text(encoding="utf-8"))
    scheduled = next(
        event["activityTaskScheduledEventAttributes"]
        for event in recorded["events"]
        if "activityTaskScheduledEventAttributes" in event
    )
    scheduled["activityType"]["name"] = "not.what.the.code.schedules"
    history = WorkflowHistory.from_json(path.stem, json.dumps(recorded))
    replayer = Replayer(
        workflows=list(WORKFLOWS),
        data_converter=pydantic_data_converter,
        workflow_runner=WORKFLOW_RUNNER,
    )
    with pytest.raises(NondeterminismError):
        await replayer.replay_workflow(history)
