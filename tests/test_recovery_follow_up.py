"""The follow-up of a recovery episode (issue 15, item 4), on the time-skipping server with
the real activities on the sandbox backends and the catalog's rule set: the follow-up belongs
to the episode's contact (ticket), a follow-up that says "not recovered" hands the episode to
a person in the CX review queue, and an episode that only asked a person to look sends the
customer no follow-up survey."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select
from sqlalchemy.orm import selectinload
from temporalio.testing import WorkflowEnvironment
from typer.testing import CliRunner

from store.models import SandboxNotification, SandboxTicket
from tests.conftest import AppDb
from tests.definition_support import pinned
from tests.escalation_support import ledger_entries, ledger_steps
from tests.recovery_support import (
    catalog_document,
    recovery_worker,
    send,
    settle,
    survey,
    variant,
    view,
)
from worker.cli import app
from workflows.recovery import RecoveryWorkflow
from workflows.recovery_model import CloseEpisode

SQLITE = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)

FOLLOW_UP = timedelta(days=3, minutes=1)


async def _tickets(db: AppDb, customer: str) -> list[SandboxTicket]:
    async with db.sessions() as session:
        rows = await session.scalars(
            select(SandboxTicket)
            .where(SandboxTicket.customer_id == customer)
            .options(selectinload(SandboxTicket.comments))
            .order_by(SandboxTicket.created_at, SandboxTicket.id)
        )
        return list(rows)


async def _follow_up_surveys(db: AppDb, workflow_id: str) -> int:
    async with db.sessions() as session:
        rows = await session.scalars(
            select(SandboxNotification).where(
                SandboxNotification.idempotency_key.like(f"{workflow_id}/%"),
                SandboxNotification.template == "recovery-survey",
            )
        )
        return len(list(rows))


@SQLITE
async def test_a_survey_about_another_contact_does_not_answer_the_follow_up(
    workflow_env: WorkflowEnvironment, app_db: AppDb
) -> None:
    customer = "C-0021"
    rules = [pinned(catalog_document())]
    async with recovery_worker(workflow_env, app_db) as queue:
        handle = await send(workflow_env, queue, customer, survey(customer, 1, ticket="T-1"), rules)
        await workflow_env.sleep(FOLLOW_UP)
        state = await view(handle)
        [episode] = state.state.episodes
        assert episode.contact == "T-1" and episode.follow_up_sent_at is not None
        assert await _follow_up_surveys(app_db, handle.id) == 1
        # A happy survey about some other ticket says nothing about this recovery.
        await send(workflow_env, queue, customer, survey(customer, 5, ticket="T-2"), rules)
        state = await settle(workflow_env, handle)
        assert state.state.episodes[0].status == "open"
        assert "episode-1-recovered" not in await ledger_steps(app_db, handle.id)
        # The answer about the episode's own ticket closes it.
        await send(workflow_env, queue, customer, survey(customer, 5, ticket="T-1"), rules)
        state = await settle(workflow_env, handle)
        episode = state.state.episodes[0]
        assert (episode.status, episode.score) == ("recovered", 5)
        assert "episode-1-recovered" in await ledger_steps(app_db, handle.id)


@SQLITE
async def test_not_recovered_hands_the_episode_to_a_person_until_they_close_it(
    workflow_env: WorkflowEnvironment, app_db: AppDb
) -> None:
    customer = "C-0022"
    # Episodes time out after 5 days here (30 in the catalog), so the test skips less time.
    rules = [pinned(variant(episode_timeout="5d"))]
    async with recovery_worker(workflow_env, app_db) as queue:
        first = survey(customer, 1, ticket="T-7", comment="Nobody called back.")
        handle = await send(workflow_env, queue, customer, first, rules)
        await workflow_env.sleep(FOLLOW_UP)
        before = {t.id for t in await _tickets(app_db, customer)}
        answer = survey(customer, 2, ticket="T-7", comment="Still broken.")
        await send(workflow_env, queue, customer, answer, rules)
        state = await settle(workflow_env, handle)
        episode = state.state.episodes[0]
        assert episode.status == "open" and episode.handed_over_at is not None
        assert (episode.score, episode.handed_over_to) == (2, "cx-review")
        [ticket] = [t for t in await _tickets(app_db, customer) if t.id not in before]
        assert (ticket.queue, ticket.priority) == ("cx-review", "p2")
        assert episode.handover_ticket == ticket.id
        assert "follow-up scored 2" in ticket.subject
        [comment] = ticket.comments
        story = comment.body
        # The person gets the episode's context, so nobody asks the customer again.
        assert "service-recovery/low-csat" in story and "ticket T-7" in story
        assert "notify apology to customer" in story and "Still broken." in story
        assert f"opsflow recovery close {customer}" in story
        [entry] = [e for e in await ledger_entries(app_db, handle.id) if "handed-over" in e.step]
        assert entry.detail["ticket"] == ticket.id and entry.detail["queue"] == "cx-review"
        assert state.ops_state == "with_person"
        assert "until a person closes it" in state.details
        # Past its timeout it neither expires nor closes by itself: a person decides.
        assert state.next_wake is None or state.next_wake > episode.expires_at
        await workflow_env.sleep(timedelta(days=3))
        state = await view(handle)
        assert state.state.episodes[0].status == "open"
        steps = await ledger_steps(app_db, handle.id)
        assert "episode-1-not_recovered" not in steps and "episode-1-expired" not in steps
        done = await handle.execute_update(
            RecoveryWorkflow.close_episode, CloseEpisode(by="lead-ana", outcome="recovered")
        )
        closed = done.state.episodes[0]
        assert (closed.status, closed.closed_by) == ("recovered", "lead-ana")
        assert "episode-1-recovered" in await ledger_steps(app_db, handle.id)


@SQLITE
async def test_a_review_only_episode_sends_no_follow_up_until_the_customer_is_contacted(
    workflow_env: WorkflowEnvironment, app_db: AppDb
) -> None:
    customer = "C-0023"
    rules = [pinned(catalog_document())]
    async with recovery_worker(workflow_env, app_db) as queue:
        for n in range(3):
            handle = await send(
                workflow_env, queue, customer, survey(customer, 5, ticket=f"T-{n}"), rules
            )
            await settle(workflow_env, handle)
        handle = await send(workflow_env, queue, customer, survey(customer, 1, ticket="T-9"), rules)
        state = await settle(workflow_env, handle)
        assert [d.rule for d in state.state.decisions] == ["service-recovery/low-csat-review"]
        [review] = [t for t in await _tickets(app_db, customer) if t.subject.startswith("CX")]
        assert review.queue == "cx-review"
        await workflow_env.sleep(FOLLOW_UP)
        state = await view(handle)
        episode = state.state.episodes[0]
        assert episode.follow_up_at is None and episode.follow_up_sent_at is None
        assert await _follow_up_surveys(app_db, handle.id) == 0
        # A corroborating low score about another contact acts on the customer (an
        # apology), and now the customer is asked how it went.
        await send(workflow_env, queue, customer, survey(customer, 1, ticket="T-10"), rules)
        state = await settle(workflow_env, handle)
        assert state.state.decisions[-1].rule == "service-recovery/low-csat"
        assert state.state.decisions[-1].episode == 1
        await workflow_env.sleep(FOLLOW_UP)
        assert await _follow_up_surveys(app_db, handle.id) == 1


def test_close_refuses_an_unknown_outcome_naming_the_option() -> None:
    result = CliRunner().invoke(
        app, ["recovery", "close", "C-0022", "--by", "lead-ana", "--outcome", "fixed"]
    )
    assert result.exit_code != 0
    assert "--outcome" in result.output and "recovered" in result.output
    assert "Traceback" not in result.output
