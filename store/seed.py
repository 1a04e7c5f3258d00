"""A small, realistic world for the sandbox backends: customers, agents and queues.

Deterministic (a fixed random seed), so every `make run` shows the same customers, and
idempotent: seeding an already seeded database adds nothing.
"""

from __future__ import annotations

import random
from datetime import timedelta
from decimal import Decimal

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from store.db import transaction
from store.models import (
    SandboxAgent,
    SandboxCustomer,
    SandboxFlag,
    SandboxQueue,
)
from store.types import utcnow

# (country, language, timezone, first names, last names)
_LOCALES = [
    (
        "DE",
        "de",
        "Europe/Berlin",
        ["Lena", "Jonas", "Mia", "Felix"],
        ["Schmidt", "Weber", "Wagner"],
    ),
    (
        "FR",
        "fr",
        "Europe/Paris",
        ["Chloé", "Louis", "Inès", "Hugo"],
        ["Martin", "Dubois", "Lefèvre"],
    ),
    (
        "ES",
        "es",
        "Europe/Madrid",
        ["Lucía", "Mateo", "Sofía", "Pablo"],
        ["García", "López", "Ruiz"],
    ),
    (
        "GB",
        "en",
        "Europe/London",
        ["Olivia", "Harry", "Amelia", "Jack"],
        ["Smith", "Jones", "Taylor"],
    ),
    (
        "US",
        "en",
        "America/New_York",
        ["Emma", "Liam", "Ava", "Noah"],
        ["Johnson", "Brown", "Davis"],
    ),
]
_SEGMENTS = {
    # segment: (tier weights, lifetime value range in EUR)
    "smb": ({"standard": 0.8, "gold": 0.2}, (200, 5_000)),
    "mid_market": ({"standard": 0.4, "gold": 0.5, "vip": 0.1}, (5_000, 60_000)),
    "enterprise": ({"gold": 0.5, "vip": 0.5}, (60_000, 900_000)),
    "consumer": ({"standard": 0.95, "gold": 0.05}, (20, 800)),
}
_JOURNEY_STAGES = ["onboarding", "active", "active", "active", "renewal", "at_risk"]
_ACCOUNT_MANAGERS = ["am-hannah", "am-pierre", "am-carmen", "am-oliver"]

AGENTS = [
    # id, name, team, skills, languages
    ("ana", "Ana Torres", "billing", ["billing", "refunds"], ["es", "en"]),
    ("bernd", "Bernd Keller", "billing", ["billing"], ["de", "en"]),
    ("claire", "Claire Morel", "billing", ["billing", "refunds"], ["fr", "en"]),
    ("dev", "Dev Patel", "technical", ["technical", "api"], ["en"]),
    ("eva", "Eva Novak", "technical", ["technical"], ["de", "en"]),
    ("farid", "Farid Haddad", "technical", ["technical", "api"], ["fr", "en"]),
    ("greta", "Greta Lind", "retention", ["cancellation", "retention", "billing"], ["de", "en"]),
    ("hugo", "Hugo Blanc", "retention", ["cancellation", "retention"], ["fr", "es", "en"]),
    ("ines", "Inés Vidal", "vip", ["vip", "billing", "technical"], ["es", "en", "fr"]),
    ("jack", "Jack Reed", "tier-2", ["technical", "escalations"], ["en"]),
    ("katrin", "Katrin Vogel", "tier-2", ["billing", "escalations"], ["de", "en"]),
    ("leo", "Leo Marchetti", "onboarding", ["onboarding"], ["en", "fr"]),
]

