"""shared.rate_limit's per-process fallback (`LocalLimiter`) and its Retry-After rounding.

The fallback answers while Redis is away, so its budget must hold like the Redis one:
keys that still limit survive a prune, refused hits spend nothing, and Retry-After
is whole seconds, rounded up, never 0 while refused. The clock is a fake one the
tests move by hand, so nothing waits.
"""

from __future__ import annotations

import asyncio
import tracemalloc
from types import SimpleNamespace

import pytest
from starlette.types import Message, Receive, Scope, Send

from shared.rate_limit import (
    Decision,
    LocalLimiter,
    Policy,
    RateLimiter,
    RateLimitMiddleware,
    RouteLimit,
    parse_rate,
)
from shared.rate_limit import policies as policies_module
from shared.rate_limit.middleware import app_state_limiter, client_address
from shared.rate_limit.policies import ceil_seconds
from shared.redis import RedisSettings, create_redis, hash_tag, key_slot, peeked
from tests.clients import client_for, running, serve
from tests.servers import RedisClusterServers

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


# The in-process clock below a microsecond ---------------------------------------------


def test_a_client_paced_exactly_at_the_rate_keeps_its_budget(clock: Clock) -> None:
    limiter = LocalLimiter()
    sixty = [policy("60/minute")]
    clock.now_ns += 500  # half a microsecond past a whole one
    first = limiter.hit(["ip:1"], sixty)
    assert first.states[0].remaining == 59
    clock.now_ns += SECOND_NS - 500  # one request's worth later, to the microsecond
    assert limiter.hit(["ip:1"], sixty).states[0].remaining == 59


def test_the_fallback_counts_every_policy_down_to_zero_and_reports_each(clock: Clock) -> None:
    limiter = LocalLimiter()
    wide, narrow = policy("4/minute", "wide"), policy("2/minute", "narrow")
    keys = ["ip:1:wide", "ip:1:narrow"]
    decisions = [limiter.hit(keys, [wide, narrow]) for _ in range(3)]
    assert [[s.remaining for s in d.states] for d in decisions] == [[3, 1], [2, 0], [2, 0]]
    assert [[s.reset_seconds for s in d.states] for d in decisions] == [
        [15, 30],
        [30, 60],
        [30, 60],
    ]
    assert [(d.allowed, d.retry_after, d.degraded) for d in decisions] == [
        (True, 0, True),
        (True, 0, True),
        (False, 30, True),
    ]
    assert decisions[-1].header_dict() == {
        "ratelimit-policy": '"wide";q=4;w=60, "narrow";q=2;w=60',
        "ratelimit": '"wide";r=2;t=30, "narrow";r=0;t=60',
        "retry-after": "30",
    }
    clock.advance(45)  # 15 s of the narrow window left
    later = limiter.hit(keys, [wide, narrow])
    assert later.allowed
    assert [(s.remaining, s.reset_seconds) for s in later.states] == [(3, 15), (0, 45)]


# The middleware, from the outside --------------------------------------------------------


def rule_for(scope: Scope) -> RouteLimit | None:
    path = scope.get("path", "")
    if path.startswith("/free"):
        return None
    return RouteLimit((policy("2/minute"),), fail_open=not path.startswith("/closed"))


async def echo_app(scope: Scope, receive: Receive, send: Send) -> None:
    """Answers with the request body and a header of its own (none on /bare)."""
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                scope["state"]["limiter"] = RateLimiter(None, "app:")
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    body = (await receive()).get("body", b"")
    seen = peeked(scope)
    start: dict[str, object] = {"type": "http.response.start", "status": 200}
    if scope["path"] != "/bare":
        start["headers"] = [(b"x-app", b"kept"), (b"x-peeked", str(seen).encode())]
    await send(start)
    await send({"type": "http.response.body", "body": body})


def plain_error(status: int, detail: str, scope: Scope) -> tuple[bytes, bytes]:
    return b"text/plain", f"{status} {detail} at {scope['path']}".encode()


async def test_the_middleware_limits_each_address_from_the_lifespan_state() -> None:
    decisions: list[Decision] = []
    app = RateLimitMiddleware(
        echo_app,
        route_limit=rule_for,
        principal=lambda scope: None,  # nobody is signed in: keyed on the address
        peek=lambda scope: ["app:deny:1"],
        on_decision=decisions.append,
    )
    async with running(app) as started:
        one = client_for(started, client=("203.0.113.1", 1000))
        two = client_for(started, client=("203.0.113.2", 2000))
        async with one, two:
            first = await one.post("/echo", content=b"hello")
            # Redis is away: nothing was peeked, so the reader reads for itself.
            assert (first.status_code, first.text) == (200, "hello")
            assert first.headers["x-app"] == "kept"
            assert first.headers["x-peeked"] == "None"
            assert first.headers["ratelimit"] == '"default";r=1;t=30'
            bare = await one.get("/bare")
            assert bare.headers["ratelimit"] == '"default";r=0;t=60'
            refused = await one.get("/echo")
            assert refused.status_code == 429
            assert refused.json() == {"detail": "Rate limit exceeded"}
            assert refused.headers["content-type"] == "application/json"
            assert refused.headers["content-length"] == str(len(refused.content))
            assert refused.headers["retry-after"] == "30"
            # Another address has a budget of its own.
            other = await two.get("/echo")
            assert other.status_code == 200
            assert other.headers["ratelimit"] == '"default";r=1;t=30'
            # An unlimited route carries no headers and spends nothing.
            free = await one.get("/free")
            assert free.status_code == 200
            assert "ratelimit" not in free.headers
    assert [d.allowed for d in decisions] == [True, True, False, True]
    assert all(d.degraded for d in decisions)


