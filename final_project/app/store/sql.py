"""`DATABASE_URL=sqlite+aiosqlite:///...` or `postgresql+asyncpg://...`: users,
audit events and durable token state in a SQL database, through SQLAlchemy Core.

Every worker process (and, with PostgreSQL, every machine) talks to the same
database, so any worker can serve any request. The database itself enforces
what must hold under concurrency: one account per email (a unique index on
`lower(email)`), ids never reused (AUTOINCREMENT / an identity column), and a
refresh token spent at most once (a conditional UPDATE whose row count decides).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    Identity,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    delete,
    event,
    func,
    insert,
    select,
    text,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import URL, Dialect, Row, make_url
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.pool import ConnectionPoolEntry
from sqlalchemy.types import TypeDecorator

from . import migrations
from .base import ASYNC_DRIVERS, AuditRecord, EmailTaken, UserRecord

_USER_FIELDS = frozenset({"name", "email", "role", "password_hash"})


class UtcDateTime(TypeDecorator[datetime]):
    """An aware UTC datetime in, an aware UTC datetime out, on every backend.

    SQLite has no time zones: values are stored as naive UTC text, whose string
    order is also time order, so `expires_at > :now` works there too.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime: pass an aware one (UTC)")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: Any | None, dialect: Dialect) -> datetime | None:
        if not isinstance(value, datetime):
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


# The tables as the code expects them. The database gets them from the migrations
# (final_project/migrations/), never from create_all: a change here needs a new
# revision (PERSISTENCE.md), and tests/final_project/test_migrations.py fails until
# it has one. Named constraints, so that revisions can refer to them.
metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "pk": "pk_%(table_name)s",
    }
)

# INTEGER (not BIGINT) on SQLite: only an INTEGER PRIMARY KEY is the rowid, and
# AUTOINCREMENT (sqlite_autoincrement) keeps a deleted user's id from coming back.
_Id = BigInteger().with_variant(Integer, "sqlite")

users = Table(
    "users",
    metadata,
    Column("id", _Id, Identity(), primary_key=True),
    Column("name", String(100), nullable=False),
    Column("email", String(320), nullable=False),
    Column("role", String(20), nullable=False, server_default="user"),
    Column("password_hash", Text, nullable=False),
    sqlite_autoincrement=True,
)
# The database, not the code, keeps emails unique: two sign-ups racing past a
# lookup still cannot both insert.
Index("uq_users_email_lower", func.lower(users.c.email), unique=True)

audit_events = Table(
    "audit_events",
    metadata,
    Column("id", _Id, Identity(), primary_key=True),
    Column("action", String(50), nullable=False),
    # No foreign key: the event of a deleted user outlives the user.
    Column("user_id", BigInteger, nullable=False),
    Column("at", UtcDateTime, nullable=False),
    # Who made the change; NULL in rows written before the column existed.
    Column("actor_id", BigInteger, nullable=True),
    sqlite_autoincrement=True,
)

refresh_tokens = Table(
    "refresh_tokens",
    metadata,
    Column("jti", String(128), primary_key=True),
    Column("family", String(128), nullable=False, index=True),
    Column("user_id", String(64), nullable=False),
    Column("expires_at", UtcDateTime, nullable=False, index=True),
    Column("used_at", UtcDateTime, nullable=True),
)

revoked_families = Table(
    "revoked_families",
    metadata,
    Column("family", String(128), primary_key=True),
    Column("revoked_at", UtcDateTime, nullable=False),
)

revoked_access_tokens = Table(
    "revoked_access_tokens",
    metadata,
    Column("jti", String(128), primary_key=True),
    Column("expires_at", UtcDateTime, nullable=False, index=True),
)

# Per user: sessions that began before `valid_from` are over (password, role, deletion).
# No foreign key: the mark of a deleted user must outlive the user.
session_marks = Table(
    "session_marks",
    metadata,
    Column("user_id", String(64), primary_key=True),
    Column("valid_from", UtcDateTime, nullable=False, index=True),
)