QUEUES = [
    # id, name, skills, languages, timezone, hours
    ("support", "General support", [], ["en", "de", "fr", "es"], "Europe/Berlin", "weekdays-08-18"),
    (
        "billing",
        "Billing",
        ["billing"],
        ["en", "de", "fr", "es"],
        "Europe/Berlin",
        "weekdays-08-18",
    ),
    (
        "technical",
        "Technical",
        ["technical"],
        ["en", "de", "fr"],
        "Europe/Berlin",
        "weekdays-08-20",
    ),
    (
        "retention",
        "Retention",
        ["cancellation"],
        ["en", "de", "fr", "es"],
        "Europe/Berlin",
        "weekdays-09-17",
    ),
    ("vip", "VIP desk", ["vip"], ["en", "es", "fr"], "Europe/Berlin", "24x7"),
    (
        "tier-2",
        "Tier 2 escalations",
        ["escalations"],
        ["en", "de"],
        "Europe/Berlin",
        "weekdays-08-18",
    ),
    ("onboarding", "Onboarding", ["onboarding"], ["en", "fr"], "Europe/Berlin", "weekdays-09-17"),
    ("callbacks", "Callbacks", [], ["en", "de", "fr", "es"], "Europe/Berlin", "weekdays-08-18"),
    # Customer-experience leads: reviews of outlier feedback, episodes that did not recover.
    (
        "cx-review",
        "CX review",
        [],
        ["en", "de", "fr", "es"],
        "Europe/Berlin",
        "weekdays-09-17",
    ),
]

FLAGS = [
    ("refund-self-service", "Customers can issue refunds under 50 EUR themselves"),
    ("new-billing-flow", "The reworked billing dispute process"),
    ("proactive-delay-notice", "Tell customers about delivery delays before they ask"),
]


def _pick_weighted(rng: random.Random, weights: dict[str, float]) -> str:
    return rng.choices(list(weights), weights=list(weights.values()))[0]


def customers(count: int, *, seed: int = 17) -> list[SandboxCustomer]:
    """`count` deterministic customers C-0001..; ids sort in creation order."""
    rng = random.Random(seed)
    width = max(4, len(str(count)))
    now = utcnow()
    result = []
    for n in range(1, count + 1):
        country, language, tz, first_names, last_names = rng.choice(_LOCALES)
        segment = rng.choice(list(_SEGMENTS))
        tiers, (low, high) = _SEGMENTS[segment]
        first, last = rng.choice(first_names), rng.choice(last_names)
        result.append(
            SandboxCustomer(
                id=f"C-{n:0{width}d}",
                name=f"{first} {last}",
                email=f"{first.lower()}.{last.lower()}.{n}@example.com",
                phone=f"+{rng.randint(30, 49)} {rng.randint(100, 999)} {rng.randint(10**6, 10**7)}",
                segment=segment,
                tier=_pick_weighted(rng, tiers),
                language=language,
                timezone=tz,
                country=country,
                lifetime_value=Decimal(rng.randint(low, high)),
                account_manager=rng.choice(_ACCOUNT_MANAGERS) if segment != "consumer" else None,
                journey_stage=rng.choice(_JOURNEY_STAGES),
                created_at=now - timedelta(days=rng.randint(1, 1500)),
            )
        )
    return result


async def seed_sandbox(
    sessions: async_sessionmaker[AsyncSession], *, customer_count: int = 60
) -> bool:
    """Seed an empty sandbox; return False (and change nothing) when it was seeded before."""
    async with transaction(sessions) as session:
        if await session.scalar(select(func.count()).select_from(SandboxCustomer)):
            return False
        session.add_all(customers(customer_count))
        session.add_all(
            SandboxAgent(
                id=agent_id,
                name=name,
                email=f"{agent_id}@opsflow.example",
                team=team,
                skills=skills,
                languages=languages,
                status="available",
            )
            for agent_id, name, team, skills, languages in AGENTS
        )
        session.add_all(
            SandboxQueue(
                id=queue_id, name=name, skills=skills, languages=langs, timezone=tz, hours=hours
            )
            for queue_id, name, skills, langs, tz, hours in QUEUES
        )
        session.add_all(SandboxFlag(key=key, description=text) for key, text in FLAGS)
    return True