async def test_a_fail_closed_route_renders_its_503_with_the_apps_renderer() -> None:
    app = RateLimitMiddleware(echo_app, route_limit=rule_for, render_error=plain_error)
    async with serve(app) as http:
        refused = await http.get("/closed")
    assert refused.status_code == 503
    assert refused.text == "503 Rate limiting is unavailable at /closed"
    assert refused.headers["content-type"] == "text/plain"
    assert refused.headers["content-length"] == str(len(refused.content))
    assert refused.headers["retry-after"] == "1"


async def test_without_a_limiter_or_outside_http_requests_pass_untouched() -> None:
    calls: list[tuple[Scope, Receive, Send]] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        calls.append((scope, receive, send))

    middleware = RateLimitMiddleware(app, route_limit=rule_for)

    async def receive() -> Message:
        return {"type": "websocket.connect"}

    async def send(message: Message) -> None:
        raise AssertionError(message)

    socket: Scope = {"type": "websocket", "path": "/echo", "client": ("203.0.113.1", 1)}
    await middleware(socket, receive, send)
    # A limited path, but no limiter anywhere (no app.state, no lifespan state).
    request: Scope = {"type": "http", "path": "/echo", "client": ("203.0.113.1", 1)}
    await middleware(request, receive, send)
    assert calls == [(socket, receive, send), (request, receive, send)]


def test_the_limiter_is_found_on_the_app_or_in_the_lifespan_state() -> None:
    limiter = RateLimiter(None, "app:")
    on_app = SimpleNamespace(state=SimpleNamespace(limiter=limiter))
    assert app_state_limiter({"app": on_app}) is limiter
    assert app_state_limiter({"app": object(), "state": {"limiter": limiter}}) is limiter
    assert app_state_limiter({"state": {"limiter": "not a limiter"}}) is None
    assert app_state_limiter({}) is None


def test_the_client_address_is_the_servers_view_of_it() -> None:
    assert client_address({"client": ("203.0.113.9", 4000)}) == "203.0.113.9"
    assert client_address({"client": None}) == "unknown"
    assert client_address({}) == "unknown"


# The limiter itself: failing closed, an outage, a cluster --------------------------------


async def test_failing_closed_without_redis_is_a_plain_unavailable_decision() -> None:
    limiter = RateLimiter(None, "app:", fail_open=False)
    assert await limiter.hit("ip:1", [policy("1/minute")]) == Decision(
        False, 1, (), unavailable=True
    )


async def test_an_outage_is_reported_once_and_answered_by_the_fallback() -> None:
    changes: list[bool] = []
    client = create_redis(RedisSettings(url="redis://127.0.0.1:1/0"))
    limiter = RateLimiter(client, "app:", circuit_cooldown=3600, on_circuit_change=changes.append)
    try:
        decisions = [await limiter.hit("ip:1", [policy("1/minute")]) for _ in range(2)]
    finally:
        await client.aclose()
    assert changes == [True]
    assert [(d.allowed, d.degraded) for d in decisions] == [(True, True), (False, True)]


async def test_a_cluster_batch_is_checked_per_slot_and_answers_each_caller(
    redis_cluster: RedisClusterServers, redis_prefix: str
) -> None:
    client = create_redis(RedisSettings(url=redis_cluster.url))
    limiter = RateLimiter(client, redis_prefix, fail_open=False)
    names = [f"user:{n}" for n in range(6)]
    assert len({key_slot(hash_tag(name).encode()) for name in names}) > 1
    near = f"{redis_prefix}seen:{hash_tag('user:0')}"
    far = f"{redis_prefix}seen:{hash_tag('elsewhere')}"
    try:
        await client.set(near, b"near", px=60_000)
        await client.set(far, b"far", px=60_000)
        # Every call of one loop iteration joins one batch, spread over the slots.
        wide, narrow = policy("5/minute", "wide"), policy("3/minute", "narrow")
        hits = [
            limiter.hit(name, [policy(f"{n + 1}/minute")])
            for _ in range(2)
            for n, name in enumerate(names)
        ]
        hits.append(limiter.hit("user:0", [wide, narrow], peek=[near]))
        hits.append(limiter.hit("user:1", [wide], peek=[far]))
        *decisions, both, elsewhere = await asyncio.gather(*hits)
        firsts, seconds = decisions[: len(names)], decisions[len(names) :]
        assert not any(d.unavailable or d.degraded for d in decisions)
        assert [d.states[0].remaining for d in firsts] == list(range(len(names)))
        assert [d.allowed for d in seconds] == [False] + [True] * (len(names) - 1)
        assert seconds[0].retry_after == 60
        assert [d.retry_after for d in seconds[1:]] == [0] * (len(names) - 1)
        assert [d.states[0].remaining for d in seconds[1:]] == list(range(len(names) - 1))
        assert both.allowed
        assert [s.remaining for s in both.states] == [4, 2]
        assert both.peeked == (b"near",)
        # A key of another slot can't ride in the script: the reader reads it itself.
        assert elsewhere.allowed
        assert elsewhere.peeked is None
    finally:
        await client.aclose()
