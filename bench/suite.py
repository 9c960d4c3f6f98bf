"""What the suite measures: the apps, the measurements (one wrk load each), and the
ratios R1-R8, P1-P3 built from pairs of measurements.

Placeholders in a load's path and headers are filled in once the apps run:
`<token>` is an access token and `<user_id>` the id of the user who owns it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path

from .wrk import Load

FINAL_APP = "final_project.app.main:app"
WEEK6_APP = "week6_async.app.main:app"

# High enough that wrk is never throttled: the limiter's cost is measured, not 429s.
UNLIMITED = "10000000/minute"

# R4: each request sleeps this long. 1000 connections then ask for 2000 rps; the sync
# side serves 40 / 0.5 = 80 rps at most, so the ratio's ceiling is 1000 / 40 = 25×.
SLEEP_SECONDS = 0.5
# R4 runs for fixed durations (the rounds' --seconds would be far too short): the sync
# side answers in bursts of ~1000 every ~13 s (bench/README.md, "two hops"), so 45 s
# holds three whole bursts; the async side needs a few seconds past its first sleep.
ASYNC_SLEEP_RUN_SECONDS = 10
SYNC_SLEEP_RUN_SECONDS = 45


@dataclass(frozen=True)
class AppSpec:
    name: str
    target: str
    env: Mapping[str, str] = field(default_factory=dict)
    workers: int = 1
    server: str = "uvicorn"  # or "granian" (R8)
    # Apps speaking our API get a user and a token at setup; peers borrow the
    # token of `credentials_from` (they share JWT_SECRET).
    signs_up: bool = False
    credentials_from: str | None = None
    description: str = ""


@dataclass(frozen=True)
class Session:
    """A signed-up user of one app, and their access token."""

    user_id: int
    email: str
    password: str
    token: str


@dataclass(frozen=True)
class Measurement:
    key: str
    app: str
    label: str
    load: Load
    # Load run against the same app during the measurement (R7: logins).
    background: Load | None = None
    # Share of responses expected to carry this X-Cache value (checked, reported).
    expect_cache: str | None = None
    # Restart the app afterwards: wrk hangs up when time is up, but the server still
    # works through every request it accepted (R4: a threadpool queue worth tens of
    # seconds), which would slow down whatever runs next.
    restart_after: bool = False
    # A duration of its own instead of the rounds' --seconds (ignored by --quick).
    seconds: int | None = None


class Metric(Enum):
    THROUGHPUT = "rps"  # numerator rps ÷ denominator rps
    SPEEDUP_P50 = "p50 speed-up"  # denominator p50 ÷ numerator p50 ("× faster")
    P99 = "p99"  # numerator p99 ÷ denominator p99


@dataclass(frozen=True)
class Ratio:
    id: str
    title: str
    numerator: str
    denominator: str
    metric: Metric
    target: float
    at_most: bool = False  # the target is an upper bound (R7)
    meaning: str = ""
    # Also compare server CPU per request: meaningful when both sides do their work
    # on the CPU (not when one sleeps, R4, or when the point is parallelism, R6).
    by_cpu: bool = True

    def passes(self, value: float) -> bool:
        return value <= self.target if self.at_most else value >= self.target

    def target_text(self) -> str:
        sign = "≤" if self.at_most else "≥"
        return f"{sign} {format_ratio(self.target, self.metric)}"


def format_ratio(value: float, metric: Metric) -> str:
    if math.isinf(value):
        return "∞"
    if metric is Metric.SPEEDUP_P50 or value >= 10:
        return f"{value:.0f}×"
    if metric is Metric.P99 or value >= 1.2:
        return f"{value:.2f}×"
    return f"{value:.2f}"


@dataclass(frozen=True)
class Plan:
    apps: dict[str, AppSpec]
    measurements: dict[str, Measurement]
    ratios: list[Ratio]


def final_env(
    redis_url: str,
    secret: str,
    name: str,
    extra: Mapping[str, str] | None = None,
    **overrides: str,
) -> dict[str, str]:
    """The environment of one instance of the app under test.

    `extra` (from `--env`) changes every instance; `overrides` are what one
    measurement needs (e.g. DB_LATENCY_MS=50 for R3) and win over both.
    """
    env = {
        "APP_ENV": "development",
        "JWT_SECRET": secret,
        "REDIS_URL": redis_url,
        "REDIS_PREFIX": f"bench:{name}:",
        "DATABASE_URL": "memory://",
        "DB_LATENCY_MS": "0",
        "RATE_LIMIT": UNLIMITED,
        "LOGIN_RATE_LIMIT": UNLIMITED,
        # R7 logs one account in again and again: the per-account budget would refuse it.
        "LOGIN_ACCOUNT_RATE_LIMIT": UNLIMITED,
        "SIGNUP_RATE_LIMIT": UNLIMITED,
        # Longer than a whole run, so a warmed entry never expires mid-measurement.
        "CACHE_TTL_SECONDS": "3600",
        # Like uvicorn's --no-access-log: no JSON access line per request (logged at INFO).
        "LOG_LEVEL": "WARNING",
    }
    env.update(extra or {})
    env.update(overrides)
    return env


def build_plan(
    *,
    final_target: str,
    week6_target: str,
    redis_url: str,
    secret: str,
    workdir: Path,
    rate_limit_switch: str | None,
    extra_env: Mapping[str, str] | None = None,
    cluster_url: str = "redis+cluster://127.0.0.1:1",
) -> Plan:
    """Everything the suite can measure; `--only` picks ratios from it later."""
    peer_env = {
        "REDIS_URL": redis_url,
        "JWT_SECRET": secret,
        "RATE_LIMIT": UNLIMITED,
        "CACHE_TTL_SECONDS": "3600",
    }
    sqlite = f"sqlite+aiosqlite:///{workdir}/bench.db"
    metrics_dir = workdir / "prometheus"
    metrics_dir.mkdir(exist_ok=True)
    apps = [
        AppSpec("bare", "bench.peers.bare:app", description="bare FastAPI app"),
        AppSpec(
            "final",
            final_target,
            final_env(redis_url, secret, "final", extra_env),
            signs_up=True,
            description="final app, memory://, DB_LATENCY_MS=0",
        ),
        # M1, M2: the same app with Prometheus metrics on, in multiprocess mode as
        # `python -m final_project.serve` runs it (values in memory-mapped files).
        AppSpec(
            "final-metrics",
            final_target,
            final_env(
                redis_url,
                secret,
                "metrics",
                extra_env,
                METRICS_ENABLED="true",
                METRICS_PUBLIC="true",
                PROMETHEUS_MULTIPROC_DIR=str(metrics_dir),
            ),
            signs_up=True,
            description="final app, memory://, METRICS_ENABLED=true (multiprocess mode)",
        ),
        # R7 and L1 compare today's Argon2 sizing (one lane, a core left to the event
        # loop) with the previous one: every core hashing, four lanes each.
        AppSpec(
            "final-wide-argon2",
            final_target,
            final_env(
                redis_url,
                secret,
                "wide",
                extra_env,
                ARGON2_PARALLELISM="4",
                MAX_CONCURRENT_HASHES="2",
            ),
            signs_up=True,
            description="final app, memory://, 2 hashes at once × 4 lanes (the old sizing)",
        ),
        AppSpec(
            "final-db50",
            final_target,
            final_env(redis_url, secret, "db50", extra_env, DB_LATENCY_MS="50"),
            signs_up=True,
            description="final app, memory://, DB_LATENCY_MS=50",
        ),
        # WORKERS=2 needs a database both workers see, so R6 runs both sides on SQLite.
        AppSpec(
            "final-sqlite-w1",
            final_target,
            final_env(
                redis_url, secret, "w1", extra_env, DATABASE_URL=sqlite.replace("bench.db", "w1.db")
            ),
            signs_up=True,
            description="final app, SQLite, WORKERS=1",
        ),
        AppSpec(
            "final-sqlite-w2",
            final_target,
            final_env(
                redis_url, secret, "w2", extra_env, DATABASE_URL=sqlite.replace("bench.db", "w2.db")
            ),
            workers=2,
            signs_up=True,
            description="final app, SQLite, WORKERS=2",
        ),
        AppSpec(
            "week6",
            week6_target,
            {"DB_LATENCY_MS": "0"},
            description="week 6 app",
        ),
        AppSpec(
            "limiter-cache",
            "bench.peers.limiter_cache:app",
            {**peer_env, "REDIS_PREFIX": "bench:limiter-cache:"},
            credentials_from="final",
            description="fastapi-limiter + fastapi-cache2 peer",
        ),
        AppSpec(
            "slowapi",
            "bench.peers.slowapi_app:app",
            {**peer_env, "REDIS_PREFIX": "bench:slowapi:"},
            description="slowapi peer",
        ),
        AppSpec(
            "floor",
            "bench.peers.floor:app",
            {**peer_env, "REDIS_PREFIX": "bench:floor:"},
            credentials_from="final",
            description="floor app: PyJWT decode + one Redis GET; /hello + one EVALSHA",
        ),
        *[
            AppSpec(
                f"limits-{strategy}",
                "bench.peers.limits_app:app",
                {
                    **peer_env,
                    "REDIS_PREFIX": f"bench:limits-{strategy}:",
                    "LIMITS_STRATEGY": f"{strategy}-window",
                },
                description=f"limits {strategy}-window peer (async Redis storage)",
            )
            for strategy in ("moving", "fixed")
        ],
        # C1, C2: the same app on a 3-primary Redis Cluster on this machine.
        AppSpec(
            "final-cluster",
            final_target,
            final_env(cluster_url, secret, "cluster", extra_env),
            signs_up=True,
            description="final app, memory://, REDIS_URL=redis+cluster:// (3 primaries)",
        ),
        AppSpec(
            "granian",
            final_target,
            final_env(redis_url, secret, "granian", extra_env),
            server="granian",
            signs_up=True,
            description="final app on Granian, memory://",
        ),
        AppSpec(
            "granian-sqlite-w2",
            final_target,
            final_env(
                redis_url,
                secret,
                "gw2",
                extra_env,
                DATABASE_URL=sqlite.replace("bench.db", "gw2.db"),
            ),
            workers=2,
            server="granian",
            signs_up=True,
            description="final app on Granian, SQLite, WORKERS=2",
        ),
    ]
    if rate_limit_switch is None:
        apps.append(
            AppSpec(
                "shared-limit",
                "bench.peers.shared_limit:app",
                {**peer_env, "REDIS_PREFIX": "bench:shared-limit:"},
                description="bare app + shared/rate_limit/",
            )
        )
    else:
        name, value = rate_limit_switch.split("=", 1)
        apps.append(
            AppSpec(
                "final-nolimit",
                final_target,
                final_env(redis_url, secret, "nolimit", extra_env, **{name: value}),
                description=f"final app, {name}={value}",
            )
        )

    auth = {"Authorization": "Bearer <token>"}
    cached_get = Load("/users/<user_id>", headers=auth, count_header="x-cache")
    peer_get = Load("/users/<user_id>", headers=auth, count_header="x-fastapi-cache")
    hello = Load("/hello?name=bench")
    health = Load("/health")
    # R7: a light /health load on one wrk thread, so the client leaves CPU to the
    # server; the logins use the other.
    health_light = Load("/health", connections=8, threads=1)
    logins = Load(
        "/auth/token",
        connections=4,
        threads=1,
        method="POST",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
        body="username=<email>&password=<password>",
    )

    # R3: one connection; a MISS asks for an offset no request asked for before.
    list_hit = Load(
        "/users?offset=0&limit=1", headers=auth, count_header="x-cache", connections=1, threads=1
    )
    list_miss = Load(
        "/users?offset={n}&limit=1", headers=auth, count_header="x-cache", connections=1, threads=1
    )
    async_sleep = Load(
        f"/demo/async-sleep?seconds={SLEEP_SECONDS}", connections=1000, timeout_seconds=30
    )
    sync_sleep = Load(
        f"/demo/sync-sleep?seconds={SLEEP_SECONDS}", connections=1000, timeout_seconds=30
    )

    measurements = [
        Measurement("bare/health", "bare", "bare app GET /health", health),
        Measurement("final/health", "final", "final GET /health", health),
        Measurement(
            "final/user", "final", "final GET /users/{id} (HIT)", cached_get, expect_cache="HIT"
        ),
        Measurement("metrics/health", "final-metrics", "final GET /health, metrics on", health),
        Measurement(
            "metrics/user", "final-metrics", "final GET /users/{id} (HIT), metrics on",
            cached_get, expect_cache="HIT",
        ),
        Measurement(
            "db50/hit",
            "final-db50",
            "GET /users?offset=0&limit=1 (HIT), 1 conn",
            list_hit,
            expect_cache="HIT",
        ),
        Measurement(
            "db50/miss",
            "final-db50",
            "GET /users?offset=<n>&limit=1 (MISS), 1 conn",
            list_miss,
            expect_cache="MISS",
        ),
        Measurement(
            "week6/async",
            "week6",
            f"week 6 async-sleep {SLEEP_SECONDS} s, 1000 conns",
            async_sleep,
            seconds=ASYNC_SLEEP_RUN_SECONDS,
        ),
        Measurement(
            "week6/sync",
            "week6",
            f"week 6 sync-sleep {SLEEP_SECONDS} s, 1000 conns",
            sync_sleep,
            restart_after=True,
            seconds=SYNC_SLEEP_RUN_SECONDS,
        ),
        Measurement("final/hello", "final", "final GET /hello (rate-limited)", hello),
        Measurement(
            "w2/user",
            "final-sqlite-w2",
            "WORKERS=2 GET /users/{id} (HIT)",
            cached_get,
            expect_cache="HIT",
        ),
        Measurement(
            "w1/user",
            "final-sqlite-w1",
            "WORKERS=1 GET /users/{id} (HIT)",
            cached_get,
            expect_cache="HIT",
        ),
        Measurement(
            "final/health-busy",
            "final",
            "final GET /health, logins running",
            health_light,
            background=logins,
        ),
        Measurement("final/health-idle", "final", "final GET /health, idle", health_light),
        Measurement(
            "wide/health-busy", "final-wide-argon2", "old Argon2 sizing: /health, logins running",
            health_light, background=logins,
        ),
        Measurement(
            "wide/health-idle", "final-wide-argon2", "old Argon2 sizing: /health, idle",
            health_light,
        ),
        Measurement("final/logins", "final", "final POST /auth/token", logins),
        Measurement(
            "wide/logins", "final-wide-argon2", "old Argon2 sizing: POST /auth/token", logins
        ),
        Measurement(
            "limiter-cache/user",
            "limiter-cache",
            "fastapi-limiter + fastapi-cache2 GET /users/{id}",
            peer_get,
            expect_cache="HIT",
        ),
        Measurement("slowapi/hello", "slowapi", "slowapi GET /hello", hello),
        Measurement("floor/user", "floor", "floor GET /users/{id} (JWT + Redis GET)", cached_get),
        Measurement("floor/hello", "floor", "floor GET /hello (+ one EVALSHA)", hello),
        Measurement("limits-moving/hello", "limits-moving", "limits moving window /hello", hello),
        Measurement("limits-fixed/hello", "limits-fixed", "limits fixed window /hello", hello),
        Measurement(
            "cluster/user", "final-cluster", "final GET /users/{id} (HIT), Redis Cluster",
            cached_get, expect_cache="HIT",
        ),
        Measurement(
            "cluster/hello", "final-cluster", "final GET /hello (rate-limited), Redis Cluster",
            hello,
        ),
        Measurement("granian/health", "granian", "Granian final GET /health", health),
        Measurement(
            "granian/user", "granian", "Granian final GET /users/{id} (HIT)", cached_get,
            expect_cache="HIT",
        ),
        Measurement("w2/health", "final-sqlite-w2", "WORKERS=2 GET /health", health),
        Measurement("gw2/health", "granian-sqlite-w2", "Granian WORKERS=2 GET /health", health),
        Measurement(
            "gw2/user", "granian-sqlite-w2", "Granian WORKERS=2 GET /users/{id} (HIT)",
            cached_get, expect_cache="HIT",
        ),
    ]  # fmt: skip
    if rate_limit_switch is None:
        measurements += [
            Measurement("bare/hello", "bare", "bare app GET /hello", hello),
            Measurement(
                "shared-limit/hello", "shared-limit", "bare app + our limiter GET /hello", hello
            ),
        ]
        r5 = Ratio(
            "R5",
            "GET /hello with rate limiting ÷ without (bare app + shared/rate_limit/)",
            "shared-limit/hello",
            "bare/hello",
            Metric.THROUGHPUT,
            0.90,
            meaning="what the Redis rate limiter costs per request. The app under test has "
            "no setting that turns its limiter off, so this runs the limiter on the bare "
            "app: a stricter test, as the same cost is a larger share of less work",
        )
    else:
        measurements.append(
            Measurement("nolimit/hello", "final-nolimit", "final GET /hello, limit off", hello)
        )
        r5 = Ratio(
            "R5",
            "GET /hello with rate limiting ÷ without",
            "final/hello",
            "nolimit/hello",
            Metric.THROUGHPUT,
            0.90,
            meaning="what the Redis rate limiter costs per request",
        )

    ratios = [
        Ratio(
            "R1", "final /health ÷ bare FastAPI /health", "final/health", "bare/health",
            Metric.THROUGHPUT, 0.90,
            meaning="what our middleware stack costs on the cheapest route",
        ),
        Ratio(
            "R2", "authenticated, rate-limited, cached GET /users/{id} ÷ /health",
            "final/user", "final/health", Metric.THROUGHPUT, 0.40,
            meaning="a real read (JWT, revocation check, limiter, cache HIT) against the floor",
        ),
        Ratio(
            "M1", "final /health with Prometheus metrics on ÷ off",
            "metrics/health", "final/health", Metric.THROUGHPUT, 0.90,
            meaning="what counting and timing each request costs on the cheapest route",
        ),
        Ratio(
            "M2", "cached GET /users/{id} with Prometheus metrics on ÷ off",
            "metrics/user", "final/user", Metric.THROUGHPUT, 0.90,
            meaning="the same on a real signed-in read (plus its X-Cache and limiter counts)",
        ),
        Ratio(
            "R3", "cache HIT ÷ MISS median latency, DB_LATENCY_MS=50, 1 connection",
            "db50/hit", "db50/miss", Metric.SPEEDUP_P50, 50, by_cpu=False,
            meaning="what the cache saves when the database is slow",
        ),
        Ratio(
            "R4", "week 6 async-sleep ÷ sync-sleep throughput, 1000 connections",
            "week6/async", "week6/sync", Metric.THROUGHPUT, 20, by_cpu=False,
            meaning="awaiting frees the event loop; a sync handler holds one of 40 threads",
        ),
        r5,
        Ratio(
            "R6", "WORKERS=2 ÷ WORKERS=1, cached GET /users/{id} (SQLite)",
            "w2/user", "w1/user", Metric.THROUGHPUT, 1.5, by_cpu=False,
            meaning="how far a second process scales the same app",
        ),
        Ratio(
            "R7", "/health p99 while logins run ÷ idle p99",
            "final/health-busy", "final/health-idle", Metric.P99, 1.5, at_most=True, by_cpu=False,
            meaning="Argon2 runs off the event loop, so logins don't stall other requests",
        ),
        Ratio(
            "R7w", "R7 under the old Argon2 sizing (2 hashes at once × 4 lanes)",
            "wide/health-busy", "wide/health-idle", Metric.P99, 1.5, at_most=True, by_cpu=False,
            meaning="what leaving a core to the event loop changed, measured in the same run",
        ),
        Ratio(
            "L1", "logins per second, today's Argon2 sizing ÷ the old one",
            "final/logins", "wide/logins", Metric.THROUGHPUT, 0.5, by_cpu=False,
            meaning="what that costs in login throughput (the hash's cost itself is unchanged)",
        ),
        Ratio(
            "P1", "our cached GET ÷ fastapi-limiter + fastapi-cache2, same Redis",
            "final/user", "limiter-cache/user", Metric.THROUGHPUT, 1.5,
            meaning="shared/ against the popular libraries doing the same job",
        ),
        Ratio(
            "P2", "our rate-limited GET /hello ÷ slowapi (Redis storage)",
            "final/hello", "slowapi/hello", Metric.THROUGHPUT, 1.5,
            meaning="our GCRA limiter against slowapi's",
        ),
        Ratio(
            "R2f", "cached GET /users/{id} ÷ the floor app's (PyJWT decode + one Redis GET)",
            "final/user", "floor/user", Metric.THROUGHPUT, 0.95,
            meaning="everything the final project adds to the least a signed-in cached read costs",
        ),
        Ratio(
            "R5f", "rate-limited GET /hello ÷ the floor app's (/hello + one EVALSHA)",
            "final/hello", "floor/hello", Metric.THROUGHPUT, 0.95,
            meaning="everything our limiter adds to the one Redis round trip it needs",
        ),
        Ratio(
            "P3", "our rate-limited GET /hello ÷ limits 5 moving window (async Redis)",
            "final/hello", "limits-moving/hello", Metric.THROUGHPUT, 1.5,
            meaning="our GCRA against a fair async peer, headers from get_window_stats",
        ),
        Ratio(
            "P3f", "our rate-limited GET /hello ÷ limits 5 fixed window (async Redis)",
            "final/hello", "limits-fixed/hello", Metric.THROUGHPUT, 1.5,
            meaning="the same, against limits' cheapest strategy",
        ),
        Ratio(
            "C1", "cached GET /users/{id} on a 3-primary Redis Cluster ÷ on one Redis",
            "cluster/user", "final/user", Metric.THROUGHPUT, 0.7,
            meaning="what cluster-safe keys cost a signed-in read: the revocation MGET and "
            "the cache's epoch read go out per slot, side by side",
        ),
        Ratio(
            "C2", "rate-limited GET /hello on a 3-primary Redis Cluster ÷ on one Redis",
            "cluster/hello", "final/hello", Metric.THROUGHPUT, 0.9,
            meaning="the limiter's one EVALSHA, routed to the slot of the client's hash tag",
        ),
        Ratio(
            "R8", "Granian ÷ uvicorn (uvloop, httptools), final GET /health, 1 worker",
            "granian/health", "final/health", Metric.THROUGHPUT, 1.3,
            meaning="what a Rust HTTP server buys on the cheapest route",
        ),
        Ratio(
            "R8u", "Granian ÷ uvicorn, final cached GET /users/{id}, 1 worker",
            "granian/user", "final/user", Metric.THROUGHPUT, 1.3,
            meaning="the same on a real signed-in read",
        ),
        Ratio(
            "R8w", "Granian ÷ uvicorn, final GET /health, WORKERS=2 (SQLite)",
            "gw2/health", "w2/health", Metric.THROUGHPUT, 1.3, by_cpu=False,
            meaning="the same with two worker processes",
        ),
        Ratio(
            "R8wu", "Granian ÷ uvicorn, final cached GET /users/{id}, WORKERS=2 (SQLite)",
            "gw2/user", "w2/user", Metric.THROUGHPUT, 1.3, by_cpu=False,
            meaning="the same on a real signed-in read",
        ),
    ]  # fmt: skip
    return Plan(
        apps={app.name: app for app in apps},
        measurements={m.key: m for m in measurements},
        ratios=ratios,
    )
