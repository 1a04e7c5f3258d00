"""The workflow sandbox opsflow's workers use.

Definitions carry compiled conditions and templates; their libraries, and opsflow's own
modules (the workflow definitions included), are passed through the sandbox rather than
re-imported for every run: building pydantic classes again per run costs far more than the
run itself, lazily imported submodules would otherwise appear after the workflow loaded, and
a worker holding thousands of waiting cases held a copy of its workflow module per case
(as the tuned hand-written baseline in bench/ does, every module is passed through). What
the sandbox would have caught in a workflow module (a clock, randomness, I/O) is kept out by
the import contracts (.importlinter: workflows/ import no I/O) and by the replay of recorded
histories (tests/test_replay.py).
"""

from __future__ import annotations

import importlib.util
import pkgutil
from collections.abc import Callable

from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner, SandboxRestrictions


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
    # every kind's workflow, model, decision core and topic modules, and the shared helpers
    *_modules("workflows", lambda name: name != "sandbox"),
)

WORKFLOW_RUNNER = SandboxedWorkflowRunner(
    restrictions=SandboxRestrictions.default.with_passthrough_modules(*PASSED_THROUGH)
)
