"""Cohort membership: a stable place per (customer, seed), a structured filter, optional CEL.

A customer's place is the first 8 bytes of SHA-256("<seed>:<customer id>") scaled to
[0, 100). Membership is `place < percent`, so it never changes between calls, and a 25%
cohort contains the 5% cohort of the same seed (phases grow by raising the percent).
Receivers of the changes webhook can recompute it with the same two lines.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

import celpy
from celpy.adapter import json_to_cel

from activities.errors import invalid
from activities.models import CohortSpec

_SCALE = 100.0 / 2**64
MAX_CONDITION_LENGTH = 2000


def place(customer_id: str, seed: str) -> float:
    """The customer's stable position in [0, 100) for this seed."""
    digest = hashlib.sha256(f"{seed}:{customer_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") * _SCALE


def in_cohort(customer_id: str, spec: CohortSpec) -> bool:
    return place(customer_id, spec.seed) < spec.percent


class Condition:
    """A compiled CEL condition over `customer`; a bad expression is a non-retryable error."""

    def __init__(self, source: str) -> None:
        if len(source) > MAX_CONDITION_LENGTH:
            raise invalid(f"cohort condition is over {MAX_CONDITION_LENGTH} characters")
        self.source = source
        environment = celpy.Environment()
        try:
            self._program = environment.program(environment.compile(source))
        except Exception as exc:  # celpy raises its own parse errors, and RecursionError
            raise invalid(f"cohort condition is not valid CEL: {_first_line(exc)}") from None

    def matches(self, customer: Mapping[str, Any]) -> bool:
        plain = {
            key: float(value) if isinstance(value, Decimal) else value
            for key, value in customer.items()
        }
        try:
            result = self._program.evaluate({"customer": json_to_cel(plain)})
        except Exception as exc:
            raise invalid(
                f"cohort condition {self.source[:80]!r} failed on a customer: {_first_line(exc)}"
            ) from None
        if not isinstance(result, celpy.celtypes.BoolType):
            raise invalid(f"cohort condition must be true or false, not {type(result).__name__}")
        return bool(result)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:200]
