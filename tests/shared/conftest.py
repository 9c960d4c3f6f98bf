"""Fixtures for the shared/ library tests: a client per test, cheap Argon2, key checks."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from redis.exceptions import RedisError

from shared.auth import AuthSettings
from shared.redis import AnyRedis, RedisSettings, create_redis
from tests.waiting import wait_until

SECRET = "s" * 32


@pytest.fixture
def auth_settings() -> AuthSettings:
    # Argon2's floor is 8 KiB per lane: tests hash in microseconds, except the
    # test that is about the defaults.
    return AuthSettings(
        jwt_secret=SECRET, argon2_time_cost=1, argon2_memory_cost=64, argon2_parallelism=1
    )


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[AnyRedis]:
    client = create_redis(RedisSettings(url=redis_url))
    yield client
    await client.aclose()


async def keys_under(client: AnyRedis, prefix: str) -> list[bytes]:
    return [key async for key in client.scan_iter(match=f"{prefix}*", count=500)]


async def assert_every_key_expires(client: AnyRedis, prefix: str) -> list[bytes]:
    """Every key under the prefix has a TTL (PTTL > 0); returns the keys."""
    keys = await keys_under(client, prefix)
    assert keys, "expected some keys under the prefix"
    for key in keys:
        assert await client.pttl(key) > 0, key
    return keys


async def ping_through_a_restart(client: AnyRedis) -> None:
    """Ping until the client reaches the restarted server (the first call may meet the
    dead connection, and a server just started may be slow to answer)."""

    async def answers() -> bool:
        try:
            return bool(await client.ping())
        except RedisError:
            return False

    await wait_until(answers, "the client reaches the restarted server")
