"""shared.redis: short timeouts, no retries, readiness, and restart detection."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import weakref
from collections.abc import Iterator
from typing import Any

import pytest
from redis.exceptions import RedisError

import shared.redis.client as client_module
from shared.redis import (
    AnyRedis,
    Batcher,
    OneAtATime,
    RedisCircuit,
    RedisSettings,
    create_redis,
    parse_redis_url,
    redis_ready,
    redis_watch,
    server_run_id,
)
from tests.servers import RedisServer
from tests.shared.conftest import ping_through_a_restart
from tests.waiting import wait_until, wait_until_sync


async def test_client_is_ready_against_a_live_server(redis_url: str) -> None:
    client = create_redis(RedisSettings(url=redis_url))
    try:
        assert await redis_ready(client)
        assert await client.set("x:probe", b"1", ex=5)
    finally:
        await client.delete("x:probe")
        await client.aclose()


async def test_ready_is_false_without_a_client_or_server(private_redis: RedisServer) -> None:
    assert not await redis_ready(None)
    client = create_redis(RedisSettings(url=private_redis.url))
    private_redis.kill()
    try:
        assert not await redis_ready(client)
    finally:
        await client.aclose()


async def test_a_paused_server_costs_one_short_timeout_not_retries(
    private_redis: RedisServer,
) -> None:
    client = create_redis(RedisSettings(url=private_redis.url))
    watcher = create_redis(RedisSettings(url=private_redis.url))
    assert await client.ping()
    connections = await connections_received(watcher)
    private_redis.pause()
    try:
        # Both give up while the server still hangs ...
        async def get_anything() -> object:
            return await client.get("anything")

        get = asyncio.create_task(get_anything())
        await wait_until(get.done, "the GET gives up while Redis hangs")
        with pytest.raises(RedisError):
            get.result()
        ready = asyncio.create_task(redis_ready(client))
        await wait_until(ready.done, "the readiness check gives up while Redis hangs")
        assert not ready.result()
    finally:
        private_redis.resume()
        await client.aclose()

    try:
        # ... after one try each. The resumed server accepts the connections made while
        # it hung: one, the readiness check's (the GET had its connection already).
        # redis-py's default retries would have reconnected to send each call again.
        async def accepted() -> bool:
            return await connections_received(watcher) > connections

        await wait_until(accepted, "the resumed server accepts what waited for it")
        assert await connections_received(watcher) == connections + 1
    finally:
        await watcher.aclose()


async def connections_received(watcher: AnyRedis) -> int:
    """The server's count of connections accepted so far (INFO stats)."""
    stats = await watcher.info("stats")
    return int(stats["total_connections_received"])


async def test_pool_is_bounded_and_waits_only_briefly(redis_url: str, redis_prefix: str) -> None:
    if parse_redis_url(redis_url).mode == "cluster":
        pytest.skip("a cluster's pools are per node and refuse at once: no wait to bound")
    settings = RedisSettings(url=redis_url, max_connections=1, pool_timeout=0.05, socket_timeout=60)
    client = create_redis(settings)
    other = create_redis(RedisSettings(url=redis_url))
    queue = f"{redis_prefix}queue"
    try:
        # Holds the only connection until something is pushed onto the queue.
        async def hold_the_only_connection() -> object:
            return await client.blpop([queue], timeout=0)

        blocking = asyncio.create_task(hold_the_only_connection())

        async def blocked() -> bool:
            return any(c.get("cmd") == "blpop" for c in await other.client_list())

        await wait_until(blocked, "the BLPOP holds the only connection")
        with pytest.raises(RedisError):
            await client.ping()
        # The PING gave up while the only connection was still taken: it waited for
        # the pool briefly, not for the connection to come back.
        assert not blocking.done()
        await other.lpush(queue, b"done")
        assert await blocking == (queue.encode(), b"done")
        assert await client.ping()
    finally:
        await client.aclose()
        await other.aclose()


