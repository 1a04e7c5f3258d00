"""Engine and session setup for the app database (SQLite by default, PostgreSQL when set)."""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from sqlalchemy import Engine, event
from sqlalchemy.engine import URL
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

from store.blocking import ensure_sqlite_folder, sqlite_pragmas

_ASYNC_DRIVERS = {"sqlite": "sqlite+aiosqlite", "postgresql": "postgresql+psycopg"}


def async_url(url: URL) -> URL:
    return url.set(drivername=_ASYNC_DRIVERS[url.get_backend_name()])


def create_engine(url: URL) -> AsyncEngine:
    """An async engine for the app database at `url` (any driver name; opsflow picks its own)."""
    ensure_sqlite_folder(url)
    sqlite = url.get_backend_name() == "sqlite"
    # A server connection can go stale (restart, idle timeout): ping it when checked out. A
    # SQLite connection is a file handle that cannot, and a ping would cost a round trip to
    # its thread on every session.
    engine = create_async_engine(async_url(url), pool_pre_ping=not sqlite)
    if sqlite:
        event.listen(engine.sync_engine, "connect", sqlite_pragmas)
    return engine


_WRITE_LOCKS: weakref.WeakKeyDictionary[Engine, tuple[asyncio.AbstractEventLoop, asyncio.Lock]] = (
    weakref.WeakKeyDictionary()
)


def _lock_for(engine: AsyncEngine) -> asyncio.Lock:
    loop = asyncio.get_running_loop()
    held = _WRITE_LOCKS.get(engine.sync_engine)
    if held is None or held[0] is not loop:
        held = (loop, asyncio.Lock())
        _WRITE_LOCKS[engine.sync_engine] = held
    return held[1]


@asynccontextmanager
async def write_lock(sessions: async_sessionmaker[AsyncSession]) -> AsyncIterator[None]:
    """Hold this process's SQLite write turn (FIFO); a no-op on other databases."""
    bind = sessions.kw.get("bind")
    if isinstance(bind, AsyncEngine) and bind.dialect.name == "sqlite":
        async with _lock_for(bind):
            yield
    else:
        yield


def session_factory(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False)


@asynccontextmanager
async def transaction(
    sessions: async_sessionmaker[AsyncSession],
) -> AsyncIterator[AsyncSession]:
    """A session whose work commits on success and rolls back on error; on SQLite it waits for
    this process's write turn first (`write_lock`)."""
    async with write_lock(sessions), sessions() as session, session.begin():
        yield session
