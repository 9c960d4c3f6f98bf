"""Redis client factory and readiness probe (week 8: Redis basics, Redis with FastAPI).

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
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Generic, TypeVar

from pydantic_settings import BaseSettings, SettingsConfigDict
from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.connection import AbstractConnection
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError, ResponseError

# Where a Redis read made on another module's round trip is left for the request:
# `scope["state"][PEEK_STATE]` maps key -> value (see RateLimiter.hit's `peek`).
PEEK_STATE = "redis_peek"

ItemT = TypeVar("ItemT")
ResultT = TypeVar("ResultT")

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


class OneAtATime(Generic[ResultT]):
    """Runs `work` at most once at a time in this process; callers that arrive while
    it runs await the same result.

    Repairs after an outage (refilling a denylist, bumping a cache epoch) must not
    run once per waiting request. `shield` keeps a caller's cancellation (a client
    that hung up) from cancelling the repair the others are waiting for.
    """

    def __init__(self, work: Callable[[], Awaitable[ResultT]]) -> None:
        self._work = work
        self._running: asyncio.Future[ResultT] | None = None

    async def __call__(self) -> ResultT:
        if self._running is None:
            self._running = asyncio.ensure_future(self._work())
            self._running.add_done_callback(self._done)
        return await asyncio.shield(self._running)

    def _done(self, future: asyncio.Future[ResultT]) -> None:
        self._running = None
        if not future.cancelled():
            future.exception()  # mark it retrieved: every waiter may have gone away


class Batcher(Generic[ItemT, ResultT]):
    """Sends the calls made during one event-loop iteration as one Redis command.

    Under load many requests reach the same Redis call in the same iteration, and
    redis-py spends far more per call (connection checkout, timeouts, parsing)
    than Redis spends per item. `run` gets every pending item and returns one
    result per item, in order, from a single command; the batch goes out on the
    next iteration, so a lone call waits for nothing but that.

    While one batch is on its way, the next one collects and leaves when the
    first returns: under load the batches grow instead of several round trips
    running side by side, each paying redis-py's per-call cost.
    """

    def __init__(
        self,
        run: Callable[[list[ItemT]], Awaitable[Sequence[ResultT]]],
        *,
        max_batch: int = 256,
    ) -> None:
        self._run = run
        self._max_batch = max_batch
        self._pending: list[tuple[ItemT, asyncio.Future[ResultT]]] = []
        self._scheduled = False
        self._in_flight = False  # a batch is waiting for Redis
        self._sending: set[asyncio.Task[None]] = set()

    async def submit(self, item: ItemT) -> ResultT:
        """The result for `item`, from the batch it joins; raises what the batch raised."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[ResultT] = loop.create_future()
        self._pending.append((item, future))
        if len(self._pending) >= self._max_batch:
            self._flush()
        elif not self._scheduled and not self._in_flight:
            self._scheduled = True
            loop.call_soon(self._flush)
        return await future

    def _flush(self) -> None:
        self._scheduled = False
        if not self._pending:
            return
        self._in_flight = True
        batch, self._pending = self._pending, []
        # A task of its own: a caller that goes away must not cancel the others' batch.
        task = asyncio.get_running_loop().create_task(self._send(batch))
        self._sending.add(task)
        task.add_done_callback(self._sending.discard)

    async def _send(self, batch: list[tuple[ItemT, asyncio.Future[ResultT]]]) -> None:
        try:
            results = await self._run([item for item, _ in batch])
        except BaseException as exc:
            self._next_batch()
            for _, future in batch:
                if not future.done():
                    if isinstance(exc, Exception):
                        future.set_exception(exc)
                    else:
                        future.cancel()
            if not isinstance(exc, Exception):
                raise
            return
        self._next_batch()
        for (_, future), result in zip(batch, results, strict=True):
            if not future.done():
                future.set_result(result)

    def _next_batch(self) -> None:
        """This batch is back: send the calls that arrived meanwhile (they waited for it)."""
        self._in_flight = False
        self._flush()
