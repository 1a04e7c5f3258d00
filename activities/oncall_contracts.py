"""What an escalation level's notification adds to `notify.send`'s input: the moment the level
fired (an `oncall:<schedule>` recipient is whoever was on call then) and, for a level with
`round_robin: true`, the targets the activity picks one of.

An activity contract (input types only, no I/O), so workflows may import it. Every field is
optional: histories recorded before these fields existed send a plain SendMessage.
"""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field

from activities.models import SendMessage


class RoundRobin(BaseModel):
    """Send to one of `targets`, the next in turn for (`definition`, `level`) across cases."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    definition: str = Field(min_length=1, max_length=200, description="The policy's name.")
    level: str = Field(
        min_length=1,
        max_length=100,
        description="The level within the policy, e.g. `p1/2` (priority and level number).",
    )
    targets: list[str] = Field(
        min_length=1,
        max_length=50,
        description="The level's recipients as the workflow resolved them (`agent:ana`, "
        "`oncall:support-primary`, `queue:tier-2`, ...), in the order written.",
    )


class LevelMessage(SendMessage):
    """A message an escalation level sends: SendMessage plus what the workflow knew when the
    level fired. `recipient` is ignored when `round_robin` is given (the pick replaces it)."""

    fired_at: datetime | None = Field(
        None,
        description="When the level fell due (LevelFired.at); default: when the activity was "
        "first scheduled, which a retry does not move",
    )
    round_robin: RoundRobin | None = None
