"""`DATABASE_URL` end to end: which store a URL picks, how SQLite is set up, and a
real two-worker uvicorn on SQLite and on PostgreSQL, where any worker serves any
user and the data survive a restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from sqlalchemy import make_url, text

from final_project.app.store import MemoryStore, UserStore, create_store
from final_project.app.store.sql import SqlStore
from shared.auth import TokenStore
from tests.servers import IN_CI, Uvicorn, forget_keys

APP = "final_project.app.main:app"
SECRET = "persistence-tests-secret-0123456789abcdef"
PASSWORD = "correct horse battery"
# Each request on a connection of its own, so the kernel hands them to both workers.
ROUNDS = 10
RACERS = 20


# Which store a URL picks -------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "driver"),
    [
        ("sqlite:///./data/final.db", "sqlite+aiosqlite"),
        ("sqlite+aiosqlite:///./data/final.db", "sqlite+aiosqlite"),
        ("postgresql://app@db.internal/final", "postgresql+asyncpg"),
        ("postgresql+asyncpg://app@db.internal/final", "postgresql+asyncpg"),
    ],
)
def test_sql_urls_get_a_sql_store_on_the_asyncio_driver(url: str, driver: str) -> None:
    store = create_store(url, latency_ms=0)

    assert isinstance(store, SqlStore)
    assert store.url.drivername == driver


def test_sql_store_keeps_users_and_durable_token_state() -> None:
    store = SqlStore("sqlite:///./data/final.db")
    token_store: TokenStore = store  # mypy checks the protocol, method by method

    assert isinstance(store, UserStore)
    assert token_store is store


def test_memory_url_gets_the_memory_store() -> None:
    assert isinstance(create_store("memory://", latency_ms=0), MemoryStore)


# SQLite ----------------------------------------------------------------------


async def test_sqlite_store_creates_its_directory_and_uses_wal(tmp_path: Path) -> None:
    path = tmp_path / "data" / "nested" / "final.db"
    store = SqlStore(f"sqlite+aiosqlite:///{path}")

    await store.open()
    try:
        async with store.engine.connect() as conn:
            journal = (await conn.execute(text("PRAGMA journal_mode"))).scalar_one()
            busy = (await conn.execute(text("PRAGMA busy_timeout"))).scalar_one()
            foreign_keys = (await conn.execute(text("PRAGMA foreign_keys"))).scalar_one()
    finally:
        await store.close()

    assert path.is_file()
    assert (journal, busy, foreign_keys) == ("wal", 5000, 1)


@pytest.fixture(params=["sqlite", "postgresql"])
def sql_database(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[str, str | None]:
    """A URL and, on PostgreSQL, a schema of this test's own (the URL's database is shared)."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'final.db'}", None
    postgres_url: str = request.getfixturevalue("postgres_url")
    return postgres_url, f"test_{uuid.uuid4().hex[:12]}"


async def test_two_stores_opening_at_once_share_one_database(
    sql_database: tuple[str, str | None],
) -> None:
    url, schema = sql_database
    first, second = SqlStore(url, schema=schema), SqlStore(url, schema=schema)
    # Both create the tables at once, as two workers starting together do.
    await asyncio.gather(first.open(), second.open())
    try:
        created = await first.create_user(name="A", email="a@example.com", password_hash="h")
        await second.revoke_family("family-1")

        assert await second.get_user_by_email("A@example.com") == created
        assert await first.family_revoked("family-1") is True
    finally:
        if schema is not None:
            async with first.engine.begin() as conn:
                await conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        await asyncio.gather(first.close(), second.close())


async def test_closed_store_fails_its_ping(tmp_path: Path) -> None:
    store = SqlStore(f"sqlite:///{tmp_path / 'final.db'}")
    assert await store.ping() is False
    await store.open()
    await store.close()
    assert await store.ping() is False


async def test_a_database_error_never_carries_the_password_hash_or_email(tmp_path: Path) -> None:
    store = SqlStore(f"sqlite:///{tmp_path / 'final.db'}")
    await store.open()
    try:
        async with store.engine.begin() as conn:
            await conn.execute(text("DROP TABLE users"))
        with pytest.raises(Exception) as failure:  # noqa: PT011 - any error will be logged
            await store.create_user(
                name="Maroof", email="leak@example.com", password_hash="$argon2id$secret-hash"
            )
    finally:
        await store.close()

    logged = "".join(str(e) for e in (failure.value, failure.value.__cause__) if e is not None)
    assert "no such table" in logged
    assert "secret-hash" not in logged
    assert "leak@example.com" not in logged


