"""Fixtures every test folder shares: real Redis, real PostgreSQL, and app selection.

- `redis_url`: TEST_REDIS_URL when set, else a private redis-server for the session.
- `redis_prefix`: a key prefix of this test's own; its keys are deleted afterwards,
  so a shared TEST_REDIS_URL server never loses data the tests did not create.
- `private_redis`: a fresh redis-server of this test's own, to kill, pause or restart.
- `postgres_url`: TEST_DATABASE_URL when set, else a throw-away database.

A missing server skips the tests that need it, except under CI=true, where it fails.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator

import pytest
import redis

from tests.servers import (
    IN_CI,
    RedisServer,
    throwaway_postgres_database,
)
from tests.servers import (
    private_redis as start_private_redis,
)


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--app",
        action="append",
        default=[],
        help="run the contract suite for this app only (week5 ... week8, final); repeatable",
    )
    parser.addoption(
        "--workspace",
        default=None,
        help="run the contract suite over the app in this folder instead, graded as --app",
    )


def missing(what: str) -> None:
    """Skip on a laptop without the server; fail in CI, where it must be there."""
    if IN_CI:
        pytest.fail(f"{what} is required under CI=true", pytrace=False)
    pytest.skip(f"{what} is not available")


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    if url := os.environ.get("TEST_REDIS_URL"):
        yield url
        return
    try:
        with start_private_redis() as server:
            yield server.url
    except FileNotFoundError:
        missing("redis-server")


@pytest.fixture
def redis_prefix(redis_url: str) -> Iterator[str]:
    prefix = f"test:{uuid.uuid4().hex[:10]}:"
    yield prefix
    client = redis.Redis.from_url(redis_url, socket_timeout=2)
    try:
        for key in client.scan_iter(match=f"{prefix}*", count=500):
            client.delete(key)
    except redis.RedisError:
        pass  # a fault test may have left the server down; its data died with it
    finally:
        client.close()


@pytest.fixture
def private_redis() -> Iterator[RedisServer]:
    try:
        with start_private_redis() as server:
            yield server
    except FileNotFoundError:
        missing("redis-server")


@contextlib.contextmanager
def empty_postgres_database() -> Iterator[str]:
    """A throw-away database, dropped afterwards; skipped (or, in CI, failed) without one."""
    try:
        with throwaway_postgres_database() as url:
            yield url
    except (OSError, ImportError) as exc:
        missing(f"PostgreSQL ({exc})")


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    if url := os.environ.get("TEST_DATABASE_URL"):
        yield url
        return
    with empty_postgres_database() as url:
        yield url
