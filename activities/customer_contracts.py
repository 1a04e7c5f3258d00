"""The customer's CRM profile, as workflows carry it (no I/O here: workflows import it).

Apart from the other activity contracts (activities/models.py) because a case's state holds
one: reading a case (`opsflow case show`) needs this model and none of the others.
"""

from __future__ import annotations

from decimal import Decimal

from pydantic import BaseModel, ConfigDict


class CustomerProfile(BaseModel):
    """What the CRM knows of a customer that workflows carry (no email or phone)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str
    name: str
    tier: str
    segment: str
    lifetime_value: Decimal
    language: str
    timezone: str
    country: str | None = None
    account_manager: str | None = None
    journey_stage: str | None = None