async def test_watch_notices_a_restarted_server(private_redis: RedisServer) -> None:
    client = create_redis(RedisSettings(url=private_redis.url))
    try:
        watch = redis_watch(client)
        assert watch is not None
        await client.ping()
        first = watch.run_id
        assert first == await server_run_id(client)
        assert watch.generation == 0
        private_redis.restart()
        await ping_through_a_restart(client)
        assert watch.generation == 1
        assert watch.run_id != first
    finally:
        await client.aclose()


def test_settings_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REDIS_URL", "redis://example:6380/2")
    monkeypatch.setenv("REDIS_PREFIX", "demo:")
    settings = RedisSettings()
    assert settings.url == "redis://example:6380/2"
    assert settings.prefix == "demo:"
    assert settings.socket_timeout <= 0.5


def test_circuit_skips_redis_during_the_cooldown_then_probes_again() -> None:
    circuit = RedisCircuit(cooldown=0.05)
    assert circuit.allows()
    assert circuit.failed()  # a new outage
    assert not circuit.failed()  # the same one
    assert not circuit.allows()
    wait_until_sync(circuit.allows, "the cooldown ends")
    assert circuit.succeeded()
    assert not circuit.down


async def test_calls_of_one_loop_iteration_share_one_command() -> None:
    batches: list[list[int]] = []

    async def run(items: list[int]) -> list[int]:
        batches.append(items)
        await asyncio.sleep(0.01)
        return [item * 10 for item in items]

    batcher: Batcher[int, int] = Batcher(run)
    assert await asyncio.gather(*(batcher.submit(i) for i in range(20))) == [
        i * 10 for i in range(20)
    ]
    assert batches == [list(range(20))]
    assert await batcher.submit(7) == 70  # a lone call goes out on its own


async def test_a_failing_batch_fails_each_of_its_callers() -> None:
    async def run(items: list[int]) -> list[int]:
        raise RedisError("down")

    batcher: Batcher[int, int] = Batcher(run)
    outcomes = await asyncio.gather(*(batcher.submit(i) for i in range(3)), return_exceptions=True)
    assert all(isinstance(o, RedisError) for o in outcomes)


async def test_a_caller_that_goes_away_does_not_cancel_the_others() -> None:
    batches: list[list[int]] = []
    answer = asyncio.Event()

    async def run(items: list[int]) -> list[int]:
        batches.append(items)
        await answer.wait()
        return items

    batcher: Batcher[int, int] = Batcher(run)
    leaving = asyncio.create_task(batcher.submit(1))
    staying = asyncio.create_task(batcher.submit(2))
    await wait_until(lambda: batches == [[1, 2]], "one batch goes out for both")
    leaving.cancel()
    answer.set()
    await wait_until(staying.done, "the caller that stayed gets its answer")
    assert await staying == 2


async def test_one_at_a_time_runs_once_for_concurrent_callers() -> None:
    runs = 0

    async def repair() -> int:
        nonlocal runs
        runs += 1
        await asyncio.sleep(0.05)
        return runs

    once = OneAtATime(repair)
    assert await asyncio.gather(*(once() for _ in range(20))) == [1] * 20
    assert await once() == 2  # a later call after it finished runs it again


async def test_one_at_a_time_survives_a_caller_that_gives_up() -> None:
    started = 0
    finish = asyncio.Event()

    async def repair() -> bool:
        nonlocal started
        started += 1
        await finish.wait()
        return True

    once = OneAtATime(repair)
    impatient = asyncio.create_task(once())
    await wait_until(lambda: started == 1, "the repair starts")
    impatient.cancel()
    # The repair the impatient caller started goes on, and the next caller joins it.
    patient = asyncio.create_task(once())
    await asyncio.sleep(0)  # one turn of the loop: the patient caller is waiting too
    finish.set()
    await wait_until(patient.done, "the patient caller gets the repair's outcome")
    assert await patient is True
    assert started == 1


# Batcher: what its callers see ----------------------------------------------------------


