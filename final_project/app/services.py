"""The long-lived objects of one app: opened in the lifespan, closed there too."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from pydantic import SecretStr

from shared.auth import AuthSettings, PasswordHasher, TokenService, load_or_create_secret
from shared.cache import CacheSettings, ResponseCache
from shared.identity import normalize_email
from shared.metrics import Metrics
from shared.rate_limit import Policy, RateLimiter, parse_rate
from shared.redis import AnyRedis, RedisSettings, create_redis, redis_ready

from .config import Settings
from .store import EmailTaken, UserStore, create_store

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Services:
    settings: Settings
    store: UserStore
    redis: AnyRedis
    hasher: PasswordHasher
    tokens: TokenService
    cache: ResponseCache
    limiter: RateLimiter
    default_policy: Policy
    login_policy: Policy
    login_account_policy: Policy
    signup_policy: Policy

    async def aclose(self) -> None:
        try:
            await self.tokens.aclose()
            await self.cache.aclose()
            await self.redis.aclose()
        finally:
            await self.store.close()


# The largest id the database can hold (a signed 64-bit integer, SQL BIGINT).
MAX_ID = 2**63 - 1


def user_id_of(sub: str) -> int | None:
    """The user id in a token's `sub`, or None when it is not one of ours.

    A signed token may still carry any string: one that is no id the database could
    hold must end in 401, not in an overflow inside the SQL driver.
    """
    if not (sub.isascii() and sub.isdigit() and len(sub) <= 19):
        return None
    user_id = int(sub)
    return user_id if 1 <= user_id <= MAX_ID else None


async def open_services(settings: Settings, metrics: Metrics | None = None) -> Services:
    """Open the store and the Redis client, and build everything that uses them.

    `metrics`: told when a module's Redis circuit opens or closes, and of each
    refresh-token reuse.
    """

    def circuit(component: str) -> Callable[[bool], None] | None:
        return metrics.circuit_watcher(component) if metrics is not None else None

    store = create_store(settings.database_url, latency_ms=settings.db_latency_ms)
    await store.open()
    redis = create_redis(RedisSettings(url=settings.redis_url, prefix=settings.redis_prefix))
    if not await redis_ready(redis):
        # Said here once, at start-up; each module then falls back and recovers alone.
        logger.warning(
            "Redis at %s is unreachable: serving without the cache (X-Cache: BYPASS) and "
            "with per-process rate limits until it answers",
            _without_password(settings.redis_url),
        )
    auth = AuthSettings(
        jwt_secret=signing_secret(settings),
        access_token_minutes=settings.access_token_minutes,
        refresh_token_days=settings.refresh_token_days,
        session_max_days=settings.session_max_days,
        argon2_time_cost=settings.argon2_time_cost,
        argon2_memory_cost=settings.argon2_memory_cost,
        argon2_parallelism=settings.argon2_parallelism,
        max_concurrent_hashes=settings.max_concurrent_hashes,
        max_waiting_hashes=settings.max_waiting_hashes,
    )

    async def subject_exists(sub: str) -> bool:
        user_id = user_id_of(sub)
        return user_id is not None and await store.get_user(user_id) is not None

    services = Services(
        settings=settings,
        store=store,
        redis=redis,
        hasher=PasswordHasher(auth),
        tokens=TokenService(
            auth,
            store,
            redis,
            settings.redis_prefix,
            subject_exists=subject_exists,
            on_circuit_change=circuit("tokens"),
            on_reuse=metrics.refresh_token_reused if metrics is not None else None,
        ),
        cache=ResponseCache(
            redis,
            CacheSettings(ttl_seconds=settings.cache_ttl_seconds),
            settings.redis_prefix,
            on_circuit_change=circuit("cache"),
        ),
        limiter=RateLimiter(redis, settings.redis_prefix, on_circuit_change=circuit("rate_limit")),
        default_policy=Policy("default", parse_rate(settings.rate_limit)),
        login_policy=Policy("login", parse_rate(settings.login_rate_limit)),
        login_account_policy=Policy("login-account", parse_rate(settings.login_account_rate_limit)),
        signup_policy=Policy("signup", parse_rate(settings.signup_rate_limit)),
    )
    try:
        await create_first_admin(services)
    except BaseException:
        await services.aclose()
        raise
    return services


async def create_first_admin(services: Services) -> None:
    """ADMIN_EMAIL / ADMIN_PASSWORD: create that admin unless the email is already taken."""
    settings = services.settings
    if not settings.admin_email or settings.admin_password is None:
        return
    email = normalize_email(settings.admin_email)
    existing = await services.store.get_user_by_email(email)
    if existing is not None:
        if existing.role != "admin":
            # Never promote silently: whoever signed up with that email first is not
            # necessarily the operator.
            logger.warning("ADMIN_EMAIL %s belongs to a user who is not an admin", email)
        return
    password_hash = await services.hasher.hash(settings.admin_password.get_secret_value())
    try:
        await services.store.create_user(
            name="Admin", email=email, password_hash=password_hash, role="admin"
        )
    except EmailTaken:
        return  # another worker created it a moment ago
    logger.info("created the first admin, %s", email)


def signing_secret(settings: Settings) -> SecretStr:
    """JWT_SECRET, else (outside production) the random one kept in the data directory."""
    if settings.jwt_secret is not None:
        return settings.jwt_secret
    path = settings.jwt_secret_file
    secret = load_or_create_secret(path)
    logger.warning(
        "JWT_SECRET is not set: signing tokens with the random secret kept in %s. "
        "Every worker and restart on this machine shares it; set JWT_SECRET to run "
        "anywhere else, or several machines",
        path.resolve(),
    )
    return secret


def _without_password(url: str) -> str:
    scheme, sep, rest = url.partition("://")
    credentials, at, host = rest.rpartition("@")
    if not at:
        return url
    user = credentials.partition(":")[0]
    return f"{scheme}{sep}{user}:***@{host}" if user else f"{scheme}{sep}***@{host}"
