"""The escalation case's activity contracts: the commands an activity sends a case (the
handoff's agent accepting acknowledges it, the conversation's end resolves it).

Pure pydantic, importing nothing with I/O: workflows may import it, and the activities never
import workflows/.
"""

from __future__ import annotations

from pydantic import BaseModel, Field


class Acknowledge(BaseModel):
    by: str = Field(min_length=1, max_length=200)
    first_response_only: bool = Field(
        False,
        description="an agent's public reply: it acknowledges a case not yet acknowledged "
        "and changes nothing on one that is",
    )


class Resolve(BaseModel):
    by: str = Field(min_length=1, max_length=200)
    outcome: str | None = Field(
        None, max_length=200, description="how it ended when not solved (a chat given back)"
    )
