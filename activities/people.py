"""The people directory: how to reach a person on call (an agent, a manager), by directory id
or email address. The sandbox CRM answers from its agents (`opsflow dev`); a CRM backend
without a directory leaves the person as written."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable


@dataclass(frozen=True)
class PersonContact:
    """How to reach a person: personal data, never returned to a workflow or logged."""

    person_id: str
    name: str
    email: str | None


@runtime_checkable
class PeopleDirectory(Protocol):
    async def person(self, person: str) -> PersonContact | None:
        """The person with directory id or email address `person`; None if unknown."""
        ...
