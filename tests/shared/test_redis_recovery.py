"""`RedisRecovery`: when the denylist and the cache may trust Redis again, on a real server."""

from __future__ import annotations

import asyncio
import logging

import pytest

from shared.redis import AnyRedis as Redis
from shared.redis import RedisCircuit, RedisRecovery
from tests.waiting import wait_until

LOGGER = logging.getLogger("tests.recovery")


class CountingRepair:
    """A repair that counts its runs and can be held, fail, or run some code midway."""

    def __init__(self) -> None:
        self.runs = 0
        self.release = asyncio.Event()
        self.release.set()
        self.failures_left = 0
        self.midway: list[object] = []

    async def __call__(
        self, redis: Redis, run_id: bytes, *, dirty: bool, server_changed: bool
    ) -> None:
        self.runs += 1
        await self.release.wait()
        while self.midway:
            hook = self.midway.pop()
            assert callable(hook)
            hook()
        if self.failures_left:
            self.failures_left -= 1
            raise RuntimeError("the durable store is unreachable")


def recovery_for(redis: Redis, repair: CountingRepair) -> RedisRecovery:
    return RedisRecovery(
        redis,
        repair,
        RedisCircuit(),
        logger=LOGGER,
        while_down="testing",
        interval=0.01,
    )


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
    failures = [r for r in caplog.records if "repairing Redis failed" in r.getMessage()]
    assert len(failures) == 2
    assert all(r.exc_info is not None for r in failures)
