"""One contract for every store `DATABASE_URL` can name: memory, SQLite, PostgreSQL.

Each test runs three times, against a store of its own: a fresh MemoryStore, a
SQLite file in `tmp_path`, and a PostgreSQL schema created for the test and
dropped afterwards (nothing else in the database is touched).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from final_project.app.store import EmailTaken, UserStore, create_store
from final_project.app.store.sql import SqlStore

STORES = ["memory", "sqlite", "postgresql"]


async def drop_schema(url: str, schema: str) -> None:
    engine = create_async_engine(url, poolclass=NullPool)
    try:
        async with engine.begin() as conn:
            await conn.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
    finally:
        await engine.dispose()


@dataclass(frozen=True)
class Backend:
    kind: str
    url: str
    schema: str | None = None  # PostgreSQL: the schema this test's tables live in


@pytest.fixture(params=STORES)
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    # A plain fixture: `postgres_url` may start a database with asyncio.run(), which
    # cannot happen inside the running loop of an async fixture.
    if request.param == "memory":
        return Backend("memory", "memory://")
    if request.param == "sqlite":
        return Backend("sqlite", f"sqlite:///{tmp_path / 'final.db'}")
    postgres_url: str = request.getfixturevalue("postgres_url")
    return Backend("postgresql", postgres_url, schema=f"test_{uuid.uuid4().hex[:12]}")


@pytest.fixture
async def store(backend: Backend) -> AsyncIterator[UserStore]:
    opened: UserStore
    if backend.schema is None:
        opened = create_store(backend.url, latency_ms=0)
    else:
        opened = SqlStore(backend.url, schema=backend.schema)
    await opened.open()
    try:
        yield opened
    finally:
        await opened.close()
        if backend.schema is not None:
            await drop_schema(backend.url, backend.schema)


async def sign_up(store: UserStore, email: str, name: str = "Maroof") -> int:
    user = await store.create_user(name=name, email=email, password_hash="argon2-hash")
    return user.id


def soon(minutes: int = 10) -> datetime:
    return datetime.now(UTC) + timedelta(minutes=minutes)


# Users ---------------------------------------------------------------------


async def test_created_user_is_found_by_id_and_by_email_in_any_case(store: UserStore) -> None:
    created = await store.create_user(
        name="Maroof", email="Maroof@Example.com", password_hash="argon2-hash", role="admin"
    )

    assert created.id >= 1
    assert created.email == "maroof@example.com"
    assert await store.get_user(created.id) == created
    assert await store.get_user_by_email("MAROOF@example.COM") == created
    assert await store.get_user(created.id + 1000) is None
    assert await store.get_user_by_email("nobody@example.com") is None


async def test_users_are_listed_by_id_with_offset_and_limit(store: UserStore) -> None:
    ids = [await sign_up(store, f"u{n}@example.com") for n in range(5)]

    listed = await store.list_users(offset=0, limit=20)
    page = await store.list_users(offset=1, limit=2)

    assert [user.id for user in listed] == sorted(ids)
    assert [user.id for user in page] == sorted(ids)[1:3]
    assert await store.list_users(offset=5, limit=20) == []


async def test_update_changes_only_the_given_fields(store: UserStore) -> None:
    user_id = await sign_up(store, "old@example.com", name="Old")

    updated = await store.update_user(user_id, email="New@Example.com")
    renamed = await store.update_user(user_id, name="New", role="admin", password_hash="rehash")

    assert updated is not None
    assert (updated.name, updated.email) == ("Old", "new@example.com")
    assert renamed is not None
    assert (renamed.name, renamed.email, renamed.role, renamed.password_hash) == (
        "New",
        "new@example.com",
        "admin",
        "rehash",
    )
    assert await store.get_user(user_id) == renamed
    assert await store.get_user_by_email("old@example.com") is None


async def test_a_password_hash_is_replaced_only_while_it_is_unchanged(store: UserStore) -> None:
    user_id = await sign_up(store, "rehash@example.com")
    user = await store.get_user(user_id)
    assert user is not None
    # A login's re-hash with today's parameters, and no change meanwhile: stored.
    assert await store.replace_password_hash(user_id, user.password_hash, "rehashed")
    # A password change lands while another login is still verifying the old hash:
    # that login's re-hash must not undo the change.
    await store.update_user(user_id, password_hash="changed")
    assert not await store.replace_password_hash(user_id, "rehashed", "stale rehash")
    after = await store.get_user(user_id)
    assert after is not None
    assert after.password_hash == "changed"
    assert not await store.replace_password_hash(999, "x", "y")


async def test_update_or_delete_of_a_missing_user_changes_nothing(store: UserStore) -> None:
    assert await store.update_user(999, name="Ghost") is None
    assert await store.delete_user(999) is False


async def test_deleted_user_is_gone_and_its_email_is_free_again(store: UserStore) -> None:
    user_id = await sign_up(store, "gone@example.com")

    assert await store.delete_user(user_id) is True
    assert await store.delete_user(user_id) is False
    assert await store.get_user(user_id) is None
    assert await store.get_user_by_email("gone@example.com") is None
    assert await sign_up(store, "Gone@example.com") != user_id


async def test_email_taken_in_another_case_is_refused_on_create_and_update(
    store: UserStore,
) -> None:
    await sign_up(store, "a@example.com")
    other = await sign_up(store, "b@example.com")

    with pytest.raises(EmailTaken):
        await sign_up(store, "A@EXAMPLE.com")
    with pytest.raises(EmailTaken):
        await store.update_user(other, email="A@Example.Com")
    assert [u.email for u in await store.list_users(offset=0, limit=20)] == [
        "a@example.com",
        "b@example.com",
    ]


async def test_twenty_concurrent_sign_ups_with_one_email_create_exactly_one_user(
    store: UserStore,
) -> None:
    results = await asyncio.gather(
        *(sign_up(store, f"{'RACE' if n % 2 else 'race'}@example.com") for n in range(20)),
        return_exceptions=True,
    )

    created = [r for r in results if isinstance(r, int)]
    assert len(created) == 1, results
    assert all(isinstance(r, EmailTaken) for r in results if not isinstance(r, int)), results
    assert len(await store.list_users(offset=0, limit=100)) == 1


async def test_ids_are_never_reused_after_a_delete(store: UserStore) -> None:
    first = await sign_up(store, "first@example.com")
    newest = await sign_up(store, "newest@example.com")
    # Deleting the highest id is what would make a plain rowid or max(id)+1 reuse it.
    await store.delete_user(newest)

    again = await sign_up(store, "again@example.com")

    assert first < newest < again


async def test_audit_events_are_listed_newest_first(store: UserStore) -> None:
    start = datetime(2026, 1, 2, 10, 0, tzinfo=UTC)
    for n, action in enumerate(["user.created", "user.updated", "user.deleted"]):
        await store.add_audit(action, 7, start + timedelta(seconds=n))

    events = await store.list_audit(limit=2)

    assert [(e.action, e.user_id) for e in events] == [("user.deleted", 7), ("user.updated", 7)]
    assert events[0].at == start + timedelta(seconds=2)
    assert events[0].at.utcoffset() == timedelta(0)


async def test_audit_events_name_their_actor(store: UserStore) -> None:
    at = datetime(2026, 1, 2, 10, 0, tzinfo=UTC)
    await store.add_audit("user.deleted", 7, at, actor_id=1)
    await store.add_audit("user.created", 8, at)
    events = await store.list_audit(limit=2)
    assert [(e.user_id, e.actor_id) for e in events] == [(8, None), (7, 1)]


# Token state ----------------------------------------------------------------


async def test_refresh_token_is_spent_once_then_reported_reused(store: UserStore) -> None:
    await store.add_refresh("jti-1", "family-1", "1", soon())

    assert await store.use_refresh("jti-1") == "ok"
    assert await store.use_refresh("jti-1") == "reused"
    assert await store.use_refresh("never-issued") == "unknown"


async def test_of_twenty_concurrent_uses_of_one_refresh_token_exactly_one_wins(
    store: UserStore,
) -> None:
    await store.add_refresh("jti-race", "family-race", "1", soon())

    results = await asyncio.gather(*(store.use_refresh("jti-race") for _ in range(20)))

    assert results.count("ok") == 1, results
    assert results.count("reused") == 19, results


async def test_expired_refresh_token_is_unknown(store: UserStore) -> None:
    await store.add_refresh("jti-old", "family-old", "1", datetime.now(UTC) - timedelta(seconds=1))

    assert await store.use_refresh("jti-old") == "unknown"


async def test_revoked_family_and_access_tokens_are_reported(store: UserStore) -> None:
    now = datetime.now(UTC)
    await store.revoke_family("family-x")
    await store.revoke_family("family-x")  # twice is harmless
    await store.revoke_access("access-live", soon())
    await store.revoke_access("access-expired", now - timedelta(seconds=1))

    assert await store.family_revoked("family-x") is True
    assert await store.family_revoked("family-y") is False
    assert await store.access_revoked("access-live") is True
    assert await store.access_revoked("access-expired") is False
    assert await store.access_revoked("access-never") is False
    assert [jti for jti, _ in await store.revoked_access(now)] == ["access-live"]


async def test_revocations_and_users_survive_close_and_open(store: UserStore) -> None:
    user_id = await sign_up(store, "durable@example.com")
    expires = soon()
    await store.add_refresh("jti-spent", "family-a", str(user_id), expires)
    await store.add_refresh("jti-fresh", "family-a", str(user_id), expires)
    assert await store.use_refresh("jti-spent") == "ok"
    await store.revoke_family("family-b")
    await store.revoke_access("access-1", expires)

    await store.close()
    await store.open()

    assert (await store.get_user(user_id)) is not None
    assert await store.use_refresh("jti-spent") == "reused"
    assert await store.use_refresh("jti-fresh") == "ok"
    assert await store.family_revoked("family-b") is True
    assert await store.access_revoked("access-1") is True
    revoked = await store.revoked_access(datetime.now(UTC))
    assert [jti for jti, _ in revoked] == ["access-1"]
    assert abs(revoked[0][1] - expires) < timedelta(milliseconds=1)


async def test_the_latest_session_mark_of_a_user_wins_and_survives_close_and_open(
    store: UserStore,
) -> None:
    earlier = datetime(2026, 1, 2, 10, 0, 0, 123456, tzinfo=UTC)
    later = earlier + timedelta(seconds=5)
    assert await store.sessions_valid_from("7") is None
    await store.end_sessions("7", later)
    await store.end_sessions("7", earlier)  # a slower, older change never moves it back
    await store.end_sessions("8", earlier)

    await store.close()
    await store.open()

    assert await store.sessions_valid_from("7") == later
    assert await store.sessions_valid_from("9") is None
    marks = sorted(await store.session_marks(earlier - timedelta(seconds=1)))
    assert marks == [("7", later), ("8", earlier)]
    assert await store.session_marks(later) == []


async def test_ping_says_the_store_answers(store: UserStore) -> None:
    assert await store.ping() is True


async def test_a_database_from_before_audit_actors_gains_the_column(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    engine = create_async_engine(f"sqlite+aiosqlite:///{path}", poolclass=NullPool)
    async with engine.begin() as conn:
        await conn.execute(
            text(
                "CREATE TABLE audit_events (id INTEGER PRIMARY KEY AUTOINCREMENT, "
                "action VARCHAR(50) NOT NULL, user_id BIGINT NOT NULL, at DATETIME NOT NULL)"
            )
        )
        await conn.execute(
            text("INSERT INTO audit_events (action, user_id, at) VALUES ('user.created', 3, :at)"),
            {"at": "2026-01-02 10:00:00.000000"},
        )
    await engine.dispose()

    store = SqlStore(f"sqlite:///{path}")
    await store.open()
    try:
        await store.add_audit("user.deleted", 3, datetime.now(UTC), actor_id=1)
        events = await store.list_audit(limit=5)
    finally:
        await store.close()
    assert [(e.action, e.actor_id) for e in events] == [("user.deleted", 1), ("user.created", None)]
