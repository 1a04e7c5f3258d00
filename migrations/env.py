"""Alembic environment for the app database; the URL comes from store.migrate."""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine
from sqlalchemy.engine import URL

from store.models import Base

config = context.config
url: URL = config.attributes["database_url"]

with create_engine(url).connect() as connection:
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        render_as_batch=url.get_backend_name() == "sqlite",
        compare_type=True,
        user_module_prefix="store.types.",
    )
    with context.begin_transaction():
        context.run_migrations()
