"""The workflow sandbox opsflow's workers use.

Definitions carry compiled conditions and templates; their libraries, and opsflow's own
pure helpers and pydantic models, are passed through the sandbox rather than re-imported for
every run: building pydantic classes again per run costs far more than the run itself, and
lazily imported submodules would otherwise appear after the workflow loaded. Only the
workflow modules (escalation, rollout, recovery, handoff) are loaded afresh per run.
"""

from __future__ import annotations

import importlib.util
import pkgutil
from collections.abc import Callable

from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner, SandboxRestrictions

WORKFLOW_MODULES = frozenset({"escalation", "rollout", "recovery", "handoff"})
"""The workflow definitions themselves: loaded afresh for each run."""


def _modules(package: str, keep: Callable[[str], bool]) -> tuple[str, ...]:
    """The modules of `package` that `keep` names, found without importing the package."""
    spec = importlib.util.find_spec(package)
    assert spec is not None and spec.submodule_search_locations is not None
    found = pkgutil.iter_modules(spec.submodule_search_locations)
    return tuple(sorted(f"{package}.{m.name}" for m in found if keep(m.name)))


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
    # the activity contracts (models, *_contracts, search attributes): pure pydantic
    *_modules(
        "activities",
        lambda name: name in ("models", "search_attributes") or name.endswith("_contracts"),
    ),
    # every kind's model, decision core and topic modules, and the shared helpers
    *_modules(
        "workflows",
        lambda name: name not in WORKFLOW_MODULES and name != "sandbox",
    ),
)

WORKFLOW_RUNNER = SandboxedWorkflowRunner(
    restrictions=SandboxRestrictions.default.with_passthrough_modules(*PASSED_THROUGH)
)
