"""shared.rate_limit's per-process fallback (`LocalLimiter`) and its Retry-After rounding.

The fallback answers while Redis is away, so its budget must hold like the Redis one:
keys that still limit survive a prune, refused hits spend nothing, and Retry-After
is whole seconds, rounded up, never 0 while refused. The clock is a fake one the
tests move by hand, so nothing waits.
"""

from __future__ import annotations

import tracemalloc
from types import SimpleNamespace

import pytest

from shared.rate_limit import LocalLimiter, Policy, parse_rate
from shared.rate_limit import policies as policies_module
from shared.rate_limit.policies import ceil_seconds

SECOND_NS = 1_000_000_000


class Clock:
    """`time.monotonic_ns` for the limiter, moved only by `advance`."""

    def __init__(self) -> None:
        self.now_ns = 1_000 * SECOND_NS

    def monotonic_ns(self) -> int:
        return self.now_ns

    def advance(self, seconds: float) -> None:
        self.now_ns += round(seconds * SECOND_NS)


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    clock = Clock()
    monkeypatch.setattr(policies_module, "time", SimpleNamespace(monotonic_ns=clock.monotonic_ns))
    return clock


def policy(text: str, name: str = "default") -> Policy:
    return Policy(name, parse_rate(text))


def allowed_of(limiter: LocalLimiter, key: str, policies: list[Policy], n: int) -> int:
    return sum(limiter.hit([key] * len(policies), policies).allowed for _ in range(n))


# Pruning ---------------------------------------------------------------------


def test_a_client_still_limited_survives_a_prune(clock: Clock) -> None:
    limiter = LocalLimiter(max_keys=3)
    one = [policy("1/minute")]
    assert limiter.hit(["ip:busy"], one).allowed
    assert not limiter.hit(["ip:busy"], one).allowed
    # Many other clients come and go, each done long before the next arrives:
    # the limiter is over its size again and again, and prunes.
    for n in range(10):
        clock.advance(1)
        assert limiter.hit([f"ip:{n}"], [policy("1/second")]).allowed
    # 10 s into its minute, the busy client is still out of budget.
    refused = limiter.hit(["ip:busy"], one)
    assert not refused.allowed
    assert refused.retry_after == 50


def test_a_client_that_just_spent_survives_a_prune_of_the_expired_ones(clock: Clock) -> None:
    limiter = LocalLimiter(max_keys=2)
    for n in range(3):
        assert limiter.hit([f"ip:old{n}"], [policy("1/second")]).allowed
    clock.advance(5)  # the old ones are done; the limiter is over its size
    recent = [policy("2/minute")]
    assert allowed_of(limiter, "ip:recent", recent, 2) == 2
    for n in range(3):  # each hit prunes: only the recent client still limits
        assert limiter.hit([f"ip:new{n}"], [policy("1/second")]).allowed
        clock.advance(2)
    assert not limiter.hit(["ip:recent"], recent).allowed


def test_expired_clients_are_dropped_so_memory_stays_bounded(clock: Clock) -> None:
    """A flood of one-off addresses (a scan) must not grow the limiter without end."""
    limiter = LocalLimiter(max_keys=100)
    burst = [policy("10/second")]
    tracemalloc.start()
    try:
        before, _ = tracemalloc.get_traced_memory()
        for n in range(20_000):
            limiter.hit([f"ip:198.51.{n}"], burst)
            clock.advance(1)  # each is done before the next one comes
        after, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # 100 keys take a few KiB; 20 000 kept would take more than a MiB.
    assert after - before < 256 * 1024, after - before
    # ... and the limiter still limits.
    assert allowed_of(limiter, "ip:last", burst, 11) == 10


# Refused hits ----------------------------------------------------------------


def test_a_refused_hit_spends_nothing(clock: Clock) -> None:
    limiter = LocalLimiter()
    three = [policy("3/minute")]  # one back every 20 s
    assert allowed_of(limiter, "ip:1", three, 3) == 3
    assert allowed_of(limiter, "ip:1", three, 50) == 0  # hammering while refused
    clock.advance(20)
    assert allowed_of(limiter, "ip:1", three, 2) == 1  # exactly one came back


def test_a_hit_refused_by_one_policy_spends_none_of_the_others(clock: Clock) -> None:
    limiter = LocalLimiter()
    wide, narrow = policy("5/minute", "wide"), policy("2/minute", "narrow")
    decisions = [limiter.hit(["wide:1", "narrow:1"], [wide, narrow]) for _ in range(4)]
    assert [d.allowed for d in decisions] == [True, True, False, False]
    # The two refused hits left the wide budget alone: 3 of 5 remain.
    assert decisions[-1].states[0].remaining == 3
    assert allowed_of(limiter, "wide:1", [wide], 10) == 3


# Retry-After -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("micros", "seconds"),
    [
        (1, 1),
        (999_999, 1),
        (1_000_000, 1),
        (1_000_001, 2),
        (1_200_000, 2),
        (1_500_000, 2),
        (19_999_999.5, 20),
        (20_000_000, 20),
    ],
)
def test_seconds_for_a_header_are_rounded_up(micros: float, seconds: int) -> None:
    assert ceil_seconds(micros) == seconds


@pytest.mark.parametrize("micros", [0, 0.25, -5])
def test_seconds_for_a_header_are_at_least_one(micros: float) -> None:
    assert ceil_seconds(micros) == 1


@pytest.mark.parametrize("left", [0.000001, 0.2, 0.5, 0.8, 1.2, 1.5, 1.8])
def test_retry_after_is_rounded_up_and_waiting_it_is_enough(clock: Clock, left: float) -> None:
    limiter = LocalLimiter()
    one = [policy("1/minute")]
    assert limiter.hit(["ip:1"], one).allowed
    clock.advance(60 - left)  # `left` seconds before the budget comes back
    refused = limiter.hit(["ip:1"], one)
    assert not refused.allowed
    assert refused.retry_after >= 1
    assert refused.retry_after - 1 < left <= refused.retry_after
    assert refused.header_dict()["retry-after"] == str(refused.retry_after)
    clock.advance(refused.retry_after)
    assert limiter.hit(["ip:1"], one).allowed


def test_retry_after_is_never_later_than_needed(clock: Clock) -> None:
    limiter = LocalLimiter()
    three = [policy("3/minute")]
    assert allowed_of(limiter, "ip:1", three, 3) == 3
    clock.advance(18.8)  # 1.2 s before one request comes back
    refused = limiter.hit(["ip:1"], three)
    assert refused.retry_after == 2
    clock.advance(refused.retry_after - 1)  # a second early: still refused
    assert not limiter.hit(["ip:1"], three).allowed
    clock.advance(1)
    assert limiter.hit(["ip:1"], three).allowed


def test_the_reset_time_is_rounded_up_too(clock: Clock) -> None:
    limiter = LocalLimiter()
    first = limiter.hit(["ip:1"], [policy("2/second")])
    # Half a second used of a one-second window: t=1, never 0.
    assert first.states[0].reset_seconds == 1
    clock.advance(0.3)
    second = limiter.hit(["ip:1"], [policy("2/second")])
    assert second.states[0].reset_seconds == 1  # 0.7 s to go
    assert second.header_dict()["ratelimit"] == '"default";r=0;t=1'