def async_url(database_url: str) -> URL:
    """`sqlite:///` and `postgresql://` URLs, rewritten to their asyncio drivers."""
    url = make_url(database_url)
    driver = ASYNC_DRIVERS.get(url.drivername)
    return url if driver is None else url.set(drivername=driver)


def _is_sqlite_file(url: URL) -> bool:
    database = url.database or ""
    return url.get_backend_name() == "sqlite" and database not in ("", ":memory:")


def _ensure_parent_directory(url: URL) -> None:
    # `./data/final.db` on a fresh clone: SQLite creates the file, not its folder.
    if _is_sqlite_file(url) and not (url.database or "").startswith("file:"):
        Path(url.database or "").expanduser().parent.mkdir(parents=True, exist_ok=True)


def _set_sqlite_pragmas(dbapi_connection: Any, _record: ConnectionPoolEntry) -> None:
    cursor = dbapi_connection.cursor()
    try:
        # busy_timeout first: switching to WAL waits for other processes' locks.
        cursor.execute("PRAGMA busy_timeout=5000")
        # WAL lets readers in every worker go on while one of them writes.
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
    finally:
        cursor.close()


def _user(row: Row[Any]) -> UserRecord:
    return UserRecord(
        id=row.id, name=row.name, email=row.email, role=row.role, password_hash=row.password_hash
    )


