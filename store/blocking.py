"""The app database on a blocking connection: its URL for the blocking drivers, SQLite's
settings (shared with the async engine of store/db.py) and a blocking engine, for work on a
thread of its own (the intake's inbox writer), the migrations and the command line's reads.
Nothing here imports SQLAlchemy's ORM or its asyncio extension."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import Engine, event
from sqlalchemy import create_engine as create_blocking_engine
from sqlalchemy.engine import URL

_SYNC_DRIVERS = {"sqlite": "sqlite", "postgresql": "postgresql+psycopg"}


def sync_url(url: URL) -> URL:
    return url.set(drivername=_SYNC_DRIVERS[url.get_backend_name()])


def ensure_sqlite_folder(url: URL) -> None:
    """SQLite creates the file but not its folder."""
    if url.get_backend_name() == "sqlite" and url.database not in (None, "", ":memory:"):
        Path(url.database).parent.mkdir(parents=True, exist_ok=True)


def sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    # WAL lets the CLI read while the worker writes; the busy timeout waits for a writer
    # instead of failing with "database is locked".
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    # In WAL mode NORMAL syncs at checkpoints, not at every commit: a power cut may lose the
    # last commits but never corrupts the file, and every effect is idempotent anyway.
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def create_sync_engine(url: URL) -> Engine:
    """A blocking engine for the app database at `url` (any driver name), with the same
    SQLite settings as the async engine."""
    ensure_sqlite_folder(url)
    sqlite = url.get_backend_name() == "sqlite"
    engine = create_blocking_engine(sync_url(url), pool_pre_ping=not sqlite)
    if sqlite:
        event.listen(engine, "connect", sqlite_pragmas)
    return engine
