"""Inputs of the rollout's change activities that name the exposure record (no I/O here:
workflows import this module).

With `attempt` and `phase` set, `changes.apply` records the exact customers it exposed
(`rollout_exposures`, one row per change, attempt and customer, with the phase that first
exposed them) in the same transaction as its effect, and `changes.revert` and the rollback
notices act on exactly that record, never on the CRM's current state. Without them (runs
started before the record existed) the cohorts are recomputed as before.
"""

from __future__ import annotations

from pydantic import Field

from activities.models import ApplyChange, RevertChange


class ApplyPhase(ApplyChange):
    attempt: int | None = Field(None, ge=1, description="the attempt: 1, 2 after a retry")
    phase: int | None = Field(None, ge=1, description="the phase number, from 1")


class RevertPhase(RevertChange):
    attempt: int | None = Field(None, ge=1, description="revert what this attempt exposed")
    phase: int | None = Field(None, ge=1, description="the phase whose own customers revert")
