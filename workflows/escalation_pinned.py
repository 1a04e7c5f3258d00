"""The escalation messages that carry a pinned policy: a run's input and the migrate command.

Apart from the case's state and its other commands (workflows/escalation_model.py) so that
reading a case (`opsflow case show`, `case list`) does not import every kind's policy models.
"""

from __future__ import annotations

from pydantic import BaseModel, Field

from definitions.models import PinnedDefinition
from workflows.escalation_model import (
    MAX_HISTORY_EVENTS,
    MAX_UPDATES_PER_RUN,
    CaseInfo,
    EscalationState,
)


class EscalationInput(BaseModel):
    """What starts a case's run: the case, the pinned policy, and on continue-as-new the
    state it carries."""

    case: CaseInfo
    policy: PinnedDefinition
    carried: EscalationState | None = None
    max_history_events: int = Field(
        MAX_HISTORY_EVENTS, ge=20, description="continue as new past this many events"
    )
    max_updates: int = Field(
        MAX_UPDATES_PER_RUN,
        ge=1,
        le=1_800,
        description="continue as new after this many commands (the server refuses a run's "
        "2,001st update)",
    )
    by: str | None = Field(None, max_length=200, description="who opened the case")


class Migrate(BaseModel):
    """Move a case to another version of its policy (or another escalation policy): the
    clocks take the new targets and calendar and keep the time already spent and any pause."""

    policy: PinnedDefinition
    by: str = Field(min_length=1, max_length=200, description="who migrates it")
