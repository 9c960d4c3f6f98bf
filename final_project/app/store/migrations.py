"""Schema migrations (Alembic, in `final_project/migrations/`), run under one lock.

`make migrate` runs them from the command line; `SqlStore.open()` runs the same
upgrade in-process, so a database is always at the newest revision before a
request is served, and a fresh clone needs no extra step. With the migration run
first (as `make run-final` and the compose stack do), the in-process upgrade
finds nothing to do.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import threading
from collections.abc import AsyncIterator
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util import CommandError
from pydantic_settings import BaseSettings, SettingsConfigDict
from sqlalchemy import text
from sqlalchemy.engine import Connection

logger = logging.getLogger(__name__)
# Alembic announces each of its autogenerate plugins at INFO on every upgrade, seven
# lines a start-up that say nothing about this database; "Running upgrade" still shows.
logging.getLogger("alembic.runtime.plugins").setLevel(logging.WARNING)

MIGRATIONS = Path(__file__).resolve().parents[2] / "migrations"
# Any constant works: it only has to be the same in every process that migrates.
SCHEMA_LOCK_KEY = 0x66696E616C
# Alembic keeps the running migration in module state (`alembic.context`): two in
# one process at once would overwrite each other's, whatever the database lock says.
_ONE_IN_THIS_PROCESS = threading.Lock()


class DatabaseSettings(BaseSettings):
    """Only DATABASE_URL: migrating needs no JWT secret, whatever APP_ENV says."""

    model_config = SettingsConfigDict(env_file=".env", extra="ignore")

    database_url: str = "sqlite+aiosqlite:///./data/final.db"


def alembic_config(database_url: str | None = None) -> Config:
    """Alembic's config without alembic.ini: for code and tests (the CLI reads the file)."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    if database_url is not None:
        # ConfigParser interpolates %: a URL-encoded password must survive it.
        config.set_main_option("sqlalchemy.url", database_url.replace("%", "%%"))
    return config


def lock_schema(connection: Connection) -> None:
    """Hold the schema for this transaction: workers and replicas migrate one at a time.

    The first to arrive migrates; the others wait, then find the revision current
    and do nothing. Call it first in the transaction (SQLite's lock is its BEGIN).
    """
    dialect = connection.dialect.name
    if dialect == "postgresql":
        connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": SCHEMA_LOCK_KEY})
    elif dialect == "sqlite":
        # pysqlite leaves BEGIN to us; IMMEDIATE takes the write lock at once, so
        # two processes can't both read "no tables" and then both create them.
        connection.exec_driver_sql("BEGIN IMMEDIATE")


def translated_schema(connection: Connection) -> str | None:
    """The schema SqlStore(schema=...) keeps its tables in, through a schema_translate_map."""
    schema: str | None = (
        connection.get_execution_options().get("schema_translate_map", {}).get(None)
    )
    return schema


@functools.cache
def scripts() -> ScriptDirectory:
    return ScriptDirectory.from_config(alembic_config())


def head_revision() -> str | None:
    return scripts().get_current_head()


def known_revision(revision: str) -> bool:
    try:
        return scripts().get_revision(revision) is not None
    except CommandError:
        return False


def current_revision(connection: Connection) -> str | None:
    opts = {"version_table_schema": translated_schema(connection)}
    return MigrationContext.configure(connection, opts=opts).get_current_revision()


@contextlib.asynccontextmanager
async def one_in_this_process() -> AsyncIterator[None]:
    # Polled rather than awaited in a thread: a cancelled start-up can't leave the
    # lock taken by a thread nobody waits for. Only ever held at start-up.
    while not _ONE_IN_THIS_PROCESS.acquire(blocking=False):  # noqa: ASYNC110
        await asyncio.sleep(0.01)
    try:
        yield
    finally:
        _ONE_IN_THIS_PROCESS.release()


def upgrade(connection: Connection) -> None:
    """Upgrade to the newest revision on this connection, in its transaction, under the lock.

    Hold `one_in_this_process()` around it. A database already at the newest
    revision costs one read and takes no lock. A revision this code doesn't know
    was written by a newer release (this one is a rollback): revisions only
    expand the schema, so the release before still works on it; start as it is.
    """
    current = current_revision(connection)
    if current == head_revision():
        return
    if current is not None and not known_revision(current):
        logger.warning(
            "the database is at revision %s, newer than this release knows: "
            "starting without migrating",
            current,
        )
        return
    config = alembic_config()
    config.attributes["connection"] = connection
    command.upgrade(config, "head")
