"""The Redis client, its readiness probe and the circuit (week 8: Redis basics, Redis with FastAPI).

The client is built for a server that may be down, paused or restarted:

- short socket and connect timeouts, and no automatic retries (redis-py 8 retries
  ten times with back-off by default, which turns a dead server into seconds of
  latency per call);
- a bounded `BlockingConnectionPool` that waits only `pool_timeout` for a free
  connection, so a burst can't open unbounded sockets;
- a `RedisWatch` hooked into every new connection, which notices when the server
  behind the client is a different one (a restart, possibly from an old snapshot),
  so the cache and the token service can re-check what they keep in Redis.

The caller owns the client: create it in the app's lifespan and close it there
with `await client.aclose()`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from pydantic_settings import BaseSettings, SettingsConfigDict
from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.connection import AbstractConnection
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError, ResponseError

# Everything that means "Redis is unusable right now" for a caller that falls back.
REDIS_ERRORS: tuple[type[BaseException], ...] = (RedisError, OSError, asyncio.TimeoutError)


class RedisSettings(BaseSettings):
    """Where Redis is and how long to wait for it (env: REDIS_URL, REDIS_PREFIX, ...)."""

    model_config = SettingsConfigDict(env_prefix="REDIS_", env_file=".env", extra="ignore")

    url: str = "redis://localhost:6379/0"
    prefix: str = "app:"
    socket_timeout: float = 0.25
    connect_timeout: float = 0.25
    max_connections: int = 64
    pool_timeout: float = 0.1
    health_check_interval: int = 30


class RedisWatch:
    """Counts changes of the server behind one client, seen as a new `run_id` on connect.

    A restarted Redis may come back empty or with an old snapshot; neither shows up
    as an error when the pool quietly reconnects, so every new connection asks the
    server who it is. `generation` goes up each time the answer changes; modules
    compare it with the value they last saw.
    """

    def __init__(self) -> None:
        self.run_id: bytes | None = None
        self.generation = 0

    async def on_connect(self, connection: AbstractConnection) -> None:
        """Run the normal handshake, then record the server's run_id."""
        await connection.on_connect()
        await connection.send_command("INFO", "server")
        try:
            info = await connection.read_response()
        except ResponseError:
            return  # an ACL that forbids INFO: no restart detection, but a working client
        run_id = parse_run_id(info)
        if run_id is not None and run_id != self.run_id:
            if self.run_id is not None:
                self.generation += 1
            self.run_id = run_id


def parse_run_id(info: object) -> bytes | None:
    """Pick `run_id` out of a raw `INFO server` reply."""
    if isinstance(info, str):
        info = info.encode()
    if not isinstance(info, bytes):
        return None
    for line in info.splitlines():
        if line.startswith(b"run_id:"):
            return line[7:].strip()
    return None


def create_redis(settings: RedisSettings | None = None) -> Redis:
    """Build a client with short timeouts, no retries and a bounded blocking pool."""
    settings = settings or RedisSettings()
    watch = RedisWatch()
    pool = BlockingConnectionPool.from_url(
        settings.url,
        max_connections=settings.max_connections,
        timeout=settings.pool_timeout,
        socket_timeout=settings.socket_timeout,
        socket_connect_timeout=settings.connect_timeout,
        health_check_interval=settings.health_check_interval,
        # One attempt per call: the callers fall back on their own, quickly.
        retry=Retry(NoBackoff(), 0),
        redis_connect_func=watch.on_connect,
    )
    return Redis.from_pool(pool)


def redis_watch(client: Redis | None) -> RedisWatch | None:
    """The `RedisWatch` of a client made by `create_redis`, else None."""
    if client is None:
        return None
    hook = client.connection_pool.connection_kwargs.get("redis_connect_func")
    owner = getattr(hook, "__self__", None)
    return owner if isinstance(owner, RedisWatch) else None


async def server_run_id(client: Redis) -> bytes:
    """The run_id of the server behind `client`: it changes on every restart.

    b"unknown" when an ACL forbids INFO: callers then only notice restarts that lose data.
    """
    try:
        info: dict[str, Any] = await client.info("server")
    except ResponseError:
        return b"unknown"
    return str(info.get("run_id", "unknown")).encode()


async def redis_ready(client: Redis | None, seconds: float = 0.5) -> bool:
    """PING bounded by `seconds`; never raises."""
    if client is None:
        return False
    try:
        async with asyncio.timeout(seconds):
            return bool(await client.ping())
    except REDIS_ERRORS:
        return False


class RedisCircuit:
    """Skips Redis for `cooldown` seconds after a failure.

    Without it every request of an outage pays the full timeout; with it an outage
    costs one timed-out call per cooldown, and the first call after the cooldown
    probes whether Redis is back.
    """

    def __init__(
        self, cooldown: float = 1.0, *, on_change: Callable[[bool], None] | None = None
    ) -> None:
        self.cooldown = cooldown
        self.down = False
        self._retry_at = 0.0
        # Told True when an outage starts and False when it ends (metrics, alerts).
        self.on_change = on_change

    def allows(self) -> bool:
        """True when Redis should be tried now."""
        return not self.down or time.monotonic() >= self._retry_at

    def failed(self) -> bool:
        """Record a failure; True when it starts a new outage."""
        self._retry_at = time.monotonic() + self.cooldown
        started = not self.down
        self.down = True
        if started and self.on_change is not None:
            self.on_change(True)
        return started

    def succeeded(self) -> bool:
        """Record a success; True when it ends an outage."""
        ended = self.down
        self.down = False
        if ended and self.on_change is not None:
            self.on_change(False)
        return ended
