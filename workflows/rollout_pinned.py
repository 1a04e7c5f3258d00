"""The rollout message that carries a pinned plan: a run's input.

Apart from the rollout's state and its commands (workflows/rollout_model.py) so that reading
a rollout (`opsflow rollout status`, `rollout list`) does not import every kind's definition
models and cel-python (about 0.1 s of the command's start), as workflows/escalation_pinned.py
is for a case.
"""

from __future__ import annotations

from pydantic import BaseModel, Field

from definitions.models import PinnedDefinition
from workflows.rollout_model import ChangeRequest, RolloutState


class RolloutInput(BaseModel):
    """What starts a run (and, with `carried`, continues one as new)."""

    change: ChangeRequest
    plan: PinnedDefinition
    carried: RolloutState | None = None
    attempt: int = Field(
        1, ge=1, description="a retry of a finished change starts a new run at attempt N+1"
    )
