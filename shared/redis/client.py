"""The Redis client, its readiness probe and the circuit (week 8: Redis basics, Redis with FastAPI).

`REDIS_URL` names one of three deployments, and `create_redis` builds redis-py's
own client for it:

- `redis://host:6379/0` (or `rediss://`): one server, as in week 8;
- `redis+cluster://host:7000,host:7001`: a Redis Cluster, reached through any of
  the nodes listed (redis-py's `RedisCluster` learns the rest and follows slot moves);
- `redis+sentinel://host:26379,host:26380/service[/db]`: the primary that the
  Sentinels name for `service`, followed through a failover (redis-py's `Sentinel`).

The client is built for a server that may be down, paused, restarted or failed over:

- short socket and connect timeouts, and no automatic retries (redis-py 8 retries
  with back-off by default, which turns a dead server into seconds of latency per
  call; the callers here fall back on their own, at once);
- a bounded pool: a burst can't open unbounded sockets;
- a `RedisWatch` hooked into every new connection, which notices when the server
  behind the client is a different one (a restart, possibly from an old snapshot,
  or a replica promoted by a failover), so the cache and the token service can
  re-check what they keep in Redis.

The caller owns the client: create it in the app's lifespan and close it there
with `await client.aclose()`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import unquote

from pydantic import field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict
from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.connection import AbstractConnection
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel
from redis.backoff import NoBackoff
from redis.exceptions import RedisError, ResponseError, SlotNotCoveredError

# Everything that means "Redis is unusable right now" for a caller that falls back.
# SlotNotCoveredError: a cluster with a slot's primary gone and no replica promoted yet.
REDIS_ERRORS: tuple[type[BaseException], ...] = (
    RedisError,
    OSError,
    asyncio.TimeoutError,
    SlotNotCoveredError,
)

# The client the modules of `shared` accept: one server (also behind Sentinel) or a cluster.
AnyRedis = Redis | RedisCluster

RedisMode = Literal["single", "cluster", "sentinel"]


@dataclass(frozen=True, slots=True)
class RedisTarget:
    """What a `REDIS_URL` names (see the module docstring for the three forms)."""

    mode: RedisMode
    url: str
    nodes: tuple[tuple[str, int], ...] = ()
    service: str = ""
    db: int = 0
    username: str | None = None
    password: str | None = None
    ssl: bool = False


def parse_redis_url(url: str) -> RedisTarget:
    """Read a `REDIS_URL`; raises ValueError naming what is wrong."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        raise ValueError("REDIS_URL is not a URL: expected redis://, redis+cluster:// ...")
    base, _, mode = scheme.partition("+")
    if base not in ("redis", "rediss", "unix") or mode not in ("", "cluster", "sentinel"):
        raise ValueError(
            f"unknown Redis URL scheme {scheme!r}: use redis://, rediss://, unix://,"
            " redis+cluster:// or redis+sentinel://"
        )
    if not mode:
        return RedisTarget("single", url)
    if base == "unix":
        raise ValueError(f"{scheme}:// needs host:port addresses, not a socket path")
    netloc, _, path = rest.partition("/")
    credentials, _, hosts = netloc.rpartition("@")
    username, _, password = credentials.partition(":")
    shown = f"{scheme}://{hosts}/{path}"  # never a password in an error message
    nodes = tuple(_address(part, shown) for part in hosts.split(",") if part)
    if not nodes:
        raise ValueError(f"{shown!r} names no host:port")
    parts = [part for part in path.split("/") if part]
    target = RedisTarget(
        "cluster" if mode == "cluster" else "sentinel",  # pragma: no mutate (rebuilt below)
        url,
        nodes,
        username=unquote(username) or None,
        password=unquote(password) or None,
        ssl=base == "rediss",
    )
    if mode == "cluster":
        if parts:
            raise ValueError(
                f"{shown!r}: a cluster has only database 0, so no path after the hosts"
            )
        return target
    if not parts or len(parts) > 2 or (len(parts) == 2 and not parts[1].isdigit()):
        raise ValueError(f"{shown!r}: expected redis+sentinel://host:port,.../service[/db]")
    return RedisTarget(
        "sentinel",
        url,
        nodes,
        service=unquote(parts[0]),
        db=int(parts[1]) if len(parts) == 2 else 0,
        username=target.username,
        password=target.password,
        ssl=target.ssl,
    )


def _address(text: str, url: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"{url!r}: {text!r} is not host:port")
    return host.strip("[]"), int(port)


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

    @field_validator("url")
    @classmethod
    def _known_form(cls, url: str) -> str:
        parse_redis_url(url)  # a typo fails at start-up, not at the first request
        return url


class RedisWatch:
    """Counts changes of the server behind one client, seen as a new `run_id` on connect.

    A restarted Redis may come back empty or with an old snapshot, and a replica
    promoted by a failover may lack the last writes; none of it shows up as an
    error when the pool quietly reconnects, so every new connection asks the server
    who it is. `generation` goes up each time the answer changes; modules compare
    it with the value they last saw.

    A cluster has one server per address. There a new `run_id` at a known address
    is a restart; a new address is the normal first connection to a node until
    `settle()` (the first successful check of every primary), and after that a
    topology change such as a promoted replica.
    """

    def __init__(self, *, per_address: bool = False) -> None:
        self.per_address = per_address
        self.run_ids: dict[str, bytes] = {}
        self.generation = 0
        self.settled = not per_address

    @property
    def run_id(self) -> bytes | None:
        """The run_id last seen (of any node, in a cluster)."""
        return next(reversed(self.run_ids.values()), None)

    def settle(self) -> None:
        """Every node this client will use has been seen: a new address is news from now on."""
        self.settled = True

    async def on_connect(self, connection: AbstractConnection) -> None:
        """Run the normal handshake, then record the server's run_id."""
        await connection.on_connect()
        # A bare INFO has the server section too, and Redis reads names in any case.
        await connection.send_command("INFO", "server")  # pragma: no mutate (equivalents)
        try:
            info = await connection.read_response()
        except ResponseError:
            return  # an ACL that forbids INFO: no restart detection, but a working client
        run_id = parse_run_id(info)
        if run_id is not None:
            address = f"{getattr(connection, 'host', '')}:{getattr(connection, 'port', '')}"
            self.saw(address if self.per_address else "", run_id)

    def saw(self, address: str, run_id: bytes) -> None:
        """Record that `address` is served by the server `run_id`."""
        before = self.run_ids.get(address)
        if before == run_id:
            return
        if before is not None or (self.settled and self.run_ids):
            self.generation += 1
        self.run_ids[address] = run_id


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


