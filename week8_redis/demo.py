"""`make demo-week8`: time cached and uncached reads of the same users, so the cache is seen.

It starts the week 8 app with uvicorn (every store call waits DB_LATENCY_MS, like a
database would), signs up some users, then reads each one twice: a MISS, which asks
the store, and a HIT, which Redis answers. It prints the median of each.

    python -m week8_redis.demo [--latency-ms 100] [--users 50]

It needs Redis at REDIS_URL (default redis://localhost:6379/0), and deletes the keys
it wrote when it is done.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import statistics
import sys
import time
import uuid
from dataclasses import dataclass, field

import httpx
from redis.asyncio import Redis
from redis.exceptions import RedisError

PASSWORD = "correct horse battery staple"  # noqa: S105  # the demo users' own


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def wait_until_up(client: httpx.AsyncClient) -> None:
    for _ in range(100):
        try:
            if (await client.get("/health")).status_code == 200:
                return
        except httpx.TransportError:
            pass
        await asyncio.sleep(0.1)
    raise RuntimeError("the app did not start")


async def sign_up(client: httpx.AsyncClient, number: int) -> int:
    body = {"name": f"User {number}", "email": f"user{number}@example.com", "password": PASSWORD}
    r = await client.post("/users", json=body)
    r.raise_for_status()
    return int(r.json()["id"])


@dataclass
class Reads:
    """How long reads took: as the client waited, and inside the app (X-Process-Time)."""

    client_ms: list[float] = field(default_factory=list)
    app_ms: list[float] = field(default_factory=list)

    def row(self, status: str, answered_by: str) -> str:
        client, app = statistics.median(self.client_ms), statistics.median(self.app_ms)
        return f"| {status} | {client:.1f} ms | {app:.1f} ms | {answered_by} |"


async def measure(client: httpx.AsyncClient, users: int) -> dict[str, Reads]:
    """Read every user twice, one request at a time: a MISS, then a HIT."""
    ids = [await sign_up(client, number) for number in range(1, users + 1)]
    login = {"username": "user1@example.com", "password": PASSWORD}
    r = await client.post("/auth/token", data=login)
    r.raise_for_status()
    headers = {"Authorization": f"Bearer {r.json()['access_token']}"}
    # Caches the signed-in user, so every MISS below is exactly one store round trip.
    (await client.get("/users/me", headers=headers)).raise_for_status()

    reads = {"MISS": Reads(), "HIT": Reads()}
    for user_id in ids:
        for expected in reads:
            started = time.perf_counter()
            r = await client.get(f"/users/{user_id}", headers=headers)
            client_ms = (time.perf_counter() - started) * 1000
            r.raise_for_status()
            if r.headers["x-cache"] != expected:
                raise RuntimeError(f"X-Cache: {r.headers['x-cache']}, not {expected}: is Redis up?")
            reads[expected].client_ms.append(client_ms)
            reads[expected].app_ms.append(float(r.headers["x-process-time"]))
    return reads


async def run(latency_ms: int, users: int) -> None:
    redis_url = os.environ.get("REDIS_URL", "redis://localhost:6379/0")
    redis = Redis.from_url(redis_url)
    try:
        await redis.ping()
    except RedisError:
        sys.exit(f"No Redis answers at {redis_url}: start one, or set REDIS_URL.")
    prefix = f"week8-demo-{uuid.uuid4().hex[:8]}:"  # keys of its own, deleted at the end
    port = free_port()
    server = await asyncio.create_subprocess_exec(
        *(sys.executable, "-m", "uvicorn", "week8_redis.app.main:app"),
        *("--port", str(port), "--log-level", "warning"),
        env={
            **os.environ,
            "DB_LATENCY_MS": str(latency_ms),
            "REDIS_URL": redis_url,
            "REDIS_PREFIX": prefix,
            "RATE_LIMIT": "100000/minute",
            # Cheap Argon2: the sign-ups are set-up here, not what is measured.
            "ARGON2_TIME_COST": "1",
            "ARGON2_MEMORY_COST": "1024",
        },
        stderr=asyncio.subprocess.DEVNULL,  # the request log would bury the table
    )
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
            await wait_until_up(client)
            reads = await measure(client, users)
    finally:
        server.terminate()
        await server.wait()
        async for key in redis.scan_iter(match=f"{prefix}*"):
            await redis.delete(key)
        await redis.aclose()

    miss, hit = reads["MISS"], reads["HIT"]
    print(f"\nGET /users/{{id}} with DB_LATENCY_MS={latency_ms}: {users} users, each read twice.\n")
    print("| X-Cache | the client waited (median) | in the app: X-Process-Time (median) | from |")
    print("|---|---:|---:|---|")
    print(miss.row("MISS", "the store"))
    print(hit.row("HIT", "Redis"))
    for_client = statistics.median(miss.client_ms) / statistics.median(hit.client_ms)
    in_app = statistics.median(miss.app_ms) / statistics.median(hit.app_ms)
    print(
        f"\nA HIT is {for_client:.0f}x as fast as a MISS for the client, {in_app:.0f}x in the app."
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--latency-ms", type=int, default=100, help="DB_LATENCY_MS for the app")
    parser.add_argument("--users", type=int, default=50, help="how many users to read twice")
    args = parser.parse_args()
    asyncio.run(run(args.latency_ms, args.users))


if __name__ == "__main__":
    main()