@contextlib.contextmanager
def loop_errors() -> Iterator[list[dict[str, Any]]]:
    """What the event loop reports while the block runs: an exception in a callback, a
    task's exception nobody retrieved, a pending task garbage-collected. Each is a bug
    that only shows up in a log line, so tests ask the loop directly."""
    loop = asyncio.get_running_loop()
    errors: list[dict[str, Any]] = []
    previous = loop.get_exception_handler()
    loop.set_exception_handler(lambda _loop, context: errors.append(context))
    try:
        yield errors
        gc.collect()  # a task nobody refers to is reported when it is collected
    finally:
        loop.set_exception_handler(previous)


async def loop_turns(turns: int = 5) -> None:
    """Let the event loop run a few iterations: what is ready runs, nothing waits for time.

    A batch that would leave early leaves within one iteration; five leave room for it."""
    for _ in range(turns):
        await asyncio.sleep(0)


class HeldRun:
    """A `run` that records each batch and answers it only when the test says so."""

    def __init__(self) -> None:
        self.batches: list[list[int]] = []
        self.answers: list[asyncio.Future[None]] = []

    async def __call__(self, items: list[int]) -> list[int]:
        self.batches.append(items)
        answer = asyncio.get_running_loop().create_future()
        self.answers.append(answer)
        await answer
        return [item * 10 for item in items]

    def answer(self) -> None:
        """Let the oldest unanswered batch return."""
        next(a for a in self.answers if not a.done()).set_result(None)


async def test_a_full_batch_leaves_at_once_and_the_next_call_waits_for_it() -> None:
    run = HeldRun()
    batcher: Batcher[int, int] = Batcher(run, max_batch=3)
    calls = [asyncio.create_task(batcher.submit(i)) for i in range(4)]
    await wait_until(lambda: run.batches, "the first batch goes out")
    # The third call filled the batch, so it left with three items: the fourth, made in
    # the same iteration, did not join it but waits for the next batch.
    await loop_turns()
    assert run.batches == [[0, 1, 2]]
    run.answer()
    await wait_until(lambda: len(run.batches) == 2, "the fourth call goes out when it is back")
    run.answer()
    assert await asyncio.gather(*calls) == [0, 10, 20, 30]
    assert run.batches == [[0, 1, 2], [3]]


async def test_a_batch_holds_at_most_256_items_by_default() -> None:
    sizes: list[int] = []

    async def run(items: list[int]) -> list[int]:
        sizes.append(len(items))
        return items

    batcher: Batcher[int, int] = Batcher(run)
    assert await asyncio.gather(*(batcher.submit(i) for i in range(257))) == list(range(257))
    assert sizes == [256, 1]


async def test_calls_made_while_a_batch_is_out_wait_for_it_and_then_leave_together() -> None:
    run = HeldRun()
    batcher: Batcher[int, int] = Batcher(run)
    first = asyncio.create_task(batcher.submit(1))
    await wait_until(lambda: run.batches == [[1]], "the first batch goes out")
    later = [asyncio.create_task(batcher.submit(i)) for i in (2, 3)]
    await loop_turns()
    # No second round trip beside the first: the later calls wait for it to return.
    assert run.batches == [[1]]
    run.answer()
    await wait_until(lambda: run.batches == [[1], [2, 3]], "the later calls leave as one")
    assert await first == 10
    run.answer()
    assert await asyncio.gather(*later) == [20, 30]
    # Nothing is in flight any more: a lone call goes out again without waiting.
    lone = asyncio.create_task(batcher.submit(4))
    await wait_until(lambda: len(run.batches) == 3, "a lone call goes out")
    run.answer()
    assert await lone == 40