class SentinelRedis(Redis):
    """The primary's client; closing it also closes its connections to the Sentinels."""

    sentinels: Sentinel | None = None

    async def aclose(self, close_connection_pool: bool | None = None) -> None:
        await super().aclose(close_connection_pool)
        if self.sentinels is not None:
            for client in self.sentinels.sentinels:
                await client.aclose()


def create_redis(settings: RedisSettings | None = None) -> AnyRedis:
    """Build a client with short timeouts, no retries and a bounded pool, for any `REDIS_URL`."""
    settings = settings or RedisSettings()
    target = parse_redis_url(settings.url)
    watch = RedisWatch(per_address=target.mode == "cluster")
    timeouts: dict[str, Any] = {
        "socket_timeout": settings.socket_timeout,
        "socket_connect_timeout": settings.connect_timeout,
        "health_check_interval": settings.health_check_interval,
        # One attempt per call: the callers fall back on their own, quickly.
        "retry": Retry(NoBackoff(), 0),
    }
    if target.mode == "cluster":
        cluster = RedisCluster(
            startup_nodes=[ClusterNode(host, port) for host, port in target.nodes],
            # Per node; past it a call fails at once with MaxConnectionsError.
            max_connections=settings.max_connections,
            username=target.username,
            password=target.password,
            ssl=target.ssl,
            **timeouts,
        )
        # RedisCluster takes no connect hook as an argument; redis-py wires its own
        # per-connection handlers the same way: into the kwargs every node's
        # connections are built from, and into the startup nodes made before.
        cluster.nodes_manager.connection_kwargs["redis_connect_func"] = watch.on_connect
        for node in cluster.nodes_manager.startup_nodes.values():
            node.connection_kwargs["redis_connect_func"] = watch.on_connect
        return cluster
    if target.mode == "sentinel":
        sentinel = Sentinel(  # type: ignore[no-untyped-call]
            list(target.nodes),
            # Unused (master_for passes its own timeouts, the Sentinels get sentinel_kwargs).
            socket_timeout=settings.socket_timeout,  # pragma: no mutate (unused)
            sentinel_kwargs={
                "socket_timeout": settings.socket_timeout,
                "socket_connect_timeout": settings.connect_timeout,
                # redis-py's own default would retry each Sentinel 10 times, with back-off.
                "retry": Retry(NoBackoff(), 0),
            },
        )
        client: SentinelRedis = sentinel.master_for(
            target.service,
            redis_class=SentinelRedis,
            db=target.db,
            username=target.username,
            password=target.password,
            ssl=target.ssl,
            # Past it a call fails at once ("Too many connections"): Sentinel's pool
            # doesn't wait for a free connection the way a BlockingConnectionPool does.
            max_connections=settings.max_connections,
            redis_connect_func=watch.on_connect,
            **timeouts,
        )
        client.sentinels = sentinel
        return client
    pool = BlockingConnectionPool.from_url(
        settings.url,
        max_connections=settings.max_connections,
        timeout=settings.pool_timeout,
        redis_connect_func=watch.on_connect,
        **timeouts,
    )
    return Redis.from_pool(pool)


def is_cluster(client: AnyRedis | None) -> bool:
    """True for a Redis Cluster client: every script and MGET must then stay in one slot."""
    return isinstance(client, RedisCluster)


def redis_watch(client: AnyRedis | None) -> RedisWatch | None:
    """The `RedisWatch` of a client made by `create_redis`, else None."""
    if client is None:
        return None
    if isinstance(client, RedisCluster):
        hook = client.nodes_manager.connection_kwargs.get("redis_connect_func")
    else:
        hook = client.connection_pool.connection_kwargs.get("redis_connect_func")
    owner = getattr(hook, "__self__", None)
    return owner if isinstance(owner, RedisWatch) else None


async def server_run_id(client: AnyRedis) -> bytes:
    """The run_id of the server behind `client`: it changes on every restart.

    For a cluster, the run_ids of every primary, sorted and joined: a restart or a
    failover of any of them changes it. b"unknown" when an ACL forbids INFO:
    callers then only notice restarts that lose data.
    """
    try:
        if isinstance(client, RedisCluster):
            # A bare INFO has the server section too, and Redis reads names in any case.
            # pragma: no mutate start (equivalents)
            replies = await client.info("server", target_nodes=RedisCluster.PRIMARIES)
            # pragma: no mutate end
            run_ids = sorted(str(reply.get("run_id", "unknown")) for reply in replies.values())
            return ",".join(run_ids).encode()
        info: dict[str, Any] = await client.info("server")  # pragma: no mutate (as above)
    except ResponseError:
        return b"unknown"
    return str(info.get("run_id", "unknown")).encode()


async def redis_ready(client: AnyRedis | None, seconds: float = 0.5) -> bool:
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
        self._retry_at = 0.0  # pragma: no mutate (read only after failed() has set it)
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
