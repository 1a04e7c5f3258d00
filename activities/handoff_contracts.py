"""The handoff's activity contracts: what the handoff workflow and the presence activities
exchange (queues, offers, agents, the bot's instruction, the command to the handoff's case).

Pure pydantic, importing nothing with I/O: workflows may import it, and the activities never
import workflows/.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

AgentStatus = Literal["available", "busy", "offline"]
Routing = Literal["opsflow", "vendor"]
"""Who picks the agent: opsflow itself (sandbox presence: offers with a timeout) or the
ticketing vendor (Zendesk: the ticket goes to the queue's group, Zendesk assigns it)."""


class _Wire(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class QueueRequest(_Wire):
    queue: str = Field(min_length=1, max_length=64)
    skills: list[str] | None = Field(None, description="required skills; None: the queue's own")
    languages: list[str] = Field(default_factory=list, description="any of these; empty: any")
    exclude_conversation: str | None = Field(
        None, max_length=64, description="do not count this conversation's own ticket"
    )


class QueueInfo(_Wire):
    id: str
    name: str
    timezone: str
    hours: str | dict[str, str] = Field(description="`24x7` or BusinessCalendar hours")
    skills: list[str] = Field(description="the skills asked of its agents (the request's)")
    depth: int = Field(description="conversations waiting in the queue (unassigned)")
    staffed: int = Field(description="matching agents not offline")
    free_slots: int = Field(description="free capacity of matching available agents")
    estimated_wait_seconds: int | None = Field(description="None: no one can take it")
    routing: Routing = Field(
        "opsflow", description="vendor: the ticketing vendor assigns; no estimate, no offers"
    )
    vendor: str | None = Field(None, description="the vendor that routes (`zendesk`)")


class AssignGroup(_Wire):
    """Hand the conversation's ticket to the vendor group of `queue` (vendor routing)."""

    idempotency_key: str = Field(min_length=1, max_length=400)
    ticket_id: str = Field(min_length=1, max_length=64)
    queue: str = Field(min_length=1, max_length=64)


class GroupAssigned(_Wire):
    ticket_id: str
    group: str = Field(description="the vendor's group id")
    backend: str


class PickAgent(_Wire):
    idempotency_key: str = Field(min_length=1, max_length=400)
    conversation_id: str
    queue: str
    skills: list[str] = Field(default_factory=list)
    languages: list[str] = Field(default_factory=list)
    exclude: list[str] = Field(default_factory=list, description="agents not to offer again")
    workflow_id: str | None = Field(
        None,
        max_length=200,
        description="wait in line: the workflow a free agent wakes (signal `agent_free`); "
        "None: take any free agent now, no place in line (runs recorded before)",
    )
    waiting_since: datetime | None = Field(None, description="the place in line: first come")
    priority: str = Field("p2", max_length=10, description="p1 is served before p2, ...")


class Reservation(_Wire):
    agent_id: str | None = Field(description="None: no matching agent has free capacity")
    name: str | None = None
    skills: list[str] = Field(default_factory=list)
    languages: list[str] = Field(default_factory=list)
    idle_seconds: int = 0
    woken: list[str] = Field(
        default_factory=list, description="workflows ahead in line told a free agent is theirs"
    )


class LeaveQueue(_Wire):
    """The conversation stops waiting (it ended, or was called back): out of the line."""

    conversation_id: str = Field(min_length=1, max_length=64)


class ReleaseAgent(_Wire):
    idempotency_key: str = Field(min_length=1, max_length=400)
    agent_id: str


class AgentReleased(_Wire):
    agent_id: str
    active_conversations: int
    woken: list[str] = Field(
        default_factory=list, description="the longest-waiting workflows the agent can take"
    )


class SetAgentStatus(_Wire):
    agent_id: str = Field(min_length=1, max_length=64)
    status: AgentStatus


class AgentView(_Wire):
    id: str
    name: str
    team: str
    skills: list[str]
    languages: list[str]
    status: str
    capacity: int
    active_conversations: int
    status_since: datetime


class OpenTickets(_Wire):
    customer_id: str
    exclude_tag: str | None = None


class TicketBrief(_Wire):
    id: str
    subject: str
    status: str
    priority: str


class BotAction(_Wire):
    """An instruction to the bot's webhook (`stop_replying`, `resume`), sent once per key."""

    idempotency_key: str = Field(min_length=1, max_length=400)
    conversation_id: str
    customer_id: str
    action: Literal["stop_replying", "resume"]
    reason: str = Field("", max_length=500)


class BotActionSent(_Wire):
    message_id: str
    backend: str


class CaseCommand(_Wire):
    """An update the handoff sends to its escalation case (`case-<ticket>`): the agent's
    accept acknowledges it (the first response), the conversation's end resolves it. The
    key is the update id, so a retried activity applies it once."""

    idempotency_key: str = Field(min_length=1, max_length=400)
    workflow_id: str = Field(min_length=1, max_length=200)
    command: Literal["acknowledge", "resolve"]
    by: str = Field(min_length=1, max_length=200)
    outcome: str | None = Field(
        None, max_length=200, description="how the conversation ended, when not resolved"
    )


class CaseCommandDone(_Wire):
    applied: bool = Field(description="False: the case refused it or had ended already")
    detail: str = Field("", description="the case's reason when it was not applied")