# Two workers, one database ------------------------------------------------------


@pytest.fixture
def e2e_postgres_url(postgres_url: str) -> Iterator[str]:
    """A database of this test's own, next to the session's one, dropped afterwards.

    The app keeps its tables in the database's default schema, so a test that
    runs the real app gets a whole database.
    """
    url = make_url(postgres_url)
    name = f"{url.database}_e2e_{uuid.uuid4().hex[:8]}"
    admin_dsn = url.set(drivername="postgresql").render_as_string(hide_password=False)

    async def run(sql: str) -> None:
        import asyncpg

        conn = await asyncpg.connect(admin_dsn, timeout=5)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    try:
        asyncio.run(run(f'CREATE DATABASE "{name}"'))
    except Exception as exc:  # no CREATEDB right on a TEST_DATABASE_URL server
        if IN_CI:
            pytest.fail(f"cannot create a database for the test: {exc}", pytrace=False)
        pytest.skip(f"cannot create a database for the test: {exc}")
    try:
        yield url.set(database=name).render_as_string(hide_password=False)
    finally:
        asyncio.run(run(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def app_env(database_url: str, redis_url: str, redis_prefix: str) -> dict[str, str]:
    return {
        "DATABASE_URL": database_url,
        "REDIS_URL": redis_url,
        "REDIS_PREFIX": redis_prefix,
        "JWT_SECRET": SECRET,
        "APP_ENV": "development",
        "RATE_LIMIT": "100000/minute",
        "LOGIN_RATE_LIMIT": "100000/minute",
        "LOGIN_ACCOUNT_RATE_LIMIT": "100000/minute",
        "SIGNUP_RATE_LIMIT": "100000/minute",
        "ARGON2_TIME_COST": "1",
        "ARGON2_MEMORY_COST": "1024",
        "ARGON2_PARALLELISM": "1",
        # Room in the hashing queue for all of `concurrent_sign_ups` at once: the kernel may
        # hand every racer to one worker, and past its queue (8 by default) a racer would get
        # a 503 before it reached the database, whose unique email is what the race tests.
        "MAX_WAITING_HASHES": str(RACERS),
        "LOG_LEVEL": "WARNING",
        # Both workers try to create this admin at start-up: the database lets one win.
        "ADMIN_EMAIL": "admin@example.com",
        "ADMIN_PASSWORD": PASSWORD,
    }


def fresh_connections(server: Uvicorn) -> httpx.Client:
    # `Connection: close` makes every request open a new connection, which any
    # of the workers may accept.
    return httpx.Client(base_url=server.url, headers={"Connection": "close"}, timeout=15)


def sign_up(client: httpx.Client, name: str, email: str) -> int:
    r = client.post("/users", json={"name": name, "email": email, "password": PASSWORD})
    assert r.status_code == 201, r.text
    return int(r.json()["id"])


def log_in(client: httpx.Client, email: str) -> httpx.Response:
    return client.post("/auth/token", data={"username": email, "password": PASSWORD})


def bearer(client: httpx.Client, email: str) -> dict[str, str]:
    r = log_in(client, email)
    assert r.status_code == 200, r.text
    return {"Authorization": f"Bearer {r.json()['access_token']}"}


def concurrent_sign_ups(server: Uvicorn, email: str, count: int = RACERS) -> list[int]:
    def one(n: int) -> int:
        with fresh_connections(server) as client:
            # Half of them shout: the database compares emails case-insensitively.
            cased = email.upper() if n % 2 else email
            body = {"name": f"Racer {n}", "email": cased, "password": PASSWORD}
            return client.post("/users", json=body).status_code

    with ThreadPoolExecutor(max_workers=count) as pool:
        return list(pool.map(one, range(count)))


@contextlib.contextmanager
def two_workers(env: dict[str, str]) -> Iterator[Uvicorn]:
    server = Uvicorn(APP, workers=2, env=env)
    try:
        server.start()
        yield server
    finally:
        server.__exit__()  # also when start() failed: no uvicorn is left behind


def exercise_two_workers_and_a_restart(env: dict[str, str]) -> None:
    with two_workers(env) as server, fresh_connections(server) as client:
        alice = sign_up(client, "Alice", "alice@example.com")
        bob = sign_up(client, "Bob", "bob@example.com")
        as_alice, as_bob = bearer(client, "ALICE@example.com"), bearer(client, "bob@example.com")

        # Created through one worker, found by every worker.
        for _ in range(ROUNDS):
            assert log_in(client, "alice@example.com").status_code == 200
        r = client.patch(f"/users/{alice}", json={"name": "Alice B."}, headers=as_alice)
        assert r.status_code == 200, r.text
        for _ in range(ROUNDS):
            r = client.get("/users/me", headers=as_alice)
            assert r.status_code == 200, r.text
            assert r.json()["name"] == "Alice B."
            r = client.get(f"/users/{alice}", headers=as_bob)
            assert r.status_code == 200, r.text
            assert r.json()["name"] == "Alice B."

        statuses = concurrent_sign_ups(server, "race@example.com")
        assert sorted(statuses) == [201] + [409] * (RACERS - 1), statuses

        sign_up(client, "Dave", "dave@example.com")
        as_dave = bearer(client, "dave@example.com")
        assert client.post("/auth/logout", headers=as_dave).status_code == 204

        server.stop()
        forget_keys(env["REDIS_URL"], env["REDIS_PREFIX"])  # as if Redis lost its data
        server.start()

        # The logout is in the database, so it outlives the Redis data.
        r = client.get("/users/me", headers=as_dave)
        assert r.status_code == 401, r.text

        # Everything is still there after a full restart, and ids go on.
        assert log_in(client, "alice@example.com").status_code == 200
        r = client.get(f"/users/{alice}", headers=as_alice)
        assert r.status_code == 200, r.text
        assert r.json()["email"] == "alice@example.com"
        assert r.json()["name"] == "Alice B."
        carol = sign_up(client, "Carol", "carol@example.com")
        assert carol > bob
        as_admin = bearer(client, "admin@example.com")  # only admins see every email
        r = client.get("/users", params={"limit": 100}, headers=as_admin)
        assert r.status_code == 200, r.text
        emails = [u["email"] for u in r.json()]
        assert (emails.count("race@example.com"), emails.count("admin@example.com")) == (1, 1)

        # Deleted through one worker, gone for every worker.
        r = client.delete(f"/users/{alice}", headers=as_alice)
        assert r.status_code == 204, r.text
        for _ in range(ROUNDS):
            assert log_in(client, "alice@example.com").status_code == 401
            r = client.get(f"/users/{alice}", headers=as_bob)
            assert r.status_code == 404, r.text


@pytest.mark.slow
def test_with_the_memory_store_two_workers_do_not_share_users(
    redis_url: str, redis_prefix: str
) -> None:
    """The control: fresh connections do reach both workers, so the tests below,
    where every request finds the user, show the database is what they share."""
    env = {**app_env("memory://", redis_url, redis_prefix), "DB_LATENCY_MS": "0"}
    with two_workers(env) as server, fresh_connections(server) as client:
        sign_up(client, "Alice", "alice@example.com")
        statuses: set[int] = set()
        # Which worker accepts a connection is the kernel's choice, and an idle one may
        # pick the same worker many times in a row; concurrent requests spread them.
        with ThreadPoolExecutor(8) as pool:
            for _ in range(25):
                logins = pool.map(lambda _: log_in(client, "alice@example.com"), range(8))
                statuses |= {r.status_code for r in logins}
                if statuses == {200, 401}:
                    break

    assert statuses == {200, 401}


@pytest.mark.slow
def test_two_workers_share_one_sqlite_file_that_survives_a_restart(
    tmp_path: Path, redis_url: str, redis_prefix: str
) -> None:
    database_url = f"sqlite+aiosqlite:///{tmp_path / 'data' / 'final.db'}"

    exercise_two_workers_and_a_restart(app_env(database_url, redis_url, redis_prefix))


@pytest.mark.slow
def test_two_workers_share_one_postgresql_database_that_survives_a_restart(
    e2e_postgres_url: str, redis_url: str, redis_prefix: str
) -> None:
    exercise_two_workers_and_a_restart(app_env(e2e_postgres_url, redis_url, redis_prefix))