class SqlStore:
    """`UserStore` and `shared.auth.TokenStore` on SQLite or PostgreSQL."""

    def __init__(self, database_url: str, *, schema: str | None = None) -> None:
        # schema: a PostgreSQL schema to keep the tables in, instead of the
        # connection's default (several apps or test runs can share one database).
        self.url = async_url(database_url)
        self.schema = schema
        self._engine: AsyncEngine | None = None

    @property
    def engine(self) -> AsyncEngine:
        if self._engine is None:
            raise RuntimeError("SqlStore is not open: await store.open() first")
        return self._engine

    @property
    def _dialect(self) -> str:
        return self.url.get_backend_name()

    async def open(self) -> None:
        """Connect, and migrate the schema to the newest revision if it is behind.

        `hide_parameters`: a database error's message would otherwise carry the
        statement's values (an email, an Argon2 hash) into the error log.
        """
        if self._engine is not None:
            return
        _ensure_parent_directory(self.url)
        if self._dialect == "sqlite":
            engine = create_async_engine(self.url, pool_pre_ping=True, hide_parameters=True)
            event.listen(engine.sync_engine, "connect", _set_sqlite_pragmas)
        else:
            engine = create_async_engine(
                self.url,
                hide_parameters=True,
                pool_size=5,
                max_overflow=10,
                pool_timeout=10,
                pool_recycle=1800,
                # A server restarted or a connection dropped by a proxy is noticed
                # at checkout, instead of failing the request that drew it.
                pool_pre_ping=True,
                connect_args={"timeout": 5, "command_timeout": 30},
            )
        if self.schema is not None:
            engine = engine.execution_options(schema_translate_map={None: self.schema})
        try:
            await self._migrate(engine)
        except BaseException:
            await engine.dispose()
            raise
        self._engine = engine

    async def _migrate(self, engine: AsyncEngine) -> None:
        # Several workers start at once and all run this: migrations.upgrade takes a
        # lock, so one of them migrates while the others wait, then find nothing to do.
        for attempt in range(5):
            try:
                async with migrations.one_in_this_process(), engine.begin() as conn:
                    await conn.run_sync(migrations.upgrade)
                return
            except DBAPIError:
                # Another process won a race the lock could not prevent (or held
                # the SQLite file past busy_timeout): look again.
                if attempt == 4:
                    raise
                await asyncio.sleep(0.1 * (attempt + 1))

    async def close(self) -> None:
        if self._engine is not None:
            await self._engine.dispose()
            self._engine = None

    async def ping(self) -> bool:
        """True when a `SELECT 1` answers within two seconds; never raises."""
        if self._engine is None:
            return False
        try:
            async with asyncio.timeout(2), self._engine.connect() as conn:
                await conn.execute(text("SELECT 1"))
        except Exception:  # a health check reports failures, whatever they are
            return False
        return True

    @contextlib.asynccontextmanager
    async def _write(self) -> AsyncIterator[AsyncConnection]:
        # One short transaction per call, whose first statement is the write: on
        # SQLite a transaction that read first could not wait for the write lock.
        async with self.engine.begin() as conn:
            yield conn

    def _upsert(self, table: Table) -> postgresql.Insert | sqlite.Insert:
        # INSERT ... ON CONFLICT is spelled the same on both, but built per dialect.
        if self._dialect == "postgresql":
            return postgresql.insert(table)
        return sqlite.insert(table)

    # Users ---------------------------------------------------------------

    async def create_user(
        self, *, name: str, email: str, password_hash: str, role: str = "user"
    ) -> UserRecord:
        stmt = (
            insert(users)
            .values(name=name, email=email.lower(), role=role, password_hash=password_hash)
            .returning(*users.c)
        )
        try:
            async with self._write() as conn:
                row = (await conn.execute(stmt)).one()
        except IntegrityError as exc:
            raise EmailTaken(email) from exc
        return _user(row)

    async def get_user(self, user_id: int) -> UserRecord | None:
        async with self.engine.connect() as conn:
            row = (await conn.execute(select(users).where(users.c.id == user_id))).first()
        return None if row is None else _user(row)

    async def get_user_by_email(self, email: str) -> UserRecord | None:
        stmt = select(users).where(func.lower(users.c.email) == email.lower())
        async with self.engine.connect() as conn:
            row = (await conn.execute(stmt)).first()
        return None if row is None else _user(row)

    async def list_users(self, *, offset: int, limit: int) -> list[UserRecord]:
        stmt = select(users).order_by(users.c.id).offset(offset).limit(limit)
        async with self.engine.connect() as conn:
            rows = (await conn.execute(stmt)).all()
        return [_user(row) for row in rows]

    async def update_user(self, user_id: int, **changes: str) -> UserRecord | None:
        unknown = changes.keys() - _USER_FIELDS
        if unknown:
            raise TypeError(f"not user fields: {sorted(unknown)}")
        if not changes:
            return await self.get_user(user_id)
        if "email" in changes:
            changes["email"] = changes["email"].lower()
        stmt = update(users).where(users.c.id == user_id).values(**changes).returning(*users.c)
        try:
            async with self._write() as conn:
                row = (await conn.execute(stmt)).first()
        except IntegrityError as exc:
            raise EmailTaken(changes.get("email", "")) from exc
        return None if row is None else _user(row)

    async def replace_password_hash(self, user_id: int, old: str, new: str) -> bool:
        stmt = (
            update(users)
            .where(users.c.id == user_id, users.c.password_hash == old)
            .values(password_hash=new)
        )
        async with self._write() as conn:
            result = await conn.execute(stmt)
        return result.rowcount == 1

    async def delete_user(self, user_id: int) -> bool:
        async with self._write() as conn:
            result = await conn.execute(delete(users).where(users.c.id == user_id))
        return result.rowcount == 1

    async def add_audit(
        self, action: str, user_id: int, at: datetime, *, actor_id: int | None = None
    ) -> None:
        stmt = insert(audit_events).values(action=action, user_id=user_id, at=at, actor_id=actor_id)
        async with self._write() as conn:
            await conn.execute(stmt)

    async def list_audit(self, *, limit: int) -> list[AuditRecord]:
        stmt = select(audit_events).order_by(audit_events.c.id.desc()).limit(limit)
        async with self.engine.connect() as conn:
            rows = (await conn.execute(stmt)).all()
        return [
            AuditRecord(action=row.action, user_id=row.user_id, at=row.at, actor_id=row.actor_id)
            for row in rows
        ]

    # Token state (shared.auth.TokenStore) ----------------------------------

    async def add_refresh(self, jti: str, family: str, user_id: str, expires_at: datetime) -> None:
        now = datetime.now(UTC)
        # DO NOTHING on a known jti: a spent token must never be made fresh again.
        stmt = (
            self._upsert(refresh_tokens)
            .values(jti=jti, family=family, user_id=user_id, expires_at=expires_at)
            .on_conflict_do_nothing(index_elements=["jti"])
        )
        async with self._write() as conn:
            await conn.execute(stmt)
            # An expired token is "unknown" whether it was used or not: drop it.
            await conn.execute(delete(refresh_tokens).where(refresh_tokens.c.expires_at <= now))

    async def use_refresh(self, jti: str) -> Literal["ok", "reused", "unknown"]:
        now = datetime.now(UTC)
        # The row count of one conditional UPDATE decides, so of concurrent calls
        # with one jti exactly one sees it unused (PostgreSQL re-checks the WHERE
        # after waiting for the row lock; SQLite runs one writer at a time).
        spend = (
            update(refresh_tokens)
            .where(
                refresh_tokens.c.jti == jti,
                refresh_tokens.c.used_at.is_(None),
                refresh_tokens.c.expires_at > now,
            )
            .values(used_at=now)
        )
        async with self._write() as conn:
            if (await conn.execute(spend)).rowcount == 1:
                return "ok"
            stmt = select(refresh_tokens.c.expires_at).where(refresh_tokens.c.jti == jti)
            expires_at = (await conn.execute(stmt)).scalar_one_or_none()
        if expires_at is None or expires_at <= now:
            return "unknown"
        return "reused"

    async def revoke_family(self, family: str) -> None:
        stmt = (
            self._upsert(revoked_families)
            .values(family=family, revoked_at=datetime.now(UTC))
            .on_conflict_do_nothing(index_elements=["family"])
        )
        async with self._write() as conn:
            await conn.execute(stmt)

    async def family_revoked(self, family: str) -> bool:
        stmt = select(revoked_families.c.family).where(revoked_families.c.family == family)
        async with self.engine.connect() as conn:
            return (await conn.execute(stmt)).first() is not None

    async def revoke_access(self, jti: str, expires_at: datetime) -> None:
        table = revoked_access_tokens
        stmt = self._upsert(table).values(jti=jti, expires_at=expires_at)
        stmt = stmt.on_conflict_do_update(
            index_elements=["jti"], set_={"expires_at": stmt.excluded.expires_at}
        )
        async with self._write() as conn:
            await conn.execute(stmt)
            # A revoked token past its expiry is refused anyway: no need to keep it.
            await conn.execute(delete(table).where(table.c.expires_at <= datetime.now(UTC)))

    async def revoked_access(self, now: datetime) -> list[tuple[str, datetime]]:
        table = revoked_access_tokens
        stmt = select(table.c.jti, table.c.expires_at).where(table.c.expires_at > now)
        async with self.engine.connect() as conn:
            rows = (await conn.execute(stmt)).all()
        return [(row.jti, row.expires_at) for row in rows]

    async def access_revoked(self, jti: str) -> bool:
        table = revoked_access_tokens
        stmt = select(table.c.jti).where(table.c.jti == jti, table.c.expires_at > datetime.now(UTC))
        async with self.engine.connect() as conn:
            return (await conn.execute(stmt)).first() is not None

    async def end_sessions(self, user_id: str, at: datetime) -> None:
        stmt = self._upsert(session_marks).values(user_id=user_id, valid_from=at)
        # Only ever forward: of two changes racing, the later mark stays.
        stmt = stmt.on_conflict_do_update(
            index_elements=["user_id"],
            set_={"valid_from": stmt.excluded.valid_from},
            where=session_marks.c.valid_from < stmt.excluded.valid_from,
        )
        async with self._write() as conn:
            await conn.execute(stmt)

    async def sessions_valid_from(self, user_id: str) -> datetime | None:
        stmt = select(session_marks.c.valid_from).where(session_marks.c.user_id == user_id)
        async with self.engine.connect() as conn:
            valid_from: datetime | None = (await conn.execute(stmt)).scalar_one_or_none()
        return valid_from

    # Shaped like `revoked_access`: one SELECT each, of another table and columns.
    async def session_marks(self, since: datetime) -> list[tuple[str, datetime]]:
        table = session_marks
        stmt = select(table.c.user_id, table.c.valid_from).where(table.c.valid_from > since)
        async with self.engine.connect() as conn:
            rows = (await conn.execute(stmt)).all()
        return [(row.user_id, row.valid_from) for row in rows]
