"""Opening a case: choosing its policy (a match that cannot be evaluated is no match, a bad
--policy is one line) and the case's ticket existing in the sandbox ticketing backend."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import select

from activities.adapters.sandbox import SandboxCrm, SandboxTicketing
from client.cases import (
    check_customer,
    choose_policy,
    ensure_ticket,
    parse_policy_ref,
    policy_refusal,
)
from definitions.errors import OpsflowError
from definitions.loader import content_hash
from definitions.models import PinnedDefinition, definition_adapter
from store.models import SandboxTicket
from store.registry import CATALOG_DIR, deploy_folder
from tests.conftest import AppDb
from tests.escalation_support import deploy_p1_only, policy_document
from workflows.escalation import CaseInfo


def case(ticket_id: str = "T-2000", customer_id: str = "C-9999", priority: str = "p1") -> CaseInfo:
    return CaseInfo(
        ticket_id=ticket_id,
        customer_id=customer_id,
        priority=priority,  # type: ignore[arg-type]
        subject="Checkout is down",
        channel="email",
        opened_at=datetime.now(UTC),
    )


async def deploy_catalog(db: AppDb) -> None:
    await deploy_folder(db.sessions, CATALOG_DIR, deployed_by="test")


def test_policy_reference_forms() -> None:
    assert parse_policy_ref("support-p1") == ("support-p1", None)
    assert parse_policy_ref("support-p1@2") == ("support-p1", 2)
    for bad in ("support-p1@abc", "support-p1@", "@2", "a@1@2", "support-p1@0", "a b"):
        with pytest.raises(OpsflowError, match="use NAME or NAME@VERSION"):
            parse_policy_ref(bad)


async def test_unknown_customer_skips_a_policy_that_reads_the_profile(app_db: AppDb) -> None:
    await deploy_catalog(app_db)
    # No CRM profile: onboarding's `customer.journey_stage` cannot be evaluated, so it does
    # not match, and the P1 case lands under support.
    policy = await choose_policy(app_db.sessions, case(), None)
    assert policy.ref == "support@1"


async def test_a_bad_requested_policy_is_one_readable_error(app_db: AppDb) -> None:
    await deploy_catalog(app_db)
    with pytest.raises(OpsflowError, match="NAME or NAME@VERSION"):
        await choose_policy(app_db.sessions, case(), None, "support@abc")
    assert (await choose_policy(app_db.sessions, case(), None, "support@1")).ref == ("support@1")


async def test_the_sandbox_ticket_of_a_case_is_created_once(app_db: AppDb) -> None:
    ticketing = SandboxTicketing(app_db.sessions)
    assert await ensure_ticket(ticketing, case("T-7001", "C-0017")) is True
    assert await ensure_ticket(ticketing, case("T-7001", "C-0017", "p2")) is False
    ticket = await ticketing.get_ticket("T-7001")
    assert (ticket.customer_id, ticket.priority, ticket.subject) == (
        "C-0017",
        "p1",
        "Checkout is down",
    )
    async with app_db.sessions() as session:
        rows = list(
            await session.scalars(select(SandboxTicket.id).where(SandboxTicket.id == "T-7001"))
        )
    assert rows == ["T-7001"]


async def test_a_real_ticketing_backend_is_left_alone() -> None:
    class Vendor:
        name = "zendesk"
        in_app_database = False

    assert await ensure_ticket(Vendor(), case()) is False  # type: ignore[arg-type]


async def test_a_requested_policy_must_cover_the_priority_and_stage(
    app_db: AppDb, tmp_path: Path
) -> None:
    await deploy_catalog(app_db)
    await deploy_p1_only(app_db, tmp_path)  # the catalog's policies cover every priority
    with pytest.raises(
        OpsflowError, match=r"p1-only@1 does not cover priority p3 \(it covers p1\)"
    ):
        await choose_policy(app_db.sessions, case(priority="p3"), None, "p1-only")
    # A policy with targets for named stages only does not run a case at any other stage.
    document = policy_document(
        slas=[{"priority": p, "stage": "support", "first_response": "1h", "resolution": "4h"}
              for p in ("p1", "p2", "p3")]
    )  # fmt: skip
    staged = PinnedDefinition(
        name="test-policy",
        version=1,
        content_hash=content_hash(document),
        kind="escalation",
        definition=definition_adapter.validate_python(document),
    )
    odd_stage = case().model_copy(update={"stage": "renewal"})
    assert policy_refusal(staged, case()) is None
    assert policy_refusal(staged, odd_stage) == (
        "--stage: test-policy@1 has no SLA for p1 at stage renewal (it has support)"
    )


async def test_an_unknown_customer_is_refused_naming_it_unless_allowed(app_db: AppDb) -> None:
    crm = SandboxCrm(app_db.sessions)
    with pytest.raises(
        OpsflowError, match=r"customer C-9999 is not in the CRM .*--unknown-customer"
    ):
        await check_customer(crm, "C-9999")
    assert await check_customer(crm, "C-9999", allow_unknown=True) is None
    known = await check_customer(crm, "C-0002")
    assert known is not None and known.id == "C-0002"
