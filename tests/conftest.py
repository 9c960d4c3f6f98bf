"""Fixtures every test folder shares: real Redis, real PostgreSQL, and app selection.

- `redis_url`: TEST_REDIS_URL when set, else a private Redis for the session: a single
  redis-server, or with `--redis-mode cluster|sentinel` (env TEST_REDIS_MODE) a
  private cluster or sentinel group. In those two modes only the tests that use
  `redis_url` run; the others are deselected, as they would repeat the single run.
- `redis_prefix`: a key prefix of this test's own; its keys are deleted afterwards,
  so a shared TEST_REDIS_URL server never loses data the tests did not create.
- `private_redis`: a fresh redis-server of this test's own, to kill, pause or restart.
- `redis_cluster`, `redis_sentinel`: the session's private cluster and sentinel group;
  `private_redis_sentinel`: a group of this test's own, whose primary it may kill.
- `postgres_url`: TEST_DATABASE_URL when set, else a throw-away database.

A missing server skips the tests that need it, except under CI=true, where it fails.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager as ContextManager
from typing import TypeVar

import pytest

from tests.servers import (
    IN_CI,
    RedisClusterServers,
    RedisSentinelGroup,
    RedisServer,
    forget_keys,
    throwaway_postgres_database,
)
from tests.servers import (
    private_redis as start_private_redis,
)
from tests.servers import (
    private_redis_cluster as start_private_redis_cluster,
)
from tests.servers import (
    private_redis_sentinel as start_private_redis_sentinel,
)

T = TypeVar("T")

REDIS_MODES = ("single", "cluster", "sentinel")


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
    parser.addoption(
        "--redis-mode",
        choices=REDIS_MODES,
        default=os.environ.get("TEST_REDIS_MODE") or "single",
        help="the private Redis behind redis_url: single (default), cluster or sentinel; "
        "env TEST_REDIS_MODE sets the default. Not single: only tests using redis_url run",
    )


def redis_mode(config: pytest.Config) -> str:
    mode = str(config.getoption("--redis-mode"))
    # argparse checks `choices` on the command line only, not a default from the env.
    if mode not in REDIS_MODES:
        raise pytest.UsageError(
            f"--redis-mode / TEST_REDIS_MODE: {mode!r} is none of {REDIS_MODES}"
        )
    return mode


def pytest_configure(config: pytest.Config) -> None:
    redis_mode(config)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The files that start servers first; in cluster or sentinel mode, keep only the
    tests that talk to the chosen Redis."""
    slow_files = {item.path for item in items if item.get_closest_marker("slow")}
    # `make test` hands whole files to two processes (pytest-xdist), in this order: the
    # long ones first, so that no process is left running one alone at the end. The sort
    # is stable, so the tests of a file keep their order.
    items.sort(key=lambda item: item.path not in slow_files)
    if redis_mode(config) == "single":
        return
    selected: list[pytest.Item] = []
    deselected: list[pytest.Item] = []
    for item in items:
        # `fixturenames` holds the fixtures a test uses through other fixtures, too.
        uses_redis = "redis_url" in getattr(item, "fixturenames", ())
        (selected if uses_redis else deselected).append(item)
    if deselected:
        config.hook.pytest_deselected(items=deselected)
        items[:] = selected


def missing(what: str) -> None:
    """Skip on a laptop without the server; fail in CI, where it must be there."""
    if IN_CI:
        pytest.fail(f"{what} is required under CI=true", pytrace=False)
    pytest.skip(f"{what} is not available")


@pytest.fixture(scope="session")
def redis_url(request: pytest.FixtureRequest) -> Iterator[str]:
    if url := os.environ.get("TEST_REDIS_URL"):
        yield url
        return
    mode = redis_mode(request.config)
    # Asked for by name, so a session starts only the kind of Redis its mode needs.
    if mode == "cluster":
        yield request.getfixturevalue("redis_cluster").url
        return
    if mode == "sentinel":
        yield request.getfixturevalue("redis_sentinel").url
        return
    try:
        with start_private_redis() as server:
            yield server.url
    except FileNotFoundError:
        missing("redis-server")


@contextlib.contextmanager
def started(start: Callable[[], ContextManager[T]], what: str) -> Iterator[T]:
    """`start()`'s servers; skipped (or, in CI, failed) when their binary is missing."""
    try:
        with start() as servers:
            yield servers
    except FileNotFoundError as exc:
        missing(f"{what} ({exc})")


@pytest.fixture(scope="session")
def redis_cluster() -> Iterator[RedisClusterServers]:
    with started(start_private_redis_cluster, "Redis Cluster") as cluster:
        yield cluster


@pytest.fixture
def private_redis_cluster() -> Iterator[RedisClusterServers]:
    """A cluster of this test's own, for a test that restarts a node."""
    with started(start_private_redis_cluster, "Redis Cluster") as cluster:
        yield cluster


@pytest.fixture(scope="session")
def redis_sentinel() -> Iterator[RedisSentinelGroup]:
    """The session's sentinel group: tests must not kill its primary (others share it)."""
    with started(start_private_redis_sentinel, "Redis Sentinel") as group:
        yield group


@pytest.fixture
def private_redis_sentinel() -> Iterator[RedisSentinelGroup]:
    """A sentinel group of this test's own, for a test that kills its primary."""
    with started(start_private_redis_sentinel, "Redis Sentinel") as group:
        yield group


@pytest.fixture
def redis_prefix(redis_url: str) -> Iterator[str]:
    # Keys may carry a hash tag after the prefix (`test:ab12:rl:{u:42}:login`), so in
    # a cluster they spread over the nodes; the prefix still starts every one of them.
    prefix = f"test:{uuid.uuid4().hex[:10]}:"
    yield prefix
    forget_keys(redis_url, prefix)


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