async def test_at_most_one_batch_is_out_at_a_time_however_the_calls_arrive() -> None:
    out = 0
    most_out = 0
    batches: list[list[int]] = []

    async def run(items: list[int]) -> list[int]:
        nonlocal out, most_out
        out += 1
        most_out = max(most_out, out)
        batches.append(items)
        await loop_turns(3)  # a round trip that takes a few iterations
        out -= 1
        return [-item for item in items]

    async def call_after(turns: int, item: int) -> int:
        await loop_turns(turns)
        return await batcher.submit(item)

    batcher: Batcher[int, int] = Batcher(run)
    # Calls arriving on many different iterations, several per iteration: some while a
    # batch is out, some just as one is being sent.
    results = await asyncio.gather(*(call_after(i % 7, i) for i in range(60)))
    assert results == [-i for i in range(60)]
    assert most_out == 1
    assert sorted(item for batch in batches for item in batch) == list(range(60))


async def test_every_caller_of_a_failed_batch_gets_its_exception_and_the_next_batch_leaves() -> (
    None
):
    error = RedisError("down")
    run = HeldRun()

    async def failing(items: list[int]) -> list[int]:
        if not run.batches:
            run.batches.append(items)
            await loop_turns()
            raise error
        return await run(items)

    batcher: Batcher[int, int] = Batcher(failing)
    with loop_errors() as errors:
        failed = [asyncio.create_task(batcher.submit(i)) for i in range(3)]
        await wait_until(lambda: run.batches, "the first batch goes out")
        waiting = asyncio.create_task(batcher.submit(9))  # waits for the failing batch
        outcomes = await asyncio.gather(*failed, return_exceptions=True)
        assert all(outcome is error for outcome in outcomes)
        await wait_until(lambda: len(run.batches) == 2, "the waiting call goes out next")
        run.answer()
        assert await waiting == 90
        del failed, outcomes
    # The failure went to the callers; nothing was left for the loop to complain about.
    assert errors == []


async def test_a_cancelled_batch_cancels_its_callers_and_stays_cancelled() -> None:
    started = asyncio.Event()
    gone = asyncio.get_running_loop().create_future()

    async def run(items: list[int]) -> list[int]:
        started.set()
        await gone  # e.g. a connection the shutdown cancelled
        return items

    batcher: Batcher[int, int] = Batcher(run)
    before = asyncio.all_tasks()
    calls = [asyncio.create_task(batcher.submit(i)) for i in range(2)]
    await started.wait()
    (sending,) = asyncio.all_tasks() - before - set(calls) - {asyncio.current_task()}
    gone.cancel()
    outcomes = await asyncio.gather(*calls, return_exceptions=True)
    assert all(isinstance(outcome, asyncio.CancelledError) for outcome in outcomes)
    # The cancellation goes on up, as a cancellation must: the batch's task ends
    # cancelled, not as if it had succeeded.
    await wait_until(sending.done, "the batch's task ends")
    assert sending.cancelled()


@pytest.mark.parametrize("extra", [-1, 1])
async def test_a_run_that_answers_the_wrong_number_of_results_fails_every_caller(
    extra: int,
) -> None:
    async def run(items: list[int]) -> list[int]:
        return list(range(len(items) + extra))

    batcher: Batcher[int, int] = Batcher(run)
    calls = [asyncio.create_task(batcher.submit(i)) for i in range(3)]
    # None left waiting forever for a result that never comes, none given another's.
    await wait_until(lambda: all(call.done() for call in calls), "every caller is answered")
    assert all(isinstance(call.exception(), ValueError) for call in calls)


async def test_a_batch_out_is_kept_alive_while_only_the_loop_knows_it() -> None:
    # The event loop keeps only weak references to tasks: the batch's own task must be
    # held somewhere, or the garbage collector may drop it mid-flight.
    answers: list[weakref.ref[asyncio.Future[None]]] = []

    async def run(items: list[int]) -> list[int]:
        answer = asyncio.get_running_loop().create_future()
        answers.append(weakref.ref(answer))
        await answer
        return items

    batcher: Batcher[int, int] = Batcher(run)
    with loop_errors() as errors:
        call = asyncio.create_task(batcher.submit(5))
        await wait_until(lambda: answers, "the batch goes out")
        gc.collect()
        answer = answers[0]()
        assert answer is not None, "the batch in flight was garbage-collected"
        answer.set_result(None)
        del answer
        assert await call == 5
    assert errors == []


