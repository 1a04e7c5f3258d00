"""Inputs of the rollout's change activities that name the exposure record (no I/O here:
workflows import this module).

With `attempt` and `phase` set, `changes.apply` records the exact customers it exposed
(`rollout_exposures`, one row per change, attempt and customer, with the phase that first
exposed them) in the same transaction as its effect, and `changes.revert` and the rollback
notices act on exactly that record, never on the CRM's current state. Without them (runs
started before the record existed) the cohorts are recomputed as before.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from activities.models import ApplyChange, CohortSpec, IdempotencyKey, RevertChange
from definitions.models import RecoveryStep


class ApplyPhase(ApplyChange):
    attempt: int | None = Field(None, ge=1, description="the attempt: 1, 2 after a retry")
    phase: int | None = Field(None, ge=1, description="the phase number, from 1")


class RevertPhase(RevertChange):
    attempt: int | None = Field(None, ge=1, description="revert what this attempt exposed")
    phase: int | None = Field(None, ge=1, description="the phase whose own customers revert")


class CustomerNoticeRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    channel: str = "email"
    template: str = Field(min_length=1, max_length=120)


class NotifyPhaseCustomers(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    idempotency_key: IdempotencyKey
    change_id: str = Field(min_length=1, max_length=64)
    phase: str = Field(min_length=1, max_length=64)
    cohort: CohortSpec
    earlier: list[CohortSpec] = Field(
        default_factory=list, description="earlier phases' cohorts: their customers are theirs"
    )
    attempt: int | None = Field(
        None, ge=1, description="with phase_number: notify whom this attempt's phase exposed"
    )
    phase_number: int | None = Field(
        None, ge=1, description="the phase's number in the exposure record, from 1"
    )
    notice: CustomerNoticeRequest | None = None
    recovery: list[RecoveryStep] = Field(default_factory=list)
    context: dict[str, Any] = Field(default_factory=dict, description="`change` and `phase`")
    batch_size: int = Field(200, ge=1, le=5_000)


class PhaseCustomersNotified(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    customers: int
    notified: int
    recovery_actions: int
    failed: int = Field(description="customers an effect was refused for (e.g. no email)")
