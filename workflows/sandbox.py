"""The workflow sandbox opsflow's workers use.

Definitions carry compiled conditions and templates; their libraries, and opsflow's own
pure helpers and pydantic models, are passed through the sandbox rather than re-imported for
every run: building pydantic classes again per run costs far more than the run itself, and
lazily imported submodules would otherwise appear after the workflow loaded. Only the
workflow modules (escalation, rollout, recovery, handoff) are loaded afresh per run.
"""

from __future__ import annotations

from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner, SandboxRestrictions

PASSED_THROUGH = (
    "jinja2",
    "markupsafe",
    "celpy",
    "lark",
    "pydantic",
    "pydantic_core",
    "yaml",
    # opsflow's own deterministic helpers and models: imported once per worker, not per run
    "definitions",
    "activities.models",
    "activities.handoff_contracts",
    "activities.escalation_contracts",
    "activities.rollout_contracts",
    "activities.search_attributes",
    "workflows.metrics",
    "workflows.sla",
    "workflows.actions",
    "workflows.escalation_model",
    "workflows.rollout_model",
    "workflows.handoff_model",
    "workflows.handoff_logic",
    "workflows.recovery_rules",
    "workflows.recovery_model",
    # each kind's pure decision core (escalation, rollout, handoff, recovery)
    "workflows.escalation_core",
    "workflows.rollout_core",
    "workflows.handoff_core",
    "workflows.recovery_core",
)

WORKFLOW_RUNNER = SandboxedWorkflowRunner(
    restrictions=SandboxRestrictions.default.with_passthrough_modules(*PASSED_THROUGH)
)
