"""The service-recovery workflow's state, inputs and messages: what clients, the intake and the
worker exchange with `customer-<id>`.

Kept apart from workflows/recovery.py, which the sandbox loads afresh for every run: these
pydantic classes are built once per process (workflows/sandbox.py passes them through). The
state and the input are also what the recovery event activities exchange with the workflow,
so they are defined in the activity contracts (activities/recovery_contracts.py) and named
here with the messages.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any, Literal

from pydantic import BaseModel, Field

from activities.recovery_contracts import (
    MAX_HISTORY_EVENTS,
    MEMORY_STEP,
    ApprovalStatus,
    Decision,
    Episode,
    EpisodeStatus,
    Outcome,
    PendingApproval,
    PreviousState,
    RecoveryInput,
    RecoveryMemory,
    RecoveryRules,
    RecoveryState,
    RulesDigest,
    ScoreEntry,
    Silence,
    StallWatch,
    SuppressedBy,
    customer_workflow_id,
    rules_digest,
)

__all__ = [
    "MAX_HISTORY_EVENTS",
    "MEMORY_STEP",
    "ApprovalStatus",
    "Approve",
    "CloseEpisode",
    "Decision",
    "Episode",
    "EpisodeStatus",
    "OpsState",
    "Outcome",
    "PendingApproval",
    "PreviousState",
    "RecoveryInput",
    "RecoveryMemory",
    "RecoveryRules",
    "RecoveryState",
    "RecoveryStatus",
    "RecoverySummary",
    "RecoveryView",
    "Reject",
    "RulesDigest",
    "ScoreEntry",
    "Silence",
    "SilenceCommand",
    "StallWatch",
    "SuppressedBy",
    "Unsilence",
    "customer_workflow_id",
    "offered_rules",
    "rules_digest",
]

OpsState = Literal["watching", "acting", "awaiting_approval", "with_person", "silenced"]


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


class RecoveryStatus(BaseModel):
    """What the status query (`view`) and every command return: the whole state, plus what
    the UI shows."""

    state: RecoveryState
    ops_state: OpsState
    details: str
    next_wake: datetime | None


# The name RecoveryStatus had before every kind named its status alike (issue 17); kept only
# while code written before the rename still imports it.
RecoveryView = RecoveryStatus


class RecoverySummary(BaseModel):
    customer_id: str
    events_seen: int
    episodes: int
    tally: dict[str, dict[str, int]]


def offered_rules(rules: Any) -> RecoveryRules | RulesDigest | None:
    """The rule sets an `event` signal offers: a `RulesDigest`, or (in runs recorded before
    it) the `RecoveryRules` themselves, or none. The SDK converts a signal's arguments by type
    only when as many are sent as the handler declares, so a dict is validated here."""
    if isinstance(rules, RecoveryRules | RulesDigest):
        return rules
    if isinstance(rules, dict):
        model = RulesDigest if "digest" in rules else RecoveryRules
        return model.model_validate(rules)
    return None
