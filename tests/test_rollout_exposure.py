"""Exposure is a fact, recorded once (issue 15, item 1): rollback reverts, tells and acts on
exactly the customers each phase exposed, whatever the CRM says by then."""

from __future__ import annotations

from collections import Counter
from datetime import timedelta

import pytest
from sqlalchemy import select, update
from temporalio.testing import WorkflowEnvironment

from activities.adapters.sandbox import degrade
from activities.cohorts import place
from store.models import RolloutExposure, SandboxCustomer
from store.seed import customers
from tests.conftest import AppDb
from tests.definition_support import pinned
from tests.rollout_support import (
    add_customers,
    emails_of,
    ever_exposed,
    exposed,
    new_change_id,
    notes_about,
    phase,
    plan_document,
    rollback_notices,
    rollout_worker,
    start,
    state,
)

pytestmark = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)

BUSINESS = 'customer.segment != "consumer"'


async def _record(db: AppDb, change_id: str) -> dict[str, tuple[int, bool]]:
    """customer -> (phase, reverted) from the exposure record."""
    async with db.sessions() as session:
        rows = await session.execute(
            select(
                RolloutExposure.customer_id, RolloutExposure.phase, RolloutExposure.reverted_at
            ).where(RolloutExposure.change_id == change_id, RolloutExposure.attempt == 1)
        )
        return {row[0]: (row[1], row[2] is not None) for row in rows}


async def test_rollback_after_crm_changes_reaches_exactly_the_exposed_customers(
    workflow_env: WorkflowEnvironment, app_db: AppDb
) -> None:
    await add_customers(app_db)
    change_id = new_change_id()
    plan = pinned(
        plan_document(
            impact={"risk": "standard"},
            phases=[
                phase("pilot", 20, cohort={"percent": 20, "when": BUSINESS}),
                phase("wider", 60, cohort={"percent": 60, "when": BUSINESS}),
            ],
        )
    )
    async with rollout_worker(workflow_env, app_db) as queue:
        handle = await start(workflow_env, queue, plan, change_id)
        await workflow_env.sleep(timedelta(hours=2, minutes=10))
        s = await state(handle)
        assert s.stage == "wider" and s.state == "baking"
        touched = await exposed(app_db, change_id)
        record = await _record(app_db, change_id)
        assert set(record) == touched and len(touched) == s.phases[1].exposed_total
        pilot = {c for c, (number, _) in record.items() if number == 1}
        assert pilot and pilot == {c for c in touched if place(c, change_id) < 20}

        # During the bake: new business customers sign up inside the hash range, and one
        # pilot and one wider customer become consumers (they leave the condition).
        async with app_db.sessions() as session, session.begin():
            newcomers = [
                c
                for c in customers(900)[400:]
                if place(c.id, change_id) < 60 and c.segment != "consumer"
            ]
            session.add_all(newcomers)
            leavers = [sorted(pilot)[0], sorted(touched - pilot)[0]]
            await session.execute(
                update(SandboxCustomer)
                .where(SandboxCustomer.id.in_(leavers))
                .values(segment="consumer")
            )
        assert len(newcomers) > 20
        await degrade(app_db.sessions, "complaint_rate", change_id, 0.2)
        await workflow_env.sleep(timedelta(minutes=40))
        result = await handle.result()

    assert result.state == "rolled_back"
    new_ids = {c.id for c in newcomers}
    # Reverted: exactly the exposed, the leavers included; the newcomers were never exposed.
    assert await exposed(app_db, change_id) == set()
    assert await ever_exposed(app_db, change_id) == touched
    assert result.customers_reverted == len(touched)
    assert all(reverted for _, reverted in (await _record(app_db, change_id)).values())
    # Told and acted on: exactly the exposed, once each; no newcomer hears of it.
    notices = await rollback_notices(app_db, change_id)
    assert set(Counter(notices).values()) == {1}
    assert set(notices) == await emails_of(app_db, touched)
    assert not set(notices) & await emails_of(app_db, new_ids)
    assert await emails_of(app_db, set(leavers)) <= set(notices)
    assert result.customers_notified == len(touched)
    notes = await notes_about(app_db, change_id)
    assert sorted(customer for customer, _ in notes) == sorted(touched)
