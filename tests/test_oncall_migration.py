"""Revision 0008 adds the on-call tables and its downgrade removes exactly them, on SQLite and
PostgreSQL (tests/test_migrations.py checks the whole chain against the models)."""

from __future__ import annotations

from sqlalchemy import create_engine, inspect
from sqlalchemy.engine import URL

from store.blocking import sync_url
from store.migrate import downgrade, upgrade

ONCALL_TABLES = {"oncall_overrides", "round_robin_counters", "round_robin_picks"}


def _tables(url: URL) -> set[str]:
    engine = create_engine(sync_url(url))
    try:
        return set(inspect(engine).get_table_names())
    finally:
        engine.dispose()


def test_the_oncall_revision_goes_up_and_down(database_url: URL) -> None:
    upgrade(database_url, "0007")
    before = _tables(database_url)
    assert not before & ONCALL_TABLES
    upgrade(database_url, "0008")
    assert _tables(database_url) == before | ONCALL_TABLES
    downgrade(database_url, "0007")
    assert _tables(database_url) == before
    upgrade(database_url)
    assert _tables(database_url) >= ONCALL_TABLES
