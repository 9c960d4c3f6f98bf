"""Alembic's entry point, from its async template.

From the command line (`make migrate`) it migrates DATABASE_URL, read like the
app reads it (the environment, or `.env`). `SqlStore.open()` hands it a
connection of its own instead (`config.attributes["connection"]`).
"""

from __future__ import annotations

import asyncio
import sys
import warnings
from logging.config import fileConfig
from pathlib import Path
from typing import Any

from alembic import context
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Column, Identity, pool
from sqlalchemy.engine import Connection
from sqlalchemy.exc import SAWarning
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.schema import CreateSchema

from final_project.app.store.migrations import DatabaseSettings, lock_schema, translated_schema
from final_project.app.store.sql import async_url, metadata

config = context.config


def compare_sqlite_server_default(
    context: MigrationContext,
    inspected_column: Column[Any],
    metadata_column: Column[Any],
    inspected_default: str | None,
    metadata_default: Any,
    rendered_metadata_default: str | None,
) -> bool | None:
    # SQLite has no identity columns: the rowid (with AUTOINCREMENT) is the identity.
    return False if isinstance(metadata_default, Identity) else None


def run_migrations(connection: Connection) -> None:
    lock_schema(connection)
    # SqlStore(schema=...) keeps its tables in a PostgreSQL schema of its own,
    # through a schema_translate_map that applies to the migrations' DDL too.
    schema = translated_schema(connection)
    if schema is not None:
        connection.execute(CreateSchema(schema, if_not_exists=True))
    sqlite = connection.dialect.name == "sqlite"
    context.configure(
        connection=connection,
        target_metadata=metadata,
        # SQLite alters a table by copying it: autogenerate writes batch operations.
        render_as_batch=sqlite,
        compare_server_default=compare_sqlite_server_default if sqlite else True,
        # Named, not left to the translate map: Alembic looks for its table there.
        version_table_schema=schema,
    )
    # The caller's transaction, which holds the lock, wraps every revision.
    with context.begin_transaction(), warnings.catch_warnings():
        # SQLite can't reflect the index on lower(email), so autogenerate skips it
        # there (and says so twice); the PostgreSQL check compares it.
        warnings.filterwarnings("ignore", "Skipped unsupported reflection", SAWarning)
        warnings.filterwarnings("ignore", "autogenerate skipping metadata-specified expression")
        context.run_migrations()


def command_line_engine(database_url: str) -> AsyncEngine:
    url = async_url(database_url)
    connect_args: dict[str, Any] = {}
    if url.get_backend_name() == "sqlite":
        # A fresh clone has no ./data yet; and a running app may hold the write
        # lock for a moment, so wait for it (the app's busy_timeout) rather than fail.
        if url.database not in (None, "", ":memory:"):
            Path(url.database).expanduser().parent.mkdir(parents=True, exist_ok=True)
        connect_args = {"timeout": 5}
    return create_async_engine(url, poolclass=pool.NullPool, connect_args=connect_args)


async def run_migrations_from_command_line(engine: AsyncEngine) -> None:
    try:
        async with engine.begin() as connection:
            await connection.run_sync(run_migrations)
    finally:
        await engine.dispose()


if context.is_offline_mode():
    raise SystemExit("offline (--sql) mode is not supported: the migrations inspect the database")
if (connection := config.attributes.get("connection")) is not None:
    run_migrations(connection)
elif (
    database_url := config.get_main_option("sqlalchemy.url") or DatabaseSettings().database_url
).startswith("memory://"):
    # The memory store keeps its users in the process: there is no schema to migrate.
    print("DATABASE_URL=memory:// has no schema to migrate", file=sys.stderr)
else:
    if config.config_file_name is not None:
        fileConfig(config.config_file_name, disable_existing_loggers=False)
    asyncio.run(run_migrations_from_command_line(command_line_engine(database_url)))
