"""Day 3: naive cache-aside in Redis, and the race it loses: a write's old value put back.

    python -m week8_redis.steps.day3_naive_cache       # REDIS_URL=redis://localhost:6379/0

Read: GET the key; on a miss, load from the database and SET it with a TTL.
Write: change the database, then DEL the key.

The race: a reader misses and loads the user, but is slow to SET it (a busy event
loop, a slow network). Meanwhile a write changes the user and deletes the key.
Then the reader's SET puts the old user back, and every read serves it until the
TTL ends. Two Events force that order here; in production it is rare, and real.
Week 8's app (app/cache.py) puts a version number in every key and bumps it on
each write, so a late SET lands under an old version that nobody reads any more.
"""

import asyncio
import os
from collections.abc import Awaitable, Callable

from redis.asyncio import Redis

KEY, TTL_SECONDS = "step:user:1", 60
database = {"user:1": "Maroof"}


async def load_user() -> str:
    return database["user:1"]  # a real database would be awaited here


async def read_user(redis: Redis, load: Callable[[], Awaitable[str]] = load_user) -> str:
    cached = await redis.get(KEY)
    if isinstance(cached, str):  # None on a miss
        return cached
    value = await load()
    await redis.set(KEY, value, ex=TTL_SECONDS)
    return value


async def write_user(redis: Redis, name: str) -> None:
    database["user:1"] = name
    await redis.delete(KEY)


async def lose_the_race(redis: Redis) -> str:
    """A slow read around a write; returns what reads serve afterwards."""
    await redis.delete(KEY)  # start from a miss
    loaded, written = asyncio.Event(), asyncio.Event()

    async def slow_load() -> str:
        value = await load_user()  # the old name, in hand...
        loaded.set()
        await written.wait()  # ...held until the write is over
        return value

    reader = asyncio.create_task(read_user(redis, slow_load))
    await loaded.wait()
    await write_user(redis, "Maroof Khan")
    written.set()
    await reader
    return await read_user(redis)


async def main() -> None:
    url = os.environ.get("REDIS_URL", "redis://localhost:6379/0")
    redis = Redis.from_url(url, decode_responses=True)  # str in and out, not bytes
    try:
        served = await lose_the_race(redis)
        print(f"database: {database['user:1']!r}, cache: {served!r} for {await redis.ttl(KEY)} s")
    finally:
        await redis.delete(KEY)
        await redis.aclose()


if __name__ == "__main__":
    asyncio.run(main())
