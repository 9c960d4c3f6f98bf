"""Day 2: Redis from Python with redis.asyncio: SET and GET, a TTL, INCR, EXPIRE and DEL.

    python -m week8_redis.steps.day2_redis_basics      # REDIS_URL=redis://localhost:6379/0

Redis maps keys to values, in memory, and can forget a key by itself when its time
to live (TTL) runs out. The same commands, typed into `redis-cli`:

    127.0.0.1:6379> SET step:greeting "hello"
    OK
    127.0.0.1:6379> GET step:greeting
    "hello"
    127.0.0.1:6379> SET step:session "abc123" EX 10
    OK
    127.0.0.1:6379> TTL step:session
    (integer) 10
    127.0.0.1:6379> INCR step:visits
    (integer) 1
    127.0.0.1:6379> TTL step:visits
    (integer) -1
    127.0.0.1:6379> EXPIRE step:visits 60
    (integer) 1
    127.0.0.1:6379> DEL step:greeting step:session step:visits
    (integer) 3

TTL answers -1 for a key that never expires, and -2 for a key that is not there.
"""

import asyncio
import os

from redis.asyncio import Redis

# Every key of ours starts with this, so a shared server's other keys are never touched.
PREFIX = "step:"
GREETING, SESSION, VISITS = f"{PREFIX}greeting", f"{PREFIX}session", f"{PREFIX}visits"


async def main() -> None:
    url = os.environ.get("REDIS_URL", "redis://localhost:6379/0")
    redis = Redis.from_url(url, decode_responses=True)  # str in and out, not bytes
    try:
        await redis.set(GREETING, "hello")
        print("GET greeting ->", await redis.get(GREETING))
        await redis.set(SESSION, "abc123", ex=10)  # gone by itself in 10 seconds
        print("TTL session ->", await redis.ttl(SESSION))
        print("INCR visits ->", await redis.incr(VISITS), "then", await redis.incr(VISITS))
        print("TTL visits ->", await redis.ttl(VISITS), "(no expiry yet)")
        await redis.expire(VISITS, 60)
        print("TTL visits ->", await redis.ttl(VISITS), "after EXPIRE 60")
        print("GET missing ->", await redis.get(f"{PREFIX}missing"))
    finally:
        print("DEL ->", await redis.delete(GREETING, SESSION, VISITS), "keys deleted")
        await redis.aclose()


if __name__ == "__main__":
    asyncio.run(main())
