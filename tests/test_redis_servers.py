"""The private Redis Cluster and Sentinel group the tests run against with --redis-mode."""

from __future__ import annotations

import time
import uuid

import pytest
import redis
from redis.cluster import RedisCluster

from tests.servers import (
    CLUSTER_SLOTS,
    RedisClusterServers,
    RedisSentinelGroup,
    sync_redis_client,
)

pytestmark = pytest.mark.slow


def key(name: str) -> str:
    # Random, so a shared session cluster or group never sees a key twice.
    return f"test:{uuid.uuid4().hex[:10]}:{name}"


def test_cluster_spreads_slots_over_three_primaries(redis_cluster: RedisClusterServers) -> None:
    assert len(redis_cluster.ports) == 3
    assert redis_cluster.url == "redis+cluster://" + ",".join(
        f"127.0.0.1:{port}" for port in redis_cluster.ports
    )
    with redis.Redis(port=redis_cluster.ports[0], decode_responses=True) as node:
        # redis-py parses CLUSTER NODES into {"host:port@bus": {"flags": ..., "slots": ...}}.
        nodes = node.execute_command("CLUSTER NODES")
        ranges = {
            int(address.split("@")[0].rsplit(":", 1)[1]): [
                (int(first), int(last)) for first, last in info["slots"]
            ]
            for address, info in nodes.items()
            if "master" in info["flags"]
        }
        assert set(ranges) == set(redis_cluster.ports)
        assert sum(last - first + 1 for r in ranges.values() for first, last in r) == CLUSTER_SLOTS

        def owner(name: str) -> int:
            slot = int(node.cluster("KEYSLOT", name))
            return next(p for p, r in ranges.items() if any(a <= slot <= b for a, b in r))

        # A handful of names is enough to reach every primary.
        owners = {owner(f"{{u:{n}}}") for n in range(20)}
    assert owners == set(redis_cluster.ports)


def test_cluster_client_writes_and_reads_across_nodes(redis_cluster: RedisClusterServers) -> None:
    client = sync_redis_client(redis_cluster.url)
    try:
        assert isinstance(client, RedisCluster)
        names = [key(f"{{u:{n}}}:login") for n in range(30)]
        for n, name in enumerate(names):
            client.set(name, n, ex=60)
        assert [client.get(name) for name in names] == [str(n).encode() for n in range(len(names))]
        # The hash tags put the keys on more than one primary, and scan_iter finds them all.
        ports = {client.get_node_from_key(name).port for name in names}  # type: ignore[no-untyped-call]
        assert len(ports) > 1
        prefix = names[0].split("{")[0]
        found = {k.decode() for k in client.scan_iter(match=f"{prefix}*", count=500)}
        assert found == {names[0]}
        client.delete(*names)
    finally:
        client.close()


def test_cluster_client_from_one_seed_node_finds_the_others(
    redis_cluster: RedisClusterServers,
) -> None:
    client = sync_redis_client(f"redis+cluster://127.0.0.1:{redis_cluster.ports[1]}")
    try:
        assert {node.port for node in client.get_primaries()} == set(redis_cluster.ports)  # type: ignore[union-attr]
    finally:
        client.close()


def test_sentinel_url_gives_a_client_of_the_primary(redis_sentinel: RedisSentinelGroup) -> None:
    host, port = redis_sentinel.primary_address()
    name = key("sentinel")
    client = sync_redis_client(redis_sentinel.url)
    try:
        assert client.set(name, "v", ex=60)
        with redis.Redis(host=host, port=port) as primary:
            assert primary.execute_command("ROLE")[0] == b"master"
            assert primary.get(name) == b"v"
        client.delete(name)
    finally:
        client.close()


def test_sentinel_url_with_a_db(redis_sentinel: RedisSentinelGroup) -> None:
    host, port = redis_sentinel.primary_address()
    name = key("db3")
    client = sync_redis_client(f"{redis_sentinel.url}/3")
    try:
        client.set(name, "v", ex=60)
        with redis.Redis(host=host, port=port, db=3) as primary:
            assert primary.get(name) == b"v"
        client.delete(name)
    finally:
        client.close()


def test_sentinel_fails_over_to_the_replica(private_redis_sentinel: RedisSentinelGroup) -> None:
    group = private_redis_sentinel
    name = key("failover")
    client = sync_redis_client(group.url)
    try:
        client.set(name, "before")
    finally:
        client.close()

    killed_at = time.monotonic()
    old = group.kill_primary()
    group.wait_for_failover(old, timeout=30)

    assert group.primary_address() != old
    client = sync_redis_client(group.url)
    try:
        assert client.set(name, "after")
        usable_after = time.monotonic() - killed_at
        assert client.get(name) == b"after"
    finally:
        client.close()
    print(f"failover: new primary usable {usable_after:.2f} s after the kill")


def test_sync_redis_client_rejects_what_it_cannot_read() -> None:
    with pytest.raises(ValueError, match="service"):
        sync_redis_client("redis+sentinel://127.0.0.1:26379")
    with pytest.raises(ValueError, match="not a Redis URL"):
        sync_redis_client("127.0.0.1:6379")


def test_redis_url_takes_hash_tagged_keys_under_the_prefix(
    redis_url: str, redis_prefix: str
) -> None:
    """Whatever --redis-mode chose, `redis_url` serves keys shaped like the apps' own."""
    client = sync_redis_client(redis_url)
    try:
        names = [f"{redis_prefix}rl:{{u:{n}}}:login" for n in range(10)]
        for name in names:
            client.set(name, 1, ex=60)
        found = {k.decode() for k in client.scan_iter(match=f"{redis_prefix}*", count=500)}
        assert found == set(names)
    finally:
        client.close()
