"""Past one Redis: the three REDIS_URL forms, the hash tags that keep each script in one
cluster slot, and a cluster node restarted empty (the rest of the suite runs on a
cluster and behind Sentinel with `pytest --redis-mode cluster|sentinel`)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from redis.asyncio.cluster import ClusterNode, RedisCluster

from shared.auth import AuthSettings, MemoryTokenStore, TokenService
from shared.cache.entries import VersionedEntries
from shared.redis import (
    RedisSettings,
    RedisWatch,
    create_redis,
    hash_tag,
    key_slot,
    parse_redis_url,
)
from tests.servers import ROOT, RedisClusterServers
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