async def test_one_at_a_time_leaves_no_unretrieved_failure_when_its_callers_gave_up() -> None:
    fail = asyncio.Event()
    started = asyncio.Event()
    ended = False

    async def repair() -> bool:
        nonlocal ended
        started.set()
        try:
            await fail.wait()
            raise RedisError("the repair failed after everyone left")
        finally:
            ended = True

    once = OneAtATime(repair)
    with loop_errors() as errors:
        caller = asyncio.create_task(once())
        await started.wait()
        caller.cancel()
        with pytest.raises(asyncio.CancelledError):
            await caller
        fail.set()
        await wait_until(lambda: ended, "the repair fails with nobody waiting for it")
        await loop_turns()  # its done callbacks run
    # Nobody was there to take the failure, and the loop has nothing to log about it.
    assert errors == []


async def test_one_at_a_time_passes_on_a_cancelled_run_and_runs_again_next_time() -> None:
    runs = 0
    gone = asyncio.get_running_loop().create_future()

    async def repair() -> int:
        nonlocal runs
        runs += 1
        if runs == 1:
            await gone  # what the repair waited for was cancelled
        return runs

    once = OneAtATime(repair)
    with loop_errors() as errors:
        caller = asyncio.create_task(once())
        await wait_until(lambda: runs == 1, "the repair starts")
        gone.cancel()
        with pytest.raises(asyncio.CancelledError):
            await caller
        assert await once() == 2
    assert errors == []


# The circuit, on a clock of the test's own ------------------------------------------------


class Clock:
    """`time` for the client module: `monotonic()` reads what the test set."""

    def __init__(self) -> None:
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now


async def test_the_circuit_waits_exactly_its_cooldown_and_reports_each_outage_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clock = Clock()
    monkeypatch.setattr(client_module, "time", clock)
    changes: list[bool] = []
    circuit = RedisCircuit(on_change=changes.append)  # the default cooldown: one second
    assert circuit.down is False
    assert circuit.allows()
    assert not circuit.succeeded()  # no outage to end
    assert changes == []
    assert circuit.failed()
    assert changes == [True]
    clock.now = 1000.999
    assert not circuit.allows()
    clock.now = 1001.0  # the cooldown is over: the next call probes Redis
    assert circuit.allows()
    assert not circuit.failed()  # the probe failed: the same outage, a new cooldown
    assert changes == [True]
    assert not circuit.allows()
    clock.now = 1002.0
    assert circuit.allows()
    assert circuit.succeeded()
    assert circuit.down is False
    assert changes == [True, False]
    assert not circuit.succeeded()
    assert changes == [True, False]


class RecordingAsyncio:
    """`asyncio` for the client module, but `timeout` records the bound it was given."""

    def __init__(self) -> None:
        self.bounds: list[float | None] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(asyncio, name)

    def timeout(self, delay: float | None) -> asyncio.Timeout:
        self.bounds.append(delay)
        return asyncio.timeout(delay)


async def test_readiness_waits_half_a_second_by_default(
    redis: AnyRedis, monkeypatch: pytest.MonkeyPatch
) -> None:
    recorded = RecordingAsyncio()
    monkeypatch.setattr(client_module, "asyncio", recorded)
    assert await redis_ready(redis)
    assert recorded.bounds == [0.5]


async def test_readiness_gives_up_on_its_own_bound_before_the_clients_timeout(
    private_redis: RedisServer,
) -> None:
    # A client that would wait a minute for a reply still gets a prompt "not ready".
    client = create_redis(RedisSettings(url=private_redis.url, socket_timeout=60))
    assert await client.ping()
    private_redis.pause()
    try:
        ready = asyncio.create_task(redis_ready(client, seconds=0.05))
        await wait_until(ready.done, "the readiness check gives up while Redis hangs")
        assert ready.result() is False
    finally:
        private_redis.resume()
        await client.aclose()
