"""`opsflow sandbox ...`: what the sandbox backends did, as rich tables or `--json`."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

import typer

from worker.cli_support import JsonOption, console, fail, settings_or_exit, show_rows, with_database

if TYPE_CHECKING:
    from worker.cli_support import Sessions

# activities.adapters.sandbox.METRICS for --metric, spelled out: importing the sandbox adapter
# loads SQLAlchemy, which help does without (tests/test_cli_help.py checks the two agree).
METRICS = ("csat", "complaint_rate", "handle_time", "repeat_contacts", "error_rate")

app = typer.Typer(
    name="sandbox",
    help="Look at the sandbox backends: tickets, notifications, customers and flags.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)

LimitOption = Annotated[int, typer.Option("--limit", min=1, max=100_000, help="Rows to show.")]


@app.command()
def tickets(
    as_json: JsonOption = False,
    limit: LimitOption = 50,
    customer: Annotated[str | None, typer.Option(help="Only this customer's tickets.")] = None,
) -> None:
    """Tickets in the sandbox ticketing system, newest first."""
    from sqlalchemy import select

    from store.models import SandboxTicket

    async def work(sessions: Sessions) -> list[dict[str, Any]]:
        statement = select(SandboxTicket).order_by(SandboxTicket.created_at.desc()).limit(limit)
        if customer is not None:
            statement = statement.where(SandboxTicket.customer_id == customer)
        async with sessions() as session:
            return [
                {
                    "id": t.id,
                    "customer_id": t.customer_id,
                    "subject": t.subject,
                    "status": t.status,
                    "priority": t.priority,
                    "queue": t.queue,
                    "assignee": t.assignee,
                    "tags": ",".join(map(str, t.tags)),
                    "updated_at": t.updated_at,
                }
                for t in (await session.scalars(statement)).all()
            ]

    rows = with_database(settings_or_exit(), work)
    show_rows(
        rows,
        [
            "id",
            "customer_id",
            "subject",
            "status",
            "priority",
            "queue",
            "assignee",
            "tags",
            "updated_at",
        ],
        "tickets",
        as_json,
    )


@app.command()
def notifications(as_json: JsonOption = False, limit: LimitOption = 50) -> None:
    """Messages the sandbox notifier sent, newest first."""
    from sqlalchemy import select

    from store.models import SandboxNotification

    async def work(sessions: Sessions) -> list[dict[str, Any]]:
        statement = select(SandboxNotification).order_by(SandboxNotification.id.desc()).limit(limit)
        async with sessions() as session:
            return [
                {
                    "message_id": n.message_id,
                    "channel": n.channel,
                    "recipient": n.recipient,
                    "template": n.template,
                    "language": n.language,
                    "subject": n.subject,
                    "body": n.body,
                    "created_at": n.created_at,
                }
                for n in (await session.scalars(statement)).all()
            ]

    rows = with_database(settings_or_exit(), work)
    show_rows(
        rows,
        ["message_id", "channel", "recipient", "template", "language", "subject", "created_at"],
        "notifications",
        as_json,
    )


@app.command()
def customers(
    as_json: JsonOption = False,
    limit: LimitOption = 50,
    segment: Annotated[str | None, typer.Option(help="Only this segment.")] = None,
) -> None:
    """Customers in the sandbox CRM."""
    from sqlalchemy import select

    from store.models import SandboxCustomer

    async def work(sessions: Sessions) -> list[dict[str, Any]]:
        statement = select(SandboxCustomer).order_by(SandboxCustomer.id).limit(limit)
        if segment is not None:
            statement = statement.where(SandboxCustomer.segment == segment)
        async with sessions() as session:
            return [
                {
                    "id": c.id,
                    "name": c.name,
                    "segment": c.segment,
                    "tier": c.tier,
                    "language": c.language,
                    "timezone": c.timezone,
                    "lifetime_value": c.lifetime_value,
                    "journey_stage": c.journey_stage,
                    "account_manager": c.account_manager,
                }
                for c in (await session.scalars(statement)).all()
            ]

    rows = with_database(settings_or_exit(), work)
    show_rows(
        rows,
        [
            "id",
            "name",
            "segment",
            "tier",
            "language",
            "timezone",
            "lifetime_value",
            "journey_stage",
            "account_manager",
        ],
        "customers",
        as_json,
    )


@app.command()
def flags(as_json: JsonOption = False) -> None:
    """Flags in the sandbox flag store, with how many customers each change exposes."""
    from sqlalchemy import select

    from store.models import SandboxFlag, SandboxFlagExposure

    async def work(sessions: Sessions) -> list[dict[str, Any]]:
        async with sessions() as session:
            flag_rows = (await session.scalars(select(SandboxFlag).order_by(SandboxFlag.key))).all()
            exposures = (
                await session.execute(
                    select(
                        SandboxFlagExposure.flag_key,
                        SandboxFlagExposure.change_id,
                        SandboxFlagExposure.value,
                        SandboxFlagExposure.reverted_at.is_(None),
                    )
                )
            ).all()
        summary: dict[tuple[str, str], dict[str, Any]] = {}
        for flag_key, change_id, value, active in exposures:
            entry = summary.setdefault(
                (flag_key, change_id), {"value": value, "exposed": 0, "reverted": 0}
            )
            entry["exposed" if active else "reverted"] += 1
        rows: list[dict[str, Any]] = []
        for flag in flag_rows:
            changes = {k[1]: v for k, v in summary.items() if k[0] == flag.key}
            if not changes:
                rows.append(
                    {
                        "key": flag.key,
                        "default": flag.default_value,
                        "change_id": None,
                        "value": None,
                        "exposed": 0,
                        "reverted": 0,
                        "description": flag.description,
                    }
                )
            for change_id, entry in sorted(changes.items()):
                rows.append(
                    {
                        "key": flag.key,
                        "default": flag.default_value,
                        "change_id": change_id,
                        **entry,
                        "description": flag.description,
                    }
                )
        return rows

    rows = with_database(settings_or_exit(), work)
    show_rows(
        rows,
        ["key", "default", "change_id", "value", "exposed", "reverted", "description"],
        "flags",
        as_json,
    )


async def _degrade(sessions: Sessions, metric: str, change_id: str, value: float) -> None:
    """Refuse a change the sandbox never saw: no rollout in the ledger, no exposed customer."""
    from sqlalchemy import select

    from activities.adapters.sandbox import degrade
    from store.models import LedgerEntry, SandboxFlagExposure
    from workflows.rollout_model import rollout_workflow_id

    async with sessions() as session:
        known = await session.scalar(
            select(LedgerEntry.id)
            .where(LedgerEntry.workflow_id == rollout_workflow_id(change_id))
            .limit(1)
        )
        if known is None:
            known = await session.scalar(
                select(SandboxFlagExposure.id)
                .where(SandboxFlagExposure.change_id == change_id)
                .limit(1)
            )
    if known is None:
        raise ValueError(
            f"change {change_id} has no rollout and no exposed customers: start its rollout first"
        )
    await degrade(sessions, metric, change_id, value)


@app.command("degrade")
def degrade_command(
    metric: Annotated[str, typer.Option("--metric", help=f"Metric name: {', '.join(METRICS)}.")],
    change_id: Annotated[str, typer.Option("--for", help="The change whose cohort reads bad.")],
    value: Annotated[float, typer.Option("--to", help="The value that cohort reads from now.")],
) -> None:
    """Make a change's exposed cohort read `--to` for `--metric` (to rehearse a rollback)."""
    if metric not in METRICS:
        raise fail(f"unknown metric {metric[:64]!r}: the sandbox knows {', '.join(METRICS)}")
    try:
        with_database(
            settings_or_exit(), lambda sessions: _degrade(sessions, metric, change_id, value)
        )
    except ValueError as exc:
        raise fail(str(exc)) from None
    console.print(f"{metric} now reads {value} for customers exposed by {change_id}")
