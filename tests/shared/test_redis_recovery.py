"""`RedisRecovery`: when the denylist and the cache may trust Redis again, on a real server."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest
from redis.asyncio import Redis as PlainRedis
from redis.exceptions import ConnectionError as RedisConnectionError

import shared.redis.recovery as recovery_module
from shared.redis import AnyRedis as Redis
from shared.redis import (
    RedisCircuit,
    RedisRecovery,
    RedisSettings,
    create_redis,
    redis_watch,
    server_run_id,
)
from tests.servers import RedisServer
from tests.shared.conftest import ping_through_a_restart
from tests.waiting import wait_until

LOGGER = logging.getLogger("tests.recovery")


class CountingRepair:
    """A repair that counts its runs and can be held, fail, or run some code midway."""

    def __init__(self) -> None:
        self.runs = 0
        self.release = asyncio.Event()
        self.release.set()
        self.failures_left = 0
        self.failure: type[Exception] = RuntimeError
        self.midway: list[object] = []
        # What each run was told: the client, the server's run_id, dirty, server_changed.
        self.calls: list[tuple[Redis, bytes, bool, bool]] = []

    async def __call__(
        self, redis: Redis, run_id: bytes, *, dirty: bool, server_changed: bool
    ) -> None:
        self.runs += 1
        self.calls.append((redis, run_id, dirty, server_changed))
        await self.release.wait()
        while self.midway:
            hook = self.midway.pop()
            assert callable(hook)
            hook()
        if self.failures_left:
            self.failures_left -= 1
            raise self.failure("the durable store is unreachable")


def recovery_for(redis: Redis | None, repair: CountingRepair, **options: Any) -> RedisRecovery:
    options = {"interval": 0.01, **options}
    circuit = RedisCircuit()
    return RedisRecovery(redis, repair, circuit, logger=LOGGER, while_down="testing", **options)


async def test_a_new_process_checks_redis_once_before_trusting_it(redis: Redis) -> None:
    repair = CountingRepair()
    recovery = recovery_for(redis, repair)
    assert not recovery.trusted()
    assert await recovery.ensure()
    assert await recovery.ensure()
    assert recovery.trusted()
    assert repair.runs == 1


async def test_callers_arriving_during_a_repair_share_it(redis: Redis) -> None:
    repair = CountingRepair()
    repair.release.clear()
    recovery = recovery_for(redis, repair)
    waiting = [asyncio.create_task(recovery.ensure()) for _ in range(10)]
    await wait_until(lambda: repair.runs == 1, "the repair started")
    repair.release.set()
    everyone = asyncio.gather(*waiting)
    await wait_until(everyone.done, "every caller gets the shared repair's outcome")
    assert await everyone == [True] * 10
    assert repair.runs == 1


async def test_a_write_missed_during_a_repair_keeps_redis_untrusted(redis: Redis) -> None:
    repair = CountingRepair()
    recovery = recovery_for(redis, repair)
    # While the repair reads its source, another write of ours misses Redis: what the
    # repair put back may lack it, so Redis must not be declared clean.
    repair.midway.append(recovery.mark_dirty)
    assert not await recovery.ensure()
    assert not recovery.trusted()
    assert await recovery.ensure()  # the next repair starts after the miss
    assert recovery.trusted()


async def test_a_failing_background_repair_is_logged_and_retried(
    redis: Redis, caplog: pytest.LogCaptureFixture
) -> None:
    repair = CountingRepair()
    repair.failures_left = 2
    recovery = recovery_for(redis, repair)
    caplog.set_level(logging.ERROR, logger=LOGGER.name)
    recovery.missed_write()
    try:
        await wait_until(recovery.trusted, "the background repair succeeded")
    finally:
        await recovery.aclose()
    assert repair.runs == 3
    failures = [r for r in caplog.records if r.getMessage() == "repairing Redis failed; retrying"]
    assert len(failures) == 2
    assert all(r.exc_info is not None for r in failures)


# What each repair is told, and when Redis is trusted ------------------------------------


def messages(caplog: pytest.LogCaptureFixture, level: int) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == LOGGER.name and r.levelno == level]


async def test_each_repair_is_told_the_client_the_server_and_what_happened(redis: Redis) -> None:
    repair = CountingRepair()
    recovery = recovery_for(redis, repair)
    run_id = await server_run_id(redis)
    # A new process: nothing missed, no other server, just a check.
    assert await recovery.ensure()
    assert repair.calls == [(redis, run_id, False, False)]
    assert repair.calls[0][0] is redis
    assert recovery.verified == run_id
    # A write of ours missed Redis: the next repair knows it must put it back.
    recovery.mark_dirty()
    assert recovery.verified is None
    assert not recovery.trusted()
    assert await recovery.ensure()
    assert repair.calls[-1] == (redis, run_id, True, False)
    assert recovery.dirty is False
    # Redis said something that does not match: check again, with nothing missed.
    recovery.forget()
    assert recovery.verified is None
    assert not recovery.trusted()
    assert await recovery.ensure()
    assert repair.calls[-1] == (redis, run_id, False, False)
    assert [call[2] for call in repair.calls] == [False, True, False]  # bools, not None
    assert all(isinstance(call[2], bool) and isinstance(call[3], bool) for call in repair.calls)
    assert repair.runs == 3
    assert recovery.trusted()


async def test_a_failed_call_distrusts_redis_and_the_log_tells_the_outage_once(
    redis: Redis, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER.name)
    repair = CountingRepair()
    recovery = recovery_for(redis, repair, when_back="serving from Redis again")
    assert await recovery.ensure()
    # Trusting Redis from the start is no comeback: nothing to tell.
    assert messages(caplog, logging.INFO) == []
    recovery.failed()
    recovery.failed()  # the same outage
    assert not recovery.trusted()
    assert recovery.verified is None
    assert recovery.circuit.down
    assert messages(caplog, logging.WARNING) == ["Redis unusable: testing"]
    # Without dirty_after_errors a failure is no missed write: the repair only checks.
    assert not recovery.dirty
    assert await recovery.ensure()
    assert repair.calls[-1][2] is False
    assert not recovery.circuit.down
    assert messages(caplog, logging.INFO) == ["Redis is back: serving from Redis again"]
    assert await recovery.ensure()  # trusted: no repair, nothing more to tell
    assert messages(caplog, logging.INFO) == ["Redis is back: serving from Redis again"]


async def test_without_words_for_the_comeback_the_log_stays_quiet_about_it(
    redis: Redis, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER.name)
    recovery = recovery_for(redis, CountingRepair())
    recovery.failed()
    assert await recovery.ensure()
    assert not recovery.circuit.down  # the outage ended all the same
    assert messages(caplog, logging.INFO) == []


async def test_with_dirty_after_errors_a_failed_call_makes_the_next_repair_a_full_one(
    redis: Redis,
) -> None:
    repair = CountingRepair()
    recovery = recovery_for(redis, repair, dirty_after_errors=True)
    assert await recovery.ensure()
    recovery.failed()
    assert recovery.dirty
    assert await recovery.ensure()
    assert repair.calls[-1][2] is True
    assert not recovery.dirty


async def test_a_repair_that_redis_refuses_returns_false_and_starts_an_outage(
    redis: Redis, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER.name)
    repair = CountingRepair()
    repair.failures_left, repair.failure = 1, RedisConnectionError
    recovery = recovery_for(redis, repair, when_back="back")
    # Redis errors are what ensure() absorbs: the caller falls back, nothing raises.
    assert not await recovery.ensure()
    assert not recovery.trusted()
    assert recovery.verified is None
    assert recovery.circuit.down
    assert messages(caplog, logging.WARNING) == ["Redis unusable: testing"]
    assert await recovery.ensure()
    assert recovery.trusted()
    assert messages(caplog, logging.INFO) == ["Redis is back: back"]


async def test_a_server_that_is_gone_leaves_redis_untrusted_without_raising(
    private_redis: RedisServer,
) -> None:
    client = create_redis(RedisSettings(url=private_redis.url))
    repair = CountingRepair()
    recovery = recovery_for(client, repair)
    private_redis.kill()
    try:
        assert not await recovery.ensure()  # server_run_id itself failed
        assert repair.runs == 0
        assert recovery.circuit.down
    finally:
        await client.aclose()


async def test_without_a_client_redis_is_never_trusted_and_nothing_is_repaired() -> None:
    repair = CountingRepair()
    recovery = recovery_for(None, repair)
    assert not recovery.server_changed()
    assert not await recovery.ensure()
    assert not recovery.trusted()
    assert repair.runs == 0


async def test_a_client_without_a_watch_is_checked_and_trusted_as_the_same_server(
    private_redis: RedisServer,
) -> None:
    # A client made elsewhere than create_redis has no RedisWatch: restarts go unseen,
    # but the recovery still checks it once and never calls it another server.
    client = PlainRedis.from_url(private_redis.url)
    assert redis_watch(client) is None
    repair = CountingRepair()
    recovery = recovery_for(client, repair)
    try:
        assert not recovery.server_changed()
        assert await recovery.ensure()
        assert repair.calls == [(client, await server_run_id(client), False, False)]
        assert recovery.trusted()
    finally:
        await client.aclose()


async def test_a_restarted_server_is_repaired_as_another_server(
    private_redis: RedisServer,
) -> None:
    client = create_redis(RedisSettings(url=private_redis.url))
    repair = CountingRepair()
    recovery = recovery_for(client, repair)
    try:
        assert await recovery.ensure()
        before = await server_run_id(client)
        assert repair.calls == [(client, before, False, False)]
        private_redis.restart()
        await ping_through_a_restart(client)
        # The client reconnected to a new server: what was verified may be gone.
        assert recovery.server_changed()
        assert not recovery.trusted()
        assert await recovery.ensure()
        after = await server_run_id(client)
        assert after != before
        assert repair.calls[-1] == (client, after, False, True)
        assert recovery.verified == after
        assert not recovery.server_changed()
        assert recovery.trusted()
        # A recovery made after the restart starts from the server the client has now.
        later = CountingRepair()
        fresh = recovery_for(client, later)
        assert not fresh.server_changed()
        assert await fresh.ensure()
        assert later.calls == [(client, after, False, False)]
    finally:
        await client.aclose()


async def test_every_write_missed_during_a_repair_keeps_redis_untrusted(redis: Redis) -> None:
    repair = CountingRepair()
    recovery = recovery_for(redis, repair)
    recovery.mark_dirty()  # an earlier miss, already known when the repairs start
    for _ in range(2):
        repair.midway.append(recovery.mark_dirty)
        assert not await recovery.ensure()
        assert not recovery.trusted()
    assert await recovery.ensure()
    assert recovery.trusted()


# The background repair ------------------------------------------------------------------


async def test_aclose_stops_the_background_repair_and_a_later_miss_starts_another(
    redis: Redis,
) -> None:
    repair = CountingRepair()
    repair.release.clear()
    recovery = recovery_for(redis, repair)
    await recovery.aclose()  # nothing running yet: nothing to stop
    before = asyncio.all_tasks()
    recovery.missed_write()
    (background,) = asyncio.all_tasks() - before
    await wait_until(lambda: repair.runs == 1, "the background repair starts")
    await recovery.aclose()
    assert background.cancelled()
    # The repair it was waiting for is shared (OneAtATime), so it runs to its end.
    repair.release.set()
    await wait_until(recovery.trusted, "the shared repair finishes")
    recovery.missed_write()
    try:
        await wait_until(recovery.trusted, "a new background repair runs after aclose")
    finally:
        await recovery.aclose()
    assert repair.runs == 2


class RecordingAsyncio:
    """`asyncio` for the recovery module, but `sleep` records what it was asked to wait."""

    def __init__(self) -> None:
        self.pauses: list[float] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(asyncio, name)

    async def sleep(self, delay: float) -> None:
        self.pauses.append(delay)
        await asyncio.sleep(0)


async def test_the_background_repair_tries_every_fifth_of_a_second_by_default(
    redis: Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    recorded = RecordingAsyncio()
    monkeypatch.setattr(recovery_module, "asyncio", recorded)
    repair = CountingRepair()
    repair.failures_left = 1
    recovery = RedisRecovery(redis, repair, RedisCircuit(), logger=LOGGER, while_down="testing")
    recovery.missed_write()
    try:
        await wait_until(recovery.trusted, "the background repair succeeded")
    finally:
        await recovery.aclose()
    assert recorded.pauses == [0.2, 0.2]
