"""The service-recovery workflow's messages and inputs: what clients, the intake and the
worker exchange with `customer-<id>`.

Kept apart from workflows/recovery.py, which the sandbox loads afresh for every run: these
pydantic classes are built once per process (workflows/sandbox.py passes them through).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from decimal import Decimal
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from definitions.models import PinnedDefinition
from workflows.recovery_rules import RecoveryState

MAX_HISTORY_EVENTS = 10_000
OpsState = Literal["watching", "acting", "awaiting_approval", "with_person", "silenced"]


def customer_workflow_id(customer_id: str) -> str:
    return f"customer-{customer_id}"


def rules_digest(rules: list[PinnedDefinition]) -> list[str]:
    return sorted(f"{p.ref}#{p.content_hash}" for p in rules)


class RecoveryRules(BaseModel):
    """The recovery rule sets deployed now (`latest_of_kind(sessions, "recovery")`)."""

    model_config = ConfigDict(extra="forbid")

    rules: list[PinnedDefinition]


class RulesDigest(BaseModel):
    """Which rule sets are deployed now, by `rules_digest`: what each `event` signal carries
    instead of the rule sets themselves. A workflow whose own digest differs loads the named
    versions once (activity `recovery.rule_sets`) and switches to them from that event on."""

    model_config = ConfigDict(extra="forbid")

    digest: list[str]


class RecoveryInput(BaseModel):
    rules: list[PinnedDefinition] = Field(default_factory=list)
    carried: RecoveryState | None = None
    max_history_events: int = Field(MAX_HISTORY_EVENTS, ge=100)
    legacy_event_names: bool = Field(
        False, description="carried by continue-as-new of a run started before the contract"
    )


class PreviousState(BaseModel):
    """Ask for what the customer's last run knew when it ended (activity
    `recovery.previous_state`)."""

    customer_id: str = Field(min_length=1, max_length=200)


class RecoveryMemory(BaseModel):
    """What a run of `customer-<id>` that ended idle left for the next one: its state (seen
    events, counters, history) as recorded in the ledger step `run-ended-...`; None when the
    customer had no earlier run (or it was recorded before runs remembered)."""

    state: RecoveryState | None = None


MEMORY_STEP = "run-ended-"


class Approve(BaseModel):
    by: str = Field(min_length=1, max_length=200)
    approval_id: int | None = Field(None, description="default: the oldest waiting approval")
    amount: Decimal | None = Field(None, gt=0, description="approve a smaller amount")
    note: str | None = Field(None, max_length=500)


class Reject(BaseModel):
    by: str = Field(min_length=1, max_length=200)
    approval_id: int | None = None
    reason: str = Field("", max_length=500)


class SilenceCommand(BaseModel):
    by: str = Field(min_length=1, max_length=200)
    rule: str | None = Field(None, description="<definition>/<rule> or <rule>; None: customer")
    until: datetime | None = None
    duration: timedelta | None = None
    reason: str = Field("", max_length=500)


class Unsilence(BaseModel):
    by: str = Field(min_length=1, max_length=200)
    rule: str | None = None


class CloseEpisode(BaseModel):
    by: str = Field(min_length=1, max_length=200)
    outcome: Literal["recovered", "not_recovered", "closed"] = "closed"


class RecoveryView(BaseModel):
    """The `state` query: everything, plus what the UI shows."""

    state: RecoveryState
    ops_state: OpsState
    details: str
    next_wake: datetime | None


class RecoverySummary(BaseModel):
    customer_id: str
    events_seen: int
    episodes: int
    tally: dict[str, dict[str, int]]
