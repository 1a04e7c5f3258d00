"""`opsflow events` list/show/schema on an inbox, and its one-line errors."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from client.settings import Settings
from definitions.events import EVENT_TYPES, EventEnvelope
from intake import inbox
from store.db import create_engine, session_factory
from store.migrate import upgrade
from worker.cli import app


@pytest.fixture
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("OPSFLOW_DATA_DIR", str(tmp_path))
    monkeypatch.delenv("OPSFLOW_DATABASE_URL", raising=False)
    monkeypatch.setenv("OPSFLOW_LOG_FORMAT", "json")
    return tmp_path


async def _fill(settings: Settings) -> None:
    upgrade(settings.database)
    engine = create_engine(settings.database)
    sessions = session_factory(engine)
    try:
        events = [
            EventEnvelope(
                id=f"e-{n}",
                source="crm",
                type="ticket.updated",
                subject="T-1",
                data={"ticket_id": "T-1", "status": "pending"},
            )
            for n in range(3)
        ]
        recorded = await inbox.record(sessions, events)
        await inbox.mark(
            sessions, recorded[0].row.id, "delivered", "case updated: pause", "case-T-1"
        )
        await inbox.mark(
            sessions,
            recorded[1].row.id,
            "rejected",
            "pause refused: the case is already paused",
            "case-T-1",
        )
    finally:
        await engine.dispose()


def test_list_and_show(data_dir: Path) -> None:
    asyncio.run(_fill(Settings()))
    runner = CliRunner()
    listed = runner.invoke(app, ["events", "list", "--json"])
    assert listed.exit_code == 0, listed.output
    assert [r["status"] for r in json.loads(listed.output)] == ["accepted", "rejected", "delivered"]
    pending = json.loads(runner.invoke(app, ["events", "list", "--pending", "--json"]).output)
    assert [r["id"] for r in pending] == ["e-2"]
    shown = runner.invoke(app, ["events", "show", "e-1"])
    assert shown.exit_code == 0
    assert "pause refused: the case is already paused" in shown.output
    missing = runner.invoke(app, ["events", "show", "nope"])
    assert missing.exit_code == 1
    assert "no event 'nope'" in missing.output


def test_schema_lists_every_type_with_an_example(data_dir: Path) -> None:
    result = CliRunner().invoke(app, ["events", "schema"])
    schemas = json.loads(result.output)
    assert set(schemas) == set(EVENT_TYPES)
    assert all(s["examples"] for s in schemas.values())


def test_send_without_a_secret_is_one_line(data_dir: Path) -> None:
    result = CliRunner().invoke(
        app, ["events", "send", "ticket.created", "--data", "{}", "--source", "crm"]
    )
    assert result.exit_code == 1
    assert "no secret for sender 'crm'" in result.output
    bad = CliRunner().invoke(app, ["events", "send", "ticket.exploded", "--data", "{}"])
    assert bad.exit_code == 1
    assert "unknown event type" in bad.output
