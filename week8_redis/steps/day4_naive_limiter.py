"""Day 4: two naive Redis rate limiters, and how each lets you down under real traffic.

    python -m week8_redis.steps.day4_naive_limiter     # REDIS_URL=redis://localhost:6379/0

A limit of LIMIT requests per client per WINDOW_SECONDS, counted in Redis so every
process of the app shares one count.

(a) GET the count, then SET it one higher: requests that arrive together all GET
    the same count before any of them SETs, so far more than LIMIT get through.
(b) INCR, then EXPIRE on the window's first request, as two calls: if the process
    stops between them (a crash, a deploy), the counter has no TTL, never resets,
    and the client is locked out for good.

Week 8's app (app/rate_limit.py) counts and sets the expiry in one Lua script,
which Redis runs start to end with nothing in between: no gap for either flaw.
"""

import asyncio
import os

from redis.asyncio import Redis

LIMIT, WINDOW_SECONDS = 5, 60
PREFIX = "step:rate:"


async def allow_get_then_set(redis: Redis, client: str) -> bool:
    key = f"{PREFIX}get-set:{client}"
    count = int(await redis.get(key) or 0)
    # Other requests of this client can GET right here, before our SET: they see this count too.
    if count >= LIMIT:
        return False
    await redis.set(key, count + 1, ex=WINDOW_SECONDS)
    return True


async def allow_incr_then_expire(redis: Redis, client: str) -> bool:
    key = f"{PREFIX}incr:{client}"
    count = await redis.incr(key)  # atomic: no two requests get the same count
    if count == 1:
        # A crash right here leaves a counter that never expires.
        await redis.expire(key, WINDOW_SECONDS)
    return count <= LIMIT


async def main() -> None:
    url = os.environ.get("REDIS_URL", "redis://localhost:6379/0")
    redis = Redis.from_url(url, decode_responses=True)
    keys = f"{PREFIX}get-set:maroof", f"{PREFIX}incr:maroof"
    try:
        await redis.delete(*keys)  # start from zero, even after a run that was killed
        burst = [allow_get_then_set(redis, "maroof") for _ in range(5 * LIMIT)]
        let_through = sum(await asyncio.gather(*burst))
        print(f"(a) GET then SET: {let_through} of {5 * LIMIT} at once let through, limit {LIMIT}")
        await redis.incr(keys[1])  # only the first call: the process stops before EXPIRE
        print(f"(b) INCR, then the process stops: TTL {await redis.ttl(keys[1])}, no expiry")
        answers = [await allow_incr_then_expire(redis, "maroof") for _ in range(LIMIT)]
        print(f"    the next {LIMIT} requests: {answers}; still TTL {await redis.ttl(keys[1])}")
    finally:
        await redis.delete(*keys)
        await redis.aclose()


if __name__ == "__main__":
    asyncio.run(main())
