"""Past one Redis: the three REDIS_URL forms, the hash tags that keep each script in one
cluster slot, and a cluster node restarted empty (the rest of the suite runs on a
cluster and behind Sentinel with `pytest --redis-mode cluster|sentinel`)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, cast

import pytest
from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.connection import AbstractConnection, SSLConnection
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import SentinelManagedSSLConnection

from shared.auth import AuthSettings, MemoryTokenStore, TokenService
from shared.cache.entries import VersionedEntries
from shared.redis import (
    PEEK_STATE,
    RedisSettings,
    RedisTarget,
    RedisWatch,
    SentinelRedis,
    create_redis,
    hash_tag,
    is_cluster,
    keep_peeked,
    key_slot,
    parse_redis_url,
    parse_run_id,
    peeked,
    redis_ready,
    redis_watch,
    same_slot,
    server_run_id,
)
from tests.servers import ROOT, RedisClusterServers, RedisSentinelGroup, RedisServer
from tests.waiting import wait_until

# REDIS_URL forms ------------------------------------------------------------------------


def test_a_plain_url_is_one_server() -> None:
    target = parse_redis_url("redis://localhost:6379/2")
    assert (target.mode, target.url) == ("single", "redis://localhost:6379/2")


def test_a_cluster_url_lists_seed_nodes() -> None:
    target = parse_redis_url("redis+cluster://u:p%40ss@10.0.0.1:7000,10.0.0.2:7001")
    assert target.mode == "cluster"
    assert target.nodes == (("10.0.0.1", 7000), ("10.0.0.2", 7001))
    assert (target.username, target.password, target.ssl) == ("u", "p@ss", False)
    assert parse_redis_url("rediss+cluster://h:7000").ssl


def test_a_sentinel_url_names_the_service_and_a_database() -> None:
    target = parse_redis_url("redis+sentinel://s1:26379,s2:26380/orders/3")
    assert target.mode == "sentinel"
    assert target.nodes == (("s1", 26379), ("s2", 26380))
    assert (target.service, target.db) == ("orders", 3)
    assert parse_redis_url("redis+sentinel://s1:26379/orders").db == 0


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("localhost:6379", "not a URL"),
        ("http://localhost:6379", "unknown Redis URL scheme"),
        ("redis+shard://h:1", "unknown Redis URL scheme"),
        ("redis+cluster://h:1/0", "only database 0"),
        ("redis+cluster://", "names no host:port"),
        ("redis+cluster://h:notaport", "is not host:port"),
        ("redis+sentinel://s:26379", "service"),
        ("redis+sentinel://s:26379/svc/x", "service"),
    ],
)
def test_a_wrong_url_is_refused_at_start_up_saying_why(url: str, says: str) -> None:
    with pytest.raises(ValueError, match=says):
        RedisSettings(url=url)


def test_an_error_about_a_url_never_shows_its_password() -> None:
    with pytest.raises(ValueError, match="is not host:port") as refused:
        parse_redis_url("redis+cluster://admin:hunter2-secret@h:bad")
    assert "hunter2-secret" not in str(refused.value)


def test_the_final_project_refuses_a_wrong_redis_url() -> None:
    from final_project.app.config import Settings

    with pytest.raises(ValueError, match="only database 0"):
        Settings(redis_url="redis+cluster://h:1/0")


# The watch: a different server behind the same client --------------------------------


def test_one_server_is_new_only_when_its_run_id_changes() -> None:
    watch = RedisWatch()
    watch.saw("", b"a")
    watch.saw("", b"a")
    assert watch.generation == 0
    watch.saw("", b"b")  # a restart, or the replica a failover promoted
    assert watch.generation == 1


def test_in_a_cluster_first_contacts_are_not_news_but_later_changes_are() -> None:
    watch = RedisWatch(per_address=True)
    watch.saw("n1:7000", b"a")
    watch.saw("n2:7001", b"b")  # the first connection to another node
    assert watch.generation == 0
    watch.settle()
    watch.saw("n2:7001", b"b")
    assert watch.generation == 0
    watch.saw("n2:7001", b"c")  # that node restarted
    assert watch.generation == 1
    watch.saw("n3:7002", b"d")  # a node never seen: a promoted replica
    assert watch.generation == 2


# Keys: one script, one slot ------------------------------------------------------------


def cluster_client() -> RedisCluster:
    # Never connected: only its key routing is used.
    return RedisCluster(startup_nodes=[ClusterNode("127.0.0.1", 1)])


def test_a_hash_tag_cannot_be_cut_short_by_braces_in_the_name() -> None:
    assert hash_tag("a}b{c") == "{abc}"
    assert key_slot(b"x:{user:7}:1") == key_slot(b"y:{user:7}:2")


def test_a_cached_entry_shares_its_slot_with_its_first_tag() -> None:
    entries = VersionedEntries(cluster_client(), "app:", lock_seconds=1, version_seconds=60)
    lookup = entries.lookup_for("users:one", None, "42", ["user:42"])
    slot = key_slot(lookup.key.encode())
    assert [key_slot(k.encode()) for k in lookup.version_keys] == [slot]
    # The epoch is every entry's: it lives in a slot of its own and is read beside.
    assert lookup.outside == (entries.epoch_key,)


def test_a_second_tag_in_another_slot_is_read_beside_the_script() -> None:
    entries = VersionedEntries(cluster_client(), "app:", lock_seconds=1, version_seconds=60)
    lookup = entries.lookup_for("users:one", "7", "42", ["user:42", "users"])
    assert key_slot(lookup.version_keys[0].encode()) == key_slot(lookup.key.encode())
    assert key_slot(lookup.outside[1].encode()) != key_slot(lookup.key.encode())


# Only keys we name: no command that walks or wipes the keyspace ------------------------

# Called on a Redis client (named redis, client or pipe here), or sent by name.
FORBIDDEN = re.compile(
    r"(redis|client|pipe)\.(keys|scan|scan_iter|flushdb|flushall)\("
    r"|['\"](KEYS|SCAN|FLUSHDB|FLUSHALL)['\"]"
)


def test_the_libraries_never_walk_or_wipe_the_keyspace() -> None:
    sources = [*Path(ROOT, "shared").rglob("*.py"), *Path(ROOT, "final_project/app").rglob("*.py")]
    assert len(sources) > 20
    offenders = [
        f"{path.relative_to(ROOT)}:{number}: {line.strip()}"
        for path in sources
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if FORBIDDEN.search(line)
    ]
    assert offenders == []


# A cluster node restarted empty ---------------------------------------------------------


@pytest.mark.slow
async def test_a_cluster_node_restarted_empty_gets_its_revocations_back(
    private_redis_cluster: RedisClusterServers, auth_settings: AuthSettings
) -> None:
    client = create_redis(RedisSettings(url=private_redis_cluster.url))
    assert isinstance(client, RedisCluster)
    tokens = TokenService(auth_settings, MemoryTokenStore(), client, "t:", circuit_cooldown=0)
    try:
        await client.initialize()  # learn which node serves which slot
        marker_node = client.get_node_from_key("t:auth:ready")
        assert marker_node is not None
        # A token whose revocation lands on another node than the denylist's marker:
        # losing it there leaves the marker standing, so only the watch can tell.
        while True:
            claims = tokens.decode_access((await tokens.issue("7", "user")).access_token)
            deny_key = f"t:auth:deny:{claims.jti}"
            node = client.get_node_from_key(deny_key)
            assert node is not None
            if node.name != marker_node.name:
                break
        assert not await tokens.is_revoked(claims)  # the denylist is verified
        await tokens.logout(claims, None)
        assert await client.exists(deny_key)

        private_redis_cluster.restart_node(int(node.port))

        # Refused all along: by the store while the node is being checked ...
        assert await tokens.is_revoked(claims)

        async def refilled() -> bool:
            return await tokens.is_revoked(claims) and bool(await client.exists(deny_key))

        # ... and by Redis again once the restarted node has been refilled.
        await wait_until(refilled, "the restarted node gets the revocation back")
        assert await client.get("t:auth:ready") is not None
    finally:
        await tokens.aclose()
        await client.aclose()


# Every part of a REDIS_URL lands where it belongs ----------------------------------------


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("unix:///tmp/redis.sock", RedisTarget("single", "unix:///tmp/redis.sock")),
        ("rediss://h:6380/1", RedisTarget("single", "rediss://h:6380/1")),
        (
            "redis+cluster://10.0.0.1:7000,,[::1]:7001,nodeX:7002/",
            RedisTarget("cluster", "", (("10.0.0.1", 7000), ("::1", 7001), ("nodeX", 7002))),
        ),
        (
            "rediss+sentinel://ops:s%3Acret@s1:26379,s2:65535/my%20svc/5/",
            RedisTarget(
                "sentinel",
                "",
                (("s1", 26379), ("s2", 65535)),
                service="my svc",
                db=5,
                username="ops",
                password="s:cret",
                ssl=True,
            ),
        ),
        (
            "redis+sentinel://:pw-only@s1:26379/svc",
            RedisTarget("sentinel", "", (("s1", 26379),), service="svc", password="pw-only"),
        ),
    ],
)
def test_each_part_of_a_url_is_read_into_the_target(url: str, expected: RedisTarget) -> None:
    target = parse_redis_url(url)
    assert target == RedisTarget(
        expected.mode,
        url,
        expected.nodes,
        service=expected.service,
        db=expected.db,
        username=expected.username,
        password=expected.password,
        ssl=expected.ssl,
    )


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("unix+cluster:///tmp/s", "unix+cluster:// needs host:port addresses, not a socket path"),
        ("redis+cluster://h:0", "'redis+cluster://h:0/': 'h:0' is not host:port"),
        ("redis+cluster://h:65536", "'redis+cluster://h:65536/': 'h:65536' is not host:port"),
        ("redis+cluster://:7000", "'redis+cluster://:7000/': ':7000' is not host:port"),
        ("redis+cluster://u:p@/", "'redis+cluster:///' names no host:port"),
        (
            "redis+cluster://h:1/0",
            "'redis+cluster://h:1/0': a cluster has only database 0, so no path after the hosts",
        ),
        (
            "redis+sentinel://s:1/a/1/2",
            "'redis+sentinel://s:1/a/1/2': expected redis+sentinel://host:port,.../service[/db]",
        ),
        (
            "redis+sentinel://s:1/",
            "'redis+sentinel://s:1/': expected redis+sentinel://host:port,.../service[/db]",
        ),
        (
            "redis+sentinel://s:1/svc/x",
            "'redis+sentinel://s:1/svc/x': expected redis+sentinel://host:port,.../service[/db]",
        ),
        ("redis:/h", "REDIS_URL is not a URL: expected redis://, redis+cluster:// ..."),
        (
            "memcached://h:1",
            "unknown Redis URL scheme 'memcached': use redis://, rediss://, unix://,"
            " redis+cluster:// or redis+sentinel://",
        ),
    ],
)
def test_a_wrong_url_is_refused_with_a_message_naming_the_fault(url: str, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)) as refused:
        parse_redis_url(url)
    assert str(refused.value) == message


# Hash tags and slots ---------------------------------------------------------------------


def test_keys_of_one_tag_share_a_slot_and_keys_of_two_tags_do_not() -> None:
    assert hash_tag("user:42") == "{user:42}"
    one, two = f"rl:{hash_tag('user:42')}:a", f"cache:{hash_tag('user:42')}:b"
    other = f"rl:{hash_tag('user:43')}:a"
    assert key_slot(one.encode()) != key_slot(other.encode())
    assert same_slot([one, two])
    assert not same_slot([one, two, other])
    assert same_slot([one])
    assert same_slot([])


# Values read on another module's round trip ----------------------------------------------


def test_peeked_values_reach_the_reader_beside_the_request_state() -> None:
    scope: dict[str, object] = {"type": "http", "state": {"user": "kept"}}
    assert peeked(scope) is None  # nothing was read for it: the reader reads itself
    assert peeked(None) is None
    assert peeked({"type": "http"}) is None  # no request state at all
    keep_peeked(scope, ["deny:1", "valid:2"], [b"1", None])
    assert peeked(scope) == {"deny:1": b"1", "valid:2": None}
    assert scope["state"] == {"user": "kept", PEEK_STATE: {"deny:1": b"1", "valid:2": None}}
    fresh: dict[str, object] = {"type": "http"}
    keep_peeked(fresh, ["k"], [b"v"])
    assert peeked(fresh) == {"k": b"v"}
    with pytest.raises(ValueError, match="zip"):
        keep_peeked(fresh, ["a", "b"], [b"only one"])


# A real cluster and a real Sentinel group ------------------------------------------------


async def test_a_cluster_url_gives_a_working_cluster_client_that_watches_every_node(
    redis_cluster: RedisClusterServers,
) -> None:
    settings = RedisSettings(url=redis_cluster.url, socket_timeout=0.75, connect_timeout=0.5)
    client = create_redis(settings)
    try:
        assert isinstance(client, RedisCluster)
        assert is_cluster(client)
        assert await redis_ready(client)
        kwargs = client.nodes_manager.connection_kwargs
        assert (kwargs["socket_timeout"], kwargs["socket_connect_timeout"]) == (0.75, 0.5)
        assert client.nodes_manager.startup_nodes  # the seed nodes, with their ports
        assert {n.port for n in client.nodes_manager.startup_nodes.values()} >= {
            port for _, port in parse_redis_url(redis_cluster.url).nodes
        }
        watch = redis_watch(client)
        assert watch is not None
        assert watch.per_address
        assert not watch.settled
        primaries = client.get_primaries()
        # One PING to each primary: the watch sees every one of them.
        await client.ping(target_nodes=RedisCluster.PRIMARIES)
        await wait_until(lambda: len(watch.run_ids) >= len(primaries), "every node is seen")
        assert all(":" in address for address in watch.run_ids)
        run_id = await server_run_id(client)
        parts = run_id.decode().split(",")
        assert len(parts) == len(primaries)
        assert parts == sorted(parts)
        assert all(re.fullmatch(r"[0-9a-f]{40}", part) for part in parts)
        assert await server_run_id(client) == run_id
    finally:
        await client.aclose()


async def test_a_sentinel_url_gives_the_primarys_client(
    redis_sentinel: RedisSentinelGroup,
) -> None:
    settings = RedisSettings(url=redis_sentinel.url, socket_timeout=0.75, max_connections=7)
    client = create_redis(settings)
    try:
        assert isinstance(client, SentinelRedis)
        assert not is_cluster(client)
        assert await redis_ready(client)
        kwargs = client.connection_pool.connection_kwargs
        assert (kwargs["socket_timeout"], kwargs["db"]) == (0.75, 0)
        assert client.connection_pool.max_connections == 7
        watch = redis_watch(client)
        assert watch is not None
        assert not watch.per_address
        await client.set("sentinel:probe", b"1", px=5000)
        assert await client.get("sentinel:probe") == b"1"
        run_id = await server_run_id(client)
        assert re.fullmatch(rb"[0-9a-f]{40}", run_id)
        assert watch.run_id == run_id  # the watch saw the server the client talks to
        assert client.sentinels is not None
        sentinels = client.sentinels.sentinels
    finally:
        await client.aclose()
    # Closing the client also closes its connections to the Sentinels.
    for sentinel in sentinels:
        pool = sentinel.connection_pool
        assert not any(c.is_connected for c in pool._available_connections)


async def test_a_user_barred_from_info_still_gets_a_working_client(
    private_redis: RedisServer,
) -> None:
    admin = create_redis(RedisSettings(url=private_redis.url))
    await admin.execute_command("ACL", "SETUSER", "app", "on", ">pw", "~*", "+@all", "-info")
    url = f"redis://app:pw@127.0.0.1:{private_redis.port}/0"
    client = create_redis(RedisSettings(url=url))
    try:
        assert redis_watch(None) is None
        assert await redis_ready(client)
        await client.set("k", b"v")
        assert await client.get("k") == b"v"
        # No restart detection for it, but no error either.
        assert await server_run_id(client) == b"unknown"
        watch = redis_watch(client)
        assert watch is not None
        assert watch.run_id is None
        assert re.fullmatch(rb"[0-9a-f]{40}", await server_run_id(admin))
    finally:
        await client.aclose()
        await admin.aclose()


# What create_redis hands to redis-py, for each form of REDIS_URL --------------------------


def settings_for(url: str) -> RedisSettings:
    """Settings unlike the defaults, to see each reach the client. The clients are never
    connected: these tests read what each would connect with."""
    return RedisSettings(
        url=url,
        max_connections=5,
        pool_timeout=0.05,
        socket_timeout=0.3,
        connect_timeout=0.2,
        health_check_interval=7,
    )


def no_retries(kwargs: dict[str, Any]) -> bool:
    retry = kwargs["retry"]
    return isinstance(retry, Retry) and retry.get_retries() == 0


async def test_one_servers_pool_gets_every_setting() -> None:
    client = create_redis(settings_for("redis://127.0.0.1:1/0"))
    try:
        assert isinstance(client, Redis)
        pool = client.connection_pool
        assert isinstance(pool, BlockingConnectionPool)
        assert (pool.max_connections, pool.timeout) == (5, 0.05)
        kwargs = pool.connection_kwargs
        assert (kwargs["socket_timeout"], kwargs["socket_connect_timeout"]) == (0.3, 0.2)
        assert kwargs["health_check_interval"] == 7
        assert no_retries(kwargs)
        assert redis_watch(client) is not None
    finally:
        await client.aclose()


async def test_a_cluster_urls_credentials_tls_and_bound_reach_every_nodes_connections() -> None:
    url = "rediss+cluster://ops:s3cret@h1.example:7000,h2.example:7001"
    client = create_redis(settings_for(url))
    try:
        assert isinstance(client, RedisCluster)
        watch = redis_watch(client)
        assert watch is not None
        kwargs = client.nodes_manager.connection_kwargs
        assert (kwargs["username"], kwargs["password"]) == ("ops", "s3cret")
        assert kwargs["connection_class"] is SSLConnection
        assert kwargs["max_connections"] == 5
        seeds = client.nodes_manager.startup_nodes.values()
        assert sorted(node.name for node in seeds) == ["h1.example:7000", "h2.example:7001"]
        for node in seeds:
            # The seed nodes were made before the hook was set: they get it too, so the
            # watch sees the first connections as well.
            assert node.connection_kwargs["redis_connect_func"] == watch.on_connect
            assert node.connection_class is SSLConnection
            assert node.max_connections == 5
    finally:
        await client.aclose()


async def test_a_sentinel_urls_settings_reach_the_primary_and_the_sentinels() -> None:
    url = "rediss+sentinel://ops:s3cret@s1.example:26379,s2.example:26380/orders/2"
    client = create_redis(settings_for(url))
    try:
        assert isinstance(client, SentinelRedis)
        pool = client.connection_pool
        assert pool.connection_class is SentinelManagedSSLConnection
        assert pool.max_connections == 5
        kwargs = pool.connection_kwargs
        assert (kwargs["username"], kwargs["password"], kwargs["db"]) == ("ops", "s3cret", 2)
        assert (kwargs["socket_timeout"], kwargs["socket_connect_timeout"]) == (0.3, 0.2)
        assert kwargs["health_check_interval"] == 7
        assert no_retries(kwargs)
        assert client.sentinels is not None
        sentinels = client.sentinels.sentinels
        assert len(sentinels) == 2
        for sentinel in sentinels:
            # Asking a Sentinel where the primary is is bounded by the same timeouts.
            asked = sentinel.connection_pool.connection_kwargs
            assert (asked["socket_timeout"], asked["socket_connect_timeout"]) == (0.3, 0.2)
            assert no_retries(asked)  # a Sentinel that is down: on to the next one at once
    finally:
        await client.aclose()


async def test_closing_the_primarys_client_can_leave_its_pool_open(
    private_redis: RedisServer,
) -> None:
    # redis-py's choice, passed on: a caller that shares the pool keeps it.
    client = SentinelRedis.from_url(private_redis.url)
    assert await client.ping()
    pool = client.connection_pool
    await client.aclose(close_connection_pool=False)
    assert any(c.is_connected for c in pool._available_connections)
    await pool.disconnect()


# The watch, connection by connection ------------------------------------------------------


class FakeConnection:
    """What `RedisWatch.on_connect` uses of a redis-py connection: the handshake, one
    command and its reply. `host` and `port` only when given (a Unix socket has none)."""

    def __init__(self, run_id: bytes, host: str | None = None, port: int | None = None) -> None:
        if host is not None:
            self.host = host
        if port is not None:
            self.port = port
        self.reply = b"# Server\r\nredis_version:7.2.4\r\nrun_id:" + run_id + b"\r\ntcp_port:1\r\n"
        self.sent: list[tuple[object, ...]] = []

    async def on_connect(self) -> None:
        pass

    async def send_command(self, *args: object) -> None:
        self.sent.append(args)

    async def read_response(self) -> bytes:
        return self.reply


async def connect(watch: RedisWatch, run_id: bytes, host: str | None, port: int | None) -> None:
    await watch.on_connect(cast(AbstractConnection, FakeConnection(run_id, host, port)))


async def test_in_a_cluster_each_node_is_known_by_its_host_and_port() -> None:
    watch = RedisWatch(per_address=True)
    await connect(watch, b"a", "10.0.0.1", 7000)
    await connect(watch, b"b", "10.0.0.2", 7000)  # another host, the same port
    assert watch.run_ids == {"10.0.0.1:7000": b"a", "10.0.0.2:7000": b"b"}
    assert watch.generation == 0
    watch.settle()
    await connect(watch, b"c", "10.0.0.2", 7000)  # that node restarted
    assert watch.generation == 1


async def test_a_one_server_watch_sees_a_failover_and_the_failback_as_news() -> None:
    watch = RedisWatch()  # one server unless told otherwise: every change counts at once
    assert not watch.per_address
    assert watch.settled is True
    await connect(watch, b"a", "10.0.0.1", 6379)
    await connect(watch, b"b", "10.0.0.2", 6379)  # Sentinel promoted a replica
    assert watch.generation == 1
    await connect(watch, b"a", "10.0.0.1", 6379)  # and later the old primary again
    assert watch.generation == 2
    assert watch.run_id == b"a"


async def test_a_watch_works_over_a_connection_without_host_and_port() -> None:
    watch = RedisWatch()  # unix:// connections have a path instead
    await connect(watch, b"a", None, None)
    await connect(watch, b"b", None, None)
    assert (watch.run_id, watch.generation) == (b"b", 1)


def test_a_decoded_info_reply_gives_the_same_run_id() -> None:
    # A client made with decode_responses=True reads str, not bytes.
    assert parse_run_id("# Server\r\nrun_id:0123abc\r\nredis_mode:standalone\r\n") == b"0123abc"
    assert parse_run_id(b"run_id: 0123abc \r\n") == b"0123abc"
    assert parse_run_id(b"# Server\r\nredis_version:7\r\n") is None
    assert parse_run_id(None) is None


def test_a_client_with_a_connect_hook_of_its_own_has_no_watch() -> None:
    class Greeter:
        async def on_connect(self, connection: AbstractConnection) -> None:
            await connection.on_connect()

    client = Redis.from_url("redis://127.0.0.1:1/0", redis_connect_func=Greeter().on_connect)
    assert redis_watch(client) is None


# A server whose INFO says nothing of a run_id ----------------------------------------------


async def test_a_server_whose_info_has_no_run_id_is_unknown(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Some Redis-compatible servers and proxies leave run_id out of INFO.
    async def info(section: str | None = None, **kwargs: Any) -> dict[str, Any]:
        return {"redis_version": "7.2.4"}

    client = Redis.from_url("redis://127.0.0.1:1/0")
    monkeypatch.setattr(client, "info", info)
    assert await server_run_id(client) == b"unknown"

    async def cluster_info(section: str | None = None, **kwargs: Any) -> dict[str, Any]:
        return {"n1:7000": {"run_id": "b" * 40}, "n2:7001": {"redis_version": "7.2.4"}}

    cluster = cluster_client()
    monkeypatch.setattr(cluster, "info", cluster_info)
    assert await server_run_id(cluster) == ("b" * 40 + ",unknown").encode()


def test_a_password_may_hold_a_colon() -> None:
    # Only the first colon of the credentials ends the user name.
    target = parse_redis_url("redis+sentinel://ops:s:cr:et@s1:26379/svc")
    assert (target.username, target.password) == ("ops", "s:cr:et")
